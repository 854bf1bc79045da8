"""audit: one synced JSON line per record, exact keys, and torn lines tolerated and repaired."""

from __future__ import annotations

import inspect
import json
import re
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duixwatch.core import errors
from duixwatch.policy import audit
from tests.fakes import START, FakeClock

APP_ID = "1377185422953811968"


def intent(log: audit.AuditLog, session_id: str = "s-1", **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "cycle": "20261121T120000Z-000001",
        "event": "intent",
        "policy": "max-session-age",
        "app": "frontdesk",
        "app_id": APP_ID,
        "action": "stop_session",
        "session_id": session_id,
        "reason": "age 2701s > 2700s",
    }
    fields.update(extra)
    return log.write(**fields)


class FsyncRecorder:
    """Stands in for ``os.fsync``: remembers each call and how many lines were on disk then."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines_at_call: list[int] = []

    def __call__(self, fd: int) -> None:
        self.lines_at_call.append(self.path.read_bytes().count(b"\n"))


def no_fsync(fd: int) -> None:
    """Skip the disk flush where a test only checks content (keeps property tests fast)."""


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / audit.AUDIT_FILENAME


# --------------------------------------------------------------------------- writing


def test_a_record_has_exactly_the_contract_keys_in_order_with_nulls_for_unset(
    log_path: Path, clock: FakeClock
) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        log.write(
            cycle="c1",
            event="abort",
            policy="quota-guard",
            app="frontdesk",
            app_id=APP_ID,
            reason="max_actions",
        )
    pairs = json.loads(log_path.read_text(), object_pairs_hook=list)
    assert [key for key, _ in pairs] == list(audit.RECORD_KEYS)
    assert dict(pairs) == {
        "ts": "2026-11-21T12:00:00.000000Z",
        "cycle": "c1",
        "event": "abort",
        "policy": "quota-guard",
        "app": "frontdesk",
        "app_id": APP_ID,
        "action": None,
        "session_id": None,
        "reason": "max_actions",
        "outcome": None,
        "error": None,
    }


def test_the_record_returned_is_the_record_read_back(log_path: Path, clock: FakeClock) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        written = [
            intent(log),
            log.write(
                cycle="c",
                event="outcome",
                policy="p",
                app="a",
                app_id=APP_ID,
                action="stop_session",
                session_id="s-1",
                outcome="already_closed",
            ),
            log.write(
                cycle="c",
                event="outcome",
                policy="p",
                app="a",
                app_id=APP_ID,
                action="close_all",
                outcome="failed",
                error="POST /x: HTTP 503",
            ),
        ]
    assert audit.read_audit(log_path) == audit.AuditReadResult(records=written)
    assert audit.read_audit(log_path).clean


def test_ts_is_utc_with_microseconds_and_a_z_whatever_the_clock_zone(log_path: Path) -> None:
    class EastClock(FakeClock):
        def now(self) -> datetime:
            return datetime(2026, 11, 21, 20, 0, 0, 5, tzinfo=timezone(timedelta(hours=8)))

    with audit.AuditLog(log_path, clock=EastClock()) as log:
        assert intent(log)["ts"] == "2026-11-21T12:00:00.000005Z"


def test_each_write_is_one_line_synced_before_write_returns(
    log_path: Path, clock: FakeClock
) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        recorder = FsyncRecorder(log_path)
        log._fsync = recorder
        for number in range(1, 4):
            intent(log, session_id=f"s-{number}", reason="line\nbreak {and} \u00e9\u4e2d")
            assert recorder.lines_at_call == list(range(1, number + 1))
            assert log_path.read_bytes().count(b"\n") == number
    assert log_path.read_bytes().isascii()


def test_a_failing_fsync_is_an_audit_error_so_the_caller_does_not_act(
    log_path: Path, clock: FakeClock
) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with audit.AuditLog(log_path, clock=clock) as log:
        log._fsync = broken_fsync
        with pytest.raises(audit.AuditError, match="Input/output error") as caught:
            intent(log)
    assert isinstance(caught.value, errors.DuixwatchError)


def test_a_short_write_fails_and_the_next_record_starts_on_its_own_line(tmp_path: Path) -> None:
    """A real short write: the file-size limit cuts a record; the next write, under a higher
    limit, still lands on a line of its own (run in a child, since rlimits are per process)."""
    path = tmp_path / audit.AUDIT_FILENAME
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from pathlib import Path
        from duixwatch.core import clock
        from duixwatch.policy import audit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        log = audit.AuditLog(Path(sys.argv[1]), clock=clock.SystemClock())
        fields = dict(cycle="c", event="intent", policy="p", app="a", app_id="1")
        log.write(**fields, session_id="first")
        size = Path(sys.argv[1]).stat().st_size
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))
        try:
            log.write(**fields, session_id="cut")
        except audit.AuditError as exc:
            print("refused:", exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        log.write(**fields, session_id="after")
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "refused:" in child.stdout
    result = audit.read_audit(path)
    assert [r["session_id"] for r in result.records] == ["first", "after"]
    assert result.torn_lines == [2]
    assert not result.torn_tail
    assert result.bad_lines == []


def test_writing_after_close_is_an_audit_error(log_path: Path, clock: FakeClock) -> None:
    log = audit.AuditLog(log_path, clock=clock)
    log.close()
    log.close()  # idempotent
    with pytest.raises(audit.AuditError, match="closed"):
        intent(log)


def test_an_unknown_event_or_action_is_refused_before_anything_is_written(
    log_path: Path, clock: FakeClock
) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        with pytest.raises(ValueError, match="event"):
            intent(log, event="stopped")
        with pytest.raises(ValueError, match="action"):
            intent(log, action="stop_everything")
    assert log_path.read_bytes() == b""


def test_the_log_and_a_new_directory_are_private(log_path: Path, clock: FakeClock) -> None:
    audit.AuditLog(log_path, clock=clock).close()
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log_path.parent.stat().st_mode) == 0o700


def test_a_log_that_cannot_be_opened_is_an_audit_error_naming_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(audit.AuditError, match=str(blocker)):
        audit.AuditLog(blocker / audit.AUDIT_FILENAME, clock=clock)


def test_the_write_api_cannot_take_a_key_or_token() -> None:
    """The log must never hold an appKey: nothing can pass one in."""
    parameters = set(inspect.signature(audit.AuditLog.write).parameters) - {"self"}
    assert parameters == set(audit.RECORD_KEYS) - {"ts"}
    assert not [key for key in audit.RECORD_KEYS if "key" in key.lower() or "token" in key]


def test_writes_from_many_threads_never_share_a_line(log_path: Path, clock: FakeClock) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        log._fsync = no_fsync

        def burst(worker: int) -> None:
            for step in range(50):
                intent(log, session_id=f"{worker}-{step}", reason="x" * (worker * 300))

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(burst, range(8)))
    result = audit.read_audit(log_path)
    assert result.clean
    assert sorted(r["session_id"] for r in result.records) == sorted(
        f"{w}-{s}" for w in range(8) for s in range(50)
    )


# --------------------------------------------------------------------------- torn lines


def torn(record_line: bytes) -> bytes:
    """The first half of a record line, as a crash in the middle of its write leaves it."""
    return record_line[: len(record_line) // 2]


def test_a_torn_last_line_is_skipped_and_reported(log_path: Path, clock: FakeClock) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        written = [intent(log, session_id="s-1"), intent(log, session_id="s-2")]
    first_line = log_path.read_bytes().splitlines()[0]
    with log_path.open("ab") as handle:
        handle.write(torn(first_line))
    result = audit.read_audit(log_path)
    assert result.records == written
    assert result.torn_tail
    assert result.torn_lines == [3]
    assert result.bad_lines == []


def test_reopening_terminates_a_torn_last_line_so_new_records_stay_whole(
    log_path: Path, clock: FakeClock
) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        first = intent(log, session_id="s-1")
    with log_path.open("ab") as handle:
        handle.write(torn(log_path.read_bytes()))
    with audit.AuditLog(log_path, clock=clock) as reopened:
        assert reopened.repaired_torn_line
        second = intent(reopened, session_id="s-2")
    result = audit.read_audit(log_path)
    assert result.records == [first, second]
    assert not result.torn_tail
    assert result.torn_lines == [2]
    assert result.bad_lines == []
    assert log_path.read_bytes().endswith(b"\n")


def test_reopening_an_intact_log_changes_nothing(log_path: Path, clock: FakeClock) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        intent(log)
    before = log_path.read_bytes()
    with audit.AuditLog(log_path, clock=clock) as reopened:
        assert not reopened.repaired_torn_line
    assert log_path.read_bytes() == before


def test_garbage_in_the_middle_is_reported_as_bad_lines(log_path: Path, clock: FakeClock) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        first = intent(log, session_id="s-1")
    with log_path.open("ab") as handle:
        handle.write(b"hello, I am not JSON\n")  # line 2
        handle.write(b"[1, 2, 3]\n")  # line 3: JSON, but not a record
        handle.write(b'{"ts": "2026-11-21T12:00:00Z", "error": "cut {here}\n')  # line 4: ends in }
        handle.write(b"\xff\xfe{\n")  # line 5: not even UTF-8
    with audit.AuditLog(log_path, clock=clock) as log:
        last = intent(log, session_id="s-2")
    result = audit.read_audit(log_path)
    assert result.records == [first, last]
    assert result.bad_lines == [2, 3, 4, 5]
    assert result.torn_lines == []
    assert not result.clean


def test_a_last_line_missing_only_its_newline_is_a_complete_record(
    log_path: Path, clock: FakeClock
) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        record = intent(log)
    log_path.write_bytes(log_path.read_bytes().rstrip(b"\n"))
    result = audit.read_audit(log_path)
    assert result == audit.AuditReadResult(records=[record])


def test_nul_padding_left_by_a_power_cut_counts_as_torn(log_path: Path, clock: FakeClock) -> None:
    with audit.AuditLog(log_path, clock=clock) as log:
        record = intent(log)
    with log_path.open("ab") as handle:
        handle.write(b"\x00" * 64)
    result = audit.read_audit(log_path)
    assert result.records == [record]
    assert result.torn_tail
    assert result.bad_lines == []


def test_a_missing_log_has_no_records_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    assert audit.read_audit(tmp_path / "absent.jsonl") == audit.AuditReadResult()
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n  \n{}\n")
    assert audit.read_audit(blank) == audit.AuditReadResult(records=[{}])


_text = st.text(max_size=40)
_optional = st.none() | _text
_fields = st.fixed_dictionaries(
    {
        "cycle": _text,
        "event": st.sampled_from(["intent", "outcome", "dry_run", "abort"]),
        "policy": _text,
        "app": _text,
        "app_id": st.from_regex(r"\A[0-9]{19}\Z"),
        "action": st.sampled_from([None, "stop_session", "close_all"]),
        "session_id": _optional,
        "reason": _optional,
        "outcome": _optional,
        "error": _optional,
    }
)


@settings(max_examples=50, deadline=None)
@given(batches=st.lists(st.lists(_fields, max_size=6), min_size=1, max_size=3))
def test_any_records_written_are_read_back_exactly(batches: list[list[dict[str, Any]]]) -> None:
    """Any text (newlines, quotes, non-ASCII, lone surrogates), across reopens."""
    clock = FakeClock()
    written: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / audit.AUDIT_FILENAME
        for batch in batches:
            with audit.AuditLog(path, clock=clock) as log:
                log._fsync = no_fsync
                for fields in batch:
                    clock.advance(0.000001)
                    written.append(log.write(**fields))
        assert path.read_bytes().count(b"\n") == len(written)
        assert audit.read_audit(path) == audit.AuditReadResult(records=written)


# --------------------------------------------------------------------------- cycle ids


def test_cycle_ids_are_utc_seconds_plus_six_hex_digits_and_never_repeat() -> None:
    east = datetime(2026, 11, 21, 20, 0, 0, tzinfo=timezone(timedelta(hours=8)))
    ids = [audit.new_cycle_id(east) for _ in range(5000)]
    assert all(re.fullmatch(r"20261121T120000Z-[0-9a-f]{6}", cycle) for cycle in ids)
    assert len(set(ids)) == len(ids)


def test_cycle_ids_sort_by_time() -> None:
    times = [START + timedelta(seconds=s) for s in (0, 1, 59, 3600, 86400 * 40)]
    ids = [audit.new_cycle_id(t) for t in reversed(times)]
    assert sorted(ids) == list(reversed(ids))


def test_a_naive_time_is_refused_for_ids_and_timestamps() -> None:
    naive = datetime(2026, 11, 21, 12, 0)
    with pytest.raises(ValueError, match="naive"):
        audit.new_cycle_id(naive)
    with pytest.raises(ValueError, match="naive"):
        audit.format_ts(naive)
    assert audit.format_ts(START.astimezone(UTC)) == "2026-11-21T12:00:00.000000Z"


# --------------------------------------------------------------------------- crash


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from duixwatch.core import clock
    from duixwatch.policy import audit
    log = audit.AuditLog(Path(sys.argv[1]), clock=clock.SystemClock())
    number = 0
    while True:
        log.write(
            cycle="c", event="intent", policy="p", app="a", app_id="1",
            action="stop_session", session_id=str(number), reason="x" * (number % 997),
        )
        number += 1
        if number == 40:
            print("ready", flush=True)
    """
)


def test_a_writer_killed_mid_stream_leaves_every_complete_record_readable(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SIGKILL while writing: records are contiguous, at most the last line is torn, and a
    reopen repairs it."""
    path = tmp_path / audit.AUDIT_FILENAME
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    result = audit.read_audit(path)
    numbers = [int(record["session_id"]) for record in result.records]
    assert len(numbers) >= 40
    assert numbers == list(range(len(numbers)))
    assert result.bad_lines == []
    lines = path.read_bytes().count(b"\n") + (0 if path.read_bytes().endswith(b"\n") else 1)
    assert set(result.torn_lines) <= {lines}
    assert result.torn_tail == bool(result.torn_lines)

    with audit.AuditLog(path, clock=clock) as reopened:
        assert reopened.repaired_torn_line == result.torn_tail
        after = intent(reopened, session_id="after-restart")
    again = audit.read_audit(path)
    assert not again.torn_tail
    assert again.bad_lines == []
    assert again.records[-1] == after


def test_open_intents_are_the_intents_without_their_outcome() -> None:
    def rec(event: str, sid: str, cycle: str = "c1") -> dict[str, object]:
        return {
            "cycle": cycle,
            "event": event,
            "policy": "p",
            "app_id": "1",
            "action": "stop_session",
            "session_id": sid,
        }

    records = [
        rec("intent", "a"),
        rec("outcome", "a"),
        rec("intent", "b"),
        rec("intent", "c", cycle="c2"),
        rec("outcome", "c", cycle="c1"),  # another cycle's
        rec("dry_run", "d"),
    ]
    assert [r["session_id"] for r in audit.open_intents(records)] == ["b", "c"]
