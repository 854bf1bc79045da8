"""Configuration: the ``duix:`` section of the config file (design.md §4).

This module owns validation of every configuration value. For now it holds the settings of
the DUIX client (base URL, paths, timeouts, token lifetime, request caps, time zone, the
optional session-list mapping); the daemon issue adds the rest of the file (apps, server,
state, enforcement, policies) on top of these models.

Unknown keys are errors (``extra="forbid"``), so a typo never silently falls back to a default.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DEFAULT_BASE_URL", "DuixPaths", "DuixSettings", "SessionListMapping"]

DEFAULT_BASE_URL = "https://app.duix.ai"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionListMapping(_Strict):
    """Explicit reading of ``getconcurrentList`` when auto-detection is not enough.

    ``items``: dotted path under ``data`` to the list (``""`` means ``data`` itself is the
    list); ``id`` and ``started_at``: the keys of a list item. ``None`` means auto-detect.
    """

    items: str | None = None
    id: str | None = None
    started_at: str | None = None


class DuixPaths(_Strict):
    """Endpoint paths. ``getConversationById`` is documented both with and without ``v2``."""

    prefix: str = "/duix-openapi-v2/sdk/v2"
    conversation: str = "/duix-openapi-v2/sdk/getConversationById"

    @field_validator("prefix", "conversation")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value.rstrip("/")


class DuixSettings(_Strict):
    """How to talk to the DUIX platform (shared by every configured APP)."""

    base_url: str = DEFAULT_BASE_URL
    paths: DuixPaths = Field(default_factory=DuixPaths)
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    token_ttl_seconds: int = Field(default=1800, ge=60, le=7 * 24 * 3600)
    #: Re-mint a cached token once this fraction of its lifetime has passed.
    token_refresh_fraction: float = Field(default=0.8, gt=0, lt=1)
    max_in_flight: int = Field(default=32, ge=1, le=1024)
    max_requests_per_second: float = Field(default=50.0, gt=0, le=10_000)
    #: Extra attempts for read calls on transport, 5xx and 429 errors (never for writes).
    read_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    retry_backoff_max_seconds: float = Field(default=10.0, ge=0, le=600)
    timezone: str = "Asia/Shanghai"
    session_list: SessionListMapping = Field(default_factory=SessionListMapping)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The zone for zone-less timestamps in session lists."""
        return ZoneInfo(self.timezone)
