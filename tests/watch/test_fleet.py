"""watch.fleet: the per-APP loop's schedule and backoff, and the fleet."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import anyio
import pytest
import structlog

from duixwatch import config as settings
from duixwatch.core import models
from duixwatch.duix import DuixClient
from duixwatch.sim import Simulator
from duixwatch.watch.fleet import AppLoop, Fleet
from duixwatch.watch.snapshots import SnapshotStore
from tests.fakes import FakeClock, VirtualClock
from tests.watch.support import app_config, client_for

# --------------------------------------------------------------------------- the schedule


def loop_for(
    sim: Simulator, client: DuixClient, clock: Any, *, jitter: float = 0.0, **app: Any
) -> AppLoop:
    return AppLoop(
        app_config(sim, **app),
        client,
        SnapshotStore(),
        clock=clock,
        rng=random.Random(7),
        daemon=settings.DaemonSettings(jitter_fraction=jitter, backoff_max_seconds=300),
    )


def failed(n: int, retry_after: float | None = None) -> models.AppSnapshot:
    return models.AppSnapshot(
        app="a",
        app_id="1",
        poll_interval_seconds=15,
        error=models.PollError(
            "server", "x", at=FakeClock().now(), retry_after_seconds=retry_after
        ),
        consecutive_failures=n,
    )


async def test_backoff_doubles_per_failure_up_to_the_cap(sim: Simulator, clock: FakeClock) -> None:
    async with client_for(sim, clock) as client:
        loop = loop_for(sim, client, clock)
    delays = [loop.delay_after(failed(n)) for n in range(1, 8)]
    assert delays == [15, 30, 60, 120, 240, 300, 300]
    ok = models.AppSnapshot(app="a", app_id="1", poll_interval_seconds=15)
    assert loop.delay_after(ok) == 15


async def test_retry_after_is_never_undercut(sim: Simulator, clock: FakeClock) -> None:
    async with client_for(sim, clock) as client:
        loop = loop_for(sim, client, clock)
    assert loop.delay_after(failed(1, retry_after=100)) == 100
    assert loop.delay_after(failed(4, retry_after=100)) == 120


async def test_jitter_stays_within_its_fraction(sim: Simulator, clock: FakeClock) -> None:
    async with client_for(sim, clock) as client:
        loop = loop_for(sim, client, clock, jitter=0.1)
    ok = models.AppSnapshot(app="a", app_id="1", poll_interval_seconds=15)
    delays = [loop.delay_after(ok) for _ in range(500)]
    assert all(13.5 <= d <= 15 for d in delays)  # never later than the interval
    assert max(delays) - min(delays) > 1.2  # it does spread
    backoffs = [loop.delay_after(failed(2)) for _ in range(500)]
    assert all(27 <= d <= 33 for d in backoffs)  # a backoff spreads both ways
    assert max(backoffs) - min(backoffs) > 4


@asynccontextmanager
async def running_fleet(
    sim: Simulator, clock: VirtualClock, apps: list[settings.AppConfig], **client: Any
) -> AsyncIterator[tuple[Fleet, SnapshotStore, list[tuple[str, float]]]]:
    """A fleet of loops on the virtual clock; yields it, its store and (app, time) of polls."""
    store = SnapshotStore()
    polls: list[tuple[str, float]] = []
    original_put = store.put

    def recording_put(snapshot: models.AppSnapshot) -> None:
        polls.append((snapshot.app, clock.monotonic()))
        original_put(snapshot)

    store.put = recording_put  # type: ignore[method-assign]
    fleet = Fleet(store, clock=clock, rng=random.Random(3))
    async with client_for(sim, clock, **client) as duix, anyio.create_task_group() as tg:
        await tg.start(fleet.run)
        await fleet.apply(apps, duix, settings.DaemonSettings(jitter_fraction=0.1))
        yield fleet, store, polls
        tg.cancel_scope.cancel()


def times_of(polls: list[tuple[str, float]], app: str) -> list[float]:
    return [t for name, t in polls if name == app]


async def test_loops_start_spread_over_the_first_interval_then_keep_their_interval(
    vclock: VirtualClock,
) -> None:
    sim = Simulator(apps=20, seed=2, clock=vclock, workload=False)
    apps = [app_config(sim, i, poll_interval_seconds=10) for i in range(20)]
    with anyio.fail_after(10):
        async with running_fleet(sim, vclock, apps) as (_, store, polls):
            await vclock.advance(100)
    firsts = sorted(times_of(polls, a.name)[0] - 1000.0 for a in apps)
    assert all(0 <= t <= 10 for t in firsts)
    assert firsts[-1] - firsts[0] > 5  # not all at once
    for app in apps:
        times = times_of(polls, app.name)
        gaps = [b - a for a, b in pairwise(times)]
        assert len(times) >= 9
        assert all(9.0 <= g <= 11.0 for g in gaps), gaps
    assert store.pending() == []


async def test_a_failing_app_backs_off_and_recovers_while_others_keep_their_pace(
    vclock: VirtualClock,
) -> None:
    sim = Simulator(apps=2, seed=2, clock=vclock, workload=False)
    bad, good = (app_config(sim, i, poll_interval_seconds=10) for i in range(2))
    sim.faults.set(bad.app_id, "*", status=503)
    with anyio.fail_after(10):
        async with running_fleet(sim, vclock, [bad, good]) as (_, store, polls):
            await vclock.advance(160)
            failing = store.get(bad.name)
            assert failing is not None
            assert failing.consecutive_failures >= 3
            sim.faults.clear()
            await vclock.advance(200)
            recovered = store.get(bad.name)
    bad_times = times_of(polls, bad.name)
    gaps = [b - a for a, b in pairwise(bad_times)]
    assert gaps[:3] == pytest.approx([10, 20, 40], rel=0.11)
    assert recovered is not None
    assert recovered.ok
    good_gaps = [b - a for a, b in pairwise(times_of(polls, good.name))]
    assert all(9.0 <= g <= 11.0 for g in good_gaps)


async def test_the_in_flight_cap_holds_for_the_whole_fleet(vclock: VirtualClock) -> None:
    sim = Simulator(apps=30, seed=4, clock=vclock, workload=False)
    sim.faults.set("*", "*", latency_seconds=2.0)
    apps = [app_config(sim, i, poll_interval_seconds=5) for i in range(30)]
    with anyio.fail_after(10):
        async with running_fleet(sim, vclock, apps, max_in_flight=4):
            await vclock.advance(30, step=0.5)
    assert sim.stats.max_in_flight == 4


async def test_a_hanging_app_does_not_delay_the_others(vclock: VirtualClock) -> None:
    sim = Simulator(apps=3, seed=4, clock=vclock, workload=False)
    apps = [app_config(sim, i, poll_interval_seconds=10) for i in range(3)]
    sim.faults.set(apps[0].app_id, "*", hang=True)
    with anyio.fail_after(10):
        async with running_fleet(sim, vclock, apps) as (_, _store, polls):
            await vclock.advance(120)
    assert times_of(polls, apps[0].name) == []
    for app in apps[1:]:
        assert len(times_of(polls, app.name)) >= 11


async def test_apply_stops_removed_apps_restarts_changed_ones_and_keeps_the_rest(
    vclock: VirtualClock,
) -> None:
    sim = Simulator(apps=3, seed=4, clock=vclock, workload=False)
    a, b, c = (app_config(sim, i, poll_interval_seconds=10) for i in range(3))
    with anyio.fail_after(10):
        async with running_fleet(sim, vclock, [a, b]) as (fleet, store, polls):
            await vclock.advance(30)
            kept = fleet.loops[0]
            faster_b = app_config(sim, 1, poll_interval_seconds=5)
            client = fleet.loops[0]._client  # the client the fleet runs with
            await fleet.apply(
                [a, faster_b, c], client, settings.DaemonSettings(jitter_fraction=0.1)
            )
            assert fleet.loops[0] is kept
            assert [loop.app.name for loop in fleet.loops] == [a.name, b.name, c.name]
            assert fleet.loops[1].app.poll_interval_seconds == 5
            await fleet.apply([c], client, settings.DaemonSettings(jitter_fraction=0.1))
            polls.clear()
            await vclock.advance(30)
            assert {name for name, _ in polls} == {c.name}
            assert [s.app for s in store.all()] == [c.name]


async def test_overdue_names_a_stuck_loop_only(vclock: VirtualClock) -> None:
    """A loop stuck in a hanging call is reported (for /healthz); healthy ones are not."""
    sim = Simulator(apps=2, seed=4, clock=vclock, workload=False)
    apps = [app_config(sim, i, poll_interval_seconds=10) for i in range(2)]
    sim.faults.set(apps[0].app_id, "*", hang=True)
    with anyio.fail_after(10):
        async with running_fleet(sim, vclock, apps) as (fleet, _store, _polls):
            await vclock.advance(15)
            assert fleet.overdue(grace_seconds=30) == []
            await vclock.advance(60)
            assert fleet.overdue(grace_seconds=30) == [apps[0].name]


async def test_logs_say_one_thing_per_failure_and_one_on_recovery_never_per_success(
    vclock: VirtualClock,
) -> None:
    sim = Simulator(apps=1, seed=2, clock=vclock, workload=False)
    app = app_config(sim, 0, poll_interval_seconds=10)
    sim.add_session(app.app_id)
    with (
        structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs,
        anyio.fail_after(10),
    ):
        async with running_fleet(sim, vclock, [app]):
            await vclock.advance(50)  # about five good polls
            sim.faults.set(app.app_id, "*", status=503, times=4)  # two failed polls
            await vclock.advance(100)
    events = [(e["event"], e.get("app")) for e in logs]
    assert events == [
        ("session_list_shape", app.name),
        ("poll_failed", app.name),
        ("poll_failed", app.name),
        ("poll_recovered", app.name),
    ]
    failed = [e for e in logs if e["event"] == "poll_failed"]
    assert [e["consecutive_failures"] for e in failed] == [1, 2]
    assert all(e["reason"] == "server" for e in failed)
    assert all(app.app_key.get_secret_value() not in repr(e) for e in logs)


async def test_a_large_fleet_runs_on_a_bounded_pool_of_tasks(vclock: VirtualClock) -> None:
    """500 APPs: every one is polled each interval by a few workers, not a task per APP."""
    sim = Simulator(apps=500, seed=5, clock=vclock, workload=False)
    apps = [app_config(sim, i, poll_interval_seconds=10) for i in range(500)]
    with anyio.fail_after(30):
        async with running_fleet(sim, vclock, apps, max_in_flight=3) as (fleet, store, polls):
            await vclock.advance(10)
            tasks = len(asyncio.all_tasks())
            await vclock.advance(30)
            assert fleet.overdue(grace_seconds=1) == []
    assert tasks < 20  # 2 x max_in_flight workers, the scheduler, the test's own
    assert store.pending() == []
    for app in apps[::50]:
        gaps = [b - a for a, b in pairwise(times_of(polls, app.name))]
        assert len(gaps) >= 3
        assert all(9.0 <= g <= 10.0 for g in gaps), gaps


class BrokenFirstSeen:
    """A first-seen store with a bug: the poll around it crashes."""

    def first_seen(self, app_id: str, session_ids: Any, now: Any) -> Any:
        raise RuntimeError("a bug")


async def test_a_crashed_poll_is_an_internal_error_counted_and_the_loop_goes_on(
    sim: Simulator, clock: FakeClock
) -> None:
    sim.add_session(sim.apps[0].app_id, age_seconds=10)
    reported: list[tuple[str, str]] = []
    store = SnapshotStore()
    app = app_config(sim, poll_interval_seconds=20)
    store.expect([app.name])
    async with client_for(sim, clock) as client:
        loop = AppLoop(
            app,
            client,
            store,
            clock=clock,
            rng=random.Random(7),
            daemon=settings.DaemonSettings(jitter_fraction=0, backoff_max_seconds=300),
            on_poll_error=lambda app, reason: reported.append((app, reason)),
            first_seen=BrokenFirstSeen(),
        )
        with structlog.testing.capture_logs() as logs:
            started = clock.monotonic()
            due = await loop.step()
            await loop.step()
    snapshot = store.get(app.name)
    assert snapshot is not None
    assert snapshot.error is not None
    assert (snapshot.error.reason, snapshot.error.message) == ("internal", "RuntimeError")
    assert (snapshot.consecutive_failures, snapshot.poll_interval_seconds) == (2, 20)
    assert reported == [(sim.apps[0].name, "internal")] * 2
    assert [e["event"] for e in logs].count("poll_crashed") == 2
    assert due - started == 20  # backs off like any failed poll (first failure: the interval)
