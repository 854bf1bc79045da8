"""The one policy cycle: select policies → read their for_seconds clocks → evaluate → persist →
execute, for one APP's new snapshot.

The daemon runs :meth:`PolicyCycle.run` after every poll; ``duixwatch plan`` calls
:meth:`PolicyCycle.plan`, which is the same path up to the evaluation and stops there (it never
moves a clock and never acts), so what ``plan`` shows is what enforcement does by construction
(design.md §8 rule 9). The tests drive both.

The clocks are read from and written to a :class:`ForClocks` (the daemon's state database,
:class:`duixwatch.watch.state.StateStore`, so that a restart does not restart a wait).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from duixwatch.core import errors, models
from duixwatch.core.clock import Clock
from duixwatch.policy import audit
from duixwatch.policy.evaluate import evaluate
from duixwatch.policy.executor import Executor, PolicyApp
from duixwatch.policy.plan import Abort, ActionRecord, Plan, PolicyPlan
from duixwatch.policy.schema import PolicyConfig

__all__ = ["ForClocks", "PolicyCycle"]


log = structlog.get_logger("duixwatch.policy.cycle")


class ForClocks(Protocol):
    """Per APP and policy, when a ``max_sessions`` condition started to hold."""

    def over_since(self, app_id: str, policy: str) -> datetime | None: ...
    def set_over_since(self, app_id: str, policy: str, since: datetime | None) -> None:
        """Raises :class:`~duixwatch.core.errors.StorageError` when it cannot be written."""


class PolicyCycle:
    """Evaluates (and, with an executor, enforces) the policies of each APP's new snapshot.

    ``last_plans`` keeps each APP's latest plan, for ``/status``.
    """

    def __init__(self, *, clocks: ForClocks, clock: Clock, executor: Executor | None = None):
        self._clocks = clocks
        #: (app, policy) whose clock could not be written last time (logged once)
        self._unwritable: set[tuple[str, str]] = set()
        self._clock = clock
        self._executor = executor
        self.last_plans: dict[str, Plan] = {}

    def plan(
        self,
        app: PolicyApp,
        snapshot: models.AppSnapshot | None,
        *,
        policies: Sequence[PolicyConfig],
        enforcement_enabled: bool,
        now: datetime | None = None,
    ) -> Plan:
        """What every policy that selects ``app`` would do now: no clock moves, nothing acts."""
        return self._decide(app, snapshot, policies, enforcement_enabled, now)[0]

    async def run(
        self,
        app: PolicyApp,
        snapshot: models.AppSnapshot,
        *,
        policies: Sequence[PolicyConfig],
        enforcement_enabled: bool,
    ) -> tuple[Plan, list[ActionRecord]] | None:
        """The whole cycle: the plan and what was done (or, as dry runs, would have been);
        ``None`` when no policy selects ``app``."""
        plan, clocks = self._decide(app, snapshot, policies, enforcement_enabled, None)
        if not plan.policies:
            self.last_plans.pop(app.name, None)
            return None
        plan = self._persist_clocks(app, plan, clocks)
        self.last_plans[app.name] = plan
        if self._executor is None:
            return plan, []
        stale_at = (
            None
            if snapshot.fetched_at is None
            else snapshot.fetched_at + timedelta(seconds=snapshot.stale_after_seconds)
        )
        done = await self._executor.execute(
            plan,
            app,
            {p.name: p for p in policies},
            cycle=audit.new_cycle_id(plan.at),
            stale_at=stale_at,
        )
        return plan, done

    def _persist_clocks(
        self, app: PolicyApp, plan: Plan, clocks: Mapping[str, datetime | None]
    ) -> Plan:
        """Write the for_seconds clocks that moved. A policy whose clock cannot be written
        (disk full, read-only state) does nothing this cycle — aborted as
        ``state_unavailable``, logged once — since a restart would lose its wait; it resumes
        by itself once the write succeeds again."""
        kept: list[PolicyPlan] = []
        for pplan in plan.policies:
            key = (app.name, pplan.policy)
            if pplan.over_since != clocks.get(pplan.policy):
                try:
                    self._clocks.set_over_since(app.app_id, pplan.policy, pplan.over_since)
                except errors.StorageError as exc:
                    if key not in self._unwritable:
                        self._unwritable.add(key)
                        log.error(  # noqa: TRY400 - the message says it; no traceback
                            "policy_state_unavailable",
                            app=app.name,
                            policy=pplan.policy,
                            error=str(exc),
                        )
                    detail = f"cannot record the for_seconds clock: {exc}"
                    pplan = replace(
                        pplan, matched=(), actions=(), abort=Abort("state_unavailable", detail)
                    )
                else:
                    if key in self._unwritable:
                        self._unwritable.discard(key)
                        log.info("policy_state_recovered", app=app.name, policy=pplan.policy)
            kept.append(pplan)
        return replace(plan, policies=tuple(kept))

    def forget_apps(self, keep: set[str]) -> None:
        """Drop the plans of APPs no longer configured (names not in ``keep``)."""
        for name in set(self.last_plans) - keep:
            del self.last_plans[name]

    def _decide(
        self,
        app: PolicyApp,
        snapshot: models.AppSnapshot | None,
        policies: Sequence[PolicyConfig],
        enforcement_enabled: bool,
        now: datetime | None,
    ) -> tuple[Plan, dict[str, datetime | None]]:
        selected = [p for p in policies if p.selects(app)]
        clocks = {p.name: self._clocks.over_since(app.app_id, p.name) for p in selected}
        plan = evaluate(
            selected,
            app,
            snapshot,
            now=self._clock.now() if now is None else now,
            enforcement_enabled=enforcement_enabled,
            over_since=clocks,
        )
        return plan, clocks
