"""Sessions appearing and ending between polls: counts, durations, session-seconds, history.

:class:`Lifecycles` compares each APP's successful session list with the previous one (it
keeps a reference to that list, which the snapshot store holds anyway: no copy per session):

* an id not in the previous list **started** (the sessions already live when the daemon
  starts count too: they are ids seen for the first time);
* an id of the previous list that is gone **ended**: closed by ``policy`` when the executor
  stopped it (:meth:`Lifecycles.stopped`), else by the ``platform``; its observed lifetime runs
  from the platform's start time (else its first sighting) to its last sighting, so it is
  short by at most one poll interval. It is counted, observed into the duration histogram and
  handed to the history (:meth:`~duixwatch.watch.state.StateStore.record_ended`);
* the **session-seconds** between two lists are the trapezoid of their sizes over the time
  between them: the integral of live sessions, what the platform bills per minute.

A failed poll changes nothing: the next successful list is compared with the last one.
Duplicate ids in a list count once.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from duixwatch.core import models
from duixwatch.watch.state import HistoryRow

__all__ = [
    "DURATION_BUCKETS",
    "AppLifecycle",
    "HistorySink",
    "Lifecycles",
]

#: Upper bounds (seconds) of ``duix_app_session_duration_seconds`` (+Inf implied).
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    60.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    2700.0,
    3600.0,
    5400.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
)
#: A stop by a policy is matched with the session's end for this long.
STOPPED_MEMORY: Final = timedelta(hours=1)


class HistorySink(Protocol):
    def record_ended(self, rows: Iterable[HistoryRow]) -> None: ...


@dataclass(slots=True)
class AppLifecycle:
    """One APP's counts since the daemon started (the counters' values)."""

    started: int = 0
    ended_policy: int = 0
    ended_platform: int = 0
    session_seconds: float = 0.0
    #: per bucket of DURATION_BUCKETS and +Inf (not cumulative); made at the first end (at
    #: 10,000 APPs most never see one between two restarts)
    bucket_counts: list[int] | None = None
    duration_sum: float = 0.0
    #: the last successful list and when it was fetched
    last: models.SessionList | None = None
    last_at: datetime | None = None

    @property
    def ended(self) -> int:
        return self.ended_policy + self.ended_platform

    def observe_duration(self, seconds: float) -> None:
        if self.bucket_counts is None:
            self.bucket_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.bucket_counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds


class Lifecycles:
    """Every APP's :class:`AppLifecycle`, fed by each poll."""

    def __init__(self, history: HistorySink | None = None) -> None:
        self._history = history
        self._apps: dict[str, AppLifecycle] = {}
        #: (app, session id) -> (policy, when) of the stops the executor made
        self._stopped: dict[tuple[str, str], tuple[str, datetime]] = {}

    def get(self, app: str) -> AppLifecycle | None:
        return self._apps.get(app)

    def items(self) -> Sequence[tuple[str, AppLifecycle]]:
        return list(self._apps.items())

    def set_apps(self, apps: Iterable[str]) -> None:
        """Keep exactly these APPs (a reload that removes one drops its counts)."""
        keep = set(apps)
        self._apps = {a: self._apps.get(a) or AppLifecycle() for a in keep}
        self._stopped = {k: v for k, v in self._stopped.items() if k[0] in keep}

    def stopped(self, app: str, session_id: str, policy: str, at: datetime) -> None:
        """The executor closed this session (its end will be counted as ``policy``)."""
        self._stopped[(app, session_id)] = (policy, at)

    def observe(self, snapshot: models.AppSnapshot) -> None:
        """A poll's snapshot: compare a fresh session list with the previous one."""
        listing = snapshot.sessions
        fetched = snapshot.fetched_at
        if listing is None or fetched is None or snapshot.error is not None:
            return
        life = self._apps.get(snapshot.app)
        if life is None:
            life = self._apps[snapshot.app] = AppLifecycle()
        previous, previous_at = life.last, life.last_at
        if previous is listing:
            return  # the same list again (a poll that failed kept it)
        now_ids = {s.session_id: s for s in listing.sessions if s.session_id is not None}
        count_now = len(now_ids) + sum(1 for s in listing.sessions if s.session_id is None)
        if previous is None or previous_at is None:
            life.started += len(now_ids)
        else:
            before = {s.session_id: s for s in previous.sessions if s.session_id is not None}
            count_before = len(before) + sum(1 for s in previous.sessions if s.session_id is None)
            life.started += sum(1 for sid in now_ids if sid not in before)
            elapsed = max(0.0, (fetched - previous_at).total_seconds())
            life.session_seconds += (count_before + count_now) / 2 * elapsed
            ended = [s for sid, s in before.items() if sid not in now_ids]
            if ended:
                self._ended(snapshot.app, life, ended, previous_at)
        life.last, life.last_at = listing, fetched
        self._forget_old_stops(fetched)

    def _ended(
        self, app: str, life: AppLifecycle, sessions: list[models.Session], last_seen: datetime
    ) -> None:
        rows: list[HistoryRow] = []
        for session in sessions:
            assert session.session_id is not None  # noqa: S101 - filtered by the caller
            start = session.effective_start or last_seen
            stop = self._stopped.pop((app, session.session_id), None)
            if stop is None:
                life.ended_platform += 1
            else:
                life.ended_policy += 1
            seconds = max(0.0, (last_seen - start).total_seconds())
            life.observe_duration(seconds)
            rows.append(
                HistoryRow(
                    app=app,
                    session_id=session.session_id,
                    started=start,
                    ended=last_seen,
                    closed_by="platform" if stop is None else "policy",
                    policy=None if stop is None else stop[0],
                    start_known=session.started_at is not None,
                )
            )
        if self._history is not None:
            self._history.record_ended(rows)

    def _forget_old_stops(self, now: datetime) -> None:
        if len(self._stopped) < 1024:
            return
        cutoff = now - STOPPED_MEMORY
        self._stopped = {k: v for k, v in self._stopped.items() if v[1] >= cutoff}
