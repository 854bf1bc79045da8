"""`duixwatch run` as an operator runs it: real processes on 127.0.0.1 — the simulator, the daemon,
and a real Prometheus (Debian's package) scraping it."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tests import procs
from tests.procs import DUIXWATCH, eventually, free_port, process
from tests.tools import require_tool

pytestmark = pytest.mark.e2e

SEED, APPS, INTERVAL = 31, 3, 1.0


def start_sim(port: int, log: Path) -> subprocess.Popen[bytes]:
    return procs.start_sim(port, log, apps=APPS, seed=SEED)


def metric_values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(
    values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return values.get((name, frozenset(labels.items())))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Simulator + daemon processes; yields ports, paths and process handles."""
    sim_port, http_port = free_port(), free_port()
    config = procs.sim_config(sim_port, apps=APPS, seed=SEED)
    for app in config["apps"]:
        app["poll_interval_seconds"] = INTERVAL
    config["server"] = {"listen": f"127.0.0.1:{http_port}"}
    config["state"] = {"dir": str(tmp_path / "state")}
    config["duix"]["read_retries"] = 0
    config["duix"]["request_timeout_seconds"] = 2
    config_path = tmp_path / "duixwatch.yaml"
    config_path.write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{http_port}"
    stack: dict[str, Any] = {
        "sim": start_sim(sim_port, tmp_path / "sim.log"),  # tests may replace it: see finally
        "sim_port": sim_port,
        "base": base,
        "config": config,
        "config_path": config_path,
        "tmp": tmp_path,
        "sim_url": f"http://127.0.0.1:{sim_port}",
    }
    try:
        with process([*DUIXWATCH, "run", "-c", str(config_path)], tmp_path / "daemon.log") as d:
            stack["daemon"] = d
            eventually(
                lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200,
                timeout=20,
                what="/readyz",
            )
            yield stack
    finally:
        sim = stack["sim"]
        if sim.poll() is None:
            sim.kill()
        sim.wait(timeout=10)


def test_metrics_equal_the_simulators_truth(stack: dict[str, Any]) -> None:
    apps = stack["config"]["apps"]
    for index, count in enumerate((2, 1, 0)):
        if count:
            httpx.post(
                f"{stack['sim_url']}/_sim/apps/{apps[index]['app_id']}/sessions",
                json={"count": count, "age_seconds": 600 * (index + 1)},
                timeout=5,
            ).raise_for_status()
    state = {
        a["app_id"]: a
        for a in httpx.get(f"{stack['sim_url']}/_sim/state", timeout=5).json()["apps"]
    }

    def settled() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        values = metric_values(httpx.get(f"{stack['base']}/metrics", timeout=5).text)
        # Both numbers of one poll: its two calls are one after the other, so a poll can see
        # the new sessions in the list but not yet in getconcurrentNumber.
        ok = all(
            get(values, "duix_app_sessions", app=a["name"])
            == len(state[str(a["app_id"])]["sessions"])
            == get(values, "duix_app_concurrency_user", app=a["name"])
            for a in apps
        )
        return values if ok else None

    values = eventually(settled, timeout=10, what="metrics to reflect the new sessions")
    for index, app in enumerate(apps):
        truth = state[str(app["app_id"])]
        name = app["name"]
        assert get(values, "duix_up", app=name) == 1
        assert (
            get(values, "duix_app_concurrency_total_number", app=name) == truth["concurrency_limit"]
        )
        assert get(values, "duix_app_concurrency_user", app=name) == len(truth["sessions"])
        oldest = get(values, "duix_app_oldest_session_age_seconds", app=name)
        if truth["sessions"]:
            expected = max(s["age_seconds"] for s in truth["sessions"])
            assert oldest == pytest.approx(expected, abs=1 + 2 * INTERVAL)
            assert oldest == pytest.approx(600 * (index + 1), abs=1 + 2 * INTERVAL + 5)
        else:
            assert oldest is None


def test_promtool_finds_nothing_wrong_with_the_exposition(stack: dict[str, Any]) -> None:
    promtool = require_tool("promtool")
    body = httpx.get(f"{stack['base']}/metrics", timeout=5).content
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"", result.stdout
    assert result.stderr.strip() == b"", result.stderr


def test_openmetrics_is_served_on_request_and_parses_strictly(stack: dict[str, Any]) -> None:
    """promtool reads only the text format; the OpenMetrics parser is strict about the rest."""
    response = httpx.get(
        f"{stack['base']}/metrics",
        headers={"accept": "application/openmetrics-text; version=1.0.0"},
        timeout=5,
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(response.text)}
    assert families["duix_app_session_age_seconds"].type == "gaugehistogram"
    assert families["duix_up"].type == "gauge"


def test_a_dead_platform_means_up_0_and_no_values_then_recovery(stack: dict[str, Any]) -> None:
    names = [a["name"] for a in stack["config"]["apps"]]
    stack["sim"].kill()
    stack["sim"].wait(timeout=10)
    killed_at = time.monotonic()

    def all_down() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        values = metric_values(httpx.get(f"{stack['base']}/metrics", timeout=5).text)
        return values if all(get(values, "duix_up", app=n) == 0 for n in names) else None

    values = eventually(all_down, timeout=2 * INTERVAL + 3, what="duix_up 0 for every app")
    assert time.monotonic() - killed_at <= 2 * INTERVAL + 3
    for name in names:
        assert get(values, "duix_app_sessions", app=name) is None
        assert get(values, "duix_app_concurrency_total_number", app=name) is None
    # The platform comes back: after its backoff each app recovers within one interval.
    down_for = time.monotonic() - killed_at
    stack["sim"] = start_sim(stack["sim_port"], stack["tmp"] / "sim.log")
    backoff = min(300.0, INTERVAL * 2 ** max(0, int(down_for / INTERVAL)))

    def all_up() -> bool:
        values = metric_values(httpx.get(f"{stack['base']}/metrics", timeout=5).text)
        return all(get(values, "duix_up", app=n) == 1 for n in names)

    eventually(all_up, timeout=backoff * 1.1 + INTERVAL + 3, what="recovery")


@pytest.mark.parametrize(
    "tail",
    [
        None,  # the whole file replaced by broken YAML
        "# \x07\n",  # a BEL, as a terminal paste leaves
        "# \x1b[0m\n",  # an ESC sequence
        "x: 1\x00\n",  # a NUL
        "x: " + "[" * 5000 + "\n",  # nesting deeper than the parser's recursion
    ],
)
def test_sighup_with_a_broken_file_keeps_polling_with_the_old_config(
    stack: dict[str, Any], tail: str | None
) -> None:
    good = stack.setdefault("good_config", stack["config_path"].read_text())
    if tail is None:
        stack["config_path"].write_text("apps: [this is: not yaml\n")
    else:
        stack["config_path"].write_text(good + tail)
    before_reload = httpx.get(f"{stack['base']}/status", timeout=5).json()["last_reload"]
    stack["daemon"].send_signal(signal.SIGHUP)

    def reload_failed() -> bool:
        values = metric_values(httpx.get(f"{stack['base']}/metrics", timeout=5).text)
        last = httpx.get(f"{stack['base']}/status", timeout=5).json()["last_reload"]
        return (
            get(values, "duixwatch_config_last_reload_successful") == 0
            and last["at"] != before_reload["at"]
            and last["ok"] is False
        )

    eventually(reload_failed, timeout=10, what="the failed reload to show")
    before = httpx.get(f"{stack['base']}/status", timeout=5).json()["apps"]
    time.sleep(2 * INTERVAL + 0.5)
    after = httpx.get(f"{stack['base']}/status", timeout=5).json()["apps"]
    for old, new in zip(before, after, strict=True):
        assert new["up"] is True
        assert new["last_success_at"] > old["last_success_at"]
    assert stack["daemon"].poll() is None
    log = (stack["tmp"] / "daemon.log").read_text()
    assert "config_reload_failed" in log
    for app in stack["config"]["apps"]:
        assert app["app_key"] not in log


@pytest.mark.exclusive  # timings: run alone
def test_sigterm_exits_0_within_5_seconds(stack: dict[str, Any]) -> None:
    started = time.monotonic()
    stack["daemon"].send_signal(signal.SIGTERM)
    assert stack["daemon"].wait(timeout=5) == 0
    assert time.monotonic() - started < 5


def test_a_real_prometheus_scrapes_every_app(stack: dict[str, Any], tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    prom_port = free_port()
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "duixwatch",
                        "static_configs": [{"targets": [stack["base"].removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    args = [
        prometheus,
        f"--config.file={prom_config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]
    with process(args, tmp_path / "prometheus.log"):
        api = f"http://127.0.0.1:{prom_port}/api/v1/query"

        def scraped() -> set[str] | None:
            response = httpx.get(api, params={"query": "duix_app_sessions"}, timeout=2)
            if response.status_code != 200:  # still starting up
                return None
            doc = response.json()
            apps = {r["metric"]["app"] for r in doc["data"]["result"]}
            return apps if len(apps) == APPS else None

        apps = eventually(scraped, timeout=30, what="Prometheus to scrape every app")
        assert apps == {a["name"] for a in stack["config"]["apps"]}
