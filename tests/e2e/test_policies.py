"""Policies against the simulator over loopback, as an operator would run them: `duixwatch run`
and `duixwatch plan` as processes, sessions of chosen ages, and the simulator's state as proof."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import threading
import time

import httpx
import pytest
import yaml

from duixwatch.core.clock import SystemClock
from duixwatch.policy import audit
from tests.e2e.enforcing import Sim, age_policy, quota_policy, run_daemon
from tests.procs import DUIXWATCH, eventually

pytestmark = pytest.mark.e2e


def test_plan_shows_exactly_what_the_daemon_then_closes(sim: Sim) -> None:
    stale = sim.add(0, 3, 3600)
    fresh = sim.add(0, 2, 60)
    other = sim.add(1, 1, 7200)
    state_dir = sim.tmp / "state"
    config = sim.write_config(
        [age_policy(apps=[sim.app(0)["name"]])],
        state={"dir": str(state_dir), "audit_max_bytes": 4096},
    )
    with audit.AuditLog(state_dir / audit.AUDIT_FILENAME, clock=SystemClock()) as earlier:
        while (state_dir / audit.AUDIT_FILENAME).stat().st_size < 3000:  # the daemon's rotates
            earlier.write(cycle="c", event="abort", policy="p", app="a", app_id="1", reason="r")
    planned = subprocess.run(
        [*DUIXWATCH, "plan", "-c", str(config), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert planned.returncode == 0, planned.stderr
    (entry,) = json.loads(planned.stdout)["policies"]
    assert {a["session_id"] for a in entry["actions"]} == set(stale)
    assert sim.live(0) == set(stale) | set(fresh)  # plan never acts
    table = subprocess.run(
        [*DUIXWATCH, "plan", "-c", str(config)], capture_output=True, text=True, timeout=30
    )
    assert all(s in table.stdout for s in stale)
    assert "would stop" in table.stdout

    with run_daemon(config, sim.tmp / "daemon.log"):
        eventually(lambda: sim.live(0) == set(fresh), timeout=15, what="the stale sessions closed")
    assert sim.live(1) == set(other)  # not selected by the policy
    assert (state_dir / "audit.jsonl.1").exists()
    records = audit.read_audit(state_dir / "audit.jsonl", rotated=True).records
    intents = {r["session_id"] for r in records if r["event"] == "intent"}
    outcomes = {r["session_id"]: r["outcome"] for r in records if r["event"] == "outcome"}
    assert intents == set(stale)
    assert outcomes == dict.fromkeys(stale, "stopped")
    after = subprocess.run(
        [*DUIXWATCH, "plan", "-c", str(config), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    recent = json.loads(after.stdout)["recent_actions"]  # read across the rotated files
    assert {(a["session_id"], a["outcome"]) for a in recent} == {(s, "stopped") for s in stale}


def test_dry_run_policies_close_nothing_but_say_what_they_would(sim: Sim) -> None:
    stale = sim.add(0, 2, 3600)
    config = sim.write_config([age_policy(dry_run=True)])
    with run_daemon(config, sim.tmp / "daemon.log"):
        eventually(
            lambda: len(audit.read_audit(sim.tmp / "state" / "audit.jsonl").records) >= 2,
            timeout=15,
            what="dry-run records",
        )
        time.sleep(2)
    assert sim.live(0) >= set(stale)
    assert sim.stops() == 0
    records = audit.read_audit(sim.tmp / "state" / "audit.jsonl").records
    assert {r["event"] for r in records} == {"dry_run"}


def test_the_quota_policy_trims_the_newest_only_after_for_seconds(sim: Sim) -> None:
    old = sim.add(0, 3, 600)
    newest = sim.add(0, 2, 10)
    config = sim.write_config([quota_policy(sim.app(0)["name"])])
    with run_daemon(config, sim.tmp / "daemon.log"):
        started = time.monotonic()
        eventually(lambda: sim.live(0) == set(old), timeout=20, what="the trim")
        assert time.monotonic() - started >= 3  # not before for_seconds
    assert sim.live(0) == set(old)
    assert not sim.live(0) & set(newest)


def test_close_all_drains_only_the_confirmed_app(sim: Sim) -> None:
    sim.add(0, 4, 30)
    kept = sim.add(1, 4, 30)
    target = sim.app(0)
    policy = {
        "name": "emergency-drain",
        "apps": [target["name"]],
        "match": {"max_sessions": 3, "for_seconds": 0},
        "action": "close_all",
        "confirm_app_id": str(target["app_id"]),
        "dry_run": False,
    }
    config = sim.write_config([policy], enforcement={"enabled": True, "allow_close_all": True})
    with run_daemon(config, sim.tmp / "daemon.log"):
        eventually(lambda: sim.live(0) == set(), timeout=15, what="the drain")
    assert sim.live(1) == set(kept)


def test_a_killed_daemon_loses_no_issued_stop_and_no_session_age(sim: Sim) -> None:
    """SIGKILL while stopping sessions: every stop the platform received has its intent line,
    the audit log reads back (a torn last line is tolerated and repaired), and ages survive."""
    ageless = sim.add(1, 2, 0, with_start=False)  # aged from first sight, persisted
    stale = sim.add(0, 30, 3600)
    httpx.post(
        f"{sim.url}/_sim/faults",
        json={"app": "*", "endpoint": "sessionStop", "latency_seconds": 0.2},
        timeout=5,
    ).raise_for_status()
    config = sim.write_config(
        [age_policy(apps=[sim.app(0)["name"]])],
        enforcement={"enabled": True, "max_stops_per_second": 5},
    )
    audit_path = sim.tmp / "state" / "audit.jsonl"
    with run_daemon(config, sim.tmp / "daemon-1.log") as daemon:
        base = f"http://{yaml.safe_load(config.read_text())['server']['listen']}"
        first_seen = eventually(
            lambda: _first_seen(base, sim.app(1)["name"]), timeout=15, what="first sight"
        )
        eventually(lambda: sim.stops() >= 5, timeout=20, what="stops under way")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
    time.sleep(0.5)  # a stop in flight at the kill may still land on the platform
    closed = set(stale) - sim.live(0)
    received = sim.stops()  # the one in flight at the kill may have arrived without closing
    assert 1 <= len(closed) <= received < len(stale)
    read = audit.read_audit(audit_path)
    assert read.bad_lines == []
    assert read.torn_lines in ([], [len(audit_path.read_bytes().splitlines())])
    intents = {r["session_id"] for r in read.records if r["event"] == "intent"}
    assert closed <= intents  # every stop the platform received was recorded first
    assert len(intents) >= received

    time.sleep(1.5)  # the ageless sessions get older; a reset would make them young again
    with run_daemon(config, sim.tmp / "daemon-2.log"):
        after = eventually(
            lambda: _first_seen(base, sim.app(1)["name"]), timeout=15, what="restart"
        )
        eventually(lambda: sim.live(0) == set(), timeout=30, what="the rest stopped")
    assert after == first_seen
    assert set(ageless) == set(after)
    reread = audit.read_audit(audit_path)
    assert reread.bad_lines == []
    stopped = {
        r["session_id"]
        for r in reread.records
        if r["event"] == "outcome" and r["outcome"] in ("stopped", "already_closed")
    }
    assert set(stale) - closed <= stopped


def _first_seen(base: str, app: str) -> dict[str, str] | None:
    doc = httpx.get(f"{base}/status", params={"app": app}, timeout=2).json()
    if not doc["apps"]:
        return None  # not polled yet
    (entry,) = doc["apps"]
    sessions = entry.get("sessions") or {}
    items = sessions.get("items") or []
    seen = {i["session_id"]: i["first_seen_at"] for i in items if i["first_seen_at"]}
    return seen or None


def test_after_a_sigkill_the_call_it_cut_off_gets_an_unknown_outcome_at_restart(
    sim: Sim,
) -> None:
    """SIGKILL while a stop is in flight leaves its intent without an outcome; the restarted
    daemon writes `outcome: unknown` for it at the APP's first poll, saying whether the session
    was still live, and leaves no intent open."""
    stale = sim.add(0, 3, 3600)
    sim.fault(app="*", endpoint="sessionStop", latency_seconds=30)  # the stop never returns
    config = sim.write_config([age_policy(apps=[sim.app(0)["name"]])])
    audit_path = sim.tmp / "state" / "audit.jsonl"
    with run_daemon(config, sim.tmp / "daemon-1.log") as daemon:
        eventually(lambda: sim.stops() >= 1, timeout=20, what="a stop in flight")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
    (cut,) = audit.open_intents(audit.read_audit(audit_path).records)
    assert cut["session_id"] in stale
    httpx.delete(f"{sim.url}/_sim/faults", timeout=5).raise_for_status()
    disabled = yaml.safe_load(config.read_text())
    disabled["enforcement"]["enabled"] = False  # the restart only settles, it stops nothing
    config.write_text(yaml.safe_dump(disabled))
    with run_daemon(config, sim.tmp / "daemon-2.log"):
        eventually(
            lambda: not audit.open_intents(audit.read_audit(audit_path).records),
            timeout=20,
            what="the open intent settled",
        )
    records = audit.read_audit(audit_path).records
    (settled,) = [
        r for r in records if r["event"] == "outcome" and r["session_id"] == cut["session_id"]
    ]
    assert settled["outcome"] == "unknown"
    assert (settled["cycle"], settled["policy"]) == (cut["cycle"], cut["policy"])
    live = cut["session_id"] in sim.live(0)
    expected = "still live" if live else "gone"
    assert f"the session was {expected} at the first poll after the restart" in settled["reason"]
    log = (sim.tmp / "daemon-2.log").read_text()
    assert "audit_open_intents" in log
    assert "audit_intent_settled" in log


@pytest.mark.timeout(90)
def test_a_full_disk_aborts_the_quota_policy_as_state_unavailable_and_it_resumes(
    sim: Sim,
) -> None:
    """The disk fills (the daemon's file-size limit set to 0 from outside: every write to a
    file fails, as on a full disk) while a `max_sessions` policy must start its for_seconds
    clock: it aborts as `state_unavailable` (logged once, counted, on /status), polling goes on,
    nothing is stopped; once writes work again it resumes and trims after for_seconds."""
    kept = sim.add(0, 2, 600)
    policy = quota_policy(sim.app(0)["name"], match={"max_sessions": 2, "for_seconds": 3})
    config = sim.write_config([policy])
    base = f"http://{yaml.safe_load(config.read_text())['server']['listen']}"
    lines: list[str] = []
    # A pipe, not a file, for its output: the limit must not stop it from logging.
    with subprocess.Popen(
        [*DUIXWATCH, "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as daemon:
        reader = threading.Thread(target=lambda: lines.extend(daemon.stdout or ()), daemon=True)
        reader.start()
        try:
            eventually(
                lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200,
                timeout=20,
                what="/readyz",
            )
            resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
            extra = sim.add(0, 2, 10)  # over the quota: the clock must be written now

            def aborted() -> float | None:
                text = httpx.get(f"{base}/metrics", timeout=2).text
                for line in text.splitlines():
                    if line.startswith("duixwatch_policy_aborts_total{") and (
                        'reason="state_unavailable"' in line
                    ):
                        return float(line.rsplit(" ", 1)[1]) >= 3 or None
                return None

            eventually(aborted, timeout=20, what="three state_unavailable aborts")
            status = httpx.get(f"{base}/status", timeout=2).json()
            assert [p["abort"]["reason"] for p in status["policies"]] == ["state_unavailable"]
            assert "state_unavailable" in status["storage"]["enforcement_blocked"]
            blocked = 'duixwatch_enforcement_blocked{reason="state_unavailable"}'
            assert f"{blocked} 1.0" in httpx.get(f"{base}/metrics", timeout=2).text
            assert sim.live(0) == set(kept) | set(extra)  # nothing stopped meanwhile
            assert httpx.get(f"{base}/healthz", timeout=2).status_code == 200  # still polling
            resource.prlimit(
                daemon.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
            eventually(lambda: sim.live(0) == set(kept), timeout=20, what="the trim, resumed")
            assert f"{blocked} 0.0" in httpx.get(f"{base}/metrics", timeout=2).text
        finally:
            daemon.terminate()
            daemon.wait(timeout=20)
            reader.join(timeout=5)
    events = [json.loads(line).get("event") for line in lines if line.startswith("{")]
    assert events.count("policy_state_unavailable") == 1, events
    assert "policy_state_recovered" in events
    assert "policy_cycle_crashed" not in events
    assert not any("Traceback" in line for line in lines)


@pytest.mark.timeout(60)
def test_sigusr1_reopens_the_audit_log_logrotate_moved_away(sim: Sim) -> None:
    """logrotate's `create` mode as an operator runs it: move the file, then SIGUSR1. The
    daemon opens a new audit.jsonl at once, keeps running, and the next stop's intent and
    outcome land in it; the moved file keeps every earlier line."""
    config = sim.write_config([age_policy()])
    base = f"http://{yaml.safe_load(config.read_text())['server']['listen']}"
    state_dir = sim.tmp / "state"
    first = sim.add(0, 1, 3600)
    with run_daemon(config, sim.tmp / "daemon.log") as daemon:
        eventually(lambda: not sim.live(0) & set(first), timeout=20, what="the first stop")
        moved = state_dir / "audit.jsonl.1"
        (state_dir / audit.AUDIT_FILENAME).rename(moved)
        daemon.send_signal(signal.SIGUSR1)
        eventually(
            lambda: (state_dir / audit.AUDIT_FILENAME).exists(), timeout=10, what="the new file"
        )
        second = sim.add(0, 1, 3600)
        eventually(lambda: not sim.live(0) & set(second), timeout=20, what="the second stop")
        assert httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        daemon.terminate()
        daemon.wait(timeout=20)
    old = [(r["session_id"], r["event"]) for r in audit.read_audit(moved).records]
    new = [
        (r["session_id"], r["event"]) for r in audit.read_audit(state_dir / "audit.jsonl").records
    ]
    assert old == [(first[0], "intent"), (first[0], "outcome")]
    assert new == [(second[0], "intent"), (second[0], "outcome")]
    assert "audit_reopened" in (sim.tmp / "daemon.log").read_text()
