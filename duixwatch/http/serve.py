"""Serving an ASGI app with uvicorn inside the caller's anyio task group.

Both HTTP faces of duixwatch use this: the daemon's surface (``/metrics``, ``/status`` …) and
the simulator. :func:`serve` binds the socket itself (so ``port=0`` works and a bind error is an
ordinary :class:`OSError` raised before ``task_status.started``), reports the bound port, and
runs uvicorn without letting it install signal handlers or configure logging: the process that
embeds the server owns both. Cancelling the task shuts the server down, shielded and within a
deadline, so open connections are closed rather than cut.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import anyio
import uvicorn
from anyio.abc import TaskStatus

__all__ = ["SHUTDOWN_SECONDS", "bind", "serve"]

#: How long a cancelled server may take to finish in-flight requests before they are cut.
SHUTDOWN_SECONDS = 5.0


def bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (``port=0``: the OS picks)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(512)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    app: Callable[..., object],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    before_shutdown: Callable[[], None] | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``task_status.started(bound_port)``.

    ``before_shutdown`` runs first when the server stops (the simulator releases requests it
    holds hanging, so they do not stall the shutdown).
    """
    sock = bind(host, port)
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
            if before_shutdown is not None:
                before_shutdown()
            await server.shutdown(sockets=[sock])
