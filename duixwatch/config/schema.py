"""The config schema (design.md §4): every section but ``policies:``, and the whole :class:`Config`.

Each section is a frozen model whose unknown keys are errors; the schema of a policy is the
policy package's (:class:`duixwatch.policy.schema.PolicyConfig`, with its match kinds), and
sharding has a module of its own (:mod:`duixwatch.config.sharding`). Built in code, a
:class:`Config` reads no environment (the loader lays ``DUIXWATCH_…`` variables over a file,
:mod:`duixwatch.config.env`) and checks the same rules across sections as the loader does
(:mod:`duixwatch.config.checks`), raising one :class:`~pydantic.ValidationError` that lists
them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from duixwatch.config import checks
from duixwatch.config.sharding import ShardingSettings
from duixwatch.core import models
from duixwatch.core.fields import (
    AppId,
    DuixId,
    Pattern,
    Section,
    Strict,
    app_id,
    deferred,
    label_name,
    matches_any,
    raise_problems,
)
from duixwatch.dialog.schema import DialogProbeConfig
from duixwatch.policy.schema import PolicyConfig

__all__ = [
    "APP_NAME_RE",
    "DEFAULT_BASE_URL",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "ENV_PREFIX",
    "MIN_AUDIT_BYTES",
    "TOP_LEVEL_KEYS",
    "AppConfig",
    "Config",
    "DaemonSettings",
    "DuixPaths",
    "DuixSettings",
    "EnforcementSettings",
    "ScalingSettings",
    "ScalingTarget",
    "ServerSettings",
    "SessionListMapping",
    "StateSettings",
    "split_listen",
]

DEFAULT_BASE_URL = "https://app.duix.ai"
#: ``duix.max_response_bytes``: 8 MiB.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: An exporter listens on every interface by default.
DEFAULT_LISTEN = "0.0.0.0:9814"
ENV_PREFIX = "DUIXWATCH_"
#: The smallest ``state.audit_max_bytes`` other than 0: room for a few records per file.
MIN_AUDIT_BYTES = 4096

#: An app name is a Prometheus label value and a file name (systemd credential, key file).
APP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_LOG_LEVELS = ("debug", "info", "warning", "error")


# --------------------------------------------------------------------------- duix: section


class SessionListMapping(Strict):
    """Explicit reading of ``getconcurrentList`` when auto-detection is not enough.

    ``items``: dotted path under ``data`` to the list (``""`` means ``data`` itself is the
    list); ``id`` and ``started_at``: the keys of a list item. ``None`` means auto-detect.
    """

    items: str | None = None
    id: str | None = None
    started_at: str | None = None


class DuixPaths(Strict):
    """Endpoint paths. ``getConversationById`` is documented both with and without ``v2``."""

    prefix: str = "/duix-openapi-v2/sdk/v2"
    conversation: str = "/duix-openapi-v2/sdk/getConversationById"

    @field_validator("prefix", "conversation")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value.rstrip("/")


class DuixSettings(Strict):
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
    #: The largest answer read (after decompression): a longer one is ``malformed``, and the
    #: rest of it is never read. 8 MiB holds about 90,000 list items of 90 bytes.
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, gt=0, le=1024**3)
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


def _conversations(value: Any) -> tuple[str, ...] | Literal["auto"]:
    if value == "auto":
        return "auto"
    if not isinstance(value, list | tuple):
        raise ValueError("must be a list of conversation ids, or auto")  # noqa: TRY004
    ids: list[str] = []
    for index, item in enumerate(value):
        try:
            ids.append(app_id(item))
        except ValueError as exc:
            raise ValueError(f"item {index}: {exc}") from None
        if not isinstance(ids[-1], str):
            raise ValueError(f"item {index}: must be a string of digits")  # noqa: TRY004
    return tuple(ids)


#: ``apps[].conversations``: ids, or ``auto`` (one message for either, not one per reading).
Conversations = Annotated[
    tuple[str, ...] | Literal["auto"],
    PlainValidator(_conversations),
    PlainSerializer(lambda value: value if value == "auto" else list(value)),
]


class AppConfig(Section):
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
    #: Conversation ids whose configuration is watched, or ``auto``: those of the live sessions.
    conversations: Conversations = ()
    conversation_poll_interval_seconds: float = Field(default=300.0, ge=1, le=86_400)
    #: Avatar ids whose training is watched until it ends.
    avatars: tuple[DuixId, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_app_id(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("name") is None:
            app_id = data.get("app_id")
            derived = str(app_id) if isinstance(app_id, str | int) else ""
            # An invalid app_id is reported on its own; do not echo it as a second name error.
            name = derived if APP_NAME_RE.fullmatch(derived) else "unnamed"
            return {**data, "name": name}
        return data

    @field_validator("name")
    @classmethod
    def _label_and_file_name(cls, value: str) -> str:
        if not APP_NAME_RE.fullmatch(value):
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


def split_listen(value: str) -> tuple[str, int]:
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


class ServerSettings(Section):
    """The HTTP surface (``/metrics``, ``/healthz``, ``/readyz``, ``/status``)."""

    #: ``HOST:PORT``; IPv6 as ``[::]:9814``; port 0 picks a free port.
    listen: str = DEFAULT_LISTEN
    #: exporter-toolkit's web config (TLS, basic auth, headers); relative to this file's
    #: directory. ``duixwatch run --web.config.file`` overrides it.
    web_config_file: Path | None = None
    #: ``/healthz`` and ``/readyz`` answer without basic auth (kubelet probes); TLS still applies.
    open_health_endpoints: bool = True
    #: ``/status`` may list session ids and conversation details (``false``: counts only).
    status_details: bool = True
    #: Open connections at most; at the limit the one waiting longest for its request is
    #: closed to make room, and a new one is refused when every connection is being served.
    max_connections: int = Field(512, ge=1, le=1_000_000)
    #: From connecting (or the end of its previous response) a client has this long to send
    #: a whole request; then the connection is closed (slow clients hold nothing for long).
    read_timeout_seconds: float = Field(5.0, gt=0, le=600)
    #: An idle keep-alive connection is closed after this long.
    idle_timeout_seconds: float = Field(5.0, gt=0, le=3600)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The TCP port to bind."""
        return split_listen(self.listen)[1]


class StateSettings(Section):
    """Where the SQLite state and ``audit.jsonl`` live.

    A relative ``dir`` is relative to the current directory (the unit's working directory),
    not to the config file; under systemd write ``dir: ${STATE_DIRECTORY}``.
    """

    dir: Path = Path("./duixwatch-state")
    #: Ended sessions are kept in the history this many days (``duixwatch report``).
    history_days: float = Field(default=30.0, ge=1, le=3650)
    #: ``audit.jsonl`` is rotated (to ``audit.jsonl.1``, …) before a write would take it past
    #: this many bytes; 0: never (rotate it with logrotate in ``create`` mode and SIGUSR1).
    audit_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0, le=1 << 40)
    #: Rotated audit files kept (``audit.jsonl.1`` … ``audit.jsonl.<keep>``); older are deleted.
    audit_keep: int = Field(default=10, ge=1, le=1000)

    @field_validator("audit_max_bytes")
    @classmethod
    def _room_for_records(cls, value: int) -> int:
        if 0 < value < MIN_AUDIT_BYTES:
            raise ValueError(f"must be 0 (no rotation) or at least {MIN_AUDIT_BYTES} bytes")
        return value

    @field_validator("dir", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value


class EnforcementSettings(Section):
    """The global switch and caps of the executor (design.md §8)."""

    #: Nothing is ever closed unless this is true.
    enabled: bool = False
    #: ``close_all`` policies are rejected at load unless this is true.
    allow_close_all: bool = False
    max_stops_per_second: float = Field(default=5.0, gt=0, le=100)


class DaemonSettings(Section):
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


# --------------------------------------------------------------------------- scaling


class ScalingTarget(Section):
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
        return label_name(value, "target")

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
        return matches_any(self.apps, app.name, app.app_id)


class ScalingSettings(Section):
    """Autoscaling signals (``/api/v1/scaling/{target}`` and ``duixwatch_scaling_*``)."""

    targets: tuple[ScalingTarget, ...] = ()
    #: How often the targets are recomputed from the latest snapshots, seconds.
    evaluation_interval_seconds: float = Field(default=5.0, gt=0, le=3600, allow_inf_nan=False)


# --------------------------------------------------------------------------- the whole file


class Config(Strict):
    """The whole configuration, as :func:`duixwatch.config.load_config` returns it.

    ``source`` is the absolute path of the file it was loaded from (``None`` when built in
    code); it is not a config key and not settable by env.
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
    dialog_probes: tuple[DialogProbeConfig, ...] = ()
    source: Path | None = None

    @field_validator("apps")
    @classmethod
    def _at_least_one(cls, value: tuple[AppConfig, ...]) -> tuple[AppConfig, ...]:
        if not value:
            raise ValueError("at least one app is required")
        return value

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Self:
        if not deferred(info):
            raise_problems(checks.cross_check(facts(self)))
        return self

    def app(self, name_or_id: str) -> AppConfig:
        """The app with this name or app_id (``KeyError`` when there is none)."""
        for app in self.apps:
            if name_or_id in (app.name, app.app_id):
                return app
        raise KeyError(name_or_id)


#: The top-level keys a config file (and ``DUIXWATCH_<KEY>`` JSON) may set.
TOP_LEVEL_KEYS = tuple(name for name in Config.model_fields if name != "source")


def facts(config: Config) -> checks.Facts:
    """What the rules across sections look at, from a validated config."""
    return checks.Facts(
        apps=[checks.AppRef(i, app.name, app.app_id) for i, app in enumerate(config.apps)],
        policies=list(enumerate(config.policies)),
        policy_names=[(i, policy.name) for i, policy in enumerate(config.policies)],
        probe_names=[(i, probe.name) for i, probe in enumerate(config.dialog_probes)],
        allow_close_all=config.enforcement.allow_close_all,
        targets=[
            (i, checks.TargetRef(target.name, target.apps))
            for i, target in enumerate(config.scaling.targets)
        ],
    )
