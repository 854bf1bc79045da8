"""What sessions cost, checked against the truth: sessions that start and end at known times on
the simulator (over loopback), the daemon polling it every second, then the counters, the
session-seconds, the history and ``report``'s percentiles and backtest compared with the
simulator's own record of those sessions. Twice: once with a plan of sessions the test starts
and ends itself (durations chosen to keep the backtest exact), once with the simulator's own
seeded workload (exponential durations above a floor, arrivals at random)."""

from __future__ import annotations

import io
import itertools
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
from duixwatch.sim import SimApp, Simulator
from duixwatch.watch.state import HistoryRow, StateStore, read_history
from tests.loopback import loopback_sim

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120), pytest.mark.exclusive]

INTERVAL = 1.0
SESSIONS = 16
#: The simulator's workload: two arrivals a second, durations 2.5 s + Exp(mean 3.5 s).
#: The floor is above two poll intervals, so every session is in at least one list (none
#: lives and dies between two polls) whatever the polls' phase and jitter.
ARRIVALS_PER_MINUTE = 120.0
MEAN_DURATION = 6.0
MIN_DURATION = 2.5
#: Lists served during the run (about 12 s at one poll a second).
RUN_POLLS = 13
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


def config_file(
    tmp_path: Path, base_url: str, app: SimApp, policies: list[Any], **state: Any
) -> Path:
    """The config of one APP polled every INTERVAL, with ``policies`` and ``state`` keys."""
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
                "state": {"dir": str(tmp_path / "state"), **state},
                "policies": policies,
            }
        )
    )
    return path


def in_process_daemon(path: Path) -> Daemon:
    """The daemon of ``path`` on the real clock, its own registry, no signal handling."""
    return Daemon(
        settings.load_config(path, environ={}),
        path,
        clock=SystemClock(),
        registry=Registry(),
        handle_signals=False,
    )


class PinnedClock(SystemClock):
    """The real clock, held still at :attr:`pinned` while that is set: the simulator answers a
    session list as of one exact moment, which the test records."""

    pinned: datetime | None = None

    def now(self) -> datetime:
        return self.pinned if self.pinned is not None else super().now()


async def test_counts_minutes_percentiles_and_backtest_match_the_simulators_record(
    tmp_path: Path,
) -> None:
    sim = Simulator(apps=1, seed=13, clock=SystemClock(), workload=False)
    app = sim.apps[0]
    async with loopback_sim(sim=sim) as (base_url, _):
        path = config_file(
            tmp_path,
            base_url,
            app,
            policies=[
                {
                    "name": "backtested",
                    "match": {"session_age_over_seconds": THRESHOLD},
                    "action": "stop_sessions",
                }
            ],
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
        path = config_file(tmp_path, base_url, app, [], history_days=7)
        daemon = in_process_daemon(path)
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            with anyio.fail_after(15):
                while len(read_history(tmp_path / "state", since=now - timedelta(days=30))) > 30:
                    await anyio.sleep(0.05)
            daemon.stop()
    kept = read_history(tmp_path / "state", since=now - timedelta(days=30))
    assert sorted(r.session_id for r in kept) == sorted(f"2-{i}" for i in range(30))


async def test_the_simulators_own_workload_is_counted_as_the_simulator_recorded_it(
    tmp_path: Path,
) -> None:
    """The simulator's seeded workload (arrivals, hang-ups, the sessions already live at its
    start, a few that never end): duixwatch's counts equal the simulator's record over the
    polls' window, and its minutes and percentiles are within a poll interval of the truth.

    The window runs from the first list the daemon fetched (``t_1``) to the last one behind
    the metrics read (``t_n``), as the simulator served them (each list answers one exact
    moment, recorded). By the simulator's record, the sessions duixwatch must have STARTED are
    those live at some moment of ``[t_1, t_n]`` (every one is in a list: each outlives two
    intervals), and those it must have seen END are those that hung up in ``(t_1, t_n]``.
    """
    clock = PinnedClock()
    sim = Simulator(
        apps=1,
        seed=13,
        clock=clock,
        arrivals_per_minute=ARRIVALS_PER_MINUTE,
        mean_duration_seconds=MEAN_DURATION,
        min_duration_seconds=MIN_DURATION,
        abandon_probability=0.0,
    )
    app = sim.apps[0]
    served: list[datetime] = []  # the moment each session list was answered for
    answer_list = sim.concurrent_list

    def concurrent_list(listed: SimApp) -> list[dict[str, Any]] | dict[str, Any]:
        clock.pinned = moment = datetime.now(UTC)
        try:
            return answer_list(listed)
        finally:
            clock.pinned = None
            served.append(moment)

    sim.concurrent_list = concurrent_list  # type: ignore[method-assign]
    async with loopback_sim(sim=sim) as (base_url, _):
        path = config_file(tmp_path, base_url, app, policies=[])
        daemon = in_process_daemon(path)
        async with anyio.create_task_group() as tg:
            port = await tg.start(daemon.run)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                with anyio.fail_after(RUN_POLLS * INTERVAL + 20):
                    while len(served) < RUN_POLLS:
                        await anyio.sleep(0.05)
                    # Read the metrics just after the daemon took in a list, then stop it
                    # before the next poll: the metrics and the history see the same lists.
                    target = len(served) + 1
                    while len(served) < target:
                        await anyio.sleep(0.01)
                    while True:
                        text = (await http.get("/metrics")).text
                        values = samples(text)
                        last = values[
                            ("duix_app_last_poll_success_timestamp_seconds", (("app", app.name),))
                        ]
                        if last >= served[target - 1].timestamp():
                            break
                        await anyio.sleep(0.005)
            daemon.stop()
    polls = [moment for moment in served if moment.timestamp() <= last]
    assert polls == served, "a poll slipped in between the metrics read and the stop"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(polls)]
    # What the truth below rests on: no session lives and dies between two lists (the floor
    # is set at more than twice the interval, for a margin).
    assert max(gaps) < MIN_DURATION, gaps
    # One poll interval: a session ends at most one gap after its last sighting, and the
    # list's whole-second start times put its start up to 1 s early.
    error = max(INTERVAL, *gaps)
    first, last_poll = polls[0], polls[-1]

    record = sim.sessions(app.app_id)
    seen = [s for s in record if s.started_at <= last_poll and (s.closed_at or last_poll) > first]
    ended = [s for s in seen if s.closed_at is not None and s.closed_at <= last_poll]
    began = [s for s in seen if s.started_at > first]
    truth = [(s.closed_at - s.started_at).total_seconds() for s in ended if s.closed_at]
    # The workload must have been a workload: sessions already live at the start, sessions
    # that began and ended inside the window, sessions still live at its end.
    assert len(began) >= 5
    assert any(s in ended for s in began)
    assert any(s.started_at < first for s in ended)
    assert len(seen) > len(ended)

    def metric(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted({"app": app.name, **labels}.items())))]

    assert metric("duix_app_sessions_started_total") == len(seen)
    assert metric("duix_app_sessions_ended_total", closed_by="platform") == len(ended)
    assert metric("duix_app_sessions_ended_total", closed_by="policy") == 0
    assert metric("duix_app_session_duration_seconds_count") == len(ended)
    # session-seconds: the integral of live sessions over the window, within one poll
    # interval per session of the simulator's truth
    true_seconds = sum(
        (min(s.closed_at or last_poll, last_poll) - max(s.started_at, first)).total_seconds()
        for s in seen
    )
    assert abs(metric("duix_app_session_seconds_total") - true_seconds) <= len(seen) * error

    out = io.StringIO()
    assert main(["report", "-c", str(path), "--since", "1h", "-o", "json"], out=out) == 0
    report: dict[str, Any] = json.loads(out.getvalue())
    (row,) = [a for a in report["apps"] if a["app"] == app.name]
    assert row["sessions"] == len(ended)
    assert abs(row["session_minutes"] * 60 - sum(truth)) <= len(ended) * error
    for p in (50, 90, 99):
        assert row["duration_seconds"][f"p{p}"] == pytest.approx(nearest_rank(truth, p), abs=error)
    assert row["duration_seconds"]["max"] == pytest.approx(max(truth), abs=error)
