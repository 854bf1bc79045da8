"""The soak's checks' common ground: a :class:`Violation`, and the fault windows with the
one question every fault-aware check asks, :func:`surely_failing`.

A fault window is *surely* in force from the moment its ``POST`` was answered until its
``DELETE`` was sent, and *possibly* from the ``POST`` being sent until the ``DELETE`` was
answered; a check that flags the daemon uses the sure interval, a check that excuses it the
possible one, so neither an early nor a late control call can make a false violation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAILING_KINDS",
    "MB",
    "READ_ENDPOINTS",
    "Violation",
    "Window",
    "surely_failing",
]

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
