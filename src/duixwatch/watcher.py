"""Polling: :func:`poll_once` for one APP, :class:`AppLoop` to repeat it, :class:`Fleet` for all.

* :func:`poll_once` fetches the APP's concurrency numbers and (if ``list_sessions``) its session
  list concurrently, and returns a new immutable snapshot. Both calls must succeed: a poll with
  one half missing is a failed poll (design.md §8: never act on a partial snapshot). No loop, no
  sleep — most tests target it directly.
* :class:`AppLoop` repeats it on the injected clock: a random start offset within the first
  interval (so a thousand APPs do not fire together), then every ``poll_interval_seconds``
  measured from the start of the previous poll, with +/- ``jitter_fraction`` jitter. After
  failures it backs off exponentially (interval x 2^(n-1), capped at ``backoff_max_seconds``,
  never sooner than the server's Retry-After). One APP's polls never overlap; an exception is
  caught only at the iteration boundary, never a cancellation.
* :class:`Fleet` owns one loop per APP in its own task group and, on reload, starts, stops and
  restarts loops so that they match the new configuration.

The global in-flight cap and request rate live in the shared :class:`~duixwatch.duix.DuixClient`,
so a failing or hanging APP holds at most its own two requests and never slows the others.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from duixwatch import errors, models, settings
from duixwatch.clock import Clock
from duixwatch.duix import DuixClient
from duixwatch.store import SnapshotStore

__all__ = ["AppLoop", "Fleet", "PollErrorHook", "poll_once"]

log = structlog.get_logger("duixwatch.watcher")

#: Called once per failed poll with (app name, reason).
PollErrorHook = Callable[[str, str], None]
#: Awaited after every poll with the APP and its new snapshot (the policy cycle).
AfterPollHook = Callable[[settings.AppConfig, models.AppSnapshot], Awaitable[None]]


class FirstSeen(Protocol):
    """Remembers when each session id was first seen (``state.StateStore`` persists it)."""

    def first_seen(
        self, app_id: str, session_ids: Iterable[str], now: datetime
    ) -> Mapping[str, datetime]: ...


class MemoryFirstSeen:
    """First-seen times in memory only (``duixwatch once`` and tests)."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, datetime]] = {}

    def first_seen(
        self, app_id: str, session_ids: Iterable[str], now: datetime
    ) -> Mapping[str, datetime]:
        known = self._seen.get(app_id, {})
        current = {sid: known.get(sid, now) for sid in session_ids}
        self._seen[app_id] = current
        return current


async def poll_once(
    app: settings.AppConfig,
    client: DuixClient,
    *,
    clock: Clock,
    previous: models.AppSnapshot | None = None,
    first_seen: FirstSeen | None = None,
) -> models.AppSnapshot:
    """Poll one APP once and return its new snapshot (with ``error`` set if the poll failed).

    With ``first_seen``, every listed session gets the time it was first seen (sessions whose
    list item has no start time are aged from it; ids that left the list are forgotten).
    """
    base = previous or models.AppSnapshot(
        app=app.name, app_id=app.app_id, poll_interval_seconds=app.poll_interval_seconds
    )
    base = replace(base, poll_interval_seconds=app.poll_interval_seconds)
    attempt_at = clock.now()
    credentials = app.credentials
    results: dict[str, Any] = {}
    failures: list[errors.ApiError] = []

    async def fetch(name: str, call: Callable[[], Any]) -> None:
        # Both calls run to completion so that the most telling error is reported.
        try:
            results[name] = await call()
        except errors.ApiError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(fetch, "concurrency", lambda: client.concurrency(credentials))
        if app.list_sessions:
            tg.start_soon(fetch, "sessions", lambda: client.sessions(credentials))
    failure = _most_telling(failures) if failures else None
    if failure is not None:
        return replace(
            base,
            error=models.PollError(
                reason=failure.reason,
                message=str(failure),
                at=clock.now(),
                retry_after_seconds=getattr(failure, "retry_after_seconds", None),
            ),
            last_attempt_at=attempt_at,
            consecutive_failures=base.consecutive_failures + 1,
            polls=base.polls + 1,
        )
    fetched_at = clock.now()
    sessions: models.SessionList | None = results.get("sessions")
    if sessions is not None and first_seen is not None:
        ids = [s.session_id for s in sessions.sessions if s.session_id is not None]
        # Called inline: it writes only when sessions appear or end (one short transaction).
        seen = first_seen.first_seen(app.app_id, ids, fetched_at)
        sessions = _with_first_seen(sessions, seen)
    return replace(
        base,
        fetched_at=fetched_at,
        concurrency=results["concurrency"],
        sessions=sessions,
        error=None,
        last_attempt_at=attempt_at,
        consecutive_failures=0,
        polls=base.polls + 1,
    )


def _most_telling(found: Sequence[errors.ApiError]) -> errors.ApiError:
    """The error to report for a failed poll: auth beats the rest (it needs a human)."""
    auth: list[errors.ApiError] = [e for e in found if isinstance(e, errors.ApiAuthRejected)]
    return (auth or list(found))[0]


def _with_first_seen(
    listing: models.SessionList, seen: Mapping[str, datetime]
) -> models.SessionList:
    sessions = tuple(
        s if s.session_id is None else replace(s, first_seen_at=seen.get(s.session_id))
        for s in listing.sessions
    )
    return replace(listing, sessions=sessions)


@dataclass(frozen=True, slots=True)
class _Schedule:
    jitter_fraction: float
    backoff_max_seconds: float


class AppLoop:
    """Polls one APP forever (until cancelled), writing each snapshot to the store."""

    def __init__(
        self,
        app: settings.AppConfig,
        client: DuixClient,
        store: SnapshotStore,
        *,
        clock: Clock,
        rng: random.Random,
        daemon: settings.DaemonSettings,
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
        self._shape_logged: str | None = None
        #: Monotonic time by which the next poll should have started (for liveness checks).
        self.next_due = clock.monotonic()

    def delay_after(self, snapshot: models.AppSnapshot) -> float:
        """Seconds from the start of the poll that produced ``snapshot`` to the next one."""
        interval = self.app.poll_interval_seconds
        if snapshot.error is None:
            delay = interval
        else:
            exponent = min(snapshot.consecutive_failures - 1, 30)
            delay = min(self._schedule.backoff_max_seconds, interval * (2.0**exponent))
            delay = max(delay, interval)
        jitter = self._schedule.jitter_fraction
        delay *= self._rng.uniform(1.0 - jitter, 1.0 + jitter)
        retry_after = snapshot.error.retry_after_seconds if snapshot.error else None
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start offset, then poll, store, sleep, repeat."""
        with structlog.contextvars.bound_contextvars(app=self.app.name):
            offset = self._rng.uniform(0.0, self.app.poll_interval_seconds)
            self.next_due = self._clock.monotonic() + offset
            task_status.started()
            await self._clock.sleep(offset)
            previous = self._store.get(self.app.name)
            while True:
                started = self._clock.monotonic()
                snapshot = await self._iterate(previous)
                self._store.put(snapshot)
                delay = self.delay_after(snapshot)
                self._report(previous, snapshot, delay)
                await self._policy_cycle(snapshot)
                previous = snapshot
                self.next_due = started + delay
                await self._clock.sleep(self.next_due - self._clock.monotonic())

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
            base = previous or models.AppSnapshot(
                app=self.app.name,
                app_id=self.app.app_id,
                poll_interval_seconds=self.app.poll_interval_seconds,
            )
            return replace(
                base,
                error=models.PollError("internal", f"{type(exc).__name__}", self._clock.now()),
                last_attempt_at=self._clock.now(),
                consecutive_failures=base.consecutive_failures + 1,
                polls=base.polls + 1,
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
        if shape is not None and shape != self._shape_logged:
            self._shape_logged = shape
            log.info("session_list_shape", shape=shape)


class Fleet:
    """One :class:`AppLoop` per configured APP, reconciled on every :meth:`apply`."""

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
        self._loops: dict[str, tuple[AppLoop, anyio.CancelScope, tuple[Any, ...]]] = {}
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the loops until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    @property
    def loops(self) -> list[AppLoop]:
        """The running loops, in configuration order."""
        return [loop for loop, _, _ in self._loops.values()]

    async def apply(
        self,
        apps: Sequence[settings.AppConfig],
        client: DuixClient,
        daemon: settings.DaemonSettings,
    ) -> None:
        """Start, stop or restart loops so that exactly ``apps`` are polled through ``client``."""
        if self._tg is None:
            raise RuntimeError("Fleet.apply() before Fleet.run() started")
        wanted = {app.name: app for app in apps}
        self._store.expect(wanted)
        for name in list(self._loops):
            loop, scope, identity = self._loops[name]
            app = wanted.get(name)
            if app is None or identity != _identity(app, client, daemon):
                scope.cancel()
                del self._loops[name]
        for app in apps:
            if app.name in self._loops:
                continue
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
            scope = await self._tg.start(self._host, loop)
            self._loops[app.name] = (loop, scope, _identity(app, client, daemon))

    @staticmethod
    async def _host(
        loop: AppLoop, *, task_status: TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await loop.run()

    def overdue(self, *, grace_seconds: float) -> list[str]:
        """APPs whose next poll is more than ``grace_seconds`` late (a stuck loop)."""
        now = self._clock.monotonic()
        return [loop.app.name for loop in self.loops if now > loop.next_due + grace_seconds]


def _identity(
    app: settings.AppConfig, client: DuixClient, daemon: settings.DaemonSettings
) -> tuple[Any, ...]:
    """What makes a running loop obsolete when it changes (AppConfig compares its key too)."""
    return (app, id(client), daemon.jitter_fraction, daemon.backoff_max_seconds)
