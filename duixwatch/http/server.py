"""The daemon's HTTP surface (design.md §7): read-only views, one listener.

* ``/metrics`` — the registry, Prometheus text format or OpenMetrics by content negotiation;
* ``/healthz`` — 200 while every poll loop is alive (none is overdue), else 503;
* ``/readyz``  — 200 once the configuration is loaded and every APP has been polled once;
* ``/status``  — JSON per APP (last poll, numbers, sessions with ages, last error) plus daemon
  facts (version, config file, last reload); a browser (``Accept: text/html``) gets a plain HTML
  table. ``?app=NAME`` narrows to one APP, ``?sessions=0`` leaves the session lists out;
  with ``server.status_details: false`` no session id and no conversation detail is shown.

No endpoint changes anything: every route is GET (and HEAD). The daemon hands the app a
:class:`DaemonView`, so this module never reaches into the daemon's internals; what a page
says is :mod:`duixwatch.export.status`'s, how it is served is this module's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from duixwatch.core import models
from duixwatch.core.clock import Clock
from duixwatch.export.autoscaling import ScalingReading
from duixwatch.export.status import (
    scaling_status,
    snapshot_status,
    status_html,
    without_details,
)

__all__ = ["ChunksResponse", "DaemonView", "create_app", "json_chunks"]


class DaemonView(Protocol):
    """What the HTTP surface may see of the running daemon."""

    def snapshots(self) -> Sequence[models.AppSnapshot]:
        """The latest snapshot of every configured APP."""

    def pending(self) -> Sequence[str]:
        """APPs not polled yet (not ready while any)."""

    def overdue(self) -> Sequence[str]:
        """APPs whose poll loop is stuck (not healthy while any)."""

    def info(self) -> Mapping[str, Any]:
        """Daemon facts for /status: version, config file, last reload …"""

    def scaling(self, target: str) -> ScalingReading | None:
        """An autoscaling target's latest reading (``None``: no such target)."""


#: ``Metrics.render_chunks``: the ``/metrics`` body, in pieces, and its content type for an
#: Accept header.
Render = Callable[[str | None], tuple[list[bytes], str]]


#: ``json_chunks`` joins encoded items into pieces of about this size (fewer, larger writes).
JSON_CHUNK_BYTES = 64 * 1024


def _dumps(value: object) -> bytes:
    """JSON as Starlette's ``JSONResponse`` writes it (compact, UTF-8, no NaN)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def json_chunks(head: Mapping[str, Any], key: str, items: Iterable[object]) -> list[bytes]:
    """``{**head, key: list(items)}`` as compact JSON, in pieces of ~``JSON_CHUNK_BYTES``.

    The same bytes one ``json.dumps`` of the whole document gives, but each item is built
    (``items`` may be a generator) and encoded on its own, so the page's dicts and the
    encoder's small strings exist for one item at a time, not for every APP at once.
    """
    opening = _dumps(dict(head))[:-1] + (b"," if head else b"") + _dumps(key) + b":["
    chunks: list[bytes] = []
    piece = bytearray(opening)
    for n, item in enumerate(items):
        if n:
            piece += b","
        piece += _dumps(item)
        if len(piece) >= JSON_CHUNK_BYTES:
            chunks.append(bytes(piece))
            piece.clear()
    piece += b"]}"
    chunks.append(bytes(piece))
    return chunks


class ChunksResponse(Response):
    """A body sent as the pieces it was made in, with its Content-Length (no joined copy)."""

    def __init__(self, chunks: list[bytes], media_type: str) -> None:
        super().__init__(b"", media_type=media_type)
        self._chunks = chunks
        self.headers["content-length"] = str(sum(len(chunk) for chunk in chunks))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope.get("method") != "HEAD":
            for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def create_app(
    *,
    render: Render,
    view: DaemonView,
    clock: Clock,
    details: Callable[[], bool] = lambda: True,
) -> Starlette:
    """The ASGI app of the daemon's HTTP surface. ``details`` says, per request, whether
    ``/status`` may show session ids and conversation details (``server.status_details``)."""

    async def metrics_endpoint(request: Request) -> Response:
        chunks, content_type = render(request.headers.get("accept"))
        return ChunksResponse(chunks, media_type=content_type)

    async def healthz(_: Request) -> Response:
        overdue = list(view.overdue())
        if overdue:
            return JSONResponse({"status": "unhealthy", "overdue_apps": overdue}, 503)
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        pending = list(view.pending())
        if pending:
            return JSONResponse({"status": "not ready", "pending_apps": pending}, 503)
        return JSONResponse({"status": "ready"})

    async def status(request: Request) -> Response:
        now = clock.now()
        wanted = request.query_params.get("app")
        detailed = details()
        with_sessions = detailed and request.query_params.get("sessions", "1") not in (
            "0",
            "false",
            "no",
        )
        snapshots = [s for s in view.snapshots() if wanted is None or s.app == wanted]
        if wanted is not None and not snapshots and wanted not in view.pending():
            return JSONResponse({"error": f"no app named {wanted!r} is configured"}, 404)
        info = dict(view.info()) if detailed else without_details(view.info())
        accept = request.headers.get("accept", "")
        if request.query_params.get("format") != "json" and "text/html" in accept:
            # The page shows no session lists: their entries are not built.
            rows = (snapshot_status(s, now, with_sessions=False) for s in snapshots)
            return HTMLResponse(status_html(info, rows))
        # One APP's entry built and encoded at a time (``json_chunks``), never the whole page.
        entries = (snapshot_status(s, now, with_sessions=with_sessions) for s in snapshots)
        head = {**info, "now": now.isoformat()}
        return ChunksResponse(json_chunks(head, "apps", entries), "application/json")

    async def scaling(request: Request) -> Response:
        name = request.path_params["target"]
        reading = view.scaling(name)
        if reading is None:
            return JSONResponse({"error": f"no scaling target named {name!r}"}, 404)
        body = scaling_status(reading, clock.now())
        # 503 when any app is stale or failing: KEDA then keeps its fallback replica count
        # instead of trusting a number that might be zero only because we cannot see.
        return JSONResponse(body, 200 if reading.fresh else 503)

    app = Starlette(
        routes=[
            Route("/api/v1/scaling/{target}", scaling, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/status", status, methods=["GET"]),
        ]
    )
    # No redirect of /metrics/ to /metrics: Starlette builds its Location from the Host header,
    # an open redirect; an unknown path is a plain 404.
    app.router.redirect_slashes = False
    return app
