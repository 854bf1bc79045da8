"""Frozen domain types shared by every layer.

Two families:

* small ``dataclass(frozen=True, slots=True)`` values for what the daemon handles in bulk
  (sessions, concurrency numbers): cheap to build by the hundred thousand;
* frozen pydantic models for the large, nested documents DUIX returns (a conversation, an
  avatar), which keep every field the platform sent (``extra="allow"``) so nothing is lost.

All DUIX ids are 19-digit Java longs: they are ``str`` everywhere, never ``int``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr
from pydantic.alias_generators import to_camel

__all__ = [
    "ActionRecord",
    "AgeSummary",
    "AppCredentials",
    "AppSnapshot",
    "Avatar",
    "AvatarCreated",
    "AvatarSpec",
    "AvatarStatus",
    "CloseAllResult",
    "Concurrency",
    "Conversation",
    "ConversationBackground",
    "ConversationDetail",
    "ConversationScript",
    "PollError",
    "ScalingApp",
    "ScalingReading",
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
    #: When duixwatch first saw this session id (set by the watcher; persisted by ``state``),
    #: the age reference for sessions whose list item has no start time.
    first_seen_at: datetime | None = None

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

    ``reason`` is one of the bounded words of :data:`duixwatch.errors.Reason` (auth, quota,
    server, client, timeout, transport, malformed); ``message`` is the error's text (which never
    holds a key or token).
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


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One action a policy took (or, as a dry run, would have taken), for ``/status``.

    ``outcome`` is ``stopped``, ``already_closed``, ``failed`` or ``dry_run``.
    """

    at: datetime
    cycle: str
    policy: str
    app: str
    app_id: str
    action: str
    session_id: str | None
    outcome: str
    reason: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ScalingApp:
    """One app's part of a scaling target's reading."""

    app: str
    fresh: bool
    sessions: int | None
    #: ``session_list`` (the list's length) or ``user_concurrent_number`` (list not polled).
    source: str | None
    last_success_at: datetime | None


@dataclass(frozen=True, slots=True)
class ScalingReading:
    """An autoscaling target's latest numbers; ``sessions`` and the replica counts are ``None``
    unless every app of the target is fresh (then the autoscaler must fall back)."""

    target: str
    fresh: bool
    sessions: int | None
    raw_desired_replicas: int | None
    desired_replicas: int | None
    sessions_per_replica: float
    min_replicas: int
    max_replicas: int
    computed_at: datetime
    apps: tuple[ScalingApp, ...] = ()


# --------------------------------------------------------------------------- wire documents


def _id_to_str(value: Any) -> Any:
    """Ids arrive as numbers or strings; keep them as strings (19-digit longs lose precision
    in JavaScript and in float)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


Id = Annotated[str, BeforeValidator(_id_to_str)]


class _Wire(BaseModel):
    """A DUIX JSON document: camelCase on the wire, snake_case here, extra fields kept."""

    model_config = ConfigDict(
        frozen=True,
        extra="allow",
        populate_by_name=True,
        alias_generator=to_camel,
    )


class ConversationBackground(_Wire):
    """``detailDto.backgroundDto``."""

    id: Id | None = None
    background_code: Id | None = None
    background_name: str | None = None
    background_url: str | None = None
    file_type: int | None = None
    proportion: str | None = None


class ConversationDetail(_Wire):
    """``detailDto``: model, background and TTS of a conversation."""

    id: Id | None = None
    conversation_id: Id | None = None
    model_id: Id | None = None
    model_name: str | None = None
    #: "0" cloud digital human, "1" local digital human (documented as a string).
    model_id_type: Id | None = None
    local_model_info: Mapping[str, Any] | None = None
    background_dto: ConversationBackground | None = None
    tts_id: Id | None = None
    tts_name: str | None = None
    tts_speaker: str | None = None
    proportion: str | None = None


class ConversationScript(_Wire):
    """One entry of ``scriptDtoList``: a front-end phrase of the conversation."""

    id: Id | None = None
    conversation_id: Id | None = None
    #: 0 wake-up word, 1 opening line, 2 waiting phrase, 3 unknown question, 4 farewell,
    #: 5 interruption phrase, 6 interruption sentence, 7 guiding phrase.
    script_type: Id | None = None
    script_content: str | None = None
    tts_content: str | None = None
    emotion: str | None = None


class Conversation(_Wire):
    """``getConversationById`` ``data``."""

    id: Id
    conversation_name: str | None = None
    language: str | None = None
    corp_id: Id | None = None
    user_id: Id | None = None
    max_conversation: int | None = None
    detail_dto: ConversationDetail | None = None
    script_dto_list: tuple[ConversationScript, ...] = ()


class AvatarSpec(_Wire):
    """The body of ``createAvatar``."""

    #: 1 training with a video, 2 training with a photo.
    custom_type: Literal[1, 2]
    avatar_name: str
    gender: Literal["male", "female", "other"] | None = None
    profile: str | None = None
    template_video: str | None = None
    cover_url: str | None = None
    audio_url: str | None = None
    tts_speaker: str | None = None
    video_start: float | None = None
    video_end: float | None = None
    audio_start: float | None = None
    audio_end: float | None = None


@dataclass(frozen=True, slots=True)
class AvatarCreated:
    """``createAvatar`` succeeded: query the avatar with ``avatar_id``."""

    avatar_id: str


AvatarStatus = Literal["training", "success", "failed", "unknown"]


@dataclass(frozen=True, slots=True)
class Avatar:
    """``queryAvatar``.

    ``status`` is normalised: the seed documents ``customizedStatus`` (0 training, 1 success,
    2 failed); newer public docs show ``status`` (0 training, 1 failed, 2 success). The raw
    number is kept in ``status_code``.
    """

    avatar_id: str
    name: str | None
    status: AvatarStatus
    status_code: int | None
    reason: str | None
    default_conversation_id: str | None
