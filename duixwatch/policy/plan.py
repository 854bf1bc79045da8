"""What a policy decides and what came of it: plans, their parts, and action records.

A :class:`Plan` is every applicable policy's decision for one APP in one cycle
(:func:`duixwatch.policy.evaluate.evaluate` makes it, the executor carries it out, ``plan``
and ``/status`` show it). :func:`capped` is the blast-radius rule every ``stop_sessions``
decision goes through, whatever its match kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "Abort",
    "AbortReason",
    "ActionKind",
    "ActionRecord",
    "Match",
    "Plan",
    "PlannedAction",
    "PolicyAction",
    "PolicyPlan",
    "capped",
    "fmt_seconds",
]

AbortReason = Literal[
    "max_actions",
    "max_percent",
    "stale_data",
    "no_session_list",
    "state_unavailable",
    "audit_unavailable",
]
#: What a policy does (its ``action:``), and the calls that make it up.
PolicyAction = Literal["stop_sessions", "close_all"]
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
    action: PolicyAction
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


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One action a policy took (or, as a dry run, would have taken), for ``/status``.

    ``outcome`` is ``stopped``, ``already_closed``, ``failed``, ``interrupted``, ``still_listed``
    or ``dry_run``.
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

    @classmethod
    def from_audit(cls, record: Mapping[str, Any]) -> ActionRecord | None:
        """The action an audit ``outcome`` or ``dry_run`` line records (``None`` for other
        lines): how ``/status`` shows the actions of an earlier run after a restart."""
        if record.get("event") not in ("outcome", "dry_run") or not record.get("action"):
            return None
        try:
            at = datetime.strptime(str(record.get("ts")), "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            return None  # not a time our writer wrote: nothing to show
        session_id = record.get("session_id")
        error = record.get("error")
        return cls(
            at=at.replace(tzinfo=UTC),
            cycle=str(record.get("cycle")),
            policy=str(record.get("policy")),
            app=str(record.get("app")),
            app_id=str(record.get("app_id")),
            action=str(record.get("action")),
            session_id=None if session_id is None else str(session_id),
            outcome=str(record.get("outcome")),
            reason=str(record.get("reason")),
            error=None if error is None else str(error),
        )


def fmt_seconds(seconds: float) -> str:
    """Seconds as a policy's reasons write them: ``2700s``."""
    return f"{seconds:.0f}s"


def capped(
    base: PolicyPlan,
    matches: Sequence[Match],
    *,
    live: int,
    max_actions: int,
    max_percent: float,
) -> PolicyPlan:
    """``base`` with its matches, and a stop for each unprotected one — unless there would be
    more than ``max_actions`` stops, or more than ``max_percent`` % of the ``live`` sessions:
    then NONE, and the plan says why (design.md §8 rule 3)."""
    actions = tuple(
        PlannedAction("stop_session", m.session_id, m.reason) for m in matches if not m.protected
    )
    plan = replace(base, matched=tuple(matches))
    if not actions:
        return plan
    if len(actions) > max_actions:
        return replace(
            plan,
            abort=Abort(
                "max_actions",
                f"would stop {len(actions)} sessions > max_actions_per_cycle {max_actions}",
            ),
        )
    percent = 100.0 * len(actions) / live if live else 100.0
    if percent > max_percent:
        return replace(
            plan,
            abort=Abort(
                "max_percent",
                f"would stop {len(actions)} of {live} sessions ({percent:.0f}%) > "
                f"max_actions_percent {max_percent:g}",
            ),
        )
    return replace(plan, actions=actions)
