"""The measurement window shared by both programs: scrape, sample, and count CPU."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.measure import Exposition, PollTimes, parse_exposition, scrape
from bench.procs import Sampler, cpu_seconds

__all__ = ["Window", "measure_window"]


@dataclass
class Window:
    """What one window of ``measure_window`` saw."""

    start: float  # Unix time of the first scrape (the window's start)
    end: float  # Unix time once the last scrape was read
    wall_seconds: float  # monotonic seconds between the two CPU readings
    cpu_seconds: dict[str, float]  # per watched process, used during the window
    max_rss: dict[str, int]  # sampled high-water marks
    first: Exposition
    last: Exposition
    polls: PollTimes
    scrapes: int
    scrape_seconds: list[float] = field(default_factory=list)
    scrape_bytes: int = 0


def measure_window(
    *,
    metrics_url: str,
    apps: list[str],
    pids: dict[str, int],
    seconds: float,
    scrape_every: float,
) -> Window:
    """Scrape ``metrics_url`` every ``scrape_every`` s for ``seconds`` s; CPU of ``pids`` meanwhile.

    The CPU readings bracket the first and the last scrape, so the window's CPU includes serving
    its scrapes (as in production, where something scrapes ``/metrics``).
    """
    polls = PollTimes(apps)
    scrape_seconds: list[float] = []
    with Sampler(pids, max_seconds=seconds + 600) as sampler:
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        mono0 = time.monotonic()
        start = time.time()
        elapsed, body = scrape(metrics_url)
        scrape_seconds.append(elapsed)
        first = parse_exposition(body.decode())
        polls.add(first.last_success)
        last = first
        scrapes = 1
        # Bounded by time and by count: at most one scrape per `scrape_every` seconds.
        for k in range(1, int(seconds / scrape_every) + 2):
            due = mono0 + min(k * scrape_every, seconds)
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            elapsed, body = scrape(metrics_url)
            scrape_seconds.append(elapsed)
            last = parse_exposition(body.decode())
            polls.add(last.last_success)
            scrapes += 1
            if time.monotonic() - mono0 >= seconds:
                break
        end = time.time()
        wall = time.monotonic() - mono0
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    return Window(
        start=start,
        end=end,
        wall_seconds=wall,
        cpu_seconds=cpu,
        max_rss=dict(sampler.max_rss),
        first=first,
        last=last,
        polls=polls,
        scrapes=scrapes,
        scrape_seconds=scrape_seconds,
        scrape_bytes=len(body),
    )
