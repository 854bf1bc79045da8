"""scale: the autoscaling arithmetic, stabilization, staleness, and shard ownership."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from duixwatch import config as settings
from duixwatch.core import models
from duixwatch.export import autoscaling as scale

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sessions", "per", "lo", "hi", "expected"),
    [
        (0, 10, 1, 5, 1),  # min bound
        (0, 10, 0, 5, 0),  # scale to zero when allowed
        (1, 10, 0, 5, 1),  # any session needs a replica
        (10, 10, 1, 5, 1),
        (11, 10, 1, 5, 2),  # ceil
        (1000, 10, 1, 5, 5),  # max bound
        (7, 2.5, 1, 10, 3),
    ],
)
def test_desired_replicas_is_ceil_within_bounds(
    sessions: int, per: float, lo: int, hi: int, expected: int
) -> None:
    got = scale.desired_replicas(
        sessions, sessions_per_replica=per, min_replicas=lo, max_replicas=hi
    )
    assert got == expected


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window() -> None:
    stabilizer = scale.Stabilizer(window_seconds=300)
    assert stabilizer.recommend(0, 2) == 2
    assert stabilizer.recommend(10, 6) == 6  # up at once
    assert stabilizer.recommend(100, 3) == 6  # down held back
    assert stabilizer.recommend(309, 3) == 6  # the 6 of t=10 is still in the window
    assert stabilizer.recommend(311, 3) == 3  # it has left the window
    assert stabilizer.recommend(312, 9) == 9


def test_a_zero_window_follows_every_recommendation() -> None:
    stabilizer = scale.Stabilizer(window_seconds=0)
    assert [stabilizer.recommend(t, v) for t, v in enumerate([5, 1, 4, 2])] == [5, 1, 4, 2]


def app(name: str, app_id: str) -> settings.AppConfig:
    return settings.AppConfig(app_id=app_id, name=name, app_key=SecretStr("k" * 32))


APPS = (app("front-1", "1"), app("front-2", "2"), app("other", "3"))


def target(**values: Any) -> settings.ScalingTarget:
    base: dict[str, Any] = {
        "name": "dialog",
        "apps": ["front-*"],
        "sessions_per_replica": 10,
        "min_replicas": 1,
        "max_replicas": 20,
        "scale_down_stabilization_seconds": 60,
    }
    base.update(values)
    return settings.ScalingTarget.model_validate(base)


def snap(
    name: str, sessions: int | None, *, users: int = 0, failed: bool = False, ago: float = 0
) -> models.AppSnapshot:
    listing = (
        None
        if sessions is None
        else models.SessionList(
            tuple(models.Session(str(i)) for i in range(sessions)), shape="data[]"
        )
    )
    return models.AppSnapshot(
        app=name,
        app_id=name,
        poll_interval_seconds=15,
        fetched_at=NOW - timedelta(seconds=ago),
        concurrency=models.Concurrency("c", 100, users),
        sessions=listing,
        error=models.PollError("server", "x", NOW) if failed else None,
    )


def read(
    scaler: scale.TargetScaler,
    snapshots: list[models.AppSnapshot],
    *,
    at: float = 0,
    targets: tuple[settings.ScalingTarget, ...] | None = None,
) -> models.ScalingReading:
    scaler.update(
        targets or (target(),),
        APPS,
        {s.app: s for s in snapshots},
        now=NOW,
        monotonic=at,
    )
    return scaler.readings["dialog"]


def test_a_target_sums_the_sessions_of_its_apps_only() -> None:
    reading = read(
        scale.TargetScaler(), [snap("front-1", 14), snap("front-2", 7), snap("other", 500)]
    )
    assert reading.fresh
    assert reading.sessions == 21
    assert reading.desired_replicas == 3
    assert [a.app for a in reading.apps] == ["front-1", "front-2"]


def test_apps_without_a_session_list_count_their_user_concurrency() -> None:
    reading = read(scale.TargetScaler(), [snap("front-1", None, users=25), snap("front-2", 5)])
    assert reading.sessions == 30
    assert [a.source for a in reading.apps] == ["user_concurrent_number", "session_list"]


@pytest.mark.parametrize(
    "broken",
    [
        snap("front-2", 5, failed=True),
        snap("front-2", 5, ago=31),  # stale: older than 2 x 15 s
    ],
)
def test_a_stale_or_failing_app_makes_the_target_unfresh_with_no_numbers(
    broken: models.AppSnapshot,
) -> None:
    reading = read(scale.TargetScaler(), [snap("front-1", 50), broken])
    assert not reading.fresh
    assert reading.sessions is None
    assert reading.desired_replicas is None


def test_an_app_never_polled_makes_the_target_unfresh() -> None:
    assert not read(scale.TargetScaler(), [snap("front-1", 5)]).fresh


def test_the_scaler_stabilizes_scale_down_between_updates() -> None:
    scaler = scale.TargetScaler()
    assert read(scaler, [snap("front-1", 50), snap("front-2", 50)], at=0).desired_replicas == 10
    low = read(scaler, [snap("front-1", 5), snap("front-2", 5)], at=30)
    assert (low.raw_desired_replicas, low.desired_replicas) == (1, 10)
    assert read(scaler, [snap("front-1", 5), snap("front-2", 5)], at=61).desired_replicas == 1


def test_removed_targets_are_forgotten() -> None:
    scaler = scale.TargetScaler()
    read(scaler, [snap("front-1", 5), snap("front-2", 5)])
    scaler.update((), APPS, {}, now=NOW, monotonic=1)
    assert scaler.readings == {}


def test_scaling_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="min_replicas 5 is above max_replicas 2"):
        target(min_replicas=5, max_replicas=2)
