"""executor: stopping means stopping (issue 16). After ``stop()`` (SIGTERM) or a reload that
takes a policy out of force, no further call starts; the call in flight finishes with its
outcome (or is cut at the shutdown deadline as ``interrupted``); every call planned and not
started is an ``abort`` line with its session id."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from duixwatch.core import models
from duixwatch.policy import audit
from duixwatch.policy.cycle import PolicyCycle
from duixwatch.policy.executor import Executor
from duixwatch.policy.plan import Plan, PlannedAction, PolicyPlan
from duixwatch.policy.ports import SessionCloser
from duixwatch.policy.schema import PolicyConfig
from duixwatch.watch.state import StateStore
from tests.fakes import FakeClock
from tests.policy.test_cycle import APP, OTHER, Counts


class GatedPlatform:
    """sessionStop calls that answer only when the test opens the gate (or never)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.shields: list[bool] = []
        self.gate = anyio.Event()
        self.first = anyio.Event()

    async def stop_session(
        self, app: models.AppCredentials, session_id: str, *, shield: bool = True
    ) -> models.StopResult:
        self.started.append(session_id)
        self.shields.append(shield)
        self.first.set()
        await self.gate.wait()
        return models.StopResult(session_id=session_id, outcome="stopped")

    async def close_all(
        self, app: models.AppCredentials, *, shield: bool = True
    ) -> models.CloseAllResult:
        raise AssertionError("no close_all in these tests")


def policy(name: str = "max-age", threshold: float = 600) -> PolicyConfig:
    return PolicyConfig.model_validate(
        {
            "name": name,
            "action": "stop_sessions",
            "match": {"session_age_over_seconds": threshold},
            "max_actions_percent": 100,
            "dry_run": False,
        }
    )


def plan_for(app: Any, clock: FakeClock, ids: list[str], name: str = "max-age") -> Plan:
    actions = tuple(PlannedAction("stop_session", sid, "age 5000s > 600s") for sid in ids)
    return Plan(
        app.name,
        app.app_id,
        clock.now(),
        (PolicyPlan(name, "stop_sessions", app.name, app.app_id, False, actions=actions),),
    )


@pytest.fixture
def audit_log(tmp_path: Path, clock: FakeClock) -> Iterator[audit.AuditLog]:
    with audit.AuditLog(tmp_path / "audit.jsonl", clock=clock) as log:
        yield log


def events(log: audit.AuditLog) -> list[tuple[str, str | None, str | None]]:
    return [(r["event"], r["session_id"], r["outcome"]) for r in audit.read_audit(log.path).records]


def executor(platform: SessionCloser, clock: FakeClock, log: audit.AuditLog) -> Executor:
    return Executor(
        platform, clock=clock, audit_log=log, metric_set=Counts(), max_stops_per_second=1000
    )


async def test_after_stop_the_call_in_flight_finishes_and_the_rest_are_aborted_as_shutdown(
    clock: FakeClock, audit_log: audit.AuditLog
) -> None:
    platform = GatedPlatform()
    ex = executor(platform, clock, audit_log)
    config = policy()
    ex.set_in_force([config], enforcement_enabled=True)
    ids = [f"s{i}" for i in range(5)]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: ex.execute(
                    plan_for(APP, clock, ids), APP, {config.name: config}, cycle="c1"
                )
            )
            await platform.first.wait()
            ex.stop(grace_seconds=5)
            platform.gate.set()
    assert platform.started == ["s0"]
    assert platform.shields == [False]  # the executor shields the call, under its own deadline
    assert events(audit_log) == [
        ("intent", "s0", None),
        ("outcome", "s0", "stopped"),
        *[("abort", sid, None) for sid in ids[1:]],
    ]
    aborts = [r for r in audit.read_audit(audit_log.path).records if r["event"] == "abort"]
    assert all(r["reason"].startswith("shutdown: ") for r in aborts)
    assert {r["action"] for r in aborts} == {"stop_session"}
    assert ("aborted", APP.name, "max-age", "shutdown") in ex._metrics.calls  # type: ignore[attr-defined]


async def test_a_call_without_an_answer_is_cut_at_the_deadline_and_recorded_interrupted(
    clock: FakeClock, audit_log: audit.AuditLog
) -> None:
    platform = GatedPlatform()  # the gate never opens: the platform never answers
    ex = executor(platform, clock, audit_log)
    config = policy()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: ex.execute(
                    plan_for(APP, clock, ["s0", "s1"]), APP, {config.name: config}, cycle="c1"
                )
            )
            await platform.first.wait()
            began = anyio.current_time()
            ex.stop(grace_seconds=0.3)
            tg.cancel_scope.cancel()  # what the daemon does right after
        took = anyio.current_time() - began
    assert 0.25 <= took < 2.5
    assert events(audit_log) == [
        ("intent", "s0", None),
        ("outcome", "s0", "interrupted"),
        ("abort", "s1", None),
    ]
    outcome = audit.read_audit(audit_log.path).records[1]
    assert "when duixwatch stopped" in outcome["error"]


async def test_a_cancelled_cycle_waiting_for_its_pacing_slot_records_what_it_did_not_start(
    clock: FakeClock, audit_log: audit.AuditLog
) -> None:
    """Another APP's cycle, waiting for a pacing slot when SIGTERM comes, starts nothing."""

    class Waiting(FakeClock):
        async def sleep(self, seconds: float) -> None:
            await anyio.sleep_forever()

    platform = GatedPlatform()
    platform.gate.set()
    ex = Executor(
        platform,
        clock=Waiting(),
        audit_log=audit_log,
        metric_set=Counts(),
        max_stops_per_second=0.001,  # the second call waits for its slot
    )
    config = policy()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: ex.execute(
                    plan_for(OTHER, clock, ["a", "b", "c"]),
                    OTHER,
                    {config.name: config},
                    cycle="c2",
                )
            )
            await platform.first.wait()
            await anyio.sleep(0.05)  # the cycle is now waiting for the next slot
            ex.stop(grace_seconds=5)
            tg.cancel_scope.cancel()
    assert platform.started == ["a"]
    assert events(audit_log) == [
        ("intent", "a", None),
        ("outcome", "a", "stopped"),
        ("abort", "b", None),
        ("abort", "c", None),
    ]


async def test_a_cycle_that_starts_after_stop_calls_nothing(
    clock: FakeClock, audit_log: audit.AuditLog
) -> None:
    platform = GatedPlatform()
    platform.gate.set()
    ex = executor(platform, clock, audit_log)
    config = policy()
    ex.stop(grace_seconds=5)
    done = await ex.execute(
        plan_for(OTHER, clock, ["a", "b"]), OTHER, {config.name: config}, cycle="c3"
    )
    assert done == []
    assert platform.started == []
    assert events(audit_log) == [("abort", "a", None), ("abort", "b", None)]


@pytest.mark.parametrize(
    ("change", "still_in_force"),
    [
        ("removed", False),
        ("changed", False),
        ("enforcement off", False),
        ("another policy changed", True),
    ],
)
async def test_a_reload_takes_a_policy_out_of_force_between_two_of_its_calls(
    clock: FakeClock, audit_log: audit.AuditLog, change: str, still_in_force: bool
) -> None:
    platform = GatedPlatform()
    ex = executor(platform, clock, audit_log)
    config, other = policy(), policy("quota-ish", 900)
    ex.set_in_force([config, other], enforcement_enabled=True)
    new = {
        "removed": ([other], True),
        "changed": ([policy(threshold=1200), other], True),
        "enforcement off": ([config, other], False),
        "another policy changed": ([config, policy("quota-ish", 1800)], True),
    }[change]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: ex.execute(
                    plan_for(APP, clock, ["s0", "s1", "s2"]), APP, {config.name: config}, cycle="c1"
                )
            )
            await platform.first.wait()
            ex.set_in_force(new[0], enforcement_enabled=new[1])  # the reload lands mid-call
            platform.gate.set()
    if still_in_force:
        assert platform.started == ["s0", "s1", "s2"]
        assert [e for e, _, _ in events(audit_log)] == ["intent", "outcome"] * 3
    else:
        assert platform.started == ["s0"]  # the one in flight finished; nothing more started
        assert events(audit_log) == [
            ("intent", "s0", None),
            ("outcome", "s0", "stopped"),
            ("abort", "s1", None),
            ("abort", "s2", None),
        ]
        aborts = audit.read_audit(audit_log.path).records[2:]
        assert all(r["reason"].startswith("reload: ") for r in aborts)


class SlowPlatform:
    """sessionStop calls that each take ``seconds`` of the fake clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.started: list[str] = []

    async def stop_session(
        self, app: models.AppCredentials, session_id: str, *, shield: bool = True
    ) -> models.StopResult:
        self.started.append(session_id)
        self.clock.advance(self.seconds)
        return models.StopResult(session_id=session_id, outcome="stopped")

    async def close_all(
        self, app: models.AppCredentials, *, shield: bool = True
    ) -> models.CloseAllResult:
        raise AssertionError("no close_all in these tests")


async def test_no_call_starts_once_the_poll_the_plan_was_made_from_is_stale(
    clock: FakeClock, audit_log: audit.AuditLog
) -> None:
    # Polled every 15 s: the data is stale 30 s after it was fetched. Each stop takes 20 s,
    # so the third would start 40 s after the poll: it and the rest are aborted instead.
    platform = SlowPlatform(clock, seconds=20)
    ex = executor(platform, clock, audit_log)
    config = policy()
    started = clock.now() - timedelta(seconds=5000)
    snap = models.AppSnapshot(
        app=APP.name,
        app_id=APP.app_id,
        poll_interval_seconds=15,
        fetched_at=clock.now(),
        concurrency=models.Concurrency("1", 50, 5),
        sessions=models.SessionList(
            tuple(models.Session(f"s{i}", started) for i in range(5)), "data[]"
        ),
    )
    with StateStore.in_memory() as clocks:
        cycle = PolicyCycle(clocks=clocks, clock=clock, executor=ex)
        result = await cycle.run(APP, snap, policies=[config], enforcement_enabled=True)
    assert result is not None
    planned = [a.session_id for _, a in result[0].actions]
    assert len(planned) == 5
    assert platform.started == planned[:2]
    assert events(audit_log) == [
        ("intent", planned[0], None),
        ("outcome", planned[0], "stopped"),
        ("intent", planned[1], None),
        ("outcome", planned[1], "stopped"),
        *[("abort", sid, None) for sid in planned[2:]],
    ]
    aborts = [r for r in audit.read_audit(audit_log.path).records if r["event"] == "abort"]
    assert all(r["reason"].startswith("stale_data: the poll this plan") for r in aborts)
    assert ("aborted", APP.name, "max-age", "stale_data") in ex._metrics.calls  # type: ignore[attr-defined]


async def test_a_plan_without_a_staleness_bound_runs_to_its_end(
    clock: FakeClock, audit_log: audit.AuditLog
) -> None:
    platform = SlowPlatform(clock, seconds=20)
    ex = executor(platform, clock, audit_log)
    config = policy()
    ids = [f"s{i}" for i in range(3)]
    await ex.execute(plan_for(APP, clock, ids), APP, {config.name: config}, cycle="c1")
    assert platform.started == ids
