"""export.probes: the dialog probes' metrics — last run, counters, no fake zeros, reloads."""

from __future__ import annotations

from datetime import UTC, datetime

from duixwatch.dialog.contract import FAILURE_REASONS, RuleResult
from duixwatch.dialog.prober import ProbeResult
from duixwatch.dialog.schema import DialogProbeConfig
from duixwatch.export.exposition import Registry, render
from duixwatch.export.probes import ProbeMetrics

AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def probe(name: str = "bot", **kw: object) -> DialogProbeConfig:
    return DialogProbeConfig.model_validate({"name": name, "url": "https://b.example/x", **kw})


def result(name: str = "bot", **kw: object) -> ProbeResult:
    fields: dict[str, object] = {
        "probe": name,
        "at": AT,
        "question": "Hello",
        "success": True,
        "reason": None,
        "failed_rule": None,
        "status": 200,
        "first_byte_seconds": 0.1,
        "first_answer_seconds": 0.4,
        "total_seconds": 1.5,
        "chunks": 3,
        "answer_bytes": 12,
    }
    fields.update(kw)
    return ProbeResult(**fields)  # type: ignore[arg-type]


def value(registry: Registry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_configured_probes_publish_their_settings_and_zeroed_failures() -> None:
    registry = Registry()
    m = ProbeMetrics(registry)
    m.set_probes([probe(budget_seconds=15, interval_seconds=30)])
    assert value(registry, "duixwatch_dialog_probe_budget_seconds", probe="bot") == 15
    assert value(registry, "duixwatch_dialog_probe_interval_seconds", probe="bot") == 30
    for reason in FAILURE_REASONS:
        assert (
            value(registry, "duixwatch_dialog_probe_failures_total", probe="bot", reason=reason)
            == 0
        )
    # no run yet: no success value, no durations (never a fake 0)
    assert value(registry, "duixwatch_dialog_probe_success", probe="bot") is None
    assert (
        value(registry, "duixwatch_dialog_probe_duration_seconds", probe="bot", phase="total")
        is None
    )


def test_a_passing_run() -> None:
    registry = Registry()
    m = ProbeMetrics(registry)
    m.set_probes([probe()])
    m.probe_finished(result())
    assert value(registry, "duixwatch_dialog_probe_success", probe="bot") == 1
    assert value(registry, "duixwatch_dialog_probe_runs_total", probe="bot") == 1
    assert (
        value(registry, "duixwatch_dialog_probe_last_success_timestamp_seconds", probe="bot")
        == AT.timestamp()
    )
    for phase, seconds in (("first_byte", 0.1), ("first_answer", 0.4), ("total", 1.5)):
        assert (
            value(registry, "duixwatch_dialog_probe_duration_seconds", probe="bot", phase=phase)
            == seconds
        )
    assert (
        value(
            registry, "duixwatch_dialog_probe_total_duration_seconds_bucket", probe="bot", le="1.0"
        )
        == 0
    )
    assert (
        value(
            registry, "duixwatch_dialog_probe_total_duration_seconds_bucket", probe="bot", le="2.0"
        )
        == 1
    )
    assert value(registry, "duixwatch_dialog_probe_answer_chunks", probe="bot") == 3
    assert value(registry, "duixwatch_dialog_probe_answer_bytes", probe="bot") == 12


def test_a_failed_run_counts_its_reason_and_drops_the_phases_it_did_not_reach() -> None:
    registry = Registry()
    m = ProbeMetrics(registry)
    m.set_probes([probe()])
    m.probe_finished(result())
    m.probe_finished(
        result(
            success=False,
            reason="timeout",
            failed_rule=RuleResult("transport", "FAIL", "no answer", "timeout"),
            first_answer_seconds=None,
            total_seconds=None,
            chunks=0,
            answer_bytes=0,
        )
    )
    assert value(registry, "duixwatch_dialog_probe_success", probe="bot") == 0
    assert (
        value(registry, "duixwatch_dialog_probe_failures_total", probe="bot", reason="timeout") == 1
    )
    assert value(registry, "duixwatch_dialog_probe_runs_total", probe="bot") == 2
    assert (
        value(registry, "duixwatch_dialog_probe_duration_seconds", probe="bot", phase="first_byte")
        == 0.1
    )
    assert (
        value(registry, "duixwatch_dialog_probe_duration_seconds", probe="bot", phase="total")
        is None
    )
    # the last success stays what it was
    assert (
        value(registry, "duixwatch_dialog_probe_last_success_timestamp_seconds", probe="bot")
        == AT.timestamp()
    )
    assert value(registry, "duixwatch_dialog_probe_total_duration_seconds_count", probe="bot") == 1


def test_a_reload_that_removes_a_probe_drops_every_series_of_it() -> None:
    registry = Registry()
    m = ProbeMetrics(registry)
    m.set_probes([probe("bot"), probe("other")])
    m.probe_finished(result("bot"))
    m.probe_finished(result("other"))
    m.set_probes([probe("other")])
    text = b"".join(render(registry, None)[0]).decode()
    assert 'probe="bot"' not in text
    assert 'probe="other"' in text
    m.probe_finished(result("bot"))  # a straggler of the removed probe
    assert 'probe="bot"' not in b"".join(render(registry, None)[0]).decode()
