"""Policy evaluation: a PURE function from (policies, snapshot, tracked state, now) to a Plan.

The schema of a policy is :class:`duixwatch.settings.PolicyConfig` (it lives with the rest of
the config so that every mistake is reported with its file and line at load). This module only
decides; :mod:`duixwatch.executor` acts. ``duixwatch plan`` and the daemon call the same
:func:`evaluate`, so what ``plan`` shows is exactly what enforcement does (design.md §8 rule 9).

For one APP and each policy that selects it, :func:`evaluate` returns a :class:`PolicyPlan`:

* **stale data aborts.** A failed, partial or stale snapshot (older than 2 x the poll interval)
  never leads to an action: the plan aborts with ``stale_data``. A ``stop_sessions`` policy
  needs the session list; without it (``list_sessions: false``) it aborts with
  ``no_session_list``.
* **matching.** ``session_age_over_seconds``: every session with an id whose age (from its start
  time, else from when duixwatch first saw it) is over the threshold. ``max_sessions``: when the
  APP has more sessions than that (counting sessions without ids, which still occupy
  concurrency) continuously for ``for_seconds``, the excess — ``select: newest`` (default) or
  ``oldest`` first — among the sessions that can be stopped. ``close_all``: the same count
  condition, one action that drains the APP.
* **protection.** Sessions whose id matches ``protect_sessions`` are listed as matched but
  protected and are never in an action; sessions without an id are never in an action.
* **caps abort.** If a ``stop_sessions`` policy would stop more than ``max_actions_per_cycle``
  sessions, or more than ``max_actions_percent`` % of the APP's live sessions, it stops NONE
  this cycle and says why (``max_actions`` / ``max_percent``). ``close_all`` is one action (the
  percentage cap does not apply: it is gated by ``allow_close_all`` and ``confirm_app_id``).
* **dry run.** ``dry_run`` is true unless ``enforcement.enabled`` AND the policy's ``dry_run``
  is false; the plan is the same either way, the executor only records a dry run.

``for_seconds`` needs memory across cycles: the caller passes the time each policy's condition
started to hold (``over_since``) and persists the value the plan returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from duixwatch.config import settings
from duixwatch.core import models

__all__ = [
    "Abort",
    "AbortReason",
    "Match",
    "Plan",
    "PlannedAction",
    "PolicyPlan",
    "evaluate",
]

AbortReason = Literal["max_actions", "max_percent", "stale_data", "no_session_list"]
ActionKind = Literal["stop_session", "close_all"]


@dataclass(frozen=True, slots=True)
class Match:
    """A session the policy's condition selected, and why."""

    session_id: str | None
    age_seconds: float | None
    reason: str
    protected: bool = False


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One call the executor would make."""

    action: ActionKind
    session_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Abort:
    """Why a policy does nothing this cycle."""

    reason: AbortReason
    detail: str


@dataclass(frozen=True, slots=True)
class PolicyPlan:
    """One policy's decision for one APP in one cycle."""

    policy: str
    action: Literal["stop_sessions", "close_all"]
    app: str
    app_id: str
    dry_run: bool
    matched: tuple[Match, ...] = ()
    actions: tuple[PlannedAction, ...] = ()
    abort: Abort | None = None
    #: Set while a ``max_sessions`` condition holds but ``for_seconds`` has not passed yet.
    waiting: str | None = None
    #: When the ``max_sessions`` condition started to hold (None: it does not); persist it.
    over_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """Every applicable policy's decision for one APP."""

    app: str
    app_id: str
    at: datetime
    policies: tuple[PolicyPlan, ...]

    @property
    def actions(self) -> tuple[tuple[PolicyPlan, PlannedAction], ...]:
        """All intended actions, with the policy that wants each."""
        return tuple((p, a) for p in self.policies for a in p.actions)


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.0f}s"


def evaluate(
    policies: Sequence[settings.PolicyConfig],
    app: settings.AppConfig,
    snapshot: models.AppSnapshot | None,
    *,
    now: datetime,
    enforcement_enabled: bool,
    over_since: Mapping[str, datetime | None] | None = None,
) -> Plan:
    """Decide, for every policy that selects ``app``, what it would do now (no I/O)."""
    over_since = over_since or {}
    plans = tuple(
        _evaluate_one(
            policy,
            app,
            snapshot,
            now=now,
            dry_run=policy.dry_run or not enforcement_enabled,
            over_since=over_since.get(policy.name),
        )
        for policy in policies
        if policy.selects(app)
    )
    return Plan(app=app.name, app_id=app.app_id, at=now, policies=plans)


def _evaluate_one(
    policy: settings.PolicyConfig,
    app: settings.AppConfig,
    snapshot: models.AppSnapshot | None,
    *,
    now: datetime,
    dry_run: bool,
    over_since: datetime | None,
) -> PolicyPlan:
    base = PolicyPlan(
        policy=policy.name, action=policy.action, app=app.name, app_id=app.app_id, dry_run=dry_run
    )
    if snapshot is None or not snapshot.is_fresh(now):
        detail = "no successful poll yet"
        if snapshot is not None and snapshot.error is not None:
            detail = f"last poll failed ({snapshot.error.reason})"
        elif snapshot is not None and snapshot.fetched_at is not None:
            age = _fmt_seconds((now - snapshot.fetched_at).total_seconds())
            limit = _fmt_seconds(snapshot.stale_after_seconds)
            detail = f"data is {age} old (stale after {limit})"
        # Keep any running for_seconds clock: we do not know that the condition stopped.
        return replace(base, abort=Abort("stale_data", detail), over_since=over_since)
    sessions = snapshot.sessions.sessions if snapshot.sessions is not None else None
    if policy.match.session_age_over_seconds is not None:
        if sessions is None:
            return replace(
                base, abort=Abort("no_session_list", "list_sessions is false for this app")
            )
        return _capped(policy, base, _by_age(policy, sessions, now), live=len(sessions))
    return _by_count(policy, base, snapshot, sessions, now=now, over_since=over_since)


def _by_age(
    policy: settings.PolicyConfig, sessions: Sequence[models.Session], now: datetime
) -> list[Match]:
    threshold = policy.match.session_age_over_seconds
    assert threshold is not None  # noqa: S101 - the caller checked
    matches = []
    for session in sessions:
        age = session.age_seconds(now)
        if session.session_id is None or age is None or age <= threshold:
            continue
        matches.append(
            Match(
                session_id=session.session_id,
                age_seconds=age,
                reason=f"age {_fmt_seconds(age)} > {_fmt_seconds(threshold)}",
                protected=policy.protects(session.session_id),
            )
        )
    matches.sort(key=lambda m: (-(m.age_seconds or 0.0), m.session_id or ""))
    return matches


def _by_count(
    policy: settings.PolicyConfig,
    base: PolicyPlan,
    snapshot: models.AppSnapshot,
    sessions: Sequence[models.Session] | None,
    *,
    now: datetime,
    over_since: datetime | None,
) -> PolicyPlan:
    limit = policy.match.max_sessions
    assert limit is not None  # noqa: S101 - the schema requires one condition
    if sessions is not None:
        count = len(sessions)
    elif policy.action == "close_all" and snapshot.concurrency is not None:
        count = snapshot.concurrency.user_concurrent_number
    else:
        return replace(base, abort=Abort("no_session_list", "list_sessions is false for this app"))
    if count <= limit:
        return replace(base, over_since=None)
    since = over_since or now
    held = (now - since).total_seconds()
    if held < policy.match.for_seconds:
        remaining = policy.match.for_seconds - held
        return replace(
            base,
            over_since=since,
            waiting=(
                f"{count} sessions > max_sessions {limit} for {_fmt_seconds(held)}; "
                f"acting after for_seconds {_fmt_seconds(policy.match.for_seconds)} "
                f"(in {_fmt_seconds(remaining)})"
            ),
        )
    reason = f"{count} sessions > max_sessions {limit} for {_fmt_seconds(held)}"
    if policy.action == "close_all":
        matched = tuple(Match(s.session_id, s.age_seconds(now), reason) for s in (sessions or ()))
        return replace(
            base,
            over_since=since,
            matched=matched,
            actions=(PlannedAction("close_all", None, f"{reason}: drain the app"),),
        )
    candidates = [
        s for s in sessions or () if s.session_id is not None and s.effective_start is not None
    ]
    newest_first = policy.select == "newest"
    candidates.sort(key=lambda s: (s.effective_start, s.session_id or ""), reverse=newest_first)
    excess = count - limit
    matches: list[Match] = []
    chosen = 0  # protected sessions are listed but do not count towards the excess
    for session in candidates:
        if chosen >= excess:
            break
        assert session.session_id is not None  # noqa: S101 - filtered above
        protected = policy.protects(session.session_id)
        chosen += 0 if protected else 1
        matches.append(
            Match(
                session_id=session.session_id,
                age_seconds=session.age_seconds(now),
                reason=f"{reason}: excess {excess}, {policy.select} first",
                protected=protected,
            )
        )
    return replace(_capped(policy, base, matches, live=count), over_since=since)


def _capped(
    policy: settings.PolicyConfig, base: PolicyPlan, matches: list[Match], *, live: int
) -> PolicyPlan:
    actions = tuple(
        PlannedAction("stop_session", m.session_id, m.reason) for m in matches if not m.protected
    )
    plan = replace(base, matched=tuple(matches))
    if not actions:
        return plan
    if len(actions) > policy.max_actions_per_cycle:
        return replace(
            plan,
            abort=Abort(
                "max_actions",
                f"would stop {len(actions)} sessions > max_actions_per_cycle "
                f"{policy.max_actions_per_cycle}",
            ),
        )
    percent = 100.0 * len(actions) / live if live else 100.0
    if percent > policy.max_actions_percent:
        return replace(
            plan,
            abort=Abort(
                "max_percent",
                f"would stop {len(actions)} of {live} sessions ({percent:.0f}%) > "
                f"max_actions_percent {policy.max_actions_percent:g}",
            ),
        )
    return replace(plan, actions=actions)
