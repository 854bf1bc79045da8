"""The simulator's dialog backend faults: the control API, every fault's shape (in-process, on a
fake clock) and the timing faults over loopback (uvicorn, real clock)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import TaskStatus
from starlette.applications import Starlette

from duixwatch.sim import Simulator, create_app
from duixwatch.sim.dialog import STALL_SECONDS
from tests.fakes import FakeClock
from tests.loopback import loopback_sim, serve_app

QUESTION = {"sid": "u1", "dh-code": "d1", "dh-question": "hello there", "dh-conversation-id": "c9"}
FAULTS = "/_sim/dialog/faults"
REQUESTS = "/_sim/dialog/requests"
#: The healthy stream: four words, then the final frame.
WORD_FRAMES = 4


@pytest.fixture
def app(clock: FakeClock) -> Starlette:
    return create_app(Simulator(apps=1, seed=7, clock=clock, workload=False))


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


async def set_faults(http: httpx.AsyncClient, **faults: Any) -> None:
    response = await http.post(FAULTS, json=faults)
    assert response.status_code == 200, response.text


def sse_frames(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, unparsed."""
    return [frame.removeprefix("data: ") for frame in text.split("\n\n") if frame]


def parsed(frames: list[str]) -> list[Any]:
    out: list[Any] = []
    for frame in frames:
        try:
            out.append(json.loads(frame))
        except ValueError:
            out.append(None)
    return out


# --------------------------------------------------------------------------- control API


async def test_faults_are_set_read_replaced_and_cleared(http: httpx.AsyncClient) -> None:
    assert (await http.get(FAULTS)).json() == {}
    header = {"name": "Authorization", "value": "Bearer s3cret"}
    posted = await http.post(FAULTS, json={"delay_seconds": 1, "require_header": header})
    assert posted.json() == {
        "delay_seconds": 1.0,
        "require_header": {"name": "authorization", "value": "Bearer s3cret"},
    }
    assert (await http.get(FAULTS)).json() == posted.json()
    await set_faults(http, no_end=True)  # a POST replaces, it does not merge
    assert (await http.get(FAULTS)).json() == {"no_end": True}
    assert (await http.delete(FAULTS)).json() == {}
    assert (await http.get(FAULTS)).json() == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"delay": 1}, "unknown fields: delay"),
        ({"delay_seconds": "1"}, "delay_seconds must be a number"),
        ({"delay_seconds": True}, "delay_seconds must be a number"),
        ({"chunk_delay_seconds": -1}, "chunk_delay_seconds must be between 0 and 600"),
        ({"keep_open_seconds": 601}, "keep_open_seconds must be between 0 and 600"),
        ({"no_end": "yes"}, "no_end must be true or false"),
        ({"malformed": 1}, "malformed must be true or false"),
        ({"stall_after_chunks": 1.5}, "stall_after_chunks must be an integer"),
        ({"stall_after_chunks": -1}, "stall_after_chunks must be between 0"),
        ({"status": 200}, "status must be between 400 and 599"),
        ({"status": "500"}, "status must be an integer"),
        ({"require_header": {"name": "X-Key"}}, "require_header must be an object"),
        ({"require_header": {"name": "bad name", "value": "v"}}, "an HTTP header name"),
        ({"require_header": {"name": "X-Key", "value": 1}}, "require_header.value must be"),
    ],
)
async def test_a_bad_fault_is_refused_with_400_and_says_why(
    http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    await set_faults(http, no_end=True)
    response = await http.post(FAULTS, json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert (await http.get(FAULTS)).json() == {"no_end": True}  # the old faults stay


@pytest.mark.parametrize("raw", [b"[1]", b"{nope"])
async def test_a_fault_body_that_is_no_json_object_is_refused(
    http: httpx.AsyncClient, raw: bytes
) -> None:
    response = await http.post(FAULTS, content=raw)
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


async def test_two_simulators_never_share_dialog_faults(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    other = create_app(Simulator(apps=1, seed=8, clock=clock, workload=False))
    await set_faults(http, status=503)
    transport = httpx.ASGITransport(app=other)
    async with httpx.AsyncClient(transport=transport, base_url="http://other") as client:
        assert (await client.get(FAULTS)).json() == {}
        assert (await client.post("/dialog", json=QUESTION)).status_code == 200
    assert (await http.post("/dialog", json=QUESTION)).status_code == 503


async def test_faults_can_be_set_in_process(app: Starlette, http: httpx.AsyncClient) -> None:
    app.state.dialog.set_faults(success_false=True)
    assert (await http.get(FAULTS)).json() == {"success_false": True}
    app.state.dialog.clear_faults()
    assert (await http.post("/dialog", json=QUESTION)).json()["success"] is True


async def test_the_request_log_keeps_the_last_body_and_header_names_never_values(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get(REQUESTS)).json() == {"count": 0, "last": None}
    await http.post("/dialog", json={"broken": True})
    headers = {"Authorization": "Bearer s3cret", "X-Trace": "t-42"}
    await http.post("/dialog/stream", json=QUESTION, headers=headers)
    response = await http.get(REQUESTS)
    doc = response.json()
    assert doc["count"] == 2
    assert doc["last"]["fields"] == QUESTION
    assert {"authorization", "x-trace", "content-type"} <= set(doc["last"]["header_names"])
    assert "s3cret" not in response.text
    assert "t-42" not in response.text
    assert (await http.delete(REQUESTS)).json() == {"count": 0, "last": None}
    await http.post("/dialog", content=b"not json")
    assert (await http.get(REQUESTS)).json()["last"]["fields"] == {}


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("path", ["/dialog", "/dialog/stream"])
@pytest.mark.parametrize("status", [400, 429, 500, 503])
async def test_a_status_fault_answers_that_status_with_a_json_error(
    http: httpx.AsyncClient, path: str, status: int
) -> None:
    await set_faults(http, status=status)
    response = await http.post(path, json=QUESTION)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["success"] is False
    assert response.json()["code"] == str(status)


@pytest.mark.parametrize("path", ["/dialog", "/dialog/stream"])
async def test_a_required_header_is_401_without_it_and_fine_with_it(
    http: httpx.AsyncClient, path: str
) -> None:
    await set_faults(http, require_header={"name": "X-Bot-Key", "value": "k1"})
    assert (await http.post(path, json=QUESTION)).status_code == 401
    wrong = await http.post(path, json=QUESTION, headers={"X-Bot-Key": "k2"})
    assert wrong.status_code == 401
    assert "k1" not in wrong.text
    right = await http.post(path, json=QUESTION, headers={"x-bot-key": "k1"})
    assert right.status_code == 200


async def test_success_false_answers_an_envelope_with_an_error_message(
    http: httpx.AsyncClient,
) -> None:
    await set_faults(http, success_false=True)
    for path in ("/dialog", "/dialog/stream"):
        response = await http.post(path, json=QUESTION)
        body = response.json()
        assert (response.status_code, body["success"]) == (200, False)
        assert body["data"]["errorMsg"]
        assert body["data"]["conversationId"] == "c9"


async def test_wrong_conversation_id_differs_from_the_one_sent(http: httpx.AsyncClient) -> None:
    await set_faults(http, wrong_conversation_id=True)
    body = (await http.post("/dialog", json=QUESTION)).json()
    assert body["success"] is True
    assert body["data"]["conversationId"] != "c9"


async def test_a_malformed_json_answer_is_not_json(http: httpx.AsyncClient) -> None:
    await set_faults(http, malformed=True)
    response = await http.post("/dialog", json=QUESTION)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError, match=r"Expecting|Unterminated"):
        json.loads(response.content)


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
async def test_a_malformed_stream_has_exactly_one_frame_that_is_not_json(
    http: httpx.AsyncClient, fmt: str
) -> None:
    await set_faults(http, malformed=True)
    response = await http.post("/dialog/stream", params={"format": fmt}, json=QUESTION)
    frames = sse_frames(response.text) if fmt == "sse" else response.text.splitlines()
    assert len(frames) == WORD_FRAMES + 1
    assert parsed(frames).count(None) == 1
    assert parsed(frames)[-1] == {"answer": "", "isEnd": True}


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
async def test_no_end_leaves_out_the_final_frame(http: httpx.AsyncClient, fmt: str) -> None:
    await set_faults(http, no_end=True)
    response = await http.post("/dialog/stream", params={"format": fmt}, json=QUESTION)
    frames = parsed(sse_frames(response.text) if fmt == "sse" else response.text.splitlines())
    assert len(frames) == WORD_FRAMES
    assert not any(frame["isEnd"] for frame in frames)


async def test_after_end_sends_one_more_frame_after_the_final_one(
    http: httpx.AsyncClient,
) -> None:
    await set_faults(http, after_end=True)
    frames = parsed(sse_frames((await http.post("/dialog/stream", json=QUESTION)).text))
    assert [frame["isEnd"] for frame in frames] == [False] * WORD_FRAMES + [True, False]
    assert frames[-1]["answer"]


async def test_timing_faults_wait_on_the_simulators_clock(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    await set_faults(http, delay_seconds=3, first_chunk_delay_seconds=2, chunk_delay_seconds=0.5)
    assert (await http.post("/dialog", json=QUESTION)).json()["success"] is True
    assert clock.sleeps == [5.0]  # json: the first chunk is the body
    clock.sleeps.clear()
    await http.post("/dialog/stream", json=QUESTION)
    assert clock.sleeps == [3.0, 2.0] + [0.5] * WORD_FRAMES


async def test_a_stall_ends_after_the_bound(http: httpx.AsyncClient, clock: FakeClock) -> None:
    await set_faults(http, stall_after_chunks=2)
    frames = parsed(sse_frames((await http.post("/dialog/stream", json=QUESTION)).text))
    assert frames == [{"answer": "You ", "isEnd": False}, {"answer": "said: ", "isEnd": False}]
    assert clock.sleeps == [STALL_SECONDS] == [600.0]


async def test_a_delay_also_holds_back_a_refusal(http: httpx.AsyncClient, clock: FakeClock) -> None:
    await set_faults(http, delay_seconds=4)
    response = await http.post("/dialog", json={"sid": "only"})
    assert response.status_code == 400
    assert clock.sleeps == [4.0]


# --------------------------------------------------------------------------- loopback


LOOPBACK = pytest.mark.timeout(30)


@asynccontextmanager
async def loopback() -> AsyncIterator[tuple[httpx.AsyncClient, Starlette]]:
    """A client of a fresh simulator over loopback (real clock), and its app."""
    async with (
        loopback_sim() as (base_url, app),
        httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(5.0)) as client,
    ):
        yield client, app


class Timed:
    """One streamed answer with the time of its headers, of each chunk and of its end."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.headers_at = 0.0
        self.chunks: list[tuple[float, str]] = []
        self.ended_at = 0.0

    @classmethod
    async def post(cls, client: httpx.AsyncClient, path: str, **kwargs: Any) -> Timed:
        timed = cls()
        async with client.stream("POST", path, json=QUESTION, **kwargs) as response:
            timed.headers_at = time.monotonic() - timed.started
            async for text in response.aiter_text():
                timed.chunks.append((time.monotonic() - timed.started, text))
        timed.ended_at = time.monotonic() - timed.started
        return timed


@LOOPBACK
@pytest.mark.exclusive  # timings: run alone
async def test_over_loopback_delay_holds_back_the_first_byte() -> None:
    async with loopback() as (client, _):
        await set_faults(client, delay_seconds=0.4)
        with anyio.fail_after(10):
            timed = await Timed.post(client, "/dialog")
    assert 0.38 <= timed.headers_at <= 2.0
    assert json.loads("".join(text for _, text in timed.chunks))["success"] is True


@LOOPBACK
@pytest.mark.exclusive  # timings: run alone
async def test_over_loopback_first_chunk_and_chunk_delays_space_the_frames() -> None:
    async with loopback() as (client, _):
        await set_faults(client, first_chunk_delay_seconds=0.4, chunk_delay_seconds=0.15)
        with anyio.fail_after(10):
            timed = await Timed.post(client, "/dialog/stream")
    assert timed.headers_at < 0.3  # the headers go out at once
    first_at = timed.chunks[0][0]
    assert 0.38 <= first_at <= 2.0
    assert timed.ended_at - first_at >= 0.15 * WORD_FRAMES - 0.02
    frames = parsed(sse_frames("".join(text for _, text in timed.chunks)))
    assert frames[-1] == {"answer": "", "isEnd": True}


@LOOPBACK
async def test_over_loopback_keep_open_holds_the_stream_after_the_final_frame() -> None:
    async with loopback() as (client, _):
        await set_faults(client, keep_open_seconds=0.5)
        with anyio.fail_after(10):
            timed = await Timed.post(client, "/dialog/stream", params={"format": "ndjson"})
    text = "".join(t for _, t in timed.chunks)
    assert parsed(text.splitlines())[-1] == {"answer": "", "isEnd": True}
    last_frame_at = timed.chunks[-1][0]
    assert timed.ended_at - last_frame_at >= 0.45
    assert timed.ended_at <= 3.0


@LOOPBACK
async def test_over_loopback_a_stall_holds_the_connection_until_the_client_leaves() -> None:
    async with loopback() as (client, app):
        await set_faults(client, stall_after_chunks=1)
        received = ""
        with anyio.fail_after(10):
            async with client.stream("POST", "/dialog/stream", json=QUESTION) as response:
                with anyio.move_on_after(1.0) as idle:
                    async for text in response.aiter_text():
                        received += text
            assert idle.cancelled_caught  # the stream never ended by itself
            assert parsed(sse_frames(received)) == [{"answer": "You ", "isEnd": False}]
            while len(app.state.hangs):  # the client went away: the stall lets go
                await anyio.sleep(0.02)


@LOOPBACK
async def test_over_loopback_a_json_stall_sends_headers_and_no_body() -> None:
    async with loopback() as (client, _):
        await set_faults(client, stall_after_chunks=0)
        with anyio.fail_after(10):
            async with client.stream("POST", "/dialog", json=QUESTION) as response:
                assert response.status_code == 200
                with anyio.move_on_after(0.5) as idle:
                    body = await response.aread()
        assert idle.cancelled_caught, body


@LOOPBACK
async def test_over_loopback_stopping_the_server_ends_a_stall_at_once() -> None:
    app = create_app(Simulator(apps=1, seed=3, workload=False))
    app.state.dialog.set_faults(stall_after_chunks=0)
    received: list[str] = []
    server = anyio.CancelScope()

    async def run_server(*, task_status: TaskStatus[int]) -> None:
        with server:
            await serve_app(app, task_status=task_status)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            port = await tg.start(run_server)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

                async def call() -> None:
                    async with client.stream("POST", "/dialog/stream", json=QUESTION) as resp:
                        async for text in resp.aiter_text():
                            received.append(text)

                async with anyio.create_task_group() as clients:
                    clients.start_soon(call)
                    while not len(app.state.hangs):
                        await anyio.sleep(0.02)
                    stopping = time.monotonic()
                    server.cancel()  # the client's stream ends: it is not cancelled itself
                ended = time.monotonic()
    assert ended - stopping < 3.0
    assert received == []
