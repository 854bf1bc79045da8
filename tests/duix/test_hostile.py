"""Hostile platform answers (issue 15 §4): parsing and the client survive each with a clear
``malformed`` error for the call, or, where one list item is bad, for that item alone.

The parse rules directly, then the client against the simulator's ``hostile`` faults in-process.
The wire cases (a 50 MiB body, a trickle) are in tests/duix/test_wire.py, over loopback.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from duixwatch.config import DuixSettings, SessionListMapping
from duixwatch.core import errors, models
from duixwatch.duix import DuixClient, parse
from duixwatch.sim import ListShape, Simulator, create_app, hostile
from tests.fakes import FakeClock

SHANGHAI = ZoneInfo("Asia/Shanghai")
AUTO = SessionListMapping()
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
GOOD = int((NOW - timedelta(minutes=5)).timestamp())


def listing(*starts: Any, now: datetime | None = NOW) -> models.SessionList:
    items = [
        {"sessionId": f"18600000000000000{i:02d}", "createTime": s} for i, s in enumerate(starts)
    ]
    return parse.parse_session_list({"records": items}, mapping=AUTO, zone=SHANGHAI, now=now)


# --------------------------------------------------------------------------- start times


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        (0, "int 1 digits: before 2000"),  # 1970-01-01
        ("1970-01-01 08:00:00", "str len 19: before 2000"),
        ("1900-01-01 00:00:00", "str len 19: before 2000"),
        ("1999-12-31T23:59:59Z", "str len 20: before 2000"),
        (946684799000, "int 12 digits: before 2000"),  # epoch ms, one second before 2000
        (int((NOW + timedelta(days=2)).timestamp()), "int 10 digits: more than a day ahead"),
        ("2026-11-23 20:00:01", "str len 19: more than a day ahead"),
        ("0001-01-01 00:00:00", "str len 19: unreadable"),  # OverflowError in Shanghai
        ("9999-12-31T23:59:59-12:00", "str len 25: unreadable"),  # OverflowError to UTC
        (10**400, "int >20 digits: unreadable"),  # OverflowError as a float
        ("\uff12\uff10\uff12\uff16-11-21 20:00:00", "str len 19: unreadable"),  # full-width digits
        ("1\uff1700000000", "str len 10: unreadable"),
        (float("nan"), "float: unreadable"),
        ("yesterday", "str len 9: unreadable"),
    ],
)
def test_an_implausible_or_unreadable_start_counts_as_unknown_for_that_item_alone(
    value: Any, shape: str
) -> None:
    """The bad item keeps its id (it is counted and aged from first sight) with no start;
    the good one beside it is untouched; the shape says what was wrong, never the value."""
    parsed = listing(value, GOOD)
    bad, good = parsed.sessions
    assert bad.session_id == "1860000000000000000"
    assert bad.started_at is None
    assert bad.start_rejected
    assert good.started_at == datetime.fromtimestamp(GOOD, UTC)
    assert not good.start_rejected
    assert parsed.rejected_starts == (shape,)
    if isinstance(value, str) and len(value) > 3:
        assert value not in " ".join(parsed.rejected_starts)


@pytest.mark.parametrize(
    "value",
    [
        "2000-01-01T00:00:00Z",
        946684800,  # 2000-01-01 00:00:00 UTC, epoch seconds
        int((NOW + timedelta(hours=23)).timestamp()),  # a platform clock ahead of ours
        "2026-11-21 20:05:00",  # five minutes ahead, in Shanghai
    ],
)
def test_a_plausible_start_is_kept(value: Any) -> None:
    (session,) = listing(value).sessions
    assert session.started_at is not None
    assert not session.start_rejected
    assert listing(value).rejected_starts == ()


def test_without_now_only_the_start_of_2000_bounds_a_start() -> None:
    far = int((NOW + timedelta(days=400)).timestamp())
    (ahead,) = listing(far, now=None).sessions
    assert ahead.started_at is not None
    (old,) = listing(0, now=None).sessions
    assert old.started_at is None


def test_rejected_start_shapes_are_listed_once_each_and_bounded() -> None:
    parsed = listing(*(["1970-01-01 08:00:00"] * 50), *("x" * n for n in range(1, 60)))
    assert len(parsed.sessions) == 109
    assert all(s.start_rejected for s in parsed.sessions)
    assert parsed.rejected_starts[0] == "str len 19: before 2000"
    assert len(parsed.rejected_starts) == len(set(parsed.rejected_starts)) == 8


@pytest.mark.parametrize("value", ["0001-01-01 00:00:00", "9999-12-31T23:59:59-12:00", 10**400])
def test_a_time_a_datetime_cannot_hold_is_a_value_error_not_an_overflow(value: Any) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse.parse_timestamp(value, zone=SHANGHAI)


def test_a_naive_year_9999_west_of_utc_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse.parse_timestamp("9999-12-31 23:59:59", zone=ZoneInfo("America/Los_Angeles"))


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize(
    "value",
    [
        "²",
        "1²",
        "\u0661\u0662",  # Arabic-Indic digits: int() reads them, DUIX does not write them
        "\uff11\uff12",  # full-width digits
        " 12",
        "+12",
        10**400,
        "1" + "0" * 400,
        2**53,
        str(2**53),
        -3,
        "-3",
        float("nan"),
        float("inf"),
        3.0,
        True,
        None,
    ],
)
def test_a_count_that_is_not_a_plain_whole_number_is_malformed(value: Any) -> None:
    data = {"cropId": "1", "totalConcurrentNumber": 10, "userConcurrentNumber": value}
    with pytest.raises(errors.ResponseParseError, match="userConcurrentNumber"):
        parse.parse_concurrency(data)


@pytest.mark.parametrize("value", [0, 7, "7", 2**53 - 1, str(2**53 - 1)])
def test_a_count_is_a_whole_number_below_two_to_the_53(value: Any) -> None:
    data = {"totalConcurrentNumber": value, "userConcurrentNumber": 0}
    assert parse.parse_concurrency(data).total_concurrent_number == int(value)


@pytest.mark.parametrize("total", ["²", 10**400, -3, "NaN", 2**60])
def test_a_bad_total_beside_the_list_is_ignored_not_exported(total: Any) -> None:
    parsed = parse.parse_session_list(
        {"records": [{"sessionId": "1"}], "total": total}, mapping=AUTO, zone=SHANGHAI
    )
    assert parsed.total is None
    assert len(parsed) == 1


def test_an_avatar_status_in_superscript_digits_is_unknown() -> None:
    avatar = parse.parse_avatar({"customizedStatus": "²"}, requested_id="5")
    assert (avatar.status, avatar.status_code) == ("unknown", None)


# --------------------------------------------------------------------------- bodies


def envelope_bytes(content: bytes, status: int = 200) -> Any:
    return parse.parse_envelope(method="GET", path="/p", status=status, content=content)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_and_the_answer_is_malformed(constant: str) -> None:
    body = '{"success":true,"data":{"userConcurrentNumber":' + constant + "}}"
    with pytest.raises(errors.ApiMalformed, match=f"not JSON.*{constant}") as caught:
        envelope_bytes(body.encode())
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("depth", [1_000, hostile.DEEP_LEVELS, 100_000])
def test_json_nested_thousands_deep_is_malformed_not_a_recursion_error(depth: int) -> None:
    body = b'{"success":true,"data":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(errors.ApiMalformed, match="nested too deeply"):
        envelope_bytes(body)


def test_a_number_too_long_for_python_is_malformed() -> None:
    body = b'{"success":true,"data":{"userConcurrentNumber":' + b"9" * 5000 + b"}}"
    with pytest.raises(errors.ApiMalformed, match="not JSON"):
        envelope_bytes(body)


def test_a_deep_error_body_is_still_the_status_error() -> None:
    with pytest.raises(errors.ApiServerError):
        envelope_bytes(b"[" * 5000, status=503)


def test_describe_shape_is_bounded_on_deep_wide_and_hostile_values() -> None:
    deep: Any = []
    for _ in range(100_000):  # built without recursion, deeper than any recursion limit
        deep = [deep]
    assert parse.describe_shape(deep).count("[") <= 5
    wide = {
        f"k{i}": {f"k{j}": {f"k{m}": {"x": 1} for m in range(30)} for j in range(30)}
        for i in range(30)
    }
    assert len(parse.describe_shape(wide)) <= 1_000
    hostile_keys = {"<b>" * 10_000: 1}
    assert len(parse.describe_shape(hostile_keys)) <= 1_000


# --------------------------------------------------------------------------- lists


def test_two_hundred_thousand_items_parse_in_reasonable_time() -> None:
    items = [
        {"sessionId": f"9{i:018d}", "createTime": "2026-11-21 19:59:00", "status": "in_call"}
        for i in range(200_000)
    ]
    started = time.perf_counter()
    parsed = parse.parse_session_list({"records": items}, mapping=AUTO, zone=SHANGHAI, now=NOW)
    elapsed = time.perf_counter() - started
    assert len(parsed) == 200_000
    assert parsed.rejected_starts == ()
    assert len(parsed.starts_us) == 200_000
    assert elapsed < 10.0, f"{elapsed:.1f} s for 200,000 items"


def test_an_id_too_long_to_be_a_duix_id_is_no_id() -> None:
    parsed = parse.parse_session_list(
        [{"sessionId": "1" * 1000}, {"sessionId": 10**400}, {"sessionId": "7"}],
        mapping=AUTO,
        zone=SHANGHAI,
    )
    assert [s.session_id for s in parsed.sessions] == [None, None, "7"]


def test_an_id_with_markup_and_a_newline_is_kept_as_it_is() -> None:
    """It is data: escaped wherever it is shown (tests/export, tests/watch), never rewritten."""
    (session,) = parse.parse_session_list(
        [{"sessionId": hostile.MARKUP_ID}], mapping=AUTO, zone=SHANGHAI
    ).sessions
    assert session.session_id == hostile.MARKUP_ID.strip()


# --------------------------------------------------------------------------- the client


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    return Simulator(apps=2, seed=7, clock=clock, workload=False)


@pytest.fixture
async def client(sim: Simulator, clock: FakeClock) -> AsyncIterator[DuixClient]:
    config = DuixSettings(base_url="http://sim.test", max_requests_per_second=10_000)
    transport = httpx.ASGITransport(app=create_app(sim))
    async with DuixClient(config, clock=clock, transport=transport, rng=random.Random(3)) as duix:
        yield duix


def creds(sim: Simulator, index: int = 0) -> models.AppCredentials:
    app = sim.apps[index]
    return models.AppCredentials(app_id=app.app_id, app_key=SecretStr(app.app_key))


@pytest.mark.parametrize(
    "kind", ["count_superscript", "count_huge", "count_nan", "count_infinity", "count_negative"]
)
async def test_a_bad_count_is_a_malformed_answer(
    sim: Simulator, client: DuixClient, kind: str
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", hostile=kind)
    with pytest.raises(errors.ApiMalformed) as caught:
        await client.concurrency(creds(sim))
    assert caught.value.reason == "malformed"
    numbers = await client.concurrency(creds(sim, 1))
    assert numbers.user_concurrent_number == 0


@pytest.mark.parametrize("endpoint", ["getconcurrentNumber", "getconcurrentList"])
async def test_deep_json_is_a_malformed_answer(
    sim: Simulator, client: DuixClient, endpoint: str
) -> None:
    sim.faults.set("*", endpoint, hostile="deep_json")
    call = client.concurrency if endpoint == "getconcurrentNumber" else client.sessions
    with pytest.raises(errors.ApiMalformed, match="nested too deeply"):
        await call(creds(sim))
    assert sys.getrecursionlimit() == 1000  # nothing raised it to get through


@pytest.mark.parametrize(
    "kind", ["start_1970", "start_1900", "start_year1", "start_9999", "future_start"]
)
async def test_a_bad_start_time_leaves_that_session_without_a_start(
    sim: Simulator, client: DuixClient, clock: FakeClock, kind: str
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, ListShape.parse("records/sessionId/createTime/local"))
    made = [sim.add_session(app.app_id, age_seconds=age) for age in (120, 60)]
    sim.faults.set(app.app_id, "getconcurrentList", hostile=kind)
    listed = await client.sessions(creds(sim))
    first, second = listed.sessions
    assert (first.session_id, first.started_at, first.start_rejected) == (
        made[0].session_id,
        None,
        True,
    )
    assert second.started_at is not None
    assert abs((second.started_at - made[1].started_at).total_seconds()) <= 1
    assert not second.start_rejected
    assert len(listed.rejected_starts) == 1


async def test_a_shape_that_flips_between_polls_is_read_each_time(
    sim: Simulator, client: DuixClient
) -> None:
    app = sim.apps[0]
    made = {sim.add_session(app.app_id, age_seconds=age).session_id for age in (5, 50)}
    sim.faults.set(app.app_id, "getconcurrentList", hostile="shape_flip")
    shapes = set()
    for _ in range(7):
        listed = await client.sessions(creds(sim))
        assert {s.session_id for s in listed.sessions} == made
        assert all(s.started_at is not None for s in listed.sessions)
        shapes.add(listed.shape.split("[]")[0])
    assert shapes == {f"data.{key}" for key in parse.ITEM_CONTAINER_KEYS} | {"data"}


async def test_a_json_answer_is_never_read_with_nan_by_the_client(
    sim: Simulator, client: DuixClient
) -> None:
    sim.add_session(sim.apps[0].app_id)
    sim.set_shape(sim.apps[0].app_id, ListShape.parse("records/sessionId/createTime/local"))
    sim.faults.set("*", "getconcurrentList", hostile="count_nan")  # the list's total
    with pytest.raises(errors.ApiMalformed, match="NaN"):
        await client.sessions(creds(sim))


def test_too_deep_finds_nesting_beyond_the_bound_without_recursing() -> None:
    deep: Any = {}
    for _ in range(100_000):
        deep = {"a": [deep]}
    assert parse.too_deep(deep)
    exactly: Any = 1
    for _ in range(parse.MAX_DOCUMENT_DEPTH):
        exactly = [exactly]
    assert not parse.too_deep(exactly)
    assert parse.too_deep([exactly])
    assert not parse.too_deep({"a": 1, "b": [{"c": None}] * 10_000})
