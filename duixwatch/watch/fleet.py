"""The schedule: :class:`AppLoop` for one APP between polls, :class:`Fleet` for them all.

* :class:`AppLoop` is one APP's state between polls: :meth:`AppLoop.step` polls
  (:func:`~duixwatch.watch.poll.poll_once`), stores, reports and runs the policy cycle once, and
  says when the next poll is due: every ``poll_interval_seconds`` measured from the start of the
  previous poll, made up to ``jitter_fraction`` shorter at random (never longer: the jitter
  keeps APPs from falling into step without eating into the freshness allowance). After
  failures it backs off exponentially (interval x 2^(n-1), capped at ``backoff_max_seconds``,
  +/- the jitter, never sooner than the server's Retry-After). An exception is caught only at
  the step boundary, never a cancellation.
* :class:`Fleet` runs every APP's steps on ONE schedule: a heap of due times, one scheduler
  task, and a bounded pool of worker tasks (twice ``duix.max_in_flight``, at least 4), each
  taking the APP that is due soonest. One APP's polls never overlap (it is back on the heap only
  when its step is over), the first poll of each APP is at a random offset within its first
  interval, and a reload starts, stops and restarts APPs in place. At 10,000 APPs this costs a
  heap entry per APP instead of a task per APP (about 20 KB each) and starts in no time.

The global in-flight cap and request rate live in the shared :class:`~duixwatch.duix.DuixClient`,
so a failing or hanging APP holds at most one worker and one request and never slows the others
beyond that.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from duixwatch.config import AppConfig, DaemonSettings
from duixwatch.core import models
from duixwatch.core.clock import Clock
from duixwatch.duix import DuixClient
from duixwatch.watch.poll import FirstSeen, MemoryFirstSeen, empty_snapshot, poll_once
from duixwatch.watch.snapshots import SnapshotStore

__all__ = ["AfterPollHook", "AppLoop", "Fleet", "PollErrorHook"]

log = structlog.get_logger("duixwatch.watch.fleet")

#: Called once per failed poll with (app name, reason).
PollErrorHook = Callable[[str, str], None]
#: Awaited after every poll with the APP and its new snapshot (the policy cycle).
AfterPollHook = Callable[[AppConfig, models.AppSnapshot], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Schedule:
    jitter_fraction: float
    backoff_max_seconds: float


class AppLoop:
    """One APP's polling state: :meth:`step` polls it once; :class:`Fleet` says when."""

    def __init__(
        self,
        app: AppConfig,
        client: DuixClient,
        store: SnapshotStore,
        *,
        clock: Clock,
        rng: random.Random,
        daemon: DaemonSettings,
        on_poll_error: PollErrorHook | None = None,
        first_seen: FirstSeen | None = None,
        after_poll: AfterPollHook | None = None,
    ) -> None:
        self.app = app
        self._client = client
        self._store = store
        self._clock = clock
        self._rng = rng
        self._schedule = _Schedule(daemon.jitter_fraction, daemon.backoff_max_seconds)
        self._on_poll_error = on_poll_error
        self._first_seen = first_seen if first_seen is not None else MemoryFirstSeen()
        self._after_poll = after_poll
        #: The session-list shapes logged already (once each).
        self._shapes_logged: set[str] = set()
        self._duplicates_logged = 0
        #: The kinds of start time not believed that were logged already (once each).
        self._starts_logged: set[str] = set()
        self._previous: models.AppSnapshot | None = None
        #: Monotonic time by which the next poll should have started (for liveness checks).
        self.next_due = clock.monotonic()

    def delay_after(self, snapshot: models.AppSnapshot) -> float:
        """Seconds from the start of the poll that produced ``snapshot`` to the next one."""
        interval = self.app.poll_interval_seconds
        jitter = self._schedule.jitter_fraction
        if snapshot.error is None:
            # Only ever earlier: a poll that is due is never put off by the jitter.
            return interval * self._rng.uniform(1.0 - jitter, 1.0)
        exponent = min(snapshot.consecutive_failures - 1, 30)
        delay = min(self._schedule.backoff_max_seconds, interval * (2.0**exponent))
        delay = max(delay, interval) * self._rng.uniform(1.0 - jitter, 1.0 + jitter)
        retry_after = snapshot.error.retry_after_seconds
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def first_offset(self) -> float:
        """Seconds from now to the first poll: anywhere in the first interval."""
        return self._rng.uniform(0.0, self.app.poll_interval_seconds)

    async def step(self) -> float:
        """Poll once, store, report, run the policy cycle; the monotonic time of the next poll."""
        with structlog.contextvars.bound_contextvars(app=self.app.name):
            previous = self._previous
            if previous is None:
                previous = self._store.get(self.app.name)
            started = self._clock.monotonic()
            snapshot = await self._iterate(previous)
            self._store.put(snapshot)
            delay = self.delay_after(snapshot)
            self._report(previous, snapshot, delay)
            await self._policy_cycle(snapshot)
            self._previous = snapshot
            self.next_due = started + delay
            return self.next_due

    async def _iterate(self, previous: models.AppSnapshot | None) -> models.AppSnapshot:
        try:
            return await poll_once(
                self.app,
                self._client,
                clock=self._clock,
                previous=previous,
                first_seen=self._first_seen,
            )
        except Exception as exc:  # a bug, not a platform failure: keep polling, say so loudly
            log.exception("poll_crashed")
            now = self._clock.now()
            error = models.PollError("internal", type(exc).__name__, now)
            return (previous or empty_snapshot(self.app)).failed(
                error, attempt_at=now, poll_interval_seconds=self.app.poll_interval_seconds
            )

    async def _policy_cycle(self, snapshot: models.AppSnapshot) -> None:
        if self._after_poll is None:
            return
        try:
            await self._after_poll(self.app, snapshot)
        except Exception:  # a bug in the policy cycle must not stop the polling
            log.exception("policy_cycle_crashed")

    def _report(
        self,
        previous: models.AppSnapshot | None,
        snapshot: models.AppSnapshot,
        delay_seconds: float,
    ) -> None:
        """One log event per failed poll and one on recovery (none per success)."""
        if snapshot.error is not None:
            if self._on_poll_error is not None:
                self._on_poll_error(self.app.name, snapshot.error.reason)
            log.warning(
                "poll_failed",
                reason=snapshot.error.reason,
                error=snapshot.error.message,
                consecutive_failures=snapshot.consecutive_failures,
                retry_in_seconds=round(delay_seconds, 1),
            )
            return
        if previous is not None and previous.error is not None:
            log.info("poll_recovered", after_failures=previous.consecutive_failures)
        listing = snapshot.sessions
        shape = listing.shape if listing is not None and len(listing) > 0 else None
        # Each shape once: a platform whose shape flips between polls would otherwise log a
        # line every poll. A shape seen before is silent when it comes back.
        logged = self._shapes_logged
        if shape is not None and shape not in logged and len(logged) < _MAX_SHAPE_LOGS:
            logged.add(shape)
            log.info("session_list_shape", shape=shape)
        duplicates = listing.duplicates if listing is not None else 0
        if duplicates != self._duplicates_logged:
            if duplicates:
                # A data problem of the platform's, logged when it starts or changes: counts,
                # quotas and ages use each id once.
                log.warning("session_list_duplicates", duplicates=duplicates)
            self._duplicates_logged = duplicates
        if listing is not None and listing.rejected_starts:
            self._log_rejected_starts(listing)

    def _log_rejected_starts(self, listing: models.SessionList) -> None:
        """Once per APP and kind of value: start times that were not believed (the sessions
        are aged from first sight). The kind, e.g. ``str len 19: before 2000``, never the value."""
        for start in listing.rejected_starts:
            if start in self._starts_logged or len(self._starts_logged) >= _MAX_START_LOGS:
                continue
            self._starts_logged.add(start)
            log.warning(
                "session_start_unknown",
                start=start,
                sessions=sum(1 for s in listing.sessions if s.start_rejected),
                list_shape=listing.shape,
            )


class Fleet:
    """Every configured APP's :class:`AppLoop`, stepped on one schedule by a worker pool."""

    def __init__(
        self,
        store: SnapshotStore,
        *,
        clock: Clock,
        rng: random.Random,
        on_poll_error: PollErrorHook | None = None,
        first_seen: FirstSeen | None = None,
        after_poll: AfterPollHook | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._rng = rng
        self._on_poll_error = on_poll_error
        self._first_seen = first_seen
        self._after_poll = after_poll
        self._loops: dict[str, _Entry] = {}
        self._due: list[tuple[float, int, _Entry]] = []  # a heap
        self._sequence = 0
        self._napping: anyio.CancelScope | None = None
        self._wanted_workers = 0
        self._workers = 0
        self._tg: TaskGroup | None = None
        self._hand_off: MemoryObjectSendStream[_Entry] | None = None
        self._take: MemoryObjectReceiveStream[_Entry] | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Schedule and step the APPs until cancelled."""
        send, receive = anyio.create_memory_object_stream[_Entry](0)
        async with send, receive, anyio.create_task_group() as tg:
            self._tg, self._hand_off, self._take = tg, send, receive
            tg.start_soon(self._scheduler)
            task_status.started()
            await anyio.sleep_forever()

    @property
    def loops(self) -> list[AppLoop]:
        """The APPs' loops, in configuration order."""
        return [entry.loop for entry in self._loops.values()]

    async def apply(
        self,
        apps: Sequence[AppConfig],
        client: DuixClient,
        daemon: DaemonSettings,
    ) -> None:
        """Start, stop or restart APPs so that exactly ``apps`` are polled through ``client``."""
        if self._tg is None:
            raise RuntimeError("Fleet.apply() before Fleet.run() started")
        wanted = {app.name: app for app in apps}
        self._store.expect(wanted)
        kept: dict[str, _Entry] = {}
        for name, entry in self._loops.items():
            app = wanted.get(name)
            if app is not None and entry.identity == _identity(app, client, daemon):
                kept[name] = entry
            else:
                entry.retire()
        self._loops = {}
        now = self._clock.monotonic()
        for app in apps:
            known = kept.get(app.name)
            if known is not None:
                self._loops[app.name] = known
            else:
                loop = AppLoop(
                    app,
                    client,
                    self._store,
                    clock=self._clock,
                    rng=self._rng,
                    daemon=daemon,
                    on_poll_error=self._on_poll_error,
                    first_seen=self._first_seen,
                    after_poll=self._after_poll,
                )
                entry = _Entry(loop, _identity(app, client, daemon))
                self._push(entry, now + loop.first_offset())
                self._loops[app.name] = entry
        self._wanted_workers = max(MIN_WORKERS, 2 * client.max_in_flight)
        while self._workers < self._wanted_workers:
            self._workers += 1
            self._tg.start_soon(self._worker)
        await anyio.lowlevel.checkpoint()

    def overdue(self, *, grace_seconds: float) -> list[str]:
        """APPs whose next poll is more than ``grace_seconds`` late (stuck, or no worker free)."""
        now = self._clock.monotonic()
        return [loop.app.name for loop in self.loops if now > loop.next_due + grace_seconds]

    def _push(self, entry: _Entry, due: float) -> None:
        entry.loop.next_due = due
        self._sequence += 1
        heapq.heappush(self._due, (due, self._sequence, entry))
        if self._due[0][2] is entry and self._napping is not None:
            self._napping.cancel()  # the scheduler sleeps towards a later time: wake it

    async def _scheduler(self) -> None:
        """Hands each due APP to a free worker, soonest first."""
        hand_off = self._hand_off
        if hand_off is None:
            raise RuntimeError("Fleet._scheduler() outside Fleet.run()")
        while True:
            if not self._due:
                await self._nap(None)
                continue
            due, _, entry = self._due[0]
            if entry.retired:
                heapq.heappop(self._due)
                continue
            wait = due - self._clock.monotonic()
            if wait > 0:
                await self._nap(wait)
                continue
            heapq.heappop(self._due)
            await hand_off.send(entry)  # waits for a free worker

    async def _nap(self, seconds: float | None) -> None:
        """Sleep ``seconds`` (``None``: until woken) unless :meth:`_push` wakes it sooner."""
        with anyio.CancelScope() as self._napping:
            if seconds is None:
                await anyio.sleep_forever()
            else:
                await self._clock.sleep(seconds)
        self._napping = None

    async def _worker(self) -> None:
        take = self._take
        if take is None:
            raise RuntimeError("Fleet._worker() outside Fleet.run()")
        while self._workers <= self._wanted_workers:
            entry = await take.receive()
            if entry.retired:
                continue
            with anyio.CancelScope() as entry.scope:
                due = await entry.loop.step()
            entry.scope = None
            if not entry.retired:
                self._push(entry, due)
        self._workers -= 1


#: At most this many ``session_start_unknown`` lines per APP loop (the kinds are few anyway).
_MAX_START_LOGS = 32
#: At most this many ``session_list_shape`` lines per APP loop.
_MAX_SHAPE_LOGS = 16

#: The smallest worker pool (a poll holds a worker while its requests wait for the rate limit).
MIN_WORKERS = 4


class _Entry:
    """An APP on the schedule: its loop, what makes it obsolete, the scope of a running step."""

    __slots__ = ("identity", "loop", "retired", "scope")

    def __init__(self, loop: AppLoop, identity: tuple[Any, ...]) -> None:
        self.loop = loop
        self.identity = identity
        self.retired = False
        self.scope: anyio.CancelScope | None = None

    def retire(self) -> None:
        """Removed or replaced by a reload: cancel its running step, never schedule it again."""
        self.retired = True
        if self.scope is not None:
            self.scope.cancel()


def _identity(app: AppConfig, client: DuixClient, daemon: DaemonSettings) -> tuple[Any, ...]:
    """What makes a running loop obsolete when it changes (AppConfig compares its key too)."""
    return (app, id(client), daemon.jitter_fraction, daemon.backoff_max_seconds)
