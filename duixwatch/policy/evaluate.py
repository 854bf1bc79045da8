"""Policy evaluation: a PURE function from (policies, snapshot, for_seconds clocks, now) to a Plan.

This module only decides; :mod:`duixwatch.policy.executor` acts, and
:class:`duixwatch.policy.cycle.PolicyCycle` — the one path the daemon, ``duixwatch plan`` and the
tests take — calls both, so what ``plan`` shows is exactly what enforcement does (design.md §8
rule 9).

For one APP and each policy that selects it, :func:`evaluate` returns a
:class:`~duixwatch.policy.plan.PolicyPlan`:

* **stale data aborts.** A failed, partial or stale snapshot (older than 2 x the poll interval)
  never leads to an action: the plan aborts with ``stale_data`` (a running ``for_seconds``
  clock is kept: nobody knows that the condition stopped);
* **matching** is the policy's match kind's (:mod:`duixwatch.policy.kinds`): which sessions,
  after which wait, and ``no_session_list`` when it needs the list and the app's is not polled;
* **protection.** Sessions whose id matches ``protect_sessions`` are listed as matched but
  protected and are never in an action; sessions without an id are never in an action;
* **caps abort** (:func:`~duixwatch.policy.plan.capped`): more stops than
  ``max_actions_per_cycle``, or than ``max_actions_percent`` % of the live sessions, and the
  policy stops NONE this cycle, saying why. ``close_all`` is one action (the percentage cap does
  not apply: it is gated by ``allow_close_all`` and ``confirm_app_id``);
* **dry run.** ``dry_run`` is true unless ``enforcement.enabled`` AND the policy's ``dry_run``
  is false; the plan is the same either way, the executor only records a dry run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from duixwatch.core import models
from duixwatch.policy.plan import Abort, Plan, PolicyPlan, fmt_seconds
from duixwatch.policy.schema import AppRef, PolicyConfig

__all__ = ["evaluate"]


def evaluate(
    policies: Sequence[PolicyConfig],
    app: AppRef,
    snapshot: models.AppSnapshot | None,
    *,
    now: datetime,
    enforcement_enabled: bool,
    over_since: Mapping[str, datetime | None] | None = None,
) -> Plan:
    """Decide, for every policy that selects ``app``, what it would do now (no I/O).

    ``over_since`` holds, per policy name, when its count condition started to hold (the
    ``for_seconds`` clock); the caller persists the values the plan returns.
    """
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
    policy: PolicyConfig,
    app: AppRef,
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
            age = fmt_seconds((now - snapshot.fetched_at).total_seconds())
            limit = fmt_seconds(snapshot.stale_after_seconds)
            detail = f"data is {age} old (stale after {limit})"
        return replace(base, abort=Abort("stale_data", detail), over_since=over_since)
    return policy.match.decide(policy, base, snapshot, now=now, over_since=over_since)
