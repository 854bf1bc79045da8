"""The simulator's faults (injected misbehaviour per app and endpoint) and request statistics.

Both are plain state, read and changed through the simulator and its ``/_sim/`` control API.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from duixwatch.sim import hostile as hostile_answers

__all__ = ["ENDPOINTS", "HANG_SECONDS", "Fault", "Faults", "Stats"]

ENDPOINTS: tuple[str, ...] = (
    "getconcurrentNumber",
    "getconcurrentList",
    "distroyCallSessionsByAppId",
    "sessionStop",
    "getConversationById",
    "createAvatar",
    "queryAvatar",
)

#: A ``hang`` fault sleeps this long (on the simulator's clock) before giving up with a 504.
HANG_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Fault:
    """A misbehaviour injected for requests to ``endpoint`` of ``app`` (``"*"``: any).

    Applied in this order: ``latency_seconds`` plus up to ``jitter_seconds`` (seeded) of delay;
    then the first of ``hang`` (sleep :data:`HANG_SECONDS` on the clock, then HTTP 504; the
    hang ends early if the client disconnects, or with 503 when a server shuts down), ``status`` /
    ``retry_after_seconds`` (that status, 429 by default when a Retry-After is set),
    ``reject_token`` (code 1006), ``code`` (``success:false`` with that code). ``malformed``
    lets the request take effect and truncates the JSON answer. ``hostile`` lets it take
    effect and rewrites a successful answer into a hostile one, one of
    :data:`~duixwatch.sim.hostile.KINDS` (what each does: :mod:`duixwatch.sim.hostile`):
    start times ``start_1970``, ``start_1900``, ``start_year1``, ``start_9999``,
    ``future_start`` (first list item); counts ``count_superscript``, ``count_huge``,
    ``count_nan``, ``count_infinity``, ``count_negative`` (``userConcurrentNumber`` and the
    list's ``total``); bodies ``deep_json``, ``huge_body`` (50 MiB), ``trickle`` (a byte a
    second); lists ``many_items`` (200,000), ``markup_ids`` (first list item),
    ``shape_flip`` (another container each answer); and ``stop_ignored``, which answers a
    ``sessionStop`` with success WITHOUT letting it take effect (the session stays listed).
    ``times`` is how many more matching
    requests the fault applies to (``None``: until cleared).
    """

    app: str = "*"
    endpoint: str = "*"
    status: int | None = None
    retry_after_seconds: float | None = None
    code: str | None = None
    malformed: bool = False
    hang: bool = False
    latency_seconds: float = 0.0
    jitter_seconds: float = 0.0
    reject_token: bool = False
    hostile: str | None = None
    times: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fault as JSON-ready values (for the control API)."""
        return {
            "app": self.app,
            "endpoint": self.endpoint,
            "status": self.status,
            "retry_after_seconds": self.retry_after_seconds,
            "code": self.code,
            "malformed": self.malformed,
            "hang": self.hang,
            "latency_seconds": self.latency_seconds,
            "jitter_seconds": self.jitter_seconds,
            "reject_token": self.reject_token,
            "hostile": self.hostile,
            "times": self.times,
        }


class Faults:
    """The fault table: at most one fault per (app, endpoint); the most specific match wins.

    Specificity, most specific first: (app, endpoint), (app, ``*``), (``*``, endpoint),
    (``*``, ``*``).
    """

    def __init__(self, resolve_app: Callable[[str], str], rng: random.Random) -> None:
        self._resolve_app = resolve_app
        self._rng = rng
        self._table: dict[tuple[str, str], Fault] = {}

    def _app_key(self, app: str) -> str:
        return "*" if app == "*" else self._resolve_app(app)

    def set(
        self,
        app: str = "*",
        endpoint: str = "*",
        *,
        status: int | None = None,
        retry_after_seconds: float | None = None,
        code: str | int | None = None,
        malformed: bool = False,
        hang: bool = False,
        latency_seconds: float = 0.0,
        jitter_seconds: float = 0.0,
        reject_token: bool = False,
        hostile: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Install a fault (replacing the one for the same app and endpoint) and return it.

        ``app`` is an app id, an app name or ``"*"``; ``endpoint`` one of :data:`ENDPOINTS` or
        ``"*"``; ``hostile`` a kind that changes ``endpoint``. Raises :class:`ValueError` (or
        :class:`KeyError` for an unknown app).
        """
        if endpoint != "*" and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected '*' or one of {ENDPOINTS}")
        if status is not None and not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400..599)")
        if retry_after_seconds is not None and not 0 <= retry_after_seconds <= 86_400:
            raise ValueError("retry_after_seconds must be between 0 and 86400")
        if not 0 <= latency_seconds <= HANG_SECONDS or not 0 <= jitter_seconds <= HANG_SECONDS:
            raise ValueError(f"latency and jitter must be between 0 and {HANG_SECONDS:g} s")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for until cleared)")
        if code is not None and str(code) == "":
            raise ValueError("code must not be empty")
        if hostile is not None:
            hostile_answers.check_kind(hostile, endpoint)
        fault = Fault(
            app=self._app_key(app),
            endpoint=endpoint,
            status=status,
            retry_after_seconds=retry_after_seconds,
            code=None if code is None else str(code),
            malformed=malformed,
            hang=hang,
            latency_seconds=latency_seconds,
            jitter_seconds=jitter_seconds,
            reject_token=reject_token,
            hostile=hostile,
            times=times,
        )
        self._table[(fault.app, fault.endpoint)] = fault
        return fault

    def clear(self, app: str | None = None, endpoint: str | None = None) -> int:
        """Remove the faults matching ``app`` and ``endpoint`` (``None``: any); return how many."""
        app_key = None if app is None else self._app_key(app)
        doomed = [
            key
            for key in self._table
            if (app_key is None or key[0] == app_key) and (endpoint is None or key[1] == endpoint)
        ]
        for key in doomed:
            del self._table[key]
        return len(doomed)

    def active(self) -> list[Fault]:
        """The installed faults (``times`` shows how many uses are left)."""
        return list(self._table.values())

    def take(self, app_id: str | None, endpoint: str) -> Fault | None:
        """The fault for one request, using up one of its ``times``."""
        candidates = [(app_id, endpoint), (app_id, "*"), ("*", endpoint), ("*", "*")]
        for app_key, endpoint_key in candidates:
            if app_key is None:
                continue
            fault = self._table.get((app_key, endpoint_key))
            if fault is None:
                continue
            if fault.times is not None:
                if fault.times <= 1:
                    del self._table[(app_key, endpoint_key)]
                else:
                    self._table[(app_key, endpoint_key)] = _with_times(fault, fault.times - 1)
            return fault
        return None

    def delay_seconds(self, fault: Fault) -> float:
        """The latency to add for one request: the fault's latency plus seeded jitter."""
        jitter = self._rng.uniform(0.0, fault.jitter_seconds) if fault.jitter_seconds else 0.0
        return fault.latency_seconds + jitter


def _with_times(fault: Fault, times: int) -> Fault:
    values = fault.to_dict()
    values["times"] = times
    return Fault(**values)


# --------------------------------------------------------------------------- statistics


@dataclass(slots=True)
class Stats:
    """What reached the API: requests per (app id, endpoint) and concurrency.

    ``requests`` counts every request that reached an endpoint, rejected ones included
    (app id ``""`` when the request named none); ``in_flight`` is how many API requests are
    executing now and ``max_in_flight`` its high-water mark.
    """

    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0

    def count(self, app_id: str, endpoint: str) -> None:
        """Record one request."""
        key = (app_id, endpoint)
        self.requests[key] = self.requests.get(key, 0) + 1

    def enter(self) -> None:
        """A request starts executing."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        """A request finished (answered, failed or cancelled)."""
        self.in_flight -= 1

    def reset(self) -> None:
        """Forget the counts; the high-water mark restarts from the requests in flight now."""
        self.requests.clear()
        self.max_in_flight = self.in_flight

    def total(self, endpoint: str | None = None) -> int:
        """Requests counted so far, for one endpoint or all."""
        return sum(n for (_, ep), n in self.requests.items() if endpoint in (None, ep))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready statistics (for the control API)."""
        return {
            "requests": [
                {"app_id": app_id, "endpoint": endpoint, "count": count}
                for (app_id, endpoint), count in sorted(self.requests.items())
            ],
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }


# --------------------------------------------------------------------------- the simulator
