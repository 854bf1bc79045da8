"""deploy/alertmanager/: ``amtool check-config`` accepts it, ``amtool config routes test`` routes
by severity, and a real Alertmanager on 127.0.0.1 inhibits app alerts while duixwatch is down and
tickets a conversation change only outside the maintenance window."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

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


# Alerts routed to more than their severity's receiver, in amtool's order (first match first).
EXTRA_ROUTES = {"DuixConversationChanged": "duixwatch-ticket,duixwatch-notify"}


@pytest.mark.parametrize("name", sorted(alerts()))
def test_every_alert_is_routed_by_its_severity(name: str) -> None:
    severity = alerts()[name]["labels"]["severity"]
    expected = {
        "critical": "duixwatch-page",
        "warning": "duixwatch-ticket",
        "info": "duixwatch-notify",
    }[severity]
    expected = EXTRA_ROUTES.get(name, expected)
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


def test_extra_routes_are_alerts_of_the_rules() -> None:
    assert set(EXTRA_ROUTES) <= set(alerts())


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


WINDOW = "conversation-maintenance"


def assert_conversation_route(config: dict[str, Any]) -> None:
    """The shipped route of DuixConversationChanged: the first child, before the severity routes,
    to the ticket receiver, muted in the maintenance window, and continuing to the next routes."""
    routes = config["route"]["routes"]
    first = routes[0]
    assert first["matchers"] == ['alertname="DuixConversationChanged"'], first
    assert first["receiver"] == "duixwatch-ticket", first
    assert first["mute_time_intervals"] == [WINDOW], first
    assert first["continue"] is True, first
    assert [r["matchers"] for r in routes[1:]] == [
        ['severity="critical"'],
        ['severity="warning"'],
        ['severity="info"'],
    ]
    assert routes[3]["receiver"] == "duixwatch-notify"


def test_the_maintenance_window_is_a_named_time_interval() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    assert_conversation_route(config)
    (window,) = [t for t in config["time_intervals"] if t["name"] == WINDOW]
    for spec in window["time_intervals"]:
        assert spec["weekdays"], spec
        assert spec["times"], spec
        ZoneInfo(spec["location"])  # a real IANA zone (Alertmanager rejects others too)


class Webhooks:
    """A webhook receiver on 127.0.0.1 that records the path of every notification posted."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.lock = threading.Lock()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hooks.lock:
                    hooks.paths.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self) -> set[str]:
        with self.lock:
            return set(self.paths)


@contextmanager
def webhooks() -> Iterator[Webhooks]:
    hooks = Webhooks()
    thread = threading.Thread(target=hooks.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hooks
    finally:
        hooks.server.shutdown()
        hooks.server.server_close()
        thread.join(timeout=5)


def windowed_config(hooks: Webhooks, *, inside: bool) -> str:
    """The shipped config with its webhook URLs pointed at ``hooks``, a short group_wait, and the
    maintenance window rewritten (same location, whole days) to cover now or to miss it by days."""
    config = load_yaml(ALERTMANAGER_CONFIG)
    assert_conversation_route(config)
    test = copy.deepcopy(config)
    test["route"]["group_wait"] = "1s"
    for route in test["route"]["routes"]:
        route.pop("group_wait", None)
    for receiver in test["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = hooks.url + "/" + hook["url"].split("/", 3)[3]
    (window,) = [t for t in test["time_intervals"] if t["name"] == WINDOW]
    location = window["time_intervals"][0]["location"]
    today = datetime.now(ZoneInfo(location))
    offsets = (-1, 0, 1) if inside else (3,)  # around today, or two days clear of it
    days = [(today + timedelta(days=d)).strftime("%A").lower() for d in offsets]
    window["time_intervals"] = [
        {
            "weekdays": days,
            "times": [{"start_time": "00:00", "end_time": "24:00"}],
            "location": location,
        }
    ]
    return yaml.safe_dump(test, sort_keys=False)


def conversation_changed() -> dict[str, str]:
    return labels("DuixConversationChanged", app="frontdesk", conversation="1234567890123456789")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("inside", [True, False], ids=["inside-window", "outside-window"])
def test_a_real_alertmanager_tickets_a_conversation_change_only_outside_the_window(
    tmp_path: Path, inside: bool
) -> None:
    binary = require_tool("prometheus-alertmanager")
    assert alerts()["DuixConversationChanged"]["labels"] == {"severity": "info"}
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v2"
    log = tmp_path / "alertmanager.log"
    with webhooks() as hooks:
        config = tmp_path / "alertmanager.yml"
        config.write_text(windowed_config(hooks, inside=inside))
        checked = run([require_tool("amtool"), "check-config", config])
        assert checked.returncode == 0, output(checked)
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ]
        with process(args, log):
            eventually(
                lambda: httpx.get(f"{api}/status", timeout=1).status_code == 200,
                timeout=20,
                what="Alertmanager",
            )
            posted = [{"labels": conversation_changed()}]
            httpx.post(f"{api}/alerts", json=posted, timeout=5).raise_for_status()
            eventually(
                lambda: "/duixwatch/notify" in hooks.received(),
                timeout=20,
                what="the info notice",
            )
            if inside:
                # The ticket route's pipeline ran and was muted: the window, not timing.
                eventually(
                    lambda: "route is within mute time" in log.read_text(errors="replace"),
                    timeout=20,
                    what="Alertmanager to mute the ticket route",
                )
            else:
                eventually(
                    lambda: "/duixwatch/ticket" in hooks.received(),
                    timeout=20,
                    what="the ticket",
                )
        expected = {"/duixwatch/notify"} if inside else {"/duixwatch/notify", "/duixwatch/ticket"}
        assert hooks.received() == expected, log.read_text(errors="replace")
