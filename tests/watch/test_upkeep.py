"""upkeep: a corrupt state file is moved aside, unusable storage runs on memory and blocks
enforcement, pruning forgets what no longer matters, and a shrunk database is vacuumed."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from duixwatch.policy import audit
from duixwatch.watch import state, statedb
from duixwatch.watch.upkeep import Upkeep
from tests.fakes import START, FakeClock

APP = "1377185422953811968"
OTHER = "1377185422953811969"


def corrupt_garbage(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / state.DB_FILENAME).write_bytes(b"not a database, a shopping list\n" * 100)


def corrupt_truncated(directory: Path) -> None:
    with state.StateStore(directory) as store:
        store.first_seen(APP, [f"s{i}" for i in range(3000)], START)
    path = directory / state.DB_FILENAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy or a disk cut short


def corrupt_pages(directory: Path) -> None:
    with state.StateStore(directory) as store:
        store.first_seen(APP, [f"s{i}" for i in range(2000)], START)
    path = directory / state.DB_FILENAME
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page : 2 * page] = b"\xa5" * page
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [corrupt_garbage, corrupt_truncated, corrupt_pages])
def test_a_corrupt_database_is_moved_aside_and_a_fresh_one_started(
    tmp_path: Path, damage: object
) -> None:
    directory = tmp_path / "state"
    damage(directory)  # type: ignore[operator]
    before = (directory / state.DB_FILENAME).read_bytes()
    with pytest.raises(statedb.StateCorrupt):
        state.StateStore(directory)  # without recover (plan, report): an error, nothing moved
    with capture_logs() as logs, state.StateStore.open_or_memory(directory, now=lambda: START) as s:
        assert s.moved_aside == directory / "state.sqlite3.corrupt-20261121T120000Z"
        assert s.moved_aside.read_bytes() == before  # kept whole, for a post-mortem
        assert s.path == directory / state.DB_FILENAME
        assert s.write_error is None
        assert s.first_seen(APP, ["a"], START) == {"a": START}
        assert s.flush() == 1
    events = [e for e in logs if e["event"] == "state_corrupt_moved_aside"]
    assert len(events) == 1
    assert events[0]["log_level"] == "error"
    with state.StateStore(directory) as reopened:  # the fresh file is a good database
        assert reopened.first_seen(APP, ["a"], START + timedelta(hours=1)) == {"a": START}


def test_a_second_corrupt_file_in_the_same_second_does_not_overwrite_the_first(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "state"
    for _ in range(2):
        corrupt_garbage(directory)
        state.StateStore.open_or_memory(directory, now=lambda: START).close()
    names = sorted(p.name for p in directory.iterdir() if ".corrupt-" in p.name)
    assert names == [
        "state.sqlite3.corrupt-20261121T120000Z",
        "state.sqlite3.corrupt-20261121T120000Z-1",
    ]


def test_a_newer_schema_is_never_moved_aside(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    state.StateStore(directory).close()
    db = sqlite3.connect(directory / state.DB_FILENAME)
    db.execute(f"PRAGMA user_version={state.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(statedb.StateTooNew):
        state.StateStore.open_or_memory(directory, now=lambda: START)
    assert sorted(p.name for p in directory.iterdir()) == [state.DB_FILENAME]


def test_an_unusable_state_directory_runs_on_memory_with_a_write_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    with capture_logs() as logs:
        store = state.StateStore.open_or_memory(blocker, now=lambda: START)
    assert store.path is None
    assert store.write_error is not None
    assert str(blocker) in store.write_error
    assert store.first_seen(APP, ["a"], START) == {"a": START}  # polling goes on
    assert [e["event"] for e in logs] == ["state_unavailable"]
    store.close()


def test_a_failed_write_sets_write_error_and_the_next_good_one_clears_it(tmp_path: Path) -> None:
    with state.StateStore(tmp_path / "state") as store:
        other = sqlite3.connect(tmp_path / "state" / state.DB_FILENAME, timeout=0)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        store._connection.execute("PRAGMA busy_timeout=0")
        with pytest.raises(state.StateError):
            store.set_over_since(APP, "quota", START)
        assert store.write_error is not None
        assert "locked" in store.write_error
        other.execute("ROLLBACK")
        other.close()
        store.set_over_since(APP, "quota", START)
        assert store.write_error is None


def rig(tmp_path: Path) -> tuple[Upkeep, state.StateStore, audit.AuditLog, FakeClock]:
    clock = FakeClock()
    store = state.StateStore(tmp_path / "state")
    log = audit.AuditLog(tmp_path / "state" / audit.AUDIT_FILENAME, clock=clock)
    upkeep = Upkeep(store=store, audit_log=log, clock=clock)
    return upkeep, store, log, clock


def configure(upkeep: Upkeep, apps: list[str], policies: list[str]) -> None:
    upkeep.configure(
        app_ids=apps,
        policies=policies,
        history_days=1,
        audit_max_bytes=8192,
        audit_keep=3,
    )


def test_prune_forgets_removed_apps_and_policies_and_old_history(tmp_path: Path) -> None:
    upkeep, store, log, clock = rig(tmp_path)
    store.first_seen(APP, ["a"], clock.now())
    store.first_seen(OTHER, ["b"], clock.now())
    store.set_over_since(APP, "quota", clock.now())
    store.set_over_since(APP, "gone", clock.now())
    old = state.HistoryRow(
        APP, "x", clock.now() - timedelta(days=3), clock.now() - timedelta(days=2), "platform"
    )
    new = state.HistoryRow(APP, "y", clock.now() - timedelta(hours=2), clock.now(), "platform")
    store.record_ended([old, new])
    store.flush()
    configure(upkeep, [APP], ["quota"])
    assert (log.max_bytes, log.keep) == (8192, 3)
    result = upkeep.prune()
    assert (result.history_rows, result.apps, result.policies) == (1, 1, 1)
    assert store.history_rows() == 1
    assert store.over_since(APP, "quota") is not None
    assert store.over_since(APP, "gone") is None
    assert store.first_seen(OTHER, ["b"], clock.now() + timedelta(hours=1)) == {
        "b": clock.now() + timedelta(hours=1)  # forgotten: new again
    }
    assert upkeep.last_prune_at() == clock.now()
    store.close()
    log.close()


def test_a_database_that_shrank_by_half_is_vacuumed(tmp_path: Path) -> None:
    with state.StateStore(tmp_path / "state") as store:
        rows = [
            state.HistoryRow(APP, f"s{i:06d}", START, START + timedelta(seconds=i), "platform")
            for i in range(40_000)
        ]
        store.record_ended(rows)
        store.flush()
        assert not store.vacuum_if_sparse()  # full pages: nothing to win
        size = store.file_sizes()[state.DB_FILENAME]
        store.prune_history(START + timedelta(seconds=30_000))  # three quarters go
        assert store.vacuum_if_sparse()
        assert store.file_sizes()[state.DB_FILENAME] < size / 2
        assert store.history_rows() == 10_000
        assert not store.vacuum_if_sparse()


def test_blocked_names_each_reason_and_check_logs_each_change_once(tmp_path: Path) -> None:
    upkeep, store, log, _ = rig(tmp_path)
    path = log.path
    assert upkeep.blocked() == {}
    path.unlink()
    path.mkdir()  # the audit log replaced by a directory
    with capture_logs() as logs:
        upkeep.check()
        upkeep.check()
    assert set(upkeep.blocked()) == {"audit_unavailable"}
    assert [e["event"] for e in logs if e["event"].startswith("enforcement")] == [
        "enforcement_blocked"
    ]
    path.rmdir()
    with capture_logs() as logs:
        upkeep.check()
    assert upkeep.blocked() == {}
    assert [e["event"] for e in logs if e["event"].startswith("enforcement")] == [
        "enforcement_unblocked"
    ]
    assert path.is_file()  # the check reopened (created) it
    store.close()
    log.close()


def test_file_sizes_list_the_audit_files_and_the_database(tmp_path: Path) -> None:
    upkeep, store, log, clock = rig(tmp_path)
    configure(upkeep, [APP], [])
    for n in range(60):
        log.write(cycle=f"c{n}", event="abort", policy="p", app="a", app_id=APP, reason="x" * 100)
    store.first_seen(APP, ["a"], clock.now())
    store.flush()
    sizes = upkeep.file_sizes()
    assert {"audit.jsonl", "audit.jsonl.1", state.DB_FILENAME} <= set(sizes)
    assert all(size <= 8192 for name, size in sizes.items() if name.startswith("audit"))
    assert upkeep.rotation_count() == log.rotations > 0
    store.close()
    log.close()
