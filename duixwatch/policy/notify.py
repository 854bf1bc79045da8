"""Webhook notifications: a JSON POST per policy cycle that acted, never in enforcement's way.

A policy may name webhook targets (``notify: [{url, headers}]``); after a cycle that acted (or
aborted) the executor hands a :class:`Notification` to :meth:`Notifier.submit`, which only puts
it on a bounded in-memory queue (one entry per target) and returns at once. One worker task,
:meth:`Notifier.run`, started in the daemon's task group, sends the entries one by one:

* a JSON body (:meth:`Notification.payload`) whose ``text`` field is one human-readable line, so
  a Slack-compatible incoming webhook shows it as it is, beside machine-readable fields;
* every attempt is one POST through the injected :class:`Poster` (the daemon's is
  :class:`duixwatch.duix.webhook.WebhookPoster`, over httpx), bounded by the target's
  ``timeout_seconds`` (which also bounds a receiver that accepts and never answers);
* success is any 2xx; transport errors, timeouts, 5xx and 429 are retried up to ``retries``
  times after ``backoff_seconds * 2**n`` on the injected clock (never sooner than a 429's
  ``Retry-After``, capped); any other status is final.

Why so defensive: a notification is a courtesy, enforcement is the job. A slow or dead webhook
costs at most the worker's own time; a flood costs at most ``max_pending`` queued entries (the
rest are dropped, logged and counted), and nothing here raises into the caller.

Webhook URLs and headers are secrets (a Slack webhook's path *is* its credential; headers carry
bearer tokens): :class:`NotifyTarget` (the config schema of a target, used as it is) leaves them
out of its repr, logs name a target only as ``scheme://host[:port]/…`` (:func:`redact_url`), never
print a header value, and report an exception by its type name only, since HTTP libraries'
messages may quote the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio
import structlog
from anyio.abc import TaskStatus
from pydantic import Field

from duixwatch.core.clock import Clock
from duixwatch.core.fields import Headers, SecretUrl, Section, redact_url
from duixwatch.policy.plan import ActionRecord, PolicyPlan

__all__ = [
    "MAX_RETRY_AFTER_SECONDS",
    "ActionOutcome",
    "Delivery",
    "Notification",
    "Notifier",
    "NotifyTarget",
    "Poster",
    "redact_url",
]

log = structlog.get_logger("duixwatch.policy.notify")

#: The longest a 429's ``Retry-After`` may hold the (single) worker before the next attempt.
MAX_RETRY_AFTER_SECONDS = 60.0

#: How long the worker may take to close its connections when it is cancelled.
_CLOSE_SECONDS = 2.0


class NotifyTarget(Section):
    """Where a policy reports the cycles it acted in: a JSON POST (Slack-compatible ``text``).

    ``url`` and ``headers`` usually hold secrets (``${SLACK_WEBHOOK_URL}``, ``Bearer ${TOKEN}``):
    the repr shows only where the URL goes and the header names, and the config's ``mask``
    hides them.
    """

    url: SecretUrl = Field(repr=False)
    headers: Headers = Field(default_factory=dict, repr=False)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    def __repr__(self) -> str:
        return (
            f"NotifyTarget(url={redact_url(self.url)!r}, headers={sorted(self.headers)!r}, "
            f"timeout_seconds={self.timeout_seconds!r})"
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one POST went.

    ``reason`` is ``sent`` (a 2xx), ``status`` (another status), ``timeout``, ``transport`` or
    ``invalid`` (the request could not be made at all); ``error`` is an exception's type name,
    never its message.
    """

    reason: Literal["sent", "status", "timeout", "transport", "invalid"]
    retryable: bool
    status: int | None = None
    error: str | None = None
    retry_after_seconds: float | None = None


class Poster(Protocol):
    """Makes one POST of a JSON body to a target, within its ``timeout_seconds``."""

    async def post(self, target: NotifyTarget, payload: Mapping[str, Any]) -> Delivery:
        """One attempt; never raises for an answer or a network failure (see :class:`Delivery`)."""

    async def aclose(self) -> None:
        """Close the connections (the notifier's worker does, when it stops)."""


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What one action of a policy cycle came to."""

    action: str  # "stop_session" | "close_all"
    session_id: str | None
    outcome: str  # "stopped" | "already_closed" | "failed" | "dry_run"
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """One policy cycle on one APP that acted (or would have, or aborted)."""

    policy: str
    app: str
    app_id: str
    cycle: str
    dry_run: bool
    outcomes: tuple[ActionOutcome, ...]
    aborted: str | None = None  # the abort reason, if the policy aborted this cycle

    @classmethod
    def of(
        cls,
        pplan: PolicyPlan,
        records: Sequence[ActionRecord],
        cycle: str,
        aborted: str | None,
    ) -> Notification:
        """The notification of one policy plan's cycle and what it did."""
        return cls(
            policy=pplan.policy,
            app=pplan.app,
            app_id=pplan.app_id,
            cycle=cycle,
            dry_run=pplan.dry_run,
            outcomes=tuple(
                ActionOutcome(r.action, r.session_id, r.outcome, r.error) for r in records
            ),
            aborted=aborted,
        )

    def text(self) -> str:
        """One line for humans, e.g. ``duixwatch: policy p stopped 3 session(s) of app``.

        ``&``, ``<`` and ``>`` are escaped as Slack's message format requires.
        """
        clauses: list[str] = []
        stops = [o.outcome for o in self.outcomes if o.action == "stop_session"]
        done = sum(o in ("stopped", "already_closed") for o in stops)
        failed = stops.count("failed")
        planned = stops.count("dry_run")
        if done or failed:
            details = [f"{failed} failed"] if failed else []
            if already := stops.count("already_closed"):
                details.append(f"{already} already closed")
            suffix = f" ({', '.join(details)})" if details else ""
            clauses.append(f"stopped {done} session(s) of {self.app}{suffix}")
        if planned:
            clauses.append(f"would stop {planned} session(s) of {self.app}")
        for outcome in (o.outcome for o in self.outcomes if o.action == "close_all"):
            if outcome == "dry_run":
                clauses.append(f"would close all sessions of {self.app}")
            elif outcome == "failed":
                clauses.append(f"failed to close all sessions of {self.app}")
            else:
                clauses.append(f"closed all sessions of {self.app}")
        if self.aborted is not None:
            clauses.append(f"aborted for {self.app}: {self.aborted}")
        if not clauses:
            clauses.append(f"took no action on {self.app}")
        line = f"duixwatch: policy {self.policy} {'; '.join(clauses)}"
        if self.dry_run:
            line += " [dry run]"
        return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def payload(self) -> dict[str, Any]:
        """The JSON body: Slack's ``text`` plus the cycle's details for machines."""
        return {
            "text": self.text(),
            "policy": self.policy,
            "app": self.app,
            "app_id": self.app_id,
            "cycle": self.cycle,
            "dry_run": self.dry_run,
            "aborted": self.aborted,
            "sessions": [o.session_id for o in self.outcomes if o.session_id is not None],
            "outcomes": [
                {
                    "action": o.action,
                    "session_id": o.session_id,
                    "outcome": o.outcome,
                    "error": o.error,
                }
                for o in self.outcomes
            ],
        }


class Notifier:
    """Sends notifications from a bounded queue, one at a time, in its own worker task.

    ``submit()`` may be called before ``run()`` starts (entries wait in the queue). ``run()``
    runs once: when it ends, queued entries are counted as dropped and later submits drop.
    ``sent``, ``failed`` and ``dropped`` count deliveries (one per target).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        poster: Poster,
        retries: int = 2,
        backoff_seconds: float = 1.0,
        max_pending: int = 100,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if not backoff_seconds >= 0:
            raise ValueError("backoff_seconds must be >= 0")
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self._clock = clock
        self._poster = poster
        self._retries = retries
        self._backoff_seconds = backoff_seconds
        self._max_pending = max_pending
        self._send, self._receive = anyio.create_memory_object_stream[
            tuple[NotifyTarget, Notification]
        ](max_pending)
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def __del__(self) -> None:
        # A Notifier that never ran still owns both ends of its queue, and anyio warns about
        # unclosed streams when they are collected; closing them here keeps that quiet, so a
        # test (or a daemon that failed to start) may create one without running it.
        for stream in (getattr(self, "_send", None), getattr(self, "_receive", None)):
            if stream is not None:
                stream.close()

    def __repr__(self) -> str:
        return (
            f"Notifier(sent={self.sent}, failed={self.failed}, dropped={self.dropped}, "
            f"max_pending={self._max_pending})"
        )

    def submit(self, targets: Sequence[NotifyTarget], notification: Notification) -> bool:
        """Queue ``notification`` for each target without waiting; False if any was dropped.

        Never blocks and never raises: an entry that finds the queue full (or the worker
        gone) is dropped, logged as ``notification_dropped`` and counted.
        """
        queued = True
        for target in targets:
            try:
                self._send.send_nowait((target, notification))
            except anyio.WouldBlock:
                self._drop(target, notification, "queue_full")
                queued = False
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(target, notification, "stopped")
                queued = False
        return queued

    def _drop(self, target: NotifyTarget, notification: Notification, reason: str) -> None:
        self.dropped += 1
        log.warning(
            "notification_dropped",
            reason=reason,
            url=redact_url(target.url),
            policy=notification.policy,
            app=notification.app,
            cycle=notification.cycle,
            max_pending=self._max_pending,
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Send queued notifications one by one until cancelled; close the poster on exit."""
        try:
            task_status.started()
            async for target, notification in self._receive:
                await self._deliver(target, notification)
        finally:
            # Entries still queued are never sent; closing the receiving end makes later
            # submits drop at once instead of filling a queue nobody reads.
            if abandoned := self._receive.statistics().current_buffer_used:
                self.dropped += abandoned
                log.warning("notifications_abandoned", pending=abandoned)
            self._receive.close()
            self._send.close()
            with anyio.move_on_after(_CLOSE_SECONDS, shield=True):
                await self._poster.aclose()

    async def _deliver(self, target: NotifyTarget, notification: Notification) -> None:
        """All attempts for one target; the outcome is counted and logged, never raised."""
        fields = {
            "url": redact_url(target.url),
            "policy": notification.policy,
            "app": notification.app,
            "cycle": notification.cycle,
        }
        attempt = 0
        while True:
            try:
                result = await self._poster.post(target, notification.payload())
            except Exception as exc:  # noqa: BLE001 — one bad target must not stop the worker
                result = Delivery("invalid", retryable=False, error=type(exc).__name__)
            attempt += 1
            if result.reason == "sent":
                self.sent += 1
                log.info("notification_sent", status=result.status, attempts=attempt, **fields)
                return
            if not result.retryable or attempt > self._retries:
                self.failed += 1
                log.warning(
                    "notification_failed",
                    reason=result.reason,
                    status=result.status,
                    error=result.error,
                    attempts=attempt,
                    **fields,
                )
                return
            delay = self._backoff_seconds * 2 ** (attempt - 1)
            if result.retry_after_seconds is not None:
                delay = max(delay, min(result.retry_after_seconds, MAX_RETRY_AFTER_SECONDS))
            log.debug(
                "notification_retrying",
                reason=result.reason,
                status=result.status,
                error=result.error,
                attempts=attempt,
                delay_seconds=delay,
                **fields,
            )
            await self._clock.sleep(delay)
