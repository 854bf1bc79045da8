"""watch.lifecycle: starts, ends (by policy or platform), durations, session-seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from duixwatch.core import models
from duixwatch.watch.lifecycle import DURATION_BUCKETS, Lifecycles
from duixwatch.watch.state import HistoryRow

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


class Sink:
    def __init__(self) -> None:
        self.rows: list[HistoryRow] = []

    def record_ended(self, rows: object) -> None:
        self.rows.extend(rows)  # type: ignore[arg-type]


def snap(at: float, *sessions: models.Session, error: bool = False) -> models.AppSnapshot:
    return models.AppSnapshot(
        app="desk",
        app_id="1",
        poll_interval_seconds=15,
        fetched_at=T0 + timedelta(seconds=at),
        sessions=models.SessionList(sessions=tuple(sessions), shape="test"),
        error=models.PollError("timeout", "x", T0) if error else None,
    )


def s(sid: str | None, started: float | None = None, seen: float | None = None) -> models.Session:
    return models.Session(
        sid,
        started_at=None if started is None else T0 + timedelta(seconds=started),
        first_seen_at=None if seen is None else T0 + timedelta(seconds=seen),
    )


def test_starts_ends_durations_and_session_seconds() -> None:
    sink = Sink()
    lives = Lifecycles(history=sink)
    lives.observe(snap(0, s("a", started=-100), s("b", seen=0)))
    life = lives.get("desk")
    assert life is not None
    assert life.started == 2  # already live at the first sight: seen for the first time
    lives.observe(snap(15, s("a", started=-100), s("b", seen=0), s("c", started=10)))
    assert life.started == 3
    assert life.session_seconds == pytest.approx((2 + 3) / 2 * 15)
    lives.stopped("desk", "a", "max-age", T0 + timedelta(seconds=20))
    lives.observe(snap(30, s("c", started=10), s(None)))
    assert (life.ended_policy, life.ended_platform) == (1, 1)
    # a: from its platform start (-100) to its last sighting (15); b: first seen 0 -> 15
    assert life.duration_sum == pytest.approx(115 + 15)
    assert life.bucket_counts is not None
    assert life.bucket_counts[0] == 1  # 15 s <= 60 s
    assert life.bucket_counts[DURATION_BUCKETS.index(300.0)] == 1  # 115 s
    assert life.session_seconds == pytest.approx(37.5 + (3 + 2) / 2 * 15)
    by_id = {r.session_id: r for r in sink.rows}
    assert by_id["a"].closed_by == "policy"
    assert by_id["a"].policy == "max-age"
    assert by_id["a"].start_known is True
    assert by_id["b"].closed_by == "platform"
    assert by_id["b"].start_known is False
    assert by_id["b"].duration_seconds == 15


def test_a_failed_poll_changes_nothing_and_duplicates_count_once() -> None:
    lives = Lifecycles()
    lives.observe(snap(0, s("a", seen=0), s("a", seen=0)))
    life = lives.get("desk")
    assert life is not None
    assert life.started == 1
    lives.observe(snap(15, error=True))
    assert (life.started, life.ended, life.session_seconds) == (1, 0, 0.0)
    lives.observe(snap(30, s("a", seen=0)))
    assert life.session_seconds == pytest.approx(30)


def test_a_reload_that_removes_an_app_drops_its_counts() -> None:
    lives = Lifecycles()
    lives.observe(snap(0, s("a", seen=0)))
    lives.set_apps(["other"])
    assert lives.get("desk") is None
    assert [name for name, _ in lives.items()] == ["other"]
