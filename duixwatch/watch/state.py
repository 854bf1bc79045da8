"""The state database: what duixwatch must remember across restarts, in SQLite.

Three tables live in ``<state.dir>/state.sqlite3``:

``first_seen``
    When each live session of an APP was first seen. A session whose list item carries no start
    time gets its age from here, so a restart does not make old sessions young again (design.md
    §2). :meth:`StateStore.first_seen` also forgets the ids of the APP that are no longer live,
    so the table never holds more than the live sessions.
``over_since``
    Per APP and policy, when the APP first exceeded the policy's ``max_sessions``: the start
    of the ``for_seconds`` window, kept across restarts so a restart does not restart the wait.
``session_history``
    Every session seen to end: APP, id, start (the platform's, else the first sighting), end
    (the last sighting), who closed it (``policy``/``platform``) and which policy. Written
    behind with the first-seen changes; pruned by :mod:`duixwatch.watch.upkeep`.

Durability and safety choices (the file's schema and its readers: :mod:`~.statedb`):

* WAL journal with ``synchronous=FULL``: a transaction that returned is on disk even after a
  power loss (``NORMAL`` in WAL mode may lose the last transactions, which would reset ages).
* A file that is not a usable database raises ``StateCorrupt`` (the daemon moves it aside and
  starts afresh: :meth:`StateStore.open_or_memory`), one from a newer duixwatch
  ``StateTooNew``, one that cannot be opened ``ConfigError``: each names the path.
* A directory duixwatch creates gets mode 0700 and the database file 0600 (SQLite gives its
  ``-wal``/``-shm`` files the database's mode); an existing directory is left as it is.
* Calls may come from anyio worker threads: the connection is shared across threads
  (``check_same_thread=False``) behind a lock, and each call is one short transaction.
* A failure after opening (disk full, I/O error, a closed store) raises :class:`StateError`
  and sets :attr:`StateStore.write_error` until a write succeeds again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import anyio
import anyio.to_thread
import structlog

from duixwatch.core import errors
from duixwatch.core.clock import Clock
from duixwatch.watch.statedb import (
    DB_FILENAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    HistoryRow,
    StateCorrupt,
    StateTooNew,
    file_sizes,
    from_us,
    move_aside,
    read_history,
    to_us,
)

__all__ = [
    "DB_FILENAME",
    "RETRY_SECONDS",
    "SCHEMA_VERSION",
    "HistoryRow",
    "StateError",
    "StateStore",
    "read_history",
]

log = structlog.get_logger("duixwatch.watch.state")

#: Seconds between attempts to write queued first-seen changes after a failed write.
RETRY_SECONDS: Final = 5.0
#: A database smaller than this many pages (4 MiB at SQLite's 4 KiB pages) is never vacuumed.
VACUUM_MIN_PAGES: Final = 1024

_T = TypeVar("_T")


class StateError(errors.StorageError):
    """Reading or writing the state database failed after it was opened."""


class StateStore:
    """duixwatch's persistent state in one SQLite database (see the module docstring).

    Usable as a context manager, which closes it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        recover: bool = False,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        """Open (creating if needed) ``<directory>/state.sqlite3``.

        Raises :class:`~duixwatch.core.errors.ConfigError` naming the path when the directory or
        database cannot be created or opened, or the database is corrupt
        (:class:`~duixwatch.watch.statedb.StateCorrupt`) or too new
        (:class:`~duixwatch.watch.statedb.StateTooNew`). With ``recover`` (the daemon), a corrupt
        file is moved aside (:func:`~duixwatch.watch.statedb.move_aside`, at ``now()``) and a
        fresh one started, loudly; :attr:`moved_aside` says where it went.
        """
        path = Path(directory) / DB_FILENAME
        self.path: Path | None = path
        self._lock = threading.Lock()
        self._closed = False
        self._write_error: str | None = None
        #: Why the file could not be used at all (an in-memory stand-in is running instead).
        self.unavailable: str | None = None
        #: Where a corrupt file found at open was moved.
        self.moved_aside: Path | None = None
        try:
            self._open_file(path)
        except StateCorrupt as exc:
            if not recover:
                raise
            try:
                self.moved_aside = move_aside(path, (now or (lambda: datetime.now(UTC)))())
            except OSError as move_exc:
                raise errors.ConfigError(f"{exc}; moving it aside failed: {move_exc}") from exc
            log.error(  # noqa: TRY400 - expected, the message says it all
                "state_corrupt_moved_aside",
                path=str(path),
                moved_to=str(self.moved_aside),
                error=str(exc),
                detail="a fresh state database was started: first-seen times restart from now,"
                " for_seconds clocks from zero, and the history so far is in the moved file",
            )
            self._open_file(path)
        self._init_first_seen()

    def _open_file(self, path: Path) -> None:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Create the file ourselves so it is 0600 whatever the umask; SQLite copies the
            # database's mode to its -wal and -shm files.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            connection = sqlite3.connect(
                path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise errors.ConfigError(f"cannot open the state database {path}: {exc}") from exc
        self._connection = connection
        self._prepare(journal_mode="wal")

    @classmethod
    def open_or_memory(cls, directory: Path, *, now: Callable[[], datetime]) -> StateStore:
        """The daemon's store: the file (a corrupt one moved aside), or, when the directory
        or file cannot be used (read-only, full, not a directory), an in-memory store whose
        :attr:`write_error` says why, so that polling goes on and enforcement is blocked.
        A database written by a newer duixwatch still raises (upgrade, or move it away)."""
        try:
            return cls(directory, recover=True, now=now)
        except StateTooNew:
            raise
        except errors.ConfigError as exc:
            log.error(  # noqa: TRY400 - the message says it all
                "state_unavailable",
                error=str(exc),
                detail="running on an in-memory state: polling and metrics go on, policies do"
                " not act; fix the state directory and restart",
            )
            store = cls.in_memory()
            store.unavailable = str(exc)
            return store

    @property
    def write_error(self) -> str | None:
        """Why writes fail (the latest one failed, or the file is unusable); None if they work."""
        return self.unavailable or self._write_error

    @classmethod
    def in_memory(cls) -> StateStore:
        """A store that lives only as long as the object (tests, ``duixwatch plan``)."""
        store = cls.__new__(cls)
        store.path = None
        store._connection = sqlite3.connect(
            ":memory:", isolation_level=None, check_same_thread=False
        )
        store._lock = threading.Lock()
        store._closed = False
        store._write_error = None
        store.unavailable = None
        store.moved_aside = None
        store._prepare(journal_mode=None)
        store._init_first_seen()
        return store

    @property
    def _label(self) -> str:
        return str(self.path) if self.path is not None else ":memory:"

    def _prepare(self, *, journal_mode: str | None) -> None:
        """Configure the connection, check integrity and bring the schema up to date.

        Any failure closes the connection and raises :class:`~duixwatch.core.errors.ConfigError`.
        """
        try:
            db = self._connection
            if journal_mode is not None:
                # On a filesystem without shared memory SQLite keeps its rollback journal;
                # with synchronous=FULL that is just as durable, only slower.
                db.execute(f"PRAGMA journal_mode={journal_mode}")
            db.execute("PRAGMA synchronous=FULL")
            checks = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            self._connection.close()
            # "file is not a database", "database disk image is malformed": the file itself;
            # an OperationalError (locked, read-only, cannot open) is about where it lives.
            kind = errors.ConfigError if isinstance(exc, sqlite3.OperationalError) else StateCorrupt
            raise kind(f"cannot use the state database {self._label}: {exc}") from exc
        problem: errors.ConfigError | None = None
        if checks != ["ok"]:
            problem = StateCorrupt(
                f"the state database {self._label} is corrupt ({'; '.join(checks)[:200]});"
                " move it away and restart (first-seen times will restart from now)"
            )
        elif version > SCHEMA_VERSION:
            problem = StateTooNew(
                f"the state database {self._label} has schema version {version}, newer than"
                f" this duixwatch understands ({SCHEMA_VERSION}); upgrade duixwatch or move"
                " the state directory away"
            )
        if problem is not None:
            self._connection.close()
            raise problem
        try:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                self._migrate(target)
        except sqlite3.Error as exc:
            self._connection.close()
            raise errors.ConfigError(
                f"cannot migrate the state database {self._label} to schema version"
                f" {SCHEMA_VERSION}: {exc}"
            ) from exc

    def _migrate(self, target: int) -> None:
        """Run the migration to schema version ``target`` in one transaction."""
        db = self._connection
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target - 1]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={target}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _locked_transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; SQLite errors become :class:`StateError`."""
        with self._lock:
            if self._closed:
                raise StateError(f"the state database {self._label} is closed")
            db = self._connection
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateError(f"state database {self._label}: {exc}") from exc
            try:
                yield db
            except BaseException as exc:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error as rollback_exc:
                    exc.add_note(f"rollback failed too: {rollback_exc}")
                if isinstance(exc, sqlite3.Error):
                    raise StateError(f"state database {self._label}: {exc}") from exc
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"state database {self._label}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """:meth:`_locked_transaction`, remembering whether it failed (:attr:`write_error`)."""
        try:
            with self._locked_transaction() as db:
                yield db
        except StateError as exc:
            self._write_error = str(exc)
            raise
        self._write_error = None

    def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read-only ``query`` under the lock."""
        with self._lock:
            if self._closed:
                raise StateError(f"the state database {self._label} is closed")
            try:
                return query(self._connection)
            except sqlite3.Error as exc:
                raise StateError(f"state database {self._label}: {exc}") from exc

    # ----------------------------------------------------------------------- first seen

    def _init_first_seen(self) -> None:
        """Load the first_seen table into its in-memory mirror (once, at open)."""
        #: app id -> {session id: first seen}: the truth for readers, ahead of the table
        self._first_seen: dict[str, dict[str, datetime]] = {}
        #: (app id, session id) -> first seen (µs) to insert, or None to delete, not yet written
        self._pending: dict[tuple[str, str], int | None] = {}
        self._pending_lock = threading.Lock()
        #: ended sessions to insert into session_history, not yet written
        self._pending_history: list[HistoryRow] = []
        #: called (from the caller's thread) when ``_pending`` goes from empty to not empty
        self.on_pending: Callable[[], None] | None = None
        rows = self._read(
            lambda db: db.execute("SELECT app_id, session_id, first_seen_us FROM first_seen")
        )
        for app_id, session_id, first_seen_us in rows:
            self._first_seen.setdefault(app_id, {})[session_id] = from_us(int(first_seen_us))

    def first_seen(
        self, app_id: str, session_ids: Iterable[str], now: datetime
    ) -> Mapping[str, datetime]:
        """When each of ``session_ids`` was first seen for ``app_id``; new ones get ``now``.

        ``session_ids`` must be the APP's COMPLETE live list from a successful poll: ids of the
        APP that are not in it are forgotten (those sessions ended).
        Never call it after a failed poll, or every age would restart.

        This answers from memory and only queues the change for :meth:`flush` (write-behind):
        a transaction per poll, each with its fsync, blocked the event loop for seconds at
        10,000 APPs. The daemon flushes in a worker thread as soon as something is queued, so
        writes group themselves into one transaction per flush; :meth:`close` flushes too. A
        change lost to a crash before its flush only makes a session look younger after the
        restart (its first sight is the restart): ages are never overstated.
        """
        if self._closed:
            raise StateError(f"the state database {self._label} is closed")
        ids = list(dict.fromkeys(session_ids))
        known = self._first_seen.get(app_id, {})
        live = set(ids)
        gone = [sid for sid in known if sid not in live]
        new = [sid for sid in ids if sid not in known]
        if not gone and not new:
            return known
        now_us = to_us(now)
        seen_now = from_us(now_us)
        current = {sid: known.get(sid, seen_now) for sid in ids}
        self._first_seen[app_id] = current
        with self._pending_lock:
            was_empty = not self._pending
            for sid in gone:
                self._pending[(app_id, sid)] = None
            for sid in new:
                self._pending[(app_id, sid)] = now_us
        if was_empty and self.on_pending is not None:
            self.on_pending()
        return current

    async def write_behind(self, *, clock: Clock) -> None:
        """Write queued first-seen changes in a worker thread as soon as there are any, until
        cancelled (the daemon runs this in its task group).

        Changes queued while a write is under way go into the next one, so the writes group
        themselves (one transaction, one fsync, for however many polls changed something).
        A failed write (disk full, I/O error) is logged and retried every
        :data:`RETRY_SECONDS`; the changes stay queued meanwhile and polling goes on from
        memory.
        """
        wake = anyio.Event()

        def queued() -> None:  # first_seen() runs on the event loop's thread
            wake.set()

        self.on_pending = queued
        if self.pending_writes:
            wake.set()  # queued before this writer started: write them too
        while True:
            await wake.wait()
            wake = anyio.Event()
            try:
                await anyio.to_thread.run_sync(self.flush)
            except StateError as exc:
                self.log_write_failure(exc)
                await clock.sleep(RETRY_SECONDS)
                wake.set()

    def log_write_failure(self, exc: StateError) -> None:
        """Log a failed write of queued changes (they stay queued)."""
        log.error("state_write_failed", error=str(exc), pending=self.pending_writes)

    @property
    def pending_writes(self) -> int:
        """First-seen changes and ended sessions queued and not yet written."""
        return len(self._pending) + len(self._pending_history)

    def record_ended(self, rows: Iterable[HistoryRow]) -> None:
        """Queue ended sessions for the history (written behind, with the first-seen
        changes)."""
        rows = list(rows)
        if not rows:
            return
        with self._pending_lock:
            was_empty = not self._pending and not self._pending_history
            self._pending_history.extend(rows)
        if was_empty and self.on_pending is not None:
            self.on_pending()

    def prune_history(self, before: datetime) -> int:
        """Delete the history of sessions that ended before ``before``; how many rows. Blocking
        (a worker thread's job); bounded batches keep each transaction short."""
        cutoff = to_us(before)
        removed = 0
        for _ in range(10_000):  # bounded: at most 10,000 batches per call
            with self._transaction() as db:
                count = db.execute(
                    "DELETE FROM session_history WHERE rowid IN (SELECT rowid FROM"
                    " session_history WHERE ended_us < ? LIMIT 5000)",
                    (cutoff,),
                ).rowcount
            removed += count
            if count < 5000:
                break
        return removed

    def history_rows(self) -> int:
        """Rows in session_history (tests, status)."""
        return int(
            self._read(lambda db: db.execute("SELECT COUNT(*) FROM session_history").fetchone()[0])
        )

    def flush(self) -> int:
        """Write every queued first-seen change in one transaction; how many there were.

        Safe from a worker thread while the event loop goes on queueing. On failure
        (:class:`StateError`) the changes stay queued for the next flush; newer changes to the
        same session win.
        """
        if not self._pending and not self._pending_history:
            return 0
        batch: dict[tuple[str, str], int | None] = {}
        history: list[HistoryRow] = []
        try:
            # Under the database lock from taking the batch to its commit, so that a
            # forget_apps() cannot run between the two and see its deletions undone.
            with self._transaction() as db:
                with self._pending_lock:
                    batch, self._pending = self._pending, {}
                    history, self._pending_history = self._pending_history, []
                db.executemany(
                    "INSERT INTO session_history (app, session_id, started_us, ended_us,"
                    " closed_by, policy, start_known) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.app,
                            r.session_id,
                            to_us(r.started),
                            to_us(r.ended),
                            r.closed_by,
                            r.policy,
                            1 if r.start_known else 0,
                        )
                        for r in history
                    ],
                )
                db.executemany(
                    "DELETE FROM first_seen WHERE app_id = ? AND session_id = ?",
                    [key for key, us in batch.items() if us is None],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO first_seen (app_id, session_id, first_seen_us)"
                    " VALUES (?, ?, ?)",
                    [(*key, us) for key, us in batch.items() if us is not None],
                )
        except BaseException:
            with self._pending_lock:
                batch.update(self._pending)
                self._pending = batch
                self._pending_history = history + self._pending_history
            raise
        return len(batch) + len(history)

    # ----------------------------------------------------------------------- over since

    def over_since(self, app_id: str, policy: str) -> datetime | None:
        """When ``app_id`` first exceeded ``policy``'s ``max_sessions`` (None: it is not over)."""
        row = self._read(
            lambda db: db.execute(
                "SELECT since_us FROM over_since WHERE app_id = ? AND policy = ?",
                (app_id, policy),
            ).fetchone()
        )
        return None if row is None else from_us(int(row[0]))

    def set_over_since(self, app_id: str, policy: str, since: datetime | None) -> None:
        """Record when ``app_id`` went over ``policy``'s limit; ``None`` clears it."""
        since_us = None if since is None else to_us(since)
        with self._transaction() as db:
            if since_us is None:
                db.execute(
                    "DELETE FROM over_since WHERE app_id = ? AND policy = ?", (app_id, policy)
                )
            else:
                db.execute(
                    "INSERT INTO over_since (app_id, policy, since_us) VALUES (?, ?, ?)"
                    " ON CONFLICT (app_id, policy) DO UPDATE SET since_us = excluded.since_us",
                    (app_id, policy, since_us),
                )

    # ----------------------------------------------------------------------- housekeeping

    def forget_apps(self, keep_app_ids: Iterable[str]) -> int:
        """Drop every row of the APPs not in ``keep_app_ids`` (no longer configured); how many
        APPs were dropped. Blocking; safe from a worker thread."""
        keep = set(keep_app_ids)
        with self._transaction() as db:
            stored = {
                row[0]
                for row in db.execute(
                    "SELECT app_id FROM first_seen UNION SELECT app_id FROM over_since"
                )
            }
            gone = [(app_id,) for app_id in stored - keep]
            db.executemany("DELETE FROM first_seen WHERE app_id = ?", gone)
            db.executemany("DELETE FROM over_since WHERE app_id = ?", gone)
            with self._pending_lock:
                self._pending = {k: us for k, us in self._pending.items() if k[0] in keep}
        # In place: the event loop's first_seen() may be writing a kept APP's entry right now.
        for app_id in [a for a in self._first_seen if a not in keep]:
            self._first_seen.pop(app_id, None)
        return len(gone)

    def forget_policies(self, keep_policies: Iterable[str]) -> int:
        """Drop the ``over_since`` rows of policies not in ``keep_policies`` (removed, renamed);
        how many policies were dropped."""
        keep = set(keep_policies)
        with self._transaction() as db:
            stored = {row[0] for row in db.execute("SELECT DISTINCT policy FROM over_since")}
            db.executemany("DELETE FROM over_since WHERE policy = ?", [(p,) for p in stored - keep])
        return len(stored - keep)

    def vacuum_if_sparse(self, *, min_pages: int = VACUUM_MIN_PAGES) -> bool:
        """``VACUUM`` when at least half the file's pages are free (it shrank by half) and it
        has at least ``min_pages``; whether it did. Blocking (a worker thread's job): the
        database is locked meanwhile, and it needs free disk space the size of the file."""
        with self._lock:
            if self._closed:
                raise StateError(f"the state database {self._label} is closed")
            db = self._connection
            try:
                pages = int(db.execute("PRAGMA page_count").fetchone()[0])
                free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
                if pages < min_pages or free * 2 < pages:
                    return False
                db.execute("VACUUM")
                if self.path is not None:
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                self._write_error = f"state database {self._label}: VACUUM: {exc}"
                raise StateError(self._write_error) from exc
        log.info("state_vacuumed", path=self._label, pages_before=pages, free_pages=free)
        return True

    def file_sizes(self) -> dict[str, int]:
        """Bytes of the database file and its write-ahead log, by file name (those that exist)."""
        return {} if self.path is None else file_sizes(self.path)

    def close(self) -> None:
        """Write what is queued, close the database (idempotent); later calls raise
        :class:`StateError`."""
        try:
            if not self._closed:
                self.flush()
        finally:
            with self._lock:
                if not self._closed:
                    self._closed = True
                    try:
                        self._connection.close()
                    except sqlite3.Error as exc:
                        message = f"closing the state database {self._label}: {exc}"
                        raise StateError(message) from exc

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({self._label!r})"
