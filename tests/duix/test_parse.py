"""duix.parse: envelopes, the error table, timestamps and tolerant session-list parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from duixwatch.config import SessionListMapping
from duixwatch.core import errors, models
from duixwatch.duix import parse

SHANGHAI = ZoneInfo("Asia/Shanghai")
AUTO = SessionListMapping()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# 2026-11-21 12:00:00 UTC == 20:00:00 in Shanghai
T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
T0_EPOCH = int(T0.timestamp())


def sessions_of(data: Any, mapping: SessionListMapping = AUTO) -> models.SessionList:
    return parse.parse_session_list(data, mapping=mapping, zone=SHANGHAI)


# --------------------------------------------------------------------------- envelope


def envelope(doc: Any, status: int = 200) -> Any:
    return parse.parse_envelope(
        method="GET", path="/p", status=status, content=json.dumps(doc).encode()
    )


@pytest.mark.parametrize("code", ["0", "200", "", None])
def test_success_is_decided_by_the_success_flag_whatever_the_code(code: str | None) -> None:
    assert envelope({"code": code, "data": {"x": 1}, "success": True}) == {"x": 1}


def test_success_false_on_http_200_is_an_error_keeping_the_code_as_a_string() -> None:
    with pytest.raises(errors.ApiQuotaExceeded) as info:
        envelope({"code": 1009, "message": "quota insufficient", "success": False})
    assert info.value.code == "1009"
    assert info.value.status == 200
    assert "quota insufficient" in str(info.value)


def test_a_truthy_but_not_true_success_flag_is_not_success() -> None:
    with pytest.raises(errors.ApiClientError):
        envelope({"code": "0", "data": {}, "success": "true"})


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (200, "1005", errors.ApiAuthRejected),
        (200, "1006", errors.ApiAuthRejected),
        (200, "40001", errors.ApiAuthRejected),
        (401, None, errors.ApiAuthRejected),
        (403, None, errors.ApiAuthRejected),
        (200, "1009", errors.ApiQuotaExceeded),
        (200, "50007", errors.ApiQuotaExceeded),
        (200, "2002", errors.ApiNotFound),
        (404, None, errors.ApiNotFound),
        (200, "-1", errors.ApiServerError),
        (200, "40002", errors.ApiServerError),
        (200, "50004", errors.ApiServerError),
        (200, "50005", errors.ApiServerError),
        (200, "50009", errors.ApiServerError),
        (500, None, errors.ApiServerError),
        (503, None, errors.ApiServerError),
        (200, "50003", errors.ApiClientError),
        (400, None, errors.ApiClientError),
        (429, None, errors.ApiRateLimited),
        (200, "12345", errors.ApiClientError),
    ],
)
def test_the_error_table_maps_status_and_code_to_one_class(
    status: int, code: str | None, expected: type[errors.ApiError]
) -> None:
    exc = parse.error_for(method="GET", path="/p", status=status, code=code, message="m", body=None)
    assert type(exc) is expected


def test_a_non_json_5xx_body_is_a_server_error_with_a_short_excerpt() -> None:
    body = b"<html>" + b"x" * 5000 + b"</html>"
    with pytest.raises(errors.ApiServerError) as info:
        parse.parse_envelope(method="GET", path="/p", status=502, content=body)
    assert info.value.body_excerpt is not None
    assert len(info.value.body_excerpt) <= 256


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[1,2]", b'{"code": "0", "data": {}}', b"null", b'"ok"']
)
def test_a_200_that_is_not_an_envelope_is_malformed(content: bytes) -> None:
    with pytest.raises(errors.ApiMalformed):
        parse.parse_envelope(method="GET", path="/p", status=200, content=content)


def test_rate_limit_carries_retry_after() -> None:
    with pytest.raises(errors.ApiRateLimited) as info:
        parse.parse_envelope(
            method="GET", path="/p", status=429, content=b"slow down", retry_after_seconds=7
        )
    assert info.value.retry_after_seconds == 7


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("5", 5.0),
        ("0", 0.0),
        ("2.5", 2.5),
        ("Sat, 21 Nov 2026 12:00:30 GMT", 30.0),
        ("soon", None),
        (None, None),
        ("-3", 0.0),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(
    header: str | None, expected: float | None
) -> None:
    assert parse.parse_retry_after(header, now=T0) == expected


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    "value",
    [
        T0_EPOCH,  # epoch seconds
        T0_EPOCH * 1000,  # epoch milliseconds
        float(T0_EPOCH),
        str(T0_EPOCH),  # numeric string, seconds
        str(T0_EPOCH * 1000),  # numeric string, milliseconds
        "2026-11-21T12:00:00Z",  # ISO-8601 UTC
        "2026-11-21T12:00:00.000Z",
        "2026-11-21T20:00:00+08:00",  # ISO-8601 with offset
        "2026-11-21T20:00:00",  # ISO-8601 without zone: configured zone
        "2026-11-21 20:00:00",  # yyyy-MM-dd HH:mm:ss without zone: configured zone
        "2026/11/21 20:00:00",
    ],
)
def test_every_start_time_format_reads_as_the_same_instant(value: Any) -> None:
    assert parse.parse_timestamp(value, zone=SHANGHAI) == T0


def test_zone_less_times_use_the_configured_zone() -> None:
    utc = parse.parse_timestamp("2026-11-21 12:00:00", zone=ZoneInfo("UTC"))
    shanghai = parse.parse_timestamp("2026-11-21 12:00:00", zone=SHANGHAI)
    assert utc - shanghai == timedelta(hours=8)


@pytest.mark.parametrize(
    "value", [None, True, "", "yesterday", "2026-13-45 99:99:99", float("nan"), -5, {}, 1e30]
)
def test_unreadable_times_raise_value_error(value: Any) -> None:
    with pytest.raises(ValueError, match=r"timestamp|epoch|finite"):
        parse.parse_timestamp(value, zone=SHANGHAI)


# --------------------------------------------------------------------------- session lists


def item(id_key: str = "sessionId", time_key: str = "createTime", **extra: Any) -> dict[str, Any]:
    return {id_key: "1860000000000000001", time_key: T0_EPOCH * 1000, "userId": "7", **extra}


def test_data_as_a_bare_list() -> None:
    result = sessions_of([item()])
    assert result.sessions == (models.Session("1860000000000000001", T0),)
    assert result.shape == "data[] id=sessionId started_at=createTime"
    assert result.total is None


@pytest.mark.parametrize("container", parse.ITEM_CONTAINER_KEYS)
def test_data_as_an_object_holding_the_list_under_each_known_key(container: str) -> None:
    result = sessions_of({container: [item(), item(sessionId="1860000000000000002")], "total": 2})
    assert len(result) == 2
    assert result.total == 2
    assert result.shape.startswith(f"data.{container}[]")


@pytest.mark.parametrize("id_key", parse.ID_KEYS)
def test_each_session_id_key_is_recognised(id_key: str) -> None:
    (session,) = sessions_of([item(id_key=id_key)]).sessions
    assert session.session_id == "1860000000000000001"


def test_the_first_present_id_key_wins() -> None:
    (session,) = sessions_of([{"id": 5, "uuid": "abc", "createTime": T0_EPOCH}]).sessions
    assert session.session_id == "abc"


@pytest.mark.parametrize("time_key", parse.START_KEYS)
def test_each_start_time_key_is_recognised(time_key: str) -> None:
    (session,) = sessions_of([item(time_key=time_key)]).sessions
    assert session.started_at == T0


def test_ids_stay_strings_even_when_sent_as_19_digit_numbers() -> None:
    (session,) = sessions_of([{"sessionId": 1860000000000000001}]).sessions
    assert session.session_id == "1860000000000000001"


def test_a_session_without_an_id_is_counted_but_not_actionable() -> None:
    result = sessions_of({"records": [{"createTime": T0_EPOCH}, item()]})
    assert len(result) == 2
    assert [s.actionable for s in result.sessions] == [False, True]


def test_a_session_without_a_start_time_has_no_age() -> None:
    (session,) = sessions_of([{"sessionId": "x"}]).sessions
    assert session.started_at is None
    assert session.age_seconds(T0) is None


def test_an_unparsable_start_time_is_treated_as_unknown_not_as_an_error() -> None:
    (session,) = sessions_of([{"sessionId": "x", "startTime": "soon"}]).sessions
    assert session.started_at is None


@pytest.mark.parametrize(
    "data", [None, [], {}, {"total": 0}, {"records": None, "total": 0}, {"list": []}]
)
def test_empty_answers_mean_no_sessions(data: Any) -> None:
    assert len(sessions_of(data)) == 0


def test_a_list_of_bare_ids_is_accepted() -> None:
    result = sessions_of(["1", 2])
    assert [s.session_id for s in result.sessions] == ["1", "2"]


def test_the_explicit_mapping_overrides_detection() -> None:
    data = {
        "page": {"content": [{"callId": "c-1", "id": "row-9", "t": "2026-11-21 20:00:00"}]},
        "records": [{"sessionId": "decoy"}],
        "total": 1,
    }
    mapping = SessionListMapping(items="page.content", id="callId", started_at="t")
    result = sessions_of(data, mapping)
    assert result.sessions == (models.Session("c-1", T0),)
    assert result.shape == "data.page.content[] id=callId started_at=t"


def test_an_explicit_mapping_with_an_empty_items_path_means_data_is_the_list() -> None:
    result = sessions_of([{"callId": "c"}], SessionListMapping(items="", id="callId"))
    assert result.sessions[0].session_id == "c"


def test_a_wrong_explicit_mapping_is_a_parse_error_naming_the_setting() -> None:
    with pytest.raises(errors.ResponseParseError, match=r"duix\.session_list\.items"):
        sessions_of({"records": []}, SessionListMapping(items="page.content"))


def test_an_unknown_shape_is_a_parse_error_that_shows_keys_but_never_values() -> None:
    secret = "do-not-log-this-value"
    with pytest.raises(errors.ResponseParseError) as info:
        sessions_of({"page": {"content": [{"callId": secret}]}})
    assert info.value.shape == "{page:{content:[{callId:str} x1]}}"
    assert secret not in str(info.value)


def test_an_item_that_is_not_an_object_is_a_parse_error() -> None:
    with pytest.raises(errors.ResponseParseError, match="item 1"):
        sessions_of([item(), [1, 2]])


# --------------------------------------------------------------------------- properties

ids = st.one_of(
    st.integers(min_value=10**18, max_value=2**63 - 1),
    st.from_regex(r"[0-9a-f-]{1,36}", fullmatch=True).filter(lambda s: s.strip() != ""),
)
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


def render_time(instant: datetime, fmt: str) -> Any:
    local = instant.astimezone(SHANGHAI)
    return {
        "epoch_s": int(instant.timestamp()),
        "epoch_ms": int(instant.timestamp()) * 1000,
        "epoch_s_str": str(int(instant.timestamp())),
        "epoch_ms_str": str(int(instant.timestamp()) * 1000),
        "iso_utc": instant.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "iso_offset": local.isoformat(),
        "iso_naive": local.replace(tzinfo=None).isoformat(),
        "local": local.strftime("%Y-%m-%d %H:%M:%S"),
    }[fmt]


@st.composite
def well_formed_lists(draw: st.DrawFn) -> tuple[Any, list[models.Session]]:
    id_key = draw(st.sampled_from(parse.ID_KEYS))
    time_key = draw(st.sampled_from(parse.START_KEYS))
    fmt = draw(
        st.sampled_from(
            [
                "epoch_s",
                "epoch_ms",
                "epoch_s_str",
                "epoch_ms_str",
                "iso_utc",
                "iso_offset",
                "iso_naive",
                "local",
            ]
        )
    )
    rows = draw(st.lists(st.tuples(ids, instants), max_size=8))
    items = [{id_key: sid, time_key: render_time(t, fmt), "status": "in_call"} for sid, t in rows]
    first: dict[str, models.Session] = {}  # an id listed again is the same session
    for sid, t in rows:
        first.setdefault(str(sid).strip(), models.Session(str(sid).strip(), t))
    expected = list(first.values())
    container = draw(st.sampled_from((None, *parse.ITEM_CONTAINER_KEYS)))
    data: Any = items if container is None else {container: items, "total": len(items)}
    return data, expected


@given(well_formed_lists())
def test_random_well_formed_variants_round_trip(case: tuple[Any, list[models.Session]]) -> None:
    data, expected = case
    assert list(sessions_of(data).sessions) == expected


json_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [*parse.ITEM_CONTAINER_KEYS, *parse.ID_KEYS, *parse.START_KEYS, "total", "x"]
            )
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(json_junk)
def test_random_junk_never_raises_anything_but_a_typed_parse_error(data: Any) -> None:
    try:
        result = sessions_of(data)
    except errors.ResponseParseError:
        return
    for session in result.sessions:
        assert session.session_id is None or isinstance(session.session_id, str)
        assert session.started_at is None or session.started_at.tzinfo is not None


@given(st.binary(max_size=200), st.sampled_from([200, 400, 429, 500]))
def test_random_bytes_in_an_envelope_only_raise_api_errors(content: bytes, status: int) -> None:
    try:
        parse.parse_envelope(method="GET", path="/p", status=status, content=content)
    except errors.ApiError:
        return


# --------------------------------------------------------------------------- other payloads


def test_concurrency_keeps_both_numbers_under_their_own_names() -> None:
    got = parse.parse_concurrency(
        {"cropId": 1003645, "totalConcurrentNumber": 10, "userConcurrentNumber": "3"}
    )
    assert got == models.Concurrency(
        corp_id="1003645", total_concurrent_number=10, user_concurrent_number=3
    )


def test_concurrency_without_numbers_is_a_parse_error() -> None:
    with pytest.raises(errors.ResponseParseError):
        parse.parse_concurrency({"cropId": "1"})


def test_the_seed_conversation_parses_without_losing_documented_fields() -> None:
    """The real getConversationById output from the seed docs, verbatim."""
    doc = json.loads((FIXTURES / "get_conversation_by_id.json").read_text())
    data = parse.parse_envelope(
        method="GET",
        path="/duix-openapi-v2/sdk/getConversationById",
        status=200,
        content=json.dumps(doc).encode(),
    )
    conv = parse.parse_conversation(data)
    assert conv.id == "108"
    assert conv.conversation_name == "Unnamed-18:04"
    assert conv.corp_id == "1003645"
    detail = conv.detail_dto
    assert detail is not None
    assert detail.model_id == "321486924406853"
    assert detail.model_name == "Model name"
    assert detail.model_id_type == "0"
    assert detail.local_model_info is None
    assert detail.background_dto is not None
    assert detail.background_dto.background_url == "/video-server/jpg/1592809647136509954.jpg"
    assert detail.background_dto.background_code == "1591003727513522176"
    (script,) = conv.script_dto_list
    assert script.script_type == "0"
    assert script.script_content == "Els silvrants"
    assert script.tts_content is None
    # Nothing is lost: every field of the platform's document survives, ids as strings.
    dumped = json.loads(json.dumps(conv.model_dump(by_alias=True)))
    assert flatten(dumped) == flatten(doc["data"])


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf by path, with integers compared as strings (ids are kept as strings)."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}.{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()
        }
    if isinstance(value, int) and not isinstance(value, bool):
        return {prefix: str(value)}
    return {prefix: value}


def test_avatar_status_follows_the_seed_and_tolerates_the_newer_docs() -> None:
    seed = parse.parse_avatar(
        {"id": 7, "customizedName": "a", "customizedStatus": 1, "defaultConversationId": 9},
        requested_id="7",
    )
    assert (seed.status, seed.default_conversation_id) == ("success", "9")
    newer = parse.parse_avatar({"taskId": "t-1", "status": 1, "reason": "bad"}, requested_id="x")
    assert (newer.avatar_id, newer.status, newer.reason) == ("t-1", "failed", "bad")
    unknown = parse.parse_avatar({"id": 1, "customizedStatus": 9}, requested_id="1")
    assert unknown.status == "unknown"


@pytest.mark.parametrize(
    ("field", "code", "status"),
    [
        # the seed (createAvatar/queryAvatar): customizedStatus 0 training / 1 success / 2 failed
        ("customizedStatus", 0, "training"),
        ("customizedStatus", 1, "success"),
        ("customizedStatus", 2, "failed"),
        ("customizedStatus", "2", "failed"),  # a code sent as text is the same code
        # the newer public docs: status 0 training / 1 failed / 2 success
        ("status", 0, "training"),
        ("status", 1, "failed"),
        ("status", 2, "success"),
        ("status", "2", "success"),
        ("status", 3, "unknown"),
    ],
)
def test_both_avatar_status_vocabularies_are_understood_by_which_field_is_present(
    field: str, code: int | str, status: str
) -> None:
    avatar = parse.parse_avatar({"id": 7, field: code}, requested_id="7")
    assert avatar.status == status
    assert avatar.status_code == int(code)


def test_the_seeds_customized_status_wins_when_both_fields_are_present() -> None:
    # 1 is "success" in the seed's vocabulary and "failed" in the newer docs'
    both = parse.parse_avatar({"id": 7, "customizedStatus": 1, "status": 1}, requested_id="7")
    assert both.status == "success"
    # 2 is "failed" in the seed's and "success" in the newer docs'
    both = parse.parse_avatar({"id": 7, "customizedStatus": 2, "status": 2}, requested_id="7")
    assert both.status == "failed"


def test_created_avatar_id_from_id_or_task_id() -> None:
    assert parse.parse_avatar_created({"id": 42}).avatar_id == "42"
    assert parse.parse_avatar_created({"taskId": "t"}).avatar_id == "t"
    with pytest.raises(errors.ResponseParseError):
        parse.parse_avatar_created({})


def test_an_id_listed_twice_is_one_session() -> None:
    items = [
        {"sessionId": str(9_000_000_000_000_000_000 + i % 5), "createTime": 1_700_000_000 + i}
        for i in range(10)
    ]
    listing = parse.parse_session_list(
        {"records": items, "total": 10}, mapping=SessionListMapping(), zone=UTC
    )
    assert len(listing) == 5
    assert listing.duplicates == 5
    assert len({s.session_id for s in listing.sessions}) == 5
    # the first listing of an id wins
    assert listing.sessions[0].started_at == datetime.fromtimestamp(1_700_000_000, UTC)
    bare = parse.parse_session_list(["1", "2", "1", 3], mapping=SessionListMapping(), zone=UTC)
    assert [s.session_id for s in bare.sessions] == ["1", "2", "3"]
    assert bare.duplicates == 1
