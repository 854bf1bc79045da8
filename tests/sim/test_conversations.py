"""The simulator's conversations and avatars: changing a conversation by key path,
the conversation ids in the session list, and a configurable avatar training time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import httpx
import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from duixwatch.cli.parser import build_parser
from duixwatch.config.schema import SessionListMapping
from duixwatch.duix import parse
from duixwatch.sim import TRAINING_SECONDS, ListShape, SimApp, Simulator, serve
from duixwatch.sim.conversations import apply_changes, format_path, parse_path
from tests.fakes import FakeClock

V2 = "/duix-openapi-v2/sdk/v2"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def token_for(app: SimApp, now: datetime) -> str:
    iat = int(now.timestamp())
    claims = {"appId": app.app_id, "iat": iat, "exp": iat + 1800}
    return jwt.encode(claims, app.app_key.encode("utf-8"), algorithm="HS256")


async def get_conversation(
    http: httpx.AsyncClient, sim: Simulator, app: SimApp, conversation_id: str
) -> dict[str, Any]:
    response = await http.get(
        f"{V2}/getConversationById",
        params={"conversationId": conversation_id},
        headers={"token": token_for(app, sim.clock.now())},
    )
    body: dict[str, Any] = response.json()
    assert body["success"] is True, body
    data: dict[str, Any] = body["data"]
    return data


async def session_list(http: httpx.AsyncClient, sim: Simulator, app: SimApp) -> Any:
    response = await http.get(
        f"{V2}/getconcurrentList",
        params={"appId": app.app_id},
        headers={"token": token_for(app, sim.clock.now())},
    )
    return response.json()["data"]


def rows_of(data: Any, shape: ListShape) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = data if shape.list_key is None else data[shape.list_key]
    return rows


# --------------------------------------------------------------------------- key paths


def test_key_paths_read_dots_for_keys_and_brackets_for_list_items() -> None:
    assert parse_path("scriptDtoList[2].scriptContent") == ("scriptDtoList", 2, "scriptContent")
    assert parse_path("detailDto.backgroundDto.backgroundName") == (
        "detailDto",
        "backgroundDto",
        "backgroundName",
    )
    assert parse_path("a[0][1]") == ("a", 0, 1)
    assert format_path(("scriptDtoList", 2, "scriptContent")) == "scriptDtoList[2].scriptContent"


@pytest.mark.parametrize("text", ["", ".", "a..b", "a[", "a[x]", "[0]", "a.[0]", "a[-1]", "a]"])
def test_malformed_key_paths_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="key path"):
        parse_path(text)


@given(
    st.lists(
        st.one_of(
            st.text(alphabet="abcXYZ_-09", min_size=1, max_size=6),
            st.integers(min_value=0, max_value=99),
        ),
        min_size=1,
        max_size=6,
    ).filter(lambda parts: isinstance(parts[0], str))
)
def test_a_formatted_path_parses_back_to_its_parts(parts: list[str | int]) -> None:
    assert parse_path(format_path(tuple(parts))) == tuple(parts)


def test_apply_changes_leaves_the_original_alone_and_reports_real_changes_once() -> None:
    document = {"a": 1, "b": {"c": [10, 20]}, "d": "same"}
    changed, paths = apply_changes(document, {"b.c[1]": 21, "d": "same", "a": 1.0})
    assert document == {"a": 1, "b": {"c": [10, 20]}, "d": "same"}
    assert changed == {"a": 1.0, "b": {"c": [10, 21]}, "d": "same"}
    # 1 → 1.0 changes the JSON text (and so a canonical hash); "same" → "same" does not.
    assert paths == ["b.c[1]", "a"]


# --------------------------------------------------------------------------- PATCH conversation


async def test_a_patched_conversation_is_what_get_conversation_by_id_answers_next(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    app = sim.apps[0]
    before = await get_conversation(http, sim, app, app.conversation_id)
    changes = {
        "detailDto.ttsSpeaker": "new-voice",
        "maxConversation": before["maxConversation"] + 1,
        "scriptDtoList[2].scriptContent": "Hold on, please.",
        "conversationName": before["conversationName"],  # unchanged: not reported
    }
    answer = await http.patch(
        f"/_sim/apps/{app.name}/conversations/{app.conversation_id}", json=changes
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "app_id": app.app_id,
        "conversation_id": app.conversation_id,
        "changed": ["detailDto.ttsSpeaker", "maxConversation", "scriptDtoList[2].scriptContent"],
    }
    after = await get_conversation(http, sim, app, app.conversation_id)
    assert after["detailDto"]["ttsSpeaker"] == "new-voice"
    assert after["maxConversation"] == before["maxConversation"] + 1
    assert after["scriptDtoList"][2]["scriptContent"] == "Hold on, please."
    expected = json.loads(json.dumps(before))
    expected["detailDto"]["ttsSpeaker"] = "new-voice"
    expected["maxConversation"] += 1
    expected["scriptDtoList"][2]["scriptContent"] = "Hold on, please."
    assert after == expected  # nothing else moved


async def test_a_value_can_become_any_json_value_even_a_whole_subtree(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    app = sim.apps[1]
    path = f"/_sim/apps/{app.app_id}/conversations/{app.conversation_id}"
    new_scripts = [{"scriptType": 0, "scriptContent": "Hi"}]
    answer = await http.patch(
        path, json={"scriptDtoList": new_scripts, "detailDto.modelName": None, "thirdIsUsed": 1}
    )
    assert answer.json()["changed"] == ["scriptDtoList", "detailDto.modelName", "thirdIsUsed"]
    after = await get_conversation(http, sim, app, app.conversation_id)
    assert after["scriptDtoList"] == new_scripts
    assert after["detailDto"]["modelName"] is None
    assert after["thirdIsUsed"] == 1


async def test_patching_the_same_values_again_reports_no_change(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    app = sim.apps[0]
    path = f"/_sim/apps/{app.app_id}/conversations/{app.conversation_id}"
    first = await http.patch(path, json={"detailDto.ttsSpeaker": "aria-2"})
    again = await http.patch(path, json={"detailDto.ttsSpeaker": "aria-2"})
    assert (first.json()["changed"], again.json()["changed"]) == (["detailDto.ttsSpeaker"], [])


@pytest.mark.parametrize(
    "body",
    [
        {"detailDto.nope": 1},
        {"nope": 1},
        {"scriptDtoList[99].scriptContent": "x"},
        {"scriptDtoList.2.scriptContent": "x"},  # list items are [2], not .2
        {"maxConversation.value": 1},
        {"detailDto[0]": 1},
        {"id": "1"},
        {"detailDto..ttsSpeaker": "x"},
        {},
        ["detailDto.ttsSpeaker"],
        "detailDto.ttsSpeaker",
    ],
)
async def test_a_bad_path_or_body_is_a_400_and_changes_nothing(
    http: httpx.AsyncClient, sim: Simulator, body: Any
) -> None:
    """A good path beside a bad one does not apply either: all or nothing."""
    app = sim.apps[0]
    before = await get_conversation(http, sim, app, app.conversation_id)
    if isinstance(body, dict) and body:
        body = {"detailDto.ttsSpeaker": "changed", **body}
    answer = await http.patch(
        f"/_sim/apps/{app.app_id}/conversations/{app.conversation_id}", json=body
    )
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert await get_conversation(http, sim, app, app.conversation_id) == before


async def test_a_body_that_is_not_json_is_a_400(http: httpx.AsyncClient, sim: Simulator) -> None:
    app = sim.apps[0]
    answer = await http.patch(
        f"/_sim/apps/{app.app_id}/conversations/{app.conversation_id}", content=b"{not json"
    )
    assert answer.status_code == 400
    assert "JSON" in answer.json()["error"]


async def test_an_unknown_app_or_conversation_or_another_apps_conversation_is_a_404(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    one, two = sim.apps[0], sim.apps[1]
    for app, conversation_id in (
        ("nope", one.conversation_id),
        (one.name, "42"),
        (one.name, two.conversation_id),
    ):
        answer = await http.patch(
            f"/_sim/apps/{app}/conversations/{conversation_id}", json={"maxConversation": 1}
        )
        assert answer.status_code == 404
        assert answer.json()["error"]


async def test_the_state_lists_each_apps_conversation_ids(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    state = (await http.get("/_sim/state")).json()
    for app, shown in zip(sim.apps, state["apps"], strict=True):
        assert shown["conversation_ids"] == [app.conversation_id] == sim.conversation_ids(app.name)
    assert state["avatar_training_seconds"] == TRAINING_SECONDS


# --------------------------------------------------------------------------- session lists


@pytest.mark.parametrize(
    "shape",
    [
        ListShape(),
        ListShape("list", "uuid", "startTime", "epoch_ms"),
        ListShape("object-list", "session_id", "gmtCreate", "iso_utc", include_total=False),
        ListShape("rows", "id", "createdAt", "epoch_s_str"),
        ListShape("sessions", "sessionId", "start_time", "iso_offset"),
        ListShape("items", "uuid", "beginTime", "iso_naive"),
        ListShape("data", "session_id", "createTime", "epoch_ms_str"),
    ],
    ids=str,
)
async def test_every_session_list_item_names_its_apps_conversation_in_every_shape(
    http: httpx.AsyncClient, sim: Simulator, shape: ListShape
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, shape)
    sim.add_session(app.app_id, age_seconds=30)
    sim.add_session(app.app_id, with_id=False)
    rows = rows_of(await session_list(http, sim, app), shape)
    assert len(rows) == 2
    assert [row["conversationId"] for row in rows] == [app.conversation_id] * 2


def test_workload_sessions_carry_the_same_conversation_for_the_same_seed() -> None:
    one = Simulator(apps=3, seed=11, clock=FakeClock())
    two = Simulator(apps=3, seed=11, clock=FakeClock())

    def picture(sim: Simulator) -> list[list[tuple[str, str | None]]]:
        return [
            [(s.session_id, s.conversation_id) for s in sim.live_sessions(app.app_id)]
            for app in sim.apps
        ]

    assert picture(one) == picture(two)
    for app in one.apps:
        sessions = one.live_sessions(app.app_id)
        assert sessions
        assert {s.conversation_id for s in sessions} <= set(one.conversation_ids(app.app_id))


async def test_once_an_avatar_adds_a_conversation_new_sessions_are_spread_over_both(
    http: httpx.AsyncClient, sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    sim.set_avatar_training_seconds(0)
    body = {"customType": 2, "avatarName": "Ada", "coverUrl": "https://p/a.png", "profile": "hi"}
    avatar_id = sim.create_avatar(app, body)
    default = sim.query_avatar(app, avatar_id)["defaultConversationId"]
    assert sim.conversation_ids(app.app_id) == [app.conversation_id, default]
    seen = {sim.add_session(app.app_id).conversation_id for _ in range(40)}
    assert seen == {app.conversation_id, default}
    state = (await http.get("/_sim/state")).json()
    assert state["apps"][0]["conversation_ids"] == [app.conversation_id, default]


async def test_the_clients_session_list_parser_reads_sessions_beside_the_conversation_id(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    app = sim.apps[0]
    for shape in (ListShape(), ListShape("list", "id", "startTime", "epoch_s")):
        sim.set_shape(app.app_id, shape)
        session = sim.add_session(app.app_id, age_seconds=60)
        data = await session_list(http, sim, app)
        parsed = parse.parse_session_list(data, mapping=SessionListMapping(), zone=SHANGHAI)
        ids = {s.session_id for s in parsed.sessions}
        assert session.session_id in ids
        assert None not in ids  # the conversation id is never taken for a session id


# --------------------------------------------------------------------------- avatar training


def test_avatar_training_time_is_a_constructor_argument(clock: FakeClock) -> None:
    sim = Simulator(apps=1, seed=7, clock=clock, workload=False, avatar_training_seconds=5)
    app = sim.apps[0]
    avatar_id = sim.create_avatar(app, {"customType": 2, "avatarName": "Bo", "coverUrl": "u"})
    assert sim.query_avatar(app, avatar_id)["customizedStatus"] == 0
    clock.advance(4.9)
    assert sim.query_avatar(app, avatar_id)["customizedStatus"] == 0
    clock.advance(0.1)
    assert sim.query_avatar(app, avatar_id)["customizedStatus"] == 1


@pytest.mark.parametrize("seconds", [-1, float("inf"), float("nan"), 8 * 24 * 3600])
def test_a_training_time_out_of_range_is_refused(clock: FakeClock, seconds: float) -> None:
    with pytest.raises(ValueError, match="training seconds"):
        Simulator(apps=1, clock=clock, avatar_training_seconds=seconds)


async def test_put_training_seconds_zero_makes_the_first_query_final_and_fail_still_fails(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    app = sim.apps[0]
    put = await http.put("/_sim/avatars/training", json={"seconds": 0})
    assert (put.status_code, put.json()) == (200, {"seconds": 0.0})
    assert (await http.get("/_sim/avatars/training")).json() == {"seconds": 0.0}
    good = sim.create_avatar(app, {"customType": 2, "avatarName": "Cy", "coverUrl": "u"})
    bad = sim.create_avatar(app, {"customType": 2, "avatarName": "will-FAIL", "coverUrl": "u"})
    assert sim.query_avatar(app, good)["customizedStatus"] == 1
    failed = sim.query_avatar(app, bad)
    assert failed["customizedStatus"] == 2
    assert failed["reason"]


async def test_a_new_training_time_applies_to_avatars_created_afterwards(
    http: httpx.AsyncClient, sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    early = sim.create_avatar(app, {"customType": 2, "avatarName": "Early", "coverUrl": "u"})
    await http.put("/_sim/avatars/training", json={"seconds": 600})
    late = sim.create_avatar(app, {"customType": 2, "avatarName": "Late", "coverUrl": "u"})
    clock.advance(TRAINING_SECONDS)
    assert sim.query_avatar(app, early)["customizedStatus"] == 1
    assert sim.query_avatar(app, late)["customizedStatus"] == 0
    clock.advance(600 - TRAINING_SECONDS)
    assert sim.query_avatar(app, late)["customizedStatus"] == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"seconds": -1}, {"seconds": "5"}, {"seconds": True}, {"secs": 5}, [5], {"seconds": 1e9}],
)
async def test_put_training_rejects_bad_bodies_with_a_400(
    http: httpx.AsyncClient, sim: Simulator, body: Any
) -> None:
    answer = await http.put("/_sim/avatars/training", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert sim.avatar_training_seconds == TRAINING_SECONDS


def test_the_sim_command_takes_an_avatar_training_time() -> None:
    parser = build_parser()
    assert parser.parse_args(["sim"]).avatar_training_seconds == TRAINING_SECONDS
    assert parser.parse_args(["sim", "--avatar-training-seconds", "0"]).avatar_training_seconds == 0
    assert (
        parser.parse_args(["sim", "--avatar-training-seconds", "2.5"]).avatar_training_seconds
        == 2.5
    )


@pytest.mark.parametrize("value", ["-1", "soon", "inf"])
def test_the_sim_command_refuses_a_bad_training_time(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["sim", "--avatar-training-seconds", value])
    assert exited.value.code == 2
    assert "--avatar-training-seconds" in capsys.readouterr().err


# --------------------------------------------------------------------------- over loopback


async def test_a_conversation_changed_over_loopback_is_read_back_changed() -> None:
    """Real sockets, real clock: PATCH, then the signed getConversationById."""
    sim = Simulator(apps=1, seed=3, workload=False)
    app = sim.apps[0]
    token = token_for(app, datetime.now(UTC))
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, sim, "127.0.0.1", 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                patched = await client.patch(
                    f"/_sim/apps/{app.app_id}/conversations/{app.conversation_id}",
                    json={"detailDto.ttsSpeaker": "loopback-voice"},
                )
                read = await client.get(
                    f"{V2}/getConversationById",
                    params={"conversationId": app.conversation_id},
                    headers={"token": token},
                )
            tg.cancel_scope.cancel()
    assert patched.json()["changed"] == ["detailDto.ttsSpeaker"]
    assert read.json()["data"]["detailDto"]["ttsSpeaker"] == "loopback-voice"
