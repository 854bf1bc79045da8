"""The dialog contract's rules, on recorded exchanges (no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from duixwatch.dialog.contract import (
    REQUIRED_FIELDS,
    Exchange,
    Turn,
    failure_reason,
    judge,
    judge_bad_request,
    question,
)
from duixwatch.dialog.frames import Frame

CID = "1234567890123456789"


def envelope(**changes: Any) -> dict[str, Any]:
    data = {"conversationId": CID, "question": "hi", "answer": "Hello!", "errorMsg": None}
    body: dict[str, Any] = {"code": "200", "msg": "success", "data": data, "success": True}
    for key, value in changes.items():
        if key.startswith("data_"):
            if value is ...:
                del data[key[5:]]
            else:
                data[key[5:]] = value
        elif value is ...:
            del body[key]
        else:
            body[key] = value
    return body


def json_exchange(body: Any, *, end: float = 0.5, raw: bytes | None = None) -> Exchange:
    return Exchange(
        status=200,
        content_type="application/json",
        first_byte=0.1,
        end=end,
        body=raw if raw is not None else json.dumps(body).encode(),
        closed=True,
    )


def stream_exchange(
    chunks: list[Any], *, closed: bool = True, error: Any = None, raw_frames: tuple[str, ...] = ()
) -> Exchange:
    frames = [Frame(json.dumps(c), "message", 0.2 + i * 0.1) for i, c in enumerate(chunks)]
    frames += [Frame(text, "message", 9.0) for text in raw_frames]
    final = next((f.at for f, c in zip(frames, chunks, strict=False) if c.get("isEnd")), None)
    return Exchange(
        status=200,
        content_type="text/event-stream",
        first_byte=0.1,
        end=final if final is not None else (frames[-1].at if closed and frames else None),
        framing="sse",
        frames=tuple(frames),
        closed=closed,
        error=error,
    )


def verdicts(exchange: Exchange, mode: str = "auto", budget: float = 20.0) -> dict[str, str]:
    out = judge(exchange, mode=mode, conversation_id=CID, budget_seconds=budget)  # type: ignore[arg-type]
    return {r.rule: r.verdict for r in out.rules}


def test_the_request_holds_every_field_of_the_seed_table() -> None:
    body = question(
        "And tomorrow?",
        sid="s",
        dh_code="c",
        conversation_id=CID,
        history=[Turn("Open today?", "Yes, until 6.")],
        request_id="r-1",
    )
    assert set(body) == {*REQUIRED_FIELDS, "dh-context", "uuid"}
    assert all(isinstance(v, str) for v in body.values())
    assert json.loads(body["dh-context"]) == [
        {"q": {"context": "Open today?"}, "a": {"context": "Yes, until 6."}}
    ]
    assert body["uuid"] == "r-1"
    assert (
        question("x", sid="s", dh_code="c", conversation_id=CID)["uuid"]
        != question("x", sid="s", dh_code="c", conversation_id=CID)["uuid"]
    )


def test_a_healthy_envelope_passes_every_rule() -> None:
    found = verdicts(json_exchange(envelope()))
    assert set(found.values()) == {"PASS"}
    assert {"envelope.code", "envelope.success", "data.conversationId", "data.answer"} <= set(found)


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"code": 200}, "envelope.code"),
        ({"code": ...}, "envelope.code"),
        ({"success": False}, "envelope.success"),
        ({"success": "true"}, "envelope.success"),
        ({"data_conversationId": "other"}, "data.conversationId"),
        ({"data_answer": ""}, "data.answer"),
        ({"data_answer": ...}, "data.answer"),
        ({"data_errorMsg": "boom"}, "data.errorMsg"),
        ({"data": None}, "data"),
    ],
)
def test_each_envelope_rule_fails_on_its_own(changes: dict[str, Any], rule: str) -> None:
    out = judge(
        json_exchange(envelope(**changes)), mode="json", conversation_id=CID, budget_seconds=20
    )
    failed = [r for r in out.rules if r.verdict == "FAIL"]
    assert [r.rule for r in failed] == [rule]
    assert failure_reason(out.rules) == "contract"


def test_the_answer_may_be_stringified_json_or_plain_text_and_is_warned_otherwise() -> None:
    as_json = judge(
        json_exchange(envelope(data_answer=json.dumps({"text": "hi"}))),
        mode="json",
        conversation_id=CID,
        budget_seconds=20,
    )
    assert {r.rule: r.detail for r in as_json.rules}["data.answer.format"] == "stringified JSON"
    found = verdicts(json_exchange(envelope(data_answer={"text": "hi"})))
    assert found["data.answer"] == "PASS"
    assert found["data.answer.format"] == "WARN"


def test_a_body_that_is_not_json_is_malformed() -> None:
    out = judge(
        json_exchange(None, raw=b"<html>oops"), mode="json", conversation_id=CID, budget_seconds=20
    )
    assert failure_reason(out.rules) == "malformed"
    assert verdicts(json_exchange(None, raw=b"[1, 2]"))["json.body"] == "FAIL"


def test_status_connect_and_timeout_hide_the_rules_behind_them() -> None:
    refused = Exchange(error="connect", error_detail="ConnectError")
    assert [
        r.rule for r in judge(refused, mode="auto", conversation_id=CID, budget_seconds=20).rules
    ] == ["transport"]
    assert (
        failure_reason(judge(refused, mode="auto", conversation_id=CID, budget_seconds=20).rules)
        == "connect"
    )
    silent = Exchange(error="timeout")
    assert (
        failure_reason(judge(silent, mode="auto", conversation_id=CID, budget_seconds=20).rules)
        == "timeout"
    )
    error = Exchange(status=503, content_type="application/json", first_byte=0.1, closed=True)
    out = judge(error, mode="auto", conversation_id=CID, budget_seconds=20)
    assert [(r.rule, r.verdict) for r in out.rules] == [("http.status", "FAIL")]
    assert failure_reason(out.rules) == "http_status"


def test_a_healthy_stream_passes() -> None:
    chunks = [
        {"answer": "Hel", "isEnd": False},
        {"answer": "lo", "isEnd": False},
        {"answer": "", "isEnd": True},
    ]
    out = judge(stream_exchange(chunks), mode="auto", conversation_id=CID, budget_seconds=20)
    assert {r.verdict for r in out.rules} == {"PASS"}
    assert out.answer == "Hello"
    assert out.chunks == 3
    assert out.first_answer == pytest.approx(0.2)
    assert out.total == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("chunks", "kwargs", "rule", "reason"),
    [
        ([{"answer": "a", "isEnd": False}], {}, "stream.final", "contract"),
        (
            [{"answer": "a", "isEnd": True}, {"answer": "b", "isEnd": False}],
            {},
            "stream.after_end",
            "contract",
        ),
        (
            [{"answer": "a", "isEnd": True}, {"answer": "", "isEnd": True}],
            {},
            "stream.final",
            "contract",
        ),
        ([{"answer": "a", "isEnd": True}], {"closed": False}, "stream.closed", "contract"),
        ([{"answer": 5, "isEnd": True}], {}, "stream.chunks", "contract"),
        (
            [{"answer": "a", "isEnd": "yes"}, {"answer": "", "isEnd": True}],
            {},
            "stream.chunks",
            "contract",
        ),
        (
            [{"answer": "a", "isEnd": False}, {"answer": "", "isEnd": True}],
            {"raw_frames": ("not json",)},
            "stream.frames",
            "malformed",
        ),
        ([{"answer": "", "isEnd": True}], {}, "stream.answer", "contract"),
    ],
)
def test_each_stream_rule_fails(
    chunks: list[Any], kwargs: dict[str, Any], rule: str, reason: str
) -> None:
    out = judge(
        stream_exchange(chunks, **kwargs), mode="stream", conversation_id=CID, budget_seconds=20
    )
    assert rule in {r.rule for r in out.rules if r.verdict == "FAIL"}
    assert failure_reason(out.rules) == reason


def test_a_stream_cut_by_the_deadline_is_a_timeout() -> None:
    exchange = stream_exchange([{"answer": "a", "isEnd": False}], closed=False, error="timeout")
    out = judge(exchange, mode="stream", conversation_id=CID, budget_seconds=20)
    assert failure_reason(out.rules) == "timeout"
    assert "stream.final" not in {r.rule for r in out.rules}


def test_timing_against_the_budget() -> None:
    assert verdicts(json_exchange(envelope(), end=10.0))["timing.budget"] == "PASS"
    assert verdicts(json_exchange(envelope(), end=17.0))["timing.budget"] == "WARN"
    late = judge(
        json_exchange(envelope(), end=21.0), mode="json", conversation_id=CID, budget_seconds=20
    )
    assert failure_reason(late.rules) == "over_budget"


def test_auto_mode_follows_the_content_type_and_warns_when_it_says_nothing() -> None:
    odd = Exchange(
        status=200,
        content_type="text/plain",
        first_byte=0.1,
        end=0.2,
        body=json.dumps(envelope()).encode(),
        closed=True,
    )
    found = verdicts(odd)
    assert found["http.content_type"] == "WARN"
    assert found["envelope.success"] == "PASS"
    forced = verdicts(json_exchange(envelope()), mode="stream")
    assert forced["http.content_type"] == "WARN"


def test_the_first_cause_is_the_reason() -> None:
    out = judge(
        json_exchange(envelope(success=False), end=30.0),
        mode="json",
        conversation_id=CID,
        budget_seconds=20,
    )
    assert failure_reason(out.rules) == "contract"  # before over_budget


def test_strict_requests_must_get_a_4xx() -> None:
    assert judge_bad_request("sid", Exchange(status=400)).verdict == "PASS"
    assert judge_bad_request("sid", Exchange(status=200)).verdict == "FAIL"
    assert judge_bad_request("sid", Exchange(status=500)).reason == "http_status"
    assert judge_bad_request("sid", Exchange(error="connect")).reason == "connect"
