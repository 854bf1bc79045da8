"""Match kinds: what makes a policy match, one class each — its keys, its checks, its decision.

A policy's ``match:`` names its kind by the key it holds (the YAML stays as it always was)::

    match: {session_age_over_seconds: 2700}          # SessionAge
    match: {max_sessions: 8, for_seconds: 60}        # SessionCount

Each kind is a config model (unknown keys are errors), says what is wrong with the rest of its
policy for it (:meth:`MatchKind.problems`, e.g. ``select`` means nothing to an age), and
decides (:meth:`MatchKind.decide`): from a FRESH snapshot to a
:class:`~duixwatch.policy.plan.PolicyPlan`. What every kind shares — stale data aborts, the
caps, dry runs — is applied around it (:mod:`duixwatch.policy.evaluate`, :func:`capped`).

Adding a kind: a class here with its ``key``, one member more in :data:`Kind` and
:data:`KINDS`, and its tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import Discriminator, Field, Tag

from duixwatch.core import models
from duixwatch.core.fields import Problems, Section
from duixwatch.policy.plan import Abort, Match, PlannedAction, PolicyPlan, capped, fmt_seconds

__all__ = [
    "KINDS",
    "Kind",
    "MatchKind",
    "Rule",
    "SessionAge",
    "SessionCount",
    "Undecided",
    "key_path",
]


#: The field types of the kinds' keys (shared with :class:`Undecided`).
AgeSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
SessionLimit = Annotated[int, Field(ge=0)]
WaitSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Rule(Protocol):
    """What a match kind needs of the policy it belongs to."""

    @property
    def action(self) -> Literal["stop_sessions", "close_all"]: ...
    @property
    def select(self) -> Literal["newest", "oldest"]: ...
    @property
    def max_actions_per_cycle(self) -> int: ...
    @property
    def max_actions_percent(self) -> float: ...
    def protects(self, session_id: str) -> bool: ...


class MatchKind(Section):
    """The base of every kind: ``key`` is the ``match:`` key that selects it."""

    key: ClassVar[str]

    def problems(self, rule: Rule) -> Problems:
        """What is wrong with the rest of the policy for this kind (paths relative to it)."""
        return []

    def decide(
        self,
        rule: Rule,
        base: PolicyPlan,
        snapshot: models.AppSnapshot,
        *,
        now: datetime,
        over_since: datetime | None,
    ) -> PolicyPlan:
        """The policy's decision on a fresh snapshot (``base`` carries who and dry_run)."""
        raise NotImplementedError


def _no_session_list(base: PolicyPlan) -> PolicyPlan:
    return replace(base, abort=Abort("no_session_list", "list_sessions is false for this app"))


def _capped(rule: Rule, base: PolicyPlan, matches: Sequence[Match], *, live: int) -> PolicyPlan:
    return capped(
        base,
        matches,
        live=live,
        max_actions=rule.max_actions_per_cycle,
        max_percent=rule.max_actions_percent,
    )


class SessionAge(MatchKind):
    """Every session older than ``session_age_over_seconds`` (stale, abandoned sessions).

    The age is from the session's start time, else (no start time listed) from when duixwatch
    first saw it; sessions without an id or a known age never match, nor do sessions whose
    listed start time was not believed (``start_rejected``: before 2000, more than a day ahead,
    unreadable), which are aged from first sight for display only and never closed by age
    alone. Oldest first.
    """

    key: ClassVar[str] = "session_age_over_seconds"

    session_age_over_seconds: AgeSeconds
    #: Accepted as 0 only: an age is its own duration.
    for_seconds: WaitSeconds = 0.0

    def problems(self, rule: Rule) -> Problems:
        found: Problems = []
        if self.for_seconds > 0:
            found.append(
                (
                    ("match", "for_seconds"),
                    "only applies to max_sessions: a session age is its own duration",
                )
            )
        if rule.select != "newest":
            found.append(
                (
                    ("select",),
                    "only applies to max_sessions: with session_age_over_seconds every matching "
                    "session is closed, so it would be silently meaningless",
                )
            )
        if rule.action == "close_all":
            found.append(
                (
                    ("match", "session_age_over_seconds"),
                    "a close_all policy needs max_sessions: draining an app because one session "
                    "is old makes no sense (use stop_sessions to close old sessions)",
                )
            )
        return found

    def decide(
        self,
        rule: Rule,
        base: PolicyPlan,
        snapshot: models.AppSnapshot,
        *,
        now: datetime,
        over_since: datetime | None,
    ) -> PolicyPlan:
        if snapshot.sessions is None:
            return _no_session_list(base)
        sessions = snapshot.sessions.sessions
        threshold = self.session_age_over_seconds
        matches = []
        for session in sessions:
            age = session.age_seconds(now)
            if session.session_id is None or session.start_rejected:
                continue
            if age is None or age <= threshold:
                continue
            matches.append(
                Match(
                    session_id=session.session_id,
                    age_seconds=age,
                    reason=f"age {fmt_seconds(age)} > {fmt_seconds(threshold)}",
                    protected=rule.protects(session.session_id),
                )
            )
        matches.sort(key=lambda m: (-(m.age_seconds or 0.0), m.session_id or ""))
        return _capped(rule, base, matches, live=len(sessions))


class SessionCount(MatchKind):
    """The sessions beyond ``max_sessions`` (over quota), once the app has been over it for
    ``for_seconds`` (0: at once).

    The count includes sessions without an id (they still occupy concurrency). ``stop_sessions``
    stops the excess, the policy's ``select`` (newest or oldest) first, among the sessions that
    can be stopped (an id and a known start); protected sessions are listed but do not count
    towards the excess. ``close_all`` is one action that drains the app; without a session list
    it counts ``userConcurrentNumber``.
    """

    key: ClassVar[str] = "max_sessions"

    max_sessions: SessionLimit
    for_seconds: WaitSeconds = 0.0

    def decide(
        self,
        rule: Rule,
        base: PolicyPlan,
        snapshot: models.AppSnapshot,
        *,
        now: datetime,
        over_since: datetime | None,
    ) -> PolicyPlan:
        limit = self.max_sessions
        sessions = snapshot.sessions.sessions if snapshot.sessions is not None else None
        if sessions is not None:
            count = len(sessions)
        elif rule.action == "close_all" and snapshot.concurrency is not None:
            count = snapshot.concurrency.user_concurrent_number
        else:
            return _no_session_list(base)
        if count <= limit:
            return replace(base, over_since=None)
        since = over_since or now
        held = (now - since).total_seconds()
        if held < self.for_seconds:
            remaining = self.for_seconds - held
            return replace(
                base,
                over_since=since,
                waiting=(
                    f"{count} sessions > max_sessions {limit} for {fmt_seconds(held)}; "
                    f"acting after for_seconds {fmt_seconds(self.for_seconds)} "
                    f"(in {fmt_seconds(remaining)})"
                ),
            )
        reason = f"{count} sessions > max_sessions {limit} for {fmt_seconds(held)}"
        if rule.action == "close_all":
            matched = tuple(Match(s.session_id, s.age_seconds(now), reason) for s in sessions or ())
            return replace(
                base,
                over_since=since,
                matched=matched,
                actions=(PlannedAction("close_all", None, f"{reason}: drain the app"),),
            )
        candidates = [
            s for s in sessions or () if s.session_id is not None and s.effective_start is not None
        ]
        newest_first = rule.select == "newest"
        candidates.sort(key=lambda s: (s.effective_start, s.session_id or ""), reverse=newest_first)
        excess = count - limit
        matches: list[Match] = []
        chosen = 0  # protected sessions are listed but do not count towards the excess
        for session in candidates:
            if chosen >= excess:
                break
            assert session.session_id is not None  # noqa: S101 - filtered above
            protected = rule.protects(session.session_id)
            chosen += 0 if protected else 1
            matches.append(
                Match(
                    session_id=session.session_id,
                    age_seconds=session.age_seconds(now),
                    reason=f"{reason}: excess {excess}, {rule.select} first",
                    protected=protected,
                )
            )
        return replace(_capped(rule, base, matches, live=count), over_since=since)


#: Every kind, in the order the messages name them.
KINDS: tuple[type[MatchKind], ...] = (SessionAge, SessionCount)


class Undecided(MatchKind):
    """A ``match`` that names no kind, or more than one.

    It holds every kind's keys, each optional (unknown keys are errors), so a typo is reported
    as one (``match.max_session: unknown key; did you mean 'max_sessions'?``); and it is not a
    kind: :meth:`problems` says so, as a rule across fields, so that the loader reports it with
    the policy's other problems and a policy built in code is refused. (A test keeps its keys
    those of :data:`KINDS`.)
    """

    key: ClassVar[str] = "undecided"

    session_age_over_seconds: AgeSeconds | None = None
    max_sessions: SessionLimit | None = None
    for_seconds: WaitSeconds = 0.0

    def problems(self, rule: Rule) -> Problems:
        present = [kind.key for kind in KINDS if getattr(self, kind.key, None) is not None]
        if len(present) == 2:
            message = f"give either {' or '.join(present)}, not both (write two policies for both)"
        elif present:
            message = f"give only one of {', '.join(present)} (write a policy for each)"
        else:
            message = f"needs one of {' or '.join(kind.key for kind in KINDS)}"
        return [(("match",), message)]


def _tag(value: Any) -> str | None:
    """Which kind ``value`` is: the one kind whose key it holds, else undecided."""
    if isinstance(value, MatchKind):
        return value.key
    if isinstance(value, Mapping):
        present = [kind.key for kind in KINDS if kind.key in value]
        return present[0] if len(present) == 1 else Undecided.key
    return None


#: The type of a policy's ``match``: one kind, chosen by its key. Pydantic puts the chosen
#: kind's key into the location of an error inside it (``match.max_sessions.for_seconds``);
#: the config loader leaves that part out (:func:`key_path`).
Kind = Annotated[
    Annotated[SessionAge, Tag(SessionAge.key)]
    | Annotated[SessionCount, Tag(SessionCount.key)]
    | Annotated[Undecided, Tag(Undecided.key)],
    Discriminator(_tag, custom_error_type="dict_type"),
]


def key_path(location: Sequence[str | int]) -> tuple[str | int, ...]:
    """An error location without the kind tags pydantic adds after ``match``."""
    tags = {kind.key for kind in KINDS} | {Undecided.key}
    path: list[str | int] = []
    for index, part in enumerate(location):
        if index > 0 and location[index - 1] == "match" and part in tags:
            continue
        path.append(part)
    return tuple(path)
