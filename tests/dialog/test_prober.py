"""dialog.prober: probes on their schedule, questions in turn, reloads in place, and at most
4 runs in flight."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import httpx

from duixwatch.dialog.prober import Prober, ProbeResult
from duixwatch.dialog.schema import DialogProbeConfig
from duixwatch.sim import Simulator, create_app
from tests.fakes import FakeClock

ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Results:
    def __init__(self) -> None:
        self.seen: list[ProbeResult] = []

    def probe_finished(self, result: ProbeResult) -> None:
        self.seen.append(result)

    def of(self, name: str) -> list[ProbeResult]:
        return [r for r in self.seen if r.probe == name]


class Gate:
    """A dialog backend (ASGI) that holds every question until :attr:`opened` is set, then
    answers it conformantly; it counts the questions it holds, and the most at once."""

    def __init__(self) -> None:
        self.opened = anyio.Event()
        self.in_flight = 0
        self.most = 0
        self.asked = 0

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        assert scope["type"] == "http"
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.asked += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.opened.wait()
        finally:
            self.in_flight -= 1
        asked = json.loads(body)
        envelope = {
            "code": "0",
            "success": True,
            "data": {"conversationId": asked["dh-conversation-id"], "answer": "hi"},
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(envelope).encode()})

    def client(self, _: DialogProbeConfig) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self))


def probe(name: str, path: str = "/dialog", **kw: Any) -> DialogProbeConfig:
    return DialogProbeConfig.model_validate(
        {"name": name, "url": f"http://sim.test{path}", "interval_seconds": 30, **kw}
    )


async def run_until(
    prober: Prober, probes: list[DialogProbeConfig], done: Any, *, then: Any = None
) -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(prober.run)
            prober.apply(probes)
            while not done():
                await anyio.sleep(0.01)
            if then is not None:
                await then()
            tg.cancel_scope.cancel()


def fixture(clock: FakeClock) -> tuple[Any, Results, Prober]:
    app = create_app(Simulator(apps=1, seed=1, clock=clock, workload=False))
    results = Results()

    def client(_: DialogProbeConfig) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app))

    prober = Prober(clock=clock, observer=results, client_factory=client)
    return app, results, prober


async def test_each_probe_runs_on_its_interval_asking_its_questions_in_turn(
    clock: FakeClock,
) -> None:
    app, results, prober = fixture(clock)
    probes = [
        probe("json", questions=["one", "two"]),
        probe("stream", "/dialog/stream", mode="stream", interval_seconds=10),
    ]
    await run_until(prober, probes, lambda: len(results.of("json")) >= 3)
    assert [r.question for r in results.of("json")[:3]] == ["one", "two", "one"]
    assert all(r.success for r in results.seen), [r.failed_rule for r in results.seen]
    assert {r.chunks for r in results.of("json")} == {1}
    assert results.of("stream")[0].chunks > 1
    # the first runs are spread within min(interval, 10 s); then every interval, measured
    # from the start of the run (on the fake clock, the other probe's sleeps move time on)
    assert all(0 <= s <= 10 for s in clock.sleeps[:2]), clock.sleeps
    assert max(clock.sleeps) <= 30
    assert clock.sleeps.count(30.0) >= 2
    assert prober.results["json"].probe == "json"
    # the earlier turns ride along as dh-context
    last = app.state.dialog.requests.to_dict()["last"]["fields"]
    assert isinstance(json.loads(last["dh-context"]), list)


async def test_a_failing_backend_is_a_failed_run_with_its_rule(clock: FakeClock) -> None:
    app, results, prober = fixture(clock)
    app.state.dialog.set_faults(
        type(app.state.dialog.faults).from_dict({"wrong_conversation_id": True})
    )
    await run_until(prober, [probe("bot")], lambda: results.of("bot"))
    (first, *_) = results.of("bot")
    assert not first.success
    assert first.reason == "contract"
    assert first.failed_rule is not None
    assert first.failed_rule.rule == "data.conversationId"


async def test_a_reload_keeps_unchanged_probes_restarts_changed_and_drops_removed(
    clock: FakeClock,
) -> None:
    _, results, prober = fixture(clock)
    keep, change, drop = probe("keep"), probe("change"), probe("drop")

    async def reload() -> None:
        before = len(results.of("keep"))
        prober.apply([keep, probe("change", questions=["new question"])])
        while not any(r.question == "new question" for r in results.of("change")):
            await anyio.sleep(0.01)
        assert "drop" not in prober.results
        assert len(results.of("keep")) >= before  # its schedule went on

    await run_until(
        prober,
        [keep, change, drop],
        lambda: all(results.of(n) for n in ("keep", "change", "drop")),
        then=reload,
    )


EIGHT = [f"p{i}" for i in range(8)]


async def test_at_most_four_runs_are_in_flight_and_the_rest_wait_for_a_slot(
    clock: FakeClock,
) -> None:
    """8 probes on a backend that holds every question: 4 reach it, 4 wait (the default
    ``max_concurrent``, the daemon's); once it answers, every probe gets its run."""
    gate, results = Gate(), Results()
    prober = Prober(clock=clock, observer=results, client_factory=gate.client)

    async def held_then_released() -> None:
        await anyio.sleep(0.3)  # time enough for a fifth to arrive, were it let through
        assert gate.in_flight == 4
        assert gate.asked == 4
        assert results.seen == []
        gate.opened.set()
        while not all(results.of(name) for name in EIGHT):
            await anyio.sleep(0.01)

    await run_until(
        prober,
        [probe(name, timeout_seconds=20) for name in EIGHT],
        lambda: gate.in_flight >= 4,
        then=held_then_released,
    )
    assert gate.most == 4
    assert all(r.success for r in results.seen), [r.failed_rule for r in results.seen]


async def test_a_hung_backend_holds_a_slot_only_until_the_probes_timeout(
    clock: FakeClock,
) -> None:
    """Never answered: each run gives its slot up at its timeout (0.3 s), so the 8 probes all
    fail as ``timeout`` in turns of at most 4."""
    gate, results = Gate(), Results()
    prober = Prober(clock=clock, observer=results, client_factory=gate.client)
    await run_until(
        prober,
        [probe(name, timeout_seconds=0.3) for name in EIGHT],
        lambda: all(results.of(name) for name in EIGHT),
    )
    assert gate.most == 4
    assert {r.reason for r in results.seen} == {"timeout"}
    assert not gate.opened.is_set()
