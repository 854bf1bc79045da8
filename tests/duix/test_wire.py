"""duix.wire: the same client behaviour over aiohttp and httpx, on real loopback sockets.

tests/duix/test_client.py covers the client's logic in-process (httpx + the simulator's ASGI app).
Here the simulator is served by uvicorn on 127.0.0.1 and the client talks to it through each
wire, so what the daemon really runs (aiohttp, ``duix.http_client: auto`` on asyncio) is held
to the same contract as the httpx path: answers, envelopes, Retry-After, timeouts, refused
connections, JSON bodies, the in-flight cap, no secret in any error, and hostile bodies: one
larger than ``duix.max_response_bytes`` (read no further than that), a gzip bomb, a trickle of
a byte a second (the request timeout holds over the body too).
"""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import aiohttp
import anyio
import httpx
import pytest
from pydantic import SecretStr

from duixwatch.config import DuixSettings
from duixwatch.core import documents, errors, models
from duixwatch.core.clock import SystemClock
from duixwatch.duix import DuixClient
from duixwatch.duix.client import _use_aiohttp
from duixwatch.duix.wire import AiohttpWire, HttpxWire, env_proxy
from duixwatch.http import serve as http_serve
from duixwatch.sim import Simulator, serve

WIRES = ["aiohttp", "httpx"]


@pytest.fixture
def sim() -> Simulator:
    return Simulator(apps=2, seed=11, clock=SystemClock(), workload=False)


@pytest.fixture
async def base_url(sim: Simulator) -> AsyncIterator[str]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, sim, "127.0.0.1", 0)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


def config(base_url: str, wire: str, **overrides: Any) -> DuixSettings:
    values: dict[str, Any] = {
        "base_url": base_url,
        "http_client": wire,
        "request_timeout_seconds": 2.0,
        "read_retries": 0,
        "max_requests_per_second": 10_000,
    }
    values.update(overrides)
    return DuixSettings(**values)


def creds(sim: Simulator, index: int = 0) -> models.AppCredentials:
    app = sim.apps[index]
    return models.AppCredentials(app_id=app.app_id, app_key=SecretStr(app.app_key))


def wire_of(client: DuixClient) -> object:
    return client._wire


@pytest.mark.parametrize("wire", WIRES)
async def test_reads_and_writes_reach_the_simulator(
    wire: str, sim: Simulator, base_url: str
) -> None:
    sim.add_session(sim.apps[0].app_id)
    sim.add_session(sim.apps[0].app_id)
    async with DuixClient(config(base_url, wire), clock=SystemClock()) as duix:
        numbers = await duix.concurrency(creds(sim))
        listing = await duix.sessions(creds(sim))
        kind = AiohttpWire if wire == "aiohttp" else HttpxWire
        assert isinstance(wire_of(duix), kind)
        assert numbers.user_concurrent_number == 2
        assert len(listing) == 2
        first = listing.sessions[0].session_id
        assert first is not None
        assert (await duix.stop_session(creds(sim), first)).outcome == "stopped"
        assert (await duix.stop_session(creds(sim), first)).outcome == "already_closed"
        assert len(await duix.sessions(creds(sim))) == 1


@pytest.mark.parametrize("wire", WIRES)
async def test_a_json_body_is_posted(wire: str, sim: Simulator, base_url: str) -> None:
    spec = documents.AvatarSpec(custom_type=2, avatar_name="Wire", cover_url="https://x/a.png")
    async with DuixClient(config(base_url, wire), clock=SystemClock()) as duix:
        created = await duix.create_avatar(creds(sim), spec)
        avatar = await duix.query_avatar(creds(sim), created.avatar_id)
    assert (avatar.name, avatar.status) == ("Wire", "training")


@pytest.mark.parametrize("wire", WIRES)
async def test_status_envelope_and_retry_after_reach_the_client(
    wire: str, sim: Simulator, base_url: str
) -> None:
    app_id = sim.apps[0].app_id
    sim.faults.set(app_id, "getconcurrentNumber", status=429, retry_after_seconds=120, times=1)
    sim.faults.set(app_id, "getconcurrentList", status=503, times=1)
    async with DuixClient(config(base_url, wire), clock=SystemClock()) as duix:
        with pytest.raises(errors.ApiRateLimited) as limited:
            await duix.concurrency(creds(sim))
        with pytest.raises(errors.ApiServerError):
            await duix.sessions(creds(sim))
        sim.faults.set(app_id, "getconcurrentNumber", reject_token=True)
        with pytest.raises(errors.ApiAuthRejected):
            await duix.concurrency(creds(sim))
    assert limited.value.retry_after_seconds == pytest.approx(120, abs=1)


@pytest.mark.parametrize("wire", WIRES)
async def test_a_hang_is_api_timeout_within_the_request_timeout(
    wire: str, sim: Simulator, base_url: str
) -> None:
    sim.faults.set("*", "getconcurrentNumber", hang=True)
    async with DuixClient(
        config(base_url, wire, request_timeout_seconds=0.3), clock=SystemClock()
    ) as duix:
        with anyio.fail_after(5):
            with pytest.raises(errors.ApiTimeout) as info:
                await duix.concurrency(creds(sim))
    assert info.value.reason == "timeout"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("wire", "library_error"), [("aiohttp", aiohttp.ClientError), ("httpx", httpx.HTTPError)]
)
async def test_a_refused_connection_is_api_unavailable(
    wire: str, library_error: type[Exception]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with DuixClient(config(url, wire), clock=SystemClock()) as duix:
        with pytest.raises(errors.ApiUnavailable) as info:
            await duix.concurrency(models.AppCredentials("1", SecretStr("k" * 32)))
    assert isinstance(info.value.__cause__, library_error)
    assert info.value.reason == "transport"


@pytest.mark.parametrize("wire", WIRES)
async def test_the_in_flight_cap_holds_on_real_connections(
    wire: str, sim: Simulator, base_url: str
) -> None:
    sim.faults.set("*", "*", latency_seconds=0.05)
    async with DuixClient(config(base_url, wire, max_in_flight=3), clock=SystemClock()) as duix:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(duix.concurrency, creds(sim, i % 2))
    assert sim.stats.max_in_flight == 3


@pytest.mark.parametrize("wire", WIRES)
async def test_no_error_carries_the_app_key_or_the_token(
    wire: str, sim: Simulator, base_url: str
) -> None:
    app = sim.apps[0]
    sim.faults.set(app.app_id, "*", reject_token=True)
    async with DuixClient(config(base_url, wire), clock=SystemClock()) as duix:
        with pytest.raises(errors.ApiAuthRejected) as info:
            await duix.concurrency(creds(sim))
        token = duix.tokens.token(creds(sim), now=SystemClock().now()).get_secret_value()
    text = f"{info.value!s} {info.value!r} {info.value.__cause__!r}"
    assert app.app_key not in text
    assert token not in text


async def test_a_closed_client_refuses_to_send(sim: Simulator, base_url: str) -> None:
    duix = DuixClient(config(base_url, "aiohttp"), clock=SystemClock())
    await duix.concurrency(creds(sim))
    await duix.aclose()
    with pytest.raises(RuntimeError, match="after aclose"):
        await duix.concurrency(creds(sim))


def test_the_proxy_comes_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert env_proxy("https://openapi.example") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert env_proxy("https://openapi.example") == "http://proxy.internal:3128"
    assert env_proxy("http://openapi.example") is None  # HTTP_PROXY is not set
    monkeypatch.setenv("ALL_PROXY", "http://all.internal:3128")
    assert env_proxy("http://openapi.example") == "http://all.internal:3128"
    monkeypatch.setenv("NO_PROXY", "openapi.example,localhost")
    assert env_proxy("https://openapi.example") is None
    wire = AiohttpWire(
        base_url="https://other.example",
        timeout_seconds=1,
        connect_timeout_seconds=1,
        max_connections=1,
        max_response_bytes=1024,
        headers={},
    )
    assert wire._proxy == "http://proxy.internal:3128"


def test_auto_picks_aiohttp_only_inside_asyncio() -> None:
    assert _use_aiohttp("aiohttp") is True
    assert _use_aiohttp("httpx") is False
    assert _use_aiohttp("auto") is False  # no event loop here: httpx works anywhere

    async def inside() -> bool:
        return _use_aiohttp("auto")

    assert anyio.run(inside, backend="asyncio") is True


# --------------------------------------------------------------------------- hostile bodies

MiB = 1024 * 1024


@pytest.mark.parametrize("wire", WIRES)
async def test_a_fifty_mebibyte_answer_is_malformed_at_the_cap(
    wire: str, sim: Simulator, base_url: str
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", hostile="huge_body")
    cfg = config(base_url, wire, max_response_bytes=MiB, request_timeout_seconds=10)
    async with DuixClient(cfg, clock=SystemClock()) as duix:
        with anyio.fail_after(10):
            with pytest.raises(errors.ApiMalformed, match="larger than 1048576 bytes") as info:
                await duix.concurrency(creds(sim))
            numbers = await duix.concurrency(creds(sim, 1))  # the pool still works
    assert info.value.reason == "malformed"
    assert numbers.user_concurrent_number == 0


class Counted:
    """An ASGI app that streams ``total`` bytes of a JSON envelope and counts what it sent."""

    def __init__(self, total: int, *, gzip_level: int | None = None) -> None:
        self.total = total
        self.sent = 0
        self.gzip_level = gzip_level

    def body(self) -> bytes:
        head = b'{"success":true,"data":{"totalConcurrentNumber":1,"userConcurrentNumber":0},"p":"'
        return head + b"x" * (self.total - len(head) - 2) + b'"}'

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"application/json")]
        body = self.body()
        if self.gzip_level is not None:
            body = gzip.compress(body, compresslevel=self.gzip_level)
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(body), 64 * 1024):
            chunk = body[start : start + 64 * 1024]
            self.sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    async with anyio.create_task_group() as tg:
        port = await tg.start(partial(http_serve.serve, app, "127.0.0.1", 0))
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("wire", WIRES)
async def test_reading_stops_soon_after_the_cap_not_at_the_end_of_the_body(wire: str) -> None:
    app = Counted(50 * MiB)
    async with serving(app) as url:
        cfg = config(url, wire, max_response_bytes=MiB, request_timeout_seconds=10)
        async with DuixClient(cfg, clock=SystemClock()) as duix:
            with anyio.fail_after(10), pytest.raises(errors.ApiMalformed, match="larger than"):
                await duix.concurrency(models.AppCredentials("1", SecretStr("k" * 32)))
            sent_when_refused = app.sent
    assert sent_when_refused < 20 * MiB  # the cap plus what sockets buffer, not 50 MiB


@pytest.mark.parametrize("wire", WIRES)
async def test_a_gzip_bomb_is_measured_after_decompression(wire: str) -> None:
    app = Counted(64 * MiB, gzip_level=9)  # about 64 KiB on the wire
    async with serving(app) as url:
        cfg = config(url, wire, max_response_bytes=MiB, request_timeout_seconds=10)
        async with DuixClient(cfg, clock=SystemClock()) as duix:
            with anyio.fail_after(10), pytest.raises(errors.ApiMalformed, match="larger than"):
                await duix.concurrency(models.AppCredentials("1", SecretStr("k" * 32)))
    assert app.sent < MiB


@pytest.mark.parametrize("wire", WIRES)
async def test_an_answer_of_exactly_the_cap_is_read(wire: str) -> None:
    app = Counted(4096)
    async with serving(app) as url:
        cfg = config(url, wire, max_response_bytes=4096)
        async with DuixClient(cfg, clock=SystemClock()) as duix:
            numbers = await duix.concurrency(models.AppCredentials("1", SecretStr("k" * 32)))
            app.total = 4097
            with pytest.raises(errors.ApiMalformed, match="larger than 4096 bytes"):
                await duix.concurrency(models.AppCredentials("1", SecretStr("k" * 32)))
    assert numbers.total_concurrent_number == 1


@pytest.mark.parametrize("wire", WIRES)
async def test_a_long_error_page_keeps_its_status(wire: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"<html>" + b"x" * (2 * MiB)})

    async with (
        serving(app) as url,
        DuixClient(config(url, wire, max_response_bytes=MiB), clock=SystemClock()) as duix,
    ):
        with pytest.raises(errors.ApiServerError) as info:
            await duix.concurrency(models.AppCredentials("1", SecretStr("k" * 32)))
    assert info.value.body_excerpt is not None
    assert info.value.body_excerpt.startswith("<html>")


@pytest.mark.parametrize("wire", WIRES)
async def test_a_trickle_of_a_byte_a_second_times_out_at_the_request_timeout(
    wire: str, sim: Simulator, base_url: str
) -> None:
    """Every byte comes well within any read timeout; the deadline over the whole exchange
    (DuixClient._send) is what ends it."""
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", hostile="trickle")
    cfg = config(base_url, wire, request_timeout_seconds=1.5)
    async with DuixClient(cfg, clock=SystemClock()) as duix:
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(errors.ApiTimeout) as info:
            await duix.concurrency(creds(sim))
        elapsed = time.monotonic() - started
        numbers = await duix.concurrency(creds(sim, 1))
    assert info.value.reason == "timeout"
    assert 1.4 <= elapsed < 4.0
    assert numbers.user_concurrent_number == 0
