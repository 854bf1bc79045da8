"""Measuring the baseline (:mod:`bench.baseline`) against the benchmark's simulator.

The baseline cannot wait for a first full cycle the way duixwatch is measured: with N apps a
sequential pass lasts about N x 2 x (latency + overhead) — over seven minutes for 10,000 apps at
20 ms. Its window therefore starts when its loop starts and lasts as long as duixwatch's. Its
cycle time is measured when a whole pass fits (the run is extended by up to ``extra_wait``
seconds, outside the window, to let the first pass finish when that is close); otherwise it is
extrapolated from the polls it made: N x the mean time of one poll. A sequential loop polls each
app once per pass, so its freshness gap is its cycle period: max(cycle, interval).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import PollTimes, freshness, quantile, timed_scrapes
from bench.procs import Budget, Processes, free_port, peak_rss_bytes
from bench.sim import Simulator
from bench.window import measure_window

__all__ = ["run_baseline"]

REPO = Path(__file__).resolve().parent.parent


def run_baseline(
    procs: Processes,
    sim: Simulator,
    *,
    config_path: Path,
    app_names: list[str],
    interval: float,
    latency: float,
    window: float,
    scrapes: int,
    extra_wait: float,
    work_dir: Path,
    budget: Budget,
) -> dict[str, Any]:
    """Start the baseline, measure one window, stop it and read its timeline."""
    n = len(app_names)
    budget.need(window + 20, "the baseline window")
    port = free_port()
    timeline_path = work_dir / f"baseline-{n}.json"
    sim.reset_stats()
    child = procs.start(
        f"baseline-{n}",
        [
            sys.executable,
            "-m",
            "bench.baseline",
            "--config",
            str(config_path),
            "--interval",
            str(interval),
            "--max-seconds",
            str(window + extra_wait + 180),
            "--metrics-port",
            str(port),
            "--timeline",
            str(timeline_path),
        ],
        cwd=REPO,
    )
    out: dict[str, Any] = {"apps": n}
    try:
        child.first_line(timeout=60)
        loop_started = time.time()
        win = measure_window(
            metrics_url=f"http://127.0.0.1:{port}/metrics",
            apps=app_names,
            pids={"baseline": child.pid, "sim": sim.child.pid},
            seconds=window,
            scrape_every=0.6 * interval,
        )
        # Let the first pass finish if it is about to (its cycle is then measured, not
        # extrapolated); outside the window, so the CPU figures are unaffected.
        polled = len(win.last.last_success)
        elapsed = time.time() - loop_started
        if 0 < polled < n:
            remaining = (n - polled) * elapsed / polled
            if remaining <= min(extra_wait, budget.remaining() - 30):
                time.sleep(min(extra_wait, remaining * 1.1 + 1))
        out["extra_wait_seconds"] = time.time() - win.end
        out.update(
            timed_scrapes(
                f"http://127.0.0.1:{port}/metrics",
                count=scrapes,
                pause=0.2,
                budget=budget.cap(60, "the timed scrapes"),
            )
        )
        out["rss_peak_bytes"] = peak_rss_bytes(child.pid) or win.max_rss["baseline"]
        out["rss_sampled_max_bytes"] = win.max_rss["baseline"]
        out["sim_stats"] = sim.stats()
    finally:
        out["exit_code"] = procs.stop(child, grace=30)
    timeline = json.loads(timeline_path.read_text())
    polls = [p for p in timeline["polls"] if win.start < p[3] <= win.end]
    ok = [p for p in polls if p[4]]
    request_times = [p[2] - p[1] for p in ok] + [p[3] - p[2] for p in ok]
    all_ok = [p for p in timeline["polls"] if p[4]]
    cycles = [end - start for start, end in timeline["cycles"]]
    if cycles:
        cycle, measured = cycles[0], True
    elif all_ok:
        cycle, measured = n * sum(p[3] - p[1] for p in all_ok) / len(all_ok), False
    else:
        cycle, measured = math.nan, False
    period = max(cycle, interval)
    times = PollTimes(app_names)
    for index, _t0, _mid, t1, success in timeline["polls"]:
        if success:
            times.add_poll(app_names[index], t1)
    cpu = win.cpu_seconds["baseline"]
    required = n * win.wall_seconds / interval
    achieved = len(polls) / required if required else math.nan
    out.update(
        {
            "window_seconds": win.wall_seconds,
            "window_scrapes": win.scrapes,
            "window_scrape_median_seconds": quantile(win.scrape_seconds, 0.5),
            "polls": float(len(polls)),
            "polls_observed": float(len(ok)),
            "failed_requests": float(len(polls) - len(ok)),
            "requests_per_second": 2 * len(polls) / win.wall_seconds,
            "request_mean_ms": 1000 * sum(request_times) / len(request_times)
            if request_times
            else math.nan,
            "polls_achieved_over_required": achieved,
            "cycle_seconds": cycle,
            "cycle_measured": measured,
            "cycle_bound_seconds": n * 2 * latency,
            "cpu_seconds": cpu,
            "cpu_cores": cpu / win.wall_seconds,
            "cpu_cores_at_full_rate": cpu / win.wall_seconds / min(achieved, 1.0)
            if achieved
            else math.nan,
            "cpu_seconds_per_1000_polls": 1000 * cpu / len(polls) if polls else math.nan,
            "sim_cpu_cores": win.cpu_seconds["sim"] / win.wall_seconds,
            **freshness(times, start=win.start, end=win.end, interval=interval, default_gap=period),
        }
    )
    return out
