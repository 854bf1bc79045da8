"""daemon with broken storage: polling and metrics go on, enforcement stops and says so (log,
``duixwatch_enforcement_blocked``, ``/status``), and resumes by itself; a corrupt state database
is moved aside; the audit log rotates and ``/status`` reads back across the rotated files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from duixwatch.core.clock import SystemClock
from duixwatch.policy import audit
from duixwatch.sim import Simulator
from duixwatch.watch import state
from tests.fakes import START
from tests.test_daemon import WAIT_SECONDS, running, value, wait_for, write_config


@pytest.fixture
def sim() -> Simulator:
    return Simulator(apps=2, seed=23, clock=SystemClock(), workload=False)


def enforcing(sim: Simulator, tmp_path: Path, **state_extra: Any) -> Path:
    return write_config(
        tmp_path / "c.yaml",
        sim,
        enforcement={"enabled": True, "max_stops_per_second": 100},
        state={"dir": str(tmp_path / "state"), **state_extra},
        policies=[
            {
                "name": "max-age",
                "match": {"session_age_over_seconds": 2700},
                "action": "stop_sessions",
                "dry_run": False,
                "max_actions_per_cycle": 100,
                "max_actions_percent": 100,
            }
        ],
    )


async def until(what: str, check: Any) -> Any:
    with anyio.fail_after(WAIT_SECONDS):
        while not (result := await check()):
            await anyio.sleep(0.05)
    return result


async def metric(http: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    return value((await http.get("/metrics")).text, name, **labels)


async def two_audit_aborts(http: httpx.AsyncClient, app: str) -> None:
    """Wait until the age policy has aborted twice on ``app`` as audit_unavailable."""

    async def aborted() -> bool:
        n = await metric(
            http,
            "duixwatch_policy_aborts_total",
            app=app,
            policy="max-age",
            reason="audit_unavailable",
        )
        return (n or 0) >= 2

    await until("two audit_unavailable aborts", aborted)


async def test_an_audit_log_that_is_a_directory_blocks_enforcement_until_it_is_a_file(
    sim: Simulator, tmp_path: Path
) -> None:
    old = sim.add_session(sim.apps[0].app_id, age_seconds=3000).session_id
    path = enforcing(sim, tmp_path)
    audit_path = tmp_path / "state" / audit.AUDIT_FILENAME
    audit_path.mkdir(parents=True)
    with capture_logs() as logs:
        async with running(sim, path) as (_, http):
            await wait_for(http, "/readyz")  # started and polled: no exit 2, no crash loop
            await two_audit_aborts(http, sim.apps[0].name)
            text = (await http.get("/metrics")).text
            assert value(text, "duixwatch_enforcement_blocked", reason="audit_unavailable") == 1
            assert value(text, "duixwatch_enforcement_blocked", reason="state_unavailable") == 0
            assert value(text, "duix_up", app=sim.apps[0].name) == 1  # polling goes on
            storage = (await http.get("/status?format=json")).json()["storage"]
            assert (
                "cannot open the audit log" in storage["enforcement_blocked"]["audit_unavailable"]
            )
            html = (await http.get("/status", headers={"accept": "text/html"})).text
            assert "ENFORCEMENT BLOCKED (audit_unavailable)" in html
            assert not sim.session(old).closed
            audit_path.rmdir()

            async def stopped() -> bool:
                return sim.session(old).closed

            await until("the stop, once the audit log can be written", stopped)
            assert (
                await metric(http, "duixwatch_enforcement_blocked", reason="audit_unavailable") == 0
            )
    events = [r["event"] for r in audit.read_audit(audit_path).records if r["session_id"] == old]
    assert events == ["intent", "outcome"]
    assert [e["event"] for e in logs].count("audit_unavailable") == 1


async def test_a_state_dir_that_cannot_be_used_runs_on_memory_polls_and_never_acts(
    sim: Simulator, tmp_path: Path
) -> None:
    old = sim.add_session(sim.apps[0].app_id, age_seconds=3000).session_id
    path = enforcing(sim, tmp_path)
    (tmp_path / "state").write_text("a file where the directory should be")
    async with running(sim, path) as (_, http):
        await wait_for(http, "/readyz")
        await two_audit_aborts(http, sim.apps[0].name)
        text = (await http.get("/metrics")).text
        assert value(text, "duixwatch_enforcement_blocked", reason="audit_unavailable") == 1
        assert value(text, "duixwatch_enforcement_blocked", reason="state_unavailable") == 1
        assert value(text, "duix_app_sessions", app=sim.apps[0].name) == 1
        assert not sim.session(old).closed


async def test_a_corrupt_state_database_is_moved_aside_and_the_daemon_acts_normally(
    sim: Simulator, tmp_path: Path
) -> None:
    old = sim.add_session(sim.apps[0].app_id, age_seconds=3000).session_id
    path = enforcing(sim, tmp_path)
    directory = tmp_path / "state"
    directory.mkdir()
    (directory / state.DB_FILENAME).write_bytes(b"\x00garbage, not SQLite" * 500)
    async with running(sim, path) as (_, http):
        await wait_for(http, "/readyz")

        async def stopped() -> bool:
            return sim.session(old).closed

        await until("the stop", stopped)
        storage = (await http.get("/status?format=json")).json()["storage"]
        moved = storage["state_moved_aside_to"]
        assert moved is not None
        assert ".corrupt-" in moved
        assert storage["enforcement_blocked"] == {}
    assert await anyio.Path(moved).read_bytes() == b"\x00garbage, not SQLite" * 500  # kept whole
    with state.StateStore(directory) as reopened:  # a good database now
        assert reopened.first_seen(sim.apps[0].app_id, [], START) == {}


async def test_the_audit_log_rotates_and_status_reads_back_across_the_files_after_a_restart(
    sim: Simulator, tmp_path: Path
) -> None:
    ids = [sim.add_session(sim.apps[0].app_id, age_seconds=3000).session_id for _ in range(40)]
    path = enforcing(sim, tmp_path, audit_max_bytes=4096, audit_keep=20)
    audit_path = tmp_path / "state" / audit.AUDIT_FILENAME
    async with running(sim, path) as (_, http):

        async def all_stopped() -> bool:
            return all(sim.session(i).closed for i in ids)

        await until("every stop", all_stopped)
        text = (await http.get("/metrics")).text
        assert (value(text, "duixwatch_audit_rotations_total") or 0) >= 3
        assert value(text, "duixwatch_state_file_bytes", file="audit.jsonl.1") is not None
        assert value(text, "duixwatch_audit_last_rotation_timestamp_seconds") is not None
    files = audit.audit_files(audit_path)
    assert len(files) >= 4
    assert all(f.stat().st_size <= 4096 for f in files)
    records = audit.read_audit(audit_path, rotated=True).records
    for sid in ids:  # every stop has its intent, before its outcome, across the files
        assert [r["event"] for r in records if r["session_id"] == sid] == ["intent", "outcome"]
    async with running(sim, path) as (_, http):
        shown = (await http.get("/status?format=json")).json()["recent_actions"]
        assert {a["session_id"] for a in shown} == set(ids)  # read back from rotated files
        assert {a["outcome"] for a in shown} == {"stopped"}


async def test_an_audit_log_deleted_while_running_gets_the_next_intent_in_a_new_file(
    sim: Simulator, tmp_path: Path
) -> None:
    path = enforcing(sim, tmp_path)
    audit_path = tmp_path / "state" / audit.AUDIT_FILENAME
    async with running(sim, path) as (daemon, http):
        await wait_for(http, "/readyz")
        first = sim.add_session(sim.apps[0].app_id, age_seconds=3000).session_id

        async def closed(sid: str) -> bool:
            return sim.session(sid).closed

        await until("the first stop", lambda: closed(first))
        audit_path.unlink()
        second = sim.add_session(sim.apps[0].app_id, age_seconds=3000).session_id
        await until("the second stop", lambda: closed(second))
        # SIGUSR1's handler, as logrotate would call it: the file is reopened where it is.
        shutil.move(audit_path, audit_path.with_name("audit.jsonl.1"))
        assert await daemon.reopen_audit()
        assert audit_path.is_file()
        assert audit_path.stat().st_size == 0
    records = audit.read_audit(audit_path.with_name("audit.jsonl.1")).records
    assert [(r["session_id"], r["event"]) for r in records] == [
        (second, "intent"),
        (second, "outcome"),
    ]
