"""The workload's durations: ``min_duration_seconds`` puts a floor under them (the e2e history
test needs every session to outlive a poll interval), and without it the stream is unchanged."""

from __future__ import annotations

import hashlib
import json
import statistics

import pytest

from duixwatch.sim import Simulator
from tests.fakes import FakeClock

#: The record of the workload below as the simulator drew it before ``min_duration_seconds``
#: existed (605 sessions): a floor of 0 must not change a single id, start or end.
STREAM_BEFORE_THE_FLOOR = (605, "b6baa81a3efef3e8826477a0e81725b3fc5c352d5b92b266d07e2c0121627cda")


def fingerprint(sim: Simulator, clock: FakeClock) -> tuple[int, str]:
    for _ in range(30):
        clock.advance(60)
        for app in sim.apps:
            sim.live_sessions(app.app_id)
    rows = sorted(
        (
            s.session_id,
            s.app_id,
            s.user_id,
            s.started_at.isoformat(),
            None if s.ends_at is None else s.ends_at.isoformat(),
            None if s.closed_at is None else s.closed_at.isoformat(),
        )
        for s in sim.sessions()
    )
    return len(rows), hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@pytest.mark.parametrize("floor", [None, 0.0])
def test_no_floor_draws_exactly_the_stream_it_drew_before(floor: float | None) -> None:
    clock = FakeClock()
    extra = {} if floor is None else {"min_duration_seconds": floor}
    sim = Simulator(
        apps=2, seed=5, clock=clock, arrivals_per_minute=30.0, mean_duration_seconds=120.0, **extra
    )
    assert fingerprint(sim, clock) == STREAM_BEFORE_THE_FLOOR


def test_every_hang_up_comes_at_least_the_floor_after_the_start_and_the_mean_holds() -> None:
    clock = FakeClock()
    start = clock.now()
    sim = Simulator(
        apps=1,
        seed=13,
        clock=clock,
        arrivals_per_minute=60.0,
        mean_duration_seconds=6.0,
        min_duration_seconds=2.5,
        abandon_probability=0.0,
    )
    app = sim.apps[0]
    for _ in range(600):
        clock.advance(1.0)
        sim.live_sessions(app.app_id)
    record = sim.sessions(app.app_id)
    assert record == sim.sessions()  # one app: the same record
    arrivals = [s for s in record if s.started_at >= start]
    initial = [s for s in record if s.started_at < start]
    assert len(arrivals) > 400
    assert all(s.ends_at is not None for s in arrivals)  # none abandoned
    durations = [
        (s.closed_at - s.started_at).total_seconds() for s in arrivals if s.closed_at is not None
    ]
    assert len(durations) > len(arrivals) - 20  # the few still live at the end
    assert min(durations) >= 2.5
    assert statistics.fmean(durations) == pytest.approx(6.0, abs=0.6)
    # the sessions live at the start hang up no sooner than the floor after it (the stale
    # ones, abandoned long before, never do)
    assert all(
        (s.closed_at - start).total_seconds() >= 2.5 for s in initial if s.closed_at is not None
    )
    assert any(s.closed_at is None for s in initial)


@pytest.mark.parametrize("floor", [-1.0, 6.0, 7.0])
def test_a_floor_outside_zero_to_the_mean_is_refused(floor: float) -> None:
    with pytest.raises(ValueError, match="min_duration_seconds"):
        Simulator(clock=FakeClock(), mean_duration_seconds=6.0, min_duration_seconds=floor)
