"""The simulator's HTTP face: a Starlette ASGI app over a :class:`~duixwatch.sim.model.Simulator`.

Three groups of routes:

* the DUIX OpenAPI under ``/duix-openapi-v2/sdk/v2/<endpoint>`` (and ``getConversationById``
  also at ``/duix-openapi-v2/sdk/getConversationById``), with the platform's per-endpoint
  envelopes, ``token`` JWT checks and injected faults;
* the control API under ``/_sim/`` (JSON, no token) that tests, the CLI and the demo use to
  look at and steer the simulated platform;
* a sample third-party dialog backend (``/dialog``, ``/dialog/stream``) with its own faults
  (``/_sim/dialog/faults``, ``/_sim/dialog/requests``), see :mod:`duixwatch.sim.dialog`.

The same app runs in-process (``httpx.ASGITransport``) and over loopback (uvicorn).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, get_args

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from duixwatch.core import clock as clock_mod
from duixwatch.sim import dialog, faults, hostile, model, records, shapes

__all__ = ["CONVERSATION_PATH", "PREFIX", "Hangs", "create_app"]

PREFIX = "/duix-openapi-v2/sdk/v2"
CONVERSATION_PATH = "/duix-openapi-v2/sdk/getConversationById"

_FAULT_FIELDS = frozenset(faults.Fault.__dataclass_fields__)
_SESSION_FIELDS = frozenset({"count", "age_seconds", "session_id", "with_id", "with_start"})
_MAX_SESSIONS_PER_CALL = 10_000
#: ``GET /_sim/sessions?closed_by=``: how a session ended, or ``live``.
_CLOSED_BY = frozenset({*get_args(records.ClosedBy), "live"})
#: Bound on the ASGI messages read while watching a hanging request for a disconnect.
_MAX_RECEIVES = 10_000

Handler = Callable[[Request], Awaitable[Response]]


class _BadInput(Exception):
    """A control-API request with a value of the wrong JSON type (answered with 400)."""


def _json(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status_code, headers=headers)


def _error_response(error: records.SimError) -> Response:
    if error.http_status == 200:
        body = {"code": error.code, "message": error.message, "data": None, "success": False}
    else:
        body = {"code": error.code, "msg": error.message, "data": None, "success": False}
    return _json(body, error.http_status)


def _http_error(status: int, path: str, headers: dict[str, str] | None = None) -> Response:
    """A gateway-style error (what a load balancer or Spring Boot answers), not an envelope."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    body = {"status": status, "error": reason, "message": "simulated fault", "path": path}
    return _json(body, status, headers)


def _truncated(response: Response) -> Response:
    """The same answer with its JSON cut in half (``malformed`` fault)."""
    body = bytes(response.body)
    cut = max(1, len(body) // 2)
    return Response(body[:cut], status_code=200, media_type="application/json")


class Hangs:
    """The requests a ``hang`` fault is holding, so a shutting-down server can let them go.

    A hang ends when the simulator's clock has slept :data:`~duixwatch.sim.faults.HANG_SECONDS`,
    when the client disconnects, or when :meth:`release` is called (``serve`` does, before it
    asks uvicorn to shut down, so held requests never stall the shutdown). The dialog backend's
    waits (its delays and stalls) are held here too, for as long as they ask.
    """

    def __init__(self) -> None:
        self._scopes: set[anyio.CancelScope] = set()

    def __len__(self) -> int:
        return len(self._scopes)

    def release(self) -> None:
        """End every hang now (each answers 503)."""
        for scope in list(self._scopes):
            scope.cancel()

    async def hold(
        self, request: Request, clock: clock_mod.Clock, seconds: float = faults.HANG_SECONDS
    ) -> bool:
        """Hang ``seconds``; ``True`` if the hang ran its course, ``False`` if released or
        abandoned."""
        completed = False
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_cancel_on_disconnect, request, tg.cancel_scope)
                    await clock.sleep(min(seconds, faults.HANG_SECONDS))
                    completed = True
                    tg.cancel_scope.cancel()
            finally:
                self._scopes.discard(scope)
        return completed

    async def pause(self, clock: clock_mod.Clock, seconds: float) -> bool:
        """Sleep ``seconds`` on ``clock`` unless released first (then ``False``), without
        watching for a disconnect (a streaming answer notices one when it next sends)."""
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await clock.sleep(seconds)
            finally:
                self._scopes.discard(scope)
        return not scope.cancel_called


async def _cancel_on_disconnect(request: Request, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` when the client goes away (reads and drops the request body)."""
    for _ in range(_MAX_RECEIVES):
        message = await request.receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
    await anyio.sleep_forever()  # a body this long is not ours to watch; the hang still ends


class _Api:
    """The DUIX OpenAPI endpoints."""

    def __init__(self, sim: model.Simulator, hangs: Hangs) -> None:
        self.sim = sim
        self.hangs = hangs
        self.hostile = hostile.Hostile(
            sim.clock.now, sim.zone, lambda seconds: hangs.pause(sim.clock, seconds)
        )
        self._handlers: dict[str, Callable[[Request, records.SimApp], Awaitable[Response]]] = {
            "getconcurrentNumber": self._concurrent_number,
            "getconcurrentList": self._concurrent_list,
            "distroyCallSessionsByAppId": self._close_all,
            "sessionStop": self._stop_session,
            "getConversationById": self._conversation,
            "createAvatar": self._create_avatar,
            "queryAvatar": self._query_avatar,
        }

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for endpoint in faults.ENDPOINTS:
            method = "POST" if endpoint == "createAvatar" else "GET"
            routes.append(Route(f"{PREFIX}/{endpoint}", self._entry(endpoint), methods=[method]))
        routes.append(Route(CONVERSATION_PATH, self._entry("getConversationById"), methods=["GET"]))
        return routes

    def _entry(self, endpoint: str) -> Handler:
        async def handle(request: Request) -> Response:
            return await self._handle(request, endpoint)

        return handle

    async def _handle(self, request: Request, endpoint: str) -> Response:
        sim = self.sim
        token = request.headers.get("token")
        query_app_id = (
            request.query_params.get("appId") if endpoint in model.APP_ID_ENDPOINTS else None
        )
        subject = query_app_id or sim.peek_app_id(token)
        sim.stats.count(subject or "", endpoint)
        sim.stats.enter()
        try:
            fault = sim.faults.take(subject, endpoint)
            if fault is not None:
                refusal = await self._apply_fault(fault, request)
                if refusal is not None:
                    return refusal
            sim.advance()
            try:
                app = sim.authenticate(token, query_app_id=query_app_id)
                if endpoint in model.APP_ID_ENDPOINTS and not query_app_id:
                    raise records.bad_request("the query parameter appId is required")
                if fault is not None and fault.hostile == "stop_ignored":
                    # A platform that says yes and closes nothing (the session stays listed).
                    response = _json({"code": "", "message": "", "data": None, "success": True})
                else:
                    response = await self._handlers[endpoint](request, app)
                if fault is not None and fault.hostile is not None:
                    response = self.hostile.answer(
                        fault.hostile, endpoint, app.shape, app.app_id, response
                    )
            except records.SimError as error:
                response = _error_response(error)
            if fault is not None and fault.malformed:
                return _truncated(response)
            return response
        finally:
            sim.stats.leave()

    async def _apply_fault(self, fault: faults.Fault, request: Request) -> Response | None:
        """Delay, then the fault's refusal if it has one (``None``: go on and answer)."""
        path = request.url.path
        delay = self.sim.faults.delay_seconds(fault)
        if delay > 0:
            await self.sim.clock.sleep(delay)
        if fault.hang:
            completed = await self.hangs.hold(request, self.sim.clock)
            return _http_error(504 if completed else 503, path)
        if fault.retry_after_seconds is not None:
            retry_after = str(math.ceil(fault.retry_after_seconds))
            return _http_error(fault.status or 429, path, {"Retry-After": retry_after})
        if fault.status is not None:
            return _http_error(fault.status, path)
        if fault.reject_token:
            return _error_response(records.SimError("1006", "token expired or invalid"))
        if fault.code is not None:
            return _error_response(records.SimError(fault.code, f"simulated error {fault.code}"))
        return None

    # ------------------------------------------------------------------ endpoints

    async def _concurrent_number(self, request: Request, app: records.SimApp) -> Response:
        data = self.sim.concurrent_number(app)
        return _json({"code": "0", "message": "SUCCESS", "data": data, "success": True})

    async def _concurrent_list(self, request: Request, app: records.SimApp) -> Response:
        data = self.sim.concurrent_list(app)
        return _json({"code": "200", "msg": "success", "data": data, "success": True})

    async def _close_all(self, request: Request, app: records.SimApp) -> Response:
        closed = self.sim.close_all(app)
        return _json({"code": "0", "message": "SUCCESS", "data": closed, "success": True})

    async def _stop_session(self, request: Request, app: records.SimApp) -> Response:
        uuid = request.query_params.get("uuid")
        if not uuid:
            raise records.bad_request("the query parameter uuid is required")
        self.sim.stop_session(app, uuid)
        return _json({"code": "", "message": "", "data": None, "success": True})

    async def _conversation(self, request: Request, app: records.SimApp) -> Response:
        conversation_id = request.query_params.get("conversationId")
        if not conversation_id:
            raise records.bad_request("the query parameter conversationId is required")
        data = self.sim.conversation(app, conversation_id)
        body = {"success": True, "code": "0", "message": "SUCCESS", "msg": "SUCCESS", "data": data}
        return _json(body)

    async def _create_avatar(self, request: Request, app: records.SimApp) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise records.bad_request("the body must be JSON") from exc
        avatar_id = self.sim.create_avatar(app, body)
        return _json({"code": "200", "msg": "success", "data": {"id": avatar_id}, "success": True})

    async def _query_avatar(self, request: Request, app: records.SimApp) -> Response:
        raw = request.query_params.get("id", "")
        try:
            avatar_id = int(raw)
        except ValueError as exc:
            raise records.bad_request("the query parameter id must be an integer") from exc
        data = self.sim.query_avatar(app, avatar_id)
        return _json({"code": "0", "msg": "success", "data": data, "success": True})


class _Control:
    """The ``/_sim/`` control API (JSON in and out; bad input → 400, unknown app → 404)."""

    def __init__(self, sim: model.Simulator, backend: dialog.Backend) -> None:
        self.sim = sim
        self.dialog = backend

    def routes(self) -> list[BaseRoute]:
        dialog_faults, dialog_requests = "/_sim/dialog/faults", "/_sim/dialog/requests"
        return [
            Route("/_sim/state", self._guard(self.state), methods=["GET"]),
            Route("/_sim/sessions", self._guard(self.sessions), methods=["GET"]),
            Route("/_sim/stats", self._guard(self.stats), methods=["GET"]),
            Route("/_sim/stats", self._guard(self.reset_stats), methods=["DELETE"]),
            Route("/_sim/apps/{app}/sessions", self._guard(self.add_sessions), methods=["POST"]),
            Route(
                "/_sim/apps/{app}/sessions/{session_id}",
                self._guard(self.end_session),
                methods=["DELETE"],
            ),
            Route("/_sim/apps/{app}/shape", self._guard(self.set_shape), methods=["PUT"]),
            Route(
                "/_sim/apps/{app}/conversations/{conversation_id}",
                self._guard(self.change_conversation),
                methods=["PATCH"],
            ),
            Route("/_sim/avatars/training", self._guard(self.training), methods=["GET"]),
            Route("/_sim/avatars/training", self._guard(self.set_training), methods=["PUT"]),
            Route("/_sim/faults", self._guard(self.list_faults), methods=["GET"]),
            Route("/_sim/faults", self._guard(self.set_fault), methods=["POST"]),
            Route("/_sim/faults", self._guard(self.clear_faults), methods=["DELETE"]),
            Route(dialog_faults, self._guard(self.dialog_faults), methods=["GET"]),
            Route(dialog_faults, self._guard(self.set_dialog_faults), methods=["POST"]),
            Route(dialog_faults, self._guard(self.clear_dialog_faults), methods=["DELETE"]),
            Route(dialog_requests, self._guard(self.dialog_requests), methods=["GET"]),
            Route(dialog_requests, self._guard(self.reset_dialog_requests), methods=["DELETE"]),
        ]

    @staticmethod
    def _guard(handler: Handler) -> Handler:
        """Turn the model's refusals into 400 (bad values) and 404 (unknown names)."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except KeyError as exc:
                return _json({"error": str(exc.args[0]) if exc.args else "not found"}, 404)
            except (ValueError, _BadInput) as exc:
                return _json({"error": str(exc)}, 400)

        return guarded

    @staticmethod
    async def _body(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ValueError("the body must be JSON") from exc
        if not isinstance(body, dict):
            raise _BadInput("the body must be a JSON object")
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(unknown)}")
        return body

    async def state(self, request: Request) -> Response:
        return _json(self.sim.state())

    async def sessions(self, request: Request) -> Response:
        """The record of every session (``?app=`` one APP's, ``?closed_by=`` ended that way:
        ``sessionStop``, ``distroyCallSessionsByAppId``, ``hangup``; ``live`` for open ones)."""
        app = request.query_params.get("app") or None
        closed_by = request.query_params.get("closed_by") or None
        if closed_by is not None and closed_by not in _CLOSED_BY:
            raise ValueError(f"closed_by must be one of {', '.join(sorted(_CLOSED_BY))}")
        now = self.sim.clock.now()
        chosen = [
            records.session_dict(s, now)
            for s in self.sim.sessions(app)
            if closed_by is None or (s.closed_by or "live") == closed_by
        ]
        return _json({"sessions": chosen})

    async def stats(self, request: Request) -> Response:
        return _json(self.sim.stats.to_dict())

    async def reset_stats(self, request: Request) -> Response:
        self.sim.stats.reset()
        return _json(self.sim.stats.to_dict())

    async def add_sessions(self, request: Request) -> Response:
        app = self.sim.app(request.path_params["app"])
        body = await self._body(request, _SESSION_FIELDS)
        count = _typed(body, "count", int, 1)
        if not 1 <= count <= _MAX_SESSIONS_PER_CALL:
            raise ValueError(f"count must be between 1 and {_MAX_SESSIONS_PER_CALL}")
        session_id = _typed(body, "session_id", str, None)
        if session_id is not None and count != 1:
            raise ValueError("session_id needs count 1")
        age_seconds = float(_typed(body, "age_seconds", (int, float), 0.0))
        with_id = _typed(body, "with_id", bool, True)
        with_start = _typed(body, "with_start", bool, True)
        created = [
            self.sim.add_session(
                app.app_id,
                age_seconds=age_seconds,
                session_id=session_id,
                with_id=with_id,
                with_start=with_start,
            )
            for _ in range(count)
        ]
        now = self.sim.clock.now()
        return _json({"sessions": [records.session_dict(s, now) for s in created]}, 201)

    async def end_session(self, request: Request) -> Response:
        app = self.sim.app(request.path_params["app"])
        session = self.sim.session(request.path_params["session_id"])
        if session.app_id != app.app_id:
            raise KeyError(f"no session {session.session_id!r} in app {app.name!r}")
        self.sim.end_session(session.session_id)
        return _json({"session": records.session_dict(session, self.sim.clock.now())})

    async def set_shape(self, request: Request) -> Response:
        app = self.sim.app(request.path_params["app"])
        body = await self._body(request, frozenset({"shape"}))
        text = _typed(body, "shape", str, None)
        if text is None:
            raise ValueError(f"shape is required, e.g. {shapes.DEFAULT_SHAPE}")
        self.sim.set_shape(app.app_id, shapes.ListShape.parse(text))
        return _json({"app_id": app.app_id, "name": app.name, "shape": str(app.shape)})

    async def change_conversation(self, request: Request) -> Response:
        app = self.sim.app(request.path_params["app"])
        conversation_id = request.path_params["conversation_id"]
        try:
            changes = json.loads(await request.body())
        except ValueError as exc:
            raise ValueError("the body must be a JSON object of key paths to new values") from exc
        changed = self.sim.change_conversation(app.app_id, conversation_id, changes)
        body = {"app_id": app.app_id, "conversation_id": conversation_id, "changed": changed}
        return _json(body)

    async def training(self, request: Request) -> Response:
        return _json({"seconds": self.sim.avatar_training_seconds})

    async def set_training(self, request: Request) -> Response:
        body = await self._body(request, frozenset({"seconds"}))
        seconds = _typed(body, "seconds", (int, float), None)
        if seconds is None:
            raise ValueError('seconds is required, e.g. {"seconds": 0}')
        return _json({"seconds": self.sim.set_avatar_training_seconds(seconds)})

    async def list_faults(self, request: Request) -> Response:
        return _json({"faults": [fault.to_dict() for fault in self.sim.faults.active()]})

    async def set_fault(self, request: Request) -> Response:
        body = await self._body(request, _FAULT_FIELDS)
        fault = self.sim.faults.set(
            app=_typed(body, "app", str, "*"),
            endpoint=_typed(body, "endpoint", str, "*"),
            status=_typed(body, "status", int, None),
            retry_after_seconds=_optional_float(body, "retry_after_seconds"),
            code=_typed(body, "code", (str, int), None),
            malformed=_typed(body, "malformed", bool, False),
            hang=_typed(body, "hang", bool, False),
            latency_seconds=_optional_float(body, "latency_seconds") or 0.0,
            jitter_seconds=_optional_float(body, "jitter_seconds") or 0.0,
            reject_token=_typed(body, "reject_token", bool, False),
            hostile=_typed(body, "hostile", str, None),
            times=_typed(body, "times", int, None),
        )
        return _json({"fault": fault.to_dict()}, 201)

    async def clear_faults(self, request: Request) -> Response:
        cleared = self.sim.faults.clear(
            app=request.query_params.get("app") or None,
            endpoint=request.query_params.get("endpoint") or None,
        )
        return _json({"cleared": cleared})

    async def dialog_faults(self, request: Request) -> Response:
        return _json(self.dialog.faults.to_dict())

    async def set_dialog_faults(self, request: Request) -> Response:
        body = await self._body(request, dialog.FAULT_FIELDS)
        return _json(self.dialog.set_faults(dialog.DialogFaults.from_dict(body)).to_dict())

    async def clear_dialog_faults(self, request: Request) -> Response:
        self.dialog.clear_faults()
        return _json(self.dialog.faults.to_dict())

    async def dialog_requests(self, request: Request) -> Response:
        return _json(self.dialog.requests.to_dict())

    async def reset_dialog_requests(self, request: Request) -> Response:
        self.dialog.requests.reset()
        return _json(self.dialog.requests.to_dict())


def _typed(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """``body[key]`` if it has the expected JSON type (``null`` means the default)."""
    value = body.get(key)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise _BadInput(f"{key} must be {' or '.join(k.__name__ for k in kinds)}")
    if not isinstance(value, kinds):
        raise _BadInput(f"{key} must be {' or '.join(k.__name__ for k in kinds)}")
    return value


def _optional_float(body: dict[str, Any], key: str) -> float | None:
    value = _typed(body, key, (int, float), None)
    return None if value is None else float(value)


def create_app(sim: model.Simulator) -> Starlette:
    """The simulator's ASGI app: the DUIX API, the ``/_sim/`` control API and ``/dialog``.

    ``app.state.hangs`` is the app's :class:`Hangs` (``serve`` releases it on shutdown);
    ``app.state.dialog`` its :class:`~duixwatch.sim.dialog.Backend` (faults, request log).
    """
    hangs = Hangs()
    backend = dialog.Backend(sim.clock, hangs)
    routes = [*_Api(sim, hangs).routes(), *_Control(sim, backend).routes(), *backend.routes()]
    app = Starlette(routes=routes)
    app.state.hangs = hangs
    app.state.dialog = backend
    return app
