"""The command line, as an operator runs it: real processes against `duixwatch sim` on loopback."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from duixwatch.cli import runtime
from duixwatch.cli.parser import main as cli_main
from duixwatch.core import garbage
from tests.fakes import FakeClock, decode_token

pytestmark = pytest.mark.e2e

DUIXWATCH = [sys.executable, "-m", "duixwatch"]
SEED, APPS = 11, 2


@dataclass
class RunningSim:
    base_url: str
    apps: list[dict[str, Any]]  # from `sim --print-config`
    key_files: dict[str, Path]
    process: subprocess.Popen[str]

    def state(self) -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(f"{self.base_url}/_sim/state", timeout=5).json()
        return doc

    def live_ids(self, app_id: str) -> set[str]:
        (app,) = [a for a in self.state()["apps"] if a["app_id"] == app_id]
        return {s["session_id"] for s in app["sessions"]}

    def add_sessions(self, app_id: str, count: int, age_seconds: float = 0) -> list[str]:
        response = httpx.post(
            f"{self.base_url}/_sim/apps/{app_id}/sessions",
            json={"count": count, "age_seconds": age_seconds},
            timeout=5,
        )
        response.raise_for_status()
        body = response.json()
        sessions = body["sessions"] if isinstance(body, dict) else body
        return [s["session_id"] for s in sessions]

    def app_args(self, index: int = 0) -> list[str]:
        app = self.apps[index]
        return [
            "--base-url",
            self.base_url,
            "--app-id",
            str(app["app_id"]),
            "--app-key-file",
            str(self.key_files[app["name"]]),
        ]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DUIXWATCH, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def running_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSim]:
    tmp = tmp_path_factory.mktemp("sim")
    config = run("sim", "--apps", str(APPS), "--seed", str(SEED), "--print-config")
    assert config.returncode == 0, config.stderr
    apps = yaml.safe_load(config.stdout)["apps"]
    key_files = {}
    for app in apps:
        path = tmp / f"{app['name']}.key"
        path.write_text(app["app_key"])
        key_files[app["name"]] = path
    process = subprocess.Popen(
        [
            *DUIXWATCH,
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--apps",
            str(APPS),
            "--seed",
            str(SEED),
            "--no-workload",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert "listening on http://127.0.0.1:" in line, line
            base_url = line.split("listening on ")[1].split()[0]
            yield RunningSim(base_url, apps, key_files, process)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            finally:
                process.kill()


def test_help_works_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """The installed entry point once (a process), then every command's --help in-process
    (argparse is the same; ten interpreters only cost CI time)."""
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: duixwatch" in result.stdout
    for command in (
        ["concurrency"],
        ["sessions"],
        ["stop-session"],
        ["close-all"],
        ["conversation"],
        ["avatar", "create"],
        ["avatar", "query"],
        ["token"],
        ["sim"],
        ["demo"],
    ):
        with pytest.raises(SystemExit) as exited:
            cli_main([*command, "--help"])
        assert exited.value.code == 0, command
        assert "usage: duixwatch" in capsys.readouterr().out, command


def test_the_printed_config_names_every_simulated_app(running_sim: RunningSim) -> None:
    state_ids = {a["app_id"] for a in running_sim.state()["apps"]}
    assert {str(a["app_id"]) for a in running_sim.apps} == state_ids


def test_concurrency_prints_what_the_simulator_holds(running_sim: RunningSim) -> None:
    app_id = str(running_sim.apps[0]["app_id"])
    running_sim.add_sessions(app_id, 2)
    result = run("concurrency", *running_sim.app_args(), "-o", "json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    (truth,) = [a for a in running_sim.state()["apps"] if a["app_id"] == app_id]
    assert got["total_concurrent_number"] == truth["concurrency_limit"]
    assert got["user_concurrent_number"] == len(truth["sessions"])
    table = run("concurrency", *running_sim.app_args())
    assert table.returncode == 0
    assert str(truth["concurrency_limit"]) in table.stdout


def test_sessions_lists_every_live_session_with_its_age(running_sim: RunningSim) -> None:
    app_id = str(running_sim.apps[1]["app_id"])
    made = set(running_sim.add_sessions(app_id, 3, age_seconds=1200))
    result = run("sessions", *running_sim.app_args(1), "-o", "json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert {s["session_id"] for s in got["sessions"]} == running_sim.live_ids(app_id)
    ages = [s["age_seconds"] for s in got["sessions"] if s["session_id"] in made]
    assert all(1199 <= age <= 1260 for age in ages), ages
    table = run("sessions", *running_sim.app_args(1))
    assert all(sid in table.stdout for sid in made)
    assert "20m0" in table.stdout


def test_stop_session_really_ends_the_session(running_sim: RunningSim) -> None:
    app_id = str(running_sim.apps[0]["app_id"])
    (sid,) = running_sim.add_sessions(app_id, 1)
    result = run("stop-session", sid, *running_sim.app_args())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"session {sid}: stopped"
    assert sid not in running_sim.live_ids(app_id)
    again = run("stop-session", sid, *running_sim.app_args(), "-o", "json")
    assert json.loads(again.stdout)["outcome"] == "already_closed"


def test_close_all_refuses_without_yes_and_drains_with_it(running_sim: RunningSim) -> None:
    app_id = str(running_sim.apps[0]["app_id"])
    running_sim.add_sessions(app_id, 2)
    before = running_sim.live_ids(app_id)
    refused = run("close-all", *running_sim.app_args())
    assert refused.returncode == 2
    assert "refusing" in refused.stderr
    assert running_sim.live_ids(app_id) == before
    done = run("close-all", "--yes", *running_sim.app_args())
    assert done.returncode == 0, done.stderr
    assert running_sim.live_ids(app_id) == set()


def test_conversation_shows_the_simulators_document(running_sim: RunningSim) -> None:
    app = running_sim.state()["apps"][0]
    result = run("conversation", app["conversation_id"], *running_sim.app_args(), "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == app["conversation_id"]
    table = run("conversation", app["conversation_id"], *running_sim.app_args())
    assert "background" in table.stdout


def test_avatar_create_then_query(running_sim: RunningSim) -> None:
    created = run(
        "avatar",
        "create",
        "--name",
        "Ada",
        "--photo-url",
        "https://example.invalid/ada.png",
        *running_sim.app_args(),
        "-o",
        "json",
    )
    assert created.returncode == 0, created.stderr
    avatar_id = json.loads(created.stdout)["avatar_id"]
    queried = run("avatar", "query", avatar_id, *running_sim.app_args(), "-o", "json")
    assert queried.returncode == 0, queried.stderr
    assert json.loads(queried.stdout)["status"] == "training"


def test_token_decodes_to_exactly_app_id_iat_exp(running_sim: RunningSim) -> None:
    app = running_sim.apps[0]
    result = run("token", *running_sim.app_args(), "--ttl", "600")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = decode_token(token, app["app_key"], verify_exp=True)
    assert set(claims) == {"appId", "iat", "exp"}
    assert claims["appId"] == str(app["app_id"])
    assert claims["exp"] - claims["iat"] == 600
    # The token works against the platform, as a curl user would send it.
    response = httpx.get(
        f"{running_sim.base_url}/duix-openapi-v2/sdk/v2/getconcurrentNumber",
        params={"appId": str(app["app_id"])},
        headers={"token": token},
        timeout=5,
    )
    assert response.json()["success"] is True


def test_a_wrong_key_fails_with_one_line_and_exit_1_without_leaking_it(
    running_sim: RunningSim, tmp_path: Path
) -> None:
    bad = "wrong-key-" + "z" * 30
    key_file = tmp_path / "bad.key"
    key_file.write_text(bad)
    args = running_sim.app_args()
    args[-1] = str(key_file)
    result = run("sessions", *args)
    assert result.returncode == 1
    assert "ApiAuthRejected" in result.stderr
    assert "1006" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert bad not in result.stderr + result.stdout


def test_the_key_can_come_from_an_environment_variable(running_sim: RunningSim) -> None:
    app = running_sim.apps[0]
    result = run(
        "concurrency",
        "--base-url",
        running_sim.base_url,
        "--app-id",
        str(app["app_id"]),
        "--app-key-env",
        "MY_DUIX_KEY",
        env={"MY_DUIX_KEY": app["app_key"]},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sessions", "--app-id", "1"], "no appKey"),
        (["sessions", "--app-id", "1", "--app-key-env", "UNSET_VAR_FOR_TEST"], "not set"),
        (["sessions", "--app-id", "1", "--app-key-file", "/nonexistent/key"], "app-key-file"),
        (["sessions", "--app-key", "k"], "no app id"),
        (["sessions", "--app-id", "1", "--app-key", "k", "--base-url", "ftp://x"], "http"),
        (["sim", "--listen", "nonsense"], "HOST:PORT"),
        (["sim", "--listen", "0.0.0.0:0"], "add --allow-remote"),
        (["sim", "--listen", "[::]:0"], "add --allow-remote"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = run(*args, env={"DUIX_APP_KEY": "", "DUIX_APP_ID": ""})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_platform_is_exit_1(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("k" * 32)
    result = run(
        "concurrency",
        "--base-url",
        "http://127.0.0.1:9",
        "--app-id",
        "1",
        "--app-key-file",
        str(key),
        "--timeout",
        "2",
    )
    assert result.returncode == 1
    assert "ApiUnavailable" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["sim", "demo"])
def test_the_simulator_and_demo_exit_0_on_sigterm(command: str, tmp_path: Path) -> None:
    extra = (
        ["--state-dir", str(tmp_path), "--metrics-listen", "127.0.0.1:0"]
        if command == "demo"
        else []
    )
    with subprocess.Popen(
        [*DUIXWATCH, command, "--listen", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "duixwatch" in first
        rest = [process.stdout.readline() for _ in range(5)] if command == "demo" else []
        if command == "demo":
            (line,) = [x for x in rest if x.strip().startswith("metrics")]
            exposition = httpx.get(line.split()[1], timeout=5)
            assert exposition.status_code == 200
            assert "duixwatch_build_info" in exposition.text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    if command == "demo":
        (metrics_line,) = [line for line in rest if line.strip().startswith("metrics")]
        url = metrics_line.split()[1]
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/metrics")
        config = tmp_path / "demo.yaml"
        assert config.stat().st_mode & 0o077 == 0


EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "duixwatch.example.yaml"


def test_check_accepts_the_example_config(tmp_path: Path) -> None:
    (tmp_path / "lobby-kiosk.key").write_text("k" * 32)
    result = run(
        "check",
        "-c",
        str(EXAMPLE),
        env={"DUIX_APP_KEY_FRONTDESK": "f" * 32, "CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "OK - 2 app(s) (frontdesk, lobby-kiosk), 2 policies; enforcement disabled" in (
        result.stdout
    )


def test_check_rejects_a_bad_file_naming_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        'apps:\n  - app_id: "1"\n    app_key: k\n    poll_interval_seconds: 0\n    colour: red\n'
    )
    result = run("check", "-c", str(config))
    assert result.returncode == 2
    assert f"{config}:4: apps[0].poll_interval_seconds" in result.stderr
    assert f"{config}:5: apps[0].colour" in result.stderr
    assert "Traceback" not in result.stderr


def sim_config(running_sim: RunningSim, tmp_path: Path, *, break_key_of: int | None = None) -> Path:
    printed = run(
        "sim",
        "--apps",
        str(APPS),
        "--seed",
        str(SEED),
        "--print-config",
        "--listen",
        running_sim.base_url.removeprefix("http://"),
    )
    doc = yaml.safe_load(printed.stdout)
    if break_key_of is not None:
        doc["apps"][break_key_of]["app_key"] = "wrong-" + "x" * 30
    path = tmp_path / "duixwatch.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_once_polls_every_app_and_prints_a_table_or_json(
    running_sim: RunningSim, tmp_path: Path
) -> None:
    config = sim_config(running_sim, tmp_path)
    table = run("once", "-c", str(config))
    assert table.returncode == 0, table.stderr
    for app in running_sim.apps:
        assert app["name"] in table.stdout
    as_json = run("once", "-c", str(config), "-o", "json")
    entries = json.loads(as_json.stdout)
    state = {a["app_id"]: a for a in running_sim.state()["apps"]}
    for entry in entries:
        assert entry["up"] is True
        assert entry["sessions"]["count"] == len(state[entry["app_id"]]["sessions"])


def test_once_exits_1_when_an_app_fails(running_sim: RunningSim, tmp_path: Path) -> None:
    config = sim_config(running_sim, tmp_path, break_key_of=1)
    result = run("once", "-c", str(config))
    assert result.returncode == 1
    broken = running_sim.apps[1]["name"]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith(broken)]
    assert "DOWN" in line
    assert "auth" in line


@pytest.mark.parametrize("command", ["sim", "demo"])
def test_a_taken_port_is_one_line_and_exit_1(command: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = ["--state-dir", str(tmp_path)] if command == "demo" else []
        result = run(command, "--listen", f"127.0.0.1:{port}", *extra)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_long_running_commands_tune_the_garbage_collector() -> None:
    before = gc.get_threshold()
    try:
        collector = runtime.long_running_gc(FakeClock())
        assert gc.get_threshold() == runtime.GC_THRESHOLDS
        assert collector.young_seconds == garbage.YOUNG_SECONDS  # collects on the clock too
        assert collector.trim is not None  # and trims glibc's heap (Linux, glibc: no skip)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - the point
        ("::", False),
        ("192.0.2.1", False),
        ("no-such-host.invalid", False),
    ],
)
def test_the_simulator_knows_a_loopback_address(host: str, loopback: bool) -> None:
    from duixwatch.cli.simulator import is_loopback

    assert is_loopback(host) is loopback


def test_check_and_run_validate_the_web_config_given_by_flag(tmp_path: Path) -> None:
    config = tmp_path / "duixwatch.yaml"
    config.write_text(
        "apps:\n  - app_id: '1377185422953811968'\n    app_key: k\n"
        f"server:\n  listen: 127.0.0.1:0\nstate:\n  dir: {tmp_path / 'state'}\n"
    )
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    for command in ("check", "run"):
        result = run(command, "-c", str(config), "--web.config.file", str(web))
        assert result.returncode == 2, (command, result.stderr)
        assert f"{web}:1: basic_auth_users: user 'prometheus'" in result.stderr
        assert "not-a-hash" not in result.stderr
        assert "Traceback" not in result.stderr
    web.write_text("basic_auth_users:\n  prometheus: $2y$10$" + "a" * 53 + "\n")
    ok = run("check", "-c", str(config), "--web.config.file", str(web))
    assert ok.returncode == 0, ok.stderr
    assert f"{web}: OK - no TLS, 1 basic auth user" in ok.stdout
