"""watch.state: the session history — written behind, read while the daemon runs, pruned."""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import pytest

from duixwatch.core import models
from duixwatch.policy.cycle import PolicyCycle
from duixwatch.policy.schema import PolicyConfig
from duixwatch.sim import Simulator
from duixwatch.watch.lifecycle import Lifecycles
from duixwatch.watch.poll import poll_once
from duixwatch.watch.state import DB_FILENAME, HistoryRow, StateStore, read_history
from tests.fakes import FakeClock
from tests.watch.support import app_config, client_for

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
#: The poll interval of the prune test, and the bound on each operation of a poll there. The
#: prune's batches of 5000 rows hold the database lock for a few tens of milliseconds each (an
#: operation waited 70 ms at worst here); half an interval leaves room for a loaded 2-core CI
#: machine.
POLL_INTERVAL = 1.0
POLL_STEP_BOUND = 0.5

_T = TypeVar("_T")


def row(i: int, *, ended_days_ago: float = 0.0, app: str = "desk") -> HistoryRow:
    ended = T0 - timedelta(days=ended_days_ago) + timedelta(seconds=i % 10_000)
    return HistoryRow(
        app=app,
        session_id=f"{1_000_000_000_000_000_000 + i}",
        started=ended - timedelta(seconds=600 + i % 3000),
        ended=ended,
        closed_by="policy" if i % 7 == 0 else "platform",
        policy="max-age" if i % 7 == 0 else None,
        start_known=i % 2 == 0,
    )


def test_rows_round_trip_and_read_while_open(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record_ended([row(1), row(2, app="other"), row(3, ended_days_ago=10)])
    store.flush()
    assert store.pending_writes == 0
    got = read_history(tmp_path, since=T0 - timedelta(days=1))
    assert [r.session_id for r in got] == [row(1).session_id, row(2).session_id]
    assert got[0] == row(1)
    assert read_history(tmp_path, since=T0 - timedelta(days=30), app="other") == [
        row(2, app="other")
    ]
    store.close()
    assert read_history(tmp_path / "nowhere", since=T0) == []


def test_retention_keeps_the_file_bounded_under_100000_sessions(tmp_path: Path) -> None:
    """100,000 sessions churned through, pruned to the last 'day' as the daemon would: the
    file stays near the size of what is kept."""
    store = StateStore(tmp_path)
    sizes = []
    for day in range(10):
        store.record_ended(row(day * 10_000 + i, ended_days_ago=10 - day) for i in range(10_000))
        store.flush()
        store.prune_history(T0 - timedelta(days=10 - day))  # keep one day's worth
        sizes.append((tmp_path / DB_FILENAME).stat().st_size)
    assert store.history_rows() == 10_000
    # SQLite reuses freed pages: after the first prunes the file stops growing
    assert sizes[-1] <= sizes[2] * 1.2, sizes
    assert sizes[-1] < 8 * 1024 * 1024
    store.close()


async def test_pruning_runs_in_a_worker_thread_without_blocking_the_loop(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.record_ended(row(i, ended_days_ago=5) for i in range(100_000))
    store.flush()
    ticks: list[float] = []

    async def tick() -> None:
        for _ in range(10_000):  # bounded
            ticks.append(time.monotonic())
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        removed = await anyio.to_thread.run_sync(store.prune_history, T0)
        tg.cancel_scope.cancel()
    assert removed == 100_000
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.5, max(gaps)  # the event loop went on ticking meanwhile
    store.close()


@pytest.mark.exclusive  # timings: run alone
async def test_a_100000_row_prune_never_holds_up_a_poll_on_the_same_store(tmp_path: Path) -> None:
    """Pruning never blocks a poll: while ``prune_history`` deletes 100,000 rows in a worker
    thread (as the daemon runs it), the daemon's poll path goes on against the SAME store:
    ``poll_once`` with the store as its first-seen record, the lifecycle handing ended sessions
    to ``record_ended``, a ``max_sessions`` policy cycle reading and writing ``over_since`` on
    the event loop's thread under the lock the prune's batches take, and the write-behind
    ``flush`` in a worker thread of its own. Each of those finishes well within a poll
    interval, poll after poll, for as long as the prune runs."""
    store = StateStore(tmp_path)
    store.record_ended(row(i, ended_days_ago=5) for i in range(100_000))
    store.flush()
    clock = FakeClock(start=T0)  # the sessions' times; the latencies are measured for real
    sim = Simulator(apps=1, seed=8, clock=clock, workload=False)
    app = app_config(sim, poll_interval_seconds=POLL_INTERVAL)
    for _ in range(5):
        sim.add_session(app.app_id, age_seconds=30)
    lifecycles = Lifecycles(history=store)
    cycle = PolicyCycle(clocks=store, clock=clock)

    def quota(max_sessions: int) -> PolicyConfig:
        return PolicyConfig.model_validate(
            {
                "name": "quota",
                "action": "stop_sessions",
                "match": {"max_sessions": max_sessions, "for_seconds": 60},
            }
        )

    over, under = [quota(2)], [quota(1000)]  # alternately over and under: a write each poll
    times: dict[str, list[float]] = {"poll": [], "lifecycle": [], "policy": [], "flush": []}
    polls = 0
    pruning = True
    removed = 0

    async def prune() -> None:
        nonlocal pruning, removed
        try:
            removed = await anyio.to_thread.run_sync(store.prune_history, T0 - timedelta(days=1))
        finally:
            pruning = False

    async def timed(name: str, step: Awaitable[_T]) -> _T:
        started = time.perf_counter()
        result = await step
        times[name].append(time.perf_counter() - started)
        return result

    snapshot: models.AppSnapshot | None = None
    async with client_for(sim, clock) as client, anyio.create_task_group() as tg:
        tg.start_soon(prune)
        while pruning and polls < 10_000:  # bounded; ends with the prune
            polls += 1
            clock.advance(POLL_INTERVAL)
            # a session ends and another starts between every two polls
            sim.end_session(sim.live_sessions(app.app_id)[0].session_id)
            sim.add_session(app.app_id)
            snapshot = await timed(
                "poll", poll_once(app, client, clock=clock, previous=snapshot, first_seen=store)
            )
            assert snapshot.error is None
            started = time.perf_counter()
            lifecycles.observe(snapshot)  # record_ended: the ended session, queued
            times["lifecycle"].append(time.perf_counter() - started)
            policies = over if polls % 2 else under
            await timed(
                "policy", cycle.run(app, snapshot, policies=policies, enforcement_enabled=False)
            )
            await timed("flush", anyio.to_thread.run_sync(store.flush))
            await anyio.sleep(0.005)
    assert removed == 100_000
    # the polls did run while the prune did (each waits for a batch or two: about 6 of them)
    assert polls >= 3, polls
    life = lifecycles.get(app.name)
    assert life is not None
    assert life.ended == polls - 1  # and they wrote: the ends, first-seen, over_since
    assert store.history_rows() == life.ended
    assert (store.over_since(app.app_id, "quota") is not None) == (polls % 2 == 1)
    worst = {name: max(spent) for name, spent in times.items()}
    assert max(worst.values()) < POLL_STEP_BOUND, worst
    store.close()
