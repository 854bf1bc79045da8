"""One poll of one APP: :func:`poll_once`, and the first-seen times it ages sessions by.

:func:`poll_once` fetches the APP's concurrency numbers and (if ``list_sessions``) its session
list, one after the other, and returns a new immutable snapshot. Both calls must succeed: a
poll with one half missing is a failed poll (design.md §8: never act on a partial snapshot).
No loop, no sleep — most tests target it directly; :mod:`duixwatch.watch.fleet` schedules it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from duixwatch.config import AppConfig
from duixwatch.core import errors, models
from duixwatch.core.clock import Clock
from duixwatch.duix import DuixClient

__all__ = ["FirstSeen", "MemoryFirstSeen", "empty_snapshot", "poll_once"]


def empty_snapshot(app: AppConfig) -> models.AppSnapshot:
    """The snapshot of an APP before its first poll."""
    return models.AppSnapshot(
        app=app.name, app_id=app.app_id, poll_interval_seconds=app.poll_interval_seconds
    )


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
    app: AppConfig,
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
    base = previous or empty_snapshot(app)
    interval = app.poll_interval_seconds  # a reload may have changed it
    attempt_at = clock.now()
    credentials = app.credentials
    results: dict[str, Any] = {}
    failures: list[errors.ApiError] = []
    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("concurrency", lambda: client.concurrency(credentials))
    ]
    if app.list_sessions:
        calls.append(("sessions", lambda: client.sessions(credentials)))
    # One after the other, both to the end, so that the most telling error is reported. Not
    # concurrently: a task group per poll was a tenth of the CPU at 10,000 APPs, and the
    # pair's extra latency (one request's) is nothing next to an interval.
    for name, call in calls:
        try:
            results[name] = await call()
        except errors.ApiError as exc:
            failures.append(exc)
    failure = _most_telling(failures) if failures else None
    if failure is not None:
        error = models.PollError(
            reason=failure.reason,
            message=str(failure),
            at=clock.now(),
            retry_after_seconds=getattr(failure, "retry_after_seconds", None),
        )
        return base.failed(error, attempt_at=attempt_at, poll_interval_seconds=interval)
    fetched_at = clock.now()
    sessions: models.SessionList | None = results.get("sessions")
    if sessions is not None and first_seen is not None:
        ids = [s.session_id for s in sessions.sessions if s.session_id is not None]
        # Inline: it answers from memory (the state store writes behind, off the loop).
        seen = first_seen.first_seen(app.app_id, ids, fetched_at)
        sessions = _with_first_seen(sessions, seen)
    return base.succeeded(
        fetched_at=fetched_at,
        concurrency=results["concurrency"],
        sessions=sessions,
        attempt_at=attempt_at,
        poll_interval_seconds=interval,
    )


def _most_telling(found: Sequence[errors.ApiError]) -> errors.ApiError:
    """The error to report for a failed poll: auth beats the rest (it needs a human)."""
    auth: list[errors.ApiError] = [e for e in found if isinstance(e, errors.ApiAuthRejected)]
    return (auth or list(found))[0]


def _with_first_seen(
    listing: models.SessionList, seen: Mapping[str, datetime]
) -> models.SessionList:
    sessions = tuple(
        s
        if s.session_id is None
        else models.Session(
            s.session_id,
            s.started_at,
            seen.get(s.session_id),
            s.conversation_id,
            s.start_rejected,
        )
        for s in listing.sessions
    )
    return models.SessionList(
        sessions, listing.shape, listing.total, listing.duplicates, listing.rejected_starts
    )
