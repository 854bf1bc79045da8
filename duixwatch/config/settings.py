"""Configuration: the config file, its env overrides, secrets and validation (design.md §4).

This module owns every configuration value and the one way to load them,
:func:`load_config`, which the daemon, ``duixwatch check`` and the reload path all use::

    cfg = settings.load_config("duixwatch.yaml")          # environ defaults to os.environ
    settings.mask(cfg)                                     # JSON-able, secrets replaced

Loading happens in this order, collecting every problem before giving up:

1. the YAML file is parsed with a SafeLoader that records the line of every mapping key and
   sequence item by key path (``("apps", 0, "app_key")``) and rejects duplicate keys;
2. ``DUIXWATCH_<SECTION>__<KEY>`` environment variables (case-insensitive, ``__`` nesting) are
   laid over the file's data: env wins. ``DUIXWATCH_APPS``, ``DUIXWATCH_POLICIES`` and the
   other top-level names take JSON. Variables without ``__`` that are not a top-level name
   (``DUIXWATCH_LOG_LEVEL``, read by the CLI) are left alone; ones with ``__`` that match no
   setting are errors. Env values are literal: no ``${VAR}`` expansion;
3. ``${VAR}`` and ``${VAR:-default}`` in the file's string values are expanded from the
   environment (``$${`` is a literal ``${``); an unset variable is an error, never "";
4. each app's key is resolved: ``app_key`` (usually ``${VAR}``), or ``app_key_file``, or — with
   neither — the systemd credential ``$CREDENTIALS_DIRECTORY/<name>`` (``LoadCredential=``);
5. the models below validate the result (unknown keys are errors: ``extra="forbid"``);
6. rules across fields, which need line numbers and so run in the loader (a config built in
   code gets them from the models' own validators): unique app names and ids and policy names,
   each policy's ``match``/``action`` combinations, every policy selecting at least one app, and
   the ``close_all`` safety rule (design.md §8 rule 5).

Every problem becomes one line ``FILE:LINE: key.path: what is wrong`` — or ``FILE: key.path:
what is wrong (from env DUIXWATCH_X)`` when an environment variable supplied the value — and
all of them are raised together as a :class:`ConfigFileError`. No message, repr or dump ever
holds an appKey: keys are :class:`~pydantic.SecretStr`, messages never quote key values, and
the pydantic and YAML exceptions (whose text may quote input) are never chained. Notification
targets carry secrets too (a webhook URL is a credential, headers hold tokens): messages never
quote them, ``repr`` leaves them out and :func:`mask` hides them.

Relative paths: ``app_key_file`` is looked up in ``$CREDENTIALS_DIRECTORY`` first, then next to
the config file; ``state.dir`` is relative to the current directory (as a systemd unit's
``WorkingDirectory=``/``StateDirectory=`` usage expects: write ``${STATE_DIRECTORY}`` there).
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin
from urllib.parse import SplitResult, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from duixwatch.core import errors, models

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_LISTEN",
    "MASK",
    "AppConfig",
    "Config",
    "ConfigFileError",
    "DaemonSettings",
    "DuixPaths",
    "DuixSettings",
    "EnforcementSettings",
    "NotifyTarget",
    "PolicyConfig",
    "PolicyMatch",
    "ScalingSettings",
    "ScalingTarget",
    "ServerSettings",
    "SessionListMapping",
    "ShardingSettings",
    "StateSettings",
    "load_config",
    "mask",
]

DEFAULT_BASE_URL = "https://app.duix.ai"
#: An exporter listens on every interface by default.
DEFAULT_LISTEN = "0.0.0.0:9814"
#: What :func:`mask` shows instead of a secret (pydantic's own SecretStr rendering).
MASK = "**********"
ENV_PREFIX = "DUIXWATCH_"

#: Integers at or above this cannot be represented exactly by a float (JavaScript, yq, jq …).
_EXACT_INT_LIMIT = 2**53
_APP_ID_RE = re.compile(r"^[0-9]{1,32}$")
#: An app name is a Prometheus label value and a file name (systemd credential, key file).
_APP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_POLICY_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
#: RFC 9110 ``token``: what an HTTP header name may be made of.
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_LOG_LEVELS = ("debug", "info", "warning", "error")
#: An appKey is a short token; anything bigger is the wrong file.
_MAX_KEY_FILE_BYTES = 64 * 1024
#: Stands in for a key that failed to resolve, so validation can report the other problems.
_UNRESOLVED_KEY = "<unresolved>"
#: Validation context flag: the loader runs the cross-field checks itself, with line numbers.
_DEFER_CROSS_CHECKS = "duixwatch_defer_cross_checks"

KeyPath = tuple[str | int, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- duix: section


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
    #: The HTTP library under the client: ``auto`` is aiohttp on asyncio (what ``run`` uses),
    #: ``httpx`` trades about 5x the CPU per request for httpx's behaviour (duixwatch.duix.wire).
    http_client: Literal["auto", "aiohttp", "httpx"] = "auto"
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


# --------------------------------------------------------------------------- the other sections


class _Section(_Strict):
    """A config section whose numbers must be numbers: YAML ``true`` is not 1."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if _is_number(annotation):
                raise ValueError("must be a number, not true/false")
        return value


def _is_number(annotation: Any) -> bool:
    """``int``, ``float``, or one of them ``| None``."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(arg in (int, float) for arg in get_args(annotation))
    return False


def _app_id(value: Any) -> Any:
    """App ids are 19-digit longs: strings. A YAML/JSON integer is accepted only while exact.

    Pydantic turns ``ValueError`` (not ``TypeError``) into a validation error, hence TRY004.
    """
    if isinstance(value, bool):
        raise ValueError("must be a string of digits")  # noqa: TRY004
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be a string of digits")
        if value >= _EXACT_INT_LIMIT:
            raise ValueError(
                f"{value} is written as a number too large to survive tools that read numbers "
                f'as floats; quote it: "{value}"'
            )
        return str(value)
    if isinstance(value, float):
        raise ValueError('must be a string of digits; quote it, e.g. "1377185422953811968"')  # noqa: TRY004
    if isinstance(value, str) and not _APP_ID_RE.fullmatch(value):
        raise ValueError("must be 1 to 32 digits")
    return value


AppId = Annotated[str, BeforeValidator(_app_id)]


class AppConfig(_Section):
    """One DUIX APP to watch.

    ``app_key`` is always set once loaded: :func:`load_config` resolves ``app_key``,
    ``app_key_file`` and the systemd credential into it. ``app_key_file`` then records the
    (absolute) file the key was read from, or ``None`` when the key was given inline / by
    ``${VAR}`` — the daemon may watch it to notice key rotation.
    """

    app_id: AppId
    #: Metric label ``app`` and file name; defaults to ``app_id``.
    name: str
    app_key: SecretStr
    app_key_file: Path | None = None
    poll_interval_seconds: float = Field(default=15.0, ge=1, le=3600)
    list_sessions: bool = True

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_app_id(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("name") is None:
            app_id = data.get("app_id")
            derived = str(app_id) if isinstance(app_id, str | int) else ""
            # An invalid app_id is reported on its own; do not echo it as a second name error.
            name = derived if _APP_NAME_RE.fullmatch(derived) else "unnamed"
            return {**data, "name": name}
        return data

    @field_validator("name")
    @classmethod
    def _label_and_file_name(cls, value: str) -> str:
        if not _APP_NAME_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid app name: 1 to 63 of A-Z a-z 0-9 _ . - "
                "starting with a letter or digit (it is a metric label and a file name)"
            )
        return value

    @field_validator("app_key")
    @classmethod
    def _non_empty_key(cls, value: SecretStr) -> SecretStr:
        stripped = value.get_secret_value().strip()
        if not stripped:
            raise ValueError("is empty")
        return SecretStr(stripped)

    @property
    def credentials(self) -> models.AppCredentials:
        """What the DUIX client needs to sign requests for this APP."""
        return models.AppCredentials(app_id=self.app_id, app_key=self.app_key)


def _split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``; IPv6 hosts come in brackets: ``[::]:9814``."""
    example = "expected HOST:PORT, e.g. 0.0.0.0:9814 or [::]:9814"
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r}: {example}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r}: {example}")
        if ":" in host:
            raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::]:9814")
        if not _HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"{value!r}: {host!r} is not a host name or IP address")
        if host.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{value!r}: {host!r} is not an IPv4 address") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


class ServerSettings(_Section):
    """The HTTP surface (``/metrics``, ``/healthz``, ``/readyz``, ``/status``)."""

    #: ``HOST:PORT``; IPv6 as ``[::]:9814``; port 0 picks a free port.
    listen: str = DEFAULT_LISTEN

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _split_listen(value)
        return value

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The TCP port to bind."""
        return _split_listen(self.listen)[1]


class StateSettings(_Section):
    """Where the SQLite state and ``audit.jsonl`` live.

    A relative ``dir`` is relative to the current directory (the unit's working directory),
    not to the config file; under systemd write ``dir: ${STATE_DIRECTORY}``.
    """

    dir: Path = Path("./duixwatch-state")

    @field_validator("dir", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value


class EnforcementSettings(_Section):
    """The global switch and caps of the executor (design.md §8)."""

    #: Nothing is ever closed unless this is true.
    enabled: bool = False
    #: ``close_all`` policies are rejected at load unless this is true.
    allow_close_all: bool = False
    max_stops_per_second: float = Field(default=5.0, gt=0, le=100)


class DaemonSettings(_Section):
    """Loop timing, shutdown and logging of ``duixwatch run``."""

    shutdown_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    #: Cap of the exponential backoff after failed polls.
    backoff_max_seconds: float = Field(default=300.0, ge=1, le=86_400)
    #: Schedules are spread by up to this fraction of the interval.
    jitter_fraction: float = Field(default=0.1, ge=0, le=0.5)
    #: 0: off; else check the config file every N seconds and reload it when it changed.
    watch_config_seconds: float = Field(default=0.0, ge=0, le=86_400)
    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in _LOG_LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(_LOG_LEVELS)}")
        return level


# --------------------------------------------------------------------------- policies


def _deferred(info: ValidationInfo) -> bool:
    """True when the loader runs the cross-field rules itself (to give them their lines)."""
    return bool(info.context and info.context.get(_DEFER_CROSS_CHECKS))


def _raise_problems(problems: list[tuple[KeyPath, str]]) -> None:
    if problems:
        raise ValueError("; ".join(f"{_dotted(path)}: {msg}" for path, msg in problems))


def _label_name(value: str, kind: str) -> str:
    """A policy or target name: it becomes a metric label value and an audit field."""
    if not _POLICY_NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid {kind} name: 1 to 63 of lower-case letters, digits "
            "and '-', starting with a letter"
        )
    return value


def _pattern(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


#: An fnmatch glob (``*``, ``?``, ``[…]``) or a plain name.
Pattern = Annotated[str, AfterValidator(_pattern)]


def _header_name(value: str) -> str:
    if not _HEADER_NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value


def _header_value(value: str) -> str:
    # Never quote the value: it is usually a token.
    if any(char in value for char in "\r\n\0"):
        raise ValueError("a header value must not contain line breaks or NUL")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]


class PolicyMatch(_Section):
    """When a policy matches: exactly one of a session age or an app's session count.

    ``session_age_over_seconds``: every session older than this (stale sessions).
    ``max_sessions``: the sessions beyond this many (over-quota), once the app has been over it
    for ``for_seconds`` (0: at once); which ones are "beyond" is the policy's ``select``.
    """

    session_age_over_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_sessions: int | None = Field(default=None, ge=0)
    for_seconds: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_kind(self, info: ValidationInfo) -> Self:
        if not _deferred(info):
            _raise_problems(_match_problems(self))
        return self


class NotifyTarget(_Section):
    """Where a policy reports the cycles it acted in: a JSON POST (Slack-compatible ``text``).

    ``url`` and ``headers`` usually hold secrets (``${SLACK_WEBHOOK_URL}``, ``Bearer ${TOKEN}``):
    they are left out of ``repr`` and :func:`mask` hides them.
    """

    url: str = Field(repr=False)
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, repr=False)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # Never quote the URL: a webhook URL is a credential.
        message = "must be an http:// or https:// URL with a host"
        if any(char.isspace() or not char.isprintable() for char in value):
            raise ValueError(f"{message}, without spaces or control characters")
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            raise ValueError(message) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(message)
        return value

    @field_validator("headers")
    @classmethod
    def _distinct_names(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name in value:
            if name.lower() in seen:
                raise ValueError(
                    f"{name!r} and {seen[name.lower()]!r} are the same header (names ignore case)"
                )
            seen[name.lower()] = name
        return value


class PolicyConfig(_Section):
    """One enforcement policy (design.md §4 and §8), evaluated per app every poll cycle.

    It applies to the apps :meth:`selects` says, never touches the sessions :meth:`protects`
    says, and does nothing when its matches exceed ``max_actions_per_cycle`` or
    ``max_actions_percent`` of the app's live sessions.
    """

    #: ``^[a-z][a-z0-9-]*$``, at most 63 characters, unique: a metric label and an audit field.
    name: str
    #: App names, app ids or :mod:`fnmatch` globs over either.
    apps: tuple[Pattern, ...] = ("*",)
    #: Same; an app matching one of these is never selected (exclusions win).
    exclude_apps: tuple[Pattern, ...] = ()
    #: :mod:`fnmatch` globs over session ids: matching sessions are never touched.
    protect_sessions: tuple[Pattern, ...] = ()
    match: PolicyMatch
    action: Literal["stop_sessions", "close_all"]
    #: With ``max_sessions``: which sessions are the excess, the newest or the oldest.
    select: Literal["newest", "oldest"] = "newest"
    dry_run: bool = True
    max_actions_per_cycle: int = Field(default=10, ge=1, le=10_000)
    max_actions_percent: float = Field(default=50.0, gt=0, le=100)
    #: ``close_all`` only: the app_id of the one app the policy applies to.
    confirm_app_id: AppId | None = None
    notify: tuple[NotifyTarget, ...] = ()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _label_name(value, "policy")

    @field_validator("apps")
    @classmethod
    def _some_apps(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('must not be empty: write ["*"] for every app')
        return value

    @model_validator(mode="after")
    def _combinations(self, info: ValidationInfo) -> Self:
        if not _deferred(info):
            _raise_problems(_policy_problems(self))
        return self

    def selects(self, app: AppConfig) -> bool:
        """Whether this policy applies to ``app``: its name or app_id matches a pattern of
        ``apps`` and none of ``exclude_apps`` (exclusions win)."""
        return _selects(self, app.name, app.app_id)

    def protects(self, session_id: str) -> bool:
        """Whether ``session_id`` matches a ``protect_sessions`` glob (never to be touched)."""
        return any(fnmatch.fnmatchcase(session_id, glob) for glob in self.protect_sessions)


def _matches_any(patterns: tuple[str, ...], name: str, app_id: str) -> bool:
    return any(
        fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(app_id, pattern)
        for pattern in patterns
    )


def _selects(policy: PolicyConfig, name: str, app_id: str) -> bool:
    return _matches_any(policy.apps, name, app_id) and not _matches_any(
        policy.exclude_apps, name, app_id
    )


def _match_problems(match: PolicyMatch) -> list[tuple[KeyPath, str]]:
    """What is wrong with one ``match`` on its own (paths relative to it)."""
    by_age = match.session_age_over_seconds is not None
    by_count = match.max_sessions is not None
    if by_age and by_count:
        return [
            (
                (),
                "give either session_age_over_seconds or max_sessions, not both (write two "
                "policies for both)",
            )
        ]
    if not by_age and not by_count:
        return [((), "needs one of session_age_over_seconds or max_sessions")]
    if match.for_seconds > 0 and not by_count:
        return [
            (
                ("for_seconds",),
                "only applies to max_sessions: a session age is its own duration",
            )
        ]
    return []


def _policy_problems(policy: PolicyConfig) -> list[tuple[KeyPath, str]]:
    """What is wrong with one policy on its own (paths relative to it, ``match`` included)."""
    problems = [(("match", *path), message) for path, message in _match_problems(policy.match)]
    by_age = policy.match.session_age_over_seconds is not None
    by_count = policy.match.max_sessions is not None
    if policy.select != "newest" and by_age and not by_count:
        problems.append(
            (
                ("select",),
                "only applies to max_sessions: with session_age_over_seconds every matching "
                "session is closed, so it would be silently meaningless",
            )
        )
    if policy.action == "close_all":
        if by_age and not by_count:
            problems.append(
                (
                    ("match", "session_age_over_seconds"),
                    "a close_all policy needs max_sessions: draining an app because one session "
                    "is old makes no sense (use stop_sessions to close old sessions)",
                )
            )
        if policy.protect_sessions:
            problems.append(
                (
                    ("protect_sessions",),
                    "close_all ends every session of the app and cannot spare any: use "
                    "stop_sessions to protect sessions",
                )
            )
    elif policy.confirm_app_id is not None:
        problems.append((("confirm_app_id",), "only applies to close_all policies; remove it"))
    return problems


# --------------------------------------------------------------------------- scale


class ScalingTarget(_Section):
    """One autoscaling signal: the live sessions of some apps turned into a replica count for
    the customer's own backend (e.g. the dialog service DUIX calls).

    desired = ceil(sessions / ``sessions_per_replica``) within [``min_replicas``,
    ``max_replicas``]; a lower value is only followed once it has held for
    ``scale_down_stabilization_seconds`` (like the HPA's scale-down stabilization window).
    """

    #: ``^[a-z][a-z0-9-]*$``: the ``target`` label and the ``/api/v1/scaling/{name}`` path.
    name: str
    #: App names, app ids or globs, like a policy's ``apps``.
    apps: tuple[Pattern, ...]
    sessions_per_replica: float = Field(gt=0, le=1_000_000, allow_inf_nan=False)
    min_replicas: int = Field(default=1, ge=0, le=100_000)
    max_replicas: int = Field(default=10, ge=1, le=100_000)
    scale_down_stabilization_seconds: float = Field(
        default=300.0, ge=0, le=86_400, allow_inf_nan=False
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _label_name(value, "target")

    @field_validator("apps")
    @classmethod
    def _some_apps(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}"
            )
        return self

    def selects(self, app: AppConfig) -> bool:
        """Whether ``app`` (by name or app_id) counts towards this target."""
        return _matches_any(self.apps, app.name, app.app_id)


class ScalingSettings(_Section):
    """Autoscaling signals (``/api/v1/scaling/{target}`` and ``duixwatch_scaling_*``)."""

    targets: tuple[ScalingTarget, ...] = ()
    #: How often the targets are recomputed from the latest snapshots, seconds.
    evaluation_interval_seconds: float = Field(default=5.0, gt=0, le=3600, allow_inf_nan=False)


class ShardingSettings(_Section):
    """Split the apps across replicas: this one owns the apps whose stable hash of the app_id
    modulo ``count`` is ``index``.

    ``index: auto`` takes it from the pod name of a StatefulSet (``duixwatch-2`` → 2), read
    from ``$POD_NAME``, else ``$HOSTNAME``.
    """

    index: int | Literal["auto"] = 0
    count: int = Field(default=1, ge=1, le=1000)

    @field_validator("index")
    @classmethod
    def _not_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0 or more (or auto)")
        return value

    @model_validator(mode="after")
    def _in_range(self) -> Self:
        if isinstance(self.index, int) and self.index >= self.count:
            raise ValueError(f"index {self.index} must be below count {self.count}")
        return self

    def resolve(self, environ: Mapping[str, str]) -> int:
        """The index in force (``auto``: the ``-N`` suffix of ``$POD_NAME`` or ``$HOSTNAME``)."""
        if isinstance(self.index, int):
            return self.index
        for variable in ("POD_NAME", "HOSTNAME"):
            name = environ.get(variable, "")
            match = _ORDINAL_RE.search(name)
            if match:
                index = int(match.group(1))
                if index >= self.count:
                    raise errors.ConfigError(
                        f"sharding.index auto: ${variable} {name!r} gives index {index}, "
                        f"not below sharding.count {self.count}"
                    )
                return index
        raise errors.ConfigError(
            "sharding.index auto: neither $POD_NAME nor $HOSTNAME ends in -N (a StatefulSet "
            "pod name); set sharding.index"
        )


_ORDINAL_RE = re.compile(r"-(\d+)$")


class Config(_Strict):
    """The whole configuration, as :func:`load_config` returns it.

    Built in code, it checks the same cross-field rules as :func:`load_config` (raising a
    :class:`~pydantic.ValidationError` that lists them). ``source`` is the absolute path of the
    file it was loaded from (``None`` when built in code); it is not a config key and not
    settable by env.
    """

    duix: DuixSettings = Field(default_factory=DuixSettings)
    apps: tuple[AppConfig, ...]
    server: ServerSettings = Field(default_factory=ServerSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    enforcement: EnforcementSettings = Field(default_factory=EnforcementSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    policies: tuple[PolicyConfig, ...] = ()
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    sharding: ShardingSettings = Field(default_factory=ShardingSettings)
    source: Path | None = None

    @field_validator("apps")
    @classmethod
    def _at_least_one(cls, value: tuple[AppConfig, ...]) -> tuple[AppConfig, ...]:
        if not value:
            raise ValueError("at least one app is required")
        return value

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Self:
        if not _deferred(info):
            _raise_problems(_cross_check(_Facts.of(self)))
        return self

    def app(self, name_or_id: str) -> AppConfig:
        """The app with this name or app_id (``KeyError`` when there is none)."""
        for app in self.apps:
            if name_or_id in (app.name, app.app_id):
                return app
        raise KeyError(name_or_id)


#: The top-level keys a config file (and ``DUIXWATCH_<KEY>`` JSON) may set.
_TOP_LEVEL_KEYS = tuple(name for name in Config.model_fields if name != "source")


# --------------------------------------------------------------------------- errors


class ConfigFileError(errors.ConfigError):
    """The config file (or its env overrides) is invalid.

    ``errors`` holds one line per problem (``FILE:LINE: key.path: what is wrong``), sorted by
    line; the message is all of them, one per line. ``path`` is the file as given.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.path = path
        self.errors = problems
        self.location = problems[0].split(": ", 1)[0] if problems else path


def _dotted(path: KeyPath) -> str:
    """``("apps", 0, "app_key")`` → ``apps[0].app_key``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True, slots=True)
class _Problem:
    """One problem at a key path; ``env`` names the variable when no key path applies."""

    path: KeyPath
    message: str
    env: str | None = None


# --------------------------------------------------------------------------- YAML with lines


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader driven node by node, recording the 1-based line of every key path.

    Keys must be strings and unique within their mapping; merge keys (``<<: *anchor``) work,
    and an own key after a merge overrides the merged one as YAML intends.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[KeyPath, int] = {}
        #: Integer scalars whose text is not their plain decimal (``0123``, ``0x1F``, ``1_0``).
        self.odd_ints: dict[KeyPath, str] = {}
        self.problems: list[_Problem] = []
        self._checked: set[int] = set()
        self._active: set[int] = set()

    def build(self, node: yaml.Node, path: KeyPath = ()) -> Any:
        if id(node) in self._active:
            self.problems.append(_Problem(path, "a YAML alias refers to itself"))
            return None
        self._active.add(id(node))
        try:
            return self._build(node, path)
        finally:
            self._active.discard(id(node))

    def _build(self, node: yaml.Node, path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                self.problems.append(_Problem(path, f"unsupported YAML tag {node.tag}"))
                return None
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                self.problems.append(_Problem(path, f"unsupported YAML tag {node.tag}"))
                return None
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*path, index)))
            return items
        try:
            value = self.construct_object(node, deep=True)
        except (ValueError, OverflowError):
            # e.g. a date that does not exist (2024-13-45): keep the text, validation decides.
            self.problems.append(_Problem(path, f"cannot read the value as {node.tag}"))
            return node.value
        if isinstance(value, int) and not isinstance(value, bool) and node.value != str(value):
            self.odd_ints[path] = node.value
        return value

    def _key(self, node: yaml.Node) -> str | None:
        if isinstance(node, yaml.ScalarNode):
            key = self.construct_object(node)
            if isinstance(key, str):
                return key
        return None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first_line: dict[str, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self._key(key_node)
                line = key_node.start_mark.line + 1
                if key is None:
                    shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                    self.lines[(*path, str(shown))] = line
                    self.problems.append(
                        _Problem((*path, str(shown)), "keys must be strings (quote the key)")
                    )
                elif key in first_line:
                    self.lines[(*path, key)] = line
                    self.problems.append(
                        _Problem(
                            (*path, key), f"duplicate key (first given on line {first_line[key]})"
                        )
                    )
                else:
                    first_line[key] = line
        self.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            if key is None:
                continue
            child = (*path, key)
            # The last occurrence wins, as its value does (merged keys come first).
            self.lines[child] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, child)
        return result


def _yaml_problem(exc: yaml.YAMLError) -> tuple[int, str]:
    """Line and text of a YAML error, without the source excerpt (it may hold a key)."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 1, "YAML syntax error"
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    context = exc.context or ""
    if context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
        context += f" (from line {exc.context_mark.line + 1})"
    text = "; ".join(part for part in (context, exc.problem) if part)
    return line, f"YAML syntax error: {text or 'invalid YAML'}"


# --------------------------------------------------------------------------- ${VAR} expansion

_REFERENCE_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


class _ExpansionError(ValueError):
    pass


def _expand(text: str, environ: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (default when unset or empty); ``$${`` → ``${``.

    Raises :class:`_ExpansionError` naming the variable (never its value).
    """

    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        if found == "$${":
            return "${"
        if match.group(1) is None:
            raise _ExpansionError("unterminated ${ (write $${ for a literal ${)")
        reference = _VAR_RE.fullmatch(match.group(1))
        if reference is None:
            raise _ExpansionError(
                f"malformed reference {found!r}: use ${{NAME}} or ${{NAME:-default}}"
                " (write $${ for a literal ${)"
            )
        name, default = reference.group(1), reference.group(2)
        value = environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise _ExpansionError(f"environment variable {name} is not set (used as ${{{name}}})")
        return value

    if "$" not in text:
        return text
    return _REFERENCE_RE.sub(replace, text)


# --------------------------------------------------------------------------- the loader


def _model_at(path: KeyPath) -> type[BaseModel] | None:
    """The model class whose fields the key path ``path`` addresses (``None``: not a model)."""
    current: type[BaseModel] = Config
    for part in path:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if get_origin(annotation) is tuple:
            annotation = get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        current = annotation
    return current


def _suggest(path: KeyPath, key: str) -> str:
    model = _model_at(path)
    if model is None:
        return ""
    names = [name for name in model.model_fields if model is not Config or name != "source"]
    if model is AppConfig:
        names.append("app_key_file")
    close = difflib.get_close_matches(key, names, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _walk_strings(data: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str, Any, str | int]]:
    """Every string value below ``data``: (path, text, container, key in container)."""
    items: Any = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        child = (*path, key)
        if isinstance(value, str):
            yield child, value, data, key
        elif isinstance(value, dict | list):
            yield from _walk_strings(value, child)


class _Loader:
    """One load of one file: its data, line map, env sources and collected problems."""

    def __init__(self, path: str | os.PathLike[str], environ: Mapping[str, str]) -> None:
        self.shown = os.fspath(path)
        self.file = Path(path)
        self.environ = environ
        self.lines: dict[KeyPath, int] = {}
        self.odd_ints: dict[KeyPath, str] = {}
        self.env_sources: dict[KeyPath, str] = {}
        self.problems: list[_Problem] = []
        #: Paths that already have a problem: later problems below them are consequences.
        self.failed: set[KeyPath] = set()

    # -- problem bookkeeping ----------------------------------------------------------------

    def problem(self, path: KeyPath, message: str, *, covers: bool = True) -> None:
        """Record a problem at ``path``; with ``covers``, later ones below it are dropped."""
        if any(path[: len(bad)] == bad for bad in self.failed):
            return
        self.problems.append(_Problem(path, message))
        if path and covers:
            self.failed.add(path)

    def env_problem(self, var: str, message: str) -> None:
        self.problems.append(_Problem((), message, env=var))

    def env_source(self, path: KeyPath) -> str | None:
        for cut in range(len(path), 0, -1):
            var = self.env_sources.get(path[:cut])
            if var is not None:
                return var
        return None

    def line(self, path: KeyPath) -> int:
        for cut in range(len(path), 0, -1):
            line = self.lines.get(path[:cut])
            if line is not None:
                return line
        return 1

    def render(self, problem: _Problem) -> tuple[int, str]:
        if problem.env is not None:
            return 1 << 30, f"{self.shown}: {problem.env}: {problem.message}"
        where = _dotted(problem.path)
        var = self.env_source(problem.path)
        if var is not None:
            prefix = f"{self.shown}: {where}: " if where else f"{self.shown}: "
            return 1 << 30, f"{prefix}{problem.message} (from env {var})"
        line = self.line(problem.path)
        prefix = f"{self.shown}:{line}: {where}: " if where else f"{self.shown}:{line}: "
        return line, prefix + problem.message

    def fail(self, problems: list[str]) -> ConfigFileError:
        return ConfigFileError(self.shown, problems)

    # -- the steps --------------------------------------------------------------------------

    def load(self) -> Config:
        data = self.read()
        self.overlay_env(data)
        self.expand_references(data)
        if "source" in data:
            self.problem(("source",), "unknown key")
            del data["source"]
        self.resolve_apps(data)
        data["source"] = self.file.absolute()
        config = self.validate(data)
        facts = _Facts.of(config) if config is not None else _Facts.of_data(data)
        for path, message in _cross_check(facts):
            self.problem(path, message)
        if self.problems or config is None:
            rendered = sorted((self.render(p) for p in self.problems), key=lambda r: r[0])
            raise self.fail([text for _, text in rendered])
        return config

    def read(self) -> dict[str, Any]:
        try:
            raw = self.file.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise self.fail([f"{self.shown}: cannot read the config file: {reason}"]) from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise self.fail([f"{self.shown}: the config file is not UTF-8 text"]) from None
        loader = _LineLoader(text)
        syntax: tuple[int, str] | None = None
        data: Any = None
        try:
            node = loader.get_single_node()
            data = loader.build(node) if node is not None else None
        except yaml.YAMLError as exc:
            syntax = _yaml_problem(exc)
        finally:
            loader.dispose()
        if syntax is not None:
            # Raised outside the except block: the YAML error quotes the source line, which
            # may hold a key, and must not ride along as __context__.
            raise self.fail([f"{self.shown}:{syntax[0]}: {syntax[1]}"])
        self.lines = loader.lines
        self.odd_ints = loader.odd_ints
        for found in loader.problems:
            self.problem(found.path, found.message)
        if data is None:
            raise self.fail(
                [f"{self.shown}:1: the config file is empty; it needs at least an `apps:` list"]
            )
        if not isinstance(data, dict):
            raise self.fail(
                [f"{self.shown}:1: the top level must be a mapping of sections (duix:, apps: …)"]
            )
        # A section left empty (every key commented out) means "all defaults".
        for key in _TOP_LEVEL_KEYS:
            if key in data and data[key] is None and key != "apps":
                del data[key]
        return data

    def overlay_env(self, data: dict[str, Any]) -> None:
        seen: dict[KeyPath, str] = {}
        for var in sorted(self.environ):
            if not var.upper().startswith(ENV_PREFIX):
                continue
            rest = var[len(ENV_PREFIX) :].lower()
            if "__" not in rest and rest not in _TOP_LEVEL_KEYS:
                continue  # e.g. DUIXWATCH_LOG_LEVEL: the CLI's, not a config key
            path = self.env_path(var, tuple(rest.split("__")))
            if path is None:
                continue
            if path in seen:
                self.env_problem(var, f"{seen[path]} sets {_dotted(path)} too; keep one")
                continue
            seen[path] = var
            self.set_from_env(data, path, var, self.environ[var])

    def env_path(self, var: str, parts: tuple[str, ...]) -> tuple[str, ...] | None:
        """The key path ``var`` addresses, or ``None`` (with a problem) when there is none."""
        if any(not part for part in parts):
            self.env_problem(var, "empty name between '__' separators")
            return None
        model: type[BaseModel] = Config
        for depth, part in enumerate(parts):
            known = [n for n in model.model_fields if model is not Config or n != "source"]
            if part not in known:
                hint = _suggest(parts[:depth], part)
                self.env_problem(var, f"no such setting {_dotted(parts[: depth + 1])}{hint}")
                return None
            if depth == len(parts) - 1:
                return parts
            if model is Config and part in ("apps", "policies"):
                self.env_problem(
                    var, f"{part} can only be set as a whole, as JSON in {ENV_PREFIX}{part.upper()}"
                )
                return None
            nested = _model_at(parts[: depth + 1])
            if nested is None:
                self.env_problem(var, f"{_dotted(parts[: depth + 1])} has no keys below it")
                return None
            model = nested
        return parts  # pragma: no cover - the loop always returns

    def set_from_env(self, data: dict[str, Any], path: tuple[str, ...], var: str, raw: str) -> None:
        self.env_sources[path] = var
        value: Any = raw
        wants_json = len(path) == 1 or _model_at(path) is not None
        if wants_json:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                self.problem(path, f"not valid JSON: {exc.msg} at character {exc.pos}")
                return
        target = data
        for part in path[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = {}
                target[part] = child
            target = child
        existing = target.get(path[-1])
        if isinstance(existing, dict) and isinstance(value, dict):
            # A JSON section laid over the file's section: env wins key by key, and the
            # file's other keys keep their lines.
            del self.env_sources[path]
            for key in value:
                self.env_sources[(*path, key)] = var
            target[path[-1]] = {**existing, **value}
        else:
            target[path[-1]] = value

    def expand_references(self, data: dict[str, Any]) -> None:
        for path, text, container, key in list(_walk_strings(data, ())):
            if self.env_source(path) is not None:
                continue  # env values are literal
            try:
                container[key] = _expand(text, self.environ)
            except _ExpansionError as exc:
                self.problem(path, str(exc))

    def resolve_apps(self, data: dict[str, Any]) -> None:
        apps = data.get("apps")
        if not isinstance(apps, list):
            return
        for index, app in enumerate(apps):
            if isinstance(app, dict):
                self.resolve_app(app, ("apps", index))

    def resolve_app(self, app: dict[str, Any], path: KeyPath) -> None:
        id_path = (*path, "app_id")
        odd = self.odd_ints.get(id_path)
        if odd is not None and self.env_source(id_path) is None:
            self.problem(
                id_path,
                f'{odd} is read by YAML as the number {app["app_id"]}; quote the id: "{odd}"',
            )
        given_file = app.pop("app_key_file", None)
        has_key = app.get("app_key") is not None
        has_file = given_file is not None
        if has_key and has_file:
            self.problem((*path, "app_key"), "give either app_key or app_key_file, not both")
            app["app_key"] = _UNRESOLVED_KEY
        elif has_key:
            if not isinstance(app["app_key"], str):
                self.problem((*path, "app_key"), "must be a string (quote it)")
                app["app_key"] = _UNRESOLVED_KEY
        elif has_file:
            self.key_from_file(app, path, given_file)
        else:
            self.key_from_credentials(app, path)

    def key_from_file(self, app: dict[str, Any], path: KeyPath, given: Any) -> None:
        key_path = (*path, "app_key_file")
        app["app_key"] = _UNRESOLVED_KEY
        if not isinstance(given, str) or not given.strip():
            self.problem(key_path, "must be a file name")
            return
        candidates: list[Path] = []
        requested = Path(given)
        credentials = self.environ.get("CREDENTIALS_DIRECTORY")
        if requested.is_absolute():
            candidates.append(requested)
        else:
            if credentials:
                candidates.append(Path(credentials) / requested)
            candidates.append(self.file.absolute().parent / requested)
        chosen = next((c for c in candidates if c.exists()), candidates[-1])
        key = self.read_key(key_path, chosen, tried=candidates)
        if key is not None:
            app["app_key"] = key
            app["app_key_file"] = chosen

    def key_from_credentials(self, app: dict[str, Any], path: KeyPath) -> None:
        app["app_key"] = _UNRESOLVED_KEY
        name = app.get("name")
        if name is None:
            name = app.get("app_id")
        name = str(name) if isinstance(name, str | int) and not isinstance(name, bool) else ""
        credentials = self.environ.get("CREDENTIALS_DIRECTORY")
        hint = (
            "set app_key (e.g. ${DUIX_APP_KEY}) or app_key_file, or give the systemd "
            f"credential {name or '<name>'!r} (LoadCredential={name or '<name>'}:/path)"
        )
        if not credentials:
            self.problem(
                path, f"no app key: {hint}; $CREDENTIALS_DIRECTORY is not set", covers=False
            )
            return
        if not _APP_NAME_RE.fullmatch(name):
            self.problem(path, f"no app key: {hint}", covers=False)
            return
        candidate = Path(credentials) / name
        if not candidate.exists():
            self.problem(path, f"no app key: {hint}; {candidate} does not exist", covers=False)
            return
        key = self.read_key(path, candidate, tried=[candidate])
        if key is not None:
            app["app_key"] = key
            app["app_key_file"] = candidate

    def read_key(self, path: KeyPath, file: Path, *, tried: list[Path]) -> str | None:
        """The key in ``file``, stripped; ``None`` (with a problem) when unusable."""
        where = f"{file}" if len(tried) == 1 else f"{file} (tried {', '.join(map(str, tried))})"
        try:
            with file.open("rb") as handle:
                raw = handle.read(_MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            self.problem(
                path, f"cannot read the key file {where}: {exc.strerror or exc}", covers=False
            )
            return None
        if len(raw) > _MAX_KEY_FILE_BYTES:
            self.problem(path, f"the key file {file} is too large to hold an appKey", covers=False)
            return None
        try:
            key = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.problem(path, f"the key file {file} is not UTF-8 text", covers=False)
            return None
        if not key:
            self.problem(path, f"the key file {file} is empty", covers=False)
            return None
        return key

    def validate(self, data: dict[str, Any]) -> Config | None:
        try:
            return Config.model_validate(data, context={_DEFER_CROSS_CHECKS: True})
        except ValidationError as exc:
            details = exc.errors(include_input=False, include_url=False)
        # Outside the except block: the ValidationError (whose text quotes the input, keys
        # included) must not become the __context__ of the ConfigFileError raised later.
        for detail in details:
            path: KeyPath = tuple(part for part in detail["loc"] if part != "[key]")
            self.problem(path, _message(detail["type"], detail["msg"], path))
        return None


_PLAIN_MESSAGES = {
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "string_type": "must be a string (quote it)",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
}


def _message(kind: str, text: str, path: KeyPath) -> str:
    """Pydantic's message in the words of a config file."""
    if kind == "extra_forbidden":
        return "unknown key" + (_suggest(path[:-1], str(path[-1])) if path else "")
    if kind == "missing":
        return "required key is missing"
    plain = _PLAIN_MESSAGES.get(kind)
    if plain is not None:
        return plain
    return text.removeprefix("Value error, ")


# --------------------------------------------------------------------------- cross checks


@dataclass(frozen=True, slots=True)
class _AppRef:
    index: int
    name: str
    app_id: str


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the cross-field rules look at, from a validated :class:`Config` or from raw data.

    When the whole config fails validation the loader still checks what it can (apps and
    policies that are valid on their own, the names of the others), so a duplicate name is
    reported together with, not after, an unrelated type error.
    """

    apps: list[_AppRef]
    policies: list[tuple[int, PolicyConfig]]
    policy_names: list[tuple[int, str]]
    allow_close_all: bool
    targets: list[tuple[int, ScalingTarget]] = field(default_factory=list)

    @classmethod
    def of(cls, config: Config) -> _Facts:
        return cls(
            apps=[_AppRef(i, app.name, app.app_id) for i, app in enumerate(config.apps)],
            policies=list(enumerate(config.policies)),
            policy_names=[(i, policy.name) for i, policy in enumerate(config.policies)],
            allow_close_all=config.enforcement.allow_close_all,
            targets=list(enumerate(config.scaling.targets)),
        )

    @classmethod
    def of_data(cls, data: Mapping[str, Any]) -> _Facts:
        apps: list[_AppRef] = []
        raw_apps = data.get("apps")
        for index, app in enumerate(raw_apps if isinstance(raw_apps, list) else []):
            if not isinstance(app, dict):
                continue
            try:
                app_id = _app_id(app.get("app_id"))
            except ValueError:
                continue
            name = app_id if app.get("name") is None else app["name"]
            if isinstance(app_id, str) and isinstance(name, str) and _APP_NAME_RE.fullmatch(name):
                apps.append(_AppRef(index, name, app_id))
        policies: list[tuple[int, PolicyConfig]] = []
        policy_names: list[tuple[int, str]] = []
        raw_policies = data.get("policies")
        for index, raw in enumerate(raw_policies if isinstance(raw_policies, list) else []):
            if not isinstance(raw, dict):
                continue
            name = raw.get("name")
            if isinstance(name, str) and _POLICY_NAME_RE.fullmatch(name):
                policy_names.append((index, name))
            try:
                policy = PolicyConfig.model_validate(raw, context={_DEFER_CROSS_CHECKS: True})
            except ValidationError:
                continue  # reported by the validation of the whole config
            policies.append((index, policy))
        enforcement = data.get("enforcement")
        allow: Any = (
            enforcement.get("allow_close_all", False) if isinstance(enforcement, dict) else False
        )
        try:
            allow_close_all = TypeAdapter(bool).validate_python(allow)
        except ValidationError:
            allow_close_all = False  # reported by validation; the safe reading meanwhile
        targets: list[tuple[int, ScalingTarget]] = []
        scaling = data.get("scaling")
        raw_targets = scaling.get("targets") if isinstance(scaling, dict) else None
        for index, raw in enumerate(raw_targets if isinstance(raw_targets, list) else []):
            try:
                targets.append((index, ScalingTarget.model_validate(raw)))
            except ValidationError:
                continue  # reported by the validation of the whole config
        return cls(
            apps=apps,
            policies=policies,
            policy_names=policy_names,
            allow_close_all=allow_close_all,
            targets=targets,
        )


def _cross_check(facts: _Facts) -> list[tuple[KeyPath, str]]:
    """Rules across fields: unique names and ids, policy combinations, selection, close_all."""
    problems: list[tuple[KeyPath, str]] = []
    names: dict[str, int] = {}
    ids: dict[str, int] = {}
    for app in facts.apps:
        if app.name in names:
            problems.append(
                (
                    ("apps", app.index, "name"),
                    f"duplicate app name {app.name!r} (also apps[{names[app.name]}])",
                )
            )
        else:
            names[app.name] = app.index
        if app.app_id in ids:
            problems.append(
                (
                    ("apps", app.index, "app_id"),
                    f"duplicate app_id {app.app_id!r} (also apps[{ids[app.app_id]}])",
                )
            )
        else:
            ids[app.app_id] = app.index
    policy_names: dict[str, int] = {}
    for index, name in facts.policy_names:
        if name in policy_names:
            problems.append(
                (
                    ("policies", index, "name"),
                    f"duplicate policy name (also policies[{policy_names[name]}])",
                )
            )
        else:
            policy_names[name] = index
    for index, policy in facts.policies:
        here: KeyPath = ("policies", index)
        problems += [((*here, *path), message) for path, message in _policy_problems(policy)]
        selected = [app for app in facts.apps if _selects(policy, app.name, app.app_id)]
        if not selected:
            problems.append(_selects_nothing(facts, policy, here))
        if policy.action == "close_all":
            problems += _check_close_all(facts, policy, here, selected)
    target_names: dict[str, int] = {}
    for index, target in facts.targets:
        here = ("scaling", "targets", index)
        if target.name in target_names:
            problems.append(
                (
                    (*here, "name"),
                    f"duplicate target name (also scaling.targets[{target_names[target.name]}])",
                )
            )
        else:
            target_names[target.name] = index
        if not any(_matches_any(target.apps, app.name, app.app_id) for app in facts.apps):
            problems.append(((*here, "apps"), "matches no app: check the names, ids and globs"))
    return problems


def _selects_nothing(facts: _Facts, policy: PolicyConfig, here: KeyPath) -> tuple[KeyPath, str]:
    """The problem of a policy that selects no app: a typo must not disable a safety policy."""
    message = "matches no app: check apps/exclude_apps"
    included = any(_matches_any(policy.apps, app.name, app.app_id) for app in facts.apps)
    if included:
        return (*here, "exclude_apps"), f"{message} (it excludes every app `apps` selects)"
    known = [app.name for app in facts.apps] + [app.app_id for app in facts.apps]
    for pattern in policy.apps:
        close = difflib.get_close_matches(pattern, known, n=1)
        if close:
            return (*here, "apps"), f"{message}; did you mean {close[0]!r}?"
    return (*here, "apps"), message


def _check_close_all(
    facts: _Facts, policy: PolicyConfig, here: KeyPath, selected: list[_AppRef]
) -> list[tuple[KeyPath, str]]:
    """design.md §8 rule 5: ``close_all`` needs the global allowance and a confirmed app."""
    problems: list[tuple[KeyPath, str]] = []
    if not facts.allow_close_all:
        problems.append(
            (
                (*here, "action"),
                "close_all policies are rejected unless enforcement.allow_close_all is true",
            )
        )
    target: _AppRef | None = None
    if "apps" not in policy.model_fields_set:
        problems.append((here, "a close_all policy must name its one app in `apps`"))
    elif len(selected) == 1:
        target = selected[0]
    elif selected:  # none at all is reported by the caller
        which = ", ".join(app.name for app in selected)
        problems.append(
            (
                (*here, "apps"),
                "a close_all policy must apply to exactly one app; it selects "
                f"{len(selected)} ({which})",
            )
        )
    if policy.confirm_app_id is None:
        named = f" ({target.name})" if target else ""
        problems.append(
            (
                here,
                "a close_all policy needs confirm_app_id: the app_id of the one app it "
                f"applies to{named}",
            )
        )
    elif target is not None and policy.confirm_app_id != target.app_id:
        problems.append(
            (
                (*here, "confirm_app_id"),
                f"{policy.confirm_app_id!r} is not the app_id of {target.name}, the one app "
                "this policy applies to",
            )
        )
    return problems


# --------------------------------------------------------------------------- public entry points


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Load, expand, override and validate the config file at ``path``.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` values, ``DUIXWATCH_…``
    overrides and ``$CREDENTIALS_DIRECTORY``. Raises :class:`ConfigFileError` listing every
    problem, one per line.
    """
    loader = _Loader(path, os.environ if environ is None else environ)
    return loader.load()


def _url_host(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host + (f":{parts.port}" if parts.port is not None else "")


def _mask_url(url: str) -> str:
    """``url`` with the password of its user info, if any, masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:{MASK}@{_url_host(parts)}"
    return urlunsplit(parts._replace(netloc=netloc))


def _mask_webhook(url: str) -> str:
    """Only where a webhook goes: its path and query are the credential (Slack, Teams …)."""
    parts = urlsplit(url)
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return urlunsplit(
        (parts.scheme, _url_host(parts), f"/{MASK}" if hidden else parts.path, "", "")
    )


def mask(cfg: Config) -> dict[str, Any]:
    """The effective config as JSON-able data, every secret replaced by ``"**********"``.

    For the startup log line and ``/status``. Secrets: appKeys, the password of
    ``duix.base_url``, and of each notify target the URL's path and query (a webhook URL is
    its own credential) and every header value.
    """
    data = cfg.model_dump(mode="json")
    for app in data["apps"]:
        app["app_key"] = MASK
    data["duix"]["base_url"] = _mask_url(data["duix"]["base_url"])
    for policy in data["policies"]:
        for target in policy["notify"]:
            target["url"] = _mask_webhook(target["url"])
            target["headers"] = dict.fromkeys(target["headers"], MASK)
    return data
