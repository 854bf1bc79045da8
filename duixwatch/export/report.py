"""What sessions cost: ``duixwatch report``'s numbers and renderings, from the session history.

Pure functions over :class:`~duixwatch.watch.state.HistoryRow` lists (``now`` and the window
are arguments; nothing here reads a clock or a file):

* :func:`summarize` — one APP's :class:`AppReport`: sessions, session-minutes, duration
  percentiles, the busiest hour of the day (UTC), the duration histogram and the backtest;
* :func:`policy_thresholds` — the ``session_age_over_seconds`` policies that select an APP;
  :func:`parse_duration` / :func:`parse_thresholds` / :func:`format_duration` — the one
  duration syntax of ``--since`` and ``--threshold`` (``7d``, ``12h``, ``30m``, ``90s``,
  ``1h30m``), also how the report writes durations;
* :func:`render_text` (with :func:`render_histogram`), :func:`report_json` and
  :func:`render_html` — the terminal report, the ``-o json`` document and a self-contained
  HTML page.

Definitions, stated once:

* A session's **duration** is :attr:`HistoryRow.duration_seconds` (start → last sighting, short
  by at most one poll interval); its **session-minutes** are that over 60.
* **Percentiles** are nearest-rank: the p-th percentile of n sorted durations is the
  ``ceil(p/100 · n)``-th (1-based), always a duration that was observed.
* The **busiest hour** is the hour of the day (UTC) with the most session-minutes, a session's
  minutes split across the hours it spans (a session longer than a day adds a full hour to every
  hour for each whole day); ties go to the earlier hour.
* The **backtest** of a threshold: the sessions with duration > threshold (what a
  ``session_age_over_seconds`` policy with that threshold would have closed) and the
  session-minutes saved, the sum of (duration - threshold) over them.
* The **histogram** buckets are ``duix_app_session_duration_seconds``'s
  (:data:`~duixwatch.watch.lifecycle.DURATION_BUCKETS`, upper bounds included, then +Inf), so
  the chart and the dashboards agree.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Final

from duixwatch.policy import kinds
from duixwatch.policy.schema import AppRef, PolicyConfig, protected
from duixwatch.watch.lifecycle import DURATION_BUCKETS
from duixwatch.watch.state import HistoryRow

__all__ = [
    "PERCENTILE_METHOD",
    "AppReport",
    "BacktestRow",
    "BusiestHour",
    "Percentiles",
    "Report",
    "Threshold",
    "backtest",
    "busiest_hour",
    "format_duration",
    "histogram",
    "hourly_minutes",
    "marker_row",
    "nearest_rank",
    "parse_duration",
    "parse_thresholds",
    "policy_thresholds",
    "render_histogram",
    "render_text",
    "report_json",
    "summarize",
]

PERCENTILE_METHOD: Final = "nearest-rank"
#: Width of the terminal report (the histogram's rows never exceed it).
COLUMNS: Final = 80
_BAR_CELLS: Final = 30
_EIGHTHS: Final = " ▏▎▍▌▋▊▉█"
_UNITS: Final = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_DAY_SECONDS: Final = 86400


# ----------------------------------------------------------------------- durations


def parse_duration(text: str) -> float:
    """Seconds of ``7d``, ``12h``, ``30m``, ``90s``, ``1h30m`` or ``1.5h``; more than 0.

    Raises :class:`ValueError` with a message for people otherwise (a bare number has no
    unit and is refused: minutes or seconds would be a guess).
    """
    spec = text.strip().lower()
    parts = _DURATION.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise ValueError(f"{text!r} is not a duration like 7d, 12h, 30m, 90s or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than 0")
    return seconds


def format_duration(seconds: float) -> str:
    """Whole seconds in the syntax :func:`parse_duration` reads: ``45m``, ``1h30m``, ``12m3s``,
    ``2d4h``; ``0s`` for less than half a second."""
    rest = round(seconds)
    if rest <= 0:
        return "0s"
    out = []
    for unit, size in _UNITS.items():
        count, rest = divmod(rest, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Threshold:
    """A duration to backtest: a policy's ``session_age_over_seconds``, or a ``--threshold``."""

    seconds: float
    #: The policy's name; ``None`` for a ``--threshold``.
    policy: str | None = None
    #: The policy's ``protect_sessions`` globs: sessions it would never have closed.
    protect: tuple[str, ...] = ()

    def protects(self, session_id: str) -> bool:
        """Whether the policy would have left ``session_id`` alone (a protected id)."""
        return protected(self.protect, session_id)

    @property
    def label(self) -> str:
        """``> 45m max-session-age`` (a policy's) or ``> 30m``."""
        head = f"> {format_duration(self.seconds)}"
        return f"{head} {self.policy}" if self.policy is not None else head


def parse_thresholds(text: str) -> list[Threshold]:
    """``30m,45m,1h`` as thresholds (duplicates once); :class:`ValueError` on a bad item."""
    seconds = [parse_duration(item) for item in text.split(",")]
    return [Threshold(s) for s in dict.fromkeys(seconds)]


def policy_thresholds(policies: Iterable[PolicyConfig], app: AppRef) -> list[Threshold]:
    """The thresholds of the ``session_age_over_seconds`` policies that select ``app``."""
    return [
        Threshold(
            p.match.session_age_over_seconds,
            policy=p.name,
            protect=tuple(str(glob) for glob in p.protect_sessions),
        )
        for p in policies
        if isinstance(p.match, kinds.SessionAge) and p.selects(app)
    ]


# ----------------------------------------------------------------------- numbers


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Nearest-rank percentiles of durations, seconds."""

    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True, slots=True)
class BusiestHour:
    """The hour of the day (UTC, 0-23) with the most session-minutes, and those minutes."""

    hour: int
    session_minutes: float


@dataclass(frozen=True, slots=True)
class BacktestRow:
    """What ``threshold`` would have closed: sessions longer than it, and the minutes saved."""

    threshold: Threshold
    sessions: int
    session_minutes_saved: float


@dataclass(frozen=True, slots=True)
class AppReport:
    """One APP's numbers over the report's window (sessions that ended in it)."""

    app: str
    #: ``None`` for an APP found in the history that is no longer configured.
    app_id: str | None
    sessions: int
    closed_by_policy: int
    #: Sessions whose start is their first sighting (the platform gave no start time).
    start_unknown: int
    session_minutes: float
    #: ``None`` without sessions.
    durations: Percentiles | None
    #: ``None`` without session-minutes.
    busiest: BusiestHour | None
    #: Sessions per bucket of :data:`DURATION_BUCKETS`, then the +Inf bucket.
    buckets: tuple[int, ...]
    backtest: tuple[BacktestRow, ...]


@dataclass(frozen=True, slots=True)
class Report:
    """The whole report: the window (sessions that ended in ``[since, until]``) and the APPs."""

    since: datetime
    until: datetime
    apps: tuple[AppReport, ...]


def nearest_rank(ordered: Sequence[float], percent: int) -> float:
    """The ``percent``-th percentile (1..100) of ``ordered`` (sorted, not empty), nearest-rank:
    the ``ceil(percent/100 · n)``-th value."""
    if not ordered:
        raise ValueError("no values")
    if not 0 < percent <= 100:
        raise ValueError(f"percent {percent} is not in 1..100")
    rank = -(-percent * len(ordered) // 100)  # integer ceil: no float rounding at the edges
    return ordered[rank - 1]


def hourly_minutes(rows: Iterable[HistoryRow]) -> list[float]:
    """Session-minutes per hour of the day (UTC), index 0-23, each session split across the
    hours it spans."""
    minutes = [0.0] * 24
    for row in rows:
        start, end = row.started.astimezone(UTC), row.ended.astimezone(UTC)
        if end <= start:
            continue
        days = int((end - start).total_seconds() // _DAY_SECONDS)
        if days:  # each whole day covers every hour once
            for hour in range(24):
                minutes[hour] += days * 60.0
            start += timedelta(days=days)
        for _ in range(26):  # bounded: less than a day left, at most 25 pieces
            if start >= end:
                break
            next_hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            piece_end = min(next_hour, end)
            minutes[start.hour] += (piece_end - start).total_seconds() / 60
            start = piece_end
    return minutes


def busiest_hour(rows: Iterable[HistoryRow]) -> BusiestHour | None:
    """The hour of the day (UTC) with the most session-minutes (the earlier on a tie)."""
    minutes = hourly_minutes(rows)
    best = max(range(24), key=lambda h: (minutes[h], -h))
    return BusiestHour(best, minutes[best]) if minutes[best] > 0 else None


def histogram(durations: Iterable[float]) -> tuple[int, ...]:
    """Sessions per bucket of :data:`DURATION_BUCKETS` (upper bound included), then +Inf."""
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    for seconds in durations:
        counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
    return tuple(counts)


def backtest(
    sessions: Sequence[HistoryRow], thresholds: Iterable[Threshold]
) -> tuple[BacktestRow, ...]:
    """Per threshold, in increasing order: the sessions longer than it (but those its policy
    protects) and the minutes saved."""
    rows = []
    for threshold in sorted(thresholds, key=lambda t: (t.seconds, t.policy is None)):
        over = [
            r.duration_seconds - threshold.seconds
            for r in sessions
            if r.duration_seconds > threshold.seconds and not threshold.protects(r.session_id)
        ]
        rows.append(BacktestRow(threshold, len(over), sum(over) / 60))
    return tuple(rows)


def summarize(
    app: str,
    rows: Sequence[HistoryRow],
    thresholds: Iterable[Threshold],
    *,
    app_id: str | None = None,
) -> AppReport:
    """One APP's report over ``rows`` (its ended sessions)."""
    durations = sorted(r.duration_seconds for r in rows)
    percentiles = None
    if durations:
        percentiles = Percentiles(
            p50=nearest_rank(durations, 50),
            p90=nearest_rank(durations, 90),
            p99=nearest_rank(durations, 99),
            max=durations[-1],
        )
    return AppReport(
        app=app,
        app_id=app_id,
        sessions=len(rows),
        closed_by_policy=sum(1 for r in rows if r.closed_by == "policy"),
        start_unknown=sum(1 for r in rows if not r.start_known),
        session_minutes=sum(durations) / 60,
        durations=percentiles,
        busiest=busiest_hour(rows),
        buckets=histogram(durations),
        backtest=backtest(rows, thresholds),
    )


def human(seconds: float) -> str:
    """A duration for reading: to the second under an hour, else to the minute."""
    return format_duration(seconds if seconds < 3600 else round(seconds / 60) * 60)


def percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


# ----------------------------------------------------------------------- JSON


def report_json(report: Report) -> dict[str, Any]:
    """The ``-o json`` document (seconds to the millisecond, minutes to the hundredth)."""
    return {
        "since": report.since.isoformat(),
        "until": report.until.isoformat(),
        "percentiles": PERCENTILE_METHOD,
        "apps": [_app_json(a) for a in report.apps],
    }


def _app_json(a: AppReport) -> dict[str, Any]:
    d = a.durations
    return {
        "app": a.app,
        "app_id": a.app_id,
        "sessions": a.sessions,
        "closed_by": {"policy": a.closed_by_policy, "platform": a.sessions - a.closed_by_policy},
        "start_unknown": a.start_unknown,
        "session_minutes": round(a.session_minutes, 2),
        "duration_seconds": {
            "p50": None if d is None else round(d.p50, 3),
            "p90": None if d is None else round(d.p90, 3),
            "p99": None if d is None else round(d.p99, 3),
            "max": None if d is None else round(d.max, 3),
        },
        "busiest_hour": None
        if a.busiest is None
        else {"hour_utc": a.busiest.hour, "session_minutes": round(a.busiest.session_minutes, 2)},
        "histogram": [
            {"le_seconds": le, "sessions": n}
            for le, n in zip((*DURATION_BUCKETS, None), a.buckets, strict=True)
        ],
        "backtest": [
            {
                "threshold_seconds": b.threshold.seconds,
                "policy": b.threshold.policy,
                "sessions": b.sessions,
                "sessions_percent": round(percent(b.sessions, a.sessions), 2),
                "session_minutes_saved": round(b.session_minutes_saved, 2),
                "session_minutes_percent": round(
                    percent(b.session_minutes_saved, a.session_minutes), 2
                ),
            }
            for b in a.backtest
        ],
    }


# ----------------------------------------------------------------------- text


def bucket_labels() -> list[str]:
    bounds = [format_duration(b) for b in DURATION_BUCKETS]
    return [
        f"≤{bounds[0]}",
        *(f"{lo}-{hi}" for lo, hi in pairwise(bounds)),
        f">{bounds[-1]}",
    ]


def _bar(count: int, most: int) -> str:
    if not count:
        return ""
    eighths = max(1, round(count / most * _BAR_CELLS * 8))
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def marker_row(threshold: Threshold) -> int:
    """The histogram row a threshold is marked on: the first that holds sessions longer than
    it (a threshold on a bucket's upper bound marks the next row: all of it would be closed)."""
    return bisect_right(DURATION_BUCKETS, threshold.seconds)


def render_histogram(a: AppReport) -> list[str]:
    """The duration histogram as lines of at most :data:`COLUMNS`: one row per bucket, a bar of
    block characters, and each threshold marked ``◀`` on the first row it would close."""
    labels = bucket_labels()
    width = max(len(label) for label in labels)
    most = max(a.buckets) or 1
    marks: dict[int, list[str]] = {}
    for b in a.backtest:
        marks.setdefault(marker_row(b.threshold), []).append(b.threshold.label)
    lines = [f"  {'duration':<{width}}  {'sessions':>8}"]
    for i, (label, count) in enumerate(zip(labels, a.buckets, strict=True)):
        row = f"  {label:<{width}}  {count:>8,}  {_bar(count, most):<{_BAR_CELLS}}"
        if i in marks:
            row += "  " + _cut("◀ " + ", ".join(marks[i]), COLUMNS - len(row) - 2)
        lines.append(row.rstrip())
    return lines


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return (
            "  "
            + "  ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )

    return [line(headers), *(line(r) for r in rows)]


def window(report: Report) -> str:
    fmt = "%Y-%m-%d %H:%M"
    span = format_duration((report.until - report.since).total_seconds())
    since, until = report.since.astimezone(UTC), report.until.astimezone(UTC)
    return f"{since:{fmt}} → {until:{fmt}} UTC ({span})"


def render_text(report: Report) -> str:
    """The terminal report: per APP its numbers, the histogram and the backtest."""
    out = [f"Sessions that ended {window(report)}; percentiles are {PERCENTILE_METHOD}."]
    for a in report.apps:
        out.append("")
        out.append(a.app if a.app_id is None else f"{a.app} ({a.app_id})")
        if not a.sessions:
            out.append("  no sessions ended in this window")
            continue
        out.append(
            f"  {a.sessions:,} sessions ({a.closed_by_policy:,} closed by a policy)"
            f" · {a.session_minutes:,.1f} session-minutes"
        )
        if a.start_unknown:
            out.append(
                f"  {a.start_unknown:,} without a platform start time: timed from their first"
                " sighting"
            )
        if a.durations is not None:
            d = a.durations
            out.append(
                "  duration  "
                + "  ".join(
                    f"{name} {human(v)}"
                    for name, v in (("p50", d.p50), ("p90", d.p90), ("p99", d.p99), ("max", d.max))
                )
            )
        if a.busiest is not None:
            h = a.busiest.hour
            out.append(
                f"  busiest hour  {h:02d}:00-{(h + 1) % 24:02d}:00 UTC"
                f" · {a.busiest.session_minutes:,.1f} session-minutes"
            )
        out.append("")
        out.extend(render_histogram(a))
        if a.backtest:
            out.append("")
            rows = [
                (
                    f"> {format_duration(b.threshold.seconds)}",
                    b.threshold.policy or "--threshold",
                    f"{b.sessions:,}",
                    f"{percent(b.sessions, a.sessions):.1f} %",
                    f"{b.session_minutes_saved:,.1f}",
                    f"{percent(b.session_minutes_saved, a.session_minutes):.1f} %",
                )
                for b in a.backtest
            ]
            headers = ("BACKTEST", "FROM", "WOULD CLOSE", "SHARE", "SAVES MIN", "SHARE")
            out.extend(_table(headers, rows, right={2, 3, 4, 5}))
    return "\n".join(out) + "\n"
