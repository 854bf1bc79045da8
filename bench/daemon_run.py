"""Measuring ``duixwatch run`` against the benchmark's simulator.

Limits (``duix.max_requests_per_second`` and ``duix.max_in_flight``) are chosen so that N apps
x 2 requests fit in one interval:

* needed rate = 2N / interval requests per second (every app asks ``getconcurrentNumber`` and
  ``getconcurrentList`` once per interval);
* configured rate = needed rate x 1.5 (headroom for the +/- 10 % jitter and for bursts: the
  apps' schedules are random, not evenly spread), at most 10,000 (the setting's maximum);
* in flight = configured rate x latency x 2, at least 4 (Little's law: requests in flight =
  rate x time each one takes; x 2 because a request takes the injected latency PLUS the
  simulator's own processing and queueing time);
* the cycle can then not be shorter than max(N x 2 x latency / max_in_flight, 2N / rate): the
  lower bound printed beside the measured cycle.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.measure import cycle_times, freshness, quantile, timed_scrapes
from bench.procs import DUIXWATCH, Budget, Processes, peak_rss_bytes, wait_for
from bench.sim import Simulator
from bench.window import measure_window

__all__ = ["Limits", "limits_for", "run_duixwatch", "write_config"]

RATE_HEADROOM = 1.5
IN_FLIGHT_HEADROOM = 2.0
MIN_IN_FLIGHT = 4
MAX_RATE = 10_000.0
MAX_IN_FLIGHT = 1024


@dataclass(frozen=True)
class Limits:
    needed_rate: float
    rate: float
    max_in_flight: int

    def cycle_bound(self, apps: int, latency: float) -> float:
        """The shortest time in which every app can be polled once under these limits."""
        return max(apps * 2 * latency / self.max_in_flight, apps * 2 / self.rate)

    def to_dict(self) -> dict[str, float]:
        return {
            "needed_requests_per_second": self.needed_rate,
            "max_requests_per_second": self.rate,
            "max_in_flight": self.max_in_flight,
        }


def limits_for(
    apps: int, *, interval: float, latency: float, max_in_flight: int | None = None
) -> Limits:
    """The limits documented in the module docstring (``max_in_flight`` overrides its rule)."""
    needed = 2 * apps / interval
    rate = min(MAX_RATE, round(needed * RATE_HEADROOM, 1))
    if max_in_flight is None:
        max_in_flight = max(MIN_IN_FLIGHT, math.ceil(rate * latency * IN_FLIGHT_HEADROOM))
    return Limits(needed, rate, min(MAX_IN_FLIGHT, max_in_flight))


def write_config(
    printed: dict[str, Any],
    path: Path,
    *,
    interval: float,
    limits: Limits,
    listen: str,
    state_dir: Path,
) -> None:
    """The ``--print-config`` document with the benchmark's interval, limits and addresses."""
    doc = dict(printed)
    doc["apps"] = [{**app, "poll_interval_seconds": interval} for app in printed["apps"]]
    doc["duix"] = {
        **printed.get("duix", {}),
        "max_in_flight": limits.max_in_flight,
        "max_requests_per_second": limits.rate,
    }
    doc["server"] = {"listen": listen}
    doc["state"] = {"dir": str(state_dir)}
    doc["daemon"] = {**(printed.get("daemon") or {}), "log_level": "warning"}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _status(url: str) -> int:
    return requests.get(url, timeout=10).status_code


def run_duixwatch(
    procs: Processes,
    sim: Simulator,
    *,
    config_path: Path,
    port: int,
    app_names: list[str],
    interval: float,
    latency: float,
    limits: Limits,
    window: float,
    scrapes: int,
    budget: Budget,
) -> dict[str, Any]:
    """Start the daemon, wait for its first full cycle, measure one window, stop it.

    The first full cycle takes one interval by design (each app starts at a random offset
    within it); the wait for it is bounded by interval + 15 s. A daemon that has not polled
    every app by then is measured anyway (``ready`` false): its unpolled apps count as late.
    """
    n = len(app_names)
    base = f"http://127.0.0.1:{port}"
    sim.reset_stats()
    started = time.monotonic()
    child = procs.start(f"duixwatch-{n}", [*DUIXWATCH, "run", "-c", str(config_path)])
    out: dict[str, Any] = {"apps": n, **limits.to_dict()}
    try:
        wait_for(
            lambda: child.alive() and _status(f"{base}/healthz") == 200,
            timeout=budget.cap(60 + n / 50, "duixwatch listened"),
            what="duixwatch to listen",
            every=0.25,
        )
        out["listening_seconds"] = time.monotonic() - started
        # The first full cycle: every app polled once (each starts within its first interval).
        try:
            wait_for(
                lambda: _status(f"{base}/readyz") == 200,
                timeout=budget.cap(interval + 15, "every app was polled once"),
                what="every app polled once (/readyz)",
                every=0.5,
            )
            out["ready"] = True
        except TimeoutError:
            out["ready"] = False  # measured anyway: the apps never polled count as late
        out["first_cycle_seconds"] = time.monotonic() - started
        if not child.alive():
            raise RuntimeError(f"duixwatch exited early:\n{child.log_tail()}")
        budget.need(window + 10, "the duixwatch window")
        win = measure_window(
            metrics_url=f"{base}/metrics",
            apps=app_names,
            pids={"duixwatch": child.pid, "sim": sim.child.pid},
            seconds=window,
            scrape_every=0.6 * interval,
        )
        out.update(
            timed_scrapes(
                f"{base}/metrics",
                count=scrapes,
                pause=0.2,
                budget=budget.cap(120, "the timed scrapes"),
            )
        )
        out["rss_peak_bytes"] = peak_rss_bytes(child.pid) or win.max_rss["duixwatch"]
        out["rss_sampled_max_bytes"] = win.max_rss["duixwatch"]
        out["sim_stats"] = sim.stats()
    finally:
        out["exit_code"] = procs.stop(child, grace=30)
    out["log_poll_failed_lines"] = sum(
        1 for line in child.log_tail(10**6).splitlines() if "poll_failed" in line
    )
    first, last = win.first, win.last
    polls = last.attempts("getconcurrentNumber") - first.attempts("getconcurrentNumber")
    attempts = sum(
        last.attempts(ep) - first.attempts(ep)
        for ep in ("getconcurrentNumber", "getconcurrentList")
    )
    successes = sum(
        last.attempts(ep, "success") - first.attempts(ep, "success")
        for ep in ("getconcurrentNumber", "getconcurrentList")
    )
    d_sum = sum(
        last.duration.get(ep, (0, 0))[0] - first.duration.get(ep, (0, 0))[0] for ep in last.duration
    )
    d_count = sum(
        last.duration.get(ep, (0, 0))[1] - first.duration.get(ep, (0, 0))[1] for ep in last.duration
    )
    refs = [
        win.start + k * 0.6 * interval
        for k in range(100)
        if win.start + k * 0.6 * interval <= win.end - 1.25 * interval
    ]
    cycles = cycle_times(win.polls, refs, end=win.end)
    cpu = win.cpu_seconds["duixwatch"]
    required = n * win.wall_seconds / interval  # polls the schedule asks for in the window
    achieved = polls / required if required else math.nan
    if cycles:
        cycle, measured = quantile(cycles, 0.5), True
    else:  # no complete cycle in the window: extrapolated from the polls it made
        cycle, measured = (n * win.wall_seconds / polls if polls else math.nan), False
    out.update(
        {
            "window_seconds": win.wall_seconds,
            "window_scrapes": win.scrapes,
            "window_scrape_median_seconds": quantile(win.scrape_seconds, 0.5),
            "polls": polls,
            "polls_observed": win.polls.observed(win.start, win.end),
            "failed_requests": attempts - successes,
            "requests_per_second": attempts / win.wall_seconds,
            "request_mean_ms": 1000 * d_sum / d_count if d_count else math.nan,
            "polls_achieved_over_required": achieved,
            "cycle_seconds": cycle,
            "cycle_measured": measured,
            "cycle_max_seconds": max(cycles) if cycles else math.nan,
            "cycle_samples": len(cycles),
            "cycle_bound_seconds": limits.cycle_bound(n, latency),
            "cpu_seconds": cpu,
            "cpu_cores": cpu / win.wall_seconds,
            # the CPU the full schedule would need (more than measured when it fell behind)
            "cpu_cores_at_full_rate": cpu / win.wall_seconds / min(achieved, 1.0)
            if achieved
            else math.nan,
            "cpu_seconds_per_1000_polls": 1000 * cpu / polls if polls else math.nan,
            "sim_cpu_cores": win.cpu_seconds["sim"] / win.wall_seconds,
            **freshness(win.polls, start=win.start, end=win.end, interval=interval),
        }
    )
    return out
