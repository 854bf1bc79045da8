"""The soak's printed figures (one compact table) and the raw figures as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.report import write_json
from bench.soak.checks.health import SUPERSEDED_SECONDS

__all__ = ["render", "write_json", "write_result"]

MB = 1_000_000


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:,.1f} MB"


def _s(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f} s"


def render(r: dict[str, Any]) -> str:
    """The table: one figure a line, then every violation (time from the start, check, what)."""
    rows: list[tuple[str, str]] = []
    p = r["params"]
    rows.append(("duration", f"{r['seconds']:.0f} s asked {p['seconds']:g}, seed {p['seed']}"))
    rows.append(
        (
            "setup",
            f"{p['apps']} apps every {p['interval']:g} s; ready after {_s(r['ready_seconds'])}; "
            f"teardown {_s(r.get('teardown_seconds'))}",
        )
    )
    rows.append(("polls", f"{r['polls']:,} (getconcurrentNumber requests the simulator got)"))
    s = r["stops"]
    rows.append(
        (
            "stops",
            f"{s['stop_intents']:,} stop intents ({s['by_policy']}), {s['sessions_stopped']:,} "
            f"sessions closed by sessionStop; {s['close_all_intents']} close-all intents, "
            f"{s['sessions_drained']:,} sessions drained",
        )
    )
    rows.append(("outcomes", ", ".join(f"{k} {v:,}" for k, v in sorted(s["outcomes"].items()))))
    lags = r["issue_lag"]
    rows.append(
        (
            "stop issue lag",
            f"data at least p50 {_s(lags['p50'])}, p99 {_s(lags['p99'])}, max {_s(lags['max'])} "
            f"old when its stop was sent; {lags['over_stale']} stops over 2 x interval",
        )
    )
    f = r["faults"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(f["by_kind"].items()))
    rows.append(("faults injected", f"{f['total']} ({kinds}); at most {f['max_overlap']} at once"))
    share = f["judged_app_seconds"] / f["app_seconds"] if f["app_seconds"] else 0.0
    rows.append(
        (
            "failing-data check",
            f"covered {f['judged_app_seconds']:.0f} app-seconds ({100 * share:.0f} % of the "
            "run): a stop planned then would be a violation",
        )
    )
    rl = r["reloads"]
    late = rl.get("superseded", 0)
    rows.append(
        (
            "reloads",
            f"{rl['good']} good, {rl['bad']} bad ({', '.join(rl['variants'])})"
            + (
                f"; {late} sent late and superseded within {SUPERSEDED_SECONDS:g} s, not judged"
                if late
                else ""
            ),
        )
    )
    sc = r["scrapes"]
    rows.append(
        (
            "scrapes",
            f"/metrics {sc['metrics']:,}, /status {sc['status']:,}; promtool checked "
            f"{sc['promtool_checked']} (skipped while busy {sc['promtool_skipped']}); failed "
            f"while restarting {sc['failed_expected']}",
        )
    )
    k = r["restart"]
    rows.append(
        (
            "restart",
            "none (run too short)"
            if k is None
            else f"SIGKILL at {_s(k['at'])}, listening again after {_s(k['listening_seconds'])}, "
            f"every app polled after {_s(k['ready_seconds'])}",
        )
    )
    for seg in r["rss"]["segments"]:
        fit = seg["fit"]
        slope = (
            "no fit"
            if fit is None
            else f"slope {fit['mb_per_10_minutes']:+.2f} MB / 10 min over {fit['seconds']:.0f} s"
        )
        rows.append(
            (
                f"RSS process {seg['index']}",
                f"start {_mb(seg['first_bytes'])}, end {_mb(seg['last_bytes'])}, max "
                f"{_mb(seg['max_bytes'])}; after {seg['warmup_seconds']:.0f} s warm-up {slope}",
            )
        )
    rows.append(("RSS verdict", r["rss"]["verdict"]))
    for name, size in sorted(r["files"]["max_sizes"].items()):
        rows.append(
            (f"file {name}", f"max {size:,} bytes, end {r['files']['end_sizes'].get(name, 0):,}")
        )
    rows.append(("file bounds", r["files"]["bounds"]))
    rec = r["recovery"]
    rows.append(
        (
            "recovery",
            f"worst {_s(rec['worst'])}, p50 {_s(rec['p50'])} over {rec['measured']} fault ends "
            f"(allowance {rec['allowance']:.1f} s; not measured: {rec['not_measured']})",
        )
    )
    c = r["cpu"]
    wall = c["wall_seconds"] or 1.0
    rows.append(
        (
            "CPU",
            f"daemon {c['daemon_seconds']:.0f} s ({c['daemon_seconds'] / wall:.2f} cores), "
            f"simulator {c['simulator_seconds']:.0f} s ({c['simulator_seconds'] / wall:.2f}), "
            f"soak {c['soak_seconds']:.0f} s ({c['soak_seconds'] / wall:.2f})",
        )
    )
    rows.append(("daemon exit", f"{r['exit_code']} on SIGTERM"))
    rows.append(("violations", str(len(r["violations"]))))
    width = max(len(label) for label, _ in rows) + 2
    lines = ["", "duixwatch soak"]
    lines += [f"  {label.ljust(width)}{value}" for label, value in rows]
    start = r["started_at"]
    for v in r["violations"][:50]:
        when = "end" if v["at"] is None else f"{v['at'] - start:7.1f} s"
        lines.append(f"  VIOLATION {when}  {v['check']}: {v['detail']}")
    if len(r["violations"]) > 50:
        lines.append(f"  … and {len(r['violations']) - 50} more (see --json)")
    lines.append("PASS" if not r["violations"] else "FAIL")
    return "\n".join(lines)


def write_result(result: dict[str, Any], path: Path) -> None:
    """The raw figures as strict JSON (see :func:`bench.report.write_json`)."""
    write_json(json.loads(json.dumps(result, default=str)), path)
