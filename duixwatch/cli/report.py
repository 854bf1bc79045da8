"""``duixwatch report``: what sessions cost, from the daemon's session history.

Reads the config (``state.dir``, the apps, the ``session_age_over_seconds`` policies) and the
history of the sessions that ended in the window (read-only: the daemon may be running), and
prints per APP the numbers, a histogram of durations and the backtest
(:mod:`duixwatch.export.report` computes and renders them all). Exit 0; 2 on a usage or config
error (a bad ``--since``/``--threshold``, an ``--app`` that is not configured, an ``--html``
file that cannot be written).
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from duixwatch.cli import output, runtime
from duixwatch.config import AppConfig, load_config
from duixwatch.core.clock import SystemClock
from duixwatch.export import report, report_page
from duixwatch.watch import state

__all__ = ["add_commands"]


def _parsed_since(text: str) -> float:
    try:
        return report.parse_duration(text)
    except ValueError as exc:
        raise runtime.UsageError(f"--since: {exc}") from None


def _parsed_thresholds(text: str | None) -> list[report.Threshold]:
    if text is None:
        return []
    try:
        return report.parse_thresholds(text)
    except ValueError as exc:
        raise runtime.UsageError(f"--threshold: {exc}") from None


def _cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    since_seconds = _parsed_since(args.since)
    given = _parsed_thresholds(args.threshold)
    config = load_config(args.config)
    apps: tuple[AppConfig, ...] = config.apps
    if args.app is not None:
        apps = tuple(a for a in config.apps if a.name == args.app)
        if not apps:
            names = ", ".join(a.name for a in config.apps)
            raise runtime.UsageError(
                f"--app {args.app!r} is not a configured app (configured: {names})"
            )
    until = SystemClock().now()
    try:
        since = until - timedelta(seconds=since_seconds)
    except OverflowError:
        raise runtime.UsageError(f"--since: {args.since!r} reaches before year 1") from None
    by_app: dict[str, list[state.HistoryRow]] = {}
    for row in state.read_history(config.state.dir, since=since, app=args.app):
        by_app.setdefault(row.app, []).append(row)
    reports = [
        report.summarize(
            a.name,
            by_app.pop(a.name, []),
            [*report.policy_thresholds(config.policies, a), *given],
            app_id=a.app_id,
        )
        for a in apps
    ]
    # The history of APPs no longer configured is still reported, with the --thresholds only.
    reports += [report.summarize(name, rows, given) for name, rows in sorted(by_app.items())]
    result = report.Report(since=since, until=until, apps=tuple(reports))
    if args.html is not None:
        try:
            Path(args.html).write_text(report_page.render_html(result), encoding="utf-8")
        except OSError as exc:
            raise runtime.UsageError(f"--html: cannot write {args.html}: {exc}") from None
    if args.output == "json":
        output.print_json(report.report_json(result), out)
    else:
        out.write(report.render_text(result))
        if args.html is not None:
            out.write(f"\nThe chart as a web page: {args.html}\n")
    return runtime.EXIT_OK


def add_commands(command: runtime.AddCommand) -> None:
    """Add ``report`` to the ``duixwatch`` grammar."""
    p = command(
        "report",
        "what sessions cost: per app sessions, minutes, durations, busiest hour and a backtest "
        "of session-age thresholds, from the state's history",
    )
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="config file (YAML)")
    p.add_argument(
        "--since",
        default="7d",
        metavar="DURATION",
        help="the sessions that ended in this last while: 7d, 12h, 30m, 90s (default 7d)",
    )
    p.add_argument("--app", metavar="NAME", help="only this configured app (default: every app)")
    p.add_argument(
        "--threshold",
        metavar="LIST",
        help="also backtest these session-age thresholds, e.g. 30m,45m,1h (the "
        "session_age_over_seconds policies that select an app are always included)",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument(
        "--html", metavar="FILE", help="also write a self-contained HTML page with the charts"
    )
    p.set_defaults(run=_cmd_report)
