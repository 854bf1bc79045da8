"""Three shards as processes against one simulator: each app is polled by exactly one shard and
together they export what one unsharded daemon exports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import DUIXWATCH, eventually, free_port, process, sim_config, start_sim

pytestmark = pytest.mark.e2e

SEED, APPS = 51, 9


def metric_apps(base: str) -> set[str]:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return {
        s.labels["app"]
        for family in text_string_to_metric_families(text)
        if family.name == "duix_up"
        for s in family.samples
        if s.value == 1
    }


@pytest.fixture
def sim_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    proc = start_sim(port, tmp_path / "sim.log", apps=APPS, seed=SEED)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_three_shards_split_the_apps_and_together_equal_one_daemon(
    sim_port: int, tmp_path: Path
) -> None:
    config = sim_config(sim_port, apps=APPS, seed=SEED)
    for app in config["apps"]:
        app["poll_interval_seconds"] = 1
    path = tmp_path / "duixwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    every_app = {a["name"] for a in config["apps"]}

    with ExitStack() as stack:
        bases = {}
        for shard in ("0", "1", "2", "unsharded"):
            port = free_port()
            env = {
                **os.environ,
                "DUIXWATCH_SERVER__LISTEN": f"127.0.0.1:{port}",
                "DUIXWATCH_STATE__DIR": str(tmp_path / f"state-{shard}"),
            }
            args = [*DUIXWATCH, "run", "-c", str(path)]
            if shard != "unsharded":
                # shard 0 and 1 by flag; shard 2 as a StatefulSet pod would: index from its name
                args += ["--shard-count", "3"]
                if shard == "2":
                    env["POD_NAME"] = "duixwatch-2"
                else:
                    args += ["--shard-index", shard]
            stack.enter_context(process(args, tmp_path / f"daemon-{shard}.log", env=env))
            bases[shard] = f"http://127.0.0.1:{port}"
        for shard, base in bases.items():
            eventually(
                lambda base=base: httpx.get(f"{base}/readyz", timeout=1).status_code == 200,
                timeout=20,
                what=f"shard {shard} ready",
            )
        owned = {
            shard: {a["app"] for a in httpx.get(f"{base}/status", timeout=5).json()["apps"]}
            for shard, base in bases.items()
        }
        exported = {shard: metric_apps(base) for shard, base in bases.items()}

    shards = [owned[s] for s in ("0", "1", "2")]
    assert all(shards)  # 9 apps over 3 shards: none is empty with this seed
    assert sum(len(s) for s in shards) == len(every_app)  # no app polled twice
    assert set().union(*shards) == every_app == owned["unsharded"]
    assert set().union(*(exported[s] for s in ("0", "1", "2"))) == exported["unsharded"]
    assert exported["unsharded"] == every_app
