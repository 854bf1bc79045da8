"""Hostile platform answers as an operator sees them: the APP that got one is down (``duix_up``
0, its value series absent, ``malformed`` counted), every other APP is exported as before,
``/metrics`` answers 200, and ids with markup are escaped wherever they are shown.

And one value that cannot be written (a count of 10^400, had it got through) drops that one
sample, counted, instead of making ``/metrics`` answer 500 for every APP.
"""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from duixwatch.core import models
from duixwatch.export import exposition, metrics
from duixwatch.export.status import action_status, snapshot_status, status_html
from duixwatch.http import server
from duixwatch.policy.plan import ActionRecord
from duixwatch.sim import ListShape, Simulator, hostile
from duixwatch.watch.conversations import ConversationState
from duixwatch.watch.poll import MemoryFirstSeen, poll_once
from tests.export.test_metrics import (
    ALWAYS_SERIES,
    FRESH_SERIES,
    OPENMETRICS_ACCEPT,
    Store,
    snapshot,
)
from tests.fakes import FakeClock
from tests.watch.support import app_config, client_for

ACCEPTS = [None, OPENMETRICS_ACCEPT]


class View:
    """The daemon as the HTTP surface sees it: these snapshots, these actions."""

    def __init__(self, store: Store, actions: list[ActionRecord] | None = None) -> None:
        self._store = store
        self._actions = actions or []

    def snapshots(self) -> list[models.AppSnapshot]:
        return list(self._store())

    def pending(self) -> list[str]:
        return []

    def overdue(self) -> list[str]:
        return []

    def info(self) -> dict[str, object]:
        return {"recent_actions": [action_status(a) for a in self._actions]}

    def scaling(self, target: str) -> None:
        return None


async def get(
    m: metrics.Metrics, view: View, clock: FakeClock, path: str, accept: str | None = None
) -> httpx.Response:
    app = server.create_app(render=m.render_chunks, view=view, clock=clock)
    headers = {"accept": accept} if accept else {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://duixwatch.test"
    ) as http:
        return await http.get(path, headers=headers)


def families(text: str) -> list[Metric]:
    """The exposition parsed by the parser of its format (which also checks it)."""
    if text.endswith("# EOF\n"):
        return list(openmetrics_families(text))
    return list(text_string_to_metric_families(text))


def series(text: str, app: str) -> dict[str, float]:
    """The samples of ``app`` by name (the last one of a name: enough for gauges)."""
    return {
        s.name: s.value for f in families(text) for s in f.samples if s.labels.get("app") == app
    }


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    return Simulator(apps=3, seed=5, clock=clock, workload=False)


async def polled_fleet(sim: Simulator, clock: FakeClock, m: metrics.Metrics) -> Store:
    """Every app of ``sim`` polled once (two sessions each), as the daemon stores it."""
    store = Store()
    m.set_apps([app.name for app in sim.apps])
    async with client_for(sim, clock) as client:
        for index in range(len(sim.apps)):
            snap = await poll_once(
                app_config(sim, index), client, clock=clock, first_seen=MemoryFirstSeen()
            )
            if snap.error is not None:
                m.poll_failed(snap.app, snap.error.reason)
            store.put(snap)
    return store


def fleet_metrics(clock: FakeClock, store: Store) -> metrics.Metrics:
    return metrics.Metrics(exposition.Registry(), snapshots=store, clock=clock, version="1")


@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [
        ("count_superscript", "getconcurrentNumber"),
        ("count_huge", "getconcurrentNumber"),
        ("count_nan", "getconcurrentNumber"),
        ("count_infinity", "getconcurrentList"),
        ("count_negative", "getconcurrentNumber"),
        ("deep_json", "getconcurrentNumber"),
        ("deep_json", "getconcurrentList"),
    ],
)
@pytest.mark.parametrize("accept", ACCEPTS)
async def test_a_hostile_answer_takes_down_that_app_alone_and_metrics_answers(
    sim: Simulator, clock: FakeClock, kind: str, endpoint: str, accept: str | None
) -> None:
    for app in sim.apps:
        sim.set_shape(app.app_id, ListShape("records"))
        sim.add_session(app.app_id, age_seconds=30)
        sim.add_session(app.app_id, age_seconds=90)
    bad, *good = sim.apps
    sim.faults.set(bad.app_id, endpoint, hostile=kind)
    store = Store()
    m = fleet_metrics(clock, store)
    store.snapshots = (await polled_fleet(sim, clock, m)).snapshots
    response = await get(m, View(store), clock, "/metrics", accept)
    assert response.status_code == 200
    down = series(response.text, bad.name)
    assert down["duix_up"] == 0
    assert set(down) - {"duixwatch_poll_errors_total"} == ALWAYS_SERIES
    assert series(response.text, bad.name)["duixwatch_app_consecutive_poll_failures"] == 1
    errors_by_reason = {
        s.labels["reason"]: s.value
        for family in families(response.text)
        for s in family.samples
        if s.name == "duixwatch_poll_errors_total" and s.labels["app"] == bad.name
    }
    assert errors_by_reason["malformed"] == 1
    assert errors_by_reason["internal"] == 0
    for app in good:
        up = series(response.text, app.name)
        assert set(up) >= FRESH_SERIES
        assert up["duix_up"] == 1
        assert up["duix_app_sessions"] == 2
        assert up["duix_app_concurrency_total_number"] == app.concurrency_limit


async def test_a_bad_total_beside_the_list_is_ignored_and_the_app_stays_up(
    sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, ListShape("records"))
    sim.add_session(app.app_id, age_seconds=30)
    sim.faults.set(app.app_id, "getconcurrentList", hostile="count_huge")
    store = Store()
    m = fleet_metrics(clock, store)
    store.snapshots = (await polled_fleet(sim, clock, m)).snapshots
    response = await get(m, View(store), clock, "/metrics")
    assert response.status_code == 200
    assert series(response.text, app.name)["duix_app_sessions"] == 1
    listed = store.snapshots[app.name].sessions
    assert listed is not None
    assert listed.total is None


@pytest.mark.parametrize(
    "kind", ["start_1970", "start_1900", "start_year1", "start_9999", "future_start"]
)
async def test_a_bad_start_time_is_no_56_year_old_session_in_the_metrics(
    sim: Simulator, clock: FakeClock, kind: str
) -> None:
    bad = sim.apps[0]
    sim.set_shape(bad.app_id, ListShape("records", "sessionId", "createTime", "local"))
    sim.add_session(bad.app_id, age_seconds=600)
    sim.add_session(bad.app_id, age_seconds=60)
    sim.faults.set(bad.app_id, "getconcurrentList", hostile=kind)
    store = Store()
    m = fleet_metrics(clock, store)
    store.snapshots = (await polled_fleet(sim, clock, m)).snapshots
    response = await get(m, View(store), clock, "/metrics")
    assert response.status_code == 200
    values = series(response.text, bad.name)
    assert values["duix_up"] == 1
    assert values["duix_app_sessions"] == 2
    # the oldest known age is the honest session's ten minutes: the bad one is aged from
    # first sight (this poll), not from 1970 or 1900, and is never in the future
    assert values["duix_app_oldest_session_age_seconds"] == pytest.approx(60, abs=1)
    status = (await get(m, View(store), clock, "/status?format=json")).json()
    (entry,) = [a for a in status["apps"] if a["app"] == bad.name]
    assert len(entry["sessions"]["rejected_starts"]) == 1
    assert [i["start_rejected"] for i in entry["sessions"]["items"]] == [True, False]


async def test_ids_with_markup_are_escaped_in_html_and_json_and_never_a_label(
    sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    sim.add_session(app.app_id, age_seconds=5)
    sim.faults.set(app.app_id, "getconcurrentList", hostile="markup_ids")
    store = Store()
    m = fleet_metrics(clock, store)
    store.snapshots = (await polled_fleet(sim, clock, m)).snapshots
    snap = store.snapshots[app.name]
    assert snap.sessions is not None
    assert snap.sessions.sessions[0].session_id == hostile.MARKUP_ID
    action = ActionRecord(
        at=clock.now(),
        cycle="c1",
        policy="max-session-age",
        app=app.name,
        app_id=app.app_id,
        action="stop_session",
        session_id=hostile.MARKUP_ID,
        outcome="dry_run",
        reason="age 3000s > 2700s",
    )
    view = View(store, [action])
    page = await get(m, view, clock, "/status", "text/html")
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert (
        "&lt;script&gt;alert(&quot;id&quot;)&lt;/script&gt;\\u000a1860000000000000001" in page.text
    )
    as_json = await get(m, view, clock, "/status?format=json")
    items = [i["session_id"] for a in as_json.json()["apps"] for i in a["sessions"]["items"]]
    assert hostile.MARKUP_ID in items  # JSON escapes what it must by itself, and keeps it exact
    body = (await get(m, view, clock, "/metrics")).text
    assert "<script" not in body
    assert "alert(" not in body
    assert "1860000000000000001" not in body
    html = status_html({}, [snapshot_status(snap, clock.now())])
    assert "<script>" not in html


# --------------------------------------------------------------------------- the guard


def dropped_samples(text: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for f in families(text)
        for s in f.samples
        if s.name == "duixwatch_exposition_dropped_samples_total"
    ]


@pytest.mark.parametrize("accept", ACCEPTS)
async def test_a_value_that_cannot_be_written_drops_that_sample_alone_and_is_counted(
    clock: FakeClock, accept: str | None
) -> None:
    """Never from the platform any more (counts are below 2^53), but one bad value must not
    make /metrics answer 500 for every app."""
    store = Store()
    huge = models.Concurrency(
        corp_id="c", total_concurrent_number=10**400, user_concurrent_number=3
    )
    store.put(snapshot(clock, "frontdesk", concurrency=huge), snapshot(clock, "lobby"))
    m = fleet_metrics(clock, store)
    response = await get(m, View(store), clock, "/metrics", accept)
    assert response.status_code == 200
    front, lobby = series(response.text, "frontdesk"), series(response.text, "lobby")
    assert "duix_app_concurrency_total_number" not in front
    assert front["duix_app_concurrency_user"] == 3
    assert lobby["duix_app_concurrency_total_number"] == 10
    assert dropped_samples(response.text) == [({"metric": "duix_app_concurrency_total_number"}, 1)]
    again = await get(m, View(store), clock, "/metrics", accept)
    assert dropped_samples(again.text) == [({"metric": "duix_app_concurrency_total_number"}, 2)]
    if accept:
        assert again.text.endswith("# EOF\n")
        assert again.text.count("# EOF") == 1


@pytest.mark.parametrize("accept", ACCEPTS)
async def test_a_huge_max_conversation_does_not_break_metrics_either(
    clock: FakeClock, accept: str | None
) -> None:
    store = Store()
    store.put(snapshot(clock, "frontdesk"))
    watched = ConversationState("frontdesk", "1860000000000000009", up=True, max_sessions=10**400)
    m = metrics.Metrics(
        exposition.Registry(),
        snapshots=store,
        clock=clock,
        version="1",
        conversations=lambda: [watched],
    )
    response = await get(m, View(store), clock, "/metrics", accept)
    assert response.status_code == 200
    assert "duix_conversation_max_sessions{" not in response.text
    assert dropped_samples(response.text) == [({"metric": "duix_conversation_max_sessions"}, 1)]
    assert series(response.text, "frontdesk")["duix_up"] == 1


def test_a_fleet_without_bad_values_is_written_exactly_as_before(clock: FakeClock) -> None:
    """The guard costs nothing until a value fails: the fast text is what it always was."""
    store = Store()
    store.put(snapshot(clock, "frontdesk"), replace(snapshot(clock, "lobby"), polls=3))
    m = fleet_metrics(clock, store)
    text, _ = m.render(None)
    assert b"duixwatch_exposition_dropped_samples_total{" not in text
    assert b'duix_app_concurrency_total_number{app="lobby"} 10.0\n' in text
