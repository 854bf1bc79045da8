"""What sessions cost, checked against the truth: a seeded workload of sessions that start and
end at known times on the simulator (over loopback), the daemon polling it every second, then
the counters, the session-seconds, the history and ``report``'s percentiles and backtest
compared with the simulator's own record of those sessions."""

from __future__ import annotations

import io
import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from duixwatch import config as settings
from duixwatch.cli import main
from duixwatch.core.clock import SystemClock
from duixwatch.daemon import Daemon
from duixwatch.export.exposition import Registry
from duixwatch.sim import Simulator
from duixwatch.watch.state import HistoryRow, StateStore, read_history
from tests.loopback import loopback_sim

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

INTERVAL = 1.0
SESSIONS = 16
#: The backtest's threshold: no true duration is within one poll interval of it, so the
#: sessions it would close are exactly those longer than it, whatever the polls' phase.
THRESHOLD = 8.0


def workload(seed: int) -> list[tuple[float, float]]:
    """(start offset, duration) per session: starts over 6 s, durations 3-6.5 s or 9.5-14 s."""
    rng = random.Random(seed)
    plan = []
    for _ in range(SESSIONS):
        duration = rng.uniform(3.0, 6.5) if rng.random() < 0.5 else rng.uniform(9.5, 14.0)
        plan.append((rng.uniform(0.0, 6.0), duration))
    return sorted(plan)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


async def test_counts_minutes_percentiles_and_backtest_match_the_simulators_record(
    tmp_path: Path,
) -> None:
    sim = Simulator(apps=1, seed=13, clock=SystemClock(), workload=False)
    app = sim.apps[0]
    async with loopback_sim(sim=sim) as (base_url, _):
        path = tmp_path / "duixwatch.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "duix": {"base_url": base_url, "read_retries": 0},
                    "apps": [
                        {
                            "app_id": app.app_id,
                            "name": app.name,
                            "app_key": app.app_key,
                            "poll_interval_seconds": INTERVAL,
                        }
                    ],
                    "server": {"listen": "127.0.0.1:0"},
                    "state": {"dir": str(tmp_path / "state")},
                    "policies": [
                        {
                            "name": "backtested",
                            "match": {"session_age_over_seconds": THRESHOLD},
                            "action": "stop_sessions",
                        }
                    ],
                }
            )
        )
        config = settings.load_config(path, environ={})
        daemon = Daemon(
            config, path, clock=SystemClock(), registry=Registry(), handle_signals=False
        )
        ids: list[str] = []
        async with anyio.create_task_group() as tg:
            port = await tg.start(daemon.run)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                with anyio.fail_after(15):
                    while (await http.get("/readyz")).status_code != 200:
                        await anyio.sleep(0.05)

                async def session(start: float, duration: float) -> None:
                    await anyio.sleep(start)
                    created = sim.add_session(app.app_id, age_seconds=0)
                    ids.append(created.session_id)
                    await anyio.sleep(duration)
                    sim.end_session(created.session_id)

                async with anyio.create_task_group() as sessions:
                    for start, duration in workload(seed=13):
                        sessions.start_soon(session, start, duration)
                await anyio.sleep(INTERVAL * 2.5)  # the last ends are seen
                text = (await http.get("/metrics")).text
            daemon.stop()
    values = samples(text)

    def metric(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted({"app": app.name, **labels}.items())))]

    record = [sim.session(sid) for sid in ids]
    truth = [(s.closed_at - s.started_at).total_seconds() for s in record]
    assert metric("duix_app_sessions_started_total") == SESSIONS
    assert metric("duix_app_sessions_ended_total", closed_by="platform") == SESSIONS
    assert metric("duix_app_sessions_ended_total", closed_by="policy") == 0
    assert metric("duix_app_session_duration_seconds_count") == SESSIONS
    # session-seconds: within one poll interval per session of the true total
    assert abs(metric("duix_app_session_seconds_total") - sum(truth)) <= SESSIONS * INTERVAL

    out = io.StringIO()
    assert main(["report", "-c", str(path), "--since", "1h", "-o", "json"], out=out) == 0
    report: dict[str, Any] = json.loads(out.getvalue())
    (row,) = [a for a in report["apps"] if a["app"] == app.name]
    assert row["sessions"] == SESSIONS
    assert abs(row["session_minutes"] * 60 - sum(truth)) <= SESSIONS * INTERVAL
    for p in (50, 90, 99):
        assert row["duration_seconds"][f"p{p}"] == pytest.approx(
            nearest_rank(truth, p), abs=INTERVAL
        )
    assert row["duration_seconds"]["max"] == pytest.approx(max(truth), abs=INTERVAL)
    (backtest,) = [b for b in row["backtest"] if b["policy"] == "backtested"]
    assert backtest["sessions"] == sum(1 for d in truth if d > THRESHOLD)
    saved = sum(d - THRESHOLD for d in truth if d > THRESHOLD)
    assert backtest["session_minutes_saved"] * 60 == pytest.approx(saved, abs=SESSIONS * INTERVAL)


async def test_the_daemon_deletes_history_older_than_history_days(tmp_path: Path) -> None:
    """``state.history_days`` is enforced by the running daemon (at start, then hourly):
    sessions that ended before it go, the rest stay."""
    now = datetime.now(UTC)

    def ended(days_ago: float, i: int) -> HistoryRow:
        end = now - timedelta(days=days_ago)
        return HistoryRow("desk", f"{days_ago}-{i}", end - timedelta(minutes=10), end, "platform")

    store = StateStore(tmp_path / "state")
    store.record_ended([*(ended(12, i) for i in range(50)), *(ended(2, i) for i in range(30))])
    store.flush()
    store.close()
    sim = Simulator(apps=1, seed=13, clock=SystemClock(), workload=False)
    app = sim.apps[0]
    async with loopback_sim(sim=sim) as (base_url, _):
        path = tmp_path / "duixwatch.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "duix": {"base_url": base_url, "read_retries": 0},
                    "apps": [{"app_id": app.app_id, "name": app.name, "app_key": app.app_key}],
                    "server": {"listen": "127.0.0.1:0"},
                    "state": {"dir": str(tmp_path / "state"), "history_days": 7},
                }
            )
        )
        daemon = Daemon(
            settings.load_config(path, environ={}),
            path,
            clock=SystemClock(),
            registry=Registry(),
            handle_signals=False,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            with anyio.fail_after(15):
                while len(read_history(tmp_path / "state", since=now - timedelta(days=30))) > 30:
                    await anyio.sleep(0.05)
            daemon.stop()
    kept = read_history(tmp_path / "state", since=now - timedelta(days=30))
    assert sorted(r.session_id for r in kept) == sorted(f"2-{i}" for i in range(30))
