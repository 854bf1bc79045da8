"""daemon + server in-process: the simulator through ASGITransport, the HTTP surface on loopback."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from duixwatch import config as settings
from duixwatch.config import sharding
from duixwatch.core.clock import SystemClock
from duixwatch.daemon import Daemon
from duixwatch.export.exposition import Registry
from duixwatch.policy import audit
from duixwatch.sim import Simulator, create_app
from duixwatch.watch.state import read_history
from tests.loopback import loopback_sim

WAIT_SECONDS = 10


def write_config(path: Path, sim: Simulator, *, apps: int | None = None, **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "duix": {"base_url": "http://sim.test", "max_requests_per_second": 1000},
        "apps": [
            {
                "app_id": a.app_id,
                "name": a.name,
                "app_key": a.app_key,
                "poll_interval_seconds": 1,
            }
            for a in sim.apps[: apps or len(sim.apps)]
        ],
        "server": {"listen": "127.0.0.1:0"},
        "state": {"dir": str(path.parent / "state")},
    }
    doc.update(extra)
    path.write_text(yaml.safe_dump(doc))
    return path


@asynccontextmanager
async def running(
    sim: Simulator, config_path: Path, environ: dict[str, str] | None = None
) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    environ = environ or {}
    config = settings.load_config(config_path, environ=environ)
    daemon = Daemon(
        config,
        config_path,
        clock=SystemClock(),
        registry=Registry(),
        transport=httpx.ASGITransport(app=create_app(sim)),
        environ=environ,
        handle_signals=False,
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(daemon.run)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            yield daemon, http
        daemon.stop()


async def wait_for(http: httpx.AsyncClient, path: str, status: int = 200) -> httpx.Response:
    with anyio.fail_after(WAIT_SECONDS):
        while True:
            response = await http.get(path)
            if response.status_code == status:
                return response
            await anyio.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def sim() -> Simulator:
    return Simulator(apps=3, seed=21, clock=SystemClock(), workload=False)


async def test_ready_after_every_app_is_polled_and_metrics_match_the_simulator(
    sim: Simulator, tmp_path: Path
) -> None:
    added = time.monotonic()
    for index, ages in enumerate([(30, 400), (5,), ()]):
        for age in ages:
            sim.add_session(sim.apps[index].app_id, age_seconds=age)
    async with running(sim, write_config(tmp_path / "c.yaml", sim)) as (_daemon, http):
        assert (await http.get("/healthz")).status_code == 200
        await wait_for(http, "/readyz")
        text = (await http.get("/metrics")).text
        since = time.monotonic() - added  # real clock: ages grew by this much, at most
        for index, app in enumerate(sim.apps):
            assert value(text, "duix_up", app=app.name) == 1
            assert value(text, "duix_app_sessions", app=app.name) == len(
                sim.live_sessions(app.app_id)
            )
            assert (
                value(text, "duix_app_concurrency_total_number", app=app.name)
                == app.concurrency_limit
            )
            assert value(text, "duix_app_concurrency_user", app=app.name) == len(
                sim.live_sessions(app.app_id)
            )
            oldest = value(text, "duix_app_oldest_session_age_seconds", app=app.name)
            expected = [400, 5, None][index]
            if expected is None:
                assert oldest is None
            else:
                assert oldest is not None
                assert expected - 1 <= oldest <= expected + since + 1
        assert value(text, "duixwatch_config_last_reload_successful") == 1
        assert value(text, "duixwatch_enforcement_enabled") == 0


async def test_status_shows_every_app_in_json_and_html(sim: Simulator, tmp_path: Path) -> None:
    session = sim.add_session(sim.apps[0].app_id, age_seconds=60)
    async with running(sim, write_config(tmp_path / "c.yaml", sim)) as (_daemon, http):
        await wait_for(http, "/readyz")
        doc = (await http.get("/status")).json()
        assert [a["app"] for a in doc["apps"]] == [a.name for a in sim.apps]
        first = doc["apps"][0]
        assert first["up"] is True
        assert first["sessions"]["items"][0]["session_id"] == session.session_id
        assert first["sessions"]["items"][0]["age_seconds"] == pytest.approx(60, abs=3)
        narrowed = await http.get("/status", params={"app": sim.apps[1].name, "sessions": "0"})
        assert [a["app"] for a in narrowed.json()["apps"]] == [sim.apps[1].name]
        assert "items" not in narrowed.json()["apps"][0]["sessions"]
        page = await http.get("/status", headers={"accept": "text/html"})
        assert page.headers["content-type"].startswith("text/html")
        assert all(a.name in page.text for a in sim.apps)
        for app in sim.apps:
            assert app.app_key not in page.text
            assert app.app_key not in (await http.get("/status")).text
        assert (await http.post("/status")).status_code == 405


async def test_a_failing_app_exports_up_0_and_no_values(sim: Simulator, tmp_path: Path) -> None:
    async with running(sim, write_config(tmp_path / "c.yaml", sim)) as (_daemon, http):
        await wait_for(http, "/readyz")
        bad = sim.apps[0]
        sim.faults.set(bad.app_id, "*", status=503)
        with anyio.fail_after(WAIT_SECONDS):
            while True:
                text = (await http.get("/metrics")).text
                errors = value(text, "duixwatch_poll_errors_total", app=bad.name, reason="server")
                if value(text, "duix_up", app=bad.name) == 0 and errors:
                    break
                await anyio.sleep(0.1)
        for name in (
            "duix_app_sessions",
            "duix_app_concurrency_total_number",
            "duix_app_concurrency_user",
        ):
            assert value(text, name, app=bad.name) is None
        assert value(text, "duix_app_last_poll_success_timestamp_seconds", app=bad.name)
        assert value(text, "duix_up", app=sim.apps[1].name) == 1
        assert (await http.get("/status")).json()["apps"][0]["error"]["reason"] == "server"


async def test_reload_adds_and_removes_apps_and_a_bad_file_keeps_the_old_config(
    sim: Simulator, tmp_path: Path
) -> None:
    path = write_config(tmp_path / "c.yaml", sim, apps=2)
    async with running(sim, path) as (daemon, http):
        await wait_for(http, "/readyz")
        first, second, third = sim.apps
        # swap the second APP for the third
        doc = yaml.safe_load(path.read_text())
        doc["apps"][1] = {
            "app_id": third.app_id,
            "name": third.name,
            "app_key": third.app_key,
            "poll_interval_seconds": 1,
        }
        path.write_text(yaml.safe_dump(doc))
        assert await daemon.reload() is True
        await wait_for(http, "/readyz")
        text = (await http.get("/metrics")).text
        assert value(text, "duix_up", app=third.name) == 1
        assert value(text, "duix_up", app=second.name) is None
        assert all(second.name not in line for line in text.splitlines() if "app=" in line)

        path.write_text("apps: [\n")  # broken YAML
        assert await daemon.reload() is False
        text = (await http.get("/metrics")).text
        assert value(text, "duixwatch_config_last_reload_successful") == 0
        assert value(text, "duix_up", app=first.name) == 1
        assert [a.name for a in daemon.config.apps] == [first.name, third.name]
        status = (await http.get("/status")).json()
        assert status["last_reload"]["ok"] is False
        assert "c.yaml" in status["last_reload"]["error"]


async def test_watch_config_reloads_on_change(sim: Simulator, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", sim, apps=1, daemon={"watch_config_seconds": 0.1})
    async with running(sim, path) as (daemon, http):
        await wait_for(http, "/readyz")
        write_config(path, sim, apps=2, daemon={"watch_config_seconds": 0.1})
        with anyio.fail_after(WAIT_SECONDS):
            while len(daemon.config.apps) != 2:
                await anyio.sleep(0.05)
        await wait_for(http, "/readyz")


async def test_systemd_hears_ready_reloading_and_stopping(sim: Simulator, tmp_path: Path) -> None:
    """Type=notify: READY=1 once listening, RELOADING=1/READY=1 around a reload, STOPPING=1."""
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(address)
        receiver.setblocking(False)

        def messages() -> list[str]:
            out = []
            while True:
                try:
                    out.append(receiver.recv(4096).decode())
                except BlockingIOError:
                    return out

        path = write_config(tmp_path / "c.yaml", sim, apps=1)
        async with running(sim, path, {"NOTIFY_SOCKET": address}) as (daemon, _http):
            (ready,) = messages()
            assert ready.startswith("READY=1\n")
            await daemon.reload()
            reloading, ready_again = messages()
            assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert ready_again.startswith("READY=1")
        assert messages() == ["STOPPING=1"]


async def test_the_keda_endpoint_serves_fresh_numbers_and_503_when_an_app_fails(
    sim: Simulator, tmp_path: Path
) -> None:
    first, second, _third = sim.apps
    for _ in range(3):
        sim.add_session(first.app_id)
    for _ in range(2):
        sim.add_session(second.app_id)
    scaling = {
        "evaluation_interval_seconds": 0.1,
        "targets": [
            {
                "name": "dialog",
                "apps": [first.name, second.name],
                "sessions_per_replica": 2,
                "min_replicas": 1,
                "max_replicas": 10,
                "scale_down_stabilization_seconds": 0,
            }
        ],
    }
    async with running(sim, write_config(tmp_path / "c.yaml", sim, scaling=scaling)) as (
        _daemon,
        http,
    ):
        body = (await wait_for(http, "/api/v1/scaling/dialog")).json()
        assert (body["sessions"], body["desired_replicas"], body["fresh"]) == (5, 3, True)
        assert [a["app"] for a in body["apps"]] == [first.name, second.name]
        text = (await http.get("/metrics")).text
        assert value(text, "duixwatch_scaling_sessions", target="dialog") == 5
        assert value(text, "duixwatch_scaling_desired_replicas", target="dialog") == 3
        assert value(text, "duixwatch_scaling_fresh", target="dialog") == 1

        sim.faults.set(second.app_id, "*", status=503)
        body = (await wait_for(http, "/api/v1/scaling/dialog", status=503)).json()
        assert body["fresh"] is False
        assert body["desired_replicas"] is None
        text = (await http.get("/metrics")).text
        assert value(text, "duixwatch_scaling_desired_replicas", target="dialog") is None
        assert value(text, "duixwatch_scaling_fresh", target="dialog") == 0
        assert (await http.get("/api/v1/scaling/nope")).status_code == 404


async def test_a_shard_polls_only_the_apps_it_owns(sim: Simulator, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", sim, sharding={"index": 1, "count": 2})
    owned = {a.name for a in sim.apps if sharding.shard_of(a.app_id, 2) == 1}
    assert 0 < len(owned) < len(sim.apps)  # the seed gives a real split
    async with running(sim, path) as (_daemon, http):
        await wait_for(http, "/readyz")
        status = (await http.get("/status")).json()
        assert {a["app"] for a in status["apps"]} == owned
        assert status["shard"] == {"index": 1, "count": 2}
        text = (await http.get("/metrics")).text
        assert value(text, "duixwatch_shard_index") == 1
        assert value(text, "duixwatch_shards") == 2
        assert value(text, "duixwatch_owned_apps") == len(owned)
        for app in sim.apps:
            assert (value(text, "duix_up", app=app.name) is not None) == (app.name in owned)


async def test_first_sight_reaches_the_state_database_while_the_daemon_runs(
    sim: Simulator, tmp_path: Path
) -> None:
    """The write-behind writer commits new first-seen times promptly, not only at shutdown."""
    app = sim.apps[0]
    ids = {sim.add_session(app.app_id).session_id for _ in range(3)}
    config = write_config(tmp_path / "c.yaml", sim, apps=1)
    database = tmp_path / "state" / "state.sqlite3"

    def stored() -> set[str]:
        with closing(sqlite3.connect(database)) as db:
            rows = db.execute("SELECT session_id FROM first_seen WHERE app_id = ?", (app.app_id,))
            return {row[0] for row in rows}

    async with running(sim, config) as (daemon, http):
        await wait_for(http, "/readyz")
        with anyio.fail_after(WAIT_SECONDS):
            while stored() != ids:
                await anyio.sleep(0.05)
        sim.stop_session(app, next(iter(ids)))
        with anyio.fail_after(WAIT_SECONDS):
            while len(stored()) != 2:
                await anyio.sleep(0.05)
        assert daemon._state.pending_writes == 0


async def test_metrics_is_sent_in_pieces_with_its_length_and_answers_head(
    sim: Simulator, tmp_path: Path
) -> None:
    async with running(sim, write_config(tmp_path / "c.yaml", sim)) as (_daemon, http):
        await wait_for(http, "/readyz")
        response = await http.get("/metrics")
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.text.count("# TYPE duix_up gauge\n") == 1
        head = await http.head("/metrics")
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 1000


async def test_dialog_probes_run_export_show_on_status_and_follow_reloads(
    sim: Simulator, tmp_path: Path
) -> None:
    async with loopback_sim() as (backend, backend_app):
        probes = [
            {"name": "bot", "url": f"{backend}/dialog", "interval_seconds": 1},
            {"name": "down", "url": "http://127.0.0.1:9/dialog", "interval_seconds": 1},
        ]
        path = write_config(tmp_path / "c.yaml", sim, dialog_probes=probes)
        async with running(sim, path) as (daemon, http):
            with anyio.fail_after(WAIT_SECONDS):
                while True:
                    text = (await http.get("/metrics")).text
                    ok = value(text, "duixwatch_dialog_probe_success", probe="bot")
                    down = value(text, "duixwatch_dialog_probe_success", probe="down")
                    if ok is not None and down is not None:
                        break
                    await anyio.sleep(0.05)
            assert ok == 1
            assert down == 0
            assert value(
                text, "duixwatch_dialog_probe_failures_total", probe="down", reason="connect"
            )
            status = (await http.get("/status?format=json")).json()
            by_name = {p["probe"]: p for p in status["dialog_probes"]}
            assert by_name["bot"]["last"]["success"] is True
            assert by_name["down"]["last"]["failed_rule"]["rule"] == "transport"
            page = (await http.get("/status", headers={"accept": "text/html"})).text
            assert "Dialog probes" in page
            assert "FAILING" in page

            # the exported latencies are what the backend was told to cause (within 50 ms)
            backend_app.state.dialog.set_faults(
                type(backend_app.state.dialog.faults).from_dict({"delay_seconds": 0.3})
            )
            with anyio.fail_after(WAIT_SECONDS):
                while True:
                    text = (await http.get("/metrics")).text
                    first = value(
                        text,
                        "duixwatch_dialog_probe_duration_seconds",
                        probe="bot",
                        phase="first_byte",
                    )
                    if first is not None and first > 0.2:
                        break
                    await anyio.sleep(0.05)
            assert first == pytest.approx(0.3, abs=0.05)
            total = value(
                text, "duixwatch_dialog_probe_duration_seconds", probe="bot", phase="total"
            )
            assert total == pytest.approx(0.3, abs=0.05)
            backend_app.state.dialog.clear_faults()

            doc = yaml.safe_load(path.read_text())
            doc["dialog_probes"] = probes[:1]
            path.write_text(yaml.safe_dump(doc))
            assert await daemon.reload() is True
            text = (await http.get("/metrics")).text
            assert 'probe="down"' not in text
            status = (await http.get("/status?format=json")).json()
            assert [p["probe"] for p in status["dialog_probes"]] == ["bot"]


@pytest.mark.exclusive  # timings: run alone
async def test_a_stream_probe_exports_its_first_answer_latency_as_the_backend_caused_it(
    sim: Simulator, tmp_path: Path
) -> None:
    """The streaming counterpart of the JSON latency check above: the headers come at once,
    the first chunk after ``first_chunk_delay_seconds`` and each later one after
    ``chunk_delay_seconds``; the phases exported are those (within 50 ms)."""
    async with loopback_sim() as (backend, backend_app):
        backend_app.state.dialog.set_faults(
            type(backend_app.state.dialog.faults).from_dict(
                {"first_chunk_delay_seconds": 0.4, "chunk_delay_seconds": 0.05}
            )
        )
        probes = [
            {
                "name": "streamer",
                "url": f"{backend}/dialog/stream",
                "mode": "stream",
                "interval_seconds": 1,
            }
        ]
        path = write_config(tmp_path / "c.yaml", sim, dialog_probes=probes)
        async with running(sim, path) as (_daemon, http):
            with anyio.fail_after(WAIT_SECONDS):
                while True:
                    text = (await http.get("/metrics")).text
                    if value(text, "duixwatch_dialog_probe_success", probe="streamer") is not None:
                        break
                    await anyio.sleep(0.05)

            def phase(name: str) -> float | None:
                return value(
                    text, "duixwatch_dialog_probe_duration_seconds", probe="streamer", phase=name
                )

            assert value(text, "duixwatch_dialog_probe_success", probe="streamer") == 1
            chunks = value(text, "duixwatch_dialog_probe_answer_chunks", probe="streamer")
            assert chunks is not None
            assert chunks > 1
            assert phase("first_byte") == pytest.approx(0.0, abs=0.05)
            assert phase("first_answer") == pytest.approx(0.4, abs=0.05)
            assert phase("total") == pytest.approx(0.4 + 0.05 * (chunks - 1), abs=0.05)


async def test_watched_conversations_and_avatars_reach_metrics_and_status(
    sim: Simulator, tmp_path: Path
) -> None:
    first = sim.apps[0]
    cid = sim.conversation_ids(first.app_id)[0]
    path = write_config(tmp_path / "c.yaml", sim, apps=1)
    doc = yaml.safe_load(path.read_text())
    doc["apps"][0] |= {"conversations": "auto", "conversation_poll_interval_seconds": 1}
    path.write_text(yaml.safe_dump(doc))
    for _ in range(2):
        sim.add_session(first.app_id, age_seconds=60)
    async with running(sim, path) as (_, http):
        with anyio.fail_after(WAIT_SECONDS):
            while True:
                text = (await http.get("/metrics")).text
                if value(text, "duix_conversation_up", app=first.name, conversation=cid):
                    break
                await anyio.sleep(0.05)
        info = [
            s
            for (name, labels), s in samples(text).items()
            if name == "duix_conversation_info" and dict(labels)["conversation"] == cid
        ]
        assert info == [1.0]
        status = (await http.get("/status?format=json")).json()
        (conversation,) = status["conversations"]
        assert conversation["conversation"] == cid
        assert conversation["changes"] == 0


async def test_session_lifecycle_counts_ends_by_policy_and_platform_and_keeps_history(
    sim: Simulator, tmp_path: Path
) -> None:
    first = sim.apps[0]
    old = sim.add_session(first.app_id, age_seconds=3000)
    short = sim.add_session(first.app_id, age_seconds=30)
    path = write_config(
        tmp_path / "c.yaml",
        sim,
        apps=1,
        enforcement={"enabled": True},
        policies=[
            {
                "name": "max-age",
                "match": {"session_age_over_seconds": 2700},
                "action": "stop_sessions",
                "dry_run": False,
                "max_actions_percent": 100,
            }
        ],
    )
    async with running(sim, path) as (_, http):

        async def metric(name: str, **labels: str) -> float | None:
            return value((await http.get("/metrics")).text, name, app=first.name, **labels)

        with anyio.fail_after(WAIT_SECONDS):
            while await metric("duix_app_sessions_ended_total", closed_by="policy") != 1:
                await anyio.sleep(0.05)
            sim.end_session(short.session_id)
            while await metric("duix_app_sessions_ended_total", closed_by="platform") != 1:
                await anyio.sleep(0.05)
        assert await metric("duix_app_sessions_started_total") == 2
        assert await metric("duix_app_session_duration_seconds_count") == 2
        seconds = await metric("duix_app_session_seconds_total")
        assert seconds is not None
        assert seconds > 0
    rows = read_history(tmp_path / "state", since=datetime.now(UTC) - timedelta(hours=2))
    by_id = {r.session_id: r for r in rows}
    assert by_id[old.session_id].closed_by == "policy"
    assert by_id[old.session_id].policy == "max-age"
    assert by_id[old.session_id].duration_seconds == pytest.approx(3000, abs=5)
    assert by_id[short.session_id].closed_by == "platform"


@pytest.mark.parametrize("tail", ["# \x07\n", "# \x1b[0m\n", "x: 1\x00\n", "x: " + "[" * 5000])
async def test_a_reload_of_a_file_yaml_cannot_read_keeps_the_old_config(
    sim: Simulator, tmp_path: Path, tail: str
) -> None:
    path = write_config(tmp_path / "c.yaml", sim, apps=1)
    async with running(sim, path) as (daemon, http):
        await wait_for(http, "/readyz")
        with path.open("a") as f:
            f.write(tail)
        assert await daemon.reload(trigger="SIGHUP") is False
        text = (await http.get("/metrics")).text
        assert value(text, "duixwatch_config_last_reload_successful") == 0
        assert value(text, "duix_up", app=sim.apps[0].name) == 1
        assert (await http.get("/status?format=json")).json()["last_reload"]["ok"] is False


async def test_a_reload_of_a_path_that_became_dev_zero_keeps_the_old_config(
    sim: Simulator, tmp_path: Path
) -> None:
    """The fingerprint read the whole file: a config path pointing at ``/dev/zero`` (a
    symlink swapped by mistake) raised MemoryError out of the reload and killed the daemon."""
    real = write_config(tmp_path / "real.yaml", sim, apps=1)
    path = tmp_path / "c.yaml"
    path.symlink_to(real)
    async with running(sim, path) as (daemon, http):
        await wait_for(http, "/readyz")
        path.unlink()
        path.symlink_to("/dev/zero")
        with anyio.fail_after(WAIT_SECONDS):
            assert await daemon.reload(trigger="SIGHUP") is False
        text = (await http.get("/metrics")).text
        assert value(text, "duixwatch_config_last_reload_successful") == 0
        assert value(text, "duix_up", app=sim.apps[0].name) == 1
        error = (await http.get("/status?format=json")).json()["last_reload"]["error"]
        assert error.startswith(f"{path}:1: the config file is over the 16 MiB limit")


async def test_intents_a_crash_left_open_get_an_unknown_outcome_after_the_restart(
    sim: Simulator, tmp_path: Path
) -> None:
    """As after a SIGKILL between an intent and its outcome: the restarted daemon records
    ``outcome: unknown`` for each, saying whether the session was still live."""
    first = sim.apps[0]
    live = sim.add_session(first.app_id, age_seconds=3000)
    path = write_config(tmp_path / "c.yaml", sim, apps=1)
    state = tmp_path / "state"
    state.mkdir()
    with audit.AuditLog(state / audit.AUDIT_FILENAME, clock=SystemClock()) as log:
        for sid in (live.session_id, "1999999999999999999"):
            log.write(
                cycle="20261202T000000Z-abcdef",
                event="intent",
                policy="max-age",
                app=first.name,
                app_id=first.app_id,
                action="stop_session",
                session_id=sid,
                reason="age 3000s > 2700s",
            )
    async with running(sim, path) as (_, http):
        await wait_for(http, "/readyz")
        with anyio.fail_after(WAIT_SECONDS):
            while True:
                records = audit.read_audit(state / audit.AUDIT_FILENAME).records
                outcomes = [r for r in records if r["event"] == "outcome"]
                if len(outcomes) == 2:
                    break
                await anyio.sleep(0.05)
    by_id = {r["session_id"]: r for r in outcomes}
    assert {r["outcome"] for r in outcomes} == {"unknown"}
    assert "still live" in by_id[live.session_id]["reason"]
    assert "was gone" in by_id["1999999999999999999"]["reason"]
    assert audit.open_intents(records) == []


@pytest.mark.exclusive  # timings: run alone
async def test_a_hung_dialog_backend_never_delays_the_platform_polls(
    sim: Simulator, tmp_path: Path
) -> None:
    """Eight probes against a backend that answers after 30 s (each probe's timeout 20 s): none
    has a result for the whole test, and every APP is still polled every second."""
    async with loopback_sim() as (backend, backend_app):
        backend_app.state.dialog.set_faults(
            type(backend_app.state.dialog.faults).from_dict({"delay_seconds": 30})
        )
        probes = [
            {
                "name": f"hung-{i}",
                "url": f"{backend}/dialog",
                "mode": "json",
                "interval_seconds": 1,
                "timeout_seconds": 20,
            }
            for i in range(8)
        ]
        path = write_config(tmp_path / "c.yaml", sim, dialog_probes=probes)
        async with running(sim, path) as (_daemon, http):
            await wait_for(http, "/readyz")
            worst = 0.0
            with anyio.fail_after(WAIT_SECONDS):
                for _ in range(20):  # 4 s of polls while every probe slot hangs
                    text = (await http.get("/metrics")).text
                    now = time.time()
                    polls = [
                        value(text, "duix_app_last_poll_success_timestamp_seconds", app=a.name)
                        for a in sim.apps
                    ]
                    assert all(p is not None for p in polls), polls
                    worst = max(worst, *(now - p for p in polls if p is not None))
                    await anyio.sleep(0.2)
            assert worst < 2.5, worst  # interval 1 s
            assert (
                value(text, "duixwatch_dialog_probe_success", probe="hung-0") is None
            )  # still hanging
