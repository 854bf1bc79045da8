"""Test doubles that stand in for real collaborators at their narrowest seam."""

from __future__ import annotations

import asyncio
import heapq
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


class VirtualClock:
    """A clock for tests with many concurrent sleepers (schedulers, loops).

    ``sleep()`` blocks until the test moves time past the sleeper's deadline with
    :meth:`advance`, which wakes the due sleepers in deadline order and lets every task run until
    all are blocked again — so a minute of a daemon's life runs in milliseconds, and the order
    of events is what it would be in real time. ``sleeps`` records every requested delay.
    """

    def __init__(self, start: datetime = START) -> None:
        self._start = start
        self._elapsed = 0.0
        self._seq = 0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return 1000.0 + self._elapsed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        self._seq += 1
        heapq.heappush(self._sleepers, (self._elapsed + seconds, self._seq, event))
        await event.wait()

    async def settle(self) -> None:
        """Let every task run until all of them wait on something.

        anyio's ``wait_all_tasks_blocked`` sleeps 0.1 s of REAL time whenever a task is still
        runnable, which makes a simulated hour take minutes; this yields instead. It looks at
        asyncio's task internals, which is fine for a test fake on the pinned asyncio backend.
        """
        me = asyncio.current_task()
        quiet = 0
        for _ in range(100_000):
            await asyncio.sleep(0)
            blocked = all(
                task is me or (task._fut_waiter is not None and not task._fut_waiter.done())  # type: ignore[attr-defined]
                for task in asyncio.all_tasks()
            )
            # A finished task's done-callbacks (which wake its parent) run one loop iteration
            # later, so "all blocked" must hold on a few iterations in a row.
            quiet = quiet + 1 if blocked else 0
            if quiet >= 3:
                return
        raise RuntimeError("tasks never settled: something is busy-looping")

    async def advance(self, seconds: float, *, step: float | None = None) -> None:
        """Move time forward by ``seconds``, waking sleepers as their deadlines pass.

        With ``step``, time moves in increments of at most ``step`` seconds, settling after
        each, so that work scheduled by woken tasks is itself woken in time.
        """
        target = self._elapsed + seconds
        await self.settle()
        while True:
            next_deadline = self._sleepers[0][0] if self._sleepers else None
            stop = target if step is None else min(target, self._elapsed + step)
            if next_deadline is not None and next_deadline <= stop:
                self._elapsed = max(self._elapsed, next_deadline)
                while self._sleepers and self._sleepers[0][0] <= self._elapsed:
                    heapq.heappop(self._sleepers)[2].set()
                await self.settle()
                continue
            self._elapsed = stop
            await self.settle()
            if self._elapsed >= target:
                return
