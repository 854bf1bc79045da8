"""Checks on the stops: each call the simulator received was recorded first, and none was
planned on a poll that cannot have succeeded.

A plan's time is known to the second from its cycle id (``YYYYMMDDTHHMMSSZ-xxxxxx``, the UTC
second of the evaluation, truncated) and is never after its intent's ``ts``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.soak.checks.core import READ_ENDPOINTS, Violation, Window, surely_failing

__all__ = [
    "Intent",
    "Margins",
    "check_stops_have_intents",
    "check_stops_on_failing_data",
    "issue_lags",
    "judged_seconds",
    "parse_intents",
    "plan_second",
]

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
