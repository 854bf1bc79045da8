"""Applying a :class:`~duixwatch.policy.plan.Plan`: the only code that closes sessions.

Safety (design.md §8), in the order the executor applies it:

1. **Dry run.** A policy plan marked ``dry_run`` (the policy's ``dry_run``, or
   ``enforcement.enabled`` false) makes no call: each session it would close is written once to
   the audit log as ``dry_run``, counted (``outcome="dry_run"``) and logged.
2. **Aborts.** A plan that aborted (stale data, caps) makes no call; the abort is counted every
   cycle and written to the audit log and the log when it starts (not again every cycle while
   it lasts).
3. **Intent first.** Before each call an ``intent`` line is appended and fsynced; if the audit
   log cannot be written the call is NOT made (outcome ``failed``). After the call its
   ``outcome`` line follows. A crash therefore never loses an issued call from the record.
4. **Pacing.** Calls start at most ``enforcement.max_stops_per_second``, all APPs together.
5. **Never cut in half.** Intent, call and outcome run shielded from cancellation under a
   deadline, so a shutdown waits for them (bounded by the request timeout).
6. **Idempotence.** ``sessionStop`` answering 2002 is ``already_closed``, not a failure; a
   session that two policies both want closed is stopped once per cycle.

Every executed or simulated action is kept (bounded) for ``/status``; policies with ``notify``
targets get a webhook per cycle that did something, and one when an abort starts (when it is
written to the audit log), sent in the background by the notifier.

The executor is written against what it needs, not against the classes that provide it: a
:class:`SessionCloser` (the DUIX client), :class:`PolicyMetrics` (the Prometheus metric set)
and a :class:`NotificationSink` (the notifier); the daemon plugs in the real ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import anyio
import structlog

from duixwatch.core import errors, models
from duixwatch.core.clock import Clock, RateLimiter
from duixwatch.policy import audit, notify
from duixwatch.policy.plan import ActionRecord, Plan, PlannedAction, PolicyPlan
from duixwatch.policy.schema import PolicyConfig

__all__ = ["Executor", "NotificationSink", "PolicyApp", "PolicyMetrics", "SessionCloser"]

log = structlog.get_logger("duixwatch.policy.executor")

#: Extra seconds a shielded action may take beyond the request timeout (audit fsyncs).
_SHIELD_MARGIN_SECONDS = 5.0


class PolicyApp(Protocol):
    """The app a plan is for, as the executor needs it: who it is and how to sign for it."""

    @property
    def name(self) -> str: ...
    @property
    def app_id(self) -> str: ...
    @property
    def credentials(self) -> models.AppCredentials: ...


class SessionCloser(Protocol):
    """The two destructive calls (:class:`duixwatch.duix.DuixClient` is one)."""

    async def stop_session(
        self, app: models.AppCredentials, session_id: str
    ) -> models.StopResult: ...

    async def close_all(self, app: models.AppCredentials) -> models.CloseAllResult: ...


class PolicyMetrics(Protocol):
    """What the executor counts (:class:`duixwatch.export.metrics.Metrics` is one)."""

    def policy_matched(self, app: str, policy: str, count: int) -> None: ...
    def policy_aborted(self, app: str, policy: str, reason: str) -> None: ...
    def policy_action(self, app: str, policy: str, action: str, outcome: str) -> None: ...


class NotificationSink(Protocol):
    """Takes notifications without waiting (:class:`duixwatch.policy.notify.Notifier`)."""

    def submit(
        self, targets: Sequence[notify.NotifyTarget], notification: notify.Notification
    ) -> bool: ...


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
    ) -> None:
        self._client = client
        self._clock = clock
        self._audit = audit_log
        self._metrics = metric_set
        self._notifier = notifier
        self._pacer = RateLimiter(max_stops_per_second, clock)
        self._shield_seconds = request_timeout_seconds + _SHIELD_MARGIN_SECONDS
        self.recent: deque[ActionRecord] = deque(maxlen=keep_recent)
        self._aborts: dict[tuple[str, str], str] = {}
        self._dry_seen: dict[tuple[str, str], set[str | None]] = {}

    def reconfigure(
        self, client: SessionCloser, *, max_stops_per_second: float, request_timeout_seconds: float
    ) -> None:
        """After a reload: new client and pacing."""
        self._client = client
        self._pacer.rate_per_second = max_stops_per_second
        self._shield_seconds = request_timeout_seconds + _SHIELD_MARGIN_SECONDS

    async def execute(
        self,
        plan: Plan,
        app: PolicyApp,
        policies: Mapping[str, PolicyConfig],
        *,
        cycle: str,
    ) -> list[ActionRecord]:
        """Apply every policy plan of one APP's cycle; returns what was done (or simulated)."""
        done: list[ActionRecord] = []
        stopped_this_cycle: set[str] = set()
        for pplan in plan.policies:
            self._metrics.policy_matched(pplan.app, pplan.policy, len(pplan.matched))
            key = (pplan.app, pplan.policy)
            if pplan.abort is not None:
                self._metrics.policy_aborted(pplan.app, pplan.policy, pplan.abort.reason)
                if await self._record_abort(pplan, cycle):
                    self._notify(pplan, [], policies.get(pplan.policy), cycle)
                continue
            self._aborts.pop(key, None)
            if pplan.dry_run:
                records = await self._dry_run(pplan, cycle)
            else:
                self._dry_seen.pop(key, None)
                records = [
                    await self._act(pplan, action, app, cycle, stopped_this_cycle)
                    for action in pplan.actions
                ]
            done.extend(records)
            self._notify(pplan, records, policies.get(pplan.policy), cycle)
        self.recent.extend(done)
        return done

    # ------------------------------------------------------------------ pieces

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
                cycle=cycle,
                event="dry_run",
                policy=pplan.policy,
                app=pplan.app,
                app_id=pplan.app_id,
                action=action.action,
                session_id=action.session_id,
                reason=action.reason,
                outcome="dry_run",
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
    ) -> ActionRecord:
        if action.session_id is not None and action.session_id in stopped_this_cycle:
            outcome, error = "already_closed", None
            await self._safe_write_outcome(
                pplan, action, cycle, outcome, "stopped earlier this cycle"
            )
        else:
            await self._pacer.wait()
            outcome, error = "failed", f"no outcome within {self._shield_seconds:g}s"
            with anyio.move_on_after(self._shield_seconds, shield=True):
                outcome, error = await self._call(pplan, action, app, cycle)
            if outcome == "stopped" and action.session_id is not None:
                stopped_this_cycle.add(action.session_id)
        self._metrics.policy_action(pplan.app, pplan.policy, action.action, outcome)
        event = "session_stopped" if action.action == "stop_session" else "app_drained"
        (log.warning if outcome == "failed" else log.info)(
            event if outcome != "failed" else "policy_action_failed",
            policy=pplan.policy,
            app=pplan.app,
            action=action.action,
            session_id=action.session_id,
            outcome=outcome,
            error=error,
            dry_run=False,
        )
        return self._record(pplan, action, cycle, outcome, error)

    async def _call(
        self,
        pplan: PolicyPlan,
        action: PlannedAction,
        app: PolicyApp,
        cycle: str,
    ) -> tuple[str, str | None]:
        fields = {
            "cycle": cycle,
            "policy": pplan.policy,
            "app": pplan.app,
            "app_id": pplan.app_id,
            "action": action.action,
            "session_id": action.session_id,
            "reason": action.reason,
        }
        try:
            await self._write(event="intent", **fields)
        except errors.DuixwatchError as exc:
            # No record, no call: an unrecorded close would break the audit guarantee.
            return "failed", f"not attempted: audit log unavailable ({exc})"
        outcome: str
        error: str | None = None
        try:
            if action.action == "stop_session":
                assert action.session_id is not None  # noqa: S101 - stop actions carry an id
                result = await self._client.stop_session(app.credentials, action.session_id)
                outcome = result.outcome
            else:
                await self._client.close_all(app.credentials)
                outcome = "stopped"
        except errors.ApiError as exc:
            outcome, error = "failed", str(exc)
        await self._write_or_log(event="outcome", outcome=outcome, error=error, **fields)
        return outcome, error

    async def _safe_write_outcome(
        self,
        pplan: PolicyPlan,
        action: PlannedAction,
        cycle: str,
        outcome: str,
        note: str,
    ) -> None:
        await self._write_or_log(
            cycle=cycle,
            event="outcome",
            policy=pplan.policy,
            app=pplan.app,
            app_id=pplan.app_id,
            action=action.action,
            session_id=action.session_id,
            reason=f"{action.reason} ({note})",
            outcome=outcome,
        )

    def _notify(
        self,
        pplan: PolicyPlan,
        records: Sequence[ActionRecord],
        config: PolicyConfig | None,
        cycle: str,
    ) -> None:
        """A webhook for a cycle that did something, or an abort that started."""
        aborted = pplan.abort
        if self._notifier is None or config is None or not config.notify:
            return
        if not records and aborted is None:
            return
        self._notifier.submit(
            config.notify,
            notify.Notification(
                policy=pplan.policy,
                app=pplan.app,
                app_id=pplan.app_id,
                cycle=cycle,
                dry_run=pplan.dry_run,
                outcomes=tuple(
                    notify.ActionOutcome(r.action, r.session_id, r.outcome, r.error)
                    for r in records
                ),
                aborted=None if aborted is None else f"{aborted.reason}: {aborted.detail}",
            ),
        )
