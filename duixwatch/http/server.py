"""The daemon's HTTP surface (design.md §7): read-only views, one listener.

* ``/metrics`` — the registry, Prometheus text format or OpenMetrics by content negotiation;
* ``/healthz`` — 200 while every poll loop is alive (none is overdue), else 503;
* ``/readyz``  — 200 once the configuration is loaded and every APP has been polled once;
* ``/status``  — JSON per APP (last poll, numbers, sessions with ages, last error) plus daemon
  facts (version, config file, last reload); a browser (``Accept: text/html``) gets a plain HTML
  table. ``?app=NAME`` narrows to one APP, ``?sessions=0`` leaves the session lists out.

No endpoint changes anything: every route is GET (and HEAD). The daemon hands the app a
:class:`DaemonView`, so this module never reaches into the daemon's internals.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from duixwatch.core import models
from duixwatch.core.clock import Clock
from duixwatch.policy import evaluate as policy

__all__ = [
    "DaemonView",
    "action_status",
    "create_app",
    "policy_plan_status",
    "scaling_status",
    "snapshot_status",
]


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

    def scaling(self, target: str) -> models.ScalingReading | None:
        """An autoscaling target's latest reading (``None``: no such target)."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def snapshot_status(
    snap: models.AppSnapshot, now: datetime, *, with_sessions: bool = True
) -> dict[str, Any]:
    """One APP's entry of ``/status`` (JSON-able; never a key or token)."""
    entry: dict[str, Any] = {
        "app": snap.app,
        "app_id": snap.app_id,
        "up": snap.is_fresh(now),
        "poll_interval_seconds": snap.poll_interval_seconds,
        "last_attempt_at": _iso(snap.last_attempt_at),
        "last_success_at": _iso(snap.fetched_at),
        "consecutive_failures": snap.consecutive_failures,
        "error": None
        if snap.error is None
        else {
            "reason": snap.error.reason,
            "message": snap.error.message,
            "at": _iso(snap.error.at),
            "retry_after_seconds": snap.error.retry_after_seconds,
        },
        "concurrency": None
        if snap.concurrency is None
        else {
            "total_concurrent_number": snap.concurrency.total_concurrent_number,
            "user_concurrent_number": snap.concurrency.user_concurrent_number,
        },
        "sessions": None,
    }
    if snap.sessions is not None:
        ages = [a for s in snap.sessions.sessions if (a := s.age_seconds(now)) is not None]
        entry["sessions"] = {
            "count": len(snap.sessions),
            "shape": snap.sessions.shape,
            "oldest_age_seconds": round(max(ages), 3) if ages else None,
        }
        if with_sessions:
            entry["sessions"]["items"] = [
                {
                    "session_id": s.session_id,
                    "started_at": _iso(s.started_at),
                    "first_seen_at": _iso(s.first_seen_at),
                    "age_seconds": None if (a := s.age_seconds(now)) is None else round(a, 3),
                    "actionable": s.actionable,
                }
                for s in snap.sessions.sessions
            ]
    return entry


def policy_plan_status(plan: policy.PolicyPlan, at: datetime) -> dict[str, Any]:
    """One policy's last evaluation for one APP, for ``/status`` and ``duixwatch plan -o json``."""
    return {
        "policy": plan.policy,
        "app": plan.app,
        "app_id": plan.app_id,
        "action": plan.action,
        "evaluated_at": at.isoformat(),
        "dry_run": plan.dry_run,
        "matched": [
            {
                "session_id": m.session_id,
                "age_seconds": None if m.age_seconds is None else round(m.age_seconds, 3),
                "reason": m.reason,
                "protected": m.protected,
            }
            for m in plan.matched
        ],
        "actions": [
            {"action": a.action, "session_id": a.session_id, "reason": a.reason}
            for a in plan.actions
        ],
        "abort": None
        if plan.abort is None
        else {"reason": plan.abort.reason, "detail": plan.abort.detail},
        "waiting": plan.waiting,
    }


def action_status(record: models.ActionRecord) -> dict[str, Any]:
    """One recent action for ``/status``."""
    return {
        "at": record.at.isoformat(),
        "cycle": record.cycle,
        "policy": record.policy,
        "app": record.app,
        "action": record.action,
        "session_id": record.session_id,
        "outcome": record.outcome,
        "reason": record.reason,
        "error": record.error,
    }


def scaling_status(reading: models.ScalingReading, now: datetime) -> dict[str, Any]:
    """The KEDA metrics-api body of one target (``valueLocation: desired_replicas``)."""
    successes = [a.last_success_at for a in reading.apps if a.last_success_at is not None]
    oldest = min(successes) if successes else None
    return {
        "target": reading.target,
        "fresh": reading.fresh,
        "sessions": reading.sessions,
        "desired_replicas": reading.desired_replicas,
        "raw_desired_replicas": reading.raw_desired_replicas,
        "sessions_per_replica": reading.sessions_per_replica,
        "min_replicas": reading.min_replicas,
        "max_replicas": reading.max_replicas,
        "computed_at": reading.computed_at.isoformat(),
        "oldest_data_age_seconds": None
        if oldest is None
        else round((now - oldest).total_seconds(), 3),
        "apps": [
            {
                "app": a.app,
                "fresh": a.fresh,
                "sessions": a.sessions,
                "source": a.source,
                "last_success_at": _iso(a.last_success_at),
            }
            for a in reading.apps
        ],
    }


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _html(info: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> str:
    esc = html.escape
    rows = []
    for e in entries:
        sessions = e["sessions"] or {}
        conc = e["concurrency"] or {}
        error = e["error"]
        rows.append(
            "<tr>"
            f"<td>{esc(e['app'])}</td><td>{esc(e['app_id'])}</td>"
            f"<td class={'up' if e['up'] else 'down'}>{'up' if e['up'] else 'DOWN'}</td>"
            f"<td>{esc(str(sessions.get('count', '-')))}</td>"
            f"<td>{esc(str(conc.get('user_concurrent_number', '-')))}</td>"
            f"<td>{esc(str(conc.get('total_concurrent_number', '-')))}</td>"
            f"<td>{esc(_age_text(sessions.get('oldest_age_seconds')))}</td>"
            f"<td>{esc(e['last_success_at'] or 'never')}</td>"
            f"<td>{esc(error['reason'] + ': ' + error['message']) if error else ''}</td>"
            "</tr>"
        )
    facts = "".join(
        f"<li>{esc(str(k))}: {esc(str(v))}</li>"
        for k, v in info.items()
        if k not in ("config", "policies", "recent_actions")
    )
    policy_rows = "".join(
        "<tr>"
        f"<td>{esc(p['policy'])}</td><td>{esc(p['app'])}</td>"
        f"<td>{'dry run' if p['dry_run'] else 'ENFORCING'}</td>"
        f"<td>{len(p['matched'])}</td><td>{len(p['actions'])}</td>"
        f"<td>{esc(p['abort']['reason'] + ': ' + p['abort']['detail']) if p['abort'] else ''}"
        f"{esc(p['waiting'] or '')}</td>"
        "</tr>"
        for p in info.get("policies", [])
    )
    action_rows = "".join(
        "<tr>"
        f"<td>{esc(a['at'])}</td><td>{esc(a['policy'])}</td><td>{esc(a['app'])}</td>"
        f"<td>{esc(a['action'])}</td><td>{esc(a['session_id'] or '')}</td>"
        f"<td>{esc(a['outcome'])}</td><td>{esc(a['error'] or a['reason'])}</td>"
        "</tr>"
        for a in info.get("recent_actions", [])[:50]
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>duixwatch status</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        ".down{color:#b00;font-weight:bold}.up{color:#070}</style></head><body>"
        f"<h1>duixwatch</h1><ul>{facts}</ul>"
        "<table><tr><th>app</th><th>app id</th><th>state</th><th>sessions</th>"
        "<th>user concurrency</th><th>total concurrency</th><th>oldest session</th>"
        "<th>last success</th><th>last error</th></tr>"
        + "".join(rows)
        + "</table><h2>Policies (last evaluation)</h2><table><tr><th>policy</th><th>app</th>"
        "<th>mode</th><th>matched</th><th>actions</th><th>abort / waiting</th></tr>"
        + policy_rows
        + "</table><h2>Recent actions</h2><table><tr><th>at</th><th>policy</th><th>app</th>"
        "<th>action</th><th>session</th><th>outcome</th><th>detail</th></tr>"
        + action_rows
        + "</table><p>JSON: <a href='/status?format=json'>/status?format=json</a> · "
        "<a href='/metrics'>/metrics</a></p></body></html>"
    )


#: ``Metrics.render_chunks``: the ``/metrics`` body, in pieces, and its content type for an
#: Accept header.
Render = Callable[[str | None], tuple[list[bytes], str]]


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


def create_app(*, render: Render, view: DaemonView, clock: Clock) -> Starlette:
    """The ASGI app of the daemon's HTTP surface."""

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
        with_sessions = request.query_params.get("sessions", "1") not in ("0", "false", "no")
        entries = [
            snapshot_status(s, now, with_sessions=with_sessions)
            for s in view.snapshots()
            if wanted is None or s.app == wanted
        ]
        if wanted is not None and not entries and wanted not in view.pending():
            return JSONResponse({"error": f"no app named {wanted!r} is configured"}, 404)
        info = dict(view.info())
        accept = request.headers.get("accept", "")
        if request.query_params.get("format") != "json" and "text/html" in accept:
            return HTMLResponse(_html(info, entries))
        return JSONResponse({**info, "now": now.isoformat(), "apps": entries})

    async def scaling(request: Request) -> Response:
        name = request.path_params["target"]
        reading = view.scaling(name)
        if reading is None:
            return JSONResponse({"error": f"no scaling target named {name!r}"}, 404)
        body = scaling_status(reading, clock.now())
        # 503 when any app is stale or failing: KEDA then keeps its fallback replica count
        # instead of trusting a number that might be zero only because we cannot see.
        return JSONResponse(body, 200 if reading.fresh else 503)

    return Starlette(
        routes=[
            Route("/api/v1/scaling/{target}", scaling, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/status", status, methods=["GET"]),
        ]
    )
