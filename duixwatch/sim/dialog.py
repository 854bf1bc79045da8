"""A sample third-party dialog backend: the service DUIX calls to answer a user's question.

DUIX POSTs ``{sid, dh-code, dh-question, dh-conversation-id, dh-context?, uuid?}`` and expects
either the non-streaming envelope ``{code, msg, data: {conversationId, question, answer,
errorMsg}, success}`` or a stream of ``{answer, isEnd}`` chunks. This echo bot answers
``You said: <question>``: at ``/dialog`` in one envelope, at ``/dialog/stream`` as Server-Sent
Events (``data: {...}`` frames, one word per frame), or as newline-delimited JSON with
``?format=ndjson``. The demo and the prober use it; it keeps no state.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

__all__ = ["REQUIRED_FIELDS", "answer_for", "routes"]

REQUIRED_FIELDS = ("sid", "dh-code", "dh-question", "dh-conversation-id")
OPTIONAL_FIELDS = ("dh-context", "uuid")


class _BadRequest(Exception):
    pass


def _bad_request(message: str) -> Response:
    return JSONResponse({"code": "400", "msg": message, "data": None, "success": False}, 400)


async def _question(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise _BadRequest("the body must be JSON") from exc
    if not isinstance(body, dict):
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


async def _dialog(request: Request) -> Response:
    try:
        body = await _question(request)
    except _BadRequest as exc:
        return _bad_request(str(exc))
    question = body["dh-question"]
    data = {
        "conversationId": body["dh-conversation-id"],
        "question": question,
        "answer": answer_for(question),
        "errorMsg": None,
    }
    return JSONResponse({"code": "200", "msg": "success", "data": data, "success": True})


async def _chunks(question: str, *, sse: bool) -> AsyncIterator[str]:
    words = answer_for(question).split()
    frames = [{"answer": f"{word} ", "isEnd": False} for word in words]
    frames.append({"answer": "", "isEnd": True})
    for frame in frames:
        text = json.dumps(frame, ensure_ascii=False)
        yield f"data: {text}\n\n" if sse else f"{text}\n"


async def _dialog_stream(request: Request) -> Response:
    try:
        body = await _question(request)
    except _BadRequest as exc:
        return _bad_request(str(exc))
    fmt = request.query_params.get("format", "sse")
    if fmt not in ("sse", "ndjson"):
        return _bad_request("format must be sse or ndjson")
    sse = fmt == "sse"
    return StreamingResponse(
        _chunks(body["dh-question"], sse=sse),
        media_type="text/event-stream" if sse else "application/x-ndjson",
        headers={"Cache-Control": "no-cache"},
    )


def routes() -> list[BaseRoute]:
    """The dialog backend's routes."""
    return [
        Route("/dialog", _dialog, methods=["POST"]),
        Route("/dialog/stream", _dialog_stream, methods=["POST"]),
    ]
