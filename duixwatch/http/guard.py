"""Bounding the HTTP surface's connections: a count, a deadline per request, room for scrapes.

uvicorn bounds idle keep-alive (``timeout_keep_alive``) and header size
(``h11_max_incomplete_event_size``), but a client that sends its request a byte every few
seconds holds its connection (and a file descriptor) forever, and any number of them may
connect. :class:`GuardedH11Protocol` — uvicorn's h11 protocol with three additions — and the
:class:`ConnectionGuard` they share close that gap:

* **a deadline per request**: from connecting (or the end of the previous response) a client
  has ``read_timeout`` seconds to send a whole request (headers and body), or the connection
  is closed (``duixwatch_http_connections_dropped_total{reason="read_timeout"}``);
* **a bound on open connections** (``max_connections``): at the limit, the connection that has
  waited longest for its request is closed to make room (``reason="evicted"``) — so a flood of
  slow or idle connections cannot keep a scrape out, since a real client sends its request at
  once and is then being served, which no eviction touches; when every connection is being
  served, the new one is refused at once (``reason="refused"``);
* **a bound on a request's size**: 16 KiB for the request line, headers and any body (every
  endpoint is a GET), counted as the bytes arrive — h11's own bound applies only to a request
  that arrives in pieces; a larger request is answered 431 and closed (``reason="too_large"``);
* **client_allowed_sans**: a TLS client whose certificate has none of the web config's allowed
  SANs is disconnected before it can send a request (``reason="client_san"``).

With TLS, a connection counts from the end of its handshake; the handshake itself is bounded
by ``ssl_handshake_timeout`` (:func:`duixwatch.http.serve.serve`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import h11
from prometheus_client import CollectorRegistry, Counter, Gauge
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["DROP_REASONS", "MAX_REQUEST_BYTES", "ConnectionGuard", "GuardedH11Protocol"]

DROP_REASONS: Final = ("refused", "evicted", "read_timeout", "too_large", "client_san")
#: A request (line, headers and any body) may not be longer: every endpoint is a GET.
MAX_REQUEST_BYTES: Final = 16 * 1024
_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 18\r\nConnection: close\r\n"
    b"\r\nRequest too large\n"
)


class ConnectionGuard:
    """The open connections of one listener, and what may come in.

    ``allowed_peer`` decides on a TLS client's certificate (``transport.get_extra_info(
    "peercert")``); it is asked again on every new connection, so it can follow a reload.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        read_timeout: float,
        registry: CollectorRegistry,
        allowed_peer: Callable[[dict[str, Any] | None], bool] = lambda _cert: True,
    ) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.allowed_peer = allowed_peer
        self._open: set[GuardedH11Protocol] = set()
        #: Connections waiting for a request, oldest first (dicts keep insertion order).
        self._waiting: dict[GuardedH11Protocol, None] = {}
        self._connections = Gauge(
            "duixwatch_http_connections",
            "Open connections to the HTTP surface (after the TLS handshake, with TLS).",
            registry=registry,
        )
        self._connections.set_function(lambda: len(self._open))
        self._dropped = Counter(
            "duixwatch_http_connections_dropped_total",
            "Connections closed by duixwatch, by reason: refused (at max_connections, every "
            "connection being served), evicted (closed at the limit to make room: it had waited "
            "longest for its request), read_timeout (no whole request within "
            "read_timeout_seconds), too_large (a request over 16 KiB: answered 431), client_san "
            "(client certificate not in client_allowed_sans).",
            ["reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:
            self._dropped.labels(reason)

    def __len__(self) -> int:
        return len(self._open)

    def dropped(self, reason: str) -> None:
        self._dropped.labels(reason).inc()

    def admit(self, connection: GuardedH11Protocol) -> bool:
        """Count ``connection`` in (making room if need be); ``False``: refuse it."""
        if len(self._open) >= self.max_connections:
            if not self._waiting:
                self.dropped("refused")
                return False
            oldest = next(iter(self._waiting))
            self.dropped("evicted")
            oldest.drop()  # leaves the sets at once (abort calls connection_lost later)
        self._open.add(connection)
        self._waiting[connection] = None
        return True

    def serving(self, connection: GuardedH11Protocol) -> None:
        self._waiting.pop(connection, None)

    def waiting(self, connection: GuardedH11Protocol) -> None:
        if connection in self._open:
            self._waiting.pop(connection, None)
            self._waiting[connection] = None  # the newest now

    def release(self, connection: GuardedH11Protocol) -> None:
        self._open.discard(connection)
        self._waiting.pop(connection, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, counted by a :class:`ConnectionGuard` and with a request
    deadline."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None
        #: Bytes of the request being received (the line, headers and any body).
        self._request_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self._guard.admit(self):
            transport.abort()
            return
        self._admitted = True
        if not self._guard.allowed_peer(transport.get_extra_info("peercert")):
            self._guard.dropped("client_san")
            self._guard.release(self)
            self._admitted = False
            transport.abort()
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return  # refused before uvicorn saw it: nothing of its state to undo
        self._admitted = False
        self._disarm()
        self._guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:  # still receiving a request
            self._request_bytes += len(data)
            if self._request_bytes > MAX_REQUEST_BYTES:
                self._guard.dropped("too_large")
                self._disarm()
                self.transport.write(_TOO_LARGE)
                self.transport.close()
                return
        super().data_received(data)
        self._check_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        self._guard.waiting(self)
        self._arm()
        self._check_request()  # a pipelined request may already be in

    def _check_request(self) -> None:
        """A whole request received: it is being served; the deadline is over."""
        if self._deadline is not None and self.conn.their_state is h11.DONE:
            self._disarm()
            self._guard.serving(self)

    def _arm(self) -> None:
        self._disarm()
        self._request_bytes = 0
        self._deadline = self.loop.call_later(self._guard.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._admitted and not self.transport.is_closing():
            self._guard.dropped("read_timeout")
            self.drop()

    def drop(self) -> None:
        """Close at once (no goodbye to a client that is not sending its request)."""
        self._guard.release(self)
        self._disarm()
        self.transport.abort()
