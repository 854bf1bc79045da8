"""`make bench` in miniature: the whole benchmark, real processes on 127.0.0.1, tiny sizes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.daemon_run import limits_for
from bench.measure import PollTimes, cycle_times, freshness, parse_exposition
from bench.report import ROWS, TARGETS

pytestmark = pytest.mark.exclusive  # timings and CPU figures: run alone

REPO = Path(__file__).resolve().parents[2]


def _numbers(doc: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every scalar leaf of ``doc`` (lists and dicts walked), with its path."""
    if isinstance(doc, dict):
        return [leaf for k, v in doc.items() for leaf in _numbers(v, f"{path}.{k}")]
    if isinstance(doc, list):
        return [leaf for i, v in enumerate(doc) for leaf in _numbers(v, f"{path}[{i}]")]
    return [(path, doc)]


def test_limits_fit_n_apps_times_two_requests_per_interval() -> None:
    limits = limits_for(10_000, interval=15, latency=0.02)
    assert limits.needed_rate == pytest.approx(10_000 * 2 / 15)
    assert limits.rate == pytest.approx(2000)  # x 1.5 headroom
    assert limits.max_in_flight == 80  # rate x latency x 2
    assert limits.cycle_bound(10_000, 0.02) == pytest.approx(10.0)  # the rate bound wins
    assert limits_for(20, interval=2, latency=0.02).max_in_flight == 4  # the floor
    assert limits_for(1000, interval=15, latency=0.02, max_in_flight=16).max_in_flight == 16


def test_exposition_parsing_reads_poll_times_and_counters() -> None:
    text = "\n".join(
        [
            "# HELP duix_app_last_poll_success_timestamp_seconds x",
            'duix_app_last_poll_success_timestamp_seconds{app="a"} 1.7000000125e+09',
            'duix_app_last_poll_success_timestamp_seconds{app="b-2"} 1700000020.5',
            'duixwatch_api_requests_total{endpoint="getconcurrentNumber",outcome="success"} 7.0',
            'duixwatch_api_requests_total{endpoint="getconcurrentNumber",outcome="timeout"} 1.0',
            'duixwatch_api_request_duration_seconds_sum{endpoint="getconcurrentList"} 0.5',
            'duixwatch_api_request_duration_seconds_count{endpoint="getconcurrentList"} 20.0',
            'duix_up{app="a"} 1.0',
        ]
    )
    parsed = parse_exposition(text)
    assert parsed.last_success == {"a": 1700000012.5, "b-2": 1700000020.5}
    assert parsed.attempts("getconcurrentNumber") == 8
    assert parsed.attempts("getconcurrentNumber", "success") == 7
    assert parsed.duration == {"getconcurrentList": (0.5, 20.0)}


def test_freshness_and_cycle_from_poll_times() -> None:
    polls = PollTimes(["steady", "late", "never"])
    for t in (95.0, 110.0, 125.0, 140.0):
        polls.add_poll("steady", t)
    polls.add_poll("late", 98.0)  # then nothing for the whole window: a gap still open
    result = freshness(polls, start=100.0, end=145.0, interval=15.0)
    assert result["gap_p50_over_interval"] == pytest.approx(45 / 15)  # "never": the window
    assert result["gap_max_over_interval"] == pytest.approx(47 / 15)  # lower bound for "late"
    assert result["fraction_within_interval_plus_10pct"] == pytest.approx(1 / 3)
    assert result["apps_without_poll_in_window"] == 2
    assert result["apps_never_polled"] == 1
    both = PollTimes(["a", "b"])
    for t in (101.0, 116.0, 131.0):
        both.add_poll("a", t)
    for t in (108.0, 123.0, 138.0):
        both.add_poll("b", t)
    assert cycle_times(both, [100.0, 110.0], end=140.0) == [pytest.approx(8.0), pytest.approx(13.0)]
    baseline = freshness(both, start=100.0, end=140.0, interval=15.0, default_gap=60.0)
    assert baseline["gap_max_over_interval"] == pytest.approx(1.0)  # two+ polls: measured


@pytest.mark.e2e
def test_bench_runs_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--apps",
            "20",
            "--sessions",
            "3",
            "--interval",
            "2",
            "--duration",
            "4",
            "--scrapes",
            "3",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = run.stdout
    for row in ROWS:
        line = next((ln for ln in table.splitlines() if ln.startswith(row.label)), None)
        assert line is not None, f"no row {row.label!r} in:\n{table}"
        assert "n/a" not in line, line
    for target in TARGETS:
        assert target.label in table
    assert "machine: " in table
    assert "Python " in table

    doc = json.loads(out.read_text())
    (result,) = doc["results"]
    assert result["apps"] == 20
    assert result["sessions_added"] == 60
    for side in ("duixwatch", "baseline"):
        figures = result[side]
        for row in ROWS:
            value = figures[row.key]
            assert isinstance(value, int | float), (side, row.key, value)
            assert math.isfinite(value), (side, row.key, value)
        assert figures["exit_code"] == 0, (side, figures["exit_code"])
        assert figures["polls"] > 0
        assert figures["failed_requests"] == 0
        assert figures["scrape_bytes"] > 0
    for path, value in _numbers(doc):
        if isinstance(value, float):
            assert math.isfinite(value), path
    # every app was polled in the window, and the scrapes saw each poll (exact poll times).
    # The two counts differ only at the edges: a poll whose number request had been counted but
    # whose list request was still out when the first or the last scrape was rendered, and (on
    # a loaded machine) an app polled twice between two scrapes. CI saw 3 of 43 once; a tenth
    # of the polls still catches a scrape that misses polls or a counter that double-counts.
    dx = result["duixwatch"]
    assert dx["polls_observed"] >= 20
    assert abs(dx["polls_observed"] - dx["polls"]) <= max(2, dx["polls"] // 10), dx


@pytest.mark.e2e
def test_bench_leaves_no_process_behind_on_sigterm(tmp_path: Path) -> None:
    """Stopped mid-run, the benchmark stops every child it started (none keeps a port)."""
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--apps", "20", "--sessions", "3", "--interval", "2"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        me = psutil.Process(bench.pid)
        deadline = time.monotonic() + 20
        children: list[psutil.Process] = []
        while time.monotonic() < deadline and len(children) < 2:  # the simulator and duixwatch
            children = me.children(recursive=True)
            time.sleep(0.2)
        assert len(children) >= 2, "the benchmark did not start its processes"
        os.kill(bench.pid, signal.SIGTERM)
        _, err = bench.communicate(timeout=40)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(timeout=10)
    assert bench.returncode == 130, err
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [p.cmdline() for p in alive]
