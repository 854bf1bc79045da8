"""executor: plans become calls (or dry runs), audit lines, metrics — checked on the simulator."""

from __future__ import annotations

import random
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import SecretStr

from duixwatch import config as settings
from duixwatch.duix import DuixClient
from duixwatch.export import metrics
from duixwatch.export.exposition import Registry
from duixwatch.policy import audit, notify
from duixwatch.policy.cycle import PolicyCycle
from duixwatch.policy.evaluate import evaluate
from duixwatch.policy.executor import Executor
from duixwatch.policy.plan import ActionRecord, Plan
from duixwatch.policy.schema import PolicyConfig
from duixwatch.sim import Simulator, create_app
from duixwatch.watch.poll import MemoryFirstSeen, poll_once
from duixwatch.watch.state import StateStore
from tests.fakes import FakeClock


class FakeNotifier:
    """Records what would be sent (the real one is tested in test_notify.py)."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[notify.NotifyTarget], notify.Notification]] = []

    def submit(
        self, targets: Sequence[notify.NotifyTarget], notification: notify.Notification
    ) -> bool:
        self.sent.append((list(targets), notification))
        return True


@dataclass
class Rig:
    sim: Simulator
    clock: FakeClock
    client: DuixClient
    executor: Executor
    audit_path: Path
    registry: Registry
    audit_log: audit.AuditLog
    notifier: FakeNotifier
    policy_cycle: PolicyCycle

    def app(self, index: int = 0) -> settings.AppConfig:
        a = self.sim.apps[index]
        return settings.AppConfig(
            app_id=a.app_id, name=a.name, app_key=SecretStr(a.app_key), poll_interval_seconds=15
        )

    async def cycle(
        self, policies: list[PolicyConfig], *, enforce: bool, index: int = 0
    ) -> tuple[Plan, list[ActionRecord]]:
        app = self.app(index)
        snap = await poll_once(app, self.client, clock=self.clock, first_seen=MemoryFirstSeen())
        result = await self.policy_cycle.run(
            app, snap, policies=policies, enforcement_enabled=enforce
        )
        if result is None:  # no policy selects the app
            return Plan(app.name, app.app_id, self.clock.now(), ()), []
        return result

    def records(self) -> list[dict[str, Any]]:
        return audit.read_audit(self.audit_path).records

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@asynccontextmanager
async def rig(
    directory: Path,
    *,
    stops_per_second: float = 100.0,
    state_error: Callable[[], str | None] = lambda: None,
) -> AsyncIterator[Rig]:
    clock = FakeClock()
    sim = Simulator(apps=2, seed=9, clock=clock, workload=False)
    registry = Registry()
    metric_set = metrics.Metrics(registry, snapshots=list, clock=clock, version="test")
    audit_path = directory / "audit.jsonl"
    audit_log = audit.AuditLog(audit_path, clock=clock)
    notifier = FakeNotifier()
    async with DuixClient(
        settings.DuixSettings(
            base_url="http://sim.test", max_requests_per_second=10_000, read_retries=0
        ),
        clock=clock,
        transport=httpx.ASGITransport(app=create_app(sim)),
        rng=random.Random(1),
    ) as client:
        executor = Executor(
            client,
            clock=clock,
            audit_log=audit_log,
            metric_set=metric_set,
            notifier=notifier,
            max_stops_per_second=stops_per_second,
            state_error=state_error,
        )
        with StateStore.in_memory() as clocks:
            policy_cycle = PolicyCycle(clocks=clocks, clock=clock, executor=executor)
            yield Rig(
                sim,
                clock,
                client,
                executor,
                audit_path,
                registry,
                audit_log,
                notifier,
                policy_cycle,
            )
    audit_log.close()


def age_policy(**values: Any) -> PolicyConfig:
    base: dict[str, Any] = {
        "name": "max-age",
        "action": "stop_sessions",
        "match": {"session_age_over_seconds": 600},
        "max_actions_percent": 100,
        "dry_run": False,
    }
    base.update(values)
    return PolicyConfig.model_validate(base)


def add(r: Rig, ages: Sequence[float], index: int = 0) -> list[str]:
    return [r.sim.add_session(r.sim.apps[index].app_id, age_seconds=a).session_id for a in ages]


def stops(r: Rig) -> int:
    return sum(n for (_, endpoint), n in r.sim.stats.requests.items() if endpoint == "sessionStop")


async def test_dry_run_closes_nothing_and_records_each_session_once(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        old = add(r, [5000, 3000, 10])[:2]
        for _ in range(2):
            await r.cycle([age_policy(dry_run=True)], enforce=True)
        assert stops(r) == 0
        assert not any(r.sim.session(s).closed for s in old)
        records = r.records()
        assert [(x["event"], x["session_id"]) for x in records] == [
            ("dry_run", old[0]),
            ("dry_run", old[1]),
        ]
        assert (
            r.metric(
                "duixwatch_policy_actions_total",
                app=r.app().name,
                policy="max-age",
                action="stop_session",
                outcome="dry_run",
            )
            == 2
        )


async def test_enforcement_off_is_a_dry_run_even_for_an_enforcing_policy(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        add(r, [5000])
        _, done = await r.cycle([age_policy(dry_run=False)], enforce=False)
        assert [d.outcome for d in done] == ["dry_run"]
        assert stops(r) == 0


async def test_enforce_stops_exactly_the_planned_sessions_with_intent_before_outcome(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        old = add(r, [5000, 3000])
        young = add(r, [10, 20])
        other_app = add(r, [9000], index=1)
        plan, done = await r.cycle([age_policy()], enforce=True)
        assert {a.session_id for _, a in plan.actions} == set(old)
        assert all(r.sim.session(s).closed for s in old)
        assert not any(r.sim.session(s).closed for s in young + other_app)
        assert [d.outcome for d in done] == ["stopped", "stopped"]
        events = [(x["event"], x["session_id"], x["outcome"]) for x in r.records()]
        assert events == [
            ("intent", old[0], None),
            ("outcome", old[0], "stopped"),
            ("intent", old[1], None),
            ("outcome", old[1], "stopped"),
        ]
        assert set(r.records()[0]) == {
            "ts",
            "cycle",
            "event",
            "policy",
            "app",
            "app_id",
            "action",
            "session_id",
            "reason",
            "outcome",
            "error",
        }


async def test_a_session_that_ended_meanwhile_is_already_closed_not_failed(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        (sid,) = add(r, [5000])
        app = r.app()
        snap = await poll_once(app, r.client, clock=r.clock, first_seen=MemoryFirstSeen())
        plan = evaluate([age_policy()], app, snap, now=r.clock.now(), enforcement_enabled=True)
        r.sim.end_session(sid)  # the user hung up between the poll and the stop
        done = await r.executor.execute(plan, app, {}, cycle="c1")
        assert [d.outcome for d in done] == ["already_closed"]


async def test_a_failed_stop_is_recorded_and_not_retried(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        (sid,) = add(r, [5000])
        r.sim.faults.set(r.sim.apps[0].app_id, "sessionStop", status=503)
        _, done = await r.cycle([age_policy()], enforce=True)
        assert [d.outcome for d in done] == ["failed"]
        assert done[0].error is not None
        assert stops(r) == 1
        assert not r.sim.session(sid).closed
        outcome = r.records()[-1]
        assert (outcome["event"], outcome["outcome"]) == ("outcome", "failed")
        assert "503" in outcome["error"]


async def test_no_audit_no_call(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        (sid,) = add(r, [5000])

        def broken_fsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        r.audit_log._fsync = broken_fsync  # the AuditLog's test seam
        _, done = await r.cycle([age_policy()], enforce=True)
        assert [d.outcome for d in done] == ["failed"]
        assert "audit log unavailable" in (done[0].error or "")
        assert stops(r) == 0
        assert not r.sim.session(sid).closed


async def test_stops_are_paced_across_the_cycle(tmp_path: Path) -> None:
    async with rig(tmp_path, stops_per_second=2) as r:
        add(r, [5000, 5001, 5002, 5003])
        r.clock.sleeps.clear()
        await r.cycle([age_policy()], enforce=True)
        assert stops(r) == 4
        assert [s for s in r.clock.sleeps if s >= 0.1] == pytest.approx([0.5] * 3, abs=0.01)


async def test_an_abort_is_counted_every_cycle_but_recorded_once(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        add(r, [5000, 5000, 5000])
        config = age_policy(max_actions_per_cycle=2)
        for _ in range(3):
            _, done = await r.cycle([config], enforce=True)
            assert done == []
        assert stops(r) == 0
        assert [x["event"] for x in r.records()] == ["abort"]
        assert r.records()[0]["reason"].startswith("max_actions")
        assert (
            r.metric(
                "duixwatch_policy_aborts_total",
                app=r.app().name,
                policy="max-age",
                reason="max_actions",
            )
            == 3
        )


async def test_two_policies_wanting_the_same_session_stop_it_once(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        (sid,) = add(r, [5000])
        first, second = age_policy(name="a"), age_policy(name="b")
        _, done = await r.cycle([first, second], enforce=True)
        assert [d.outcome for d in done] == ["stopped", "already_closed"]
        assert stops(r) == 1
        assert r.sim.session(sid).closed


async def test_close_all_drains_only_the_confirmed_app(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        mine = add(r, [1, 2, 3])
        theirs = add(r, [1, 2, 3], index=1)
        app = r.app()
        drain = PolicyConfig.model_validate(
            {
                "name": "drain",
                "action": "close_all",
                "apps": [app.name],
                "confirm_app_id": app.app_id,
                "match": {"max_sessions": 2},
                "dry_run": False,
            }
        )
        _, done = await r.cycle([drain], enforce=True)
        assert [(d.action, d.outcome) for d in done] == [("close_all", "stopped")]
        assert all(r.sim.session(s).closed for s in mine)
        assert not any(r.sim.session(s).closed for s in theirs)


async def test_a_policy_with_notify_targets_reports_cycles_that_did_something(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        add(r, [5000])
        config = age_policy(notify=[{"url": "https://hooks.example.invalid/x", "headers": {}}])
        await r.cycle([config], enforce=True)
        await r.cycle([config], enforce=True)  # nothing left to do: no second notification
        ((targets, note),) = r.notifier.sent
        assert targets[0].url == "https://hooks.example.invalid/x"
        assert [o.outcome for o in note.outcomes] == ["stopped"]
        assert note.policy == "max-age"


# --------------------------------------------------------------------------- property


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=0, max_value=12))
    return {
        "ages": draw(st.lists(st.floats(min_value=0, max_value=9000), min_size=n, max_size=n)),
        "protect": draw(st.booleans()),
        "threshold": draw(st.floats(min_value=1, max_value=8000)),
        "max_actions": draw(st.integers(min_value=1, max_value=12)),
        "max_percent": draw(st.floats(min_value=1, max_value=100)),
        "dry_run": draw(st.booleans()),
        "enforce": draw(st.booleans()),
        "excluded": draw(st.booleans()),
        "failing_poll": draw(st.booleans()),
    }


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_enforcement_closes_exactly_what_the_plan_shows_and_nothing_when_it_should_not(
    case: dict[str, Any],
) -> None:
    async def scenario(directory: Path) -> None:
        async with rig(directory) as r:
            ids = add(r, case["ages"])
            protected = set(ids[::3]) if case["protect"] else set()
            config = age_policy(
                match={"session_age_over_seconds": case["threshold"]},
                protect_sessions=sorted(protected) or [],
                max_actions_per_cycle=case["max_actions"],
                max_actions_percent=case["max_percent"],
                dry_run=case["dry_run"],
                exclude_apps=[r.app().name] if case["excluded"] else [],
            )
            if case["failing_poll"]:
                r.sim.faults.set(r.sim.apps[0].app_id, "getconcurrentList", status=500)
            plan, _ = await r.cycle([config], enforce=case["enforce"])
            closed = {s for s in ids if r.sim.session(s).closed}
            planned = {a.session_id for _, a in plan.actions}
            acting = case["enforce"] and not case["dry_run"]
            assert closed == (planned if acting else set())
            assert not closed & protected
            if case["excluded"] or case["failing_poll"]:
                assert closed == set()
            assert len(closed) <= case["max_actions"]
            assert stops(r) == (len(planned) if acting else 0)

    with tempfile.TemporaryDirectory() as directory:
        anyio.run(scenario, Path(directory))


async def test_an_abort_notifies_once_when_it_starts(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        add(r, [5000, 5000, 5000])
        config = age_policy(
            max_actions_per_cycle=2,
            notify=[{"url": "https://hooks.example.invalid/x", "headers": {}}],
        )
        for _ in range(3):
            await r.cycle([config], enforce=True)
        ((targets, note),) = r.notifier.sent  # once, when the abort started
        assert targets == list(config.notify)
        assert note.aborted is not None
        assert note.aborted.startswith("max_actions: would stop 3")
        assert note.outcomes == ()
        assert "aborted for" in note.text()
        assert note.payload()["aborted"] == note.aborted
        raised = age_policy(max_actions_per_cycle=10, notify=config.notify)
        await r.cycle([raised], enforce=True)  # a higher cap: the three are stopped
        assert [o.outcome for o in r.notifier.sent[1][1].outcomes] == ["stopped"] * 3
