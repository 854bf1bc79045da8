"""state: first-seen times and over-quota windows survive restarts; a bad database is an error."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duixwatch.core import errors
from duixwatch.watch import state
from tests.fakes import START, FakeClock

APP = "1377185422953811968"
OTHER = "1377185422953811969"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[state.StateStore]:
    with state.StateStore(tmp_path / "state") as opened:
        yield opened


def test_new_sessions_are_first_seen_now_and_keep_that_time_later(
    store: state.StateStore,
) -> None:
    assert store.first_seen(APP, ["a", "b"], START) == {"a": START, "b": START}
    later = START + timedelta(seconds=15)
    assert store.first_seen(APP, ["a", "b", "c"], later) == {"a": START, "b": START, "c": later}


def test_first_seen_answers_from_memory_and_writes_changes_in_one_flush(
    tmp_path: Path,
) -> None:
    """A poll queues its changes (no transaction, no fsync on the event loop); flush() writes
    everything queued in one transaction, and an unchanged list queues nothing."""
    calls: list[int] = []
    with state.StateStore(tmp_path / "state") as store:
        store.on_pending = lambda: calls.append(store.pending_writes)
        store.first_seen(APP, ["a", "b"], START)
        store.first_seen(OTHER, ["c"], START)
        assert store._connection.total_changes == 0
        assert (store.pending_writes, calls) == (3, [2])  # told once, when the queue started
        assert store.flush() == 3
        writes = store._connection.total_changes
        for minute in range(1, 4):
            seen = store.first_seen(APP, ["b", "a"], START + timedelta(minutes=minute))
            assert seen == {"a": START, "b": START}
        assert (store.pending_writes, store.flush()) == (0, 0)
        assert store._connection.total_changes == writes
        store.first_seen(APP, ["b"], START + timedelta(minutes=5))  # a ended
        store.first_seen(APP, ["b", "a"], START + timedelta(minutes=6))  # a is back: new
        assert store.flush() == 1
        store.first_seen(APP, ["b", "a", "d"], START + timedelta(minutes=7))  # left queued
    with state.StateStore(tmp_path / "state") as reopened:  # close() flushed the rest
        later = START + timedelta(hours=1)
        assert reopened.first_seen(APP, ["b", "a", "d"], later) == {
            "a": START + timedelta(minutes=6),
            "b": START,
            "d": START + timedelta(minutes=7),
        }
        assert reopened.first_seen(OTHER, ["c"], later) == {"c": START}


def test_a_failed_flush_keeps_the_changes_for_the_next_one(tmp_path: Path) -> None:
    with state.StateStore(tmp_path / "state") as store:
        store.first_seen(APP, ["a"], START)
        real = store._connection
        store._connection = sqlite3.connect(":memory:", isolation_level=None)  # no tables
        with pytest.raises(state.StateError):
            store.flush()
        store._connection.close()
        store._connection = real
        store.first_seen(APP, ["a", "b"], START + timedelta(seconds=1))
        assert store.pending_writes == 2
        assert store.flush() == 2
    with state.StateStore(tmp_path / "state") as reopened:
        later = START + timedelta(hours=1)
        assert reopened.first_seen(APP, ["a", "b"], later) == {
            "a": START,
            "b": START + timedelta(seconds=1),
        }


def test_first_seen_times_survive_a_reopen_of_the_same_directory(tmp_path: Path) -> None:
    moment = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
    with state.StateStore(tmp_path) as first:
        first.first_seen(APP, ["a"], moment)
    with state.StateStore(tmp_path) as second:
        seen = second.first_seen(APP, ["a"], moment + timedelta(hours=1))
    assert seen == {"a": moment}
    assert seen["a"].tzinfo is UTC


def test_times_round_trip_exactly_as_aware_utc(store: state.StateStore) -> None:
    """A non-UTC aware time comes back as the same instant, in UTC, to the microsecond."""
    moment = datetime(2026, 11, 21, 20, 0, 0, 999999, tzinfo=timezone(timedelta(hours=8)))
    seen = store.first_seen(APP, ["a"], moment)["a"]
    assert seen == moment
    assert seen.utcoffset() == timedelta(0)
    assert seen.microsecond == 999999


def test_ended_sessions_are_forgotten_so_a_returning_id_is_new_again(
    store: state.StateStore,
) -> None:
    store.first_seen(APP, ["a", "b"], START)
    later = START + timedelta(minutes=1)
    assert store.first_seen(APP, ["b"], later) == {"b": START}
    assert store.first_seen(APP, ["a", "b"], later) == {"a": later, "b": START}


def test_an_empty_live_list_forgets_every_session_of_the_app(store: state.StateStore) -> None:
    store.first_seen(APP, ["a"], START)
    assert store.first_seen(APP, [], START) == {}
    assert store.first_seen(APP, ["a"], START + timedelta(seconds=1)) == {
        "a": START + timedelta(seconds=1)
    }


def test_apps_are_isolated_even_when_they_share_a_session_id(store: state.StateStore) -> None:
    later = START + timedelta(minutes=5)
    store.first_seen(APP, ["same", "a"], START)
    assert store.first_seen(OTHER, ["same"], later) == {"same": later}
    # The other APP's list did not end this APP's sessions.
    assert store.first_seen(APP, ["same", "a"], later) == {"same": START, "a": START}


def test_duplicate_ids_and_generators_are_accepted(store: state.StateStore) -> None:
    seen = store.first_seen(APP, (sid for sid in ["a", "a", "b"]), START)
    assert seen == {"a": START, "b": START}


def test_a_naive_time_is_refused(store: state.StateStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.first_seen(APP, ["a"], datetime(2026, 11, 21, 12, 0))


def test_over_since_is_unset_until_set_and_cleared_by_none(store: state.StateStore) -> None:
    assert store.over_since(APP, "quota-guard") is None
    store.set_over_since(APP, "quota-guard", START)
    assert store.over_since(APP, "quota-guard") == START
    assert store.over_since(APP, "other-policy") is None
    assert store.over_since(OTHER, "quota-guard") is None
    store.set_over_since(APP, "quota-guard", START + timedelta(seconds=30))
    assert store.over_since(APP, "quota-guard") == START + timedelta(seconds=30)
    store.set_over_since(APP, "quota-guard", None)
    assert store.over_since(APP, "quota-guard") is None
    store.set_over_since(APP, "quota-guard", None)  # clearing twice is fine


def test_over_since_survives_a_reopen(tmp_path: Path) -> None:
    with state.StateStore(tmp_path) as first:
        first.set_over_since(APP, "quota-guard", START)
    with state.StateStore(tmp_path) as second:
        assert second.over_since(APP, "quota-guard") == START
        assert second.over_since(APP, "quota-guard").tzinfo is UTC  # type: ignore[union-attr]


def test_forget_apps_drops_every_row_of_the_apps_not_kept(store: state.StateStore) -> None:
    store.first_seen(APP, ["a"], START)
    store.first_seen(OTHER, ["b"], START)
    store.set_over_since(APP, "quota-guard", START)
    store.set_over_since(OTHER, "quota-guard", START)
    store.forget_apps([APP])
    later = START + timedelta(minutes=1)
    assert store.over_since(OTHER, "quota-guard") is None
    assert store.first_seen(OTHER, ["b"], later) == {"b": later}
    assert store.over_since(APP, "quota-guard") == START
    assert store.first_seen(APP, ["a"], later) == {"a": START}


def test_forget_policies_drops_the_windows_of_policies_not_kept(store: state.StateStore) -> None:
    store.set_over_since(APP, "old-name", START)
    store.set_over_since(APP, "quota-guard", START)
    store.forget_policies(["quota-guard"])
    assert store.over_since(APP, "old-name") is None
    assert store.over_since(APP, "quota-guard") == START


def test_an_in_memory_store_works_and_forgets_everything_when_closed() -> None:
    with state.StateStore.in_memory() as memory:
        assert memory.path is None
        assert memory.first_seen(APP, ["a"], START) == {"a": START}
        memory.set_over_since(APP, "p", START)
        assert memory.over_since(APP, "p") == START
    with state.StateStore.in_memory() as fresh:
        assert fresh.over_since(APP, "p") is None


def test_a_closed_store_raises_a_state_error(tmp_path: Path) -> None:
    store = state.StateStore(tmp_path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(state.StateError, match="closed"):
        store.first_seen(APP, ["a"], START)
    with pytest.raises(state.StateError, match="closed"):
        store.over_since(APP, "p")


def test_the_database_is_durable_wal_with_a_schema_version(tmp_path: Path) -> None:
    state.StateStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / state.DB_FILENAME)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    finally:
        db.close()
    with state.StateStore(tmp_path) as store:
        # synchronous is per connection: FULL (2), not NORMAL (1).
        assert store._connection.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_a_new_state_directory_and_database_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "state"
    state.StateStore(directory).close()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / state.DB_FILENAME).stat().st_mode) == 0o600


def test_a_file_that_is_not_a_database_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / state.DB_FILENAME
    path.write_bytes(b"this is not an SQLite database, it is a shopping list\n" * 100)
    with pytest.raises(errors.ConfigError, match="state database") as caught:
        state.StateStore(tmp_path)
    assert str(path) in str(caught.value)


def test_a_database_with_damaged_pages_is_a_config_error(tmp_path: Path) -> None:
    with state.StateStore(tmp_path) as store:
        store.first_seen(APP, [f"s{i}" for i in range(2000)], START)
    path = tmp_path / state.DB_FILENAME
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) > 3 * page_size
    # Scribble over the second page (the header on page 1 stays valid).
    data[page_size : 2 * page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))
    with pytest.raises(errors.ConfigError, match=str(path)):
        state.StateStore(tmp_path)


def test_a_database_from_a_newer_duixwatch_is_a_config_error(tmp_path: Path) -> None:
    state.StateStore(tmp_path).close()
    db = sqlite3.connect(tmp_path / state.DB_FILENAME)
    db.execute(f"PRAGMA user_version={state.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(errors.ConfigError, match="newer") as caught:
        state.StateStore(tmp_path)
    assert str(tmp_path / state.DB_FILENAME) in str(caught.value)


def test_a_state_directory_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(errors.ConfigError, match=str(blocker / "state")):
        state.StateStore(blocker / "state")


def test_calls_from_many_threads_are_serialised(store: state.StateStore) -> None:
    apps = [f"app-{i}" for i in range(8)]

    def churn(app_id: str) -> dict[str, datetime]:
        for step in range(20):
            store.first_seen(app_id, [f"{app_id}-{step}", "stable"], START)
            store.set_over_since(app_id, "p", START)
        return store.first_seen(app_id, ["stable"], START)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(churn, apps))
    assert results == [{"stable": START}] * len(apps)


@settings(max_examples=60, deadline=None)
@given(
    rounds=st.lists(
        st.tuples(
            st.sampled_from([APP, OTHER]),
            st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=5),
        ),
        max_size=12,
    )
)
def test_first_seen_matches_a_model_of_live_sessions(
    rounds: list[tuple[str, list[str]]],
) -> None:
    """After any sequence of polls: an id's time is when its current run of sightings began."""
    model: dict[str, dict[str, datetime]] = {APP: {}, OTHER: {}}
    with state.StateStore.in_memory() as store:
        for step, (app_id, ids) in enumerate(rounds):
            now = START + timedelta(seconds=step)
            expected = {sid: model[app_id].get(sid, now) for sid in ids}
            model[app_id] = expected
            assert store.first_seen(app_id, ids, now) == expected


async def test_changes_queued_before_the_writer_starts_are_written_too(clock: FakeClock) -> None:
    store = state.StateStore.in_memory()
    store.first_seen("app", ["s1"], clock.now())  # before write_behind runs: no one to wake
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(store.write_behind, clock=clock))
            while store.pending_writes:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    store.close()
