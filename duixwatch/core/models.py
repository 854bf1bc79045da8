"""Frozen values shared by every layer: credentials, live numbers, sessions, snapshots.

Small ``dataclass(frozen=True, slots=True)`` values, because the daemon handles them in bulk:
cheap to build by the hundred thousand. The platform's large nested documents (a
conversation, an avatar) are pydantic models in :mod:`duixwatch.core.documents`.

All DUIX ids are 19-digit Java longs: they are ``str`` everywhere, never ``int``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import SecretStr

__all__ = [
    "AgeSummary",
    "AppCredentials",
    "AppSnapshot",
    "CloseAllResult",
    "Concurrency",
    "PollError",
    "Session",
    "SessionList",
    "StopOutcome",
    "StopResult",
    "epoch_us",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(moment: datetime) -> int:
    """``moment`` as integer microseconds since the Unix epoch (exact, unlike ``timestamp()``)."""
    return (moment - _EPOCH) // _MICROSECOND


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """What it takes to sign requests for one DUIX APP. The key never shows in a repr."""

    app_id: str
    app_key: SecretStr

    def __post_init__(self) -> None:
        if not isinstance(self.app_key, SecretStr):  # pragma: no cover - typing guards callers
            raise TypeError("app_key must be a SecretStr")


# --------------------------------------------------------------------------- live numbers


@dataclass(frozen=True, slots=True)
class Concurrency:
    """``getconcurrentNumber``: both numbers, under their own names.

    Which of the two is the purchased limit is not documented, so neither is interpreted here.
    """

    corp_id: str | None
    total_concurrent_number: int
    user_concurrent_number: int


@dataclass(frozen=True, slots=True)
class Session:
    """One in-call session from ``getconcurrentList``.

    ``session_id`` is ``None`` when the list item carries no recognisable id: such a session
    is counted but never acted on. ``started_at`` is ``None`` when the item has no (parsable)
    start time: its age then comes from when duixwatch first saw it.
    """

    session_id: str | None
    started_at: datetime | None = None
    #: When duixwatch first saw this session id (set by the poll; persisted by the state database),
    #: the age reference for sessions whose list item has no start time.
    first_seen_at: datetime | None = None
    #: The conversation the session runs, when the list item says (``conversations: auto``).
    conversation_id: str | None = None
    #: The item HAD a start time, and it was not believed: unreadable, before 2000 or more than
    #: a day ahead (a 1970 placeholder would make it 56 years old). ``started_at`` is then
    #: ``None`` and the age comes from first sight, which no policy should act on by age alone.
    start_rejected: bool = False

    @property
    def actionable(self) -> bool:
        """Whether a policy may ever act on this session (it needs an id to stop it)."""
        return self.session_id is not None

    @property
    def effective_start(self) -> datetime | None:
        """The start time, else the first-seen time, else ``None`` (age unknown)."""
        return self.started_at or self.first_seen_at

    def age_seconds(self, now: datetime) -> float | None:
        """Seconds since the session started (or was first seen), if known."""
        start = self.effective_start
        if start is None:
            return None
        return max(0.0, (now - start).total_seconds())


@dataclass(frozen=True, slots=True)
class SessionList:
    """A parsed ``getconcurrentList`` answer.

    ``shape`` says how the list was read (for example ``data.records[] id=sessionId
    started_at=createTime``) so operators can see what detection decided.
    ``total`` is the ``total`` the platform sent beside the list, if any.
    """

    sessions: tuple[Session, ...]
    shape: str
    total: int | None = None
    #: List items that repeated an id already listed (left out of ``sessions``: a session is
    #: its id, counted once however often the platform lists it).
    duplicates: int = 0
    #: What the start times that were not believed looked like, and why, distinct, at most 8
    #: (``"str len 19: before 2000"``, ``"int 13 digits: more than a day ahead"``): the
    #: shape of each value, never the value, for a log line.
    rejected_starts: tuple[str, ...] = ()
    #: The known effective starts (:attr:`Session.effective_start`) as integer microseconds
    #: since the Unix epoch, oldest first, and their sum: computed once per poll, so that a
    #: scrape at 10,000 apps needs no per-session work at all (see :meth:`ages`).
    starts_us: tuple[int, ...] = field(init=False, repr=False, compare=False)
    starts_sum_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = sorted(
            epoch_us(start)
            for session in self.sessions
            if (start := session.effective_start) is not None
        )
        object.__setattr__(self, "starts_us", tuple(starts))
        object.__setattr__(self, "starts_sum_us", sum(starts))

    def __len__(self) -> int:
        return len(self.sessions)

    def ages(self, now_us: int, bounds_us: Sequence[int]) -> AgeSummary:
        """The ages of the sessions with a known start at ``now_us`` (Unix microseconds).

        ``counts[i]`` is how many are at most ``bounds_us[i]`` old, then how many there are in
        all. Ages are :meth:`Session.age_seconds` (whole microseconds, a start in the future
        counts as 0 s old); the sum is exact to the microsecond.
        """
        starts = self.starts_us
        n = len(starts)
        oldest, total = self.oldest_and_sum(now_us)
        if n == 0:
            return AgeSummary(None, (*(0 for _ in bounds_us), 0), 0.0, _FOREVER)
        counts = []
        until = _FOREVER
        for bound in bounds_us:
            first = bisect_left(starts, now_us - bound)  # the oldest start still within bound
            counts.append(n - first)
            if first < n:  # it leaves the bucket once it is more than `bound` old
                until = min(until, starts[first] + bound)
        counts.append(n)
        return AgeSummary(oldest, tuple(counts), total, until)

    def oldest_and_sum(self, now_us: int) -> tuple[float | None, float]:
        """The oldest known age and the sum of the known ages at ``now_us``, in seconds."""
        starts = self.starts_us
        n = len(starts)
        if n == 0:
            return None, 0.0
        if starts[-1] <= now_us:  # no start in the future (the usual case): closed form
            total_us = n * now_us - self.starts_sum_us
        else:
            total_us = sum(max(0, now_us - start) for start in starts)
        return max(0, now_us - starts[0]) / 1_000_000, total_us / 1_000_000


#: "never" for :attr:`AgeSummary.counts_valid_until_us`
_FOREVER = 2**62


@dataclass(frozen=True, slots=True)
class AgeSummary:
    """:meth:`SessionList.ages`: the oldest age, cumulative counts per bound, the sum (s).

    ``counts`` stay the same for the same starts up to and including
    ``counts_valid_until_us`` (the next moment a session grows out of a bucket).
    """

    oldest_seconds: float | None
    counts: tuple[int, ...]
    sum_seconds: float
    counts_valid_until_us: int


StopOutcome = Literal["stopped", "already_closed"]


@dataclass(frozen=True, slots=True)
class StopResult:
    """``sessionStop``: the session is gone, whether by this call or earlier (2002)."""

    session_id: str
    outcome: StopOutcome


@dataclass(frozen=True, slots=True)
class CloseAllResult:
    """``distroyCallSessionsByAppId`` succeeded for ``app_id``; ``data`` is what it returned."""

    app_id: str
    data: Any = field(default=None, compare=False)


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True, slots=True)
class PollError:
    """Why the last poll of an APP failed.

    ``reason`` is one of the bounded words of :data:`duixwatch.core.errors.Reason`;
    ``message`` is the error's text (which never holds a key or token).
    """

    reason: str
    message: str
    at: datetime
    retry_after_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class AppSnapshot:
    """Everything known about one APP after its latest poll; replaced, never mutated.

    ``concurrency``/``sessions``/``fetched_at`` are from the last SUCCESSFUL poll (``sessions`` is
    ``None`` when the APP's list is not polled); ``error`` is set when the latest poll failed and
    cleared by the next success. Consumers decide freshness with :meth:`is_fresh`: data older than
    ``stale_after_seconds`` (2 x the poll interval) must not be exported or acted on.
    """

    app: str
    app_id: str
    poll_interval_seconds: float
    fetched_at: datetime | None = None
    concurrency: Concurrency | None = None
    sessions: SessionList | None = None
    error: PollError | None = None
    last_attempt_at: datetime | None = None
    consecutive_failures: int = 0
    polls: int = 0

    @property
    def stale_after_seconds(self) -> float:
        """Data older than this is stale (design.md §8: 2 x the poll interval)."""
        return 2.0 * self.poll_interval_seconds

    @property
    def ok(self) -> bool:
        """The latest poll succeeded."""
        return self.error is None and self.fetched_at is not None

    def is_fresh(self, now: datetime) -> bool:
        """The latest poll succeeded and is recent enough to export and act on."""
        if not self.ok or self.fetched_at is None:
            return False
        return (now - self.fetched_at).total_seconds() <= self.stale_after_seconds

    def failed(
        self, error: PollError, *, attempt_at: datetime, poll_interval_seconds: float
    ) -> AppSnapshot:
        """The snapshot after a failed poll: the last good data kept, the error set."""
        return replace(
            self,
            error=error,
            last_attempt_at=attempt_at,
            consecutive_failures=self.consecutive_failures + 1,
            polls=self.polls + 1,
            poll_interval_seconds=poll_interval_seconds,
        )

    def succeeded(
        self,
        *,
        fetched_at: datetime,
        concurrency: Concurrency,
        sessions: SessionList | None,
        attempt_at: datetime,
        poll_interval_seconds: float,
    ) -> AppSnapshot:
        """The snapshot after a successful poll: new data, the error cleared."""
        return replace(
            self,
            fetched_at=fetched_at,
            concurrency=concurrency,
            sessions=sessions,
            error=None,
            last_attempt_at=attempt_at,
            consecutive_failures=0,
            polls=self.polls + 1,
            poll_interval_seconds=poll_interval_seconds,
        )
