"""Autoscaling signals: the live sessions of some apps turned into a replica count for the
customer's own backends (``scaling.targets[]``). Pure computation and small state, no I/O.

A target sums the live sessions of its apps — the length of an app's session list, or
``userConcurrentNumber`` for an app whose list is not polled — and turns it into a replica
count: ``ceil(sessions / sessions_per_replica)`` within ``[min_replicas, max_replicas]``.
Scaling up follows at once; scaling down follows only the highest count recommended during the
last ``scale_down_stabilization_seconds`` (the HPA's scale-down stabilization window), so a dip
does not drop replicas that are needed again a minute later. When any of the target's apps is
stale or failing the target is not fresh: it has no numbers (the metrics are absent and the
KEDA endpoint answers 503) so that the autoscaler falls back instead of scaling to zero during
an outage.

Sharding the apps across duixwatch replicas is the config's (:mod:`duixwatch.config.sharding`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from duixwatch.config import AppConfig, ScalingTarget
from duixwatch.core import models

__all__ = [
    "ScalingApp",
    "ScalingReading",
    "Stabilizer",
    "TargetScaler",
    "desired_replicas",
]


@dataclass(frozen=True, slots=True)
class ScalingApp:
    """One app's part of a scaling target's reading."""

    app: str
    fresh: bool
    sessions: int | None
    #: ``session_list`` (the list's length) or ``user_concurrent_number`` (list not polled).
    source: str | None
    last_success_at: datetime | None


@dataclass(frozen=True, slots=True)
class ScalingReading:
    """An autoscaling target's latest numbers; ``sessions`` and the replica counts are ``None``
    unless every app of the target is fresh (then the autoscaler must fall back)."""

    target: str
    fresh: bool
    sessions: int | None
    raw_desired_replicas: int | None
    desired_replicas: int | None
    sessions_per_replica: float
    min_replicas: int
    max_replicas: int
    computed_at: datetime
    apps: tuple[ScalingApp, ...] = ()


def desired_replicas(
    sessions: int, *, sessions_per_replica: float, min_replicas: int, max_replicas: int
) -> int:
    """``ceil(sessions / sessions_per_replica)`` clamped to ``[min_replicas, max_replicas]``."""
    needed = math.ceil(sessions / sessions_per_replica) if sessions > 0 else 0
    return max(min_replicas, min(max_replicas, needed))


class Stabilizer:
    """HPA-style scale-down stabilization over recommendations made at monotonic times."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._history: deque[tuple[float, int]] = deque()

    def recommend(self, at: float, raw: int) -> int:
        """Record ``raw`` at time ``at``; return the highest recommendation of the window."""
        self._history.append((at, raw))
        while self._history and self._history[0][0] < at - self.window_seconds:
            self._history.popleft()
        return max(value for _, value in self._history)


class TargetScaler:
    """Computes the readings of every target from the latest snapshots (the daemon calls
    :meth:`update` on a timer; readers only read :attr:`readings`)."""

    def __init__(self) -> None:
        self._stabilizers: dict[str, Stabilizer] = {}
        self.readings: dict[str, ScalingReading] = {}

    def update(
        self,
        targets: Sequence[ScalingTarget],
        apps: Sequence[AppConfig],
        snapshots: Mapping[str, models.AppSnapshot],
        *,
        now: datetime,
        monotonic: float,
    ) -> None:
        """Recompute every target; targets no longer configured are forgotten."""
        readings: dict[str, ScalingReading] = {}
        for target in targets:
            stabilizer = self._stabilizers.get(target.name)
            if stabilizer is None or (
                stabilizer.window_seconds != target.scale_down_stabilization_seconds
            ):
                stabilizer = Stabilizer(target.scale_down_stabilization_seconds)
                self._stabilizers[target.name] = stabilizer
            readings[target.name] = _reading(
                target,
                [a for a in apps if target.selects(a)],
                snapshots,
                now=now,
                monotonic=monotonic,
                stabilizer=stabilizer,
            )
        for name in set(self._stabilizers) - set(readings):
            del self._stabilizers[name]
        self.readings = readings


def _app_sessions(snapshot: models.AppSnapshot) -> tuple[int, str] | None:
    if snapshot.sessions is not None:
        return len(snapshot.sessions), "session_list"
    if snapshot.concurrency is not None:
        return snapshot.concurrency.user_concurrent_number, "user_concurrent_number"
    return None


def _reading(
    target: ScalingTarget,
    apps: Iterable[AppConfig],
    snapshots: Mapping[str, models.AppSnapshot],
    *,
    now: datetime,
    monotonic: float,
    stabilizer: Stabilizer,
) -> ScalingReading:
    parts: list[ScalingApp] = []
    total = 0
    fresh = True
    for app in apps:
        snapshot = snapshots.get(app.name)
        counted = _app_sessions(snapshot) if snapshot is not None else None
        app_fresh = snapshot is not None and snapshot.is_fresh(now) and counted is not None
        fresh = fresh and app_fresh
        if counted is not None and app_fresh:
            total += counted[0]
        parts.append(
            ScalingApp(
                app=app.name,
                fresh=app_fresh,
                sessions=counted[0] if counted is not None and app_fresh else None,
                source=counted[1] if counted is not None else None,
                last_success_at=snapshot.fetched_at if snapshot is not None else None,
            )
        )
    fresh = fresh and bool(parts)
    raw = desired = None
    if fresh:
        raw = desired_replicas(
            total,
            sessions_per_replica=target.sessions_per_replica,
            min_replicas=target.min_replicas,
            max_replicas=target.max_replicas,
        )
        desired = stabilizer.recommend(monotonic, raw)
    return ScalingReading(
        target=target.name,
        fresh=fresh,
        sessions=total if fresh else None,
        raw_desired_replicas=raw,
        desired_replicas=desired,
        sessions_per_replica=target.sessions_per_replica,
        min_replicas=target.min_replicas,
        max_replicas=target.max_replicas,
        computed_at=now,
        apps=tuple(parts),
    )
