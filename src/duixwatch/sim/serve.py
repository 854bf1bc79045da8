"""Serving the simulator over HTTP with uvicorn, inside the caller's anyio task group.

:func:`serve` binds the socket itself (so ``port=0`` works and a bind error is an ordinary
:class:`OSError`), reports the bound port through ``task_status``, and runs uvicorn without
letting it install signal handlers or configure logging: the process that embeds the simulator
(the CLI, the demo, a test) owns both. Cancelling the task shuts the server down, shielded and
within a deadline, so connections are closed rather than cut.
"""

from __future__ import annotations

import socket

import anyio
import uvicorn
from anyio.abc import TaskStatus

from duixwatch.sim import app as app_mod
from duixwatch.sim import model

__all__ = ["serve"]

#: How long a cancelled server may take to finish in-flight requests before they are cut.
SHUTDOWN_SECONDS = 5.0


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    sim: model.Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``sim`` on ``host:port`` until cancelled; ``task_status.started(bound_port)``."""
    sock = _bind(host, port)
    app = app_mod.create_app(sim)
    hangs: app_mod.Hangs = app.state.hangs
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(SHUTDOWN_SECONDS),
    )
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    try:
        await server.startup(sockets=[sock])
    except BaseException:
        sock.close()
        raise
    try:
        task_status.started(sock.getsockname()[1])
        # uvicorn's own tick loop (refreshes the Date header; polls ``should_exit`` every
        # 0.1 s) until it is told to exit or, as usual here, cancelled.
        await server.main_loop()
    finally:
        with anyio.move_on_after(SHUTDOWN_SECONDS * 2, shield=True):
            hangs.release()  # held requests answer now instead of stalling the shutdown
            await server.shutdown(sockets=[sock])
