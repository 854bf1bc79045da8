"""Reading ``/metrics`` and turning poll times into freshness and cycle figures.

Where the per-app poll times come from: both measured programs export, per app, the Unix time of
its last successful poll (``duix_app_last_poll_success_timestamp_seconds``). The benchmark
scrapes ``/metrics`` every ``0.6 x interval`` during the window, as a Prometheus would (a little
more often than the usual 15 s), and keeps every distinct value per app. Two polls of one app are
at least ``0.9 x interval`` apart (the jitter is +/- 10 %), so no poll falls between two scrapes
unnoticed and the gaps computed from these values are exact, not sampled — at the cost of one
scrape per 0.6 interval, which is the load a real deployment has anyway and is counted in the
CPU figures of both programs alike. ``/status?sessions=0`` would give the same times, but it is
not what production traffic looks like, and a JSON document of every app once a second would
cost the daemon more CPU than its polls.
"""

from __future__ import annotations

import http.client
import itertools
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "LAST_SUCCESS",
    "Exposition",
    "PollTimes",
    "cycle_times",
    "freshness",
    "parse_exposition",
    "quantile",
    "scrape",
    "timed_scrapes",
]

LAST_SUCCESS = "duix_app_last_poll_success_timestamp_seconds"
_REQUESTS = "duixwatch_api_requests_total"
_DURATION = "duixwatch_api_request_duration_seconds"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Exposition:
    """The few series of one scrape the benchmark reads."""

    last_success: dict[str, float] = field(default_factory=dict)
    #: (endpoint, outcome) -> attempts
    requests: dict[tuple[str, str], float] = field(default_factory=dict)
    #: endpoint -> (sum of seconds, count)
    duration: dict[str, tuple[float, float]] = field(default_factory=dict)

    def attempts(self, endpoint: str, outcome: str | None = None) -> float:
        return sum(
            n
            for (ep, oc), n in self.requests.items()
            if ep == endpoint and (outcome is None or oc == outcome)
        )


def _split(line: str) -> tuple[str, dict[str, str], float] | None:
    brace = line.find("{")
    if brace < 0:
        return None
    close = line.rfind("}")
    try:
        value = float(line[close + 1 :].split()[0])
    except (ValueError, IndexError):
        return None
    return line[:brace], dict(_LABEL.findall(line[brace + 1 : close])), value


def parse_exposition(text: str) -> Exposition:
    """The series the benchmark needs from a Prometheus text exposition."""
    out = Exposition()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(("duix_app_last", "duixwatch_api_re")):
            continue
        parsed = _split(line)
        if parsed is None:
            continue
        name, labels, value = parsed
        if name == LAST_SUCCESS and "app" in labels:
            out.last_success[labels["app"]] = value
        elif name == _REQUESTS:
            out.requests[(labels.get("endpoint", ""), labels.get("outcome", ""))] = value
        elif name == f"{_DURATION}_sum":
            sums[labels.get("endpoint", "")] = value
        elif name == f"{_DURATION}_count":
            counts[labels.get("endpoint", "")] = value
    out.duration = {ep: (sums[ep], counts.get(ep, 0.0)) for ep in sums}
    return out


def scrape(url: str, *, timeout: float = 60) -> tuple[float, bytes]:
    """GET ``url`` on a new connection: (seconds from connecting to having the body, body).

    The body is read in one call, as Prometheus reads a scrape. (``requests`` reads it in
    10 kB pieces: for an 18 MB exposition that alone was ~50 ms of the measured time, spent in
    the measuring process, not in the one measured.)
    """
    parts = urlsplit(url)
    started = time.perf_counter()
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/", headers={"Accept": "text/plain"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"GET {url}: HTTP {response.status}")
    return elapsed, body


def timed_scrapes(url: str, *, count: int, pause: float, budget: float) -> dict[str, float]:
    """``count`` scrapes one after the other (``pause`` apart, within ``budget`` seconds).

    A fresh connection each time, as a Prometheus server after a restart; the median and the
    worst time, and the body size.
    """
    times: list[float] = []
    size = 0
    deadline = time.monotonic() + budget
    for _ in range(count):
        elapsed, body = scrape(url)
        times.append(elapsed)
        size = len(body)
        if time.monotonic() + pause > deadline:
            break
        time.sleep(pause)
    return {
        "scrape_median_seconds": quantile(times, 0.5),
        "scrape_max_seconds": max(times),
        "scrape_count": float(len(times)),
        "scrape_bytes": float(size),
    }


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (``q`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class PollTimes:
    """Every distinct successful-poll time seen per app (from successive scrapes)."""

    def __init__(self, apps: Iterable[str]) -> None:
        self.apps = list(apps)
        self.times: dict[str, set[float]] = {app: set() for app in self.apps}

    def add(self, last_success: dict[str, float]) -> None:
        for app, ts in last_success.items():
            if app in self.times and ts > 0:
                self.times[app].add(ts)

    def add_poll(self, app: str, ts: float) -> None:
        self.times.setdefault(app, set()).add(ts)

    def sorted(self, app: str) -> list[float]:
        return sorted(self.times.get(app, ()))

    def observed(self, start: float, end: float) -> int:
        """Polls seen with a time in (start, end]."""
        return sum(1 for ts in self.times.values() for t in ts if start < t <= end)


def freshness(
    polls: PollTimes,
    *,
    start: float,
    end: float,
    interval: float,
    default_gap: float | None = None,
) -> dict[str, Any]:
    """Per app, the longest time without a successful poll during [start, end], vs the interval.

    For each app the gaps are: from its last poll at or before ``start`` (or from ``start`` if
    it had none) to its first poll in the window, between consecutive polls in the window, and
    from its last poll to ``end`` (the gap still open when the window closed). An app with no
    poll in the window therefore gets a lower bound (its gap had not ended), counted in
    ``apps_without_poll_in_window``; an app never polled at all counts as late whatever its
    bound. ``default_gap`` replaces the measurement for apps with fewer than two polls in the
    window (the baseline, whose cycle can be longer than the window: its gap is then its cycle
    period).
    """
    ratios: list[float] = []
    late = 0
    unpolled = 0
    never = 0
    worst: list[tuple[float, str, list[float]]] = []
    for app in polls.apps:
        times = polls.sorted(app)
        before = [t for t in times if t <= start]
        inside = [t for t in times if start < t <= end]
        if default_gap is not None and len(inside) < 2:
            ratios.append(default_gap / interval)
            late += default_gap / interval > 1.1
            continue
        unpolled += not inside
        never += not inside and not before
        points = [before[-1] if before else start, *inside, end]
        gap = max(b - a for a, b in itertools.pairwise(points))
        ratios.append(gap / interval)
        late += gap / interval > 1.1 or not (inside or before)
        worst = sorted([*worst, (gap / interval, app, points)], reverse=True)[:3]
    return {
        "gap_p50_over_interval": quantile(ratios, 0.5),
        "gap_p99_over_interval": quantile(ratios, 0.99),
        "gap_max_over_interval": max(ratios) if ratios else math.nan,
        "fraction_within_interval_plus_10pct": 1 - late / len(ratios) if ratios else math.nan,
        "apps_without_poll_in_window": unpolled,
        "apps_never_polled": never,
        # the three latest apps and their poll times (window start and end included): raw data
        "worst_apps": [
            {"app": app, "gap_over_interval": r, "points": [round(t - start, 3) for t in pts]}
            for r, app, pts in worst
        ],
    }


def cycle_times(polls: PollTimes, refs: Iterable[float], *, end: float) -> list[float]:
    """For each reference time ``r``: how long until every app had a successful poll after it.

    References for which some app has no poll after ``r`` before ``end`` are skipped (the
    caller passes only references at least one interval and a margin before ``end``).
    """
    sorted_times = {app: polls.sorted(app) for app in polls.apps}
    out: list[float] = []
    for ref in refs:
        latest = ref
        complete = True
        for times in sorted_times.values():
            after = next((t for t in times if ref < t <= end), None)
            if after is None:
                complete = False
                break
            latest = max(latest, after)
        if complete:
            out.append(latest - ref)
    return out
