"""The soak's checks, as pure functions of what it recorded (no I/O, no clock).

Each takes plain records — fault windows, scrapes, audit records, the simulator's session
record, memory samples — and returns what it measured and the :class:`Violation` list;
:mod:`bench.soak.main` records, these judge. Times are Unix seconds (wall clock): the audit
log, the simulator and the soak all read the same machine's clock.

How sure each check is, in one place (the docstrings say why):

* a fault window is *surely* in force from the moment its ``POST`` was answered until its
  ``DELETE`` was sent, and *possibly* from the ``POST`` being sent until the ``DELETE`` was
  answered; a check that flags the daemon uses the sure interval, a check that excuses it the
  possible one, so neither an early nor a late control call can make a false violation;
* a plan's time is known to the second from its cycle id (``YYYYMMDDTHHMMSSZ-xxxxxx``, the
  UTC second of the evaluation, truncated) and is never after its intent's ``ts``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "FAILING_KINDS",
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
    "surely_failing",
]

#: The fault kinds that make a read fail (latency and jitter only slow it: the soak keeps
#: latency + jitter below the request timeout, see :mod:`bench.soak.chaos`).
FAILING_KINDS = frozenset({"status", "retry_after", "code", "malformed", "hang", "reject_token"})
READ_ENDPOINTS = ("getconcurrentNumber", "getconcurrentList")
MB = 1_000_000


@dataclass(frozen=True)
class Violation:
    """One broken promise: when (Unix time, or None for an end-of-run check), which check, what."""

    at: float | None
    check: str
    detail: str


# --------------------------------------------------------------------------- fault windows


@dataclass(frozen=True)
class Window:
    """One fault installed on the simulator, as the soak saw it (Unix times).

    ``app`` is an app id or ``"*"``; ``endpoint`` an endpoint or ``"*"``. ``set_done`` is
    ``None`` when the ``POST`` got no answer (then it may or may not be in force) and for a
    fault with ``times`` (it may have run out at any moment); ``clear_done`` is ``inf`` when
    the ``DELETE`` got no answer.
    """

    kind: str
    app: str
    endpoint: str
    set_sent: float
    set_done: float | None
    clear_sent: float
    clear_done: float
    failing: bool

    def surely(self, t: float) -> bool:
        return self.set_done is not None and self.set_done <= t <= self.clear_sent

    def possibly(self, t: float) -> bool:
        return self.set_sent <= t <= self.clear_done


def _candidates(app_id: str, endpoint: str) -> list[tuple[str, str]]:
    """The fault keys a request matches, most specific first (``duixwatch.sim.faults``)."""
    return [(app_id, endpoint), (app_id, "*"), ("*", endpoint), ("*", "*")]


def _failing_at(
    t: float, keys: Sequence[tuple[str, str]], by_key: Mapping[Any, list[Window]]
) -> bool:
    """Whether a request for the first of ``keys`` at ``t`` surely met a failing fault.

    The simulator applies the most specific installed fault. The first key with a fault that
    may be installed decides: if that fault is surely installed, its kind decides; if it only
    may be, a request met either it or the next key's, so both must be failing.
    """
    for index, key in enumerate(keys):
        maybe = [w for w in by_key.get(key, ()) if w.possibly(t)]
        if not maybe:
            continue
        if not all(w.failing for w in maybe):
            return False
        if any(w.surely(t) for w in maybe):
            return True
        return _failing_at(t, keys[index + 1 :], by_key)
    return False


def surely_failing(
    windows: Iterable[Window], app_id: str, endpoint: str, start: float, end: float
) -> bool:
    """Whether every request for ``endpoint`` of ``app_id`` during [start, end] met a failing
    fault, whatever the exact moments the simulator applied the control calls.

    The answer can only change at a window's edge, so it is evaluated at both ends, at every
    edge inside, and between each two of those points.
    """
    keys = _candidates(app_id, endpoint)
    by_key: dict[tuple[str, str], list[Window]] = {}
    for w in windows:
        if (w.app, w.endpoint) in keys:
            by_key.setdefault((w.app, w.endpoint), []).append(w)
    edges = {start, end}
    for ws in by_key.values():
        for w in ws:
            for t in (w.set_sent, w.set_done, w.clear_sent, w.clear_done):
                if t is not None and start < t < end:
                    edges.add(t)
    points = sorted(edges)
    probes = [*points, *((a + b) / 2 for a, b in itertools.pairwise(points))]
    return all(_failing_at(t, keys, by_key) for t in probes)


# --------------------------------------------------------------------------- audit intents


@dataclass(frozen=True)
class Intent:
    """One ``intent`` line of the audit log."""

    ts: float
    cycle: str
    policy: str
    app: str
    app_id: str
    action: str
    session_id: str | None
    reason: str | None


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def parse_intents(records: Iterable[Mapping[str, Any]]) -> list[Intent]:
    """The intent lines among audit records, oldest first."""
    out = [
        Intent(
            ts=_ts(r["ts"]),
            cycle=str(r["cycle"]),
            policy=str(r["policy"]),
            app=str(r["app"]),
            app_id=str(r["app_id"]),
            action=str(r["action"]),
            session_id=r.get("session_id"),
            reason=r.get("reason"),
        )
        for r in records
        if r.get("event") == "intent"
    ]
    return sorted(out, key=lambda i: i.ts)


def plan_second(cycle: str) -> float:
    """The Unix second a cycle's plan was made in (its id starts with it, truncated)."""
    return datetime.strptime(cycle[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Margins:
    """How far before its plan a successful poll may have read each endpoint (seconds).

    The list is read last: its successful attempt ran within one request timeout before the
    plan, plus the processing between the answer and the evaluation (``slack``). The number
    is read before the list, so its answer may be older by a whole list call (every attempt
    and backoff of it).
    """

    request_timeout: float
    read_call_max: float
    slack: float

    def before_plan(self, endpoint: str) -> float:
        base = self.request_timeout + self.slack
        return base + self.read_call_max if endpoint == "getconcurrentNumber" else base


def check_stops_on_failing_data(
    intents: Iterable[Intent], windows: Sequence[Window], margins: Margins
) -> list[Violation]:
    """Stops planned on a poll that cannot have succeeded.

    A plan made at ``P`` comes from a poll whose successful read of ``endpoint`` ran within
    ``[P - margins.before_plan(endpoint), P]``; ``P`` lies in [cycle second, min(second + 1,
    intent ts)]. If every request for that endpoint of that app during the widest such range
    met a failing fault, the poll failed, and the daemon must not have acted on it.
    """
    out: list[Violation] = []
    for intent in intents:
        second = plan_second(intent.cycle)
        latest = min(second + 1.0, intent.ts)
        for endpoint in READ_ENDPOINTS:
            start = second - margins.before_plan(endpoint)
            if surely_failing(windows, intent.app_id, endpoint, start, latest):
                out.append(
                    Violation(
                        intent.ts,
                        "stop on failing data",
                        f"{intent.action} {intent.session_id or ''} of {intent.app} "
                        f"(policy {intent.policy}, cycle {intent.cycle}) planned while every "
                        f"{endpoint} request failed from {start:.2f} to {latest:.2f}",
                    )
                )
                break
    return out


def judged_seconds(
    windows: Sequence[Window],
    apps: Iterable[str],
    margins: Margins,
    *,
    start: float,
    end: float,
    step: float = 1.0,
) -> float:
    """How much app-time the failing-data check covered: the seconds (summed over ``apps``,
    app ids, sampled every ``step``) at which a stop planned would have been flagged. Short
    faults cover nothing (a poll begun before one may have read good data)."""
    total = 0.0
    for app_id in apps:
        mine = [w for w in windows if w.app in (app_id, "*")]
        if not mine:
            continue
        for k in range(int((end - start) / step) + 1):
            second = start + k * step
            if any(
                surely_failing(mine, app_id, ep, second - margins.before_plan(ep), second + 1.0)
                for ep in READ_ENDPOINTS
            ):
                total += step
    return total


def issue_lags(intents: Iterable[Intent]) -> list[float]:
    """Per intent, a lower bound of how old its plan's data was when the call was made:
    ``ts - (cycle second + 1)`` (the data was read before the plan)."""
    return [i.ts - (plan_second(i.cycle) + 1.0) for i in intents]


def check_stops_have_intents(
    stopped: Iterable[Mapping[str, Any]],
    drained: Iterable[Mapping[str, Any]],
    intents: Sequence[Intent],
    requests: Mapping[tuple[str, str], int],
) -> list[Violation]:
    """Every call that reached the simulator was recorded first (design.md §8 rule 7).

    * each session the simulator closed by ``sessionStop`` has an ``intent`` for that session
      id and app id, written no later than it closed;
    * each closed by ``distroyCallSessionsByAppId`` has a ``close_all`` intent of its app,
      no later than it closed;
    * per app, the simulator received at most twice as many of each call as there are intents
      (a call is sent once more, with a fresh token, after an auth rejection — the
      ``reject_token`` fault — and never otherwise: writes are not retried).
    """
    out: list[Violation] = []
    stops: dict[tuple[str, str | None], list[float]] = {}
    drains: dict[str, list[float]] = {}
    for i in intents:
        if i.action == "stop_session":
            stops.setdefault((i.app_id, i.session_id), []).append(i.ts)
        elif i.action == "close_all":
            drains.setdefault(i.app_id, []).append(i.ts)
    for s in stopped:
        closed = _iso(s["closed_at"])
        found = stops.get((str(s["app_id"]), str(s["session_id"])), [])
        if not any(ts <= closed + 1e-3 for ts in found):
            what = "no intent" if not found else "its intent was written after it closed"
            out.append(
                Violation(
                    closed,
                    "stop without intent",
                    f"session {s['session_id']} of app {s['app_id']} closed by sessionStop: {what}",
                )
            )
    for s in drained:
        closed = _iso(s["closed_at"])
        if not any(ts <= closed + 1e-3 for ts in drains.get(str(s["app_id"]), [])):
            out.append(
                Violation(
                    closed,
                    "close-all without intent",
                    f"session {s['session_id']} of app {s['app_id']} closed by "
                    "distroyCallSessionsByAppId with no close_all intent before it",
                )
            )
    per_app: dict[tuple[str, str], int] = {}
    for (app_id, _), ts_list in stops.items():
        per_app[(app_id, "sessionStop")] = per_app.get((app_id, "sessionStop"), 0) + len(ts_list)
    for app_id, ts_list in drains.items():
        per_app[(app_id, "distroyCallSessionsByAppId")] = len(ts_list)
    for (app_id, endpoint), received in sorted(requests.items()):
        if endpoint not in ("sessionStop", "distroyCallSessionsByAppId"):
            continue
        recorded = per_app.get((app_id, endpoint), 0)
        if received > 2 * recorded:
            out.append(
                Violation(
                    None,
                    "stop without intent",
                    f"app {app_id or '(none)'}: the simulator received {received} {endpoint} "
                    f"requests for {recorded} intents (at most 2 per intent)",
                )
            )
    return out


def _iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


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


def check_reloads(
    reloads: Sequence[Reload], scrapes: Sequence[Scrape], *, deadline: float
) -> list[Violation]:
    """Each bad reload shows ``duixwatch_config_last_reload_successful 0`` (the old config
    kept, the process alive: it answers the scrape) before the next reload; each good one shows
    ``1`` with a success timestamp at or after its signal, within ``deadline`` seconds and
    before the next reload."""
    out: list[Violation] = []
    ordered = sorted((s for s in scrapes if s.ok), key=lambda s: s.sent)
    for index, reload in enumerate(reloads):
        nxt = reloads[index + 1].at if index + 1 < len(reloads) else math.inf
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


# --------------------------------------------------------------------------- secrets


_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


def find_secrets(data: bytes, secrets: Mapping[str, bytes]) -> list[str]:
    """What in ``data`` is a secret: the names of the ``secrets`` it contains (never their
    values) and one entry per JWT-shaped string (a token: no output may carry one)."""
    found = [name for name, value in secrets.items() if value and value in data]
    found += [f"a JWT at byte {m.start()}" for m in _JWT.finditer(data)]
    return found


def redact(text: str, secrets: Mapping[str, bytes]) -> str:
    """``text`` with every secret and JWT-shaped string replaced by its name, for printing
    (a violation may quote the very log line that leaked a key)."""
    for name, value in sorted(secrets.items(), key=lambda kv: -len(kv[1])):
        if value:
            text = text.replace(value.decode(errors="replace"), f"[{name}]")
    return _JWT.sub(b"[a JWT]", text.encode(errors="replace")).decode(errors="replace")


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Fit:
    """A least-squares line through memory samples: slope and the span it was fitted on."""

    slope_bytes_per_second: float
    seconds: float
    samples: int
    first_bytes: int
    last_bytes: int

    @property
    def mb_per_10_minutes(self) -> float:
        return self.slope_bytes_per_second * 600 / MB


def fit_rss(samples: Sequence[tuple[float, int]], *, warmup_seconds: float) -> Fit | None:
    """The slope of RSS over time after the first ``warmup_seconds`` of ``samples`` (one
    process's (time, bytes), in time order); ``None`` with fewer than 3 samples left."""
    if not samples:
        return None
    start = samples[0][0] + warmup_seconds
    kept = [(t, b) for t, b in samples if t >= start]
    if len(kept) < 3:
        return None
    n = len(kept)
    mean_t = sum(t for t, _ in kept) / n
    mean_b = sum(b for _, b in kept) / n
    var = sum((t - mean_t) ** 2 for t, _ in kept)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (b - mean_b) for t, b in kept)
    return Fit(cov / var, kept[-1][0] - kept[0][0], n, kept[0][1], kept[-1][1])


def judge_rss(
    fit: Fit | None, *, limit_mb_per_10_minutes: float, min_seconds: float
) -> tuple[str, list[Violation]]:
    """The verdict on a fit: judged only over at least ``min_seconds`` (a shorter window's
    slope is mostly noise: a garbage collection or one large scrape moves it by megabytes)."""
    if fit is None:
        return "not measured (too few samples after the warm-up)", []
    slope = fit.mb_per_10_minutes
    if fit.seconds < min_seconds:
        return (
            f"not judged: fitted on {fit.seconds:.0f} s, the bound is judged on >= "
            f"{min_seconds:.0f} s",
            [],
        )
    if slope >= limit_mb_per_10_minutes:
        return f"FAIL (>= {limit_mb_per_10_minutes:g} MB / 10 min)", [
            Violation(
                None,
                "rss slope",
                f"RSS grew {slope:.2f} MB / 10 min over {fit.seconds:.0f} s after the warm-up "
                f"(bound {limit_mb_per_10_minutes:g})",
            )
        ]
    return f"ok (< {limit_mb_per_10_minutes:g} MB / 10 min)", []


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileBounds:
    """The bounds the daemon was configured with (``None``: not configured / not supported)."""

    audit_max_bytes: int | None = None
    audit_keep: int | None = None


_ROTATED = re.compile(r"^audit\.jsonl\.(\d+)$")


def check_file_bounds(
    sizes: Mapping[str, int], bounds: FileBounds, *, longest_line: int
) -> list[Violation]:
    """``sizes``: the largest size seen per file name of ``state.dir``. Each audit file stays
    within ``audit_max_bytes`` plus one line (a line is never split), and there are at most
    ``audit_keep`` rotated files."""
    out: list[Violation] = []
    if bounds.audit_max_bytes is not None:
        limit = bounds.audit_max_bytes + longest_line
        for name, size in sorted(sizes.items()):
            if (name == "audit.jsonl" or _ROTATED.match(name)) and size > limit:
                out.append(
                    Violation(
                        None,
                        "file size",
                        f"{name} reached {size:,} bytes: over state.audit_max_bytes "
                        f"{bounds.audit_max_bytes:,} + one line ({longest_line:,})",
                    )
                )
    if bounds.audit_keep is not None:
        rotated = sorted(name for name in sizes if _ROTATED.match(name))
        numbers = [int(m.group(1)) for name in rotated if (m := _ROTATED.match(name))]
        if len(rotated) > bounds.audit_keep or any(n > bounds.audit_keep for n in numbers):
            out.append(
                Violation(
                    None,
                    "file size",
                    f"{len(rotated)} rotated audit files ({', '.join(rotated)}): "
                    f"state.audit_keep is {bounds.audit_keep}",
                )
            )
    return out
