"""Checks on what ``/metrics`` showed: every app back up after its faults, reloads taken or
refused whole, and the config in force named by every stop it made."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.soak.checks.core import READ_ENDPOINTS, Violation, Window
from bench.soak.checks.stops import Intent

__all__ = [
    "Recovery",
    "Reload",
    "Scrape",
    "check_reloads",
    "check_thresholds",
    "in_force_spans",
    "recoveries",
    "superseded",
]

# --------------------------------------------------------------------------- scrapes


@dataclass(frozen=True)
class Scrape:
    """One ``/metrics`` scrape: when it was sent and answered, and what it said.

    ``up`` maps app names to ``duix_up`` (absent: the series was not there); ``ok`` is
    false when the scrape failed (refused, timed out, not 200).
    """

    sent: float
    done: float
    ok: bool
    up: Mapping[str, float] = field(default_factory=dict)
    reload_ok: float | None = None
    reload_success_ts: float | None = None


@dataclass(frozen=True)
class Recovery:
    """After the faults on one app's reads ended at ``ended``: back to ``duix_up 1`` after
    ``seconds`` (an upper bound: the answer of the first scrape that showed it), or ``None``
    when it could not be measured (``why``)."""

    app: str
    ended: float
    seconds: float | None
    why: str = ""


def _episodes(windows: Iterable[Window], app_id: str) -> list[tuple[float, float]]:
    """The spans during which some fault may have touched this app's reads, merged."""
    spans = sorted(
        (w.set_sent, w.clear_done)
        for w in windows
        if w.app in (app_id, "*") and w.endpoint in (*READ_ENDPOINTS, "*")
    )
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def recoveries(
    windows: Sequence[Window],
    scrapes: Sequence[Scrape],
    apps: Mapping[str, str],
    *,
    allowance: float,
    excluded: Sequence[tuple[float, float]],
    end: float,
) -> tuple[list[Recovery], list[Violation]]:
    """Per app (``apps``: name → id) and per end of a span of faults on its reads: how long
    until a scrape showed ``duix_up 1``.

    Measured only when the next span of that app starts more than ``allowance`` later, no
    ``excluded`` interval (the daemon killed and restarting) overlaps [ended, ended +
    allowance], and the run goes on that long. A violation is a scrape SENT more than
    ``allowance`` after the end that still showed the app not up (so it was down at that
    moment for sure), before any scrape showed it up.
    """
    results: list[Recovery] = []
    out: list[Violation] = []
    ordered = sorted((s for s in scrapes if s.ok), key=lambda s: s.sent)
    for name, app_id in apps.items():
        spans = _episodes(windows, app_id)
        for index, (_, ended) in enumerate(spans):
            horizon = ended + allowance
            nxt = spans[index + 1][0] if index + 1 < len(spans) else math.inf
            if nxt <= horizon:
                results.append(Recovery(name, ended, None, "another fault began"))
                continue
            if any(a <= horizon and b >= ended for a, b in excluded):
                results.append(Recovery(name, ended, None, "daemon restarting"))
                continue
            if horizon > end:
                results.append(Recovery(name, ended, None, "run ended"))
                continue
            after = [s for s in ordered if ended <= s.sent < nxt]
            first_up = next((s for s in after if s.up.get(name) == 1.0), None)
            late_down = [
                s
                for s in after
                if s.sent > horizon and (first_up is None or s.sent < first_up.sent)
            ]
            if first_up is None and not late_down:
                results.append(Recovery(name, ended, None, "no scrape after it"))
                continue
            seconds = None if first_up is None else first_up.done - ended
            results.append(Recovery(name, ended, seconds))
            if late_down:
                out.append(
                    Violation(
                        late_down[0].sent,
                        "recovery",
                        f"{name} still not up {late_down[0].sent - ended:.1f} s after its "
                        f"faults ended (allowance {allowance:.1f} s)",
                    )
                )
    return results, out


@dataclass(frozen=True)
class Reload:
    """A SIGHUP the soak sent (Unix time), with a good or a bad file naming ``threshold``."""

    at: float
    good: bool
    variant: str
    threshold: int


#: The schedule keeps at least 3 s between two reloads; a reload the next one followed within
#: this many seconds was sent late by a busy soak, and no scrape could have seen it.
SUPERSEDED_SECONDS = 2.0


def superseded(reloads: Sequence[Reload]) -> list[Reload]:
    """The reloads another one followed within :data:`SUPERSEDED_SECONDS`: not judged."""
    return [r for r, nxt in itertools.pairwise(reloads) if nxt.at - r.at < SUPERSEDED_SECONDS]


def check_reloads(
    reloads: Sequence[Reload], scrapes: Sequence[Scrape], *, deadline: float
) -> list[Violation]:
    """Each bad reload shows ``duixwatch_config_last_reload_successful 0`` (the old config
    kept, the process alive: it answers the scrape) before the next reload; each good one shows
    ``1`` with a success timestamp at or after its signal, within ``deadline`` seconds and
    before the next reload. A :func:`superseded` reload is not judged (the next one is)."""
    out: list[Violation] = []
    ordered = sorted((s for s in scrapes if s.ok), key=lambda s: s.sent)
    for index, reload in enumerate(reloads):
        nxt = reloads[index + 1].at if index + 1 < len(reloads) else math.inf
        if nxt - reload.at < SUPERSEDED_SECONDS:
            continue  # superseded: the next one is judged
        until = min(nxt, reload.at + deadline)
        seen = [s for s in ordered if reload.at < s.sent < until]
        if reload.good:
            ok = any(
                s.reload_ok == 1.0
                and s.reload_success_ts is not None
                and s.reload_success_ts >= reload.at - 1e-3
                for s in seen
            )
            want = "1 with a new success time"
        else:
            ok = any(s.reload_ok == 0.0 for s in seen)
            want = "0"
        if not ok:
            out.append(
                Violation(
                    reload.at,
                    "reload",
                    f"{'good' if reload.good else 'bad'} reload ({reload.variant}): "
                    f"duixwatch_config_last_reload_successful never showed {want} in "
                    f"{until - reload.at:.1f} s ({len(seen)} scrapes)",
                )
            )
    return out


def in_force_spans(
    reloads: Sequence[Reload],
    scrapes: Sequence[Scrape],
    *,
    initial: int,
    start: float,
    margin: float,
) -> list[tuple[float, float, float]]:
    """The (from, to, threshold) spans in which one age threshold was surely in force.

    ``initial`` is in force from ``start`` until the first good reload is signalled; each
    good reload's value from ``margin`` seconds after the first scrape that confirmed it
    (``1`` with a success time at or after the signal: a stop already past its last check
    when the reload landed may still be written just after) until the next good reload is
    signalled. Bad reloads end no span: they must change nothing.
    """
    goods = [r for r in reloads if r.good]
    ordered = sorted((s for s in scrapes if s.ok), key=lambda s: s.sent)
    spans: list[tuple[float, float, float]] = []
    first_end = goods[0].at if goods else math.inf
    spans.append((start, first_end, float(initial)))
    for index, reload in enumerate(goods):
        confirmed = next(
            (
                s.done
                for s in ordered
                if s.sent > reload.at
                and s.reload_ok == 1.0
                and s.reload_success_ts is not None
                and s.reload_success_ts >= reload.at - 1e-3
            ),
            None,
        )
        if confirmed is None:
            continue  # never confirmed: check_reloads says so
        until = goods[index + 1].at if index + 1 < len(goods) else math.inf
        if confirmed + margin < until:
            spans.append((confirmed + margin, until, float(reload.threshold)))
    return spans


_THRESHOLD = re.compile(r"> (\d+(?:\.\d+)?)s$")


def check_thresholds(
    intents: Iterable[Intent],
    policy: str,
    in_force: Sequence[tuple[float, float, float]],
) -> list[Violation]:
    """Every intent of the age ``policy`` names the threshold in force when it was written.

    ``in_force``: (from, to, threshold) spans, Unix times, during which one value was surely
    in force (between a good reload's confirmation, plus a margin, and the next good reload's
    signal). A bad reload in a span must change nothing: its file names another threshold.
    """
    out: list[Violation] = []
    for i in intents:
        if i.policy != policy or i.reason is None:
            continue
        match = _THRESHOLD.search(i.reason)
        if match is None:
            out.append(Violation(i.ts, "config in force", f"unexpected reason {i.reason!r}"))
            continue
        named = float(match.group(1))
        for start, stop, threshold in in_force:
            if start <= i.ts <= stop and named != threshold:
                out.append(
                    Violation(
                        i.ts,
                        "config in force",
                        f"{policy} acted with threshold {named:g}s while {threshold:g}s was "
                        f"in force ({i.app}, session {i.session_id})",
                    )
                )
    return out
