"""The third-party dialog contract, as rules over one recorded exchange.

DUIX POSTs a question to the customer's URL (the seed's request table: ``sid``, ``dh-code``,
``dh-question``, ``dh-conversation-id`` required; ``dh-context``, a stringified JSON of earlier
``q``/``a`` turns, and ``uuid`` optional) and expects within 20 s either one envelope
``{code, msg?, data: {conversationId, question?, answer, errorMsg?}, success}`` or a stream of
``{answer, isEnd}`` chunks. :func:`question` builds the request; :func:`judge` turns an
:class:`Exchange` (what came back, with its timings) into :class:`RuleResult` lines, each with
the failure ``reason`` it stands for — the same rules for ``duixwatch dialog check`` and the
daemon's probes. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from duixwatch.dialog.frames import Frame, Framing

__all__ = [
    "FAILURE_REASONS",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "Exchange",
    "Mode",
    "RuleResult",
    "Turn",
    "Verdict",
    "failure_reason",
    "judge",
    "judge_bad_request",
    "mode_of",
    "question",
]

REQUIRED_FIELDS: Final = ("sid", "dh-code", "dh-question", "dh-conversation-id")
OPTIONAL_FIELDS: Final = ("dh-context", "uuid")

#: Why a run failed, in the order one is chosen when several rules fail (the first cause
#: hides the rest: a refused connection has no status, a 500 no contract).
FAILURE_REASONS: Final = (
    "connect",
    "timeout",
    "http_status",
    "malformed",
    "contract",
    "over_budget",
)

#: A WARN when the answer took more than this share of the budget.
NEAR_BUDGET: Final = 0.8

Mode = Literal["json", "stream", "auto"]
Verdict = Literal["PASS", "FAIL", "WARN"]
Reason = Literal["connect", "timeout", "http_status", "malformed", "contract", "over_budget"]


@dataclass(frozen=True, slots=True)
class Turn:
    """An earlier question and its answer, for ``dh-context``."""

    question: str
    answer: str


def question(
    text: str,
    *,
    sid: str,
    dh_code: str,
    conversation_id: str,
    history: Sequence[Turn] = (),
    request_id: str | None = None,
) -> dict[str, str]:
    """The body DUIX sends: every field of the seed's table."""
    context = [{"q": {"context": t.question}, "a": {"context": t.answer}} for t in history]
    return {
        "sid": sid,
        "dh-code": dh_code,
        "dh-question": text,
        "dh-conversation-id": conversation_id,
        "dh-context": json.dumps(context, ensure_ascii=False),
        "uuid": request_id or str(uuidlib.uuid4()),
    }


@dataclass(frozen=True, slots=True)
class Exchange:
    """What one POST got back. Times are seconds since the request was sent.

    ``error`` is ``"connect"`` (no response: refused, DNS, TLS) or ``"timeout"`` (the deadline
    passed: ``first_byte``/``frames`` say how far it got); ``closed`` is whether the body
    ended (a stream kept open after its final chunk is not closed); ``end`` is when the
    answer ended (the final chunk, or the end of the body).
    """

    status: int | None = None
    content_type: str = ""
    first_byte: float | None = None
    end: float | None = None
    body: bytes = b""
    framing: Framing | None = None
    frames: tuple[Frame, ...] = ()
    odd_lines: int = 0
    closed: bool = False
    truncated: bool = False
    error: Literal["connect", "timeout"] | None = None
    error_detail: str = ""


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One line of a check: a rule id, PASS/FAIL/WARN, why, and (FAIL only) its reason."""

    rule: str
    verdict: Verdict
    detail: str
    reason: Reason | None = None


@dataclass(slots=True)
class Outcome:
    """What :func:`judge` found: the rule lines, the answer text, and its timings."""

    rules: list[RuleResult] = field(default_factory=list)
    answer: str = ""
    chunks: int = 0
    first_answer: float | None = None
    total: float | None = None

    def add(self, rule: str, ok: bool, detail: str, reason: Reason, *, warn: bool = False) -> None:
        verdict: Verdict = "PASS" if ok else ("WARN" if warn else "FAIL")
        self.rules.append(RuleResult(rule, verdict, detail, reason if verdict == "FAIL" else None))


def mode_of(content_type: str) -> Literal["json", "stream"] | None:
    """The answer's mode from its Content-Type (``None``: it does not say)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("text/event-stream", "application/x-ndjson", "application/ndjson") or (
        media in ("application/jsonl", "application/json-seq", "application/stream+json")
    ):
        return "stream"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    return None


def judge(
    exchange: Exchange,
    *,
    mode: Mode,
    conversation_id: str,
    budget_seconds: float,
) -> Outcome:
    """Every rule that applies to the exchange (rules after a cause that hides them are not
    listed: a refused connection has no status to check)."""
    out = Outcome()
    if exchange.error == "connect":
        out.add("transport", False, f"no response: {exchange.error_detail}", "connect")
        return out
    if exchange.status is None:
        detail = "no response headers before the deadline"
        out.add("transport", False, detail, "timeout")
        return out
    ok = exchange.status == 200
    out.add(
        "http.status",
        ok,
        f"HTTP {exchange.status}" + ("" if ok else ", expected 200"),
        "http_status",
    )
    if not ok:
        return out
    chosen = _chosen_mode(exchange, mode, out)
    if chosen == "json":
        _judge_json(exchange, conversation_id, out)
    else:
        _judge_stream(exchange, out)
    _judge_timing(exchange, budget_seconds, out)
    return out


def _chosen_mode(exchange: Exchange, mode: Mode, out: Outcome) -> Literal["json", "stream"]:
    said = mode_of(exchange.content_type)
    shown = exchange.content_type or "none"
    if mode == "auto":
        if said is None:
            guess: Literal["json", "stream"] = "stream" if exchange.framing else "json"
            out.add(
                "http.content_type",
                False,
                f"Content-Type {shown} names neither JSON nor a stream; read as {guess}",
                "contract",
                warn=True,
            )
            return guess
        out.add("http.content_type", True, f"Content-Type {shown}: {said}", "contract")
        return said
    if said is not None and said != mode:
        out.add(
            "http.content_type",
            False,
            f"Content-Type {shown} says {said}, checked as {mode} (--mode)",
            "contract",
            warn=True,
        )
    else:
        out.add("http.content_type", True, f"Content-Type {shown}", "contract")
    return mode


def _timed_out(exchange: Exchange, out: Outcome, what: str) -> bool:
    if exchange.error == "timeout":
        out.add("transport", False, f"the deadline passed {what}", "timeout")
        return True
    return False


def _judge_json(exchange: Exchange, conversation_id: str, out: Outcome) -> None:
    if _timed_out(exchange, out, "before the body ended"):
        return
    if exchange.truncated:
        out.add("json.body", False, "the body is larger than the probe reads", "malformed")
        return
    try:
        body = json.loads(exchange.body)
    except json.JSONDecodeError as exc:
        out.add("json.body", False, f"the body is not JSON ({exc.msg} at {exc.pos})", "malformed")
        return
    except UnicodeDecodeError:
        out.add("json.body", False, "the body is not UTF-8 text", "malformed")
        return
    if not isinstance(body, dict):
        out.add("json.body", False, f"the body is a JSON {_kind(body)}, not an object", "malformed")
        return
    out.add("json.body", True, "a JSON object", "malformed")
    out.chunks = 1
    _field_type(out, "envelope.code", body, "code", str, required=True)
    success = body.get("success")
    out.add(
        "envelope.success",
        success is True,
        "true" if success is True else f"{_show(success)}, expected the boolean true",
        "contract",
    )
    if "msg" in body and body["msg"] is not None and not isinstance(body["msg"], str):
        out.add(
            "envelope.msg", False, f"{_kind(body['msg'])}, expected a string", "contract", warn=True
        )
    data = body.get("data")
    if not isinstance(data, dict):
        out.add("data", False, f"data is {_show(data)}, expected an object", "contract")
        return
    got = data.get("conversationId")
    out.add(
        "data.conversationId",
        got == conversation_id,
        "equals dh-conversation-id"
        if got == conversation_id
        else f"{_show(got)}, expected the dh-conversation-id sent ({conversation_id!r})",
        "contract",
    )
    answer = data.get("answer")
    present = _non_empty(answer)
    out.add(
        "data.answer",
        present,
        "present" if present else f"{_show(answer)}, expected a non-empty answer",
        "contract",
    )
    if present:
        out.add("data.answer.format", *_answer_format(answer), "contract", warn=True)
        out.answer = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        out.first_answer = exchange.end
    error_msg = data.get("errorMsg")
    out.add(
        "data.errorMsg",
        error_msg is None or error_msg == "",
        "absent" if error_msg in (None, "") else f"{_show(error_msg)} on a successful answer",
        "contract",
    )
    _field_type(out, "data.question", data, "question", str, required=False, warn=True)


def _non_empty(answer: Any) -> bool:
    if isinstance(answer, str):
        return answer.strip() != ""
    if isinstance(answer, dict | list):
        return bool(answer)
    return answer is not None


def _answer_format(answer: Any) -> tuple[bool, str]:
    if not isinstance(answer, str):
        return False, f"a JSON {_kind(answer)}; the seed says a string (stringified JSON)"
    try:
        parsed = json.loads(answer)
    except ValueError:
        return True, "plain text"
    if isinstance(parsed, dict | list):
        return True, "stringified JSON"
    return True, "plain text"


def _judge_stream(exchange: Exchange, out: Outcome) -> None:
    framing = exchange.framing or "sse"
    detail = {"sse": "Server-Sent Events", "ndjson": "newline-delimited JSON"}[framing]
    odd = f"; {exchange.odd_lines} line(s) that are not SSE fields" if exchange.odd_lines else ""
    out.add("stream.framing", not odd, detail + odd, "malformed", warn=True)
    chunks: list[tuple[Frame, dict[str, Any]]] = []
    bad: list[str] = []
    shape: list[str] = []
    for index, frame in enumerate(exchange.frames, 1):
        try:
            value = json.loads(frame.data)
        except ValueError:
            bad.append(f"frame {index} is not JSON: {_clip(frame.data)}")
            continue
        if not isinstance(value, dict):
            bad.append(f"frame {index} is a JSON {_kind(value)}, not an object")
            continue
        problems = [
            f"{key} is {_show(value.get(key))}, expected a {kind}"
            for key, kind, ok in (
                ("answer", "string", isinstance(value.get("answer"), str)),
                ("isEnd", "boolean", isinstance(value.get("isEnd"), bool)),
            )
            if not ok
        ]
        if problems:
            shape.append(f"frame {index}: " + "; ".join(problems))
        chunks.append((frame, value))
    out.add(
        "stream.frames",
        not bad,
        f"{len(exchange.frames)} frame(s), every one JSON" if not bad else "; ".join(bad[:3]),
        "malformed",
    )
    out.add(
        "stream.chunks",
        not shape,
        "every chunk is {answer: string, isEnd: boolean}" if not shape else "; ".join(shape[:3]),
        "contract",
    )
    ends = [i for i, (_, v) in enumerate(chunks) if v.get("isEnd") is True]
    texts = [v["answer"] for _, v in chunks if isinstance(v.get("answer"), str)]
    out.chunks = len(chunks)
    out.answer = "".join(texts)
    first = next(
        (f.at for f, v in chunks if isinstance(v.get("answer"), str) and v["answer"].strip()),
        None,
    )
    out.first_answer = first
    timed_out = exchange.error == "timeout" and not ends
    if timed_out:
        # The answer was cut short: what came is checked above, what did not is the timeout.
        _timed_out(exchange, out, f"after {len(exchange.frames)} frame(s), before a final chunk")
        return
    out.add(
        "stream.answer",
        bool(out.answer.strip()),
        f"{len(out.answer)} characters" if out.answer.strip() else "no non-empty answer chunk",
        "contract",
    )
    out.add(
        "stream.final",
        len(ends) == 1,
        {0: "no chunk with isEnd: true", 1: "one final chunk (isEnd: true)"}.get(
            len(ends), f"{len(ends)} chunks with isEnd: true, expected one"
        ),
        "contract",
    )
    if ends:
        after = len(exchange.frames) - (exchange.frames.index(chunks[ends[0]][0]) + 1)
        out.add(
            "stream.after_end",
            after == 0,
            "nothing after the final chunk" if after == 0 else f"{after} frame(s) after it",
            "contract",
        )
        out.add(
            "stream.closed",
            exchange.closed,
            "closed after the final chunk"
            if exchange.closed
            else "still open after the final chunk",
            "contract",
        )


def _judge_timing(exchange: Exchange, budget: float, out: Outcome) -> None:
    out.total = exchange.end
    if exchange.end is None:
        return
    share = exchange.end / budget
    ok = share <= NEAR_BUDGET
    detail = f"answered in {exchange.end:.3f}s of the {budget:g}s budget ({share:.0%})"
    if exchange.end > budget:
        out.add("timing.budget", False, detail, "over_budget")
    else:
        out.add(
            "timing.budget",
            ok,
            detail + ("" if ok else ": near the budget"),
            "over_budget",
            warn=True,
        )


def judge_bad_request(missing: str, exchange: Exchange) -> RuleResult:
    """``--strict``: a request without ``missing`` must get a 4xx (the seed's status table)."""
    rule = f"strict.missing_{missing}"
    if exchange.status is None:
        return RuleResult(
            rule, "FAIL", f"no answer ({exchange.error or 'none'})", exchange.error or "timeout"
        )
    if 400 <= exchange.status < 500:
        return RuleResult(rule, "PASS", f"HTTP {exchange.status} without {missing}")
    return RuleResult(
        rule, "FAIL", f"HTTP {exchange.status} without {missing}, expected a 4xx", "http_status"
    )


def failure_reason(rules: Sequence[RuleResult]) -> Reason | None:
    """The run's one failure reason: the first cause among its failed rules."""
    found = {r.reason for r in rules if r.verdict == "FAIL" and r.reason is not None}
    return next((r for r in FAILURE_REASONS if r in found), None)


def _field_type(
    out: Outcome,
    rule: str,
    container: Mapping[str, Any],
    key: str,
    kind: type,
    *,
    required: bool,
    warn: bool = False,
) -> None:
    value = container.get(key)
    if value is None and not required:
        return
    ok = isinstance(value, kind) and not isinstance(value, bool)
    name = "string" if kind is str else kind.__name__
    out.add(rule, ok, name if ok else f"{_show(value)}, expected a {name}", "contract", warn=warn)


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


def _show(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, str):
        return repr(_clip(value))
    return f"{_kind(value)} {_clip(json.dumps(value, ensure_ascii=False))}"


def _clip(text: str, limit: int = 60) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"
