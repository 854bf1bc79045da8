"""The daemon's dialog probes: each configured probe asks its backend on its own schedule.

:class:`Prober` runs one task per probe in its own task group (started in the daemon's with
``await tg.start(prober.run)``, a :class:`~duixwatch.core.tasks.KeyedTasks`);
:meth:`Prober.apply` starts, stops and restarts them to match a
(re)loaded config — a probe whose settings did not change keeps its schedule and its
conversation. A probe runs every ``interval_seconds`` measured from the start of the previous
run (a run longer than the interval delays the next, never stacks them), its first run at a
random offset within ``min(interval, 10 s)`` so that probes started together do not ask
together. At most ``max_concurrent`` runs are in flight across all probes: a slow backend holds
one slot for at most its own timeout, and the platform polls, which share only the event loop,
are never waited on. Each run asks the next question in turn, with the probe's last turns as
``dh-context``, and hands its :class:`ProbeResult` to the injected observer (the metrics) and
keeps the last one per probe (``/status``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from duixwatch.core.clock import Clock
from duixwatch.core.fields import redact_url
from duixwatch.core.tasks import KeyedTasks
from duixwatch.dialog import contract
from duixwatch.dialog.contract import RuleResult, Turn
from duixwatch.dialog.exchange import HISTORY_TURNS, Asked, Target, ask, new_client
from duixwatch.dialog.schema import DialogProbeConfig

__all__ = ["ClientFactory", "ProbeObserver", "ProbeResult", "Prober", "result_of", "target_of"]

log = structlog.get_logger("duixwatch.dialog.prober")

#: The first run of a probe is at a random offset within this (or its interval, if shorter).
FIRST_RUN_SPREAD_SECONDS = 10.0

#: Makes the HTTP client of a probe (tests pass one over an in-process transport).
ClientFactory = Callable[[DialogProbeConfig], httpx.AsyncClient]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One run of a probe, as the metrics and ``/status`` see it (no header, no URL path)."""

    probe: str
    at: datetime
    question: str
    success: bool
    reason: contract.Reason | None
    #: The rule that failed for ``reason`` (``None`` on success).
    failed_rule: RuleResult | None
    status: int | None
    first_byte_seconds: float | None
    first_answer_seconds: float | None
    total_seconds: float | None
    chunks: int
    answer_bytes: int
    warnings: tuple[RuleResult, ...] = ()


class ProbeObserver(Protocol):
    def probe_finished(self, result: ProbeResult) -> None: ...


def target_of(probe: DialogProbeConfig) -> Target:
    return Target(
        url=probe.url,
        mode=probe.mode,
        headers=dict(probe.headers),
        sid=probe.sid,
        dh_code=probe.dh_code,
        conversation_id=probe.conversation_id,
        budget_seconds=probe.budget_seconds,
        timeout_seconds=probe.timeout,
        server_name=probe.tls.server_name,
    )


def result_of(probe: str, asked: Asked, *, at: datetime) -> ProbeResult:
    rules = asked.outcome.rules
    reason = asked.failure_reason
    failed = next((r for r in rules if r.verdict == "FAIL" and r.reason == reason), None)
    return ProbeResult(
        probe=probe,
        at=at,
        question=asked.question,
        success=reason is None,
        reason=reason,
        failed_rule=failed,
        status=asked.exchange.status,
        first_byte_seconds=asked.exchange.first_byte,
        first_answer_seconds=asked.outcome.first_answer,
        total_seconds=asked.outcome.total,
        chunks=asked.outcome.chunks,
        answer_bytes=len(asked.outcome.answer.encode()),
        warnings=tuple(r for r in rules if r.verdict == "WARN"),
    )


def _default_client(probe: DialogProbeConfig) -> httpx.AsyncClient:
    tls = probe.tls
    plain = tls.ca_file is None and tls.cert_file is None and not tls.insecure_skip_verify
    return new_client(verify=True if plain else tls.ssl_context())


class Prober:
    """Every configured probe, on its schedule, bounded in concurrency."""

    def __init__(
        self,
        *,
        clock: Clock,
        observer: ProbeObserver,
        rng: random.Random | None = None,
        max_concurrent: int = 4,
        client_factory: ClientFactory = _default_client,
    ) -> None:
        self._clock = clock
        self._observer = observer
        self._rng = rng or random.Random()
        self._slots = anyio.CapacityLimiter(max_concurrent)
        self._client_factory = client_factory
        self._tasks: KeyedTasks[DialogProbeConfig] = KeyedTasks(self._loop)
        #: The last result of each configured probe.
        self.results: dict[str, ProbeResult] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the probes' task group until cancelled."""
        await self._tasks.run(task_status=task_status)

    def apply(self, probes: Sequence[DialogProbeConfig]) -> None:
        """Start, stop or restart probe tasks to match ``probes`` (after :meth:`run` started)."""
        wanted = {p.name: p for p in probes}
        for name in list(self.results):
            if name not in wanted:
                del self.results[name]
        self._tasks.apply(wanted)

    async def _loop(self, config: DialogProbeConfig) -> None:
        try:
            client = self._client_factory(config)
        except (OSError, ValueError) as exc:  # checked at load; the files may change since
            await self._unusable(config, exc)
            return
        async with client:
            await self._clock.sleep(
                self._rng.uniform(0, min(config.interval_seconds, FIRST_RUN_SPREAD_SECONDS))
            )
            turn = 0
            history: list[Turn] = []
            while True:
                started = self._clock.monotonic()
                text = config.questions[turn % len(config.questions)]
                asked = await self._once(client, config, text, history)
                history = [*history, Turn(text, asked.outcome.answer)][-HISTORY_TURNS:]
                turn += 1
                elapsed = self._clock.monotonic() - started
                await self._clock.sleep(config.interval_seconds - elapsed)

    async def _unusable(self, config: DialogProbeConfig, exc: Exception) -> None:
        """The probe's TLS files no longer load: a failed run every interval (so that its
        alert fires) until a reload fixes it, logged once."""
        log.error("dialog_probe_unusable", probe=config.name, error=type(exc).__name__)
        rule = RuleResult("transport", "FAIL", f"TLS files: {type(exc).__name__}", "connect")
        while True:
            result = ProbeResult(
                probe=config.name,
                at=self._clock.now(),
                question="",
                success=False,
                reason="connect",
                failed_rule=rule,
                status=None,
                first_byte_seconds=None,
                first_answer_seconds=None,
                total_seconds=None,
                chunks=0,
                answer_bytes=0,
            )
            self.results[config.name] = result
            self._observer.probe_finished(result)
            await self._clock.sleep(config.interval_seconds)

    async def _once(
        self, client: httpx.AsyncClient, config: DialogProbeConfig, text: str, history: list[Turn]
    ) -> Asked:
        async with self._slots:
            asked = await ask(client, target_of(config), text, history=history)
        result = result_of(config.name, asked, at=self._clock.now())
        self.results[config.name] = result
        self._observer.probe_finished(result)
        fields: dict[str, Any] = {
            "probe": config.name,
            "target": redact_url(config.url),
            "total_seconds": result.total_seconds,
        }
        if result.success:
            log.debug("dialog_probe_passed", **fields)
        else:
            failed = result.failed_rule
            log.warning(
                "dialog_probe_failed",
                **fields,
                reason=result.reason,
                rule=failed.rule if failed else None,
                detail=failed.detail if failed else None,
            )
        return asked
