"""watch.poll: one poll of one APP, and the first-seen times it ages sessions by."""

from __future__ import annotations

import pytest

from duixwatch.sim import Simulator
from duixwatch.watch.poll import MemoryFirstSeen, poll_once
from tests.fakes import FakeClock
from tests.watch.support import app_config, client_for


async def test_a_poll_returns_the_simulators_truth(sim: Simulator, clock: FakeClock) -> None:
    app = sim.apps[0]
    made = [sim.add_session(app.app_id, age_seconds=a) for a in (10, 100)]
    async with client_for(sim, clock) as client:
        snap = await poll_once(app_config(sim), client, clock=clock, first_seen=MemoryFirstSeen())
    assert snap.ok
    assert snap.error is None
    assert snap.fetched_at is not None
    assert (clock.now() - snap.fetched_at).total_seconds() < 0.01
    assert snap.concurrency is not None
    assert snap.concurrency.total_concurrent_number == app.concurrency_limit
    assert snap.concurrency.user_concurrent_number == 2
    assert snap.sessions is not None
    assert {s.session_id for s in snap.sessions.sessions} == {m.session_id for m in made}
    assert snap.polls == 1
    assert snap.is_fresh(clock.now())


async def test_a_poll_without_session_listing_only_asks_for_numbers(
    sim: Simulator, clock: FakeClock
) -> None:
    async with client_for(sim, clock) as client:
        snap = await poll_once(
            app_config(sim, list_sessions=False), client, clock=clock, first_seen={}
        )
    assert snap.ok
    assert snap.sessions is None
    assert sim.stats.requests.get((sim.apps[0].app_id, "getconcurrentList"), 0) == 0


@pytest.mark.parametrize("failing", ["getconcurrentNumber", "getconcurrentList"])
async def test_half_a_poll_is_a_failed_poll_that_keeps_the_last_good_data(
    sim: Simulator, clock: FakeClock, failing: str
) -> None:
    async with client_for(sim, clock) as client:
        good = await poll_once(app_config(sim), client, clock=clock)
        clock.advance(15)
        sim.faults.set(sim.apps[0].app_id, failing, status=503)
        bad = await poll_once(app_config(sim), client, clock=clock, previous=good)
    assert not bad.ok
    assert bad.error is not None
    assert bad.error.reason == "server"
    assert bad.fetched_at == good.fetched_at
    assert bad.last_attempt_at is not None
    assert (clock.now() - bad.last_attempt_at).total_seconds() < 0.01
    assert bad.consecutive_failures == 1
    assert not bad.is_fresh(clock.now())


async def test_an_auth_failure_is_reported_over_other_failures(
    sim: Simulator, clock: FakeClock
) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", status=500)
    sim.faults.set(sim.apps[0].app_id, "getconcurrentList", reject_token=True)
    async with client_for(sim, clock) as client:
        snap = await poll_once(app_config(sim), client, clock=clock)
    assert snap.error is not None
    assert snap.error.reason == "auth"


async def test_retry_after_reaches_the_snapshot(sim: Simulator, clock: FakeClock) -> None:
    sim.faults.set(sim.apps[0].app_id, "getconcurrentNumber", retry_after_seconds=120)
    async with client_for(sim, clock) as client:
        snap = await poll_once(app_config(sim), client, clock=clock)
    assert snap.error is not None
    assert snap.error.retry_after_seconds == 120


async def test_sessions_without_a_start_time_age_from_first_sight(
    sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    timeless = sim.add_session(app.app_id, with_start=False)
    first_seen = MemoryFirstSeen()
    async with client_for(sim, clock) as client:
        first = await poll_once(app_config(sim), client, clock=clock, first_seen=first_seen)
        clock.advance(100)
        second = await poll_once(app_config(sim), client, clock=clock, first_seen=first_seen)
        sim.end_session(timeless.session_id)
        await poll_once(app_config(sim), client, clock=clock, first_seen=first_seen)
    assert first.sessions is not None
    assert second.sessions is not None
    (session,) = second.sessions.sessions
    assert session.started_at is None
    assert session.age_seconds(clock.now()) == pytest.approx(100, abs=0.01)
    assert first_seen.first_seen(app.app_id, [], clock.now()) == {}  # forgotten when it left
