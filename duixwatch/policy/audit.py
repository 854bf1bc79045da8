"""The audit log: an append-only JSON-lines record of every action, ``<state.dir>/audit.jsonl``.

Contract (design.md §9): one JSON object a line, with exactly these keys in this order::

    {"ts": "2026-11-21T12:00:00.000000Z", "cycle": "20261121T120000Z-3fa9c1",
     "event": "intent" | "outcome" | "dry_run" | "abort", "policy": ..., "app": ..., "app_id": ...,
     "action": "stop_session" | "close_all" | null, "session_id": ..., "reason": ...,
     "outcome": ..., "error": ...}

* ``ts`` is the clock's time in UTC, always with microseconds and a ``Z`` suffix
  (``YYYY-MM-DDTHH:MM:SS.ffffffZ``): fixed width, so the text sorts like the time.
* Unset fields are ``null``. Lines are ASCII (``ensure_ascii``): a string can never break a line
  and a torn write can never split a UTF-8 sequence. The API takes no appKey or token, so the
  log cannot hold one.

Durability (design.md §8 rule 7: an intent is recorded before the DUIX call is made):
:meth:`AuditLog.write` appends the whole line with ONE ``os.write`` on an ``O_APPEND``
descriptor, then calls ``fsync`` before returning; any failure raises :class:`AuditError`, and the
executor then does not act. A crash can therefore leave at most the LAST line torn (a prefix of
a record, without its newline).

Rotation and reopening (the file must stay bounded for months):

* Before a write would take the file past ``max_bytes`` (``state.audit_max_bytes``; 0: never),
  under the write lock, ``audit.jsonl`` is renamed ``audit.jsonl.1`` (``.1`` to ``.2`` …,
  ``.<keep>`` deleted) and a new file started: between whole lines, each already synced, so a
  rotation never splits or loses a line; an intent and its outcome may be in different files,
  and every reader reads across them (:func:`audit_files`, ``read_audit(rotated=True)``,
  :func:`iter_records`, :func:`recent_records`), one line in memory at a time.
* Each write first checks that the path still names the open file: one deleted, or moved away
  by logrotate (``create`` mode), is replaced by a new file at once; :meth:`AuditLog.reopen`
  (SIGUSR1) does the same on request. A failure to open or write sets :attr:`AuditLog.error`
  until a write or :meth:`AuditLog.probe` succeeds (the executor blocks enforcement meanwhile).

Torn lines and their repair:

* When :class:`AuditLog` opens a file whose last byte is not a newline (a crash tore the last
  write), it first appends a newline (and fsyncs), so the torn fragment stays on its own line
  and the next record starts cleanly; ``AuditLog.repaired_torn_line`` says it did.
* :func:`read_audit` sorts every line that is not a JSON object into one of two kinds:

  - **torn**: a fragment our writer could have left: it starts with ``{`` and has no closing
    ``}`` (trailing whitespace and NUL padding ignored), or is only NUL bytes. Torn lines are
    listed in ``torn_lines``; ``torn_tail`` is true when the file's unterminated last line is
    one (a crash not yet repaired). Either is expected after a crash: no issued call is lost,
    because the call is only made after its intent line was complete and synced.
  - **bad**: anything else (garbage, another JSON value, a fragment that happens to end with
    ``}``). Listed in ``bad_lines``; this is corruption and should never happen.

  A final line without its newline that still parses is a complete record and is returned.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, get_args

import structlog

from duixwatch.core import clock as clock_mod
from duixwatch.policy.auditfiles import AuditError, audit_file_sizes, audit_files
from duixwatch.policy.plan import PlannedAction, PolicyPlan

__all__ = [
    "AUDIT_FILENAME",
    "RECORD_KEYS",
    "Action",
    "AuditError",
    "AuditLog",
    "AuditReadResult",
    "Event",
    "audit_file_sizes",
    "audit_files",
    "fields_of",
    "format_ts",
    "iter_records",
    "new_cycle_id",
    "open_intents",
    "read_audit",
    "recent_records",
]

log = structlog.get_logger("duixwatch.policy.audit")

AUDIT_FILENAME: Final = "audit.jsonl"

Event = Literal["intent", "outcome", "dry_run", "abort"]
Action = Literal["stop_session", "close_all"]

#: The keys of every record, in the order they are written (design.md §9).
RECORD_KEYS: Final = (
    "ts",
    "cycle",
    "event",
    "policy",
    "app",
    "app_id",
    "action",
    "session_id",
    "reason",
    "outcome",
    "error",
)

_EVENTS: Final = frozenset(get_args(Event))
_ACTIONS: Final = frozenset(get_args(Action))


def format_ts(moment: datetime) -> str:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (the audit log's ``ts``)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: audit times must be aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A random start per process plus a counter: ids of one process never repeat (until 2**24
# cycles fall in one second), and ids of different processes differ with high probability.
_CYCLE_BASE: Final = secrets.randbits(24)
_cycle_counter = itertools.count()


def fields_of(pplan: PolicyPlan, action: PlannedAction, cycle: str) -> dict[str, Any]:
    """The fields every audit line about one planned call carries."""
    return {
        "cycle": cycle,
        "policy": pplan.policy,
        "app": pplan.app,
        "app_id": pplan.app_id,
        "action": action.action,
        "session_id": action.session_id,
    }


def new_cycle_id(now: datetime) -> str:
    """A new cycle id: ``YYYYMMDDTHHMMSSZ-xxxxxx`` (UTC second, then 6 hex digits).

    Ids sort by second; within a process they are unique (the suffix counts up from a random
    start, modulo 2**24).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}: cycle times must be aware")
    suffix = (_CYCLE_BASE + next(_cycle_counter)) % (1 << 24)
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{suffix:06x}"


def _write_all(fd: int, data: bytes) -> None:
    """Append ``data`` with one ``os.write`` (a regular file takes it whole); loop only on a
    short write (disk nearly full), so the line is still completed when possible."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises instead on regular files
            raise OSError("os.write wrote nothing")
        view = view[written:]


class AuditLog:
    """Appends audit records to one file, durably, rotating it by size (see the module
    docstring).

    Thread-safe: writes are serialised by a lock, so the executor may call it from worker
    threads. Usable as a context manager, which closes it.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: clock_mod.Clock,
        max_bytes: int = 0,
        keep: int = 10,
        required: bool = True,
    ) -> None:
        """Open ``path`` for appending, creating it (mode 0600) and its directory (0700).

        If the file's last line is torn (no final newline), terminate it first; see
        :attr:`repaired_torn_line`. When any of this fails: raise :class:`AuditError`, or with
        ``required=False`` start without a file (every write then tries to open it again and
        raises until it can; :attr:`error` says why).
        """
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        #: (st_dev, st_ino) of the open file, to notice it was deleted or replaced
        self._identity: tuple[int, int] | None = None
        self._size = 0
        self._closed = False
        self.max_bytes = max_bytes
        self.keep = keep
        #: The fsync used after every write: a seam for tests (replace it on the instance).
        self._fsync: Callable[[int], None] = os.fsync
        #: A failed or short write may have left a partial line: the next write starts with a
        #: newline so its record is on a line of its own.
        self._needs_newline = False
        #: True when opening found (and terminated) a torn last line left by a crash.
        self.repaired_torn_line = False
        #: Why the latest open or write failed (None: the latest one worked).
        self.error: str | None = None
        #: When the file was last rotated by size, and how often since the start.
        self.last_rotation: datetime | None = None
        self.rotations = 0
        try:
            with self._lock:
                self._open()
        except AuditError as exc:
            if required:
                raise
            self.error = str(exc)

    def _open(self) -> None:
        """Open (creating) the file; under the lock. Raises :class:`AuditError`."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open the audit log {self.path}: {exc}") from exc
        try:
            if created:
                # Make the new directory entry itself durable, not only the file's data.
                dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    self._fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            stat = os.fstat(fd)
            size = stat.st_size
            if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                _write_all(fd, b"\n")
                self._fsync(fd)
                size += 1
                self.repaired_torn_line = True
        except OSError as exc:
            os.close(fd)
            raise AuditError(f"cannot prepare the audit log {self.path}: {exc}") from exc
        self._fd, self._identity, self._size = fd, (stat.st_dev, stat.st_ino), size
        self._needs_newline = False

    def _drop(self) -> None:
        """Close the descriptor (under the lock), whatever state it is in."""
        fd, self._fd, self._identity = self._fd, None, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("audit_close_failed", path=str(self.path), error=str(exc))

    def _ensure_open(self) -> int:
        """The descriptor to write to (under the lock): reopened when the file was deleted
        or replaced since it was opened, opened when an earlier open failed."""
        if self._closed:
            raise AuditError(f"the audit log {self.path} is closed")
        if self._fd is not None:
            try:
                current = os.stat(self.path)
                same = (current.st_dev, current.st_ino) == self._identity
            except FileNotFoundError:
                same = False
            except OSError as exc:
                raise AuditError(f"cannot check the audit log {self.path}: {exc}") from exc
            if not same:
                log.warning("audit_log_replaced", path=str(self.path), detail="reopening")
                self._drop()
        if self._fd is None:
            self._open()
        assert self._fd is not None  # noqa: S101 - _open() set it or raised
        return self._fd

    def _rotated(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _rotate(self) -> None:
        """``audit.jsonl`` becomes ``.1``, ``.1`` becomes ``.2``, …, ``.<keep>`` is deleted;
        then a new file is opened. Under the lock, between two whole lines. A failure leaves
        every record in some file and writing goes on in the current one (logged)."""
        try:
            self._rotated(self.keep).unlink(missing_ok=True)
            for number in range(self.keep - 1, 0, -1):
                if self._rotated(number).exists():
                    os.replace(self._rotated(number), self._rotated(number + 1))
            os.replace(self.path, self._rotated(1))
        except OSError as exc:
            log.error("audit_rotate_failed", path=str(self.path), error=str(exc))  # noqa: TRY400
            return
        self._drop()  # the old file is complete: every line in it was synced
        self.last_rotation = self._clock.now()
        self.rotations += 1
        log.info("audit_rotated", path=str(self.path), keep=self.keep)
        self._open()

    def write(
        self,
        *,
        cycle: str,
        event: Event,
        policy: str,
        app: str,
        app_id: str,
        action: Action | None = None,
        session_id: str | None = None,
        reason: str | None = None,
        outcome: str | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        """Append one record and fsync it; returns the record as written.

        Raises :class:`AuditError` when the record cannot be written AND synced (the caller must
        then not make the call it describes), ``ValueError`` for an unknown event or action.
        """
        if event not in _EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        if action is not None and action not in _ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        record: dict[str, Any] = {
            "ts": format_ts(self._clock.now()),
            "cycle": cycle,
            "event": event,
            "policy": policy,
            "app": app,
            "app_id": app_id,
            "action": action,
            "session_id": session_id,
            "reason": reason,
            "outcome": outcome,
            "error": error,
        }
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        with self._lock:
            self._append(line + b"\n")
        return record

    def _append(self, data: bytes) -> None:
        """Write ``data`` (whole lines, or nothing) and sync it; under the lock."""
        try:
            fd = self._ensure_open()
            room = self.max_bytes - self._size - self._needs_newline
            if self.max_bytes and self._size and len(data) > room:
                self._rotate()
                fd = self._ensure_open()
            if self._needs_newline:
                data = b"\n" + data
            self._needs_newline = True
            _write_all(fd, data)
            self._size += len(data)
            self._needs_newline = False
            self._fsync(fd)
        except AuditError as exc:
            self.error = str(exc)
            raise
        except OSError as exc:
            self.error = f"cannot write the audit log {self.path}: {exc}"
            raise AuditError(self.error) from exc
        self.error = None

    def probe(self) -> None:
        """Check the file: reopen it when it was deleted or replaced; after a failure
        (:attr:`error` set) also write and sync a newline, to learn whether writing works again
        (readers skip blank lines; it also ends a line a failed write may have left partial).
        Raises :class:`AuditError` (and sets :attr:`error`) while it cannot."""
        with self._lock:
            if self.error is None and not self._needs_newline:
                try:
                    self._ensure_open()
                except AuditError as exc:
                    self.error = str(exc)
                    raise
                return
            self._needs_newline = False
            self._append(b"\n")

    def reopen(self) -> None:
        """Close and open the file again (SIGUSR1, after logrotate moved it away). Raises
        :class:`AuditError` when it cannot be opened; the next write tries again."""
        with self._lock:
            if self._closed:
                return
            self._drop()
            try:
                self._open()
            except AuditError as exc:
                self.error = str(exc)
                raise
            self.error = None
        log.info("audit_reopened", path=str(self.path))

    def files(self) -> list[Path]:
        """The audit file and its rotated files that exist, oldest first."""
        return audit_files(self.path)

    def file_sizes(self) -> dict[str, int]:
        """Bytes of :meth:`files`, by file name (:func:`audit_file_sizes`)."""
        return audit_file_sizes(self.path)

    def close(self) -> None:
        """Close the file (idempotent); later writes raise :class:`AuditError`."""
        with self._lock:
            self._closed = True
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                os.close(fd)
            except OSError as exc:
                raise AuditError(f"cannot close the audit log {self.path}: {exc}") from exc

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class AuditReadResult:
    """What :func:`read_audit` found. Line numbers start at 1 and, across rotated files, count
    on from the oldest file to the newest (``cat audit.jsonl.2 audit.jsonl.1 audit.jsonl``)."""

    #: Every line that is a JSON object, in file order.
    records: list[dict[str, Any]] = field(default_factory=list)
    #: The file ends in an unterminated torn line (a crash not yet repaired by a reopen).
    torn_tail: bool = False
    #: Lines that are torn writes (see the module docstring), the tail included: expected
    #: after a crash, never a lost record.
    torn_lines: list[int] = field(default_factory=list)
    #: Lines that are neither a record nor a torn write: corruption, should be empty.
    bad_lines: list[int] = field(default_factory=list)
    #: The files read, oldest first.
    files: tuple[Path, ...] = field(default=(), compare=False)

    @property
    def clean(self) -> bool:
        """No torn and no bad lines."""
        return not self.torn_lines and not self.bad_lines


def _is_torn(line: bytes) -> bool:
    """Whether an unparsable line looks like a record our writer was cut off while writing."""
    stripped = line.rstrip(b" \t\r\x00")
    if not stripped:  # only NUL padding: a write lost in a power cut
        return True
    return stripped.startswith(b"{") and not stripped.endswith(b"}")


Line = tuple[Literal["record", "torn", "bad"], int, Any, bool]


def _scan(files: list[Path]) -> Iterator[Line]:
    """(kind, line number, record or None, is the unterminated last line) of every non-blank
    line of ``files`` in order, read one line at a time (a 64 MiB file is never held whole)."""
    number = 0
    for path in files:
        try:
            with open(path, "rb") as handle:
                for raw in handle:
                    number += 1
                    terminated = raw.endswith(b"\n")
                    line = raw[:-1] if terminated else raw
                    if not line.strip(b" \t\r"):
                        continue
                    try:
                        value = json.loads(line.decode("utf-8"))
                    except ValueError:  # JSONDecodeError and UnicodeDecodeError
                        value = None
                    if isinstance(value, dict):
                        yield "record", number, value, not terminated
                    elif value is None and _is_torn(line):
                        yield "torn", number, None, not terminated
                    else:
                        yield "bad", number, None, not terminated
        except FileNotFoundError:
            continue  # rotated away while being read: its lines are in the next name
        except OSError as exc:
            raise AuditError(f"cannot read the audit log {path}: {exc}") from exc


def read_audit(path: Path, *, rotated: bool = False) -> AuditReadResult:
    """Read an audit log, tolerating torn lines (see the module docstring); with ``rotated``,
    its rotated files too, oldest first.

    A missing file has no records. Blank lines are skipped. Raises :class:`AuditError` when a
    file cannot be read.
    """
    path = Path(path)
    files = audit_files(path) if rotated else [path]
    records: list[dict[str, Any]] = []
    torn_lines: list[int] = []
    bad_lines: list[int] = []
    torn_tail = False
    for kind, number, value, unterminated in _scan(files):
        if kind == "record":
            records.append(value)
        elif kind == "torn":
            torn_lines.append(number)
            torn_tail = torn_tail or unterminated
        else:
            bad_lines.append(number)
    return AuditReadResult(
        records=records,
        torn_tail=torn_tail,
        torn_lines=torn_lines,
        bad_lines=bad_lines,
        files=tuple(f for f in files if f.is_file()),
    )


def iter_records(path: Path, *, newest_files: int | None = None) -> Iterator[dict[str, Any]]:
    """The records of ``path`` and its rotated files, oldest first, one line in memory at a
    time; with ``newest_files``, only that many of the newest files."""
    files = audit_files(path)
    if newest_files is not None:
        files = files[-newest_files:] if newest_files > 0 else []
    for kind, _, value, _ in _scan(files):
        if kind == "record":
            yield value


def recent_records(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` records across ``path`` and its rotated files, oldest first, reading
    only the newest files needed."""
    chunks: list[list[dict[str, Any]]] = []
    need = limit
    for file in reversed(audit_files(path)):
        if need <= 0:
            break
        tail = deque((v for kind, _, v, _ in _scan([file]) if kind == "record"), maxlen=need)
        chunks.append(list(tail))
        need -= len(tail)
    return [record for chunk in reversed(chunks) for record in chunk]


def open_intents(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The intents without an outcome, oldest first: calls a crash (SIGKILL, power loss) cut
    between their intent line and their outcome line. Whether each happened is unknown; the
    daemon records an ``unknown`` outcome for each after restarting."""
    open_: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in records:
        key = (
            record.get("cycle"),
            record.get("policy"),
            record.get("app_id"),
            record.get("action"),
            record.get("session_id"),
        )
        if record.get("event") == "intent":
            open_[key] = record
        elif record.get("event") == "outcome":
            open_.pop(key, None)
    return list(open_.values())
