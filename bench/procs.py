"""Processes of the benchmark: start on 127.0.0.1, watch (CPU, memory), and always stop.

:class:`Processes` owns every child the benchmark starts. Leaving its ``with`` block, normally,
on an error or on Ctrl-C, stops each child still running: SIGTERM (every child of ours shuts
down cleanly on it), then SIGKILL after a grace period; nothing outlives the benchmark, so no
port stays bound. :class:`Sampler` samples the CPU and resident memory of some processes in a
background thread while a measurement runs.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil

__all__ = [
    "DUIXWATCH",
    "Budget",
    "BudgetExceeded",
    "Child",
    "Processes",
    "Sampler",
    "cpu_seconds",
    "free_port",
    "machine",
    "peak_rss_bytes",
    "terminate_on_sigterm",
    "wait_for",
]

DUIXWATCH = [sys.executable, "-m", "duixwatch"]
T = TypeVar("T")

#: The most lines kept from a child's stdout (only the first one is ever needed).
_MAX_STDOUT_LINES = 1000


class BudgetExceeded(Exception):
    """The run's time budget (``--budget``) does not leave enough time for the next step."""


class Budget:
    """The whole run's deadline: every wait is capped by it, so the run ends in time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def cap(self, timeout: float, what: str) -> float:
        """``timeout``, or less if the budget ends sooner; raises when nothing is left."""
        left = self.remaining()
        if left <= 1:
            raise BudgetExceeded(f"the {self.seconds:g} s budget ran out before {what}")
        return min(timeout, left)

    def need(self, seconds: float, what: str) -> None:
        """Raise unless ``seconds`` are left (a step that cannot be cut short)."""
        left = self.remaining()
        if left < seconds:
            raise BudgetExceeded(
                f"{what} needs about {seconds:.0f} s but only {max(left, 0):.0f} s are left of"
                f" the {self.seconds:g} s budget (--budget)"
            )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.2) -> T:
    """Call ``check`` until it returns something truthy, for at most ``timeout`` seconds.

    Exceptions from ``check`` count as "not yet" (the last one is reported on timeout).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    for _ in range(int(timeout / every) + 2):
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - a refused connection while a server starts
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            break
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


@dataclass
class Child:
    """A process started by :class:`Processes`."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stdout_lines: list[str] = field(default_factory=list)
    #: Where stdout went, when it went to a file (``start(..., stdout_to_file=True)``).
    out: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def first_line(self, *, timeout: float) -> str:
        """The first line the process wrote to stdout (e.g. the simulator's "listening")."""

        def line() -> str | None:
            if self.stdout_lines:
                return self.stdout_lines[0]
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}"
                )
            return None

        try:
            return wait_for(line, timeout=timeout, what=f"{self.name} to start", every=0.05)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None


class Processes:
    """Every child process of the benchmark; ``with`` it, and none outlives the block."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[Child] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdout_to_file: bool = False,
    ) -> Child:
        """Start ``args``; stderr goes to ``<log_dir>/<name>.log``, stdout lines are collected
        (the first :data:`_MAX_STDOUT_LINES`), or with ``stdout_to_file`` all of stdout goes
        to ``<log_dir>/<name>.out`` (to read every line afterwards)."""
        log = self._log_dir / f"{name}.log"
        out = self._log_dir / f"{name}.out" if stdout_to_file else None
        with log.open("ab") as err, (out or Path(os.devnull)).open("ab") as out_file:
            # the child keeps its own copies of the descriptors
            popen = subprocess.Popen(  # noqa: S603 - our own commands, no shell
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=out_file if stdout_to_file else subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=cwd,
            )
        child = Child(name, popen, log, out=out)
        self._children.append(child)
        if stdout_to_file:
            return child
        if popen.stdout is None:  # pragma: no cover - stdout=PIPE always gives one
            raise RuntimeError(f"{name}: no stdout pipe")
        threading.Thread(
            target=_collect_lines, args=(popen.stdout, child.stdout_lines), daemon=True
        ).start()
        return child

    def stop(self, child: Child, *, grace: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; the exit code."""
        popen = child.popen
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=10)
        if child in self._children:
            self._children.remove(child)
        return popen.returncode

    def stop_all(self) -> None:
        """Stop every child still running, newest first (the daemon before its simulator)."""
        for child in reversed(list(self._children)):
            try:
                self.stop(child)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(
                    f"bench: could not stop {child.name} (pid {child.pid}): {exc}", file=sys.stderr
                )


def _collect_lines(stream: IO[bytes], into: list[str]) -> None:
    """Read a child's stdout to its end (so it never blocks on a full pipe), keeping a few."""
    with stream:
        for raw in stream:
            if len(into) < _MAX_STDOUT_LINES:
                into.append(raw.decode(errors="replace").rstrip("\n"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used by the process so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set size (``VmHWM``), or ``None`` if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Sampler:
    """Samples resident memory and CPU of some processes every ``period`` seconds, in a thread.

    Bounded: it stops when told, or after ``max_seconds``, whichever comes first.
    """

    def __init__(self, pids: dict[str, int], *, period: float = 0.5, max_seconds: float) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._period = period
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self.max_rss: dict[str, int] = dict.fromkeys(pids, 0)
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        for _ in range(int(self._max_seconds / self._period) + 2):
            for name, proc in self._procs.items():
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                self.max_rss[name] = max(self.max_rss[name], rss)
            self.samples += 1
            if self._stop.wait(self._period) or time.monotonic() > deadline:
                return


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
    }


class _Interrupted(KeyboardInterrupt):
    """SIGTERM, raised as a KeyboardInterrupt so that every ``finally`` runs."""


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM unwinds like Ctrl-C (children are stopped on the way out)."""

    def handler(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
