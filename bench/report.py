"""The benchmark's one table, its targets, and the raw figures as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ROWS", "TARGETS", "Row", "render", "targets", "write_json"]

MB = 1_000_000


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    #: "lower" or "higher" is better (the ratio says by how much duixwatch is better), or None
    #: when a ratio means nothing (context figures).
    better: str | None
    fmt: Callable[[float], str]


def _f(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:,.{digits}f}"


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _ms(v: float) -> str:
    return f"{1000 * v:,.1f}"


def _mb(v: float) -> str:
    return f"{v / MB:,.1f}"


def _kb(v: float) -> str:
    return f"{v / 1000:,.1f}"


ROWS: tuple[Row, ...] = (
    Row("gap_p50_over_interval", "freshness: max gap / interval, p50 app", "lower", _f(2)),
    Row("gap_p99_over_interval", "freshness: max gap / interval, p99 app", "lower", _f(2)),
    Row("gap_max_over_interval", "freshness: max gap / interval, worst app", "lower", _f(2)),
    Row(
        "fraction_within_interval_plus_10pct", "apps polled within interval + 10 %", "higher", _pct
    ),
    Row("cycle_seconds", "cycle: every app polled once (s)", "lower", _f(1)),
    Row("cycle_bound_seconds", "cycle lower bound (s) [1]", None, _f(1)),
    Row("polls", "app-polls in the window", "higher", _f(0)),
    Row("polls_achieved_over_required", "app-polls done / asked by the schedule", "higher", _pct),
    Row("requests_per_second", "requests per second", "higher", _f(1)),
    Row("request_mean_ms", "mean request time (ms) [2]", "lower", _f(1)),
    Row("failed_requests", "failed requests in the window", None, _f(0)),
    Row("cpu_seconds_per_1000_polls", "CPU seconds per 1,000 app-polls", "lower", _f(3)),
    Row("cpu_cores", "CPU cores used, average", "lower", _f(3)),
    Row("cpu_cores_at_full_rate", "CPU cores the whole schedule needs [4]", "lower", _f(3)),
    Row("rss_peak_bytes", "peak RSS (MB)", "lower", _mb),
    Row("scrape_median_seconds", "/metrics scrape, median (ms)", "lower", _ms),
    Row("scrape_bytes", "/metrics size (kB)", "lower", _kb),
    Row("sim_cpu_cores", "simulator CPU cores (context) [3]", None, _f(2)),
)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ratio(row: Row, dx: Any, bl: Any) -> str:
    if row.better is None or not (_finite(dx) and _finite(bl)):
        return "-"
    num, den = (bl, dx) if row.better == "lower" else (dx, bl)
    if den == 0:
        return "inf" if num > 0 else "-"
    return f"{num / den:,.2f}x"


def _cell(row: Row, result: dict[str, Any]) -> str:
    value = result.get(row.key)
    if value is None or not _finite(value):
        return "n/a"
    text = row.fmt(float(value))
    if row.key.startswith("gap_"):
        if result.get("apps_without_poll_in_window"):
            text = ">" + text  # a lower bound: some gaps were still open at the window's end
        elif result.get("cycle_measured") is False:
            text = "~" + text  # the baseline's extrapolated cycle
    if row.key == "cycle_seconds" and result.get("cycle_measured") is False:
        text = "~" + text
    return text


@dataclass(frozen=True)
class Target:
    label: str
    check: Callable[[dict[str, Any]], tuple[bool, str]]


def _fresh(r: dict[str, Any]) -> tuple[bool, str]:
    frac = r.get("fraction_within_interval_plus_10pct", math.nan)
    worst = r.get("gap_max_over_interval", math.nan)
    return _finite(frac) and frac >= 1.0, f"{_pct(frac)} of apps; worst gap {worst:.2f} x interval"


def _cpu(r: dict[str, Any]) -> tuple[bool, str]:
    used = r.get("cpu_cores", math.nan)
    need = r.get("cpu_cores_at_full_rate", math.nan)
    done = r.get("polls_achieved_over_required", math.nan)
    detail = f"{used:.3f} cores used"
    if _finite(done) and done < 0.99:
        detail += f" for {_pct(done)} of the polls asked: {need:.2f} cores for all of them"
    return _finite(need) and need < 1.0, detail


def _rss(r: dict[str, Any]) -> tuple[bool, str]:
    rss = r.get("rss_peak_bytes", math.nan)
    return _finite(rss) and rss < 300 * MB, f"{_mb(rss)} MB"


def _scrape(r: dict[str, Any]) -> tuple[bool, str]:
    s = r.get("scrape_median_seconds", math.nan)
    return _finite(s) and s < 0.3, f"{_ms(s)} ms"


TARGETS: tuple[Target, ...] = (
    Target("every app polled within its interval + 10 %", _fresh),
    Target("under 1 CPU core on average", _cpu),
    Target("peak RSS under 300 MB", _rss),
    Target("/metrics scrape under 300 ms", _scrape),
)

TARGET_APPS = 10_000
TARGET_SESSIONS = 20


def targets(results: list[dict[str, Any]], sessions: int) -> dict[str, Any]:
    """The targets checked on duixwatch's figures for 10,000 apps (or the largest measured)."""
    if not results:
        return {"apps": None, "checks": []}
    pick = next((r for r in results if r["apps"] == TARGET_APPS), None)
    exact = pick is not None and sessions == TARGET_SESSIONS
    pick = pick or max(results, key=lambda r: r["apps"])
    checks = []
    for target in TARGETS:
        ok, detail = target.check(pick["duixwatch"])
        checks.append({"target": target.label, "pass": ok, "measured": detail})
    return {"apps": pick["apps"], "sessions": sessions, "as_specified": exact, "checks": checks}


def render(report: dict[str, Any]) -> str:
    """The whole printed report: parameters, machine, the table, notes and targets."""
    p = report["params"]
    m = report["machine"]
    results = report["results"]
    lines = [
        "",
        f"duixwatch benchmark: {p['sessions']} sessions per app, simulator latency "
        f"{p['latency_ms']:g} ms, poll interval {p['interval']:g} s, window {p['duration']:g} s",
        f"machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['physical_cores']} "
        f"cores), {m['memory_gb']} GB RAM; Python {m['python']} ({m['implementation']}); {m['os']}",
    ]
    if m.get("load_average_at_start") is not None:
        lines[-1] += f"; load average at start {' '.join(map(str, m['load_average_at_start']))}"
    for r in results:
        if "error" in r:
            lines.append(f"{r['apps']:,} apps: FAILED: {r['error']}")
            continue
        dx = r["duixwatch"]
        lines.append(
            f"{r['apps']:,} apps: setup {r['sessions_added']:,} sessions in "
            f"{r['setup_seconds']:.1f} s; duixwatch max_requests_per_second "
            f"{dx['max_requests_per_second']:g} (needed {dx['needed_requests_per_second']:.1f}), "
            f"max_in_flight {dx['max_in_flight']}; listening after "
            f"{dx['listening_seconds']:.1f} s, "
            + ("every app" if dx.get("ready") else "NOT every app")
            + f" polled once after {dx['first_cycle_seconds']:.1f} s"
            + ("" if dx.get("ready") else " (measured anyway)")
        )
    label_w = max(len(row.label) for row in ROWS) + 2
    col_w = 11
    head1 = " " * label_w
    head2 = "figure".ljust(label_w)
    for r in results:
        group = f"{r['apps']:,} apps"
        head1 += "| " + group.center(3 * col_w - 2) + " "
        head2 += (
            "| " + "duixwatch".rjust(col_w - 2) + "baseline".rjust(col_w) + "ratio".rjust(col_w)
        )
    rule = "-" * len(head2)
    lines += ["", head1, head2, rule]
    for row in ROWS:
        line = row.label.ljust(label_w)
        for r in results:
            dx, bl = r.get("duixwatch", {}), r.get("baseline", {})
            line += (
                "| "
                + _cell(row, dx).rjust(col_w - 2)
                + _cell(row, bl).rjust(col_w)
                + _ratio(row, dx.get(row.key), bl.get(row.key)).rjust(col_w)
            )
        lines.append(line)
    lines += [
        rule,
        "ratio: how many times better duixwatch is (baseline/duixwatch where lower is better,",
        "  duixwatch/baseline where higher is better): above 1 duixwatch is better, below 1 worse.",
        "freshness: per app the longest time without a successful poll in the window (exact",
        "  poll times from /metrics scraped every 0.6 interval); the baseline polls each app once",
        "  per pass, so its gap is its cycle period (~: extrapolated when no pass fit the window).",
        "  >: a lower bound: some apps had no poll in the window, their gap was still open.",
        "[1] duixwatch: max(N x 2 x latency / max_in_flight, 2N / max_requests_per_second);",
        "    baseline: N x 2 x latency (one request at a time).",
        "[2] duixwatch: its request-duration histogram (queueing for a connection included);",
        "    baseline: each requests.get, new connection each time as requests.get does.",
        "[3] the simulator is one Python process: near 1.0 it is saturated and slows both.",
        "[4] CPU used / share of the scheduled polls done: what polling every app every",
        "    interval costs at the measured CPU per poll (one thread: more than 1 core is",
        "    not available to either program).",
        "CPU and RSS are the measured process only; CPU includes serving the window's scrapes.",
        "/metrics scrape: GET on a new connection, until the whole body is read (in one read, as",
        "  Prometheus reads it), between the windows, while the program polls at full rate.",
    ]
    t = report["targets"]
    if t["checks"]:
        caveat = (
            ""
            if t["as_specified"]
            else f" (NOT measured at 10,000 x 20 in this run: shown for {t['apps']:,} apps x "
            f"{t['sessions']} sessions)"
        )
        lines += ["", f"targets for 10,000 apps x 20 sessions, duixwatch{caveat}:"]
        for c in t["checks"]:
            verdict = "PASS" if c["pass"] else "FAIL"
            lines.append(f"  {verdict}  {c['target']:<46} {c['measured']}")
    lines.append(f"\ntotal run time {report['total_seconds']:.0f} s")
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(report: dict[str, Any], path: Path) -> None:
    """The raw figures (NaN and infinities become null: the file is strict JSON)."""
    path.write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n")
