"""policy.cycle: the one path from a snapshot to enforcement, and plan's share of it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from duixwatch import config as settings
from duixwatch.core import errors, models
from duixwatch.policy import audit
from duixwatch.policy.cycle import PolicyCycle
from duixwatch.policy.executor import Executor
from duixwatch.policy.schema import PolicyConfig
from duixwatch.watch.state import StateStore
from tests.fakes import FakeClock

APP = settings.AppConfig(app_id="100", name="frontdesk", app_key=SecretStr("k" * 32))
OTHER = settings.AppConfig(app_id="200", name="kiosk", app_key=SecretStr("k" * 32))


class Platform:
    """The two destructive calls, recorded; every session it is asked to stop was live."""

    def __init__(self) -> None:
        self.stopped: list[str] = []

    async def stop_session(
        self, app: models.AppCredentials, session_id: str, *, shield: bool = True
    ) -> models.StopResult:
        self.stopped.append(session_id)
        return models.StopResult(session_id=session_id, outcome="stopped")

    async def close_all(
        self, app: models.AppCredentials, *, shield: bool = True
    ) -> models.CloseAllResult:
        raise AssertionError("no close_all in these tests")


class Counts:
    """PolicyMetrics that only count calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def policy_matched(self, app: str, policy: str, count: int) -> None:
        self.calls.append(("matched", app, policy, str(count)))

    def policy_aborted(self, app: str, policy: str, reason: str) -> None:
        self.calls.append(("aborted", app, policy, reason))

    def policy_action(self, app: str, policy: str, action: str, outcome: str) -> None:
        self.calls.append(("action", app, policy, outcome))


def quota(**values: Any) -> PolicyConfig:
    base: dict[str, Any] = {
        "name": "quota",
        "apps": [APP.name],
        "action": "stop_sessions",
        "match": {"max_sessions": 2, "for_seconds": 60},
        "max_actions_percent": 100,
        "dry_run": False,
    }
    return PolicyConfig.model_validate({**base, **values})


def snapshot(clock: FakeClock, sessions: int) -> models.AppSnapshot:
    now = clock.now()
    listed = tuple(
        models.Session(f"s{i}", now - timedelta(seconds=100 + i)) for i in range(sessions)
    )
    return models.AppSnapshot(
        app=APP.name,
        app_id=APP.app_id,
        poll_interval_seconds=15,
        fetched_at=now,
        concurrency=models.Concurrency("1", 50, sessions),
        sessions=models.SessionList(listed, "data[]"),
    )


@pytest.fixture
def clocks() -> Iterator[StateStore]:
    with StateStore.in_memory() as store:
        yield store


@pytest.fixture
def platform() -> Platform:
    return Platform()


@pytest.fixture
def cycle(
    tmp_path: Path, clock: FakeClock, clocks: StateStore, platform: Platform
) -> Iterator[PolicyCycle]:
    with audit.AuditLog(tmp_path / "audit.jsonl", clock=clock) as log:
        executor = Executor(platform, clock=clock, audit_log=log, metric_set=Counts())
        yield PolicyCycle(clocks=clocks, clock=clock, executor=executor)


async def test_plan_moves_no_clock_and_acts_on_nothing_where_run_does_both(
    clock: FakeClock, clocks: StateStore, cycle: PolicyCycle, platform: Platform
) -> None:
    policies = [quota()]
    planned = cycle.plan(APP, snapshot(clock, 4), policies=policies, enforcement_enabled=True)
    assert planned.policies[0].waiting is not None
    assert clocks.over_since(APP.app_id, "quota") is None  # plan never starts the wait
    assert platform.stopped == []

    result = await cycle.run(APP, snapshot(clock, 4), policies=policies, enforcement_enabled=True)
    assert result is not None
    assert clocks.over_since(APP.app_id, "quota") == clock.now()  # run does
    assert platform.stopped == []  # still waiting for for_seconds


async def test_what_plan_shows_is_what_run_then_does(
    clock: FakeClock, cycle: PolicyCycle, platform: Platform
) -> None:
    policies = [quota()]
    await cycle.run(APP, snapshot(clock, 4), policies=policies, enforcement_enabled=True)
    clock.advance(61)
    planned = cycle.plan(APP, snapshot(clock, 4), policies=policies, enforcement_enabled=True)
    shown = [a.session_id for a in planned.policies[0].actions]
    assert len(shown) == 2

    result = await cycle.run(APP, snapshot(clock, 4), policies=policies, enforcement_enabled=True)
    assert result is not None
    plan, done = result
    assert plan == planned
    assert platform.stopped == shown
    assert [(r.session_id, r.outcome) for r in done] == [(s, "stopped") for s in shown]
    assert cycle.last_plans[APP.name] == plan


async def test_a_policy_that_turns_false_stops_its_clock(
    clock: FakeClock, clocks: StateStore, cycle: PolicyCycle
) -> None:
    policies = [quota()]
    await cycle.run(APP, snapshot(clock, 4), policies=policies, enforcement_enabled=True)
    clock.advance(10)
    await cycle.run(APP, snapshot(clock, 1), policies=policies, enforcement_enabled=True)
    assert clocks.over_since(APP.app_id, "quota") is None


async def test_an_app_no_policy_selects_has_no_plan(clock: FakeClock, cycle: PolicyCycle) -> None:
    policies = [quota()]
    await cycle.run(APP, snapshot(clock, 1), policies=policies, enforcement_enabled=True)
    assert APP.name in cycle.last_plans
    assert (
        await cycle.run(OTHER, snapshot(clock, 1), policies=policies, enforcement_enabled=True)
        is None
    )
    assert await cycle.run(APP, snapshot(clock, 1), policies=[], enforcement_enabled=True) is None
    assert APP.name not in cycle.last_plans  # a reload that drops the policy drops its plan


async def test_forget_apps_drops_the_plans_of_removed_apps(
    clock: FakeClock, cycle: PolicyCycle
) -> None:
    await cycle.run(APP, snapshot(clock, 1), policies=[quota()], enforcement_enabled=True)
    cycle.forget_apps({OTHER.name})
    assert cycle.last_plans == {}


async def test_without_an_executor_run_decides_and_persists_but_never_acts(
    clock: FakeClock, clocks: StateStore, platform: Platform
) -> None:
    planner = PolicyCycle(clocks=clocks, clock=clock)
    result = await planner.run(
        APP,
        snapshot(clock, 4),
        policies=[quota(match={"max_sessions": 2})],
        enforcement_enabled=True,
    )
    assert result is not None
    plan, done = result
    assert len(plan.policies[0].actions) == 2
    assert done == []
    assert platform.stopped == []


class FullDisk:
    """ForClocks whose writes fail while ``full`` (a disk full, a read-only state.dir)."""

    def __init__(self) -> None:
        self.full = True
        self.since: dict[tuple[str, str], Any] = {}

    def over_since(self, app_id: str, policy: str) -> Any:
        return self.since.get((app_id, policy))

    def set_over_since(self, app_id: str, policy: str, since: Any) -> None:
        if self.full:
            raise errors.StorageError("database or disk is full")
        self.since[(app_id, policy)] = since


async def test_a_clock_that_cannot_be_written_aborts_the_policy_until_it_can(
    tmp_path: Path, clock: FakeClock, platform: Platform
) -> None:
    disk = FullDisk()
    counts = Counts()
    with (
        audit.AuditLog(tmp_path / "audit.jsonl", clock=clock) as log,
        capture_logs() as logs,
    ):
        executor = Executor(platform, clock=clock, audit_log=log, metric_set=counts)
        cycle = PolicyCycle(clocks=disk, clock=clock, executor=executor)
        policies = [quota(match={"max_sessions": 2, "for_seconds": 0})]
        for _ in range(3):
            result = await cycle.run(
                APP, snapshot(clock, 4), policies=policies, enforcement_enabled=True
            )
            assert result is not None
            (pplan,) = result[0].policies
            assert pplan.abort is not None
            assert pplan.abort.reason == "state_unavailable"
        assert platform.stopped == []  # nothing done that a restart would forget
        assert ("aborted", APP.name, "quota", "state_unavailable") in counts.calls
        assert [e["event"] for e in logs].count("policy_state_unavailable") == 1  # once
        records = audit.read_audit(tmp_path / "audit.jsonl").records
        aborts = [r for r in records if r["event"] == "abort"]
        assert aborts
        assert "state_unavailable" in aborts[0]["reason"]
        disk.full = False
        result = await cycle.run(
            APP, snapshot(clock, 4), policies=policies, enforcement_enabled=True
        )
        assert result is not None
        assert result[0].policies[0].abort is None
        assert len(platform.stopped) == 2  # it resumes by itself
        assert "policy_state_recovered" in [e["event"] for e in logs]
