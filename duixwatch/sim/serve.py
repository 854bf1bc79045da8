"""Serving the simulator over HTTP (uvicorn, inside the caller's anyio task group).

The mechanics live in :mod:`duixwatch.http.serve`, shared with the daemon's HTTP surface; this
module adds what is particular to the simulator: requests it holds hanging are released
(answered 503) before the server shuts down, so a stop never waits out a simulated hang.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from duixwatch.http import serve as asgi
from duixwatch.sim import app as app_mod
from duixwatch.sim import model

__all__ = ["serve"]


async def serve(
    sim: model.Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``sim`` on ``host:port`` until cancelled; ``task_status.started(bound_port)``."""
    app = app_mod.create_app(sim)
    hangs: app_mod.Hangs = app.state.hangs
    await asgi.serve(app, host, port, before_shutdown=hangs.release, task_status=task_status)
