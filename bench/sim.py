"""The simulator process of a benchmark run and its control API (``/_sim/…``)."""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
import yaml

from bench.procs import DUIXWATCH, Budget, Child, Processes

__all__ = ["Simulator", "print_config", "start_simulator"]

_LISTENING = re.compile(r"listening on http://[^:\s]+:(\d+)")
#: Control-API calls run with at most this many in flight (the simulator serves one at a time
#: anyway: a few overlapping calls only hide the loopback round trips).
SETUP_CONCURRENCY = 8


def _sim_command(sim_command: str | None) -> list[str]:
    """``python -m duixwatch sim`` or, for investigations, another command that takes its flags."""
    return shlex.split(sim_command) if sim_command else [*DUIXWATCH, "sim"]


def start_simulator(
    procs: Processes,
    *,
    apps: int,
    seed: int,
    sim_command: str | None,
    timeout: float,
    budget: Budget | None = None,
    workload: Sequence[str] | None = None,
) -> Simulator:
    """``duixwatch sim --no-workload`` on 127.0.0.1, on a port it picks itself (no race).

    ``workload``: the workload flags instead of ``--no-workload`` (e.g.
    ``["--arrivals-per-minute", "12"]``; an empty list is the simulator's default workload).
    """
    child = procs.start(
        f"sim-{apps}",
        [
            *_sim_command(sim_command),
            "--listen",
            "127.0.0.1:0",
            "--apps",
            str(apps),
            "--seed",
            str(seed),
            *(["--no-workload"] if workload is None else workload),
        ],
    )
    if budget is not None:
        timeout = budget.cap(timeout, "the simulator started")
    line = child.first_line(timeout=timeout)
    match = _LISTENING.search(line)
    if match is None:
        raise RuntimeError(f"unexpected first line from the simulator: {line!r}")
    return Simulator(child, f"http://127.0.0.1:{match.group(1)}")


def print_config(
    *, apps: int, seed: int, base_url: str, sim_command: str | None, timeout: float = 120
) -> dict[str, Any]:
    """The duixwatch config ``duixwatch sim --print-config`` writes for that simulator."""
    listen = base_url.removeprefix("http://")
    printed = subprocess.run(  # noqa: S603 - our own command, no shell
        [
            *_sim_command(sim_command),
            "--apps",
            str(apps),
            "--seed",
            str(seed),
            "--print-config",
            "--listen",
            listen,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    doc: dict[str, Any] = yaml.safe_load(printed.stdout)
    return doc


@dataclass
class Simulator:
    """A running ``duixwatch sim`` and its control API."""

    child: Child
    base_url: str

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def add_sessions(
        self, app_ids: list[str], *, count: int, age_seconds: float, timeout: float
    ) -> float:
        """``count`` sessions of age ``age_seconds`` in every app; the seconds it took.

        One ``POST /_sim/apps/{app}/sessions`` per app, at most :data:`SETUP_CONCURRENCY` at once,
        within ``timeout`` seconds overall.
        """
        started = time.monotonic()
        deadline = started + timeout
        body = {"count": count, "age_seconds": age_seconds}
        local = _PerThreadSession()

        def add(app_id: str) -> None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"adding sessions took longer than {timeout:g} s")
            response = local.get().post(
                self._url(f"/_sim/apps/{app_id}/sessions"), json=body, timeout=min(remaining, 60)
            )
            response.raise_for_status()

        try:
            with ThreadPoolExecutor(SETUP_CONCURRENCY) as pool:
                for _ in pool.map(add, app_ids):
                    pass
        finally:
            local.close_all()
        return time.monotonic() - started

    def set_latency(self, seconds: float) -> None:
        """Every request of every app to every endpoint waits ``seconds`` before it is answered."""
        response = requests.post(
            self._url("/_sim/faults"),
            json={"app": "*", "endpoint": "*", "latency_seconds": seconds},
            timeout=30,
        )
        response.raise_for_status()

    def set_fault(self, fault: dict[str, Any], *, timeout: float = 10) -> None:
        """``POST /_sim/faults``: install ``fault`` (its ``app`` and ``endpoint`` say where)."""
        requests.post(self._url("/_sim/faults"), json=fault, timeout=timeout).raise_for_status()

    def clear_fault(self, app: str, endpoint: str, *, timeout: float = 10) -> int:
        """``DELETE /_sim/faults?app=&endpoint=``: remove that one fault; how many went."""
        response = requests.delete(
            self._url("/_sim/faults"), params={"app": app, "endpoint": endpoint}, timeout=timeout
        )
        response.raise_for_status()
        cleared: int = response.json()["cleared"]
        return cleared

    def sessions(self, *, closed_by: str | None = None, timeout: float = 60) -> list[Any]:
        """``GET /_sim/sessions``: the record of every session (ended ``closed_by`` only)."""
        params = {} if closed_by is None else {"closed_by": closed_by}
        response = requests.get(self._url("/_sim/sessions"), params=params, timeout=timeout)
        response.raise_for_status()
        found: list[Any] = response.json()["sessions"]
        return found

    def requests_by(self, *, timeout: float = 60) -> dict[tuple[str, str], int]:
        """Requests that reached the simulator, per (app id, endpoint)."""
        doc = requests.get(self._url("/_sim/stats"), timeout=timeout).json()
        return {(row["app_id"], row["endpoint"]): row["count"] for row in doc.get("requests", [])}

    def reset_stats(self) -> None:
        requests.delete(self._url("/_sim/stats"), timeout=60).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """Requests per endpoint (summed over apps), in-flight high-water mark."""
        doc = requests.get(self._url("/_sim/stats"), timeout=60).json()
        per_endpoint: dict[str, int] = {}
        for row in doc.get("requests", []):
            per_endpoint[row["endpoint"]] = per_endpoint.get(row["endpoint"], 0) + row["count"]
        return {"requests": per_endpoint, "max_in_flight": doc.get("max_in_flight")}


class _PerThreadSession:
    """One ``requests.Session`` per worker thread (a Session is not thread-safe)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close_all(self) -> None:
        with self._lock:
            for session in self._all:
                session.close()
            self._all.clear()
