"""deploy/alertmanager/: ``amtool check-config`` accepts it, ``amtool config routes test`` routes
by severity, and a real Alertmanager on 127.0.0.1 inhibits app alerts while duixwatch is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ops_support import (
    ALERTMANAGER_CONFIG,
    alerts,
    eventually,
    free_port,
    load_yaml,
    output,
    process,
    run,
)
from tests.tools import require_tool

pytestmark = pytest.mark.e2e


def test_amtool_check_config_passes() -> None:
    result = run([require_tool("amtool"), "check-config", ALERTMANAGER_CONFIG])
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


def test_amtool_check_config_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(
        ALERTMANAGER_CONFIG.read_text().replace("receiver: duixwatch-page", "receiver: nobody")
    )
    result = run([require_tool("amtool"), "check-config", broken])
    assert result.returncode != 0, output(result)


@pytest.mark.parametrize("name", sorted(alerts()))
def test_every_alert_is_routed_by_its_severity(name: str) -> None:
    severity = alerts()[name]["labels"]["severity"]
    expected = {
        "critical": "duixwatch-page",
        "warning": "duixwatch-ticket",
        "info": "duixwatch-notify",
    }[severity]
    result = run(
        [
            require_tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"alertname={name}",
            f"severity={severity}",
            "job=duixwatch",
            "app=frontdesk",
        ]
    )
    assert result.returncode == 0, output(result)
    assert result.stdout.strip() == expected, output(result)


def test_every_webhook_receiver_sends_resolved_alerts() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            assert hook["send_resolved"] is True, receiver["name"]


def labels(name: str, **extra: str) -> dict[str, str]:
    base = {"alertname": name, "job": "duixwatch", "instance": "10.0.0.7:9814"}
    return base | {"severity": alerts()[name]["labels"]["severity"]} | extra


@pytest.mark.timeout(60)
def test_a_real_alertmanager_inhibits_app_alerts_while_duixwatch_is_down(tmp_path: Path) -> None:
    binary = require_tool("prometheus-alertmanager")
    port = free_port()
    args = [
        binary,
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    api = f"http://127.0.0.1:{port}/api/v2"
    with process(args, tmp_path / "alertmanager.log"):
        eventually(
            lambda: httpx.get(f"{api}/status", timeout=1).status_code == 200,
            timeout=20,
            what="Alertmanager",
        )
        posted = [
            labels("DuixwatchDown"),
            labels("DuixAppPollFailing", app="frontdesk"),
            labels("DuixAppAuthRejected", app="support", reason="auth", instance="10.0.0.8:9814"),
            labels("DuixAppPollFailing", app="support", instance="10.0.0.8:9814"),
            labels("DuixwatchConfigReloadFailed", job="duixwatch-b"),
        ]
        response = httpx.post(f"{api}/alerts", json=[{"labels": p} for p in posted], timeout=5)
        response.raise_for_status()

        def states() -> dict[tuple[str, str], dict[str, Any]] | None:
            got = httpx.get(f"{api}/alerts", timeout=2).json()
            by_key = {(a["labels"]["alertname"], a["labels"].get("app", "")): a for a in got}
            inhibited = [a for a in got if a["status"]["inhibitedBy"]]
            return by_key if len(got) == len(posted) and len(inhibited) >= 2 else None

        got = eventually(states, timeout=20, what="Alertmanager to process the alerts")

    def inhibited(name: str, app: str = "") -> bool:
        return bool(got[(name, app)]["status"]["inhibitedBy"])

    assert not inhibited("DuixwatchDown")
    assert inhibited("DuixAppPollFailing", "frontdesk"), "the daemon is down: app alert muted"
    assert inhibited("DuixAppPollFailing", "support"), "explained by the rejected key"
    assert not inhibited("DuixAppAuthRejected", "support"), "the cause itself is shown"
    assert not inhibited("DuixwatchConfigReloadFailed"), "another job: not covered"
