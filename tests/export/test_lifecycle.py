"""export.lifecycle: the fast text is what prometheus_client writes, in both formats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import CollectorRegistry

from duixwatch.core import models
from duixwatch.export.lifecycle import LifecycleCollector
from duixwatch.watch.lifecycle import Lifecycles

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def snap(app: str, at: float, *ids: str) -> models.AppSnapshot:
    sessions = tuple(models.Session(i, first_seen_at=T0) for i in ids)
    return models.AppSnapshot(
        app=app,
        app_id="1",
        poll_interval_seconds=15,
        fetched_at=T0 + timedelta(seconds=at),
        sessions=models.SessionList(sessions=sessions, shape="test"),
    )


def lifecycles() -> Lifecycles:
    lives = Lifecycles()
    lives.set_apps(["desk", 'odd"app\\', "idle"])
    for at, ids in ((0, ("a", "b", "c")), (15, ("b",)), (4000, ())):
        lives.observe(snap("desk", at, *ids))
        lives.observe(snap('odd"app\\', at, *ids[:1]))
    lives.stopped("desk", "b", "p", T0)
    lives.observe(snap("desk", 4100))
    return lives


def test_the_fast_text_equals_prometheus_clients_in_both_formats() -> None:
    collector = LifecycleCollector(lifecycles())
    registry = CollectorRegistry()
    registry.register(collector)
    assert b"".join(collector.exposition(False)) == generate_latest(registry)
    fast = b"".join(collector.exposition(True))
    assert fast + b"# EOF\n" == openmetrics_latest(registry)


def test_counters_from_the_first_poll_and_the_histogram_after_the_first_end() -> None:
    registry = CollectorRegistry()
    registry.register(LifecycleCollector(lifecycles()))
    get = registry.get_sample_value
    assert get("duix_app_sessions_started_total", {"app": "idle"}) == 0
    assert get("duix_app_sessions_ended_total", {"app": "idle", "closed_by": "platform"}) == 0
    assert get("duix_app_session_duration_seconds_count", {"app": "idle"}) is None
    assert get("duix_app_sessions_started_total", {"app": "desk"}) == 3
    assert get("duix_app_sessions_ended_total", {"app": "desk", "closed_by": "platform"}) == 3
    assert get("duix_app_session_duration_seconds_count", {"app": "desk"}) == 3
    assert get("duix_app_session_duration_seconds_bucket", {"app": "desk", "le": "60.0"}) == 3
