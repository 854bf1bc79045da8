"""The one exception tree of duixwatch.

Every error the package raises on purpose is a :class:`DuixwatchError`; callers catch the
narrowest class they can act on::

    DuixwatchError
    ├── ConfigError                 bad config file, flag or env value (exit code 2)
    ├── AuthError                   we cannot mint a token (no appKey, empty appKey …)
    ├── ResponseParseError          a payload that does not have the shape we understand
    └── ApiError                    DUIX (or the network in front of it) said no
        ├── ApiUnavailable          transport failure: refused, reset, DNS …
        │   └── ApiTimeout          no answer within the request timeout
        ├── ApiServerError          HTTP 5xx, or an internal-error envelope code
        ├── ApiMalformed            HTTP 200 whose body is not the envelope we expect
        └── ApiClientError          HTTP 4xx, or an envelope code that blames the request
            ├── ApiAuthRejected     1005 / 1006 / 40001, HTTP 401 / 403
            ├── ApiNotFound         HTTP 404, 2002 (except on sessionStop: see duix.client)
            ├── ApiQuotaExceeded    1009 / 50007: the account's quota or concurrency is used up
            └── ApiRateLimited      HTTP 429, carries ``retry_after_seconds``

Errors never carry an appKey or a token: :class:`ApiError` keeps method, path (without the
query string), HTTP status, envelope code, the envelope message and at most 256 characters of
the body, which the client takes from the response (DUIX never echoes the token header).

``ApiError.reason`` is the short, bounded word used as the ``reason`` label of
``duixwatch_poll_errors_total``; :data:`Reason` lists every word that label takes, including
``internal`` (a poll that crashed: a bug in duixwatch, not a platform failure).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

__all__ = [
    "ApiAuthRejected",
    "ApiClientError",
    "ApiError",
    "ApiMalformed",
    "ApiNotFound",
    "ApiQuotaExceeded",
    "ApiRateLimited",
    "ApiServerError",
    "ApiTimeout",
    "ApiUnavailable",
    "AuthError",
    "ConfigError",
    "DuixwatchError",
    "Reason",
    "ResponseParseError",
]

BODY_EXCERPT_CHARS = 256

Reason = Literal[
    "auth", "quota", "server", "client", "timeout", "transport", "malformed", "internal"
]


class DuixwatchError(Exception):
    """Base of every error duixwatch raises on purpose."""


class StorageError(DuixwatchError):
    """duixwatch's own files cannot be written or read (disk full, read-only, I/O error):
    whatever needs them stops and says so; polling goes on."""


class ConfigError(DuixwatchError):
    """Invalid configuration; ``location`` is ``file:line key.path`` when known."""

    def __init__(self, message: str, *, location: str | None = None) -> None:
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class AuthError(DuixwatchError):
    """A token cannot be minted locally (missing or empty appKey)."""


class ResponseParseError(DuixwatchError):
    """A payload does not have a shape we can interpret.

    ``shape`` describes the structure (keys and types only, never values) so that an operator
    can write an explicit mapping.
    """

    def __init__(self, message: str, *, shape: str | None = None) -> None:
        self.shape = shape
        super().__init__(f"{message} (shape: {shape})" if shape else message)


class ApiError(DuixwatchError):
    """A DUIX API call failed."""

    reason: Reason = "client"

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        status: int | None = None,
        code: str | None = None,
        body: str | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        self.message = message
        self.body_excerpt = body[:BODY_EXCERPT_CHARS] if body else None
        super().__init__(message)

    def __str__(self) -> str:
        parts = [f"{self.method} {self.path}"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"code {self.code}")
        return f"{' '.join(parts)}: {self.message}"


class ApiUnavailable(ApiError):
    """The request did not get an HTTP answer (connection refused, reset, DNS …)."""

    reason: Reason = "transport"


class ApiTimeout(ApiUnavailable):
    """No complete answer within the request timeout."""

    reason: Reason = "timeout"


class ApiServerError(ApiError):
    """The platform failed (HTTP 5xx or an internal-error code)."""

    reason: Reason = "server"


class ApiMalformed(ApiError):
    """An answer that is not the documented envelope (bad JSON, wrong types)."""

    reason: Reason = "malformed"


class ApiClientError(ApiError):
    """The platform rejected the request itself (HTTP 4xx or a request error code)."""

    reason: Reason = "client"


class ApiAuthRejected(ApiClientError):
    """The token was missing, expired, badly signed, or for the wrong app."""

    reason: Reason = "auth"


class ApiNotFound(ApiClientError):
    """The object named by the request does not exist."""


class ApiQuotaExceeded(ApiClientError):
    """The account's access quota or total concurrency is used up (1009, 50007)."""

    reason: Reason = "quota"


class ApiRateLimited(ApiClientError):
    """HTTP 429. ``retry_after_seconds`` is the server's Retry-After, when it sent one."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        status: int | None = None,
        code: str | None = None,
        body: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message, method=method, path=path, status=status, code=code, body=body)
        self.retry_after_seconds = retry_after_seconds


#: What a JSON Web Token looks like (ours are HS256 JWTs: they begin with ``{"`` = ``eyJ``).
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
REDACTED = "[redacted]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` (a platform-supplied message or body) without any of ``secrets`` (the token
    sent, the appKey) or anything that looks like a JWT: a platform that quotes the rejected
    token must not make it reach a log line, ``/status`` or the terminal."""
    for secret in secrets:
        if len(secret) >= 8:
            text = text.replace(secret, REDACTED)
    return _JWT_RE.sub(REDACTED, text)
