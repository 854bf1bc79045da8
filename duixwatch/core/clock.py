"""Time, injected.

Everything that needs the time takes a :class:`Clock` (or, for pure code, a ``now`` argument),
so that tests drive time with a fake clock instead of patching :mod:`time`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock"]


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
