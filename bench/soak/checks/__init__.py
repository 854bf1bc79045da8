"""The soak's checks, as pure functions of what it recorded (no I/O, no clock).

Each takes plain records — fault windows, scrapes, audit records, the simulator's session
record, memory samples — and returns what it measured and the :class:`Violation` list;
:mod:`bench.soak.main` records, these judge. Times are Unix seconds (wall clock): the audit
log, the simulator and the soak all read the same machine's clock.

* :mod:`.core`: violations, fault windows, :func:`surely_failing`;
* :mod:`.stops`: stops recorded before they were made, none planned on failing data;
* :mod:`.health`: recovery to ``duix_up 1``, reloads, the config in force;
* :mod:`.resources`: secrets, memory, files.
"""

from bench.soak.checks.core import (
    FAILING_KINDS,
    MB,
    READ_ENDPOINTS,
    Violation,
    Window,
    surely_failing,
)
from bench.soak.checks.health import (
    Recovery,
    Reload,
    Scrape,
    check_reloads,
    check_thresholds,
    in_force_spans,
    recoveries,
    superseded,
)
from bench.soak.checks.resources import (
    FileBounds,
    Fit,
    check_file_bounds,
    find_secrets,
    fit_rss,
    judge_rss,
    redact,
)
from bench.soak.checks.stops import (
    Intent,
    Margins,
    check_stops_have_intents,
    check_stops_on_failing_data,
    issue_lags,
    judged_seconds,
    parse_intents,
    plan_second,
)

__all__ = [
    "FAILING_KINDS",
    "MB",
    "READ_ENDPOINTS",
    "FileBounds",
    "Fit",
    "Intent",
    "Margins",
    "Recovery",
    "Reload",
    "Scrape",
    "Violation",
    "Window",
    "check_file_bounds",
    "check_reloads",
    "check_stops_have_intents",
    "check_stops_on_failing_data",
    "check_thresholds",
    "find_secrets",
    "fit_rss",
    "in_force_spans",
    "issue_lags",
    "judge_rss",
    "judged_seconds",
    "parse_intents",
    "plan_second",
    "recoveries",
    "redact",
    "superseded",
    "surely_failing",
]
