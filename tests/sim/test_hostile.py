"""sim.hostile: the simulator answers as a broken or hostile platform would, when told to."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from duixwatch.sim import Fault, Simulator, hostile
from duixwatch.sim.shapes import CONTAINERS, ListShape
from tests.fakes import FakeClock
from tests.sim.test_sim import SHANGHAI, Api, parse_time

LIST = "getconcurrentList"
NUMBER = "getconcurrentNumber"


@pytest.fixture
def api(http: httpx.AsyncClient, sim: Simulator, clock: FakeClock) -> Api:
    return Api(http, sim, clock)


def items_of(data: Any, shape: ListShape) -> list[dict[str, Any]]:
    key = shape.list_key
    found = data if key is None else data[key]
    assert isinstance(found, list)
    return found


async def listed(api: Api, sim: Simulator) -> list[dict[str, Any]]:
    app = sim.apps[0]
    response = await api.get(LIST, app)
    assert response.status_code == 200
    return items_of(response.json()["data"], app.shape)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("start_1970", datetime(1970, 1, 1, tzinfo=UTC)),
        ("start_1900", datetime(1900, 1, 1, tzinfo=SHANGHAI)),
        ("future_start", None),  # two days after the clock's now
    ],
)
async def test_a_bad_start_time_is_written_in_the_apps_format_for_the_first_item_only(
    api: Api, sim: Simulator, clock: FakeClock, kind: str, expected: datetime | None
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, ListShape("rows", "uuid", "startTime", "epoch_ms"))
    for age in (30, 60):
        sim.add_session(app.app_id, age_seconds=age)
    honest = await listed(api, sim)
    sim.faults.set(app.name, LIST, hostile=kind)
    first, second = await listed(api, sim)
    want = expected or clock.now() + timedelta(days=2)
    assert parse_time(first["startTime"], "epoch_ms") == want
    assert second == honest[1]
    assert {k: v for k, v in first.items() if k != "startTime"} == {
        k: v for k, v in honest[0].items() if k != "startTime"
    }


@pytest.mark.parametrize(
    ("kind", "text"),
    [("start_year1", "0001-01-01 00:00:00"), ("start_9999", "9999-12-31T23:59:59-12:00")],
)
async def test_a_start_time_beyond_what_a_datetime_holds_is_text(
    api: Api, sim: Simulator, kind: str, text: str
) -> None:
    app = sim.apps[0]
    sim.add_session(app.app_id, age_seconds=30)
    sim.faults.set(app.app_id, LIST, hostile=kind)
    (first,) = await listed(api, sim)
    assert first[app.shape.time_key] == text


@pytest.mark.parametrize(
    ("kind", "literal"),
    [
        ("count_superscript", '"²"'),
        ("count_huge", "1" + "0" * 400),
        ("count_nan", "NaN"),
        ("count_infinity", "Infinity"),
        ("count_negative", "-3"),
    ],
)
async def test_a_bad_count_is_written_into_both_counting_answers(
    api: Api, sim: Simulator, kind: str, literal: str
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, ListShape("records"))
    sim.faults.set(app.app_id, hostile=kind)
    number = await api.get(NUMBER, app)
    assert f'"userConcurrentNumber":{literal}' in number.text
    assert f'"totalConcurrentNumber":{app.concurrency_limit}' in number.text
    assert f'"total":{literal}' in (await api.get(LIST, app)).text
    assert (await api.get(NUMBER, sim.apps[1])).json()["data"]["userConcurrentNumber"] == 0


async def test_deep_json_nests_the_data_deeper_than_python_reads(api: Api, sim: Simulator) -> None:
    sim.faults.set("*", NUMBER, hostile="deep_json")
    response = await api.get(NUMBER, sim.apps[0])
    assert response.status_code == 200
    assert '"data":' + "[" * hostile.DEEP_LEVELS + "]" * hostile.DEEP_LEVELS in response.text
    assert '"success":true' in response.text
    with pytest.raises(RecursionError):
        json.loads(response.text)


async def test_a_huge_body_is_a_valid_envelope_of_fifty_mebibytes_without_a_length(
    api: Api, sim: Simulator
) -> None:
    sim.faults.set(sim.apps[0].app_id, NUMBER, hostile="huge_body")
    response = await api.get(NUMBER, sim.apps[0])
    assert len(response.content) == hostile.HUGE_BODY_BYTES == 50 * 1024 * 1024
    assert "content-length" not in response.headers
    body = response.json()
    assert body["success"] is True
    assert body["data"]["totalConcurrentNumber"] == sim.apps[0].concurrency_limit


async def test_a_trickle_sends_the_same_answer_one_byte_a_second_on_the_clock(
    api: Api, sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    honest = (await api.get(NUMBER, app)).content
    sim.faults.set(app.app_id, NUMBER, hostile="trickle")
    before = len(clock.sleeps)
    response = await api.get(NUMBER, app)
    assert response.content == honest
    assert clock.sleeps[before:] == [hostile.TRICKLE_SECONDS] * (len(honest) - 1)


async def test_many_items_lists_two_hundred_thousand_sessions_in_the_apps_shape(
    api: Api, sim: Simulator
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, ListShape("sessions", "session_id", "gmtCreate", "iso_utc"))
    sim.faults.set(app.app_id, LIST, hostile="many_items")
    body = (await api.get(LIST, app)).json()
    items = items_of(body["data"], app.shape)
    assert len(items) == hostile.MANY_ITEMS == 200_000
    assert body["data"]["total"] == 200_000
    assert len({item["session_id"] for item in items}) == 200_000
    assert all(set(item) == {"session_id", "gmtCreate", "status"} for item in items)


async def test_markup_ids_give_the_first_item_an_id_with_markup_and_a_newline(
    api: Api, sim: Simulator
) -> None:
    app = sim.apps[0]
    made = [sim.add_session(app.app_id, age_seconds=a) for a in (20, 10)]
    sim.faults.set(app.app_id, LIST, hostile="markup_ids")
    first, second = await listed(api, sim)
    assert first[app.shape.id_key] == hostile.MARKUP_ID
    assert "<script>" in hostile.MARKUP_ID
    assert "\n" in hostile.MARKUP_ID
    assert second[app.shape.id_key] == made[1].session_id


async def test_a_shape_flip_moves_the_list_to_another_container_every_answer(
    api: Api, sim: Simulator
) -> None:
    app = sim.apps[0]
    sim.add_session(app.app_id, age_seconds=5)
    sim.faults.set(app.app_id, LIST, hostile="shape_flip")
    containers = []
    ids = []
    for _ in range(len(CONTAINERS)):
        data = (await api.get(LIST, app)).json()["data"]
        if isinstance(data, list):
            containers.append("[]")
            items = data
        else:
            (key,) = set(data) - {"total"}
            containers.append(key)
            items = data[key]
        ids.append([item[app.shape.id_key] for item in items])
    assert all(a != b for a, b in itertools.pairwise(containers)), containers
    assert len(set(containers)) == len(CONTAINERS)
    assert all(found == ids[0] for found in ids)


async def test_a_refused_request_is_not_made_hostile(api: Api, sim: Simulator) -> None:
    sim.faults.set("*", NUMBER, hostile="count_nan")
    response = await api.get(NUMBER, sim.apps[0], token="not-a-token")
    assert response.json()["success"] is False
    assert response.json()["code"] == "1006"
    assert "NaN" not in response.text


def test_a_hostile_kind_must_exist_and_change_the_endpoint_it_is_set_for(
    sim: Simulator,
) -> None:
    with pytest.raises(ValueError, match="unknown hostile kind"):
        sim.faults.set(hostile="gremlins")
    with pytest.raises(ValueError, match="changes only getconcurrentList"):
        sim.faults.set(endpoint=NUMBER, hostile="markup_ids")
    assert sim.faults.set(endpoint="sessionStop", hostile="trickle").hostile == "trickle"
    assert sim.faults.set(hostile="shape_flip").hostile == "shape_flip"  # "*": where it applies


async def test_the_control_api_sets_and_lists_a_hostile_fault(
    http: httpx.AsyncClient, api: Api, sim: Simulator
) -> None:
    answer = await http.post(
        "/_sim/faults", json={"app": "frontdesk", "endpoint": NUMBER, "hostile": "count_huge"}
    )
    assert answer.status_code == 201
    assert answer.json()["fault"]["hostile"] == "count_huge"
    assert (await http.get("/_sim/faults")).json()["faults"][0]["hostile"] == "count_huge"
    assert "1" + "0" * 400 in (await api.get(NUMBER, sim.app("frontdesk"))).text
    bad = await http.post("/_sim/faults", json={"hostile": "nope"})
    assert bad.status_code == 400
    assert "unknown hostile kind" in bad.json()["error"]
    wrong = await http.post("/_sim/faults", json={"endpoint": NUMBER, "hostile": "many_items"})
    assert wrong.status_code == 400
    typed = await http.post("/_sim/faults", json={"hostile": 3})
    assert typed.status_code == 400


def test_every_kind_is_documented_on_the_fault() -> None:
    doc = " ".join((Fault.__doc__ or "").split())
    assert all(f"``{kind}``" in doc for kind in hostile.KINDS)
    assert set(hostile.APPLIES_TO) == set(hostile.KINDS)


async def test_stop_ignored_says_yes_and_the_session_stays_listed(api: Api, sim: Simulator) -> None:
    app = sim.apps[0]
    session = sim.add_session(app.app_id, age_seconds=30)
    sim.faults.set(app.app_id, "sessionStop", hostile="stop_ignored")
    response = await api.get("sessionStop", app, uuid=session.session_id)
    assert response.json()["success"] is True
    assert not sim.session(session.session_id).closed
    assert session.session_id in {s.session_id for s in sim.live_sessions(app.app_id)}
    with pytest.raises(ValueError, match="changes only sessionStop"):
        sim.faults.set(app.app_id, LIST, hostile="stop_ignored")
