"""The chaos schedule: which fault, reload and kill happens when, drawn from the seed alone.

:func:`build` is pure (a seed and the run's length in, a :class:`Schedule` out), so a failing
run can be replayed with ``SOAK_SEED`` and its schedule tested without processes:

* **faults** come in episodes, an exponential gap apart (mean :data:`MEAN_GAP_SECONDS`): an
  APP that has been quiet gets one to three faults on distinct endpoints, overlapping, each
  lasting seconds (some half a minute, :data:`LONG_SHARE`); episodes of different APPs overlap;
  rarely (:data:`ALL_APPS_SHARE`) one short fault hits every APP (``"*"``). Kinds come in
  rounds: every kind of :data:`KINDS` once per round, in a random order. One fault in five has
  ``times`` (it wears off after that many requests). One fault key (app, endpoint) carries
  one fault at a time, so the soak always knows which fault a request met, and after each
  episode its APP stays quiet for :attr:`Schedule.quiet_tail` seconds, so its recovery can be
  measured;
* **reloads** alternate a good edit (the age threshold flips between two values) and a bad file
  (each of :data:`BAD_VARIANTS` in turn), the bad one put right by the next good one a few
  seconds later, so the file on disk is bad only briefly;
* **one SIGKILL** in the middle; no reload comes within :data:`KILL_CLEARANCE_SECONDS` before
  it or twice that after it, so the file is good when the restarted daemon reads it.

Faults stop :attr:`Schedule.quiet_tail` seconds before the end so the last recoveries can be
measured.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BAD_VARIANTS",
    "ENDPOINT_WEIGHTS",
    "KINDS",
    "FaultPlan",
    "ReloadPlan",
    "Schedule",
    "build",
]

#: Every fault kind of :class:`duixwatch.sim.Fault`.
KINDS = ("latency", "jitter", "status", "retry_after", "code", "malformed", "hang", "reject_token")
#: Where faults go, and how often (reads most: they decide polls and recoveries).
ENDPOINT_WEIGHTS: dict[str, int] = {
    "getconcurrentNumber": 3,
    "getconcurrentList": 3,
    "sessionStop": 2,
    "distroyCallSessionsByAppId": 1,
    "*": 1,
}
#: The bad files, in turn (see :mod:`bench.soak.config`).
BAD_VARIANTS = ("yaml_syntax_at_app_key", "unknown_key", "wrong_type", "close_all_wrong_app")
MEAN_GAP_SECONDS = 3.0
#: Share of faults on every app at once (they are shorter: they take every app down).
ALL_APPS_SHARE = 0.05
TIMES_SHARE = 0.2
#: Share of faults (on one app) that last 15-30 s rather than 2-8 s: the short ones overlap
#: and end often (recoveries to measure), the long ones outlast the margin of the check that
#: no stop is planned on failing data (a poll begun before a fault may have read good data).
LONG_SHARE = 0.3
#: Envelope codes a ``code`` fault answers: server errors (retried), quota, in use, not found.
CODES = ("-1", "40002", "50004", "50005", "50009", "1009", "50007", "50003", "2002")
#: The longest Retry-After a ``retry_after`` fault asks for (the recovery allowance uses it).
MAX_RETRY_AFTER_SECONDS = 3
#: Latency + jitter stay below this (the soak's request timeout is above it: slow, not failed).
MAX_DELAY_SECONDS = 1.4
#: Seconds around the kill with no reload (the restart must read a good file, settle, listen).
KILL_CLEARANCE_SECONDS = 8.0


@dataclass(frozen=True)
class FaultPlan:
    """One fault: installed at ``at`` (seconds from the start), cleared ``seconds`` later."""

    at: float
    seconds: float
    kind: str
    app: str  # an app name, or "*"
    endpoint: str  # an endpoint, or "*"
    body: dict[str, Any]  # the POST /_sim/faults body (app and endpoint included)

    @property
    def key(self) -> tuple[str, str]:
        return (self.app, self.endpoint)


@dataclass(frozen=True)
class ReloadPlan:
    """A SIGHUP at ``at``: a good file with age threshold ``threshold``, or a bad one."""

    at: float
    good: bool
    variant: str
    threshold: int


@dataclass(frozen=True)
class Schedule:
    faults: tuple[FaultPlan, ...]
    reloads: tuple[ReloadPlan, ...]
    kill_at: float | None
    quiet_tail: float


def _body(rng: random.Random, kind: str, app: str, endpoint: str) -> dict[str, Any]:
    body: dict[str, Any] = {"app": app, "endpoint": endpoint}
    if kind == "latency":
        body["latency_seconds"] = round(rng.uniform(0.2, MAX_DELAY_SECONDS - 0.2), 2)
    elif kind == "jitter":
        body["latency_seconds"] = 0.1
        body["jitter_seconds"] = round(rng.uniform(0.2, MAX_DELAY_SECONDS - 0.2), 2)
    elif kind == "status":
        body["status"] = rng.choice((500, 502, 503, 504))
    elif kind == "retry_after":
        body["status"] = 429
        body["retry_after_seconds"] = rng.randint(1, MAX_RETRY_AFTER_SECONDS)
    elif kind == "code":
        body["code"] = rng.choice(CODES)
    elif kind == "malformed":
        body["malformed"] = True
    elif kind == "hang":
        body["hang"] = True
    elif kind == "reject_token":
        body["reject_token"] = True
    else:  # pragma: no cover - KINDS is the list above
        raise ValueError(f"unknown fault kind {kind!r}")
    if kind not in ("latency", "jitter") and rng.random() < TIMES_SHARE:
        body["times"] = rng.randint(1, 5)
    return body


def _kind_source(rng: random.Random) -> Callable[[], str]:
    """Kinds in rounds: each round every kind once, in a random order."""
    left: list[str] = []

    def take() -> str:
        if not left:
            left.extend(rng.sample(KINDS, len(KINDS)))
        return left.pop()

    return take


def _endpoints(rng: random.Random, count: int) -> list[str]:
    """``count`` distinct endpoints, drawn by :data:`ENDPOINT_WEIGHTS`."""
    chosen: list[str] = []
    for _ in range(100):
        if len(chosen) == count:
            break
        pick = rng.choices(list(ENDPOINT_WEIGHTS), list(ENDPOINT_WEIGHTS.values()))[0]
        if pick not in chosen:
            chosen.append(pick)
    return chosen


def _faults(
    rng: random.Random, apps: list[str], start: float, end: float, *, quiet_seconds: float
) -> tuple[FaultPlan, ...]:
    """Episodes: every gap, one APP that has been quiet for ``quiet_seconds`` gets one to three
    faults on distinct endpoints, overlapping; or (rarely) every APP gets one short fault.
    Episodes of different APPs overlap; an APP's own episodes never do, and after each it
    stays quiet long enough for its recovery to be measured."""
    kind = _kind_source(rng)
    quiet_from = dict.fromkeys(apps, start)
    wildcard_free = start
    out: list[FaultPlan] = []
    t = start
    for _ in range(100_000):  # bounded: t moves forward every turn
        t += rng.expovariate(1.0 / MEAN_GAP_SECONDS)
        if t >= end:
            break
        if rng.random() < ALL_APPS_SHARE:
            if t < wildcard_free:
                continue
            (endpoint,) = _endpoints(rng, 1)
            k = kind()
            seconds = min(rng.uniform(1.0, 4.0), end - t)
            wildcard_free = t + seconds + 1.0
            out.append(FaultPlan(t, seconds, k, "*", endpoint, _body(rng, k, "*", endpoint)))
            continue
        ready = [a for a in apps if quiet_from[a] <= t]
        if not ready:
            continue
        app = rng.choice(ready)
        finish = t
        at = t
        for endpoint in _endpoints(rng, rng.choice((1, 1, 2, 3))):
            long = rng.random() < LONG_SHARE
            seconds = min(rng.uniform(15.0, 30.0) if long else rng.uniform(2.0, 8.0), end - at)
            if seconds < 0.5:
                break
            k = kind()
            out.append(FaultPlan(at, seconds, k, app, endpoint, _body(rng, k, app, endpoint)))
            finish = max(finish, at + seconds)
            at += rng.uniform(0.5, 4.0)
        quiet_from[app] = finish + 1.0 + quiet_seconds
    return tuple(sorted(out, key=lambda f: f.at))


def _reloads(
    rng: random.Random,
    start: float,
    end: float,
    thresholds: tuple[int, int],
    forbidden: tuple[float, float] | None,
) -> list[ReloadPlan]:
    """Good, bad, good (the fix), good, bad, … none inside ``forbidden`` (the kill)."""
    period = min(60.0, max(10.0, (end - start) / 10))
    out: list[ReloadPlan] = []
    current = 0  # index into thresholds of the value in force
    bad = 0
    t = start + period / 2
    for _ in range(10_000):
        if forbidden is not None and forbidden[0] <= t + period / 2 + 6.0 and t <= forbidden[1]:
            t = max(t, forbidden[1])  # this good-bad-fix cycle would reach into the kill
        if t >= end:
            break
        current = 1 - current
        out.append(ReloadPlan(t, True, f"threshold {thresholds[current]}", thresholds[current]))
        t_bad = t + period / 2
        fix = t_bad + rng.uniform(3.0, 6.0)
        if fix >= end or (forbidden is not None and forbidden[0] <= fix and t_bad <= forbidden[1]):
            t = t_bad
            continue
        variant = BAD_VARIANTS[bad % len(BAD_VARIANTS)]
        bad += 1
        # A bad file names the other threshold: if the daemon took any of it, it would show.
        out.append(ReloadPlan(t_bad, False, variant, thresholds[1 - current]))
        current = 1 - current
        out.append(ReloadPlan(fix, True, f"threshold {thresholds[current]}", thresholds[current]))
        t = fix + period / 2
    return out


def build(
    seed: int,
    *,
    seconds: float,
    apps: list[str],
    thresholds: tuple[int, int],
    start: float,
    quiet_tail: float,
) -> Schedule:
    """The whole run's chaos for ``seed``: faults from ``start`` to ``seconds - quiet_tail``,
    reloads and the kill from ``start`` to ``seconds - quiet_tail``; times in seconds from the
    run's start. The first good reload flips the threshold away from ``thresholds[0]``, the
    one the daemon starts with."""
    rng = random.Random(f"duixwatch-soak:{seed}")
    end = seconds - quiet_tail
    faults = _faults(random.Random(rng.random()), apps, start, end, quiet_seconds=quiet_tail)
    kill_at: float | None = (start + end) / 2
    if end - start < 6 * KILL_CLEARANCE_SECONDS:
        kill_at = None  # too short to kill and restart away from the reloads
    forbidden = (
        None
        if kill_at is None
        else (kill_at - KILL_CLEARANCE_SECONDS, kill_at + 2 * KILL_CLEARANCE_SECONDS)
    )
    reloads = _reloads(random.Random(rng.random()), start, end, thresholds, forbidden)
    return Schedule(faults, tuple(reloads), kill_at, quiet_tail)
