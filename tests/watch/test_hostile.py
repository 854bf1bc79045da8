"""Hostile platform answers through one APP's loop: a clear ``malformed`` poll (never the
``internal`` of a crash), or for a bad start time that session alone, aged from first sight
and logged once per kind of value (never the value)."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import anyio
import pytest
import structlog

from duixwatch import config as settings
from duixwatch.core import logs
from duixwatch.duix import DuixClient
from duixwatch.policy.evaluate import evaluate
from duixwatch.policy.schema import PolicyConfig
from duixwatch.sim import ListShape, Simulator, hostile
from duixwatch.watch.conversations import DocumentWatch
from duixwatch.watch.fleet import AppLoop
from duixwatch.watch.poll import MemoryFirstSeen
from duixwatch.watch.snapshots import SnapshotStore
from tests.fakes import FakeClock
from tests.watch.support import app_config, client_for

#: The kinds that make the whole poll fail, and the answer each breaks.
POLL_BREAKING = [
    ("count_superscript", "getconcurrentNumber"),
    ("count_huge", "getconcurrentNumber"),
    ("count_nan", "getconcurrentNumber"),
    ("count_infinity", "getconcurrentNumber"),
    ("count_negative", "getconcurrentNumber"),
    ("count_nan", "getconcurrentList"),
    ("deep_json", "getconcurrentNumber"),
    ("deep_json", "getconcurrentList"),
]


def nested(depth: int) -> Any:
    value: Any = "voice"
    for _ in range(depth):
        value = [value]
    return value


def loop_for(
    sim: Simulator, client: DuixClient, clock: Any, store: SnapshotStore, reported: list[Any]
) -> AppLoop:
    app = app_config(sim)
    store.expect([app.name])
    return AppLoop(
        app,
        client,
        store,
        clock=clock,
        rng=random.Random(7),
        daemon=settings.DaemonSettings(jitter_fraction=0, backoff_max_seconds=300),
        on_poll_error=lambda app, reason: reported.append((app, reason)),
        first_seen=MemoryFirstSeen(),
    )


@pytest.mark.parametrize(("kind", "endpoint"), POLL_BREAKING)
async def test_a_hostile_answer_is_a_malformed_poll_not_a_crash(
    sim: Simulator, clock: FakeClock, kind: str, endpoint: str
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, ListShape("records"))
    sim.add_session(app.app_id, age_seconds=30)
    store, reported = SnapshotStore(), []
    async with client_for(sim, clock) as client:
        loop = loop_for(sim, client, clock, store, reported)
        await loop.step()  # a good poll first: its data must not be taken for fresh
        clock.advance(15)
        sim.faults.set(app.app_id, endpoint, hostile=kind)
        with structlog.testing.capture_logs() as logs:
            await loop.step()
    snapshot = store.get(app.name)
    assert snapshot is not None
    assert snapshot.error is not None
    assert snapshot.error.reason == "malformed", snapshot.error
    assert not snapshot.is_fresh(clock.now())
    assert reported == [(app.name, "malformed")]
    assert [e["event"] for e in logs] == ["poll_failed"]
    assert len(logs[0]["error"]) < 1_000


def start_logs(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "session_start_unknown"]


async def test_an_implausible_start_is_aged_from_first_sight_and_logged_once_per_shape(
    sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    sim.set_shape(app.app_id, ListShape("records", "sessionId", "createTime", "local"))
    made = [sim.add_session(app.app_id, age_seconds=a) for a in (600, 60)]
    sim.faults.set(app.app_id, "getconcurrentList", hostile="start_1970")
    store, reported = SnapshotStore(), []
    async with client_for(sim, clock) as client:
        loop = loop_for(sim, client, clock, store, reported)
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                await loop.step()
                clock.advance(15)
            first = start_logs(logs)
            sim.faults.set(app.app_id, "getconcurrentList", hostile="future_start")
            for _ in range(3):
                await loop.step()
                clock.advance(15)
    snapshot = store.get(app.name)
    assert snapshot is not None
    assert snapshot.ok
    assert reported == []
    assert snapshot.sessions is not None
    bad, good = snapshot.sessions.sessions
    assert bad.session_id == made[0].session_id
    assert (bad.started_at, bad.start_rejected) == (None, True)
    # aged from first sight (eight polls, two minutes), not 56 years nor its real ten minutes
    age = bad.age_seconds(clock.now())
    assert age is not None
    assert 100 < age < 130
    assert good.started_at is not None
    assert not good.start_rejected
    assert [e["start"] for e in first] == ["str len 19: before 2000"]
    assert first[0]["sessions"] == 1
    assert [e["start"] for e in start_logs(logs)] == [
        "str len 19: before 2000",
        "str len 19: more than a day ahead",
    ]
    assert "1970" not in repr(logs)


async def test_a_many_items_list_is_refused_by_the_default_answer_cap(
    sim: Simulator, clock: FakeClock
) -> None:
    """200,000 items in the simulator's shape are ~16 MB: more than 8 MiB, so malformed."""
    app = sim.apps[0]
    sim.faults.set(app.app_id, "getconcurrentList", hostile="many_items")
    store, reported = SnapshotStore(), []
    async with client_for(sim, clock) as client:
        loop = loop_for(sim, client, clock, store, reported)
        await loop.step()
    snapshot = store.get(app.name)
    assert snapshot is not None
    assert snapshot.error is not None
    assert snapshot.error.reason == "malformed"
    assert "larger than 8388608 bytes" in snapshot.error.message


async def test_a_many_items_list_under_a_raised_cap_is_polled_whole(
    sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    sim.faults.set(app.app_id, "getconcurrentList", hostile="many_items")
    async with client_for(sim, clock, max_response_bytes=64 * 1024 * 1024) as client:
        store, reported = SnapshotStore(), []
        loop = loop_for(sim, client, clock, store, reported)
        await loop.step()
    snapshot = store.get(app.name)
    assert snapshot is not None
    assert snapshot.ok, snapshot.error
    assert snapshot.sessions is not None
    assert len(snapshot.sessions) == hostile.MANY_ITEMS
    assert all(s.first_seen_at is not None for s in snapshot.sessions.sessions[:10])


# --------------------------------------------------------------------------- conversations


@pytest.mark.parametrize(
    ("changes", "up", "max_sessions"),
    [
        ({"maxConversation": 10**400}, True, None),
        ({"maxConversation": -3}, True, None),
        ({"maxConversation": 12}, True, 12),
        ({"detailDto.ttsSpeaker": nested(100)}, False, None),
    ],
)
async def test_a_hostile_conversation_exports_no_made_up_limit_and_never_crashes_the_watch(
    clock: FakeClock, changes: dict[str, Any], up: bool, max_sessions: int | None
) -> None:
    sim = Simulator(apps=1, seed=5, clock=clock, workload=False)
    app = sim.apps[0]
    cid = sim.conversation_ids(app.app_id)[0]
    sim.change_conversation(app.app_id, cid, changes)
    config = settings.AppConfig.model_validate(
        {
            "app_id": app.app_id,
            "name": app.name,
            "app_key": app.app_key,
            "conversations": [cid],
            "conversation_poll_interval_seconds": 60,
        }
    )
    watch = DocumentWatch(clock=clock)
    async with client_for(sim, clock) as client, anyio.create_task_group() as tg:
        await tg.start(watch.run)
        watch.apply([config], client)
        with anyio.fail_after(10):
            while not watch.conversations() or watch.conversations()[0].last_read_at is None:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    (state,) = watch.conversations()
    assert (state.up, state.max_sessions) == (up, max_sessions)
    if not up:
        assert state.error is not None
        assert "nested deeper than 64 levels" in state.error


async def test_a_shape_that_flips_every_poll_is_polled_each_time_and_logged_once_per_shape(
    sim: Simulator, clock: FakeClock
) -> None:
    app = sim.apps[0]
    made = {sim.add_session(app.app_id, age_seconds=a).session_id for a in (30, 90)}
    sim.faults.set(app.app_id, "getconcurrentList", hostile="shape_flip")
    store, reported = SnapshotStore(), []
    async with client_for(sim, clock) as client:
        loop = loop_for(sim, client, clock, store, reported)
        with structlog.testing.capture_logs() as logs:
            shapes = []
            for _ in range(3 * 7):
                await loop.step()
                clock.advance(15)
                snapshot = store.get(app.name)
                assert snapshot is not None
                assert snapshot.ok
                assert snapshot.sessions is not None
                assert {s.session_id for s in snapshot.sessions.sessions} == made
                shapes.append(snapshot.sessions.shape)
    assert reported == []
    assert len(set(shapes)) == 7
    logged = [e["shape"] for e in logs if e["event"] == "session_list_shape"]
    assert sorted(logged) == sorted(set(shapes))  # each once, not one line per poll


@pytest.mark.parametrize("kind", ["start_1970", "start_1900", "start_year1", "start_9999"])
async def test_a_placeholder_start_time_no_longer_makes_a_max_age_policy_stop_the_session(
    sim: Simulator, clock: FakeClock, kind: str
) -> None:
    """Issue 15: a 1970 start read as 56 years old was stopped by max-session-age every cycle.
    Its age is now from first sight: ten polls later it is 135 s old, under any sane limit."""
    app = sim.apps[0]
    sim.add_session(app.app_id, age_seconds=60)
    sim.faults.set(app.app_id, "getconcurrentList", hostile=kind)
    policy = PolicyConfig.model_validate(
        {
            "name": "max-session-age",
            "match": {"session_age_over_seconds": 2700},
            "action": "stop_sessions",
            "dry_run": False,
        }
    )
    store, reported = SnapshotStore(), []
    plans = []
    async with client_for(sim, clock) as client:
        loop = loop_for(sim, client, clock, store, reported)
        for _ in range(10):
            clock.advance(15)
            await loop.step()
            snapshot = store.get(app.name)
            assert snapshot is not None
            (plan,) = evaluate(
                [policy], loop.app, snapshot, now=clock.now(), enforcement_enabled=True
            ).policies
            plans.append(plan)
    assert all(p.matched == () and p.actions == () for p in plans)
    snapshot = store.get(app.name)
    assert snapshot is not None
    assert snapshot.sessions is not None
    (session,) = snapshot.sessions.sessions
    assert session.start_rejected
    assert session.age_seconds(clock.now()) == pytest.approx(135, abs=1)


@pytest.mark.parametrize("as_json", [False, True])
def test_a_session_id_with_markup_and_a_newline_is_one_inert_log_line(as_json: bool) -> None:
    stream = io.StringIO()
    logs.configure(json=as_json, level="info", stream=stream)
    try:
        logs.get_logger("t").info("session_stopped", session_id=hostile.MARKUP_ID)
    finally:
        structlog.reset_defaults()  # as tests/core/test_logs.py leaves it
    text = stream.getvalue()
    assert text.count("\n") == 1  # no forged second line
    if as_json:
        assert json.loads(text)["session_id"] == hostile.MARKUP_ID
    else:
        assert "\\u000a1860000000000000001" in text
