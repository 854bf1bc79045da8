"""http.guard and TLS on a real listener (127.0.0.1): connection bounds, request deadlines,
client certificates and certificate rotation."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from anyio.streams.tls import TLSAttribute, TLSStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from duixwatch.core.clock import SystemClock
from duixwatch.export.exposition import Registry
from duixwatch.http import serve
from duixwatch.http.guard import ConnectionGuard
from duixwatch.http.security import SurfaceMetrics, WebSecurity
from tests.tls import CA, Issued

pytestmark = pytest.mark.timeout(60)


class Held:
    """An endpoint that answers when the test says so."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.entered = 0

    async def endpoint(self, _: Request) -> Response:
        self.entered += 1
        await self.release.wait()
        return PlainTextResponse("held\n")


async def hello(_: Request) -> Response:
    return PlainTextResponse("hello\n")


class Listener:
    def __init__(self, port: int, guard: ConnectionGuard, registry: Registry) -> None:
        self.port = port
        self.guard = guard
        self.registry = registry

    def dropped(self, reason: str) -> float | None:
        return self.registry.get_sample_value(
            "duixwatch_http_connections_dropped_total", {"reason": reason}
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def listening(
    *,
    max_connections: int = 8,
    read_timeout: float = 0.5,
    held: Held | None = None,
    security: WebSecurity | None = None,
    registry: Registry | None = None,
) -> AsyncIterator[Listener]:
    registry = registry or Registry()
    guard = ConnectionGuard(
        max_connections=max_connections,
        read_timeout=read_timeout,
        registry=registry,
        allowed_peer=security.allowed_peer if security else (lambda _c: True),
    )
    routes = [Route("/hello", hello), Route("/held", (held or Held()).endpoint)]
    app = Starlette(routes=routes)
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve.serve(
                security.wrap(app) if security else app,
                "127.0.0.1",
                0,
                tls=security.listener_context() if security else None,
                guard=guard,
                idle_timeout=5.0,
                task_status=task_status,
            )
        )
        yield Listener(port, guard, registry)
        if held is not None:
            held.release.set()
        tg.cancel_scope.cancel()


async def closed_by_server(stream: SocketStream, within: float) -> bool:
    """Whether the server closes ``stream`` within ``within`` seconds (reading what it sends)."""
    with anyio.move_on_after(within):
        try:
            while await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError, OSError):
            return True
    return False


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    with anyio.fail_after(seconds):
        while not check():
            await anyio.sleep(0.01)


async def test_a_request_sent_a_byte_at_a_time_is_cut_off_at_the_deadline() -> None:
    async with listening(read_timeout=0.5) as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        started = anyio.current_time()
        await stream.send(b"GET /hello HTTP/1.1\r\n")
        await stream.send(b"Host: x\r\n")  # ... and never the blank line
        assert await closed_by_server(stream, within=3.0)
        assert 0.4 < anyio.current_time() - started < 2.0
        await stream.aclose()
        assert server.dropped("read_timeout") == 1
        await eventually(lambda: len(server.guard) == 0)
        # a client that sends its request at once is served, twice on one connection
        async with httpx.AsyncClient(base_url=server.url) as http:
            for _ in range(2):
                assert (await http.get("/hello")).text == "hello\n"
                await anyio.sleep(0.6)  # longer than the deadline, between requests: idle


async def test_at_the_limit_the_connection_waiting_longest_makes_room_for_a_scrape() -> None:
    async with listening(max_connections=4, read_timeout=30) as server:
        idle = [await anyio.connect_tcp("127.0.0.1", server.port) for _ in range(4)]
        await eventually(lambda: len(server.guard) == 4)
        async with httpx.AsyncClient(base_url=server.url) as http:
            response = await http.get("/hello")
        assert response.text == "hello\n"
        assert server.dropped("evicted") == 1
        assert await closed_by_server(idle[0], within=2.0)  # the oldest went
        assert len(server.guard) <= 4
        for stream in idle:
            await stream.aclose()


async def test_when_every_connection_is_being_served_a_new_one_is_refused_at_once() -> None:
    held = Held()
    async with listening(max_connections=2, read_timeout=30, held=held) as server:
        busy = [await anyio.connect_tcp("127.0.0.1", server.port) for _ in range(2)]
        for stream in busy:
            await stream.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        await eventually(lambda: held.entered == 2)
        extra = await anyio.connect_tcp("127.0.0.1", server.port)
        assert await closed_by_server(extra, within=2.0)
        await extra.aclose()
        assert server.dropped("refused") == 1
        held.release.set()
        for stream in busy:
            answer = b""
            with anyio.fail_after(5):
                while b"held" not in answer:
                    answer += await stream.receive()
            await stream.aclose()


async def test_pipelined_requests_are_each_served() -> None:
    async with listening() as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        request = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
        await stream.send(request * 3)
        received = b""
        with anyio.fail_after(5):
            while received.count(b"hello\n") < 3:
                received += await stream.receive()
        await stream.aclose()


async def test_oversized_requests_get_431_not_memory() -> None:
    async with listening() as server, httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/hello", headers={"X-Big": "x" * serve.MAX_HEADER_BYTES})
        assert response.status_code == 431
        long_url = await http.get("/hello?" + "q" * serve.MAX_HEADER_BYTES)
        assert long_url.status_code == 431
        assert server.dropped("too_large") == 2
        assert (await http.get("/hello", headers={"X-Fine": "x" * 8000})).status_code == 200


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return CA(tmp_path_factory.mktemp("ca"))


def security(path: Path, registry: Registry) -> WebSecurity:
    clock = SystemClock()
    return WebSecurity(
        path,
        open_health_endpoints=True,
        metrics=SurfaceMetrics(registry),
        now=clock.now,
        monotonic=clock.monotonic,
    )


def rewrite(path: Path, text: str | bytes) -> None:
    """Replace ``path`` (renamed over, as cert-manager and kubelet do) with a later mtime."""
    new = path.with_suffix(".new")
    new.write_bytes(text.encode() if isinstance(text, str) else text)
    later = (path.stat().st_mtime_ns if path.exists() else 0) + 10**9
    os.utime(new, ns=(later, later))
    new.replace(path)


def client_context(ca: CA, cert: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.cert)
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    return context


async def served(port: int, context: ssl.SSLContext) -> dict[str, object]:
    """The certificate the server presents (after a whole request, so a refusal shows)."""
    stream = await tls_connect(port, context)
    try:
        await stream.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        with anyio.fail_after(5):
            while b"hello" not in answer:
                answer += await stream.receive()
        return stream.extra(TLSAttribute.peer_certificate)  # noqa: S610 - not Django
    finally:
        await stream.aclose()


#: What a refused handshake raises, depending on when the server hangs up.
REFUSED = (ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, OSError)


async def tls_connect(port: int, context: ssl.SSLContext) -> TLSStream:
    """A TLS connection whose socket is closed when the handshake fails."""
    raw = await anyio.connect_tcp("127.0.0.1", port)
    try:
        return await TLSStream.wrap(
            raw, hostname="127.0.0.1", ssl_context=context, standard_compatible=False
        )
    except BaseException:
        await raw.aclose()
        raise


def subject_cn(cert: dict[str, object]) -> str:
    for rdn in cert["subject"]:  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise AssertionError(cert)


async def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path, ca: CA) -> None:
    first = ca.issue("first.test", sans=("IP:127.0.0.1",))
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    rewrite(cert, first.cert.read_bytes())
    rewrite(key, first.key.read_bytes())
    web = tmp_path / "web.yml"
    rewrite(web, "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    registry = Registry()
    guarded = security(web, registry)
    async with listening(security=guarded, registry=registry) as server:
        context = client_context(ca)
        assert subject_cn(await served(server.port, context)) == "first.test"
        kept_open = await tls_connect(server.port, context)
        second = ca.issue("second.test", sans=("IP:127.0.0.1",))
        rewrite(key, second.key.read_bytes())  # the key first: a mismatch, for a moment
        rewrite(cert, second.cert.read_bytes())
        assert subject_cn(await served(server.port, context)) == "second.test"
        # the connection made before the renewal still works
        await kept_open.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        with anyio.fail_after(5):
            while b"hello" not in answer:
                answer += await kept_open.receive()
        await kept_open.aclose()
    assert registry.get_sample_value("duixwatch_web_config_last_reload_successful") == 1


async def test_mutual_tls_lets_in_only_the_clients_with_an_allowed_certificate(
    tmp_path: Path, ca: CA
) -> None:
    server_cert = ca.issue("server.test", sans=("IP:127.0.0.1",))
    prometheus = ca.issue("prometheus.test")
    stranger = ca.issue("stranger.test")
    web = tmp_path / "web.yml"
    rewrite(
        web,
        f"tls_server_config:\n  cert_file: {server_cert.cert}\n  key_file: {server_cert.key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca.cert}\n"
        "  client_allowed_sans: [prometheus.test]\n",
    )
    registry = Registry()
    async with listening(security=security(web, registry), registry=registry) as server:
        await served(server.port, client_context(ca, prometheus))
        with pytest.raises(REFUSED):
            await served(server.port, client_context(ca))  # no certificate
        with pytest.raises(REFUSED):
            await served(server.port, client_context(ca, stranger))  # not an allowed SAN
        assert server.dropped("client_san") == 1


async def test_a_reload_that_requires_client_certificates_applies_to_the_next_handshake(
    tmp_path: Path, ca: CA
) -> None:
    server_cert = ca.issue("server.test", sans=("IP:127.0.0.1",))
    prometheus = ca.issue("prometheus.test")
    web = tmp_path / "web.yml"
    tls = f"tls_server_config:\n  cert_file: {server_cert.cert}\n  key_file: {server_cert.key}\n"
    rewrite(web, tls)
    registry = Registry()
    async with listening(security=security(web, registry), registry=registry) as server:
        await served(server.port, client_context(ca))  # no client certificate needed yet
        rewrite(
            web,
            tls + f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca.cert}\n",
        )
        for _ in range(3):  # the first handshake after the change included
            with pytest.raises(REFUSED):
                await served(server.port, client_context(ca))
        await served(server.port, client_context(ca, prometheus))


async def test_min_version_refuses_older_clients(tmp_path: Path, ca: CA) -> None:
    server_cert = ca.issue("server.test", sans=("IP:127.0.0.1",))
    web = tmp_path / "web.yml"
    rewrite(
        web,
        f"tls_server_config:\n  cert_file: {server_cert.cert}\n  key_file: {server_cert.key}\n"
        "  min_version: TLS13\n",
    )
    registry = Registry()
    async with listening(security=security(web, registry), registry=registry) as server:
        old = client_context(ca)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(REFUSED):
            await served(server.port, old)
        await served(server.port, client_context(ca))
