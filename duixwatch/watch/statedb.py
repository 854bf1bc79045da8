"""The state database's file: its schema and migrations, time encoding, the history rows and
their read-only reader, and what to do with a file that is not a usable database.

:mod:`duixwatch.watch.state` owns the live store; this module owns what is true of the file
whoever opens it (the daemon, ``duixwatch plan``, ``duixwatch report``).

A corrupt file (not a database, failing SQLite's ``quick_check``, truncated) found by the daemon
at start is moved aside by :func:`move_aside` to ``state.sqlite3.corrupt-<UTC time>`` (with
its ``-wal`` and ``-shm`` files), and a fresh database is started: first-seen times restart
from the first poll and ``for_seconds`` clocks from zero (ages are understated, never
overstated), the history goes with the old file. Nothing is deleted.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from duixwatch.core import errors

__all__ = [
    "DB_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "HistoryRow",
    "StateCorrupt",
    "StateTooNew",
    "file_sizes",
    "from_us",
    "move_aside",
    "read_history",
    "to_us",
]

DB_FILENAME: Final = "state.sqlite3"


class StateCorrupt(errors.ConfigError):
    """The state database's file is not a usable SQLite database (the daemon moves it aside)."""


class StateTooNew(errors.ConfigError):
    """The state database was written by a newer duixwatch (never moved aside: upgrade)."""


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

#: Each entry migrates the schema from version ``i`` to ``i + 1``; the store is at
#: ``len(MIGRATIONS)``. Append, never edit: a released database has run the earlier ones.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE first_seen (
            app_id        TEXT    NOT NULL,
            session_id    TEXT    NOT NULL,
            first_seen_us INTEGER NOT NULL,
            PRIMARY KEY (app_id, session_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE over_since (
            app_id   TEXT    NOT NULL,
            policy   TEXT    NOT NULL,
            since_us INTEGER NOT NULL,
            PRIMARY KEY (app_id, policy)
        ) WITHOUT ROWID
        """,
    ),
    (
        """
        CREATE TABLE session_history (
            app         TEXT    NOT NULL,
            session_id  TEXT    NOT NULL,
            started_us  INTEGER NOT NULL,
            ended_us    INTEGER NOT NULL,
            closed_by   TEXT    NOT NULL,
            policy      TEXT,
            start_known INTEGER NOT NULL
        )
        """,
        "CREATE INDEX session_history_ended ON session_history (ended_us)",
        "CREATE INDEX session_history_app_ended ON session_history (app, ended_us)",
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One ended session (times aware, UTC)."""

    app: str
    session_id: str
    #: The platform's start time when ``start_known``, else when duixwatch first saw it.
    started: datetime
    #: When duixwatch last saw it live (its end is at most one poll interval later).
    ended: datetime
    closed_by: str
    policy: str | None = None
    start_known: bool = True

    @property
    def duration_seconds(self) -> float:
        return max(0.0, (self.ended - self.started).total_seconds())


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact, unlike float seconds)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: state times must be aware")
    return (moment - _EPOCH) // _MICROSECOND


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def read_history(state_dir: Path, *, since: datetime, app: str | None = None) -> list[HistoryRow]:
    """The sessions that ended since ``since`` (of ``app``, when given), oldest end first, read
    from ``<state_dir>/state.sqlite3`` without writing (the daemon may be running). A database
    that does not exist, or has no history yet, gives ``[]``."""
    path = Path(state_dir) / DB_FILENAME
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise errors.ConfigError(f"cannot open the state database {path}: {exc}") from exc
    try:
        query = (
            "SELECT app, session_id, started_us, ended_us, closed_by, policy, start_known"
            " FROM session_history WHERE ended_us >= ?"
        )
        params: tuple[object, ...] = (to_us(since),)
        if app is not None:
            query += " AND app = ?"
            params += (app,)
        try:
            rows = db.execute(query + " ORDER BY ended_us", params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # written by a duixwatch without history yet
            raise errors.ConfigError(f"cannot read the state database {path}: {exc}") from exc
    finally:
        db.close()
    return [
        HistoryRow(
            app=a,
            session_id=sid,
            started=from_us(int(start)),
            ended=from_us(int(end)),
            closed_by=by,
            policy=policy,
            start_known=bool(known),
        )
        for a, sid, start, end, by, policy, known in rows
    ]


def move_aside(path: Path, now: datetime) -> Path:
    """Rename ``path`` (and its ``-wal``/``-shm`` files) to ``<name>.corrupt-<UTC time>``;
    returns the new path. Raises ``OSError`` when the rename fails."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for number in range(1, 100):  # bounded: two moves within one second get a suffix
        if not target.exists():
            break
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{number}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            os.replace(companion, target.with_name(target.name + suffix))
    return target


def file_sizes(path: Path) -> dict[str, int]:
    """Bytes of the database ``path`` and its ``-wal`` file, by file name (those that exist).

    Read on every scrape, so without a :class:`~pathlib.Path` for the WAL: pathlib interns
    the names it parses (:func:`duixwatch.policy.auditfiles.audit_file_sizes` says what that cost).
    """
    sizes: dict[str, int] = {}
    for name, file in ((path.name, os.fspath(path)), (path.name + "-wal", f"{path}-wal")):
        try:
            sizes[name] = os.stat(file).st_size
        except OSError:
            continue  # no WAL yet, or the directory went away: nothing to report
    return sizes
