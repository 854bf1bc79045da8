"""Applying a :class:`~duixwatch.policy.plan.Plan`: the only code that closes sessions.

Safety (design.md §8), in the order the executor applies it:

1. **Dry run.** A policy plan marked ``dry_run`` (the policy's ``dry_run``, or
   ``enforcement.enabled`` false) makes no call: each session it would close is written once to
   the audit log as ``dry_run``, counted (``outcome="dry_run"``) and logged.
2. **Aborts.** A plan that aborted (stale data, caps) makes no call; the abort is counted every
   cycle and written to the audit log and the log when it starts (not again every cycle while
   it lasts).
3. **Intent first.** Before each call an ``intent`` line is appended and fsynced; if the audit
   log cannot be written the call is NOT made (outcome ``failed``), and from then on, while it
   cannot (probed before each plan) or the state database cannot be written, every acting plan
   aborts (``audit_unavailable``, ``state_unavailable``). After the call its ``outcome`` line
   follows. A crash therefore never loses an issued call from the record.
4. **Pacing.** Calls start at most ``enforcement.max_stops_per_second``, all APPs together.
5. **Never cut in half.** Intent, call and outcome run shielded from cancellation under a
   deadline, so a shutdown waits for them (bounded by the request timeout).
6. **Stopping means stopping.** After :meth:`Executor.stop` (SIGTERM) no call starts, in any
   APP's cycle; a call in flight has until the shutdown deadline to finish, and one that does
   not is recorded as ``interrupted``. After :meth:`Executor.set_in_force` (a reload) a plan
   whose policy was removed or changed, or whose enforcement was turned off, starts no further
   call; nor does one whose poll went stale meanwhile. In each case the calls that were
   planned and not started are written to the audit log as ``abort`` lines (with their action
   and session id; reason ``shutdown``, ``reload`` or ``stale_data``) and counted as aborts,
   so nothing planned disappears without a record.
7. **Idempotence.** ``sessionStop`` answering 2002 is ``already_closed``, not a failure; a
   session that two policies both want closed is stopped once per cycle; one still listed
   after a successful stop is recorded ``still_listed`` and retried only with backoff, a few
   times (:mod:`~duixwatch.policy.retries`).

Every executed or simulated action is kept (bounded) for ``/status``; policies with ``notify``
targets get a webhook per cycle that did something, and one when an abort starts (when it is
written to the audit log), sent in the background by the notifier.

The executor is written against what it needs, not against the classes that provide it: a
:class:`SessionCloser` (the DUIX client), :class:`PolicyMetrics` (the Prometheus metric set)
and a :class:`NotificationSink` (the notifier); the daemon plugs in the real ones.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, Literal

import anyio
import structlog

from duixwatch.core import errors
from duixwatch.core.clock import Clock, RateLimiter
from duixwatch.policy import audit, notify, retries
from duixwatch.policy.plan import Abort, ActionRecord, Plan, PlannedAction, PolicyPlan
from duixwatch.policy.ports import NotificationSink, PolicyApp, PolicyMetrics, SessionCloser
from duixwatch.policy.schema import PolicyConfig

__all__ = [
    "Executor",
    "HaltReason",
    "NotificationSink",
    "PolicyApp",
    "PolicyMetrics",
    "SessionCloser",
]

log = structlog.get_logger("duixwatch.policy.executor")

#: Extra seconds a shielded action may take beyond the request timeout (audit fsyncs).
_SHIELD_MARGIN_SECONDS = 5.0
#: How long the audit lines written after a call was cut (or a plan halted) may take.
_RECORD_SECONDS = 2.0

#: Why a plan stopped part-way: the daemon is stopping; a reload took its policy out of force;
#: the poll it was made from went stale; its task was cancelled for another reason (its APP
#: removed by a reload).
HaltReason = Literal["shutdown", "reload", "stale_data", "cancelled"]

_HALT_DETAIL: dict[str, str] = {
    "shutdown": "duixwatch is stopping; this call was planned and not started",
    "reload": "a reload removed or changed the policy, or turned enforcement off; this call was "
    "planned under the old configuration and not started",
    "stale_data": "the poll this plan was made from became stale (older than 2 x the poll "
    "interval) before this call could start; the next poll plans again",
    "cancelled": "the cycle was cancelled (its APP left the configuration); this call was "
    "planned and not started",
}


class Executor:
    """Turns plans into calls, records, metrics and notifications."""

    def __init__(
        self,
        client: SessionCloser,
        *,
        clock: Clock,
        audit_log: audit.AuditLog,
        metric_set: PolicyMetrics,
        notifier: NotificationSink | None = None,
        max_stops_per_second: float = 5.0,
        request_timeout_seconds: float = 10.0,
        keep_recent: int = 200,
        state_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._client = client
        self._state_error = state_error
        #: sessions stopped successfully, to notice one still listed afterwards
        self._stop_memory = retries.StopMemory()
        self._clock = clock
        self._audit = audit_log
        self._metrics = metric_set
        self._notifier = notifier
        self._pacer = RateLimiter(max_stops_per_second, clock)
        self._shield_seconds = request_timeout_seconds + _SHIELD_MARGIN_SECONDS
        self.recent: deque[ActionRecord] = deque(maxlen=keep_recent)
        self._aborts: dict[tuple[str, str], str] = {}
        self._dry_seen: dict[tuple[str, str], set[str | None]] = {}
        self._stopping = False
        #: anyio time by which every call in flight must end (brought forward by stop())
        self._call_deadline = math.inf
        #: the shielded scopes of the calls in flight (their deadlines move with stop())
        self._calls: set[anyio.CancelScope] = set()
        #: the policies of the config in force (None: not told; every plan stays in force)
        self._in_force: Mapping[str, PolicyConfig] | None = None
        self._enforcing = True
        #: per APP id, while its plan is carried out: when the data it was made from goes stale
        self._stale_at: dict[str, datetime] = {}

    def reconfigure(
        self, client: SessionCloser, *, max_stops_per_second: float, request_timeout_seconds: float
    ) -> None:
        """After a reload: new client and pacing."""
        self._client = client
        self._pacer.rate_per_second = max_stops_per_second
        self._shield_seconds = request_timeout_seconds + _SHIELD_MARGIN_SECONDS

    def set_in_force(self, policies: Sequence[PolicyConfig], *, enforcement_enabled: bool) -> None:
        """The policies of the configuration now in force (at start and after each reload).

        A plan being carried out whose policy is no longer in force — removed, changed, or
        enforcement turned off — starts no further call (the rest are aborted as ``reload``);
        the next cycle plans under the new configuration.
        """
        self._in_force = {p.name: p for p in policies}
        self._enforcing = enforcement_enabled

    def stop(self, *, grace_seconds: float) -> None:
        """Start no new call from now on (SIGTERM); the calls in flight have ``grace_seconds``
        more to finish, after which each is cut and recorded as ``interrupted``."""
        self._stopping = True
        self._call_deadline = anyio.current_time() + max(0.0, grace_seconds)
        for scope in self._calls:
            scope.deadline = min(scope.deadline, self._call_deadline)

    def _halted(self, pplan: PolicyPlan, policies: Mapping[str, PolicyConfig]) -> HaltReason | None:
        """Why ``pplan`` must start no further call, if it must not."""
        if self._stopping:
            return "shutdown"
        if self._in_force is not None and (
            not self._enforcing or self._in_force.get(pplan.policy) != policies.get(pplan.policy)
        ):
            return "reload"
        stale_at = self._stale_at.get(pplan.app_id)
        if stale_at is not None and self._clock.now() > stale_at:
            return "stale_data"
        return None

    async def execute(
        self,
        plan: Plan,
        app: PolicyApp,
        policies: Mapping[str, PolicyConfig],
        *,
        cycle: str,
        stale_at: datetime | None = None,
    ) -> list[ActionRecord]:
        """Apply every policy plan of one APP's cycle; returns what was done (or simulated).

        ``policies`` are the policies the plan was made with (by name); ``stale_at`` is when
        the poll it was made from goes stale: no call starts after it (a long plan, paced or
        slowed by a slow platform, would otherwise act on data older than design.md §8
        allows), and the rest are aborted as ``stale_data``."""
        if stale_at is not None:
            self._stale_at[plan.app_id] = stale_at
        try:
            return await self._execute(plan, app, policies, cycle)
        finally:
            self._stale_at.pop(plan.app_id, None)

    async def _execute(
        self, plan: Plan, app: PolicyApp, policies: Mapping[str, PolicyConfig], cycle: str
    ) -> list[ActionRecord]:
        planned = plan  # what is listed and due, before the screens below
        plan = await self._unless_blocked(plan)
        # Stops a still-listed session's backoff holds back are left out, and recorded.
        plan, held = retries.screen(self._stop_memory, plan, self._clock.monotonic())
        done = [await self._still_listed(h[0], h[1], h[2], h[3], cycle) for h in held]
        stopped_this_cycle: set[str] = set()
        #: the calls planned and not started yet, by (policy index, action index)
        unstarted: dict[tuple[int, int], tuple[PolicyPlan, PlannedAction]] = {
            (i, j): (pplan, action)
            for i, pplan in enumerate(plan.policies)
            if pplan.abort is None and not pplan.dry_run
            for j, action in enumerate(pplan.actions)
        }
        try:
            for i, pplan in enumerate(plan.policies):
                self._metrics.policy_matched(pplan.app, pplan.policy, len(pplan.matched))
                key = (pplan.app, pplan.policy)
                if pplan.abort is not None:
                    self._metrics.policy_aborted(pplan.app, pplan.policy, pplan.abort.reason)
                    if await self._record_abort(pplan, cycle):
                        self._notify(pplan, [], policies.get(pplan.policy), cycle)
                    continue
                self._aborts.pop(key, None)
                halted: HaltReason | None = None
                if pplan.dry_run:
                    records = await self._dry_run(pplan, cycle)
                else:
                    self._dry_seen.pop(key, None)
                    records = []
                    for j, action in enumerate(pplan.actions):
                        record = await self._act(
                            pplan,
                            action,
                            app,
                            cycle,
                            stopped_this_cycle,
                            policies=policies,
                            started=partial(unstarted.pop, (i, j)),
                        )
                        if record is None:
                            halted = self._halted(pplan, policies)
                            break
                        records.append(record)
                done.extend(records)
                self._notify(pplan, records, policies.get(pplan.policy), cycle, halted)
        except anyio.get_cancelled_exc_class():
            # Cancelled between calls (shutdown, or the APP's loop stopped by a reload): the
            # calls not started are recorded before the cancellation goes on.
            await self._abort_unstarted(unstarted.values(), policies, cycle)
            raise
        finally:
            self.recent.extend(done)
        if all(p.abort is None for p in planned.policies):  # a whole view of what is listed
            self._stop_memory.keep_only(
                plan.app_id, (a.session_id for _, a in planned.actions if a.session_id)
            )
        if unstarted:
            await self._abort_unstarted(unstarted.values(), policies, cycle)
        return done

    # ------------------------------------------------------------------ pieces

    async def _still_listed(
        self, pplan: PolicyPlan, action: PlannedAction, decision: str, stops: int, cycle: str
    ) -> ActionRecord:
        then = retries.NEXT[decision]
        error = f"listed again after {stops} successful sessionStop(s); {then}"
        self._metrics.policy_action(pplan.app, pplan.policy, action.action, "still_listed")
        (log.error if decision == "give_up" else log.warning)(
            "policy_session_still_listed",
            policy=pplan.policy,
            app=pplan.app,
            session_id=action.session_id,
            stops=stops,
            detail=then,
        )
        await self._write_or_log(
            event="outcome",
            reason=action.reason,
            outcome="still_listed",
            error=error,
            **audit.fields_of(pplan, action, cycle),
        )
        return self._record(pplan, action, cycle, "still_listed", error)

    async def _unless_blocked(self, plan: Plan) -> Plan:
        """``plan``, or, when its calls could not be recorded — the audit log cannot be written
        (probed again first), or the state database cannot — the same plan with each acting
        policy aborted (``audit_unavailable``, ``state_unavailable``)."""
        acting = [p for p in plan.policies if p.abort is None and not p.dry_run and p.actions]
        if not acting:
            return plan
        abort: Abort | None = None
        if self._audit.error is not None:
            try:
                await anyio.to_thread.run_sync(self._audit.probe)
            except audit.AuditError as exc:
                abort = Abort(
                    "audit_unavailable",
                    f"the audit log cannot be written, and no call is made without its intent"
                    f" record ({exc})",
                )
        state_error = self._state_error()
        if abort is None and state_error is not None:
            abort = Abort(
                "state_unavailable",
                f"the state database cannot be written, so a restart would lose what this"
                f" policy's decisions rest on ({state_error})",
            )
        if abort is None:
            return plan
        return replace(
            plan,
            policies=tuple(replace(p, abort=abort) if p in acting else p for p in plan.policies),
        )

    def _record_deadline(self) -> float:
        """When the audit lines written after a halt or a cut must be done."""
        return min(anyio.current_time() + _RECORD_SECONDS, self._call_deadline + _RECORD_SECONDS)

    async def _abort_unstarted(
        self,
        unstarted: Any,
        policies: Mapping[str, PolicyConfig],
        cycle: str,
    ) -> None:
        """Write an ``abort`` line for each planned call that was not started, count one abort
        per policy, log one line per policy. Shielded (a shutdown is usually why), within
        :meth:`_record_deadline`."""
        by_policy: dict[str, tuple[PolicyPlan, list[PlannedAction]]] = {}
        for pplan, action in unstarted:
            by_policy.setdefault(pplan.policy, (pplan, []))[1].append(action)
        for pplan, actions in by_policy.values():
            reason: HaltReason = self._halted(pplan, policies) or "cancelled"
            self._metrics.policy_aborted(pplan.app, pplan.policy, reason)
            log.warning(
                "policy_halted",
                policy=pplan.policy,
                app=pplan.app,
                reason=reason,
                not_started=len(actions),
            )
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = self._record_deadline()
                for action in actions:
                    await self._write_or_log(
                        event="abort",
                        reason=f"{reason}: {_HALT_DETAIL[reason]} ({action.reason})",
                        **audit.fields_of(pplan, action, cycle),
                    )

    async def _write(self, **fields: Any) -> None:
        """One audit record, written (and fsynced) off the event loop."""
        await anyio.to_thread.run_sync(lambda: self._audit.write(**fields))

    async def _write_or_log(self, **fields: Any) -> None:
        """An audit record whose loss must not stop the cycle (aborts, dry runs, outcomes)."""
        try:
            await self._write(**fields)
        except errors.DuixwatchError as exc:
            log.error("audit_write_failed", error=str(exc))  # noqa: TRY400 - expected, no trace

    async def _record_abort(self, pplan: PolicyPlan, cycle: str) -> bool:
        """Log and audit an abort when it starts; whether it did start (not again every cycle
        while it lasts)."""
        assert pplan.abort is not None  # noqa: S101 - checked by the caller
        key = (pplan.app, pplan.policy)
        if self._aborts.get(key) == pplan.abort.reason:
            return False
        self._aborts[key] = pplan.abort.reason
        log.warning(
            "policy_aborted",
            policy=pplan.policy,
            app=pplan.app,
            reason=pplan.abort.reason,
            detail=pplan.abort.detail,
        )
        await self._write_or_log(
            cycle=cycle,
            event="abort",
            policy=pplan.policy,
            app=pplan.app,
            app_id=pplan.app_id,
            reason=f"{pplan.abort.reason}: {pplan.abort.detail}",
        )
        return True

    async def _dry_run(self, pplan: PolicyPlan, cycle: str) -> list[ActionRecord]:
        key = (pplan.app, pplan.policy)
        seen = self._dry_seen.get(key, set())
        current = {a.session_id for a in pplan.actions}
        self._dry_seen[key] = current  # forget sessions that no longer match
        records = []
        for action in pplan.actions:
            if action.session_id in seen:
                continue  # recorded when it first matched
            record = self._record(pplan, action, cycle, "dry_run")
            self._metrics.policy_action(pplan.app, pplan.policy, action.action, "dry_run")
            log.info(
                "policy_dry_run",
                policy=pplan.policy,
                app=pplan.app,
                action=action.action,
                session_id=action.session_id,
                reason=action.reason,
            )
            await self._write_or_log(
                event="dry_run",
                reason=action.reason,
                outcome="dry_run",
                **audit.fields_of(pplan, action, cycle),
            )
            records.append(record)
        return records

    def _record(
        self,
        pplan: PolicyPlan,
        action: PlannedAction,
        cycle: str,
        outcome: str,
        error: str | None = None,
    ) -> ActionRecord:
        return ActionRecord(
            at=self._clock.now(),
            cycle=cycle,
            policy=pplan.policy,
            app=pplan.app,
            app_id=pplan.app_id,
            action=action.action,
            session_id=action.session_id,
            outcome=outcome,
            reason=action.reason,
            error=error,
        )

    async def _act(
        self,
        pplan: PolicyPlan,
        action: PlannedAction,
        app: PolicyApp,
        cycle: str,
        stopped_this_cycle: set[str],
        *,
        policies: Mapping[str, PolicyConfig],
        started: Callable[[], object],
    ) -> ActionRecord | None:
        """One planned call, paced, recorded and counted; ``None`` (and ``started`` not
        called) when the plan was halted before it started."""
        if self._halted(pplan, policies) is not None:
            return None
        if action.session_id is not None and action.session_id in stopped_this_cycle:
            started()
            outcome, error = "already_closed", None
            await self._safe_write_outcome(
                pplan, action, cycle, outcome, "stopped earlier this cycle"
            )
        else:
            await self._pacer.wait()
            if self._halted(pplan, policies) is not None:
                return None  # the wait for a slot outlasted the configuration or the process
            started()
            outcome, error = await self._guarded_call(pplan, action, app, cycle)
            if outcome in ("stopped", "already_closed") and action.session_id is not None:
                self._stop_memory.stopped(pplan.app_id, action.session_id, self._clock.monotonic())
            if outcome == "stopped" and action.session_id is not None:
                stopped_this_cycle.add(action.session_id)
        self._metrics.policy_action(pplan.app, pplan.policy, action.action, outcome)
        event = {
            "failed": "policy_action_failed",
            "interrupted": "policy_action_interrupted",
        }.get(outcome, "session_stopped" if action.action == "stop_session" else "app_drained")
        (log.warning if outcome in ("failed", "interrupted") else log.info)(
            event,
            policy=pplan.policy,
            app=pplan.app,
            action=action.action,
            session_id=action.session_id,
            outcome=outcome,
            error=error,
            dry_run=False,
        )
        return self._record(pplan, action, cycle, outcome, error)

    async def _guarded_call(
        self,
        pplan: PolicyPlan,
        action: PlannedAction,
        app: PolicyApp,
        cycle: str,
    ) -> tuple[str, str | None]:
        """Intent, call, outcome, shielded from cancellation under a deadline (the request
        timeout and a margin, brought forward by :meth:`stop`). A call without an answer is
        ``failed``, or ``interrupted`` once stopping (whether the platform acted on it is
        not known)."""
        fields = {**audit.fields_of(pplan, action, cycle), "reason": action.reason}
        outcome: str | None = None
        error: str | None = None
        timed_out: errors.ApiTimeout | None = None
        intent_written = False
        began = anyio.current_time()
        scope = anyio.CancelScope(
            shield=True, deadline=min(began + self._shield_seconds, self._call_deadline)
        )
        self._calls.add(scope)
        try:
            with scope:
                try:
                    await self._write(event="intent", **fields)
                except errors.DuixwatchError as exc:
                    # No record, no call: an unrecorded close would break the audit guarantee.
                    return "failed", f"not attempted: audit log unavailable ({exc})"
                intent_written = True
                try:
                    outcome = await self._call(action, app)
                except errors.ApiTimeout as exc:
                    timed_out = exc
                except errors.ApiError as exc:
                    outcome, error = "failed", str(exc)
        finally:
            self._calls.discard(scope)
        if outcome is None:  # cut by the deadline, or the request timed out
            waited = anyio.current_time() - began
            if not intent_written:
                return "failed", f"not attempted: the audit log took over {waited:.1f}s"
            if self._stopping:
                outcome = "interrupted"
                error = f"no answer {waited:.1f}s into the call, when duixwatch stopped"
            elif timed_out is not None:
                outcome, error = "failed", str(timed_out)
            else:
                outcome, error = "failed", f"no outcome within {waited:.1f}s"
        with anyio.CancelScope(shield=True) as recording:
            recording.deadline = self._record_deadline()
            await self._write_or_log(event="outcome", outcome=outcome, error=error, **fields)
        return outcome, error

    async def _call(self, action: PlannedAction, app: PolicyApp) -> str:
        """The platform call itself (unshielded: :meth:`_guarded_call` shields it)."""
        if action.action == "stop_session":
            assert action.session_id is not None  # noqa: S101 - stop actions carry an id
            result = await self._client.stop_session(
                app.credentials, action.session_id, shield=False
            )
            return result.outcome
        await self._client.close_all(app.credentials, shield=False)
        return "stopped"

    async def _safe_write_outcome(
        self,
        pplan: PolicyPlan,
        action: PlannedAction,
        cycle: str,
        outcome: str,
        note: str,
    ) -> None:
        await self._write_or_log(
            event="outcome",
            reason=f"{action.reason} ({note})",
            outcome=outcome,
            **audit.fields_of(pplan, action, cycle),
        )

    def _notify(
        self,
        pplan: PolicyPlan,
        records: Sequence[ActionRecord],
        config: PolicyConfig | None,
        cycle: str,
        halted: HaltReason | None = None,
    ) -> None:
        """A webhook for a cycle that did something, an abort that started, or a plan that
        was halted part-way."""
        aborted = (
            f"{pplan.abort.reason}: {pplan.abort.detail}"
            if pplan.abort is not None
            else None
            if halted is None
            else f"{halted}: {_HALT_DETAIL[halted]}"
        )
        if self._notifier is None or config is None or not config.notify:
            return
        if records or aborted is not None:
            self._notifier.submit(
                config.notify, notify.Notification.of(pplan, records, cycle, aborted)
            )
