"""The web config in force on the HTTP surface: TLS, basic auth, headers and a rate limit.

:class:`WebSecurity` holds the :class:`~duixwatch.config.web.WebConfig` read at start and
re-reads it — the file and every certificate, key and CA file it names — when any of them
changes (checked on each request and each TLS handshake, a ``stat`` per file, as
exporter-toolkit re-reads per request). A renewed certificate is served on the next handshake
without a restart and without closing the listener; a file that no longer loads keeps the old
configuration in force, logs ``web_config_reload_failed`` once per change and sets
``duixwatch_web_config_last_reload_successful`` to 0. TLS cannot be turned on or off without a
restart (the listener is one or the other).

How the TLS part stays current: the listening context's ``sni_callback`` (called on every
ClientHello, with or without SNI) refreshes and switches the connection to the current context,
which carries the certificate and the client CAs. The client-auth mode and the TLS versions
are copied from the listening context when a connection starts, so a reload updates them there
too; a handshake that started under settings a reload has just changed is refused (the client
retries under the new ones), so no connection is ever accepted under a policy no longer in
force.

:meth:`WebSecurity.wrap` is the ASGI layer: every response gets the configured headers (and
``X-Content-Type-Options: nosniff`` plus, for HTML, a Content-Security-Policy, unless the file
sets them); with ``basic_auth_users`` every request needs a user and password that match a
bcrypt hash — checked in a worker thread, one at a time, with the results of the last 100
checks cached (keyed by a SHA-256 of user, hash and password: neither the password nor the hash
is kept in the key) so a scrape does not cost a bcrypt; an unknown user is checked against a
dummy hash of the same cost, so timing does not tell which users exist. A refusal is 401 with
``WWW-Authenticate: Basic``. ``/healthz`` and ``/readyz`` skip auth and the rate limit when
``open_health_endpoints`` (kubelet probes). Nothing here logs a password, a hash or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import random
import re
import ssl
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.to_thread
import bcrypt
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from duixwatch.config.web import WebConfig, file_signature, load_web_config
from duixwatch.core import errors

__all__ = ["OPEN_PATHS", "WebSecurity"]

log = structlog.get_logger("duixwatch.http")

#: The endpoints kubelet probes (no basic auth with ``server.open_health_endpoints``).
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})
#: Results of this many (user, password) checks are remembered.
CACHE_SIZE: Final = 100
#: bcrypt reads at most 72 bytes of a password; a longer one is refused without a check.
_MAX_PASSWORD_BYTES: Final = 72
_COST_RE = re.compile(r"\$2[abxy]?\$(\d\d)\$")
_HTML_CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class SurfaceMetrics:
    """The HTTP surface's own metrics, on the daemon's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reload_ok = Gauge(
            "duixwatch_web_config_last_reload_successful",
            "1 when the web config (and its certificates) last loaded, 0 when a change did "
            "not load and the previous one stays in force.",
            registry=registry,
        )
        self.reload_at = Gauge(
            "duixwatch_web_config_last_reload_success_timestamp_seconds",
            "Unix time the web config last loaded (seconds).",
            unit="seconds",
            registry=registry,
        )
        self.tls = Gauge(
            "duixwatch_http_tls_enabled",
            "1 when the HTTP surface serves TLS (a web config with tls_server_config).",
            registry=registry,
        )
        self.denied = Counter(
            "duixwatch_http_requests_denied_total",
            "Requests refused before reaching an endpoint, by reason (unauthorized: no or "
            "wrong basic auth; rate_limited: over the web config's rate_limit).",
            ["reason"],
            registry=registry,
        )
        for reason in ("unauthorized", "rate_limited"):
            self.denied.labels(reason)


class WebSecurity:
    """The web config in force and what it makes: a TLS context and an ASGI guard.

    ``path`` is the web config file (``None``: plain HTTP, no auth); loading it at start may
    raise :class:`~duixwatch.config.yamllines.ConfigFileError`. ``now`` gives wall time for
    the reload metric, ``monotonic`` the rate limiter's time; ``checkpw`` is bcrypt's check.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        open_health_endpoints: bool,
        metrics: SurfaceMetrics,
        now: Callable[[], datetime],
        monotonic: Callable[[], float],
        checkpw: Callable[[bytes, bytes], bool] | None = None,
    ) -> None:
        self._path = path
        #: ``/healthz`` and ``/readyz`` without auth (``server.open_health_endpoints``).
        self.open_health_endpoints = open_health_endpoints
        self._metrics = metrics
        self._now = now
        self._monotonic = monotonic
        #: bcrypt's check (a test counts the calls through it).
        self._checkpw = checkpw or _checkpw
        self.config = load_web_config(path) if path is not None else WebConfig()
        self._signature = file_signature(self._watched())
        self._context = self._build_context(self.config)
        self._listener: ssl.SSLContext | None = None
        self._cache: dict[bytes, bool] = {}
        self._dummies: dict[int, bytes] = {}
        self._bcrypt = anyio.CapacityLimiter(1)
        self._tokens, self._tokens_at = 0.0, 0.0
        self._reset_bucket()
        metrics.reload_ok.set(1)
        metrics.reload_at.set(now().timestamp())
        metrics.tls.set(1 if self._context is not None else 0)

    # -- reloading ----------------------------------------------------------------------------

    def _watched(self) -> tuple[Path, ...]:
        own = (self._path,) if self._path is not None else ()
        return (*own, *self.config.tls.files())

    @staticmethod
    def _build_context(config: WebConfig) -> ssl.SSLContext | None:
        return config.tls.server_context() if config.tls.enabled else None

    def refresh(self) -> bool:
        """Re-read the files if any changed; ``True`` when a new configuration is in force."""
        if self._path is None:
            return False
        signature = file_signature(self._watched())
        if signature == self._signature:
            return False
        self._signature = signature  # a change that fails is reported once, not per request
        try:
            new = load_web_config(self._path)
            context = self._build_context(new)
        except errors.ConfigError as exc:
            return self._reload_failed(str(exc))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            return self._reload_failed(f"{self._path}: cannot load the certificate: {reason}")
        if new.tls.enabled != self.config.tls.enabled:
            listening = "HTTPS" if self.config.tls.enabled else "plain HTTP"
            return self._reload_failed(
                f"{self._path}: turning TLS on or off needs a restart (serving {listening})"
            )
        self.config, self._context = new, context
        self._signature = file_signature(self._watched())
        self._cache.clear()
        self._reset_bucket()
        if self._listener is not None and context is not None:
            _copy_connection_settings(context, self._listener)
        self._metrics.reload_ok.set(1)
        self._metrics.reload_at.set(self._now().timestamp())
        log.info("web_config_reloaded", file=str(self._path), tls=context is not None)
        return True

    def _reload_failed(self, message: str) -> bool:
        self._metrics.reload_ok.set(0)
        # An expected failure: the message names the file and line; no traceback.
        log.error("web_config_reload_failed", file=str(self._path), error=message)
        return False

    # -- TLS ------------------------------------------------------------------------------------

    def listener_context(self) -> ssl.SSLContext | None:
        """The context to listen with (``None``: plain HTTP); it follows every reload."""
        if self._context is None:
            return None
        if self._listener is None:
            listener = self.config.tls.server_context()
            listener.sni_callback = self._on_client_hello
            self._listener = listener
        return self._listener

    def _on_client_hello(
        self, connection: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext
    ) -> int | None:
        try:
            before = self._listener_settings()
            self.refresh()
            if self._context is None:
                return None
            if self._listener_settings() != before:
                # This connection was set up under the settings just replaced: refuse it
                # rather than let it in under a client-auth policy no longer in force.
                return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
            connection.context = self._context
        except Exception:
            # A bug must not leave the handshake half-done: refuse it, and say where.
            log.exception("tls_handshake_callback_failed")
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    def _listener_settings(self) -> tuple[object, ...]:
        listener = self._listener
        if listener is None:
            return ()
        return (listener.verify_mode, listener.minimum_version, listener.maximum_version)

    def allowed_peer(self, peercert: dict[str, Any] | None) -> bool:
        """Whether a client certificate passes ``client_allowed_sans`` (always, without)."""
        allowed = self.config.tls.client_allowed_sans
        if allowed is None:
            return True
        if not peercert:
            # No certificate: the client-auth mode decided it may come in without one.
            return self.config.tls.verify_mode != ssl.CERT_REQUIRED
        wanted = {_normal_san(value) for value in allowed}
        sans = peercert.get("subjectAltName", ())
        return any(_normal_san(value) in wanted for _kind, value in sans)

    # -- the ASGI layer -------------------------------------------------------------------------

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind the web config: headers, rate limit, basic auth."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            self.refresh()
            config = self.config
            extra = config.http_server_config.headers
            send = _with_headers(send, extra)
            open_path = self.open_health_endpoints and scope["path"] in OPEN_PATHS
            if not open_path and not self._take_token():
                self._metrics.denied.labels("rate_limited").inc()
                await _plain(send, 429, "Too Many Requests\n")
                return
            if (
                config.basic_auth_users
                and not open_path
                and not await self._authorized(config, _basic_credentials(scope))
            ):
                self._metrics.denied.labels("unauthorized").inc()
                await _plain(send, 401, "Unauthorized\n", [(b"www-authenticate", b"Basic")])
                return
            await app(scope, receive, send)

        return guarded

    def _reset_bucket(self) -> None:
        self._tokens = float(self.config.rate_limit.burst)
        self._tokens_at = self._monotonic()

    def _take_token(self) -> bool:
        limit = self.config.rate_limit
        if limit.interval <= 0:
            return True
        now = self._monotonic()
        elapsed, self._tokens_at = now - self._tokens_at, now
        self._tokens = min(float(limit.burst), self._tokens + elapsed / limit.interval)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _authorized(self, config: WebConfig, credentials: tuple[bytes, bytes] | None) -> bool:
        if credentials is None:
            return False
        user, password = credentials
        hashed = config.basic_auth_users.get(user.decode("utf-8", "replace"))
        known = hashed is not None
        if hashed is not None:
            target = hashed.get_secret_value().encode()
        else:
            target = await self._dummy(config)
        key = hashlib.sha256(b"\0".join((user, target, password))).digest()
        cached = self._cache.get(key)
        if cached is None:
            if len(password) > _MAX_PASSWORD_BYTES:
                return False
            async with self._bcrypt:
                matched = await anyio.to_thread.run_sync(self._checkpw, password, target)
            cached = known and matched
            self._remember(key, cached)
        return cached

    def _remember(self, key: bytes, result: bool) -> None:
        if len(self._cache) >= CACHE_SIZE:
            # Random eviction of a tenth (exporter-toolkit's policy): a flood of wrong
            # passwords cannot pin the cache, and eviction is rare.
            for victim in random.sample(list(self._cache), max(1, CACHE_SIZE // 10)):
                del self._cache[victim]
        self._cache[key] = result

    async def _dummy(self, config: WebConfig) -> bytes:
        """A hash of a random password at the cost of the configured users' hashes."""
        costs = [
            int(m.group(1))
            for h in config.basic_auth_users.values()
            if (m := _COST_RE.match(h.get_secret_value())) is not None
        ]
        cost = max(costs, default=10)
        dummy = self._dummies.get(cost)
        if dummy is None:
            async with self._bcrypt:
                dummy = await anyio.to_thread.run_sync(_dummy_hash, cost)
            self._dummies[cost] = dummy
        return dummy


def _copy_connection_settings(source: ssl.SSLContext, target: ssl.SSLContext) -> None:
    """What a connection takes from the listening context when it starts (the rest comes
    from the context the SNI callback switches it to)."""
    target.verify_mode = source.verify_mode
    target.minimum_version = source.minimum_version
    target.maximum_version = source.maximum_version


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # a NUL in the password, or a hash bcrypt cannot read: no match
        return False


def _dummy_hash(cost: int) -> bytes:
    return bcrypt.hashpw(random.randbytes(16).hex().encode(), bcrypt.gensalt(cost))


def _normal_san(value: str) -> str:
    """A SAN as compared: IP addresses in one spelling (Python writes IPv6 in full)."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip()


def _basic_credentials(scope: Scope) -> tuple[bytes, bytes] | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, encoded = value.partition(b" ")
            if scheme.lower() != b"basic":
                return None
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
            user, sep, password = decoded.partition(b":")
            return (user, password) if sep else None
    return None


def _with_headers(send: Send, extra: dict[str, str]) -> Send:
    configured = {name.lower().encode(): value.encode() for name, value in extra.items()}

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            # The web config's headers replace the endpoint's; the defaults fill gaps only.
            headers = [(n, v) for n, v in message.get("headers", []) if n.lower() not in configured]
            present = {name.lower() for name, _ in headers} | configured.keys()
            content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
            defaults = [(b"x-content-type-options", b"nosniff")]
            if content_type.startswith(b"text/html"):
                defaults += [
                    (b"content-security-policy", _HTML_CSP.encode()),
                    (b"x-frame-options", b"deny"),
                ]
            headers += list(configured.items())
            headers += [(n, v) for n, v in defaults if n not in present]
            message = {**message, "headers": headers}
        await send(message)

    return sending


async def _plain(
    send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
