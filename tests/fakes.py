"""Test doubles that stand in for real collaborators at their narrowest seam."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import jwt

START = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """A :class:`duixwatch.clock.Clock` whose time only moves when told to.

    ``sleep()`` jumps the clock forward by the requested time at once (like trio's
    ``MockClock(autojump_threshold=0)``) and records it in ``sleeps``, so code that backs off
    runs instantly and tests can assert on the exact delays it chose.
    """

    def __init__(self, start: datetime = START) -> None:
        self._start = start
        self._elapsed = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return 1000.0 + self._elapsed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._elapsed += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await anyio.lowlevel.checkpoint()


def decode_token(token: str, key: str | bytes, *, verify_exp: bool = False) -> dict[str, Any]:
    """Verify and decode a DUIX token as the platform would (HS256, the appKey's bytes).

    PyJWT warns about keys shorter than 32 bytes; DUIX appKeys may be, so tests silence it.
    """
    raw = key.encode() if isinstance(key, str) else key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        claims: dict[str, Any] = jwt.decode(
            token,
            raw,
            algorithms=["HS256"],
            options={"verify_exp": verify_exp, "verify_iat": False},
        )
    return claims
