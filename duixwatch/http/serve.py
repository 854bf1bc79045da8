"""Serving an ASGI app with uvicorn inside the caller's anyio task group.

Both HTTP faces of duixwatch use this: the daemon's surface (``/metrics``, ``/status`` …) and
the simulator. :func:`serve` binds the socket itself (so ``port=0`` works and a bind error is an
ordinary :class:`OSError` raised before ``task_status.started``), reports the bound port, and
runs uvicorn without letting it install signal handlers or configure logging: the process that
embeds the server owns both. Cancelling the task shuts the server down, shielded and within a
deadline, so open connections are closed rather than cut.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

import anyio
import uvicorn
from anyio.abc import TaskStatus
from uvicorn.protocols.http.h11_impl import H11Protocol

from duixwatch.http.guard import MAX_REQUEST_BYTES, ConnectionGuard, GuardedH11Protocol

__all__ = ["MAX_HEADER_BYTES", "SHUTDOWN_SECONDS", "bind", "serve"]

#: h11's bound on a request still arriving (the guard's own bound, counted as the bytes
#: arrive, is the same: ``guard.MAX_REQUEST_BYTES``).
MAX_HEADER_BYTES = MAX_REQUEST_BYTES
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
    tls: ssl.SSLContext | None = None,
    guard: ConnectionGuard | None = None,
    idle_timeout: float = 5.0,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; ``task_status.started(bound_port)``.

    ``before_shutdown`` runs first when the server stops (the simulator releases requests it
    holds hanging, so they do not stall the shutdown). ``tls`` serves HTTPS with that context
    (its handshakes bounded by the guard's ``read_timeout``); ``guard`` bounds the connections
    (:mod:`duixwatch.http.guard`); ``idle_timeout`` closes idle keep-alive connections.
    """
    sock = bind(host, port)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        http="h11",
        timeout_keep_alive=idle_timeout,  # type: ignore[arg-type]  # a float is fine
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_graceful_shutdown=int(SHUTDOWN_SECONDS),
    )
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)

    def protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
        if guard is None:
            return H11Protocol(
                config=config,
                server_state=server.server_state,
                app_state=server.lifespan.state,
                _loop=_loop,
            )
        return GuardedH11Protocol(
            config=config,
            server_state=server.server_state,
            app_state=server.lifespan.state,
            _loop=_loop,
            guard=guard,
        )

    try:
        # uvicorn's Server.startup, with a bound on TLS handshakes it does not offer.
        loop = asyncio.get_running_loop()
        server.servers = [
            await loop.create_server(
                protocol,
                sock=sock,
                ssl=tls,
                ssl_handshake_timeout=(guard.read_timeout if guard else 10.0) if tls else None,
                backlog=config.backlog,
            )
        ]
        server.started = True
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
