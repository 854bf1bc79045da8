"""duix.client against the simulator, in-process through httpx.ASGITransport."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest
from pydantic import SecretStr

from duixwatch.config import DuixSettings
from duixwatch.core import documents, errors, models
from duixwatch.core.clock import SystemClock
from duixwatch.duix import DuixClient
from duixwatch.duix.auth import mint_token
from duixwatch.sim import ListShape, Simulator, create_app
from tests.fakes import FakeClock

SIM_URL = "http://sim.test"


def settings(**overrides: Any) -> DuixSettings:
    values: dict[str, Any] = {
        "base_url": SIM_URL,
        "request_timeout_seconds": 2.0,
        "retry_backoff_seconds": 0.5,
        "max_requests_per_second": 10_000,
    }
    values.update(overrides)
    return DuixSettings(**values)


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    return Simulator(apps=2, seed=7, clock=clock, workload=False)


@pytest.fixture
async def client(sim: Simulator, clock: FakeClock) -> AsyncIterator[DuixClient]:
    transport = httpx.ASGITransport(app=create_app(sim))
    async with DuixClient(
        settings(), clock=clock, transport=transport, rng=random.Random(3)
    ) as duix:
        yield duix


def creds(sim: Simulator, index: int = 0) -> models.AppCredentials:
    app = sim.apps[index]
    return models.AppCredentials(app_id=app.app_id, app_key=SecretStr(app.app_key))


def requests_to(sim: Simulator, index: int, endpoint: str) -> int:
    return sim.stats.requests.get((sim.apps[index].app_id, endpoint), 0)


# --------------------------------------------------------------------------- reads


async def test_concurrency_reports_the_simulators_limit_and_live_count(
    sim: Simulator, client: DuixClient
) -> None:
    app = sim.apps[0]
    for _ in range(3):
        sim.add_session(app.app_id)
    numbers = await client.concurrency(creds(sim))
    assert numbers.total_concurrent_number == app.concurrency_limit
    assert numbers.user_concurrent_number == 3


@pytest.mark.parametrize(
    "shape",
    [
        "records/sessionId/createTime/local",
        "list/uuid/startTime/epoch_ms",
        "rows/session_id/gmtCreate/iso_utc",
        "sessions/id/createdAt/epoch_s_str",
        "items/sessionId/start_time/iso_offset",
        "data/uuid/beginTime/iso_naive",
    ],
)
async def test_sessions_match_the_simulator_in_every_list_shape(
    sim: Simulator, client: DuixClient, clock: FakeClock, shape: str
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, ListShape.parse(shape))
    made = [sim.add_session(app.app_id, age_seconds=age) for age in (5, 600, 3000)]
    listing = await client.sessions(creds(sim))
    assert {s.session_id for s in listing.sessions} == {m.session_id for m in made}
    by_id = {s.session_id: s for s in listing.sessions}
    for m in made:
        got = by_id[m.session_id].started_at
        assert got is not None
        assert abs((got - m.started_at).total_seconds()) <= 1
    assert all(s.actionable for s in listing.sessions)


async def test_sessions_without_ids_are_listed_but_not_actionable(
    sim: Simulator, client: DuixClient
) -> None:
    app = sim.apps[0]
    sim.add_session(app.app_id, with_id=False)
    sim.add_session(app.app_id, with_start=False)
    listing = await client.sessions(creds(sim))
    assert sorted(s.actionable for s in listing.sessions) == [False, True]
    assert sum(s.started_at is None for s in listing.sessions) == 1


async def test_conversation_and_avatar_round_trip(
    sim: Simulator, client: DuixClient, clock: FakeClock
) -> None:
    app = creds(sim)
    created = await client.create_avatar(
        app,
        documents.AvatarSpec(
            custom_type=2, avatar_name="Ada", cover_url="https://x/a.png", profile="greeter"
        ),
    )
    first = await client.query_avatar(app, created.avatar_id)
    assert (first.name, first.status) == ("Ada", "training")
    clock.advance(61)
    done = await client.query_avatar(app, created.avatar_id)
    assert done.status == "success"
    assert done.default_conversation_id is not None
    conv = await client.conversation(app, done.default_conversation_id)
    assert conv.id == done.default_conversation_id
    assert conv.detail_dto is not None


async def test_an_unknown_conversation_is_not_found(sim: Simulator, client: DuixClient) -> None:
    with pytest.raises(errors.ApiNotFound):
        await client.conversation(creds(sim), "1")


async def test_an_invalid_avatar_request_is_a_client_error_and_not_retried(
    sim: Simulator, client: DuixClient
) -> None:
    with pytest.raises(errors.ApiClientError) as info:
        await client.create_avatar(
            creds(sim), documents.AvatarSpec(custom_type=1, avatar_name="no video")
        )
    assert info.value.status == 400
    assert requests_to(sim, 0, "createAvatar") == 1


# --------------------------------------------------------------------------- writes


async def test_stop_session_really_ends_it_and_a_repeat_is_already_closed(
    sim: Simulator, client: DuixClient
) -> None:
    session = sim.add_session(sim.apps[0].app_id)
    first = await client.stop_session(creds(sim), session.session_id)
    assert first == models.StopResult(session.session_id, "stopped")
    assert sim.session(session.session_id).closed
    again = await client.stop_session(creds(sim), session.session_id)
    assert again.outcome == "already_closed"


async def test_close_all_drains_only_that_app(sim: Simulator, client: DuixClient) -> None:
    mine = [sim.add_session(sim.apps[0].app_id) for _ in range(3)]
    theirs = sim.add_session(sim.apps[1].app_id)
    result = await client.close_all(creds(sim))
    assert result.app_id == sim.apps[0].app_id
    assert all(sim.session(s.session_id).closed for s in mine)
    assert not sim.session(theirs.session_id).closed


@pytest.mark.parametrize("endpoint", ["distroyCallSessionsByAppId", "sessionStop"])
async def test_writes_are_never_retried(
    sim: Simulator, client: DuixClient, clock: FakeClock, endpoint: str
) -> None:
    session = sim.add_session(sim.apps[0].app_id)
    sim.faults.set(sim.apps[0].app_id, endpoint, status=503)
    call = (
        client.stop_session(creds(sim), session.session_id)
        if endpoint == "sessionStop"
        else client.close_all(creds(sim))
    )
    with pytest.raises(errors.ApiServerError):
        await call
    assert requests_to(sim, 0, endpoint) == 1
    assert clock.sleeps == []
    assert not sim.session(session.session_id).closed


# --------------------------------------------------------------------------- auth


async def test_a_token_is_minted_once_and_reused(sim: Simulator, client: DuixClient) -> None:
    for _ in range(3):
        await client.concurrency(creds(sim))
    assert client.tokens.minted == 1
    (claims,) = {tuple(sorted(c.items())) for c in sim.tokens_seen}
    assert dict(claims)["appId"] == sim.apps[0].app_id
    assert set(dict(claims)) == {"appId", "iat", "exp"}


async def test_the_token_is_reminted_before_it_expires(
    sim: Simulator, client: DuixClient, clock: FakeClock
) -> None:
    await client.concurrency(creds(sim))
    clock.advance(1800 * 0.8)
    await client.concurrency(creds(sim))
    assert client.tokens.minted == 2


async def test_a_rejected_token_is_reminted_once_then_auth_rejected_surfaces(
    sim: Simulator, client: DuixClient
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", reject_token=True)
    with pytest.raises(errors.ApiAuthRejected) as info:
        await client.concurrency(creds(sim))
    assert info.value.code == "1006"
    assert requests_to(sim, 0, "getconcurrentNumber") == 2
    assert client.tokens.minted == 2


async def test_one_rejection_then_success_recovers_with_a_fresh_token(
    sim: Simulator, client: DuixClient
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentList", reject_token=True, times=1)
    await client.sessions(creds(sim))
    assert requests_to(sim, 0, "getconcurrentList") == 2


async def test_a_wrong_app_key_is_rejected_with_1006(sim: Simulator, client: DuixClient) -> None:
    wrong = models.AppCredentials(
        app_id=sim.apps[0].app_id, app_key=SecretStr("not-the-key-" + "x" * 24)
    )
    with pytest.raises(errors.ApiAuthRejected) as info:
        await client.concurrency(wrong)
    assert info.value.code == "1006"


async def test_an_unknown_app_is_rejected_with_40001(sim: Simulator, client: DuixClient) -> None:
    stranger = models.AppCredentials(app_id="1000000000000000000", app_key=SecretStr("k" * 32))
    with pytest.raises(errors.ApiAuthRejected) as info:
        await client.sessions(stranger)
    assert info.value.code == "40001"


async def raw_get(sim: Simulator, path: str, token: str | None) -> dict[str, Any]:
    headers = {"token": token} if token is not None else {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(sim)), base_url=SIM_URL
    ) as http:
        response = await http.get(path, headers=headers)
    doc: dict[str, Any] = response.json()
    return doc


async def test_the_simulator_rejects_missing_expired_and_foreign_tokens(
    sim: Simulator, clock: FakeClock
) -> None:
    a, b = sim.apps
    path_a = f"/duix-openapi-v2/sdk/v2/getconcurrentNumber?appId={a.app_id}"
    assert (await raw_get(sim, path_a, None))["code"] == "1005"
    assert (await raw_get(sim, path_a, ""))["code"] == "1005"
    expired = mint_token(
        a.app_id, SecretStr(a.app_key), now=clock.now() - timedelta(hours=1), ttl_seconds=60
    )
    assert (await raw_get(sim, path_a, expired.get_secret_value()))["code"] == "1006"
    token_b = mint_token(b.app_id, SecretStr(b.app_key), now=clock.now(), ttl_seconds=60)
    assert (await raw_get(sim, path_a, token_b.get_secret_value()))["code"] == "40001"
    good = mint_token(a.app_id, SecretStr(a.app_key), now=clock.now(), ttl_seconds=60)
    assert (await raw_get(sim, path_a, good.get_secret_value()))["success"] is True


# --------------------------------------------------------------------------- retries


async def test_reads_retry_5xx_with_exponential_backoff_and_jitter(
    sim: Simulator, client: DuixClient, clock: FakeClock
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentList", status=503, times=2)
    await client.sessions(creds(sim))
    assert requests_to(sim, 0, "getconcurrentList") == 3
    first, second = clock.sleeps
    assert 0.25 <= first <= 0.5
    assert 0.5 <= second <= 1.0


async def test_reads_give_up_after_the_configured_retries(
    sim: Simulator, client: DuixClient
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", status=500)
    with pytest.raises(errors.ApiServerError) as info:
        await client.concurrency(creds(sim))
    assert info.value.status == 500
    assert requests_to(sim, 0, "getconcurrentNumber") == 3


async def test_a_short_retry_after_is_waited_for(
    sim: Simulator, client: DuixClient, clock: FakeClock
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", retry_after_seconds=3, times=1)
    await client.concurrency(creds(sim))
    assert clock.sleeps == [3.0]


async def test_a_long_retry_after_surfaces_as_rate_limited_for_the_scheduler(
    sim: Simulator, client: DuixClient, clock: FakeClock
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", retry_after_seconds=60)
    with pytest.raises(errors.ApiRateLimited) as info:
        await client.concurrency(creds(sim))
    assert info.value.retry_after_seconds == 60
    assert info.value.status == 429
    assert requests_to(sim, 0, "getconcurrentNumber") == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"code": "50007"}, errors.ApiQuotaExceeded),
        ({"code": "1009"}, errors.ApiQuotaExceeded),
        ({"code": "50003"}, errors.ApiClientError),
        ({"malformed": True}, errors.ApiMalformed),
        ({"status": 404}, errors.ApiNotFound),
    ],
)
async def test_errors_that_retrying_cannot_fix_are_raised_at_once(
    sim: Simulator, client: DuixClient, fault: dict[str, Any], expected: type[Exception]
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", **fault)
    with pytest.raises(expected):
        await client.concurrency(creds(sim))
    assert requests_to(sim, 0, "getconcurrentNumber") == 1


async def test_a_hanging_platform_times_out_as_api_timeout() -> None:
    sim = Simulator(apps=1, seed=1, clock=SystemClock(), workload=False)
    sim.faults.set("*", "getconcurrentNumber", hang=True)
    transport = httpx.ASGITransport(app=create_app(sim))
    config = settings(request_timeout_seconds=0.2, read_retries=0)
    async with DuixClient(config, clock=SystemClock(), transport=transport) as duix:
        with anyio.fail_after(5):
            with pytest.raises(errors.ApiTimeout) as info:
                await duix.concurrency(creds(sim))
    assert info.value.reason == "timeout"


# --------------------------------------------------------------------------- caps, hooks


async def test_the_in_flight_cap_holds_across_apps() -> None:
    sim = Simulator(apps=2, seed=1, clock=SystemClock(), workload=False)
    sim.faults.set("*", "*", latency_seconds=0.05)
    transport = httpx.ASGITransport(app=create_app(sim))
    async with DuixClient(settings(max_in_flight=3), clock=SystemClock(), transport=transport) as d:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(d.concurrency, creds(sim, i % 2))
    assert sim.stats.max_in_flight == 3


async def test_the_request_rate_is_limited_globally(sim: Simulator, clock: FakeClock) -> None:
    transport = httpx.ASGITransport(app=create_app(sim))
    async with DuixClient(
        settings(max_requests_per_second=4), clock=clock, transport=transport
    ) as duix:
        for i in range(5):
            await duix.concurrency(creds(sim, i % 2))
    assert clock.sleeps == pytest.approx([0.25] * 4)


async def test_the_observer_sees_every_attempt_with_its_outcome(
    sim: Simulator, clock: FakeClock
) -> None:
    seen: list[tuple[str, str]] = []
    sim.faults.set(sim.apps[0].app_id, "getconcurrentList", status=502, times=1)
    async with DuixClient(
        settings(),
        clock=clock,
        transport=httpx.ASGITransport(app=create_app(sim)),
        observer=lambda endpoint, outcome, _duration: seen.append((endpoint, outcome)),
    ) as duix:
        await duix.sessions(creds(sim))
    assert seen == [("getconcurrentList", "server"), ("getconcurrentList", "success")]


async def test_no_error_ever_contains_the_app_key_or_the_token(
    sim: Simulator, client: DuixClient, clock: FakeClock
) -> None:
    app = creds(sim)
    key = app.app_key.get_secret_value()
    token = client.tokens.token(app, now=clock.now()).get_secret_value()
    faults: list[dict[str, Any]] = [
        {"reject_token": True},
        {"status": 500},
        {"malformed": True},
        {"code": "40002"},
        {"retry_after_seconds": 99},
    ]
    for fault in faults:
        sim.faults.clear()
        sim.faults.set("*", "*", **fault)
        with pytest.raises(errors.ApiError) as info:
            await client.sessions(app)
        exc = info.value
        for text in (str(exc), repr(exc), exc.body_excerpt or "", repr(exc.__dict__)):
            assert key not in text
            assert token not in text
    assert key not in repr(client)


async def test_an_answer_that_cannot_be_read_names_the_method_that_was_sent(
    clock: FakeClock,
) -> None:
    """A POST whose envelope succeeded but whose data is not the documented shape is reported
    as the POST it was, not as a GET."""

    def platform(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": "0", "success": True, "data": {"odd": 1}})

    config = DuixSettings(base_url="http://duix.test", read_retries=0)
    async with DuixClient(config, clock=clock, transport=httpx.MockTransport(platform)) as client:
        credentials = models.AppCredentials(app_id="1", app_key=SecretStr("k" * 32))
        spec = documents.AvatarSpec(custom_type=2, avatar_name="a", cover_url="http://x/p.png")
        with pytest.raises(errors.ApiMalformed) as created:
            await client.create_avatar(credentials, spec)
        with pytest.raises(errors.ApiMalformed) as queried:
            await client.concurrency(credentials)
    assert (created.value.method, str(created.value).split(" ")[0]) == ("POST", "POST")
    assert queried.value.method == "GET"
