"""Time, injected, and the one rate limiter that spaces events on it.

Everything that needs the time takes a :class:`Clock` (or, for pure code, a ``now`` argument),
so that tests drive time with a fake clock instead of patching :mod:`time`.
:class:`RateLimiter` spaces starts on a clock: the DUIX client's requests per second and the
executor's session stops per second are both one.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "RateLimiter", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time for intervals, wall time for timestamps, and sleeping."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for intervals and deadlines)."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware, in UTC."""

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (a non-positive value only yields to other tasks)."""


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class RateLimiter:
    """Lets callers start at most ``rate_per_second`` times a second, however many there are.

    Starts are spaced ``1 / rate`` apart in the order :meth:`wait` is called; a caller that
    comes after a quiet spell goes at once (no burst is saved up). :attr:`rate_per_second` may
    be changed while in use (after a reload): it applies from the next start on.
    """

    def __init__(self, rate_per_second: float, clock: Clock) -> None:
        self._clock = clock
        self._next_slot = float("-inf")
        self.rate_per_second = rate_per_second

    @property
    def rate_per_second(self) -> float:
        """Starts allowed per second."""
        return 1.0 / self._interval

    @rate_per_second.setter
    def rate_per_second(self, value: float) -> None:
        if not value > 0:
            raise ValueError("rate_per_second must be positive")
        self._interval = 1.0 / value

    async def wait(self) -> None:
        """Return once this caller's start slot has come."""
        now = self._clock.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        if slot > now:
            await self._clock.sleep(slot - now)
