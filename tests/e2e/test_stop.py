"""Stopping means stopping (issue 16), as an operator meets it: `duixwatch run` enforcing an age
policy against the simulator with a slow `sessionStop`, then SIGTERM (or a reload that takes the
policy away) in the middle of the cycle. Counted on the simulator's side: the calls that reached
it after the signal; on the daemon's: the exit time and the audit log."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import yaml

from duixwatch.policy import audit
from tests.e2e.enforcing import APPS, Sim, age_policy, run_daemon
from tests.procs import DUIXWATCH, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.exclusive]  # exit times: run alone

#: 20 sessions an APP, both APPs, older than the policy's threshold (the issue's reproduction).
PER_APP, AGE = 20, 3000
POLICY = age_policy(
    match={"session_age_over_seconds": 2700}, max_actions_per_cycle=40, max_actions_percent=100
)


def ts(record: dict[str, Any]) -> float:
    return datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def stale_sessions(sim: Sim, latency: float) -> set[str]:
    ids = set(sim.add(0, PER_APP, AGE)) | set(sim.add(1, PER_APP, AGE))
    sim.fault(app="*", endpoint="sessionStop", latency_seconds=latency)
    return ids


def in_flight_at(records: list[dict[str, Any]], moment: float) -> int:
    """Calls whose intent was written before ``moment`` and outcome was not."""
    intents = {
        (r["app"], r["session_id"]) for r in records if r["event"] == "intent" and ts(r) < moment
    }
    ended = {
        (r["app"], r["session_id"]) for r in records if r["event"] == "outcome" and ts(r) < moment
    }
    return len(intents - ended)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("latency", "shutdown_timeout", "request_timeout", "in_flight_outcome"),
    [
        (0.5, 10, 10, "stopped"),
        (3.0, 10, 10, "stopped"),
        # A platform slower than the whole shutdown budget: the call is cut, not waited for.
        (30.0, 4, 20, "interrupted"),
    ],
    ids=["stop-0.5s", "stop-3s", "stop-hangs"],
)
def test_after_sigterm_no_stop_starts_and_the_process_exits_within_its_shutdown_timeout(
    sim: Sim,
    latency: float,
    shutdown_timeout: float,
    request_timeout: float,
    in_flight_outcome: str,
) -> None:
    stale = stale_sessions(sim, latency)
    duix = {**sim.config["duix"], "request_timeout_seconds": request_timeout}
    config = sim.write_config(
        [POLICY],
        poll_interval=3,
        enforcement={"enabled": True, "max_stops_per_second": 5},
        daemon={"shutdown_timeout_seconds": shutdown_timeout},
        duix=duix,
    )
    audit_path = sim.tmp / "state" / "audit.jsonl"
    with run_daemon(config, sim.tmp / "daemon.log") as daemon:
        # Three stops reached the platform (two, one an APP, for a platform that hangs), and
        # both APPs' cycles are under way (so both hold a plan of 20 when the signal comes).
        def under_way() -> bool:
            apps = {r["app"] for r in audit.read_audit(audit_path).records}
            return len(apps) == APPS and sim.stops() >= (3 if latency < 5 else APPS)

        eventually(under_way, timeout=60, what="stops under way in both APPs")
        received_before = sim.stops()
        signalled = time.time()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=shutdown_timeout + 20)
        took = time.time() - signalled
    log = (sim.tmp / "daemon.log").read_text()
    assert code == 0, log[-3000:]
    assert took <= shutdown_timeout, f"exited {took:.1f}s after SIGTERM"
    time.sleep(min(latency, 3.5) + 0.5)  # a call in flight at the signal lands meanwhile
    records = audit.read_audit(audit_path).records
    in_flight = in_flight_at(records, signalled)
    after = sim.stops() - received_before
    assert after <= in_flight <= APPS, (after, in_flight)
    # Nothing started once the signal was handled (a few ms for the loop to see it).
    late = [r for r in records if r["event"] == "intent" and ts(r) > signalled + 0.25]
    assert late == []
    intents = {r["session_id"] for r in records if r["event"] == "intent"}
    assert len(intents) == sim.stops()  # every call the platform received was recorded first
    outcomes = {r["session_id"]: r["outcome"] for r in records if r["event"] == "outcome"}
    assert set(outcomes) == intents  # each has its outcome: none left open
    cut = {sid for sid, outcome in outcomes.items() if outcome != "stopped"}
    assert {outcomes[sid] for sid in cut} <= {in_flight_outcome}
    aborted = {r["session_id"] for r in records if r["event"] == "abort"}
    assert all(r["reason"].startswith("shutdown: ") for r in records if r["event"] == "abort")
    # Every planned session not stopped is accounted for: aborted, or cut in flight.
    live = sim.live(0) | sim.live(1)
    assert live <= aborted | cut
    assert aborted.isdisjoint(intents)
    assert aborted | intents == stale  # the two plans held every stale session

    # `plan` after the stop shows the aborted ones again (they are still live, still too old).
    planned = subprocess.run(
        [*DUIXWATCH, "plan", "-c", str(config), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert planned.returncode == 0, planned.stderr
    shown = {a["session_id"] for p in json.loads(planned.stdout)["policies"] for a in p["actions"]}
    assert shown == live


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "change", ["policy removed", "enforcement disabled", "policy dry_run"], ids=str
)
def test_a_reload_that_takes_the_policy_away_stops_its_calls_at_once(sim: Sim, change: str) -> None:
    stale_sessions(sim, 0.5)
    sections: dict[str, Any] = {"enforcement": {"enabled": True, "max_stops_per_second": 5}}
    config = sim.write_config([POLICY], poll_interval=3, **sections)
    doc = yaml.safe_load(config.read_text())
    base = f"http://{doc['server']['listen']}"
    with run_daemon(config, sim.tmp / "daemon.log") as daemon:
        eventually(lambda: sim.stops() >= 3, timeout=60, what="stops under way")
        if change == "policy removed":
            doc["policies"] = []
        elif change == "enforcement disabled":
            doc["enforcement"]["enabled"] = False
        else:
            doc["policies"][0]["dry_run"] = True
        config.write_text(yaml.safe_dump(doc))
        signalled = time.time()
        daemon.send_signal(signal.SIGHUP)

        def reloaded() -> float | None:
            last = httpx.get(f"{base}/status", timeout=2).json()["last_reload"]
            at = datetime.fromisoformat(last["at"]).timestamp()
            return at if last["ok"] and at >= signalled - 0.05 else None

        in_force = eventually(reloaded, timeout=20, what="the reload")
        received = sim.stops()
        time.sleep(2.5)  # five more stops' worth of time at 0.5 s each, per APP
        assert sim.stops() - received <= APPS  # at most the ones in flight at the reload
        assert daemon.poll() is None
    records = audit.read_audit(sim.tmp / "state" / "audit.jsonl").records
    late = [r for r in records if r["event"] == "intent" and ts(r) > in_force]
    assert late == []
    aborts = [r for r in records if r["event"] == "abort"]
    assert aborts, "the stops planned and not made are recorded"
    assert all(r["reason"].startswith("reload: ") for r in aborts)
    intents = {r["session_id"] for r in records if r["event"] == "intent"}
    assert len(intents) == sim.stops()
