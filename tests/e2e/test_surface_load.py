"""Hostile input on the HTTP surface does not delay polling: `duixwatch run` holding 200 idle
connections and serving 50 concurrent scrapes still polls every app on schedule; a flood of
slow-request (slowloris) connections beyond max_connections leaves /metrics answering."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests import procs
from tests.procs import DUIXWATCH, eventually, free_port, process

pytestmark = [pytest.mark.e2e, pytest.mark.exclusive]  # timings: run alone

APPS, INTERVAL = 10, 1.0


@contextmanager
def daemon(tmp_path: Path, **server: Any) -> Iterator[Any]:
    """The daemon against a simulator: its base URL (with ``preexec_fn``: and its pid)."""
    preexec = server.pop("preexec_fn", None)
    sim_port, http_port = free_port(), free_port()
    config = procs.sim_config(sim_port, apps=APPS, seed=11)
    for app in config["apps"]:
        app["poll_interval_seconds"] = INTERVAL
    config["server"] = {"listen": f"127.0.0.1:{http_port}", **server}
    config["state"] = {"dir": str(tmp_path / "state")}
    path = tmp_path / "duixwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    base = f"http://127.0.0.1:{http_port}"
    sim = procs.start_sim(sim_port, tmp_path / "sim.log", apps=APPS, seed=11)
    try:
        with process(
            [*DUIXWATCH, "run", "-c", str(path)], tmp_path / "daemon.log", preexec_fn=preexec
        ) as proc:
            eventually(
                lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200,
                timeout=20,
                what="/readyz",
            )
            yield base if preexec is None else (base, proc.pid)
    finally:
        sim.kill()
        sim.wait(timeout=10)


def last_polls(body: str) -> dict[str, float]:
    return {
        s.labels["app"]: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "duix_app_last_poll_success_timestamp_seconds"
    }


def scrape(base: str) -> tuple[float, str]:
    started = time.monotonic()
    response = httpx.get(f"{base}/metrics", timeout=10)
    response.raise_for_status()
    return time.monotonic() - started, response.text


def idle_connections(stack: ExitStack, base: str, count: int, *, slow: bool) -> list[socket.socket]:
    host, port = base.removeprefix("http://").split(":")
    held = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection((host, int(port)), timeout=5))
        if slow:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and the rest a byte at a time, or never
        held.append(sock)
    return held


def test_200_idle_connections_and_50_concurrent_scrapes_do_not_delay_a_poll(
    tmp_path: Path,
) -> None:
    with (
        daemon(tmp_path, idle_timeout_seconds=30, read_timeout_seconds=30) as base,
        ExitStack() as stack,
    ):
        idle_connections(stack, base, 200, slow=False)
        worst_gap = 0.0
        slowest = 0.0
        deadline = time.monotonic() + 6  # six poll intervals under load ...
        with ThreadPoolExecutor(max_workers=50) as pool:
            rounds = 0
            # ... and at least three rounds of 50 scrapes, however slow the machine is
            while (time.monotonic() < deadline or rounds < 3) and rounds < 100:
                rounds += 1
                results = list(pool.map(lambda _: scrape(base), range(50)))
                slowest = max(slowest, *(elapsed for elapsed, _ in results))
                now = time.time()
                polls = last_polls(results[-1][1])
                assert len(polls) == APPS
                worst_gap = max(worst_gap, *(now - ts for ts in polls.values()))
        # every app polled on schedule: never more than two intervals since its last success
        assert worst_gap < 2 * INTERVAL + 0.5, worst_gap
        assert slowest < 5.0, slowest


def test_a_slowloris_flood_beyond_max_connections_leaves_metrics_answering(
    tmp_path: Path,
) -> None:
    with (
        daemon(tmp_path, max_connections=100, read_timeout_seconds=2) as base,
        ExitStack() as stack,
    ):
        held = idle_connections(stack, base, 300, slow=True)
        deadline = time.monotonic() + 5
        worst = 0.0
        checks = 0
        while time.monotonic() < deadline and checks < 50:
            for sock in held[:: max(1, len(held) // 30)]:
                with contextlib.suppress(OSError):  # closed by the server: the point
                    sock.send(b"X")  # a byte now and then
            elapsed, body = scrape(base)
            worst = max(worst, elapsed)
            checks += 1
            assert len(last_polls(body)) == APPS
            time.sleep(0.2)
        assert worst < 1.0, worst
        dropped = {
            s.labels["reason"]: s.value
            for family in text_string_to_metric_families(scrape(base)[1])
            for s in family.samples
            if s.name == "duixwatch_http_connections_dropped_total"
        }
        assert dropped["evicted"] + dropped["read_timeout"] >= 200, dropped


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' line")


@pytest.mark.timeout(120)
def test_1500_slowloris_connections_change_nothing_for_scrapes_polls_or_descriptors(
    tmp_path: Path,
) -> None:
    """The issue's attack at the default bounds (max_connections 512, read timeout 5 s), the
    daemon started with a soft limit of 1,024 open files: it raises the limit, stays far
    below it, answers /metrics within 1 s and polls every app on schedule throughout."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 4096, f"this test needs a hard open-file limit of 4096, not {hard}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))  # 1,500 sockets here

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    with (
        daemon(tmp_path, preexec_fn=low_limit) as (base, pid),
        ExitStack() as stack,
    ):
        assert soft_nofile(pid) == hard  # raised at start, as Go exporters do
        held = idle_connections(stack, base, 1500, slow=True)
        deadline = time.monotonic() + 12  # past two read timeouts
        worst_scrape = worst_gap = 0.0
        most_files = 0
        rounds = 0
        while time.monotonic() < deadline and rounds < 200:
            for sock in held[rounds % 10 :: 10]:  # a byte now and then, slowloris-style
                with contextlib.suppress(OSError):  # closed by the server: the point
                    sock.send(b"X")
            elapsed, body = scrape(base)
            worst_scrape = max(worst_scrape, elapsed)
            now = time.time()
            polls = last_polls(body)
            assert len(polls) == APPS
            worst_gap = max(worst_gap, *(now - ts for ts in polls.values()))
            most_files = max(most_files, open_files(pid))
            rounds += 1
            time.sleep(0.2)
    assert worst_scrape < 1.0, worst_scrape
    assert worst_gap < 2 * INTERVAL + 0.5, worst_gap
    # max_connections 512 + duix.max_in_flight 32 + the reserve of 64
    assert most_files <= 512 + 32 + 64, most_files
    print(
        f"1,500 slowloris connections: worst scrape {worst_scrape * 1000:.0f} ms, worst poll "
        f"gap {worst_gap:.2f} s (interval {INTERVAL:g} s), at most {most_files} open files"
    )
