"""audit: rotation by size, reopening (SIGUSR1, a deleted or replaced file), and reading across
the rotated files — never a split line, never a lost one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from duixwatch.policy import audit
from tests.fakes import FakeClock

APP_ID = "1377185422953811968"


def record(log: audit.AuditLog, n: int, event: audit.Event = "intent", **extra: Any) -> dict:
    fields: dict[str, Any] = {
        "cycle": f"20261203T000000Z-{n:06x}",
        "event": event,
        "policy": "max-age",
        "app": "frontdesk",
        "app_id": APP_ID,
        "action": "stop_session",
        "session_id": f"s-{n}",
        "reason": "age 3000s > 2700s",
    }
    fields.update(extra)
    return log.write(**fields)


def lines_of(path: Path) -> list[bytes]:
    content = path.read_bytes()
    assert content.endswith(b"\n"), f"{path.name} does not end with a whole line"
    return content.split(b"\n")[:-1]


def test_rotation_keeps_each_file_under_the_limit_whole_lines_and_every_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    with audit.AuditLog(path, clock=FakeClock(), max_bytes=4096, keep=50) as log:
        written = [record(log, n) for n in range(200)]
        assert log.rotations > 0
    files = audit.audit_files(path)
    assert files[-1] == path
    assert len(files) == log.rotations + 1
    for file in files:
        assert file.stat().st_size <= 4096
        assert all(json.loads(line) for line in lines_of(file))  # no split line
    assert audit.read_audit(path, rotated=True).records == written  # none lost, in order
    assert audit.read_audit(path).records == written[-len(lines_of(path)) :]


def test_rotation_deletes_files_beyond_keep_and_keeps_the_newest_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with audit.AuditLog(path, clock=FakeClock(), max_bytes=4096, keep=2) as log:
        written = [record(log, n) for n in range(200)]
    assert [f.name for f in audit.audit_files(path)] == [
        "audit.jsonl.2",
        "audit.jsonl.1",
        "audit.jsonl",
    ]
    kept = audit.read_audit(path, rotated=True).records
    assert kept == written[-len(kept) :]  # contiguous: the newest, nothing missing between


def test_file_sizes_are_those_of_the_audit_files_by_name_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with audit.AuditLog(path, clock=FakeClock(), max_bytes=4096, keep=3) as log:
        for n in range(200):
            record(log, n)
        (tmp_path / "audit.jsonl.9").mkdir()  # a directory with a rotated file's name
        (tmp_path / "audit.jsonl.old").write_text("not one of ours\n")
        sizes = log.file_sizes()
    files = audit.audit_files(path)
    assert [f.name for f in files] == ["audit.jsonl.3", "audit.jsonl.2", "audit.jsonl.1", path.name]
    assert list(sizes.items()) == [(f.name, f.stat().st_size) for f in files]
    assert audit.audit_file_sizes(tmp_path / "gone" / "audit.jsonl") == {}


def test_a_call_whose_intent_and_outcome_straddle_a_rotation_is_not_open(tmp_path: Path) -> None:
    """The intent is synced in the old file before the call; the outcome lands in the new one;
    read across the files, the pair is complete — and the intent alone is found open."""
    path = tmp_path / "audit.jsonl"
    with audit.AuditLog(path, clock=FakeClock(), max_bytes=4096, keep=5) as log:
        while True:
            record(log, 1, event="dry_run", action="stop_session", outcome="dry_run")
            if path.stat().st_size > 4096 - 600:
                break
        intent = record(log, 7)
        assert intent in audit.read_audit(path).records  # on disk before the call
        assert audit.open_intents(audit.iter_records(path)) == [intent]
        outcome = record(log, 7, event="outcome", outcome="stopped")
        assert log.rotations == 1
    assert intent in audit.read_audit(path.with_name("audit.jsonl.1")).records
    assert audit.read_audit(path).records == [outcome]
    assert audit.open_intents(audit.iter_records(path, newest_files=2)) == []


def test_max_bytes_0_never_rotates(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with audit.AuditLog(path, clock=FakeClock(), max_bytes=0) as log:
        for n in range(100):
            record(log, n)
    assert audit.audit_files(path) == [path]


def test_reopen_after_logrotate_moved_the_file_loses_no_line(tmp_path: Path) -> None:
    """logrotate's ``create`` mode: rename, create, then SIGUSR1 (:meth:`reopen`). A write
    between the rename and the signal already notices the file was moved and goes to the new
    one; nothing is written to the moved file after the move."""
    path = tmp_path / "audit.jsonl"
    with audit.AuditLog(path, clock=FakeClock()) as log:
        first = record(log, 1)
        os.replace(path, path.with_name("audit.jsonl.1"))
        path.touch(mode=0o600)  # logrotate's `create`: our writes must take it as it is
        between = record(log, 2)
        log.reopen()
        after = record(log, 3)
    assert audit.read_audit(path.with_name("audit.jsonl.1")).records == [first]
    assert audit.read_audit(path).records == [between, after]
    assert audit.read_audit(path, rotated=True).records == [first, between, after]


def test_a_deleted_audit_log_is_recreated_at_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with audit.AuditLog(path, clock=FakeClock()) as log:
        record(log, 1)
        path.unlink()
        with capture_logs() as logs:
            again = record(log, 2)
    assert audit.read_audit(path).records == [again]
    assert [e["event"] for e in logs] == ["audit_log_replaced"]


def test_an_audit_log_replaced_by_a_directory_fails_until_it_is_a_file_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    with audit.AuditLog(path, clock=FakeClock()) as log:
        record(log, 1)
        path.unlink()
        path.mkdir()
        with pytest.raises(audit.AuditError, match="cannot open the audit log"):
            record(log, 2)
        assert log.error is not None
        with pytest.raises(audit.AuditError):
            log.probe()
        shutil.rmtree(path)
        log.probe()
        assert log.error is None
        after = record(log, 3)
    assert audit.read_audit(path).records == [after]  # the probe's newline is skipped


def test_an_audit_log_that_cannot_be_opened_at_start_is_opened_once_it_can(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    path.mkdir()
    with pytest.raises(audit.AuditError):
        audit.AuditLog(path, clock=FakeClock())
    log = audit.AuditLog(path, clock=FakeClock(), required=False)
    assert log.error is not None
    assert str(path) in log.error
    path.rmdir()
    written = record(log, 1)
    assert log.error is None
    log.close()
    assert audit.read_audit(path).records == [written]


def test_a_failed_write_is_reported_and_the_next_good_one_clears_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = audit.AuditLog(path, clock=FakeClock())

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    log._fsync = full_disk
    with pytest.raises(audit.AuditError, match="No space left"):
        record(log, 1)
    assert log.error is not None
    assert "No space left" in log.error
    log._fsync = os.fsync
    record(log, 2)
    assert log.error is None
    log.close()


def test_recent_records_reads_only_the_newest_files_needed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with audit.AuditLog(path, clock=FakeClock(), max_bytes=4096, keep=50) as log:
        written = [record(log, n) for n in range(100)]
    assert audit.recent_records(path, 30) == written[-30:]
    assert audit.recent_records(path, 1000) == written
    assert list(audit.iter_records(path, newest_files=1)) == audit.read_audit(path).records


def test_line_numbers_across_rotated_files_count_on_from_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.with_name("audit.jsonl.1").write_bytes(b'{"a":1}\n{"a":2}\n')
    path.write_bytes(b'{"a":3}\nnot json\n{"torn')
    result = audit.read_audit(path, rotated=True)
    assert [r["a"] for r in result.records] == [1, 2, 3]
    assert result.bad_lines == [4]
    assert result.torn_lines == [5]
    assert result.torn_tail
    assert [f.name for f in result.files] == ["audit.jsonl.1", "audit.jsonl"]
