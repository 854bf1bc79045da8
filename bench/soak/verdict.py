"""The end of a soak run: everything it recorded (:class:`Recorded`) judged by
:mod:`bench.soak.checks` and turned into the figures :mod:`bench.soak.report` prints."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import quantile
from bench.soak import checks, config, observe
from duixwatch.policy import audit

__all__ = ["Recorded", "judge"]

#: Fit RSS after this share of each process's life (at least :data:`MIN_WARMUP_SECONDS`).
WARMUP_SHARE = 0.2
MIN_WARMUP_SECONDS = 30.0
#: The RSS bound is judged only on a fit over at least this long.
RSS_MIN_SECONDS = 600.0
RSS_LIMIT_MB_PER_10_MINUTES = 1.0
#: A stop written this long after a good reload was confirmed is judged against its threshold.
IN_FORCE_MARGIN_SECONDS = 0.5


@dataclass
class Recorded:
    """What one run saw (Unix times), from the start to the daemon's exit."""

    seconds_asked: float
    seed: int
    started_at: float
    t0: float  # the daemon ready, the chaos begins
    end: float  # the daemon stopped
    ready_seconds: float
    teardown_seconds: float
    apps: Mapping[str, str]  # name -> app id
    secrets: Mapping[str, bytes]
    allow: config.Allowances
    windows: Sequence[checks.Window]
    reloads: Sequence[checks.Reload]
    restart: dict[str, Any] | None
    excluded: Sequence[tuple[float, float]]
    scrapers: observe.Scrapers
    sampler: observe.Sampler
    logs: Sequence[Path]  # every daemon's stderr and stdout
    stopped: Sequence[Mapping[str, Any]]  # sessions the simulator closed by sessionStop
    drained: Sequence[Mapping[str, Any]]  # … by distroyCallSessionsByAppId
    received: Mapping[tuple[str, str], int]  # requests per (app id, endpoint)
    bounds: checks.FileBounds
    bounds_note: str
    cpu: dict[str, float]
    exit_code: int | None
    violations: list[checks.Violation]  # found while it ran
    work_dir: Path


def judge(rec: Recorded) -> dict[str, Any]:
    """Every end-of-run check, and the figures (a JSON-ready dict, see :mod:`.report`)."""
    tail = rec.sampler.audit
    intents = checks.parse_intents(tail.records)
    margins = checks.Margins(
        request_timeout=config.REQUEST_TIMEOUT_SECONDS,
        read_call_max=rec.allow.read_call_max,
        slack=config.SLACK_SECONDS,
    )
    scrapes = list(rec.scrapers.scrapes)
    v = list(rec.violations)
    v += checks.check_stops_have_intents(rec.stopped, rec.drained, intents, rec.received)
    v += checks.check_stops_on_failing_data(intents, rec.windows, margins)
    v += checks.check_reloads(rec.reloads, scrapes, deadline=rec.allow.reload_deadline)
    spans = checks.in_force_spans(
        rec.reloads,
        scrapes,
        initial=config.THRESHOLDS[0],
        start=rec.started_at,
        margin=IN_FORCE_MARGIN_SECONDS,
    )
    v += checks.check_thresholds(intents, config.AGE_POLICY, spans)
    recov, late = checks.recoveries(
        rec.windows,
        scrapes,
        rec.apps,
        allowance=rec.allow.recovery,
        excluded=rec.excluded,
        end=rec.end,
    )
    v += late
    v += checks.check_file_bounds(rec.sampler.max_sizes, rec.bounds, longest_line=tail.longest_line)
    v += _audit_integrity(tail.files())
    v += _secrets_in_files([*rec.logs, *tail.files()], rec.secrets)
    # rotated files deleted during the run were read while they existed: their lines too
    seen = b"\n".join([*(json.dumps(r).encode() for r in tail.records), *tail.unparsed])
    found = checks.find_secrets(seen, rec.secrets)
    if found:
        v.append(checks.Violation(None, "secret", f"audit lines read: {', '.join(found)}"))
    rss, rss_violations = _rss(rec.sampler.rss)
    v += rss_violations
    judged = checks.judged_seconds(
        rec.windows, rec.apps.values(), margins, start=rec.t0, end=rec.end
    )
    lags = checks.issue_lags(i for i in intents if i.action == "stop_session")
    by_policy = Counter(i.policy for i in intents if i.action == "stop_session")
    outcomes = Counter(str(r.get("outcome")) for r in tail.records if r.get("event") == "outcome")
    measured = [x.seconds for x in recov if x.seconds is not None]
    kinds = Counter(w.kind for w in rec.windows)
    wall = rec.end - rec.t0
    sc = rec.scrapers
    return {
        "params": {
            "seconds": rec.seconds_asked,
            "seed": rec.seed,
            "apps": config.APPS,
            "interval": config.POLL_INTERVAL_SECONDS,
        },
        "started_at": rec.started_at,
        "seconds": wall,
        "ready_seconds": rec.ready_seconds,
        "teardown_seconds": rec.teardown_seconds,
        "polls": sum(n for (_, ep), n in rec.received.items() if ep == "getconcurrentNumber"),
        "stops": {
            "stop_intents": sum(by_policy.values()),
            "by_policy": ", ".join(f"{k} {n}" for k, n in sorted(by_policy.items())),
            "sessions_stopped": len(rec.stopped),
            "close_all_intents": sum(1 for i in intents if i.action == "close_all"),
            "sessions_drained": len(rec.drained),
            "outcomes": dict(outcomes),
        },
        "issue_lag": {
            "p50": quantile(lags, 0.5) if lags else None,
            "p99": quantile(lags, 0.99) if lags else None,
            "max": max(lags) if lags else None,
            "over_stale": sum(1 for lag in lags if lag > 2 * config.POLL_INTERVAL_SECONDS),
        },
        "faults": {
            "total": sum(kinds.values()),
            "by_kind": dict(kinds),
            "max_overlap": _max_overlap(rec.windows),
            "judged_app_seconds": judged,
            "app_seconds": wall * len(rec.apps),
        },
        "reloads": {
            "good": sum(1 for r in rec.reloads if r.good),
            "bad": sum(1 for r in rec.reloads if not r.good),
            "variants": sorted({r.variant for r in rec.reloads if not r.good}),
            "superseded": len(checks.superseded(rec.reloads)),
        },
        "scrapes": {
            "metrics": sc.metrics_count,
            "status": sc.status_count,
            "promtool_checked": sc.promtool_checked,
            "promtool_skipped": sc.promtool_skipped,
            "failed_expected": sc.failed_expected,
        },
        "restart": rec.restart,
        "rss": rss,
        "files": {
            "max_sizes": dict(rec.sampler.max_sizes),
            "end_sizes": dict(rec.sampler.last_sizes),
            "bounds": rec.bounds_note,
            "audit_lines": len(tail.records),
            "unparsed_audit_lines": len(tail.unparsed),
        },
        "recovery": {
            "allowance": rec.allow.recovery,
            "measured": len(measured),
            "worst": max(measured) if measured else None,
            "p50": statistics.median(measured) if measured else None,
            "not_measured": dict(Counter(x.why for x in recov if x.seconds is None)),
        },
        "cpu": rec.cpu,
        "exit_code": rec.exit_code,
        "violations": [
            {"at": x.at, "check": x.check, "detail": checks.redact(x.detail, rec.secrets)}
            for x in sorted(v, key=lambda x: (x.at is None, x.at or 0.0))
        ],
        "work_dir": str(rec.work_dir),
    }


def _audit_integrity(files: Sequence[Path]) -> list[checks.Violation]:
    """The audit files read back whole: no corrupt line (one torn line is expected after the
    SIGKILL, no more)."""
    out: list[checks.Violation] = []
    torn = 0
    for path in files:
        read = audit.read_audit(path)
        torn += len(read.torn_lines)
        if read.bad_lines:
            detail = f"{path.name}: corrupt lines {read.bad_lines[:10]}"
            out.append(checks.Violation(None, "audit", detail))
    if torn > 1:
        out.append(checks.Violation(None, "audit", f"{torn} torn lines for one SIGKILL"))
    return out


def _secrets_in_files(
    paths: Sequence[Path], secrets: Mapping[str, bytes]
) -> list[checks.Violation]:
    """No secret in the daemon's stdout and stderr (every process) or the audit log."""
    out: list[checks.Violation] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        found = checks.find_secrets(data, secrets)
        if found:
            out.append(checks.Violation(None, "secret", f"{path.name}: {', '.join(found)}"))
    return out


def _rss(
    per_pid: Mapping[int, list[tuple[float, int]]],
) -> tuple[dict[str, Any], list[checks.Violation]]:
    """A fit per daemon process (in start order), judged on the longest one."""
    segments: list[dict[str, Any]] = []
    fits: list[checks.Fit] = []
    ordered = sorted(per_pid.items(), key=lambda item: item[1][0][0] if item[1] else 0.0)
    for index, (pid, samples) in enumerate(ordered):
        span = samples[-1][0] - samples[0][0] if samples else 0.0
        warmup = max(MIN_WARMUP_SECONDS, WARMUP_SHARE * span)
        fit = checks.fit_rss(samples, warmup_seconds=warmup)
        if fit is not None:
            fits.append(fit)
        segments.append(
            {
                "index": index + 1,
                "pid": pid,
                "samples": len(samples),
                "warmup_seconds": warmup,
                "first_bytes": samples[0][1] if samples else None,
                "last_bytes": samples[-1][1] if samples else None,
                "max_bytes": max((b for _, b in samples), default=None),
                "fit": None
                if fit is None
                else {
                    "mb_per_10_minutes": fit.mb_per_10_minutes,
                    "seconds": fit.seconds,
                    "samples": fit.samples,
                },
            }
        )
    longest = max(fits, key=lambda f: f.seconds, default=None)
    verdict, violations = checks.judge_rss(
        longest, limit_mb_per_10_minutes=RSS_LIMIT_MB_PER_10_MINUTES, min_seconds=RSS_MIN_SECONDS
    )
    return {"segments": segments, "verdict": verdict}, violations


def _max_overlap(windows: Sequence[checks.Window]) -> int:
    """The most faults possibly in force at one moment."""
    edges = sorted([(w.set_sent, 1) for w in windows] + [(w.clear_done, -1) for w in windows])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most
