"""``avatar create|query --wait``: exit 0/1/124, a redrawn line on a terminal, plain lines
otherwise, only the result with ``-o json`` (real processes against ``duixwatch sim``)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from duixwatch.duix.auth import mint_token
from duixwatch.sim.app import PREFIX
from tests.procs import DUIXWATCH, free_port, sim_config, start_sim

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A simulator whose avatars train for 3 s, and the CLI options of its first APP."""
    port = free_port()
    log = tmp_path_factory.mktemp("sim") / "sim.log"
    p = start_sim(port, log, apps=1, seed=7, extra=("--avatar-training-seconds", "3"))
    try:
        app = sim_config(port, apps=1, seed=7)["apps"][0]
        yield [
            "--base-url",
            f"http://127.0.0.1:{port}",
            "--app-id",
            app["app_id"],
            "--app-key",
            app["app_key"],
        ]
    finally:
        p.kill()
        p.wait(timeout=10)


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DUIXWATCH, *argv], capture_output=True, text=True, timeout=60, check=False
    )


def create(platform: list[str], name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        "avatar",
        "create",
        "--name",
        name,
        "--photo-url",
        "https://x.test/p.png",
        "--wait",
        "--interval",
        "0.5",
        *extra,
        *platform,
    )


def test_a_training_that_succeeds_exits_0_with_plain_lines(platform: list[str]) -> None:
    done = create(platform, "host")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("training started")
    assert any(": training after" in line for line in lines)
    assert "training succeeded after" in lines[-1]
    assert "\r" not in done.stdout  # not a terminal: no redrawn line


def platform_reason(platform: list[str], avatar_id: str) -> str:
    """The ``reason`` the simulator itself answers for ``avatar_id`` (a raw, signed
    ``queryAvatar``: not through the code under test's parser)."""
    options = dict(zip(platform[::2], platform[1::2], strict=True))
    token = mint_token(
        options["--app-id"],
        SecretStr(options["--app-key"]),
        now=datetime.now(UTC),
        ttl_seconds=600,
    )
    answer = httpx.get(
        f"{options['--base-url']}{PREFIX}/queryAvatar",
        params={"id": avatar_id},
        headers={"token": token.get_secret_value()},
        timeout=10,
    )
    answer.raise_for_status()
    data = answer.json()["data"]
    assert data["customizedStatus"] == 2, data  # the simulator says: failed
    reason: str = data["reason"]
    return reason


def test_a_training_that_fails_exits_1_with_the_platforms_reason(platform: list[str]) -> None:
    done = create(platform, "will-fail")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    avatar_id = lines[0].removeprefix("avatar ").removesuffix(": training started")
    reason = platform_reason(platform, avatar_id)
    assert reason  # the simulator gives one; the CLI must print that very text
    assert "training failed after" in lines[-1]
    assert lines[-1].endswith(f": {reason}"), (lines[-1], reason)


def test_a_timeout_exits_124(platform: list[str]) -> None:
    done = create(platform, "slow", "--timeout", "1")
    assert done.returncode == 124
    assert "still training after" in done.stdout


def test_json_prints_only_the_result(platform: list[str]) -> None:
    done = create(platform, "host-json", "-o", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["timed_out"] is False
    assert result["avatar"]["status"] == "success"
    # and query --wait of a finished avatar answers at once
    again = cli("avatar", "query", result["avatar_id"], "--wait", "-o", "json", *platform)
    assert again.returncode == 0
    assert json.loads(again.stdout)["avatar"]["status"] == "success"


def test_a_terminal_gets_one_line_redrawn_with_a_spinner(platform: list[str]) -> None:
    controller, terminal = pty.openpty()
    argv = [
        *DUIXWATCH,
        "avatar",
        "create",
        "--name",
        "tty",
        "--photo-url",
        "https://x.test/p.png",
        "--wait",
        "--interval",
        "0.5",
        *platform,
    ]
    with subprocess.Popen(argv, stdout=terminal, stderr=terminal, stdin=terminal) as p:
        os.close(terminal)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif p.poll() is not None:
                break
        code = p.wait(timeout=10)
    os.close(controller)
    text = seen.decode(errors="replace")
    assert code == 0, text
    assert "\r\x1b[K" in text
    assert any(frame in text for frame in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
    assert "waited" in text
    assert "training succeeded after" in text
