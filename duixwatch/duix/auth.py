"""DUIX request tokens: HS256 JWTs signed with the APP's appKey.

The platform expects, in a request header named ``token`` (no ``Bearer``), a JWT whose claims
are exactly ``appId`` (a string), ``iat`` and ``exp`` (epoch seconds), signed HS256 with the
appKey's UTF-8 bytes. A :class:`TokenCache` mints one per APP, reuses it, and mints a fresh one
once ``refresh_fraction`` of its lifetime has passed or after the platform rejected it.

Tokens are held as :class:`pydantic.SecretStr` so that no repr, log line or exception shows one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime

import jwt
from pydantic import SecretStr

from duixwatch.core import errors, models

__all__ = ["TokenCache", "mint_token"]


def mint_token(app_id: str, app_key: SecretStr, *, now: datetime, ttl_seconds: int) -> SecretStr:
    """Sign a token for ``app_id`` valid from ``now`` for ``ttl_seconds``."""
    key = app_key.get_secret_value()
    if not key:
        raise errors.AuthError(f"app {app_id}: the appKey is empty")
    if ttl_seconds <= 0:
        raise errors.AuthError(f"app {app_id}: token lifetime must be positive")
    iat = int(now.timestamp())
    claims = {"appId": str(app_id), "iat": iat, "exp": iat + ttl_seconds}
    with warnings.catch_warnings():
        # The platform issues the appKey; its length is not ours to choose, and a warning per
        # mint would only be noise in the operator's logs.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        token = jwt.encode(claims, key.encode("utf-8"), algorithm="HS256")
    return SecretStr(token)


@dataclass(slots=True)
class _Cached:
    token: SecretStr
    refresh_at: float  # epoch seconds after which we mint a new one


class TokenCache:
    """One cached token per APP, re-minted before expiry and on demand."""

    def __init__(self, *, ttl_seconds: int, refresh_fraction: float = 0.8) -> None:
        if not 0 < refresh_fraction < 1:
            raise ValueError("refresh_fraction must be between 0 and 1")
        self._ttl_seconds = ttl_seconds
        self._refresh_after = ttl_seconds * refresh_fraction
        self._cache: dict[str, _Cached] = {}
        self.minted = 0  #: how many tokens were signed (for tests and debugging)

    def __repr__(self) -> str:
        return f"TokenCache(ttl_seconds={self._ttl_seconds}, apps={len(self._cache)})"

    def token(self, credentials: models.AppCredentials, *, now: datetime) -> SecretStr:
        """The current token for the APP, minting one if none is cached or it is due."""
        entry = self._cache.get(credentials.app_id)
        ts = now.timestamp()
        if entry is None or ts >= entry.refresh_at:
            token = mint_token(
                credentials.app_id, credentials.app_key, now=now, ttl_seconds=self._ttl_seconds
            )
            self.minted += 1
            entry = _Cached(token=token, refresh_at=int(ts) + self._refresh_after)
            self._cache[credentials.app_id] = entry
        return entry.token

    def invalidate(self, app_id: str) -> None:
        """Forget the APP's token (after the platform rejected it)."""
        self._cache.pop(app_id, None)
