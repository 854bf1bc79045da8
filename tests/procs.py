"""Real processes on 127.0.0.1 for end-to-end tests: ports, waiting, the simulator, the daemon."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

DUIXWATCH = [sys.executable, "-m", "duixwatch"]
T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def eventually(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``check`` until it returns a truthy value, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # not up yet, or half-written
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@contextmanager
def process(
    args: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` with output to ``log``; killed on exit if still running. ``preexec_fn``
    runs in the child before it starts (e.g. to lower a resource limit)."""
    with (
        log.open("wb") as out,
        subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn
        ) as p,
    ):
        try:
            yield p
        finally:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def start_sim(
    port: int, log: Path, *, apps: int, seed: int, extra: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """``duixwatch sim --no-workload [extra]`` on 127.0.0.1:port, returned once it answers."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        p = subprocess.Popen(
            [
                *DUIXWATCH,
                "sim",
                "--listen",
                f"127.0.0.1:{port}",
                "--apps",
                str(apps),
                "--seed",
                str(seed),
                "--no-workload",
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    eventually(
        lambda: httpx.get(f"http://127.0.0.1:{port}/_sim/state", timeout=1).status_code == 200,
        timeout=15,
        what="the simulator",
    )
    return p


def sim_config(sim_port: int, *, apps: int, seed: int) -> dict[str, Any]:
    """The config ``duixwatch sim --print-config`` writes for that simulator."""
    printed = subprocess.run(
        [
            *DUIXWATCH,
            "sim",
            "--apps",
            str(apps),
            "--seed",
            str(seed),
            "--print-config",
            "--listen",
            f"127.0.0.1:{sim_port}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    doc: dict[str, Any] = yaml.safe_load(printed.stdout)
    return doc
