"""watch.state: the session history — written behind, read while the daemon runs, pruned."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.to_thread

from duixwatch.watch.state import DB_FILENAME, HistoryRow, StateStore, read_history

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


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
