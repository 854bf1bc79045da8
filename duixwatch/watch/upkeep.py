"""Keeping duixwatch's files bounded and healthy for months: pruning, vacuuming, knowing when
storage is broken enough that enforcement must stop, and recovering the audit after a crash.

:class:`Upkeep` owns, beside the poll loops:

* **Pruning**, hourly and soon after each reload, in a worker thread (a poll never waits for
  it): the history older than ``state.history_days``, the first-seen rows and ``for_seconds``
  clocks of APPs that are no longer configured, the clocks of policies that are gone; then a
  ``VACUUM`` when the database shrank by half (:meth:`StateStore.vacuum_if_sparse`). The
  first-seen rows of a configured APP need no pruning: every successful poll forgets the
  sessions it no longer lists.
* **Health**, every :data:`CHECK_SECONDS`: the audit log is reopened when it was deleted or
  replaced, and after a failure a probe (:meth:`AuditLog.probe`) finds out whether it can be
  written again. :meth:`Upkeep.blocked` says why enforcement is blocked, by reason —
  ``audit_unavailable`` (no intent record can be written, so no call may be made) and
  ``state_unavailable`` (the state database cannot be written: a restart would lose the
  ``for_seconds`` clocks and first-seen times) — the words of the abort reasons, read by the
  executor before it acts, by ``/status`` and by ``duixwatch_enforcement_blocked{reason}``.
  A reason clears by itself once writing works again.
* **Crash recovery** of the audit log at start: the intents a crash (SIGKILL, power loss) left
  without an outcome get ``outcome: unknown`` at their APP's first good poll, saying whether
  the session was still live; and the last actions are read back for ``/status``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus

from duixwatch.core import models
from duixwatch.core.clock import Clock
from duixwatch.policy import audit
from duixwatch.watch import state

__all__ = ["BLOCK_REASONS", "CHECK_SECONDS", "PRUNE_SECONDS", "PruneResult", "Upkeep"]

log = structlog.get_logger("duixwatch.watch.upkeep")

#: How often the state database is pruned (and after each reload).
PRUNE_SECONDS: Final = 3600.0
#: How often the audit log's health is checked.
CHECK_SECONDS: Final = 10.0
#: Why enforcement may be blocked (``duixwatch_enforcement_blocked{reason}``).
BLOCK_REASONS: Final = ("audit_unavailable", "state_unavailable")


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one prune removed."""

    at: datetime
    history_rows: int
    apps: int
    policies: int
    vacuumed: bool


class Upkeep:
    """Pruning and storage health of one daemon (see the module docstring)."""

    def __init__(self, *, store: state.StateStore, audit_log: audit.AuditLog, clock: Clock) -> None:
        self._store = store
        self._audit = audit_log
        self._clock = clock
        self._app_ids: frozenset[str] | None = None
        self._policies: frozenset[str] = frozenset()
        self._history_days = 30.0
        self._kick = False
        #: The latest prune that completed, and how many vacuums ran since the start.
        self.last_prune: PruneResult | None = None
        self.vacuums = 0
        self._reported: dict[str, str | None] = dict.fromkeys(BLOCK_REASONS)
        #: app id -> the intents a crash left without an outcome (settled at its next poll)
        self._open_intents: dict[str, list[dict[str, Any]]] = {}

    def configure(
        self,
        *,
        app_ids: Iterable[str],
        policies: Iterable[str],
        history_days: float,
        audit_max_bytes: int,
        audit_keep: int,
    ) -> None:
        """The configuration in force (at start and after each reload): prune soon."""
        self._app_ids = frozenset(app_ids)
        self._policies = frozenset(policies)
        self._history_days = history_days
        self._audit.max_bytes = audit_max_bytes
        self._audit.keep = audit_keep
        self._kick = True

    def blocked(self) -> Mapping[str, str]:
        """Why enforcement is blocked now, by reason (empty: it is not)."""
        reasons: dict[str, str] = {}
        if self._audit.error is not None:
            reasons["audit_unavailable"] = self._audit.error
        if self._store.write_error is not None:
            reasons["state_unavailable"] = self._store.write_error
        return reasons

    def state_error(self) -> str | None:
        """The state database's write error (the executor's ``state_error``)."""
        return self._store.write_error

    def file_sizes(self) -> dict[str, int]:
        """Bytes of every file duixwatch keeps in ``state.dir``, by file name."""
        sizes = self._store.file_sizes()
        try:
            audit_sizes = self._audit.file_sizes()
        except audit.AuditError:
            audit_sizes = {}  # the directory cannot be listed: blocked() says so after the check
        return sizes | audit_sizes

    def last_prune_at(self) -> datetime | None:
        return None if self.last_prune is None else self.last_prune.at

    def vacuum_count(self) -> int:
        return self.vacuums

    def rotation_count(self) -> int:
        return self._audit.rotations

    def last_rotation_at(self) -> datetime | None:
        return self._audit.last_rotation

    def prune(self) -> PruneResult:
        """One prune (blocking: a worker thread's job). Raises :class:`state.StateError`."""
        now = self._clock.now()
        rows = self._store.prune_history(now - timedelta(days=self._history_days))
        apps = self._store.forget_apps(self._app_ids) if self._app_ids is not None else 0
        policies = self._store.forget_policies(self._policies)
        vacuumed = self._store.vacuum_if_sparse()
        self.vacuums += vacuumed
        result = PruneResult(now, rows, apps, policies, vacuumed)
        self.last_prune = result
        if rows or apps or policies:
            log.info(
                "state_pruned",
                history_rows=rows,
                apps=apps,
                policies=policies,
                older_than_days=self._history_days,
            )
        return result

    def check(self) -> None:
        """One health check (blocking): reopen a deleted or replaced audit log, probe a failed
        one; log each change of :meth:`blocked`."""
        try:
            self._audit.probe()
        except audit.AuditError as exc:  # kept in audit.error: reported below when it is new
            log.debug("audit_probe_failed", error=str(exc))
        now = self.blocked()
        for reason in BLOCK_REASONS:
            detail = now.get(reason)
            if (detail is None) == (self._reported[reason] is None):
                continue
            self._reported[reason] = detail
            if detail is not None:
                log.error("enforcement_blocked", reason=reason, error=detail)
            else:
                log.info("enforcement_unblocked", reason=reason)

    def recall(self, limit: int) -> list[dict[str, Any]]:
        """At start: remember the intents a crash left without an outcome (a crash leaves them
        at the end of the log: the newest two files are read), and return the last ``limit``
        records across the rotated files (what ``/status`` shows of the previous run). Raises
        :class:`audit.AuditError` when the log cannot be read."""
        found = audit.open_intents(audit.iter_records(self._audit.path, newest_files=2))
        for intent in found:
            self._open_intents.setdefault(str(intent.get("app_id")), []).append(intent)
        if found:
            log.warning("audit_open_intents", count=len(found))
        return audit.recent_records(self._audit.path, limit)

    async def settle_open_intents(self, app: str, snapshot: models.AppSnapshot) -> None:
        """Record ``outcome: unknown`` for the calls a crash cut off (found by :meth:`recall`),
        saying whether the session was still live at this first good poll after the restart."""
        if snapshot.app_id not in self._open_intents:
            return
        live = (
            {s.session_id for s in snapshot.sessions.sessions}
            if snapshot.sessions is not None
            else None
        )
        for intent in self._open_intents.pop(snapshot.app_id, []):
            sid = intent.get("session_id")
            if live is None:
                seen = "the session list is not polled, so whether it closed is not known"
            elif intent.get("action") == "close_all":
                seen = f"{len(live)} session(s) live at the first poll after the restart"
            else:
                seen = (
                    "the session was gone at the first poll after the restart"
                    if sid not in live
                    else "the session was still live at the first poll after the restart"
                )
            try:
                await anyio.to_thread.run_sync(
                    partial(
                        self._audit.write,
                        cycle=str(intent.get("cycle")),
                        event="outcome",
                        policy=str(intent.get("policy")),
                        app=app,
                        app_id=snapshot.app_id,
                        action=intent.get("action"),
                        session_id=sid,
                        reason=f"duixwatch stopped before this call's outcome was written; {seen}",
                        outcome="unknown",
                    )
                )
            except audit.AuditError as exc:
                log.error("audit_write_failed", error=str(exc))  # noqa: TRY400 - says it all
            else:
                log.warning(
                    "audit_intent_settled",
                    app=app,
                    session_id=sid,
                    outcome="unknown",
                    detail=seen,
                )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Check every :data:`CHECK_SECONDS`, prune every :data:`PRUNE_SECONDS` and at the
        first check after :meth:`configure`; until cancelled."""
        task_status.started()
        next_prune = self._clock.monotonic()
        while True:
            await anyio.to_thread.run_sync(self.check)
            if self._kick or self._clock.monotonic() >= next_prune:
                self._kick = False
                next_prune = self._clock.monotonic() + PRUNE_SECONDS
                try:
                    await anyio.to_thread.run_sync(self.prune)
                except state.StateError as exc:
                    log.error("state_prune_failed", error=str(exc))  # noqa: TRY400
            await self._clock.sleep(CHECK_SECONDS)
