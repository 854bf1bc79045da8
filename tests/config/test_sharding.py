"""config.sharding: which apps a replica owns, and its index from a pod name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from duixwatch import config as settings
from duixwatch.config import sharding
from duixwatch.core import errors

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
def app(name: str, app_id: str) -> settings.AppConfig:
    return settings.AppConfig(app_id=app_id, name=name, app_key=SecretStr("k" * 32))


def test_shard_ownership_is_a_stable_hash_not_pythons_hash() -> None:
    """Fixed values: a change here would move apps between the replicas of a running fleet.
    (Python's ``hash()`` of a str changes with every process: it would split differently in
    each replica.)"""
    assert [sharding.shard_of(f"app-{i}", 4) for i in range(6)] == [1, 3, 2, 0, 1, 2]
    assert [sharding.shard_of(str(i), 3) for i in range(8)] == [0, 1, 1, 1, 1, 2, 0, 2]
    assert sharding.shard_of("1377185422953811968", 3) == 2


@given(
    st.lists(st.from_regex(r"[1-9][0-9]{0,18}", fullmatch=True), unique=True, max_size=50),
    st.integers(min_value=1, max_value=7),
)
def test_every_app_is_owned_by_exactly_one_shard(ids: list[str], count: int) -> None:
    apps = [app(f"a{i}", app_id) for i, app_id in enumerate(ids)]
    owners = [
        {a.app_id for a in sharding.owned_apps(apps, index=index, count=count)}
        for index in range(count)
    ]
    assert sum(len(o) for o in owners) == len(apps)
    assert set().union(*owners) == set(ids)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"POD_NAME": "duixwatch-2"}, 2),
        ({"HOSTNAME": "duixwatch-0"}, 0),
        ({"POD_NAME": "duixwatch-1", "HOSTNAME": "duixwatch-2"}, 1),
    ],
)
def test_index_auto_comes_from_the_statefulset_pod_name(
    environ: dict[str, str], expected: int
) -> None:
    sharding = settings.ShardingSettings(index="auto", count=3)
    assert sharding.resolve(environ) == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [({}, "neither"), ({"HOSTNAME": "laptop"}, "neither"), ({"POD_NAME": "dw-5"}, "not below")],
)
def test_index_auto_without_a_usable_pod_name_is_a_config_error(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        settings.ShardingSettings(index="auto", count=3).resolve(environ)


def test_an_index_outside_the_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="below count"):
        settings.ShardingSettings(index=3, count=3)
