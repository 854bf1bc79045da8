"""The simulator served by uvicorn on 127.0.0.1 inside the test's event loop (real clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskStatus
from starlette.applications import Starlette

from duixwatch.http import serve as asgi
from duixwatch.sim import Simulator, create_app


async def serve_app(
    app: Starlette, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """The simulator's app over uvicorn on 127.0.0.1, as ``duixwatch.sim.serve`` runs it."""
    await asgi.serve(
        app, "127.0.0.1", 0, before_shutdown=app.state.hangs.release, task_status=task_status
    )


@asynccontextmanager
async def loopback_sim(
    seed: int = 3, *, sim: Simulator | None = None
) -> AsyncIterator[tuple[str, Starlette]]:
    """``sim`` (default: a fresh one, no workload) on a free loopback port: its base URL and
    its app."""
    app = create_app(sim or Simulator(apps=1, seed=seed, workload=False))
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_app, app)
        yield f"http://127.0.0.1:{port}", app
        tg.cancel_scope.cancel()
