"""Sessions still listed after a successful stop: noticed, retried with backoff, then left.

A ``sessionStop`` that succeeded (or answered 2002, already closed) should make the session
leave ``getconcurrentList``. When a later cycle's plan wants to stop it again — a platform
glitch, an id listed twice — duixwatch must not call ``sessionStop`` on it every cycle forever.
:class:`StopMemory` remembers the sessions stopped successfully (per APP and session id) and
decides, each time one is planned again:

* the first time after each successful stop it is **reported** (the executor records the
  outcome ``still_listed``: audit, metric, log, ``/status``);
* it is stopped again only after a backoff — :data:`RETRY_SECONDS` times 2**(n-1) after the n-th
  successful stop — and at most :data:`MAX_STOPS` times in all; after that duixwatch gives up on
  that session (reported once more, with "giving up"), until it leaves the list.

The memory is bounded (:data:`LIMIT` sessions; beyond, new ones are not remembered) and forgets a
session once a plan for its APP no longer contains it. It lives in memory: after a restart, a
session still listed is stopped once more and then handled the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Literal

from duixwatch.policy.plan import Plan, PlannedAction, PolicyPlan

__all__ = ["LIMIT", "MAX_STOPS", "NEXT", "RETRY_SECONDS", "Decision", "StopMemory", "screen"]

#: Seconds before the first retry of a session still listed (doubling after each stop).
RETRY_SECONDS: Final = 60.0
#: Successful stops of one session before duixwatch gives up on it.
MAX_STOPS: Final = 4
#: Sessions remembered at most.
LIMIT: Final = 10_000

#: ``call``: stop it (never stopped, or its retry is due); ``wait``: its retry is not due yet;
#: ``give_up``: the last stop did not remove it either, no further call; ``given_up``: left.
Decision = Literal["call", "wait", "give_up", "given_up"]

#: What happens next, as the ``still_listed`` record says it, by decision.
NEXT: Final[dict[str, str]] = {
    "call": "stopping it again now",
    "wait": "stopping it again after a backoff",
    "give_up": "giving up: no further sessionStop for it while it is listed",
}


@dataclass(slots=True)
class _Stopped:
    stops: int
    stopped_at: float
    next_at: float
    reported: bool = False
    gave_up: bool = False


class StopMemory:
    """The sessions stopped successfully, by APP id and session id; times are monotonic."""

    def __init__(
        self,
        *,
        retry_seconds: float = RETRY_SECONDS,
        max_stops: int = MAX_STOPS,
        limit: int = LIMIT,
    ) -> None:
        self._retry = retry_seconds
        self._max_stops = max_stops
        self._limit = limit
        self._by_app: dict[str, dict[str, _Stopped]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def stopped(self, app_id: str, session_id: str, now: float) -> None:
        """A ``sessionStop`` for it succeeded (or it was already closed)."""
        entries = self._by_app.setdefault(app_id, {})
        entry = entries.pop(session_id, None)
        if entry is None:
            if self._size >= self._limit:
                return  # bounded: such a session is stopped again when planned, as before
            self._size += 1
        stops = 1 if entry is None else entry.stops + 1
        entries[session_id] = _Stopped(stops, now, now + self._retry * 2.0 ** (stops - 1))

    def decide(self, app_id: str, session_id: str, now: float) -> tuple[Decision, bool, int]:
        """What to do with a session planned for a stop: the decision, whether to report it as
        ``still_listed`` now (once after each successful stop, and once when giving up), and
        how many successful stops it has had."""
        entry = self._by_app.get(app_id, {}).get(session_id)
        if entry is None:
            return "call", False, 0
        if entry.gave_up:
            return "given_up", False, entry.stops
        report = not entry.reported
        entry.reported = True
        if entry.stops >= self._max_stops:
            entry.gave_up = True
            return "give_up", True, entry.stops
        if now < entry.next_at:
            return "wait", report, entry.stops
        return "call", report, entry.stops

    def keep_only(self, app_id: str, session_ids: Iterable[str]) -> None:
        """Forget the APP's sessions not in ``session_ids`` (its latest plan left them out)."""
        entries = self._by_app.get(app_id)
        if not entries:
            return
        keep = set(session_ids)
        for sid in [s for s in entries if s not in keep]:
            del entries[sid]
            self._size -= 1
        if not entries:
            del self._by_app[app_id]


def screen(
    memory: StopMemory, plan: Plan, now: float
) -> tuple[Plan, list[tuple[PolicyPlan, PlannedAction, Decision, int]]]:
    """``plan`` without the stops ``memory`` holds back (waiting for a retry, or given up),
    and what to report as ``still_listed``: (policy plan, action, decision, stops so far)."""
    reports: list[tuple[PolicyPlan, PlannedAction, Decision, int]] = []
    policies: list[PolicyPlan] = []
    for pplan in plan.policies:
        if pplan.abort is not None or pplan.dry_run:
            policies.append(pplan)
            continue
        due: list[PlannedAction] = []
        for action in pplan.actions:
            if action.session_id is None:
                due.append(action)
                continue
            decision, report, stops = memory.decide(pplan.app_id, action.session_id, now)
            if decision == "call":
                due.append(action)
            if report:
                reports.append((pplan, action, decision, stops))
        policies.append(
            pplan if len(due) == len(pplan.actions) else replace(pplan, actions=tuple(due))
        )
    return replace(plan, policies=tuple(policies)), reports
