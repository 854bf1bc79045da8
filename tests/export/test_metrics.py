"""metrics: platform values are exported only while true; daemon values; the exposition."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from duixwatch.core import models
from duixwatch.export import apps, exposition, metrics
from duixwatch.export.exposition import Registry
from duixwatch.http import server
from tests.fakes import FakeClock
from tests.tools import require_tool

INTERVAL = 15.0
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"

#: The series of an app whose snapshot is fresh with a polled session list.
FRESH_SERIES = {
    "duix_up",
    "duix_app_concurrency_total_number",
    "duix_app_concurrency_user",
    "duix_app_sessions",
    "duix_app_oldest_session_age_seconds",
    "duix_app_session_age_seconds_bucket",
    "duix_app_session_age_seconds_gcount",
    "duix_app_session_age_seconds_gsum",
    "duix_app_last_poll_success_timestamp_seconds",
    "duixwatch_app_consecutive_poll_failures",
    "duixwatch_app_poll_interval_seconds",
}
#: The series every snapshot has, whatever its state.
ALWAYS_SERIES = {
    "duix_up",
    "duixwatch_app_consecutive_poll_failures",
    "duixwatch_app_poll_interval_seconds",
}


class Store:
    """A stand-in for the daemon's snapshot store: app name -> latest snapshot."""

    def __init__(self) -> None:
        self.snapshots: dict[str, models.AppSnapshot] = {}

    def put(self, *snapshots: models.AppSnapshot) -> None:
        for snapshot in snapshots:
            self.snapshots[snapshot.app] = snapshot

    def __call__(self) -> Iterable[models.AppSnapshot]:
        return list(self.snapshots.values())


@pytest.fixture
def registry() -> CollectorRegistry:
    return Registry()


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def m(registry: CollectorRegistry, store: Store, clock: FakeClock) -> metrics.Metrics:
    return metrics.Metrics(registry, snapshots=store, clock=clock, version="1.2.3")


def ago(clock: FakeClock, seconds: float) -> datetime:
    return clock.now() - timedelta(seconds=seconds)


def sessions(*items: models.Session) -> models.SessionList:
    return models.SessionList(sessions=items, shape="data.records[] id=sessionId")


def snapshot(
    clock: FakeClock,
    app: str,
    *,
    fetched_seconds_ago: float | None = 5.0,
    concurrency: models.Concurrency | None = None,
    session_list: models.SessionList | None = None,
    failed: str | None = None,
    consecutive_failures: int = 0,
) -> models.AppSnapshot:
    """A snapshot as the watcher would store it; ``failed`` is the latest poll's error reason."""
    fetched_at = None if fetched_seconds_ago is None else ago(clock, fetched_seconds_ago)
    return models.AppSnapshot(
        app=app,
        app_id=f"17000000000000000{len(app):02d}",
        poll_interval_seconds=INTERVAL,
        fetched_at=fetched_at,
        concurrency=concurrency
        if concurrency is not None or fetched_at is None
        else models.Concurrency(corp_id="c1", total_concurrent_number=10, user_concurrent_number=4),
        sessions=session_list,
        error=None if failed is None else models.PollError(failed, "boom", at=clock.now()),
        last_attempt_at=clock.now(),
        consecutive_failures=consecutive_failures,
    )


def exposed(registry: CollectorRegistry, app: str) -> set[str]:
    """Names of the samples labelled ``app=<app>`` in the registry's text exposition.

    prometheus_client's own encoder: test_exposition.py shows Metrics.render writes the same.
    """
    body = generate_latest(registry)
    return {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.labels.get("app") == app
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# --------------------------------------------------------------------------- platform values


def test_fresh_app_exports_every_value_with_exact_numbers(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    store.put(
        snapshot(
            clock,
            "frontdesk",
            concurrency=models.Concurrency(
                corp_id="c1", total_concurrent_number=20, user_concurrent_number=7
            ),
            session_list=sessions(
                models.Session("1", started_at=ago(clock, 30)),
                models.Session("2", started_at=ago(clock, 120)),
                models.Session("3", started_at=ago(clock, 700)),
                models.Session("4", started_at=ago(clock, 4000)),
                models.Session("5", started_at=ago(clock, 90_000)),
                models.Session("6", first_seen_at=ago(clock, 10)),  # age from first sight
                models.Session("7"),  # age unknown: counted, not in the histogram
            ),
        )
    )

    assert value(registry, "duix_up", app="frontdesk") == 1.0
    assert value(registry, "duix_app_concurrency_total_number", app="frontdesk") == 20.0
    assert value(registry, "duix_app_concurrency_user", app="frontdesk") == 7.0
    assert value(registry, "duix_app_sessions", app="frontdesk") == 7.0
    assert value(registry, "duix_app_oldest_session_age_seconds", app="frontdesk") == 90_000.0
    assert value(
        registry, "duix_app_last_poll_success_timestamp_seconds", app="frontdesk"
    ) == pytest.approx(ago(clock, 5).timestamp())
    buckets = {
        le: value(registry, "duix_app_session_age_seconds_bucket", app="frontdesk", le=le)
        for le in ("60.0", "300.0", "600.0", "900.0", "3600.0", "7200.0", "86400.0", "+Inf")
    }
    assert buckets == {
        "60.0": 2.0,
        "300.0": 3.0,
        "600.0": 3.0,
        "900.0": 4.0,
        "3600.0": 4.0,
        "7200.0": 5.0,
        "86400.0": 5.0,
        "+Inf": 6.0,
    }
    assert value(registry, "duix_app_session_age_seconds_gcount", app="frontdesk") == 6.0
    assert value(registry, "duix_app_session_age_seconds_gsum", app="frontdesk") == (
        10 + 30 + 120 + 700 + 4000 + 90_000
    )
    assert value(registry, "duixwatch_app_poll_interval_seconds", app="frontdesk") == INTERVAL
    assert value(registry, "duixwatch_app_consecutive_poll_failures", app="frontdesk") == 0.0
    assert value(registry, "duixwatch_apps") == 1.0
    assert exposed(registry, "frontdesk") == FRESH_SERIES


def test_session_age_buckets_are_the_documented_bounds() -> None:
    assert apps.SESSION_AGE_BUCKETS == (
        60.0,
        300.0,
        600.0,
        900.0,
        1800.0,
        2700.0,
        3600.0,
        7200.0,
        14400.0,
        28800.0,
        86400.0,
    )


def test_session_age_histogram_has_every_bucket_cumulative(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    store.put(
        snapshot(clock, "a", session_list=sessions(models.Session("1", started_at=ago(clock, 60))))
    )
    families = {family.name: family for family in registry.collect()}
    histogram = families["duix_app_session_age_seconds"]
    assert histogram.type == "gaugehistogram"
    buckets = [s for s in histogram.samples if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == [
        *(str(bound) for bound in apps.SESSION_AGE_BUCKETS),
        "+Inf",
    ]
    # Upper bounds are inclusive: a session exactly 60 s old is in le="60.0".
    assert [s.value for s in buckets] == [1.0] * 12


def test_failed_app_exports_up_0_and_its_last_success_but_no_values(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    store.put(
        snapshot(
            clock,
            "down",
            fetched_seconds_ago=20,
            session_list=sessions(models.Session("1", started_at=ago(clock, 100))),
            failed="server",
            consecutive_failures=3,
        )
    )

    assert value(registry, "duix_up", app="down") == 0.0
    assert value(
        registry, "duix_app_last_poll_success_timestamp_seconds", app="down"
    ) == pytest.approx(ago(clock, 20).timestamp())
    assert value(registry, "duixwatch_app_consecutive_poll_failures", app="down") == 3.0
    assert exposed(registry, "down") == ALWAYS_SERIES | {
        "duix_app_last_poll_success_timestamp_seconds"
    }


def test_stale_app_is_exported_like_a_failed_one(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    """Data older than 2 x the poll interval is stale, even though its poll succeeded."""
    store.put(
        snapshot(
            clock,
            "slow",
            fetched_seconds_ago=0,
            session_list=sessions(models.Session("1", started_at=ago(clock, 100))),
        )
    )
    clock.advance(2 * INTERVAL)  # exactly on the limit: still fresh
    assert value(registry, "duix_up", app="slow") == 1.0
    assert exposed(registry, "slow") == FRESH_SERIES

    clock.advance(0.001)
    assert value(registry, "duix_up", app="slow") == 0.0
    assert exposed(registry, "slow") == ALWAYS_SERIES | {
        "duix_app_last_poll_success_timestamp_seconds"
    }
    assert value(
        registry, "duix_app_last_poll_success_timestamp_seconds", app="slow"
    ) == pytest.approx(ago(clock, 2 * INTERVAL + 0.001).timestamp())


def test_app_never_polled_successfully_exports_up_0_only(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    store.put(snapshot(clock, "new", fetched_seconds_ago=None))
    store.put(snapshot(clock, "refused", fetched_seconds_ago=None, failed="auth"))

    for app in ("new", "refused"):
        assert value(registry, "duix_up", app=app) == 0.0
        assert exposed(registry, app) == ALWAYS_SERIES


def test_app_without_session_list_exports_no_session_series(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    store.put(snapshot(clock, "numbers-only", session_list=None))

    assert value(registry, "duix_up", app="numbers-only") == 1.0
    assert value(registry, "duix_app_concurrency_total_number", app="numbers-only") == 10.0
    assert exposed(registry, "numbers-only") == {
        *ALWAYS_SERIES,
        "duix_app_concurrency_total_number",
        "duix_app_concurrency_user",
        "duix_app_last_poll_success_timestamp_seconds",
    }


def test_zero_sessions_is_a_true_0_but_has_no_oldest_age(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    store.put(snapshot(clock, "quiet", session_list=sessions()))

    assert value(registry, "duix_app_sessions", app="quiet") == 0.0
    assert value(registry, "duix_app_session_age_seconds_gcount", app="quiet") == 0.0
    assert value(registry, "duix_app_session_age_seconds_gsum", app="quiet") == 0.0
    assert exposed(registry, "quiet") == FRESH_SERIES - {"duix_app_oldest_session_age_seconds"}


def test_sessions_with_unknown_ages_have_no_oldest_age(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    store.put(snapshot(clock, "legacy", session_list=sessions(models.Session("1"))))

    assert value(registry, "duix_app_sessions", app="legacy") == 1.0
    assert value(registry, "duix_app_oldest_session_age_seconds", app="legacy") is None
    assert value(registry, "duix_app_session_age_seconds_gcount", app="legacy") == 0.0


def test_removing_an_app_from_the_snapshots_removes_all_its_series(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    session_list = sessions(models.Session("1", started_at=ago(clock, 100)))
    store.put(
        snapshot(clock, "kept", session_list=session_list),
        snapshot(clock, "gone", session_list=session_list),
    )
    m.set_apps(["kept", "gone"])
    m.poll_failed("gone", "timeout")
    assert exposed(registry, "gone") >= FRESH_SERIES
    assert value(registry, "duixwatch_apps") == 2.0

    del store.snapshots["gone"]
    m.set_apps(["kept"])

    assert exposed(registry, "gone") == set()
    assert exposed(registry, "kept") >= FRESH_SERIES
    assert value(registry, "duixwatch_apps") == 1.0


# --------------------------------------------------------------------------- daemon values


def test_poll_failed_counts_by_app_and_reason(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    m.poll_failed("a", "timeout")
    m.poll_failed("a", "timeout")
    m.poll_failed("b", "auth")

    assert value(registry, "duixwatch_poll_errors_total", app="a", reason="timeout") == 2.0
    assert value(registry, "duixwatch_poll_errors_total", app="b", reason="auth") == 1.0


def test_set_apps_starts_poll_errors_at_0_for_every_reason(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    """So that increase() sees an app's very first error."""
    m.set_apps(["a"])

    for reason in ("auth", "quota", "server", "client", "timeout", "transport", "malformed"):
        assert value(registry, "duixwatch_poll_errors_total", app="a", reason=reason) == 0.0


def test_set_apps_drops_per_app_children_of_removed_apps(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    m.set_apps(["kept", "gone"])
    for app in ("kept", "gone"):
        m.poll_failed(app, "server")
        m.policy_matched(app, "max-age", 3)
        m.policy_action(app, "max-age", "stop", "stopped")
        m.policy_aborted(app, "max-age", "max_actions")

    m.set_apps(["kept"])

    assert value(registry, "duixwatch_poll_errors_total", app="gone", reason="server") is None
    assert (
        value(registry, "duixwatch_policy_matched_sessions", app="gone", policy="max-age") is None
    )
    assert (
        value(
            registry,
            "duixwatch_policy_actions_total",
            app="gone",
            policy="max-age",
            action="stop",
            outcome="stopped",
        )
        is None
    )
    assert (
        value(
            registry,
            "duixwatch_policy_aborts_total",
            app="gone",
            policy="max-age",
            reason="max_actions",
        )
        is None
    )
    assert exposed(registry, "gone") == set()
    assert value(registry, "duixwatch_poll_errors_total", app="kept", reason="server") == 1.0
    assert value(registry, "duixwatch_policy_matched_sessions", app="kept", policy="max-age") == 3.0


def test_late_calls_for_a_removed_app_do_not_bring_its_series_back(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    """A poll still in flight when a reload removed its app must not leave a zombie series."""
    m.set_apps(["gone"])
    m.set_apps([])

    m.poll_failed("gone", "timeout")
    m.policy_matched("gone", "p", 1)
    m.policy_action("gone", "p", "stop", "stopped")
    m.policy_aborted("gone", "p", "stale_data")

    assert exposed(registry, "gone") == set()


def test_calls_for_an_app_added_before_set_apps_names_it_are_recorded(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    """A reload may start the new app's loop before it declares the new set of apps."""
    m.set_apps(["old"])
    m.poll_failed("new", "auth")
    m.set_apps(["old", "new"])

    assert value(registry, "duixwatch_poll_errors_total", app="new", reason="auth") == 1.0
    assert value(registry, "duixwatch_poll_errors_total", app="new", reason="quota") == 0.0


def test_an_app_removed_then_added_again_is_recorded_again(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    m.set_apps(["a"])
    m.set_apps([])
    m.set_apps(["a"])
    m.poll_failed("a", "server")

    assert value(registry, "duixwatch_poll_errors_total", app="a", reason="server") == 1.0


def test_policy_metrics_record_matches_actions_and_aborts(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    m.policy_matched("a", "max-age", 5)
    m.policy_matched("a", "max-age", 2)  # a gauge: the latest evaluation
    m.policy_action("a", "max-age", "stop", "dry_run")
    m.policy_action("a", "max-age", "stop", "dry_run")
    m.policy_aborted("a", "max-age", "max_percent")

    assert value(registry, "duixwatch_policy_matched_sessions", app="a", policy="max-age") == 2.0
    assert (
        value(
            registry,
            "duixwatch_policy_actions_total",
            app="a",
            policy="max-age",
            action="stop",
            outcome="dry_run",
        )
        == 2.0
    )
    assert (
        value(
            registry,
            "duixwatch_policy_aborts_total",
            app="a",
            policy="max-age",
            reason="max_percent",
        )
        == 1.0
    )


def test_observe_request_counts_attempts_and_their_durations(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    m.observe_request("getconcurrentList", "success", 0.02)
    m.observe_request("getconcurrentList", "success", 0.3)
    m.observe_request("getconcurrentList", "timeout", 10.0)
    m.observe_request("sessionStop", "success", 0.004)

    requests = "duixwatch_api_requests_total"
    assert value(registry, requests, endpoint="getconcurrentList", outcome="success") == 2.0
    assert value(registry, requests, endpoint="getconcurrentList", outcome="timeout") == 1.0
    assert value(registry, requests, endpoint="sessionStop", outcome="success") == 1.0
    duration = "duixwatch_api_request_duration_seconds"
    assert value(registry, f"{duration}_count", endpoint="getconcurrentList") == 3.0
    assert value(registry, f"{duration}_sum", endpoint="getconcurrentList") == pytest.approx(10.32)
    assert value(registry, f"{duration}_bucket", endpoint="getconcurrentList", le="0.025") == 1.0
    assert value(registry, f"{duration}_bucket", endpoint="getconcurrentList", le="0.5") == 2.0
    assert value(registry, f"{duration}_bucket", endpoint="getconcurrentList", le="10.0") == 3.0
    assert value(registry, f"{duration}_bucket", endpoint="sessionStop", le="0.005") == 1.0
    assert value(registry, f"{duration}_bucket", endpoint="sessionStop", le="30.0") == 1.0


def test_config_reloaded_success_sets_the_timestamp_and_failure_keeps_it(
    m: metrics.Metrics, registry: CollectorRegistry, clock: FakeClock
) -> None:
    loaded_at = clock.now()
    m.config_reloaded(True, at=loaded_at)
    assert value(registry, "duixwatch_config_last_reload_successful") == 1.0
    stamp = value(registry, "duixwatch_config_last_reload_success_timestamp_seconds")
    assert stamp == loaded_at.timestamp()

    m.config_reloaded(False, at=loaded_at + timedelta(minutes=5))
    assert value(registry, "duixwatch_config_last_reload_successful") == 0.0
    assert value(registry, "duixwatch_config_last_reload_success_timestamp_seconds") == stamp

    m.config_reloaded(True, at=loaded_at + timedelta(minutes=10))
    assert value(registry, "duixwatch_config_last_reload_successful") == 1.0
    assert (
        value(registry, "duixwatch_config_last_reload_success_timestamp_seconds")
        == (loaded_at + timedelta(minutes=10)).timestamp()
    )


def test_enforcement_enabled_is_a_0_or_1_gauge(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    assert value(registry, "duixwatch_enforcement_enabled") == 0.0
    m.set_enforcement_enabled(True)
    assert value(registry, "duixwatch_enforcement_enabled") == 1.0
    m.set_enforcement_enabled(False)
    assert value(registry, "duixwatch_enforcement_enabled") == 0.0


def test_build_info_carries_the_version(m: metrics.Metrics, registry: CollectorRegistry) -> None:
    assert value(registry, "duixwatch_build_info", version="1.2.3") == 1.0
    body, _ = m.render(None)
    assert b"# TYPE duixwatch_build_info gauge\n" in body


def test_process_platform_and_gc_collectors_are_registered(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    assert value(registry, "python_info", **_python_info_labels(registry)) == 1.0
    names = {family.name for family in registry.collect()}
    assert "process_cpu_seconds" in names or "process_cpu_seconds_total" in names
    assert {"python_gc_collections", "python_gc_objects_collected"} <= names


def _python_info_labels(registry: CollectorRegistry) -> dict[str, str]:
    for family in registry.collect():
        if family.name == "python_info":
            return dict(family.samples[0].labels)
    raise AssertionError("python_info is not exported")


def test_metrics_never_touch_the_global_registry(
    registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    """Two Metrics on two registries coexist (a global registry would raise duplicates)."""
    metrics.Metrics(registry, snapshots=store, clock=clock, version="1")
    metrics.Metrics(Registry(), snapshots=store, clock=clock, version="1")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.Metrics(registry, snapshots=store, clock=clock, version="1")


# --------------------------------------------------------------------------- exposition


def test_text_format_is_the_default(m: metrics.Metrics, registry: CollectorRegistry) -> None:
    for accept in (None, "", "text/plain", "*/*", "application/json"):
        body, content_type = m.render(accept)
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert b"# TYPE duixwatch_api_requests_total counter\n" in body
        assert not body.endswith(b"# EOF\n")


def test_openmetrics_when_the_scraper_asks_for_it(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    store.put(
        snapshot(clock, "a", session_list=sessions(models.Session("1", started_at=ago(clock, 5))))
    )
    body, content_type = m.render(OPENMETRICS_ACCEPT)

    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    assert b"# TYPE duix_app_session_age_seconds gaugehistogram\n" in body
    assert b"# UNIT duix_app_session_age_seconds seconds\n" in body
    assert b"# TYPE duixwatch_api_requests counter\n" in body


@pytest.mark.e2e
def test_promtool_accepts_the_exposition_of_a_realistic_registry(
    m: metrics.Metrics, registry: CollectorRegistry, store: Store, clock: FakeClock
) -> None:
    promtool = require_tool("promtool")
    store.put(
        snapshot(
            clock,
            "frontdesk",
            session_list=sessions(
                models.Session("1", started_at=ago(clock, 30)),
                models.Session("2", started_at=ago(clock, 5000)),
                models.Session(None, first_seen_at=ago(clock, 60)),
                models.Session("4"),
            ),
        ),
        snapshot(clock, "numbers-only"),
        snapshot(clock, "quiet", session_list=sessions()),
        snapshot(clock, "down", fetched_seconds_ago=40, failed="server", consecutive_failures=2),
        snapshot(clock, "stale", fetched_seconds_ago=600, session_list=sessions()),
        snapshot(clock, "new", fetched_seconds_ago=None, failed="auth", consecutive_failures=1),
    )
    m.set_apps(store.snapshots)
    m.set_enforcement_enabled(True)
    m.config_reloaded(True, at=clock.now())
    m.poll_failed("down", "server")
    m.poll_failed("new", "auth")
    for endpoint, outcome, seconds in (
        ("getconcurrentNumber", "success", 0.04),
        ("getconcurrentList", "success", 0.12),
        ("getconcurrentList", "server", 0.5),
        ("sessionStop", "success", 0.2),
    ):
        m.observe_request(endpoint, outcome, seconds)
    m.policy_matched("frontdesk", "max-age", 1)
    m.policy_action("frontdesk", "max-age", "stop", "stopped")
    m.policy_aborted("quiet", "quota", "max_percent")
    body, _ = m.render(None)

    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        timeout=30,
        check=False,
    )

    assert result.stdout.decode() + result.stderr.decode() == "", body.decode()
    assert result.returncode == 0


# --------------------------------------------------------------- one table, one registry


class _View:
    """The least of a daemon the HTTP surface needs to serve /metrics."""

    def snapshots(self) -> list[models.AppSnapshot]:
        return []

    def pending(self) -> list[str]:
        return []

    def overdue(self) -> list[str]:
        return []

    def info(self) -> dict[str, object]:
        return {}

    def scaling(self, target: str) -> None:
        return None


async def served(m: metrics.Metrics, clock: FakeClock, accept: str | None) -> str:
    """GET /metrics from the daemon's HTTP app, in process."""
    app = server.create_app(render=m.render_chunks, view=_View(), clock=clock)
    headers = {"accept": accept} if accept else {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://duixwatch.test"
    ) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200
    return response.text


@pytest.mark.parametrize("accept", [None, OPENMETRICS_ACCEPT])
async def test_a_new_per_app_metric_is_one_row_of_the_table(
    registry: CollectorRegistry, store: Store, clock: FakeClock, accept: str | None
) -> None:
    polls = apps.AppGauge(
        exposition.Family("duix_app_polls", "Polls of the app so far (polls).", "gauge"),
        lambda facts: facts[apps.SNAPSHOT].polls,
    )
    m = metrics.Metrics(
        registry, snapshots=store, clock=clock, version="1", columns=(*apps.COLUMNS, polls)
    )
    store.put(replace(snapshot(clock, "frontdesk"), polls=7))
    text = await served(m, clock, accept)
    assert '\nduix_app_polls{app="frontdesk"} 7.0\n' in text
    assert "# HELP duix_app_polls Polls of the app so far (polls).\n" in text
    assert value(registry, "duix_app_polls", app="frontdesk") == 7


@pytest.mark.parametrize("accept", [None, OPENMETRICS_ACCEPT])
async def test_metrics_serves_whatever_is_registered_on_the_injected_registry(
    m: metrics.Metrics, registry: CollectorRegistry, clock: FakeClock, accept: str | None
) -> None:
    extra = Counter("duixwatch_test_extra", "Registered after Metrics.", registry=registry)
    extra.inc(3)
    text = await served(m, clock, accept)
    assert "\nduixwatch_test_extra_total 3.0\n" in text
    assert text.count("# TYPE duix_up gauge") == 1
    if accept:
        assert text.endswith("# EOF\n")
        assert text.count("# EOF") == 1


class Deliveries:
    sent, failed, dropped = 5, 2, 1


def test_notifier_deliveries_are_exported_by_outcome(store: Store, clock: FakeClock) -> None:
    registry = Registry()
    metrics.Metrics(registry, snapshots=store, clock=clock, version="1", notifications=Deliveries)
    counts = {
        outcome: value(registry, "duixwatch_notifications_total", outcome=outcome)
        for outcome in ("sent", "failed", "dropped")
    }
    assert counts == {"sent": 5, "failed": 2, "dropped": 1}


def test_without_a_notifier_every_delivery_outcome_is_zero(
    m: metrics.Metrics, registry: CollectorRegistry
) -> None:
    for outcome in ("sent", "failed", "dropped"):
        assert value(registry, "duixwatch_notifications_total", outcome=outcome) == 0
