"""The dialog probes' metrics (``duixwatch_dialog_probe_*``), blackbox_exporter's way.

``success`` and the phase durations describe the last run (absent until there is one, a phase
absent when the run did not reach it: no fake zeros); the histogram and the counters count
every run, failures by the one reason each failed run had. :meth:`ProbeMetrics.set_probes`
publishes the configured budget and interval, starts every failure reason at 0 (so that
``increase()`` sees the first), and drops every series of a probe a reload removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

from duixwatch.dialog.contract import FAILURE_REASONS
from duixwatch.dialog.prober import ProbeResult
from duixwatch.dialog.schema import DialogProbeConfig

__all__ = ["PHASES", "TOTAL_DURATION_BUCKETS", "ProbeMetrics"]

PHASES: Final = ("first_byte", "first_answer", "total")
#: Seconds; around DUIX's 20 s budget (16 = 80 % of it, where DuixDialogSlow looks).
TOTAL_DURATION_BUCKETS: Final = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 20.0, 30.0, 60.0)


class ProbeMetrics:
    """Every ``duixwatch_dialog_probe_*`` metric, on the daemon's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._probes: set[str] = set()
        self._success = Gauge(
            "duixwatch_dialog_probe_success",
            "1 if the last run of the dialog probe passed every rule (warnings pass), else 0.",
            ["probe"],
            registry=registry,
        )
        self._duration = Gauge(
            "duixwatch_dialog_probe_duration_seconds",
            "Last run of the dialog probe: time to the response headers (first_byte), to the "
            "first non-empty answer (first_answer) and to the end of the answer (total).",
            ["probe", "phase"],
            registry=registry,
            unit="seconds",
        )
        self._total = Histogram(
            "duixwatch_dialog_probe_total_duration_seconds",
            "Time to the end of the answer, every run that got one (seconds).",
            ["probe"],
            registry=registry,
            buckets=TOTAL_DURATION_BUCKETS,
            unit="seconds",
        )
        self._runs = Counter(
            "duixwatch_dialog_probe_runs_total",
            "Runs of the dialog probe.",
            ["probe"],
            registry=registry,
        )
        self._failures = Counter(
            "duixwatch_dialog_probe_failures_total",
            "Failed runs of the dialog probe by the first cause: timeout, connect, "
            "http_status, malformed, contract, over_budget.",
            ["probe", "reason"],
            registry=registry,
        )
        self._last_success = Gauge(
            "duixwatch_dialog_probe_last_success_timestamp_seconds",
            "When the dialog probe last passed (Unix time).",
            ["probe"],
            registry=registry,
            unit="seconds",
        )
        self._chunks = Gauge(
            "duixwatch_dialog_probe_answer_chunks",
            "Answer chunks of the last run (1 for a JSON envelope).",
            ["probe"],
            registry=registry,
        )
        self._bytes = Gauge(
            "duixwatch_dialog_probe_answer_bytes",
            "UTF-8 bytes of the last run's answer text.",
            ["probe"],
            registry=registry,
            unit="bytes",
        )
        self._budget = Gauge(
            "duixwatch_dialog_probe_budget_seconds",
            "The answer budget of the dialog probe (DUIX waits 20 s).",
            ["probe"],
            registry=registry,
            unit="seconds",
        )
        self._interval = Gauge(
            "duixwatch_dialog_probe_interval_seconds",
            "How often the dialog probe runs.",
            ["probe"],
            registry=registry,
            unit="seconds",
        )

    def set_probes(self, probes: Sequence[DialogProbeConfig]) -> None:
        names = {p.name for p in probes}
        for gone in self._probes - names:
            self._forget(gone)
        for probe in probes:
            self._budget.labels(probe.name).set(probe.budget_seconds)
            self._interval.labels(probe.name).set(probe.interval_seconds)
            self._runs.labels(probe.name)
            for reason in FAILURE_REASONS:
                self._failures.labels(probe.name, reason)
        self._probes = names

    def _forget(self, probe: str) -> None:
        for metric in (
            self._success,
            self._total,
            self._runs,
            self._last_success,
            self._chunks,
            self._bytes,
            self._budget,
            self._interval,
        ):
            _remove(metric, probe)
        for phase in PHASES:
            _remove(self._duration, probe, phase)
        for reason in FAILURE_REASONS:
            _remove(self._failures, probe, reason)

    def probe_finished(self, result: ProbeResult) -> None:
        probe = result.probe
        if probe not in self._probes:
            return  # a run that ended after a reload removed its probe
        self._runs.labels(probe).inc()
        self._success.labels(probe).set(1 if result.success else 0)
        if result.success:
            self._last_success.labels(probe).set(result.at.timestamp())
        elif result.reason is not None:
            self._failures.labels(probe, result.reason).inc()
        phases = (result.first_byte_seconds, result.first_answer_seconds, result.total_seconds)
        for phase, value in zip(PHASES, phases, strict=True):
            if value is None:
                _remove(self._duration, probe, phase)
            else:
                self._duration.labels(probe, phase).set(value)
        if result.total_seconds is not None:
            self._total.labels(probe).observe(result.total_seconds)
        self._chunks.labels(probe).set(result.chunks)
        self._bytes.labels(probe).set(result.answer_bytes)


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        return  # never created: nothing to drop
