"""The operations kit end to end, on 127.0.0.1: the simulator, ``duixwatch run`` and a real
Prometheus (Debian's package) that scrapes it every second and loads deploy/prometheus/rules.yaml.

After a few scrapes, every query of every dashboard panel must return data. Panels whose
description starts with "Only when …" have data only when that happens; each such condition is
induced here (sessions are created and two of them hung up, an auth fault is injected, policies
are configured so that one acts in dry run and one aborts on its cap, conversations and avatars
are watched, one avatar still training and one failed), so no panel goes unchecked. The auth
fault must also put DuixAppAuthRejected into the pending (or firing) state in Prometheus'
/api/v1/alerts, with the production `for:` values of rules.yaml; the failed avatar fires
DuixAvatarTrainingFailed, and a conversation changed through the simulator fires
DuixConversationChanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.ops_support import (
    DASHBOARDS,
    DUIXWATCH,
    RULES,
    alerts,
    eventually,
    free_port,
    load_json,
    load_yaml,
    output,
    panels,
    process,
    run,
    simulator,
)
from tests.tools import require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: Grafana's $__rate_interval is at least four scrape intervals; Prometheus scrapes every 1 s.
RATE_INTERVAL = "10s"

#: What each "Only when …" description waits for, and how this test makes it happen.
CONDITIONS = {
    "Only when an app has a session with a known start": "sessions",  # created by the fixture
    "Only when DUIX calls fail": "failures",  # an injected auth fault
    "Only when policies act": "policies",  # dry-run policies that act and abort
    "Only when dialog probes are configured": "dialog",  # a probe of the simulator's bot
    "Only when conversations are watched": "conversations",  # ids for one app, `auto` for one
    "Only when avatars are watched": "avatars",  # two avatars created in the simulator
    "Only when an avatar is training": "training",  # one of them trains for 10 minutes
    "Only when sessions have ended": "ended",  # the fixture hangs up two sessions
}

#: How old the two sessions the fixture hangs up are when it creates them: their observed
#: lifetimes (from the platform's start time) then fall in the (300 s, 600 s] bucket of
#: duix_app_session_duration_seconds.
ENDED_AGE_SECONDS = 400

#: The avatars the fixture creates on the first app: (name, seconds the simulator trains it).
#: A name containing "fail" fails; the other is still training while the tests run.
AVATARS = (("e2e-fail", 0), ("e2e-host", 600))

POLICIES = [
    # Two sessions of the first app are older than 45 minutes: two dry-run would-stops a cycle.
    {
        "name": "max-session-age",
        "apps": ["*"],
        "match": {"session_age_over_seconds": 2700},
        "action": "stop_sessions",
        "dry_run": True,
        "max_actions_per_cycle": 10,
        "max_actions_percent": 100,
    },
    # It matches those two and more than its cap of one: it aborts (max_actions) every cycle.
    {
        "name": "tight-cap",
        "apps": ["*"],
        "match": {"session_age_over_seconds": 60},
        "action": "stop_sessions",
        "dry_run": True,
        "max_actions_per_cycle": 1,
        "max_actions_percent": 100,
    },
]


def condition(panel: dict[str, Any]) -> str | None:
    """The condition a panel's data depends on, from its description; None: always has data."""
    description: str = panel["description"]
    if not description.startswith("Only when"):
        return None
    for prefix, name in CONDITIONS.items():
        if description.startswith(prefix):
            return name
    raise AssertionError(f"{panel['title']}: unknown condition in {description!r}")


def queries(only: str | None) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) of every target whose panel depends on ``only``."""
    return [
        (path.name, panel["title"], target["expr"])
        for path in DASHBOARDS
        for panel in panels(load_json(path))
        if condition(panel) == only
        for target in panel["targets"]
    ]


class Stack:
    """The running processes and how to ask them things."""

    def __init__(
        self, sim: str, daemon: str, prometheus: str, config: dict[str, Any], daemon_log: Path
    ) -> None:
        self.sim, self.daemon, self.prometheus, self.config = sim, daemon, prometheus, config
        self.app = config["apps"][0]["name"]  # the app with the old sessions
        self.daemon_log = daemon_log  # what `duixwatch run` wrote (JSON lines: not a terminal)

    def query(self, expr: str) -> list[dict[str, Any]]:
        expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$app", self.app)
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/alerts", timeout=5)
        found: list[dict[str, Any]] = response.json()["data"]["alerts"]
        return found

    def daemon_exports(self, metric: str) -> bool:
        text = httpx.get(f"{self.daemon}/metrics", timeout=5).text
        return any(line.startswith(metric) for line in text.splitlines())


def create_avatar(sim: str, app: dict[str, Any], name: str, training_seconds: float) -> str:
    """An avatar of ``app`` created in the simulator with the CLI; its id."""
    httpx.put(
        f"{sim}/_sim/avatars/training", json={"seconds": training_seconds}, timeout=5
    ).raise_for_status()
    created = run(
        [
            *DUIXWATCH,
            "avatar",
            "create",
            "--name",
            name,
            "--video-url",
            "https://example.com/e2e-avatar.mp4",
            "--app-id",
            app["app_id"],
            "--app-key",
            app["app_key"],  # a simulator key: public, not a secret
            "--base-url",
            sim,
            "-o",
            "json",
        ],
        timeout=30,
    )
    assert created.returncode == 0, output(created)
    avatar_id: str = json.loads(created.stdout)["avatar_id"]
    return avatar_id


def hang_up(stack: Stack, app: dict[str, Any], sessions: list[str]) -> None:
    """End ``sessions`` of ``app`` in the simulator one at a time, each once Prometheus has the
    previous one in duix_app_session_duration_seconds_count: the histogram then rises while
    Prometheus watches it, so its rates (and the percentiles of the dashboards) are numbers."""
    selector = f'{{app="{app["name"]}"}}'
    live = 2 + len(sessions)  # the two old sessions of the first app, and these
    eventually(
        lambda: stack.query(f"duix_app_sessions{selector} == {live}"),
        timeout=20,
        what="the sessions to hang up in Prometheus",
    )
    for ended, session_id in enumerate(sessions, start=1):
        httpx.delete(
            f"{stack.sim}/_sim/apps/{app['app_id']}/sessions/{session_id}", timeout=5
        ).raise_for_status()
        count = f"duix_app_session_duration_seconds_count{selector} == {ended}"
        eventually(partial(stack.query, count), timeout=20, what=f"{ended} ended session(s)")


def log_events(stack: Stack) -> list[dict[str, Any]]:
    """The daemon's log lines so far that are JSON objects (structlog's events)."""
    events = []
    for line in stack.daemon_log.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events


def empty_panels(stack: Stack, targets: list[tuple[str, str, str]]) -> list[str] | None:
    """None when every query returns data, else the ones that do not (for eventually())."""
    empty = [f"{d} / {t}: {e}" for d, t, e in targets if not stack.query(e)]
    return empty or None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("ops-e2e")
    with simulator(tmp, apps=3, seed=41) as (sim, config):
        apps = config["apps"]
        for app, count, age in ((apps[0], 2, 3000), (apps[1], 1, 600)):
            httpx.post(
                f"{sim}/_sim/apps/{app['app_id']}/sessions",
                json={"count": count, "age_seconds": age},
                timeout=5,
            ).raise_for_status()
        # Two more sessions of the first app, hung up once the daemon watches them ("Only when
        # sessions have ended"). max-session-age (45 min) leaves them alone; tight-cap, which
        # aborts anyway, matches them too while they last.
        created = httpx.post(
            f"{sim}/_sim/apps/{apps[0]['app_id']}/sessions",
            json={"count": 2, "age_seconds": ENDED_AGE_SECONDS},
            timeout=5,
        )
        created.raise_for_status()
        ending = [s["session_id"] for s in created.json()["sessions"]]
        for app in apps:
            app["poll_interval_seconds"] = 1
        # Conversations: the first app's by id, the second's (it has a session) by `auto`.
        state = httpx.get(f"{sim}/_sim/state", timeout=5).json()
        ids = {a["app_id"]: a["conversation_ids"] for a in state["apps"]}
        apps[0]["conversations"] = ids[apps[0]["app_id"]]
        apps[1]["conversations"] = "auto"
        for app in apps[:2]:
            app["conversation_poll_interval_seconds"] = 1
        apps[0]["avatars"] = [create_avatar(sim, apps[0], n, t) for n, t in AVATARS]
        daemon = f"127.0.0.1:{free_port()}"
        config["server"] = {"listen": daemon}
        config["state"] = {"dir": str(tmp / "state")}
        config["duix"] |= {"read_retries": 0, "request_timeout_seconds": 2}
        config["policies"] = POLICIES
        config["dialog_probes"] = [
            {"name": "bot", "url": f"{sim}/dialog/stream", "mode": "stream", "interval_seconds": 1}
        ]
        (tmp / "duixwatch.yaml").write_text(yaml.safe_dump(config))
        prom = f"127.0.0.1:{free_port()}"
        (tmp / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": "duixwatch", "static_configs": [{"targets": [daemon]}]}
                    ],
                }
            )
        )
        with (
            process([*DUIXWATCH, "run", "-c", tmp / "duixwatch.yaml"], tmp / "daemon.log"),
            process(
                [
                    prometheus,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address={prom}",
                ],
                tmp / "prometheus.log",
            ),
        ):
            running = Stack(
                f"{sim}", f"http://{daemon}", f"http://{prom}", config, tmp / "daemon.log"
            )
            eventually(
                lambda: httpx.get(f"{running.daemon}/readyz", timeout=1).status_code == 200,
                timeout=30,
                what="the daemon's /readyz",
            )
            eventually(
                lambda: running.query('count_over_time(up{job="duixwatch"}[1m]) >= 5'),
                timeout=40,
                what="five scrapes of the daemon",
            )
            hang_up(running, apps[0], ending)
            yield running


def test_prometheus_loads_every_rule_and_evaluates_it_without_error(stack: Stack) -> None:
    response = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=5).json()
    loaded = [rule for group in response["data"]["groups"] for rule in group["rules"]]
    expected = [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]
    assert len(loaded) == len(expected)
    for rule in loaded:
        assert rule["health"] in {"ok", "unknown"}, rule
        assert not rule.get("lastError"), rule


def test_every_panel_has_data_after_a_few_scrapes(stack: Stack) -> None:
    """Including the "only when an app has a session" panels: the fixture created sessions."""
    targets = queries(None) + queries("sessions")
    assert len(queries("sessions")) >= 2
    eventually(lambda: empty_panels(stack, targets) is None, timeout=20, what="panel data")


def test_the_session_duration_panels_have_data_once_sessions_have_ended(stack: Stack) -> None:
    """The fixture hung up two sessions of the first app (the App dashboard's): the platform
    closed them, and their lifetimes count from the platform's start time."""
    targets = queries("ended")
    assert len(targets) >= 6  # p50, p90 and p99 on each dashboard
    eventually(lambda: empty_panels(stack, targets) is None, timeout=30, what="duration data")
    selector = f'app="{stack.app}"'
    assert stack.query(f'duix_app_sessions_ended_total{{{selector},closed_by="platform"}} == 2')
    assert stack.query(f'duix_app_sessions_ended_total{{{selector},closed_by="policy"}} == 0')
    assert stack.query(f"duix_app_sessions{{{selector}}} == 2")  # the two old ones are left
    percentiles = [e for d, _, e in targets if d == "duixwatch-app.json"]
    assert len(percentiles) == 3

    def values() -> list[float] | None:
        found = [float(r["value"][1]) for e in percentiles for r in stack.query(e)]
        complete = len(found) == len(percentiles) and all(math.isfinite(v) for v in found)
        return found if complete else None

    # Both lasted ENDED_AGE_SECONDS and the fixture's few seconds: every percentile lies in
    # their bucket (300 s, 600 s]; from the first sighting it would be below 300 s.
    found = eventually(values, timeout=20, what="finite duration percentiles")
    assert all(300 < v <= 600 for v in found), found
    # The day's session-minutes: the recording rule has them for the app.
    assert stack.query(f"app:duix_app_session_minutes:increase1d{{{selector}}} > 0")


def test_the_policy_panels_have_data_once_policies_act(stack: Stack) -> None:
    assert stack.daemon_exports("duixwatch_policy_info")
    targets = queries("policies")
    assert len(targets) >= 6
    eventually(lambda: empty_panels(stack, targets) is None, timeout=30, what="policy data")
    # An abort of a cap is what DuixwatchPolicyAborting is for: it fires at once (no `for:`).
    eventually(
        lambda: any(
            a["labels"]["alertname"] == "DuixwatchPolicyAborting"
            and a["labels"]["policy"] == "tight-cap"
            for a in stack.alerts()
        ),
        timeout=20,
        what="DuixwatchPolicyAborting for tight-cap",
    )


def test_the_conversation_and_avatar_panels_have_data(stack: Stack) -> None:
    assert stack.daemon_exports("duix_conversation_info")
    targets = queries("conversations") + queries("avatars") + queries("training")
    assert len(queries("conversations")) >= 5  # the table's four queries and conversations up
    assert queries("avatars")
    assert queries("training")
    eventually(lambda: empty_panels(stack, targets) is None, timeout=30, what="conversation data")
    auto = stack.config["apps"][1]["name"]  # its ids come from its live session
    assert stack.query(f'duix_conversation_up{{app="{auto}"}} == 1')


def test_a_failed_training_fires_its_alert(stack: Stack) -> None:
    failed = stack.config["apps"][0]["avatars"][0]  # AVATARS[0]: e2e-fail
    found = eventually(
        lambda: [
            a
            for a in stack.alerts()
            if a["labels"]["alertname"] == "DuixAvatarTrainingFailed"
            and a["labels"]["avatar"] == failed
            and a["state"] == "firing"  # no `for:`
        ],
        timeout=20,
        what="DuixAvatarTrainingFailed for e2e-fail",
    )
    assert found[0]["labels"]["severity"] == "warning"
    training = stack.config["apps"][0]["avatars"][1]
    assert stack.query(f'duix_avatar_training_status{{avatar="{training}"}} == 0')


def test_only_the_induced_alerts_are_active_in_steady_state(stack: Stack) -> None:
    """The rules against real series: nothing but the abort that the tight-cap policy causes
    and the avatar that the fixture made fail (no conversation has changed yet)."""
    active = {a["labels"]["alertname"] for a in stack.alerts()}
    assert active <= {"DuixwatchPolicyAborting", "DuixAvatarTrainingFailed"}, stack.alerts()


def test_an_auth_fault_makes_the_auth_alert_pending_and_fills_the_error_panels(
    stack: Stack,
) -> None:
    assert alerts()["DuixAppAuthRejected"]["for"] != "0s"  # production `for:`, hence pending
    fault = {"app": "*", "endpoint": "*", "reject_token": True}
    httpx.post(f"{stack.sim}/_sim/faults", json=fault, timeout=5).raise_for_status()
    try:

        def auth_alert() -> list[dict[str, Any]] | None:
            found = [
                a
                for a in stack.alerts()
                if a["labels"]["alertname"] == "DuixAppAuthRejected"
                and a["state"] in {"pending", "firing"}
            ]
            return found or None

        found = eventually(auth_alert, timeout=30, what="DuixAppAuthRejected pending")
        assert {a["labels"]["app"] for a in found} <= {a["name"] for a in stack.config["apps"]}
        assert all(a["labels"]["severity"] == "critical" for a in found)
        targets = queries("failures")
        assert targets
        eventually(lambda: empty_panels(stack, targets) is None, timeout=20, what="error data")
    finally:
        httpx.delete(f"{stack.sim}/_sim/faults", timeout=5).raise_for_status()


def test_the_dialog_panels_have_data_and_a_failing_backend_makes_its_alert_pending(
    stack: Stack,
) -> None:
    targets = queries("dialog")
    assert len(targets) >= 5
    eventually(lambda: empty_panels(stack, targets) is None, timeout=30, what="dialog data")
    assert alerts()["DuixDialogProbeFailing"]["for"] != "0s"
    httpx.post(
        f"{stack.sim}/_sim/dialog/faults", json={"status": 503}, timeout=5
    ).raise_for_status()
    try:
        eventually(
            lambda: [
                a
                for a in stack.alerts()
                if a["labels"]["alertname"] == "DuixDialogProbeFailing"
                and a["labels"]["probe"] == "bot"
                and a["state"] in {"pending", "firing"}
            ],
            timeout=20,
            what="DuixDialogProbeFailing pending",
        )
        assert stack.query(
            'duixwatch_dialog_probe_failures_total{probe="bot",reason="http_status"} > 0'
        )
    finally:
        httpx.delete(f"{stack.sim}/_sim/dialog/faults", timeout=5).raise_for_status()


def test_a_conversation_change_is_counted_and_fires_its_alert(stack: Stack) -> None:
    """Last: DuixConversationChanged then stays active for an hour."""
    app = stack.config["apps"][0]
    (conversation,) = app["conversations"]
    selector = f'{{app="{app["name"]}",conversation="{conversation}"}}'
    series = f"duix_conversation_config_changes_total{selector}"
    eventually(lambda: stack.query(f"{series} == 0"), timeout=20, what="the first read")
    (info,) = stack.query(f"duix_conversation_info{selector}")
    old_voice = info["metric"]["tts_speaker"]
    assert old_voice
    assert old_voice != "e2e-voice"
    httpx.patch(
        f"{stack.sim}/_sim/apps/{app['app_id']}/conversations/{conversation}",
        json={"detailDto.ttsSpeaker": "e2e-voice"},
        timeout=5,
    ).raise_for_status()
    eventually(lambda: stack.query(f"{series} == 1"), timeout=20, what="the change counted")
    # the daemon logged it once, with the key path and neither the new value nor the old one
    logged = eventually(
        lambda: [e for e in log_events(stack) if e["event"] == "conversation_changed"],
        timeout=10,
        what="conversation_changed in the daemon's log",
    )
    (changed,) = logged
    assert (changed["app"], changed["conversation"]) == (app["name"], conversation)
    assert changed["paths"] == ["detailDto.ttsSpeaker"]
    assert "e2e-voice" not in stack.daemon_log.read_text()
    assert old_voice not in json.dumps(changed)
    found = eventually(
        lambda: [
            a
            for a in stack.alerts()
            if a["labels"]["alertname"] == "DuixConversationChanged"
            and a["labels"]["conversation"] == conversation
            and a["state"] == "firing"  # no `for:`
        ],
        timeout=20,
        what="DuixConversationChanged",
    )
    assert found[0]["labels"]["severity"] == "info"
    assert found[0]["labels"]["app"] == app["name"]
