"""A sample third-party dialog backend (the service DUIX calls to answer a user) and its faults.

DUIX POSTs ``{sid, dh-code, dh-question, dh-conversation-id, dh-context?, uuid?}`` and expects
either the non-streaming envelope ``{code, msg, data: {conversationId, question, answer,
errorMsg}, success}`` or a stream of ``{answer, isEnd}`` chunks. This echo bot answers
``You said: <question>``: at ``/dialog`` in one envelope, at ``/dialog/stream`` as Server-Sent
Events (``data: {...}`` frames, one word per frame, then ``{"answer": "", "isEnd": true}``), or
as newline-delimited JSON with ``?format=ndjson``.

:class:`Backend` holds the state of one simulator's backend (nothing is module-global, so two
simulators in one process never share it): the :class:`DialogFaults` in force, set through the
control API (``POST/GET/DELETE /_sim/dialog/faults``, wired in :mod:`duixwatch.sim.app`), and
a :class:`RequestLog` of what reached it (``GET/DELETE /_sim/dialog/requests``: the last body
and the header *names*, never header values). With no faults the answers are exactly the echo
bot's. A fault is applied in this order: ``delay_seconds`` (json: plus
``first_chunk_delay_seconds``); ``require_header`` (401); the request's own validation (400);
``status``; ``success_false``; then the answer with the frame faults (``malformed``,
``wrong_conversation_id``, ``no_end``, ``after_end``) played with the timing faults
(``first_chunk_delay_seconds``, ``chunk_delay_seconds``, ``stall_after_chunks``,
``keep_open_seconds``). A JSON envelope counts as one frame. Every wait is at most
:data:`~duixwatch.sim.faults.HANG_SECONDS` on the simulator's clock, and goes through the
app's :class:`Holder` so that it ends early when the client disconnects or the server stops.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from duixwatch.core import clock as clock_mod
from duixwatch.sim import faults as sim_faults

__all__ = [
    "FAULT_FIELDS",
    "OPTIONAL_FIELDS",
    "REQUIRED_FIELDS",
    "STALL_SECONDS",
    "Backend",
    "DialogFaults",
    "FaultError",
    "Holder",
    "RequestLog",
    "RequiredHeader",
    "answer_for",
]

REQUIRED_FIELDS = ("sid", "dh-code", "dh-question", "dh-conversation-id")
OPTIONAL_FIELDS = ("dh-context", "uuid")
#: A ``stall_after_chunks`` stall holds the connection this long, then closes it.
STALL_SECONDS = sim_faults.HANG_SECONDS
#: The most any one timing fault may wait.
MAX_FAULT_SECONDS = sim_faults.HANG_SECONDS
_MAX_STALL_AFTER_CHUNKS = 10_000
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")  # an HTTP header name (RFC 9110)
_AFTER_END_ANSWER = "(after the end) "


class FaultError(ValueError):
    """A fault description that is not valid (the control API answers it with 400)."""


class Holder(Protocol):
    """What makes the backend wait (the app's hang registry): a wait that ends early when the
    client disconnects or the server stops, in which case it returns ``False``."""

    async def hold(self, request: Request, clock: clock_mod.Clock, seconds: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class RequiredHeader:
    """A header the backend insists on (``require_header`` fault): exact value, name any case."""

    name: str
    value: str

    def matches(self, request: Request) -> bool:
        return request.headers.get(self.name) == self.value


@dataclass(frozen=True, slots=True)
class DialogFaults:
    """The faults in force (all off by default); see the module docstring for the order.

    Timing faults are in seconds on the simulator's clock, each at most :data:`MAX_FAULT_SECONDS`.
    ``stall_after_chunks`` N: after N frames, send nothing more and hold the connection for
    :data:`STALL_SECONDS` (json: N=0 holds before the body, N>=1 after it). ``no_end``,
    ``after_end`` and ``chunk_delay_seconds`` shape streams only, ``wrong_conversation_id`` the
    json envelope only (stream frames carry no conversationId); ``success_false`` answers a
    ``success:false`` envelope on both endpoints.
    """

    delay_seconds: float = 0.0
    first_chunk_delay_seconds: float = 0.0
    chunk_delay_seconds: float = 0.0
    stall_after_chunks: int | None = None
    no_end: bool = False
    after_end: bool = False
    keep_open_seconds: float = 0.0
    malformed: bool = False
    wrong_conversation_id: bool = False
    success_false: bool = False
    status: int | None = None
    require_header: RequiredHeader | None = None

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> DialogFaults:
        """Faults from the control API's JSON (``null`` means off); :class:`FaultError` if bad."""
        unknown = sorted(set(body) - FAULT_FIELDS)
        if unknown:
            raise FaultError(f"unknown fields: {', '.join(unknown)}; known: {_known()}")
        values: dict[str, Any] = {}
        for name in _SECONDS_FIELDS:
            if body.get(name) is not None:
                values[name] = _seconds(body, name)
        for name in _FLAG_FIELDS:
            if body.get(name) is not None:
                values[name] = _flag(body, name)
        if body.get("stall_after_chunks") is not None:
            values["stall_after_chunks"] = _integer(
                body, "stall_after_chunks", 0, _MAX_STALL_AFTER_CHUNKS
            )
        if body.get("status") is not None:
            values["status"] = _integer(body, "status", 400, 599)
        if body.get("require_header") is not None:
            values["require_header"] = _required_header(body["require_header"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The faults that are on, as the control API takes them (``{}``: healthy)."""
        out: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value == spec.default:
                continue
            if isinstance(value, RequiredHeader):
                value = {"name": value.name, "value": value.value}
            out[spec.name] = value
        return out

    @property
    def healthy(self) -> bool:
        return self == _HEALTHY


_HEALTHY = DialogFaults()
FAULT_FIELDS = frozenset(spec.name for spec in fields(DialogFaults))
_SECONDS_FIELDS = (
    "delay_seconds",
    "first_chunk_delay_seconds",
    "chunk_delay_seconds",
    "keep_open_seconds",
)
_FLAG_FIELDS = ("no_end", "after_end", "malformed", "wrong_conversation_id", "success_false")


def _known() -> str:
    return ", ".join(spec.name for spec in fields(DialogFaults))


def _seconds(body: Mapping[str, Any], name: str) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultError(f"{name} must be a number of seconds, got {value!r}")
    if not 0 <= value <= MAX_FAULT_SECONDS:
        raise FaultError(f"{name} must be between 0 and {MAX_FAULT_SECONDS:g}, got {value!r}")
    return float(value)


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body[name]
    if not isinstance(value, bool):
        raise FaultError(f"{name} must be true or false, got {value!r}")
    return value


def _integer(body: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise FaultError(f"{name} must be between {low} and {high}, got {value!r}")
    return value


def _required_header(value: Any) -> RequiredHeader:
    if not isinstance(value, dict) or set(value) != {"name", "value"}:
        raise FaultError('require_header must be an object {"name": ..., "value": ...}')
    name, text = value["name"], value["value"]
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise FaultError("require_header.name must be an HTTP header name")
    if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
        raise FaultError("require_header.value must be a string without CR, LF or NUL")
    return RequiredHeader(name.lower(), text)


@dataclass(slots=True)
class RequestLog:
    """What reached the backend: how many requests, and the last one's body and header names."""

    count: int = 0
    last_fields: dict[str, Any] | None = None
    last_header_names: list[str] = field(default_factory=list)

    def record(self, body: dict[str, Any], request: Request) -> None:
        self.count += 1
        self.last_fields = body
        self.last_header_names = list(dict.fromkeys(name for name, _ in request.headers.items()))

    def reset(self) -> None:
        self.count, self.last_fields, self.last_header_names = 0, None, []

    def to_dict(self) -> dict[str, Any]:
        """``{"count": N, "last": {"fields": {...}, "header_names": [...]}}`` (``last`` null
        before the first request; ``fields`` is ``{}`` when the body was no JSON object)."""
        last = None
        if self.last_fields is not None:
            last = {"fields": self.last_fields, "header_names": list(self.last_header_names)}
        return {"count": self.count, "last": last}


class _BadRequest(Exception):
    pass


def _error(status: int, message: str) -> Response:
    return JSONResponse(
        {"code": str(status), "msg": message, "data": None, "success": False}, status
    )


def _bad_request(message: str) -> Response:
    return _error(400, message)


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or ``None`` when it is not one."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _validate(raw: bytes, body: dict[str, Any] | None) -> dict[str, Any]:
    if body is None:
        try:
            json.loads(raw)
        except ValueError as exc:
            raise _BadRequest("the body must be JSON") from exc
        raise _BadRequest("the body must be a JSON object")
    missing = [name for name in REQUIRED_FIELDS if not isinstance(body.get(name), str)]
    if missing:
        raise _BadRequest(f"missing or non-string fields: {', '.join(missing)}")
    for name in OPTIONAL_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _BadRequest(f"{name} must be a string")
    return body


def answer_for(question: str) -> str:
    """The echo bot's answer."""
    return f"You said: {question}"


def _envelope(body: dict[str, Any], faults: DialogFaults) -> dict[str, Any]:
    question = body["dh-question"]
    conversation_id = body["dh-conversation-id"]
    if faults.wrong_conversation_id:
        conversation_id = f"{conversation_id}-not-yours"
    data = {
        "conversationId": conversation_id,
        "question": question,
        "answer": answer_for(question),
        "errorMsg": None,
    }
    return {"code": "200", "msg": "success", "data": data, "success": True}


def _failure_envelope(body: dict[str, Any]) -> dict[str, Any]:
    message = "simulated failure: the bot could not answer"
    data = {
        "conversationId": body["dh-conversation-id"],
        "question": body["dh-question"],
        "answer": "",
        "errorMsg": message,
    }
    return {"code": "500", "msg": message, "data": data, "success": False}


def _truncate(text: str) -> str:
    """Half of a JSON text: no longer JSON (``malformed`` fault)."""
    return text[: max(1, len(text) // 2)]


def _frames(question: str, faults: DialogFaults, *, sse: bool) -> list[str]:
    """The stream's frames, one word each, then the final ``isEnd`` one (as faults allow)."""
    frames = [{"answer": f"{word} ", "isEnd": False} for word in answer_for(question).split()]
    if not faults.no_end:
        frames.append({"answer": "", "isEnd": True})
    if faults.after_end:
        frames.append({"answer": _AFTER_END_ANSWER, "isEnd": False})
    texts = [json.dumps(frame, ensure_ascii=False) for frame in frames]
    if faults.malformed:
        broken = min(1, len(texts) - 1)  # the second frame: a reader must go on parsing
        texts[broken] = _truncate(texts[broken])
    return [f"data: {text}\n\n" if sse else f"{text}\n" for text in texts]


async def _chunks(question: str, *, sse: bool) -> AsyncIterator[str]:
    for frame in _frames(question, _HEALTHY, sse=sse):
        yield frame


class Backend:
    """One simulator's dialog backend: its routes, its faults and its request log."""

    def __init__(self, clock: clock_mod.Clock, holder: Holder) -> None:
        self.clock = clock
        self.holder = holder
        self.faults = _HEALTHY
        self.requests = RequestLog()

    def set_faults(self, faults: DialogFaults | None = None, /, **values: Any) -> DialogFaults:
        """Replace the faults: a :class:`DialogFaults`, or its fields (``set_faults(no_end=True)``,
        validated like the control API's JSON)."""
        if faults is not None and values:
            raise TypeError("pass a DialogFaults or its fields, not both")
        self.faults = faults if faults is not None else DialogFaults.from_dict(values)
        return self.faults

    def clear_faults(self) -> None:
        """Back to the healthy echo bot."""
        self.faults = _HEALTHY

    def routes(self) -> list[BaseRoute]:
        """``/dialog`` (one envelope) and ``/dialog/stream`` (SSE or ndjson)."""
        return [
            Route("/dialog", self._dialog, methods=["POST"]),
            Route("/dialog/stream", self._dialog_stream, methods=["POST"]),
        ]

    async def _wait(self, request: Request, seconds: float) -> bool:
        """Wait ``seconds``; ``False`` when the client left or the server is stopping."""
        if seconds <= 0:
            return True
        return await self.holder.hold(request, self.clock, seconds)

    async def _receive(self, request: Request, faults: DialogFaults) -> dict[str, Any] | Response:
        """The validated question, or the response that refuses it (after the delay)."""
        raw = await request.body()
        body = _parse(raw)
        self.requests.record(body if body is not None else {}, request)
        delay = faults.delay_seconds
        if request.url.path == "/dialog":
            delay += faults.first_chunk_delay_seconds
        if not await self._wait(request, delay):
            return _error(503, "the simulator is shutting down")
        required = faults.require_header
        if required is not None and not required.matches(request):
            return _error(401, f"the {required.name} header is missing or wrong")
        try:
            return _validate(raw, body)
        except _BadRequest as exc:
            return _bad_request(str(exc))

    async def _dialog(self, request: Request) -> Response:
        faults = self.faults
        body = await self._receive(request, faults)
        if isinstance(body, Response):
            return body
        if faults.status is not None:
            return _error(faults.status, f"simulated HTTP {faults.status}")
        envelope = _failure_envelope(body) if faults.success_false else _envelope(body, faults)
        if faults.healthy:
            return JSONResponse(envelope)
        text = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
        if faults.malformed:
            text = _truncate(text)
        if faults.stall_after_chunks is None and faults.keep_open_seconds <= 0:
            return Response(text, media_type="application/json")
        # No Content-Length: the reader cannot know the body is complete until the close.
        json_faults = replace(faults, first_chunk_delay_seconds=0.0)
        return StreamingResponse(
            self._play(request, [text], json_faults), media_type="application/json"
        )

    async def _dialog_stream(self, request: Request) -> Response:
        faults = self.faults
        body = await self._receive(request, faults)
        if isinstance(body, Response):
            return body
        fmt = request.query_params.get("format", "sse")
        if fmt not in ("sse", "ndjson"):
            return _bad_request("format must be sse or ndjson")
        if faults.status is not None:
            return _error(faults.status, f"simulated HTTP {faults.status}")
        if faults.success_false:
            return JSONResponse(_failure_envelope(body))
        sse = fmt == "sse"
        question = body["dh-question"]
        chunks = (
            _chunks(question, sse=sse)
            if faults.healthy
            else self._play(request, _frames(question, faults, sse=sse), faults)
        )
        return StreamingResponse(
            chunks,
            media_type="text/event-stream" if sse else "application/x-ndjson",
            headers={"Cache-Control": "no-cache"},
        )

    async def _play(
        self, request: Request, frames: list[str], faults: DialogFaults
    ) -> AsyncIterator[str]:
        """``frames`` with the timing faults; stops early if the client or the server goes."""
        stall_at = faults.stall_after_chunks
        for index, frame in enumerate(frames):
            if stall_at == index:
                await self._wait(request, STALL_SECONDS)
                return
            pause = faults.first_chunk_delay_seconds if index == 0 else faults.chunk_delay_seconds
            if not await self._wait(request, pause):
                return
            yield frame
        if stall_at is not None:  # N >= the number of frames: stall after the last one
            await self._wait(request, STALL_SECONDS)
            return
        await self._wait(request, faults.keep_open_seconds)
