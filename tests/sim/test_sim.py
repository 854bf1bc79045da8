"""The DUIX simulator: workload, auth, envelopes, list shapes, faults, control API, dialog."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import httpx
import jwt
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from duixwatch.core import documents
from duixwatch.sim import (
    ENDPOINTS,
    Fault,
    ListShape,
    SimApp,
    Simulator,
    create_app,
    render_config,
    serve,
)
from duixwatch.sim.shapes import CONTAINERS, ID_KEYS, TIME_FORMATS, TIME_KEYS, render_session_list
from tests.fakes import FakeClock

V2 = "/duix-openapi-v2/sdk/v2"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "get_conversation_by_id.json"
SHANGHAI = ZoneInfo("Asia/Shanghai")


# --------------------------------------------------------------------------- helpers


def token_for(
    app: SimApp,
    clock: FakeClock,
    *,
    key: str | None = None,
    ttl_seconds: int = 1800,
    claims: dict[str, Any] | None = None,
) -> str:
    """A token as the DUIX docs mint it: HS256 over appId/iat/exp with the appKey."""
    iat = int(clock.now().timestamp())
    body: dict[str, Any] = {"appId": app.app_id, "iat": iat, "exp": iat + ttl_seconds}
    if claims is not None:
        body = claims
    return jwt.encode(body, (key or app.app_key).encode("utf-8"), algorithm="HS256")


class Api:
    """Signed calls to the simulator for one app."""

    def __init__(self, http: httpx.AsyncClient, sim: Simulator, clock: FakeClock) -> None:
        self.http, self.sim, self.clock = http, sim, clock

    async def get(
        self, endpoint: str, app: SimApp, token: str | None = None, **params: Any
    ) -> httpx.Response:
        if endpoint in ("getconcurrentNumber", "getconcurrentList", "distroyCallSessionsByAppId"):
            params.setdefault("appId", app.app_id)
        headers = {"token": token if token is not None else token_for(app, self.clock)}
        return await self.http.get(f"{V2}/{endpoint}", params=params, headers=headers)

    async def post(self, endpoint: str, app: SimApp, body: Any) -> httpx.Response:
        headers = {"token": token_for(app, self.clock)}
        return await self.http.post(f"{V2}/{endpoint}", json=body, headers=headers)


@pytest.fixture
def api(http: httpx.AsyncClient, sim: Simulator, clock: FakeClock) -> Api:
    return Api(http, sim, clock)


def session_ids(sim: Simulator) -> list[list[str]]:
    return [[s.session_id for s in sim.live_sessions(app.app_id)] for app in sim.apps]


def parse_time(value: Any, time_format: str) -> datetime:
    """Read a rendered start time back the way a tolerant client would."""
    if time_format in ("epoch_s", "epoch_s_str"):
        return datetime.fromtimestamp(int(value), UTC)
    if time_format in ("epoch_ms", "epoch_ms_str"):
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    if time_format == "local":
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=SHANGHAI)


# --------------------------------------------------------------------------- workload


def test_the_same_seed_builds_the_same_apps_and_sessions() -> None:
    one = Simulator(apps=4, seed=42, clock=FakeClock())
    two = Simulator(apps=4, seed=42, clock=FakeClock())
    assert [(a.app_id, a.name, a.app_key, a.concurrency_limit) for a in one.apps] == [
        (a.app_id, a.name, a.app_key, a.concurrency_limit) for a in two.apps
    ]
    assert session_ids(one) == session_ids(two)
    assert [s.started_at for s in one.live_sessions("frontdesk")] == [
        s.started_at for s in two.live_sessions("frontdesk")
    ]


def test_a_different_seed_builds_different_apps_and_sessions() -> None:
    one = Simulator(apps=3, seed=1, clock=FakeClock())
    two = Simulator(apps=3, seed=2, clock=FakeClock())
    assert [a.app_id for a in one.apps] != [a.app_id for a in two.apps]
    assert [a.app_key for a in one.apps] != [a.app_key for a in two.apps]
    assert session_ids(one) != session_ids(two)


def test_apps_get_19_digit_ids_friendly_names_and_limits_within_range() -> None:
    sim = Simulator(apps=12, seed=3, clock=FakeClock(), workload=False)
    names = [app.name for app in sim.apps]
    assert names[:6] == [
        "frontdesk",
        "lobby-kiosk",
        "support",
        "museum-guide",
        "onboarding",
        "retail-assistant",
    ]
    assert names[-1] == "app-012"
    assert len(set(names)) == 12
    for app in sim.apps:
        assert len(app.app_id) == 19
        assert app.app_id.isdigit()
        assert 5 <= app.concurrency_limit <= 50
        assert app.app_key.startswith("sim-")
        assert len(app.app_key) >= 32  # long enough for HS256 without a key-length warning
    assert len({app.app_key for app in sim.apps}) == 12


def test_reading_the_workload_in_steps_or_at_once_gives_the_same_sessions() -> None:
    """Lazy generation must not depend on when state is read."""
    stepped_clock, direct_clock = FakeClock(), FakeClock()
    stepped = Simulator(apps=3, seed=11, clock=stepped_clock)
    direct = Simulator(apps=3, seed=11, clock=direct_clock)
    for _ in range(12):
        stepped_clock.advance(300)
        stepped.live_sessions("support")
    direct_clock.advance(3600)
    assert session_ids(stepped) == session_ids(direct)
    assert [a.refused for a in stepped.apps] == [a.refused for a in direct.apps]


def test_the_initial_population_is_about_half_full_with_some_stale_sessions(
    clock: FakeClock,
) -> None:
    sim = Simulator(apps=5, seed=5, clock=clock)
    now = clock.now()
    for app in sim.apps:
        live = sim.live_sessions(app.app_id)
        assert 0.3 * app.concurrency_limit <= len(live) <= 0.7 * app.concurrency_limit
        ages = [s.age_seconds(now) for s in live]
        assert max(ages) <= 3600
        assert any(age > 45 * 60 for age in ages)
        for session in live:
            assert len(session.session_id) == 19
            assert session.session_id.isdigit()
            assert session.started_at.tzinfo is not None


def test_sessions_arrive_and_hang_up_as_the_clock_advances(clock: FakeClock) -> None:
    sim = Simulator(apps=1, seed=9, clock=clock, arrivals_per_minute=3.0)
    first = {s.session_id for s in sim.live_sessions("frontdesk")}
    clock.advance(2 * 3600)
    later = sim.live_sessions("frontdesk")
    arrived = [s for s in later if s.session_id not in first]
    assert arrived
    assert all(clock.now() - timedelta(hours=2) <= s.started_at <= clock.now() for s in arrived)
    hung_up = [sim.session(sid) for sid in first if sid not in {s.session_id for s in later}]
    assert hung_up
    assert all(s.closed and s.closed_by == "hangup" for s in hung_up)
    assert all(s.closed_at is not None and s.closed_at <= clock.now() for s in hung_up)


def test_arrivals_beyond_the_concurrency_limit_are_refused(clock: FakeClock) -> None:
    sim = Simulator(
        apps=2, seed=4, clock=clock, arrivals_per_minute=60.0, mean_duration_seconds=3600.0
    )
    for _ in range(6):
        clock.advance(600)
        for app in sim.apps:
            assert len(sim.live_sessions(app.app_id)) <= app.concurrency_limit
    assert all(app.refused > 0 for app in sim.apps)
    assert all(len(sim.live_sessions(app.app_id)) == app.concurrency_limit for app in sim.apps)


def test_a_huge_clock_jump_is_caught_up_in_bounded_work(clock: FakeClock) -> None:
    """Millions of due arrivals: the catch-up stops at its bound and skips ahead."""
    sim = Simulator(apps=1, seed=2, clock=clock, arrivals_per_minute=10_000.0)
    app = sim.apps[0]
    clock.advance(30 * 86_400)
    live = sim.live_sessions(app.app_id)
    assert len(live) <= app.concurrency_limit
    assert 90_000 < app.refused < 100_000
    clock.advance(60)
    assert len(sim.live_sessions(app.app_id)) <= app.concurrency_limit


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    steps=st.lists(st.floats(0, 1800, allow_nan=False), min_size=1, max_size=6),
)
def test_the_workload_never_exceeds_the_limit_and_ignores_read_times(
    seed: int, steps: list[float]
) -> None:
    stepped_clock, direct_clock = FakeClock(), FakeClock()
    stepped = Simulator(apps=2, seed=seed, clock=stepped_clock, arrivals_per_minute=10.0)
    direct = Simulator(apps=2, seed=seed, clock=direct_clock, arrivals_per_minute=10.0)
    for step in steps:
        stepped_clock.advance(step)
        for app in stepped.apps:
            assert len(stepped.live_sessions(app.app_id)) <= app.concurrency_limit
    direct_clock.advance(sum(steps))
    assert session_ids(stepped) == session_ids(direct)


def test_a_simulator_without_workload_starts_empty_and_stays_empty(
    sim: Simulator, clock: FakeClock
) -> None:
    clock.advance(3600)
    assert all(sim.live_sessions(app.app_id) == [] for app in sim.apps)


def test_apps_are_found_by_id_or_name_and_unknown_ones_raise(sim: Simulator) -> None:
    app = sim.apps[1]
    assert sim.app(app.app_id) is app
    assert sim.app(app.name) is app
    with pytest.raises(KeyError):
        sim.app("nope")


def test_added_sessions_have_the_requested_age_and_live_until_closed(
    sim: Simulator, clock: FakeClock
) -> None:
    session = sim.add_session("frontdesk", age_seconds=600, session_id="1234567890123456789")
    assert session.started_at == clock.now() - timedelta(seconds=600)
    clock.advance(86_400)
    assert sim.live_sessions("frontdesk") == [session]
    with pytest.raises(ValueError, match="already used"):
        sim.add_session("frontdesk", session_id="1234567890123456789")
    sim.end_session(session.session_id)
    assert sim.session(session.session_id).closed_by == "hangup"
    assert sim.live_sessions("frontdesk") == []


def test_constructor_rejects_bad_arguments(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="apps"):
        Simulator(apps=0, clock=clock)
    with pytest.raises(ValueError, match="time zone"):
        Simulator(clock=clock, timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="mean_duration"):
        Simulator(clock=clock, mean_duration_seconds=0)


# --------------------------------------------------------------------------- auth


async def test_a_missing_token_is_code_1005(api: Api, sim: Simulator) -> None:
    response = await api.get("getconcurrentNumber", sim.apps[0], token="")
    assert response.status_code == 200
    assert response.json() == {
        "code": "1005",
        "message": "token is empty",
        "data": None,
        "success": False,
    }


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        pytest.param(lambda app, clock: "not-a-jwt", "1006", id="garbage"),
        pytest.param(
            lambda app, clock: token_for(app, clock, key="x" * 40), "1006", id="wrong-key"
        ),
        pytest.param(
            lambda app, clock: token_for(app, clock, ttl_seconds=-1), "1006", id="expired"
        ),
        pytest.param(
            lambda app, clock: token_for(app, clock, claims={"appId": app.app_id, "iat": 1}),
            "1006",
            id="no-exp",
        ),
        pytest.param(
            lambda app, clock: token_for(
                app, clock, claims={"appId": app.app_id, "exp": 4_000_000_000}
            ),
            "1006",
            id="no-iat",
        ),
        pytest.param(
            lambda app, clock: token_for(app, clock, claims={"iat": 1, "exp": 4_000_000_000}),
            "1006",
            id="no-app-id",
        ),
        pytest.param(
            lambda app, clock: token_for(
                app, clock, claims={"appId": "1" * 19, "iat": 1, "exp": 4_000_000_000}
            ),
            "40001",
            id="unknown-app",
        ),
    ],
)
async def test_bad_tokens_are_rejected_with_the_platform_codes(
    api: Api, sim: Simulator, clock: FakeClock, make_token: Any, code: str
) -> None:
    app = sim.apps[0]
    response = await api.get("getconcurrentList", app, token=make_token(app, clock))
    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["success"], body["data"]) == (code, False, None)
    assert sim.stats.requests[(app.app_id, "getconcurrentList")] == 1


async def test_a_token_expires_on_the_simulators_clock(
    api: Api, sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    token = token_for(app, clock, ttl_seconds=60)
    assert (await api.get("getconcurrentNumber", app, token=token)).json()["success"] is True
    clock.advance(61)
    assert (await api.get("getconcurrentNumber", app, token=token)).json()["code"] == "1006"


async def test_a_query_app_id_that_is_not_the_tokens_is_code_40001(
    api: Api, sim: Simulator
) -> None:
    one, two = sim.apps[0], sim.apps[1]
    response = await api.get("getconcurrentNumber", one, appId=two.app_id)
    assert response.json()["code"] == "40001"
    assert sim.stats.requests[(two.app_id, "getconcurrentNumber")] == 1


async def test_accepted_tokens_are_recorded_with_their_claims(
    api: Api, sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[2]
    await api.get("getconcurrentNumber", app)
    now = int(clock.now().timestamp())
    assert sim.tokens_seen == [{"appId": app.app_id, "iat": now, "exp": now + 1800}]


# --------------------------------------------------------------------------- endpoints


async def test_get_concurrent_number_reports_limit_and_live_count(api: Api, sim: Simulator) -> None:
    app = sim.apps[0]
    for _ in range(3):
        sim.add_session(app.app_id)
    body = (await api.get("getconcurrentNumber", app)).json()
    assert body == {
        "code": "0",
        "message": "SUCCESS",
        "data": {
            "cropId": app.crop_id,
            "totalConcurrentNumber": app.concurrency_limit,
            "userConcurrentNumber": 3,
        },
        "success": True,
    }


async def test_get_concurrent_list_uses_the_default_shape(
    api: Api, sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    session = sim.add_session(app.app_id, age_seconds=90)
    body = (await api.get("getconcurrentList", app)).json()
    assert (body["code"], body["msg"], body["success"]) == ("200", "success", True)
    assert body["data"]["total"] == 1
    [item] = body["data"]["records"]
    assert item["sessionId"] == session.session_id
    local = (clock.now() - timedelta(seconds=90)).astimezone(SHANGHAI)
    assert item["createTime"] == local.strftime("%Y-%m-%d %H:%M:%S")
    assert item["status"] == "in_call"
    assert "userId" in item


async def test_session_stop_closes_the_session_and_answers_2002_on_repeat(
    api: Api, sim: Simulator
) -> None:
    app = sim.apps[0]
    session = sim.add_session(app.app_id)
    first = await api.get("sessionStop", app, uuid=session.session_id)
    assert first.json() == {"code": "", "message": "", "data": None, "success": True}
    assert sim.session(session.session_id).closed
    assert sim.session(session.session_id).closed_by == "sessionStop"
    again = (await api.get("sessionStop", app, uuid=session.session_id)).json()
    assert (again["code"], again["success"]) == ("2002", False)


async def test_session_stop_cannot_close_another_apps_or_an_unknown_session(
    api: Api, sim: Simulator
) -> None:
    other = sim.add_session(sim.apps[1].app_id)
    stolen = (await api.get("sessionStop", sim.apps[0], uuid=other.session_id)).json()
    unknown = (await api.get("sessionStop", sim.apps[0], uuid="1" * 19)).json()
    assert stolen["code"] == unknown["code"] == "2002"
    assert not sim.session(other.session_id).closed


async def test_session_stop_without_uuid_is_an_http_400(api: Api, sim: Simulator) -> None:
    response = await api.get("sessionStop", sim.apps[0])
    assert response.status_code == 400
    assert response.json()["success"] is False


async def test_close_all_closes_every_session_of_that_app_only(api: Api, sim: Simulator) -> None:
    one, two = sim.apps[0], sim.apps[1]
    mine = [sim.add_session(one.app_id) for _ in range(4)]
    theirs = sim.add_session(two.app_id)
    body = (await api.get("distroyCallSessionsByAppId", one)).json()
    assert body == {"code": "0", "message": "SUCCESS", "data": 4, "success": True}
    assert all(s.closed_by == "distroyCallSessionsByAppId" for s in mine)
    assert sim.live_sessions(one.app_id) == []
    assert sim.live_sessions(two.app_id) == [theirs]


@pytest.mark.parametrize(
    "path", [f"{V2}/getConversationById", "/duix-openapi-v2/sdk/getConversationById"]
)
async def test_each_app_has_a_seeded_conversation_at_both_paths(
    http: httpx.AsyncClient, sim: Simulator, clock: FakeClock, path: str
) -> None:
    app = sim.apps[1]
    response = await http.get(
        path,
        params={"conversationId": app.conversation_id},
        headers={"token": token_for(app, clock)},
    )
    body = response.json()
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert {k: body[k] for k in ("success", "code", "message", "msg")} == {
        "success": True,
        "code": "0",
        "message": "SUCCESS",
        "msg": "SUCCESS",
    }
    assert set(body["data"]) == set(fixture["data"])
    assert set(body["data"]["detailDto"]) == set(fixture["data"]["detailDto"])
    conversation = documents.Conversation.model_validate(body["data"])
    assert conversation.id == app.conversation_id
    assert conversation.corp_id == app.crop_id
    assert conversation.detail_dto is not None
    assert conversation.detail_dto.background_dto is not None
    assert conversation.script_dto_list


async def test_an_unknown_or_foreign_conversation_is_code_2002(api: Api, sim: Simulator) -> None:
    foreign = sim.apps[1].conversation_id
    for conversation_id in ("42", foreign):
        body = (
            await api.get("getConversationById", sim.apps[0], conversationId=conversation_id)
        ).json()
        assert (body["code"], body["success"]) == ("2002", False)


async def test_an_avatar_trains_for_a_minute_then_gets_a_default_conversation(
    api: Api, sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    created = await api.post(
        "createAvatar",
        app,
        {"customType": 1, "avatarName": "Ada", "templateVideo": "https://v/a.mp4", "profile": "hi"},
    )
    body = created.json()
    assert (body["code"], body["msg"], body["success"]) == ("200", "success", True)
    avatar_id = body["data"]["id"]
    assert isinstance(avatar_id, int)

    training = (await api.get("queryAvatar", app, id=avatar_id)).json()
    assert training["code"] == "0"
    assert training["data"] == {
        "id": avatar_id,
        "customizedName": "Ada",
        "customizedStatus": 0,
        "reason": None,
        "defaultConversationId": None,
    }
    clock.advance(60)
    done = (await api.get("queryAvatar", app, id=avatar_id)).json()["data"]
    assert done["customizedStatus"] == 1
    conversation_id = done["defaultConversationId"]
    assert isinstance(conversation_id, str)
    assert len(conversation_id) == 19
    conversation = (
        await api.get("getConversationById", app, conversationId=conversation_id)
    ).json()
    assert conversation["data"]["conversationName"] == "Ada"


async def test_an_avatar_named_fail_fails_with_a_reason(
    api: Api, sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    body = {"customType": 2, "avatarName": "please-fail", "coverUrl": "https://p/a.png"}
    avatar_id = (await api.post("createAvatar", app, body)).json()["data"]["id"]
    clock.advance(61)
    data = (await api.get("queryAvatar", app, id=avatar_id)).json()["data"]
    assert data["customizedStatus"] == 2
    assert data["reason"]
    assert data["defaultConversationId"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"customType": 3, "avatarName": "x", "templateVideo": "v"},
        {"customType": 1, "templateVideo": "v"},
        {"customType": 1, "avatarName": "x"},
        {"customType": 2, "avatarName": "x"},
        {"customType": 1, "avatarName": "x", "templateVideo": "v", "gender": "robot"},
        ["not", "an", "object"],
    ],
)
async def test_create_avatar_rejects_a_bad_body_with_http_400(
    api: Api, sim: Simulator, body: Any
) -> None:
    response = await api.post("createAvatar", sim.apps[0], body)
    assert response.status_code == 400
    answer = response.json()
    assert (answer["code"], answer["success"], answer["data"]) == ("400", False, None)
    assert answer["msg"]


async def test_query_avatar_of_an_unknown_id_is_code_2002(api: Api, sim: Simulator) -> None:
    body = (await api.get("queryAvatar", sim.apps[0], id=1)).json()
    assert (body["code"], body["success"]) == ("2002", False)


# --------------------------------------------------------------------------- list shapes


def test_every_list_shape_renders_its_keys_and_a_parsable_start_time() -> None:
    started = datetime(2026, 11, 21, 3, 4, 5, 678_000, tzinfo=UTC)
    items: list[dict[str, Any]] = [
        {"session_id": "1111111111111111111", "started_at": started, "extra": {"status": "x"}},
        {"session_id": None, "started_at": None, "extra": {}},
    ]
    count = 0
    for shape in ListShape.variants():
        count += 1
        data = render_session_list(shape, items, SHANGHAI)
        if shape.container == "list":
            assert isinstance(data, list)
            rows = data
        else:
            assert isinstance(data, dict)
            rows = data[shape.list_key or ""]
            assert ("total" in data) is shape.include_total
            if shape.include_total:
                assert data["total"] == 2
        first, second = rows
        assert first[shape.id_key] == "1111111111111111111"
        assert second == {}
        value = first[shape.time_key]
        expected_type = int if shape.time_format in ("epoch_s", "epoch_ms") else str
        assert type(value) is expected_type
        assert abs((parse_time(value, shape.time_format) - started).total_seconds()) < 1
        assert ListShape.parse(str(shape)) == shape
    assert count == 6 * 4 * 6 * 8 * 2 + 4 * 6 * 8


@pytest.mark.parametrize(
    ("time_format", "expected"),
    [
        ("epoch_s", 1795230245),
        ("epoch_ms", 1795230245678),
        ("epoch_s_str", "1795230245"),
        ("epoch_ms_str", "1795230245678"),
        ("iso_utc", "2026-11-21T03:04:05Z"),
        ("iso_offset", "2026-11-21T11:04:05+08:00"),
        ("iso_naive", "2026-11-21T11:04:05"),
        ("local", "2026-11-21 11:04:05"),
    ],
)
def test_time_formats_are_written_exactly(time_format: Any, expected: Any) -> None:
    started = datetime(2026, 11, 21, 3, 4, 5, 678_000, tzinfo=UTC)
    shape = ListShape("list", "uuid", "startTime", time_format)
    data = render_session_list(shape, [{"session_id": "1", "started_at": started}], SHANGHAI)
    assert data == [{"uuid": "1", "startTime": expected}]


def covering_shapes() -> list[ListShape]:
    """At least one shape per container, id key, time key and time format."""
    width = max(len(CONTAINERS), len(ID_KEYS), len(TIME_KEYS), len(TIME_FORMATS))
    return [
        ListShape(
            CONTAINERS[i % len(CONTAINERS)],
            ID_KEYS[i % len(ID_KEYS)],
            TIME_KEYS[i % len(TIME_KEYS)],
            TIME_FORMATS[i % len(TIME_FORMATS)],
            include_total=i % 2 == 0,
        )
        for i in range(width)
    ]


@pytest.mark.parametrize("shape", covering_shapes(), ids=str)
async def test_get_concurrent_list_serves_each_shape_over_http(
    api: Api, sim: Simulator, clock: FakeClock, shape: ListShape
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, shape)
    session = sim.add_session(app.app_id, age_seconds=1234.5)
    data = (await api.get("getconcurrentList", app)).json()["data"]
    rows = data if shape.list_key is None else data[shape.list_key]
    [item] = rows
    assert item[shape.id_key] == session.session_id
    parsed = parse_time(item[shape.time_key], shape.time_format)
    assert abs((parsed - session.started_at).total_seconds()) < 1


async def test_sessions_without_id_or_start_leave_those_keys_out(api: Api, sim: Simulator) -> None:
    app = sim.apps[0]
    sim.add_session(app.app_id, with_id=False)
    sim.add_session(app.app_id, with_start=False, age_seconds=10)
    rows = (await api.get("getconcurrentList", app)).json()["data"]["records"]
    assert len(rows) == 2
    without_start = next(r for r in rows if "sessionId" in r)
    without_id = next(r for r in rows if "sessionId" not in r)
    assert "createTime" not in without_start
    assert "createTime" in without_id
    assert not {"sessionId", "uuid", "session_id", "id"} & set(without_id)


def test_list_shape_text_round_trips_and_bad_text_is_rejected() -> None:
    shape = ListShape.parse("rows/uuid/gmtCreate/epoch_ms/no-total")
    assert shape == ListShape("rows", "uuid", "gmtCreate", "epoch_ms", include_total=False)
    assert str(shape) == "rows/uuid/gmtCreate/epoch_ms/no-total"
    assert str(ListShape()) == "records/sessionId/createTime/local"
    for bad in ("records/sessionId", "boxes/sessionId/createTime/local", "a/b/c/d/e"):
        with pytest.raises(ValueError, match=r"list shape|unknown"):
            ListShape.parse(bad)


def test_a_random_shape_is_seeded_per_app(clock: FakeClock) -> None:
    one = Simulator(apps=8, seed=21, clock=clock, shape="random", workload=False)
    two = Simulator(apps=8, seed=21, clock=clock, shape="random", workload=False)
    assert [a.shape for a in one.apps] == [a.shape for a in two.apps]
    assert len({a.shape for a in one.apps}) > 1


# --------------------------------------------------------------------------- faults


async def test_a_status_fault_answers_that_http_status_and_changes_nothing(
    api: Api, sim: Simulator
) -> None:
    app = sim.apps[0]
    session = sim.add_session(app.app_id)
    sim.faults.set(app.name, "sessionStop", status=503)
    response = await api.get("sessionStop", app, uuid=session.session_id)
    assert response.status_code == 503
    assert response.json()["status"] == 503
    assert not sim.session(session.session_id).closed
    assert sim.stats.requests[(app.app_id, "sessionStop")] == 1


async def test_a_rate_limit_fault_answers_429_with_retry_after(api: Api, sim: Simulator) -> None:
    sim.faults.set("*", "getconcurrentList", retry_after_seconds=2.5)
    response = await api.get("getconcurrentList", sim.apps[0])
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


async def test_a_code_fault_answers_success_false_with_that_code(api: Api, sim: Simulator) -> None:
    sim.faults.set(sim.apps[0].app_id, code="50007")
    body = (await api.get("getconcurrentNumber", sim.apps[0])).json()
    assert (body["code"], body["success"], body["data"]) == ("50007", False, None)
    other = (await api.get("getconcurrentNumber", sim.apps[1])).json()
    assert other["success"] is True


async def test_a_malformed_fault_truncates_the_json_but_the_call_takes_effect(
    api: Api, sim: Simulator
) -> None:
    app = sim.apps[0]
    session = sim.add_session(app.app_id)
    sim.faults.set(app.app_id, "sessionStop", malformed=True)
    response = await api.get("sessionStop", app, uuid=session.session_id)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert sim.session(session.session_id).closed


async def test_a_hang_fault_sleeps_on_the_clock_then_gives_up_with_504(
    api: Api, sim: Simulator, clock: FakeClock
) -> None:
    sim.faults.set("*", "*", hang=True)
    with anyio.fail_after(5):
        response = await api.get("getconcurrentNumber", sim.apps[0])
    assert response.status_code == 504
    assert clock.sleeps == [600.0]


async def test_a_released_hang_answers_503_at_once() -> None:
    """On the system clock a hang would last 600 s; ``serve`` releases hangs on shutdown."""
    sim = Simulator(apps=1, seed=1, workload=False)
    app = create_app(sim)
    sim.faults.set(hang=True)
    responses: list[httpx.Response] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:

        async def call() -> None:
            responses.append(await client.get(f"{V2}/getconcurrentNumber"))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                for _ in range(1000):
                    if len(app.state.hangs):
                        break
                    await anyio.lowlevel.checkpoint()
                assert len(app.state.hangs) == 1
                app.state.hangs.release()
    assert responses[0].status_code == 503
    assert len(app.state.hangs) == 0
    assert sim.stats.in_flight == 0


async def test_a_reject_token_fault_answers_1006_for_a_good_token(api: Api, sim: Simulator) -> None:
    sim.faults.set(sim.apps[0].name, "queryAvatar", reject_token=True)
    body = (await api.get("queryAvatar", sim.apps[0], id=1)).json()
    assert (body["code"], body["success"]) == ("1006", False)


async def test_latency_and_seeded_jitter_delay_the_answer_on_the_clock(
    api: Api, sim: Simulator, clock: FakeClock
) -> None:
    sim.faults.set(latency_seconds=2.0, jitter_seconds=1.0)
    for _ in range(3):
        assert (await api.get("getconcurrentNumber", sim.apps[0])).json()["success"] is True
    assert len(clock.sleeps) == 3
    assert all(2.0 <= delay <= 3.0 for delay in clock.sleeps)
    assert len(set(clock.sleeps)) == 3
    again = Simulator(apps=3, seed=7, clock=FakeClock(), workload=False)
    again.faults.set(latency_seconds=2.0, jitter_seconds=1.0)
    fault = again.faults.take(None, "getconcurrentNumber")
    assert fault is not None
    assert again.faults.delay_seconds(fault) == clock.sleeps[0]


async def test_a_fault_with_times_applies_that_often_then_disappears(
    api: Api, sim: Simulator
) -> None:
    app = sim.apps[0]
    fault = sim.faults.set(app.app_id, "getconcurrentList", status=500, times=2)
    assert fault == Fault(app=app.app_id, endpoint="getconcurrentList", status=500, times=2)
    statuses = [(await api.get("getconcurrentList", app)).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert sim.faults.active() == []


async def test_the_most_specific_fault_wins(api: Api, sim: Simulator) -> None:
    one, two = sim.apps[0], sim.apps[1]
    sim.faults.set("*", "*", status=500)
    sim.faults.set("*", "getconcurrentNumber", status=502)
    sim.faults.set(one.app_id, "*", status=503)
    sim.faults.set(one.app_id, "getconcurrentNumber", status=504)
    assert (await api.get("getconcurrentNumber", one)).status_code == 504
    assert (await api.get("getconcurrentList", one)).status_code == 503
    assert (await api.get("getconcurrentNumber", two)).status_code == 502
    assert (await api.get("getconcurrentList", two)).status_code == 500
    assert sim.faults.clear(app=one.name) == 2
    assert sim.faults.clear() == 2
    assert (await api.get("getconcurrentList", one)).status_code == 200


def test_faults_reject_unknown_endpoints_apps_and_values(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        sim.faults.set(endpoint="nope")
    with pytest.raises(KeyError):
        sim.faults.set(app="nope")
    with pytest.raises(ValueError, match="status"):
        sim.faults.set(status=200)
    with pytest.raises(ValueError, match="times"):
        sim.faults.set(status=500, times=0)


async def test_in_flight_high_water_mark_counts_concurrent_requests(
    api: Api, sim: Simulator
) -> None:
    sim.faults.set(latency_seconds=1.0)
    async with anyio.create_task_group() as tg:
        for app in sim.apps * 2:
            tg.start_soon(api.get, "getconcurrentNumber", app)
    assert sim.stats.max_in_flight == 6
    assert sim.stats.in_flight == 0
    assert sim.stats.total("getconcurrentNumber") == 6
    sim.stats.reset()
    assert (sim.stats.requests, sim.stats.max_in_flight) == ({}, 0)


def test_endpoints_are_the_documented_seven() -> None:
    assert ENDPOINTS == (
        "getconcurrentNumber",
        "getconcurrentList",
        "distroyCallSessionsByAppId",
        "sessionStop",
        "getConversationById",
        "createAvatar",
        "queryAvatar",
    )


# --------------------------------------------------------------------------- control API


async def test_the_control_api_shows_and_steers_the_simulator(
    http: httpx.AsyncClient, sim: Simulator, clock: FakeClock
) -> None:
    created = await http.post("/_sim/apps/support/sessions", json={"count": 2, "age_seconds": 3000})
    assert created.status_code == 201
    sessions = created.json()["sessions"]
    assert [s["age_seconds"] for s in sessions] == [3000, 3000]
    named = await http.post(
        "/_sim/apps/support/sessions", json={"session_id": "9" * 19, "with_start": False}
    )
    assert named.json()["sessions"][0]["with_start"] is False

    state = (await http.get("/_sim/state")).json()
    support = next(a for a in state["apps"] if a["name"] == "support")
    assert support["app_id"] == sim.app("support").app_id
    assert support["shape"] == "records/sessionId/createTime/local"
    assert len(support["sessions"]) == 3
    assert {"session_id", "started_at", "age_seconds"} <= set(support["sessions"][0])

    ended = await http.delete(f"/_sim/apps/support/sessions/{'9' * 19}")
    assert ended.status_code == 200
    assert sim.session("9" * 19).closed_by == "hangup"
    after = (await http.get("/_sim/state")).json()
    assert next(a for a in after["apps"] if a["name"] == "support")["closed_sessions"] == 1

    shaped = await http.put(
        "/_sim/apps/support/shape", json={"shape": "list/uuid/startTime/iso_utc"}
    )
    assert shaped.json()["shape"] == "list/uuid/startTime/iso_utc"
    assert sim.app("support").shape == ListShape("list", "uuid", "startTime", "iso_utc")


async def test_the_control_api_sets_lists_and_clears_faults(
    http: httpx.AsyncClient, api: Api, sim: Simulator
) -> None:
    answer = await http.post(
        "/_sim/faults", json={"app": "frontdesk", "endpoint": "getconcurrentList", "status": 502}
    )
    assert answer.status_code == 201
    assert answer.json()["fault"]["app"] == sim.app("frontdesk").app_id
    assert (await api.get("getconcurrentList", sim.app("frontdesk"))).status_code == 502
    await http.post("/_sim/faults", json={"endpoint": "sessionStop", "code": "50003"})
    listed = (await http.get("/_sim/faults")).json()["faults"]
    assert len(listed) == 2
    cleared = await http.delete("/_sim/faults", params={"endpoint": "sessionStop"})
    assert cleared.json() == {"cleared": 1}
    assert (await http.delete("/_sim/faults")).json() == {"cleared": 1}
    stats = (await http.get("/_sim/stats")).json()
    assert stats["requests"] == [
        {
            "app_id": sim.app("frontdesk").app_id,
            "endpoint": "getconcurrentList",
            "count": 1,
        }
    ]
    assert (await http.delete("/_sim/stats")).json()["requests"] == []


async def test_the_control_api_lists_the_record_of_sessions_and_how_each_ended(
    http: httpx.AsyncClient, api: Api, sim: Simulator
) -> None:
    stopped, hung_up, live = (sim.add_session("support").session_id for _ in range(3))
    drained = sim.add_session("lobby-kiosk").session_id
    assert (await api.get("sessionStop", sim.app("support"), uuid=stopped)).status_code == 200
    sim.end_session(hung_up)
    lobby = sim.app("lobby-kiosk")
    assert (await api.get("distroyCallSessionsByAppId", lobby)).json()["data"] == 1

    async def ids(**params: str) -> list[tuple[str, str | None]]:
        answer = await http.get("/_sim/sessions", params=params)
        assert answer.status_code == 200
        return [(s["session_id"], s["closed_by"]) for s in answer.json()["sessions"]]

    assert sorted(await ids()) == sorted(
        [
            (stopped, "sessionStop"),
            (hung_up, "hangup"),
            (live, None),
            (drained, "distroyCallSessionsByAppId"),
        ]
    )
    assert await ids(closed_by="sessionStop") == [(stopped, "sessionStop")]
    assert await ids(closed_by="live") == [(live, None)]
    assert await ids(app="lobby-kiosk") == [(drained, "distroyCallSessionsByAppId")]
    assert await ids(app="support", closed_by="distroyCallSessionsByAppId") == []
    assert (await http.get("/_sim/sessions", params={"closed_by": "crash"})).status_code == 400
    assert (await http.get("/_sim/sessions", params={"app": "nope"})).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/_sim/apps/nope/sessions", {}, 404),
        ("POST", "/_sim/apps/frontdesk/sessions", {"count": 0}, 400),
        ("POST", "/_sim/apps/frontdesk/sessions", {"count": "two"}, 400),
        ("POST", "/_sim/apps/frontdesk/sessions", {"colour": "red"}, 400),
        ("POST", "/_sim/apps/frontdesk/sessions", {"count": 2, "session_id": "1"}, 400),
        ("PUT", "/_sim/apps/frontdesk/shape", {"shape": "boxes"}, 400),
        ("PUT", "/_sim/apps/frontdesk/shape", {}, 400),
        ("DELETE", "/_sim/apps/frontdesk/sessions/123", None, 404),
        ("POST", "/_sim/faults", {"endpoint": "nope"}, 400),
        ("POST", "/_sim/faults", {"status": "500"}, 400),
        ("POST", "/_sim/faults", ["not", "an", "object"], 400),
    ],
)
async def test_the_control_api_answers_bad_input_with_a_message(
    http: httpx.AsyncClient, method: str, path: str, body: Any, status: int
) -> None:
    response = await http.request(method, path, json=body)
    assert response.status_code == status
    assert response.json()["error"]


# --------------------------------------------------------------------------- config


def test_render_config_is_valid_yaml_naming_every_app(sim: Simulator) -> None:
    text = render_config(sim, base_url="http://127.0.0.1:8765/")
    config = yaml.safe_load(text)
    assert config["duix"]["base_url"] == "http://127.0.0.1:8765"
    assert config["duix"]["timezone"] == "Asia/Shanghai"
    assert [(a["app_id"], a["name"], a["app_key"]) for a in config["apps"]] == [
        (app.app_id, app.name, app.app_key) for app in sim.apps
    ]
    assert all(a["poll_interval_seconds"] == 15 and a["list_sessions"] for a in config["apps"])
    assert config["server"] == {"listen": "127.0.0.1:9814"}
    assert config["state"] == {"dir": "./duixwatch-state"}
    assert config["enforcement"] == {"enabled": False}
    assert config["policies"] == []
    assert text.count("# simulator key: public, not a secret") == len(sim.apps)
    assert "#   - name: max-session-age" in text


# --------------------------------------------------------------------------- dialog


DIALOG = {"sid": "u1", "dh-code": "d1", "dh-question": "hello there", "dh-conversation-id": "c9"}


async def test_the_dialog_backend_echoes_the_question(http: httpx.AsyncClient) -> None:
    response = await http.post("/dialog", json=DIALOG)
    assert response.json() == {
        "code": "200",
        "msg": "success",
        "data": {
            "conversationId": "c9",
            "question": "hello there",
            "answer": "You said: hello there",
            "errorMsg": None,
        },
        "success": True,
    }


@pytest.mark.parametrize("path", ["/dialog", "/dialog/stream"])
async def test_the_dialog_backend_rejects_a_missing_field(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.post(path, json={k: v for k, v in DIALOG.items() if k != "dh-question"})
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert "dh-question" in response.json()["msg"]


async def test_the_dialog_stream_sends_server_sent_events_word_by_word(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/dialog/stream", json=DIALOG)
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [json.loads(f.removeprefix("data: ")) for f in response.text.split("\n\n") if f]
    assert frames == [
        {"answer": "You ", "isEnd": False},
        {"answer": "said: ", "isEnd": False},
        {"answer": "hello ", "isEnd": False},
        {"answer": "there ", "isEnd": False},
        {"answer": "", "isEnd": True},
    ]


async def test_the_dialog_stream_speaks_ndjson_on_request(http: httpx.AsyncClient) -> None:
    response = await http.post("/dialog/stream", params={"format": "ndjson"}, json=DIALOG)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert "".join(line["answer"] for line in lines).strip() == "You said: hello there"
    assert [line["isEnd"] for line in lines] == [False] * 4 + [True]


# --------------------------------------------------------------------------- loopback


@pytest.mark.timeout(20)
async def test_serve_answers_real_requests_over_loopback() -> None:
    """Real sockets, real clock: uvicorn inside our task group, on an OS-chosen port."""
    sim = Simulator(apps=2, seed=3)
    app = sim.apps[0]
    iat = int(datetime.now(UTC).timestamp())
    token = jwt.encode(
        {"appId": app.app_id, "iat": iat, "exp": iat + 60}, app.app_key.encode(), "HS256"
    )
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, sim, "127.0.0.1", 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                response = await client.get(
                    f"{V2}/getconcurrentNumber",
                    params={"appId": app.app_id},
                    headers={"token": token},
                )
                state = await client.get("/_sim/state")
            tg.cancel_scope.cancel()
    assert response.json()["success"] is True
    assert response.json()["data"]["userConcurrentNumber"] == len(sim.live_sessions(app.app_id))
    assert state.json()["apps"][0]["app_id"] == app.app_id
