"""What the soak watches while the chaos runs, each in its own thread, each bounded in time.

* :class:`Scrapers`: ``/metrics`` every half second (``duix_up`` per APP and the reload gauges,
  kept as :class:`~bench.soak.checks.Scrape` records), ``/status`` every second (JSON, HTML and
  without sessions in turn), and every 15 s a burst of four concurrent scrapes of both. Every
  body is searched for secrets; every :data:`PROMTOOL_EVERY`-th exposition (and the last one)
  goes through ``promtool check metrics``. A failed scrape is a violation unless the daemon was
  being killed and restarted (:attr:`Scrapers.restarting`).
* :class:`Sampler`: the daemon's RSS every second (per process: the fit restarts after the
  SIGKILL), the sizes of the files in ``state.dir`` every 5 s (the largest seen per name), and
  the audit log read as it grows (:class:`AuditTail`).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from bench.measure import scrape
from bench.soak import checks
from bench.soak.config import METRICS_EVERY_SECONDS, SCRAPE_TIMEOUT_SECONDS

__all__ = ["PROMTOOL_EVERY", "AuditTail", "Sampler", "Scrapers", "promtool_check"]

#: One exposition in this many goes through promtool (about one every 5 s); the last always.
PROMTOOL_EVERY = 10
STATUS_EVERY_SECONDS = 1.0
BURST_EVERY_SECONDS = 15.0
#: Bound on what is kept (a 30-minute run scrapes /metrics about 3,600 times).
MAX_RECORDS = 100_000


def promtool_check(body: bytes, *, timeout: float = 30) -> str | None:
    """``promtool check metrics`` on one exposition: ``None`` if it passes, else its output."""
    done = subprocess.run(
        ["promtool", "check", "metrics"],  # noqa: S607 - the Debian package's promtool on PATH
        input=body,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode == 0:
        return None
    text = (done.stdout + done.stderr).decode(errors="replace").strip()
    return text[:2000] or f"exit {done.returncode}"


def parse_scrape(sent: float, done: float, text: str) -> checks.Scrape:
    """The few series the checks need from one exposition."""
    up: dict[str, float] = {}
    reload_ok: float | None = None
    reload_ts: float | None = None
    for line in text.splitlines():
        if line.startswith('duix_up{app="'):
            name = line[len('duix_up{app="') : line.index('"}')]
            up[name] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("duixwatch_config_last_reload_successful "):
            reload_ok = float(line.rsplit(" ", 1)[1])
        elif line.startswith("duixwatch_config_last_reload_success_timestamp_seconds "):
            reload_ts = float(line.rsplit(" ", 1)[1])
    return checks.Scrape(sent, done, True, up, reload_ok, reload_ts)


@dataclass
class Findings:
    """Violations found as they happen, shared by the threads (append only, under a lock)."""

    violations: list[checks.Violation] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    report: Callable[[checks.Violation], None] | None = None

    #: What must never be printed, not even inside a violation's detail (a log line quoted).
    secrets: dict[str, bytes] = field(default_factory=dict)

    def add(self, check: str, detail: str, at: float | None = None) -> None:
        detail = checks.redact(detail, self.secrets)
        v = checks.Violation(time.time() if at is None else at, check, detail)
        with self.lock:
            if len(self.violations) < MAX_RECORDS:
                self.violations.append(v)
        if self.report is not None:
            self.report(v)


class Scrapers:
    """The concurrent scrapers of ``/metrics`` and ``/status`` (see the module docstring)."""

    def __init__(
        self,
        base: str,
        *,
        secrets: dict[str, bytes],
        findings: Findings,
        seconds: float,
    ) -> None:
        self._base = base
        self._secrets = secrets
        self._findings = findings
        self._max_seconds = seconds
        self._stop = threading.Event()
        #: Set by the soak while the daemon is killed and restarting: failures are expected.
        self.restarting = threading.Event()
        self.scrapes: list[checks.Scrape] = []
        self.metrics_count = 0
        self.status_count = 0
        self.failed_expected = 0
        self.promtool_checked = 0
        self.promtool_skipped = 0
        self.last_exposition: bytes | None = None
        self._lock = threading.Lock()
        self._promtool_busy = threading.Semaphore(1)
        self._threads = [
            threading.Thread(target=self._metrics_loop, name="soak-metrics", daemon=True),
            threading.Thread(target=self._status_loop, name="soak-status", daemon=True),
            threading.Thread(target=self._burst_loop, name="soak-burst", daemon=True),
        ]

    def __enter__(self) -> Scrapers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=SCRAPE_TIMEOUT_SECONDS + 35)

    def _failed(self, what: str, exc: BaseException | str) -> None:
        if self.restarting.is_set():
            with self._lock:
                self.failed_expected += 1
            return
        self._findings.add("scrape", f"{what} failed: {exc}")

    def _secrets_in(self, what: str, body: bytes) -> None:
        found = checks.find_secrets(body, self._secrets)
        if found:
            self._findings.add("secret", f"{what}: {', '.join(found)}")

    def metrics_once(self, *, promtool: bool) -> None:
        """One ``/metrics`` scrape, recorded and checked."""
        sent = time.time()
        try:
            _, body = scrape(f"{self._base}/metrics", timeout=SCRAPE_TIMEOUT_SECONDS)
        except (OSError, RuntimeError, http.client.HTTPException) as exc:
            with self._lock:
                self.scrapes.append(checks.Scrape(sent, time.time(), False))
            self._failed("/metrics", exc)
            return
        done = time.time()
        record = parse_scrape(sent, done, body.decode(errors="replace"))
        with self._lock:
            self.metrics_count += 1
            if len(self.scrapes) < MAX_RECORDS:
                self.scrapes.append(record)
            self.last_exposition = body
        self._secrets_in("/metrics", body)
        if promtool:
            self.promtool(body)

    def promtool(self, body: bytes) -> None:
        """promtool on ``body``, unless a check is already running (then it is skipped and
        counted: the soak's own CPU stays bounded)."""
        if not self._promtool_busy.acquire(blocking=False):
            with self._lock:
                self.promtool_skipped += 1
            return
        try:
            problem = promtool_check(body)
        finally:
            self._promtool_busy.release()
        with self._lock:
            self.promtool_checked += 1
        if problem is not None:
            self._findings.add("promtool", problem)

    def status_once(self, variant: int) -> None:
        """One ``/status`` scrape: JSON, HTML, or JSON without sessions (by ``variant``)."""
        path, accept = [
            ("/status", "application/json"),
            ("/status", "text/html"),
            ("/status?sessions=0", "application/json"),
        ][variant % 3]
        try:
            body = _get(f"{self._base}{path}", accept)
        except (OSError, RuntimeError, http.client.HTTPException) as exc:
            self._failed(path, exc)
            return
        with self._lock:
            self.status_count += 1
        self._secrets_in(f"{path} ({accept})", body)
        if accept == "application/json":
            try:
                doc = json.loads(body)
            except ValueError as exc:
                self._findings.add("scrape", f"{path}: not JSON: {exc}")
                return
            if not isinstance(doc, dict) or "apps" not in doc:
                self._findings.add("scrape", f"{path}: no 'apps' in the document")

    def _metrics_loop(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        for n in range(int(self._max_seconds / METRICS_EVERY_SECONDS) + 2):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self.metrics_once(promtool=n % PROMTOOL_EVERY == 0)
            self._stop.wait(METRICS_EVERY_SECONDS)

    def _status_loop(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        for n in range(int(self._max_seconds / STATUS_EVERY_SECONDS) + 2):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self.status_once(n)
            self._stop.wait(STATUS_EVERY_SECONDS)

    def _burst_loop(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        for _ in range(int(self._max_seconds / BURST_EVERY_SECONDS) + 2):
            if self._stop.wait(BURST_EVERY_SECONDS) or time.monotonic() > deadline:
                return
            burst = [
                threading.Thread(target=self.metrics_once, kwargs={"promtool": False}),
                threading.Thread(target=self.metrics_once, kwargs={"promtool": False}),
                threading.Thread(target=self.status_once, args=(0,)),
                threading.Thread(target=self.status_once, args=(1,)),
            ]
            for t in burst:
                t.start()
            for t in burst:
                t.join(timeout=SCRAPE_TIMEOUT_SECONDS + 5)


def _get(url: str, accept: str) -> bytes:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname or "", parts.port, timeout=SCRAPE_TIMEOUT_SECONDS
    )
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers={"Accept": accept})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    return body


class AuditTail:
    """The audit log (``audit.jsonl`` and any rotated ``audit.jsonl.N``), read as it grows.

    Files are followed by identity, not name, so a rotation (a rename) loses nothing and
    re-reads nothing: the identity is the inode AND the file's first line, because a
    filesystem reuses the inode of a deleted file (ext4 does, at once) for the next one
    created. Only complete lines are taken. Every distinct line is kept once, as parsed JSON;
    lines that are not JSON objects are counted (a SIGKILL may leave one torn line, which the
    restarted daemon terminates).
    """

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        self._offsets: dict[tuple[int, bytes], int] = {}  # (inode, first line) -> bytes read
        self._seen: set[bytes] = set()
        self.records: list[dict[str, Any]] = []
        self.unparsed: list[bytes] = []
        self.longest_line = 0

    def files(self) -> list[Path]:
        """The audit files, oldest first (``audit.jsonl.N`` … ``.1``, then ``audit.jsonl``)."""
        rotated = [p for p in self._dir.glob("audit.jsonl.*") if p.name.split(".")[-1].isdigit()]
        rotated.sort(key=lambda p: -int(p.name.split(".")[-1]))
        current = self._dir / "audit.jsonl"
        return [*rotated, *([current] if current.exists() else [])]

    def read(self) -> None:
        for path in self.files():
            try:
                with path.open("rb") as handle:
                    first = handle.readline(1 << 20)
                    if not first.endswith(b"\n"):
                        continue  # not one complete line yet: nothing to take
                    identity = (os.fstat(handle.fileno()).st_ino, first)
                    offset = self._offsets.get(identity, 0)
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                continue  # rotated away between the listing and the open
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            self._offsets[identity] = offset + end + 1
            for line in chunk[:end].split(b"\n"):
                self._take(line)

    def _take(self, line: bytes) -> None:
        if not line.strip() or line in self._seen:
            return
        self._seen.add(line)
        self.longest_line = max(self.longest_line, len(line) + 1)
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            self.records.append(value)
        elif len(self.unparsed) < MAX_RECORDS:
            self.unparsed.append(line[:300])


class Sampler:
    """RSS of the daemon (its current pid, read from ``pid()``), file sizes, the audit tail."""

    def __init__(
        self,
        pid: Callable[[], int | None],
        state_dir: Path,
        *,
        seconds: float,
        findings: Findings,
    ) -> None:
        self._pid = pid
        self._dir = state_dir
        self._max_seconds = seconds
        self._findings = findings
        self._stop = threading.Event()
        self._lock = threading.Lock()
        #: pid -> [(unix time, rss bytes)]
        self.rss: dict[int, list[tuple[float, int]]] = {}
        #: pid -> CPU seconds (user + system) at its last sample
        self.cpu: dict[int, float] = {}
        self.max_sizes: dict[str, int] = {}
        self.last_sizes: dict[str, int] = {}
        self.audit = AuditTail(state_dir)
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def sizes(self) -> None:
        sizes: dict[str, int] = {}
        try:
            entries = list(os.scandir(self._dir))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if entry.is_file():
                    sizes[entry.name] = entry.stat().st_size
            except FileNotFoundError:
                continue
        with self._lock:
            self.last_sizes = sizes
            for name, size in sizes.items():
                self.max_sizes[name] = max(size, self.max_sizes.get(name, 0))

    def sample_rss(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return  # killed, not reaped yet: no memory to speak of
            rss = proc.memory_info().rss
            times = proc.cpu_times()
        except psutil.Error:
            return  # killed or exiting: the soak knows, and says so
        with self._lock:
            self.cpu[pid] = float(times.user + times.system)
            series = self.rss.setdefault(pid, [])
            if len(series) < MAX_RECORDS:
                series.append((time.time(), rss))

    def read_audit(self) -> None:
        with self._lock:
            self.audit.read()

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        for n in range(int(self._max_seconds) + 2):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self.sample_rss()
            if n % 5 == 0:
                self.sizes()
                try:
                    self.read_audit()
                except OSError as exc:
                    self._findings.add("audit", f"cannot read the audit log: {exc}")
            self._stop.wait(1.0)
