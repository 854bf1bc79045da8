"""executor: no call without its intent record — an audit log or state database that cannot be
written blocks every acting policy (an abort, counted and audited when it can be), and
enforcement resumes by itself once writing works again."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.policy.test_executor import add, age_policy, rig, stops


async def test_an_unwritable_audit_log_aborts_the_plan_and_a_probe_resumes_it(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        old = add(r, [5000, 4000])
        r.audit_path.unlink()
        r.audit_path.mkdir()  # every open fails, as on a read-only directory
        for _ in range(3):
            _, done = await r.cycle([age_policy()], enforce=True)
            assert stops(r) == 0
            assert all(d.outcome == "failed" and "not attempted" in (d.error or "") for d in done)
        # The first cycle's intent write failed (outcome failed, not attempted); from then on
        # the executor knows, probes first, and aborts the whole plan instead.
        assert (
            r.metric(
                "duixwatch_policy_aborts_total",
                app=r.app().name,
                policy="max-age",
                reason="audit_unavailable",
            )
            >= 2
        )
        assert r.audit_log.error is not None
        shutil.rmtree(r.audit_path)
        _, done = await r.cycle([age_policy()], enforce=True)
        assert sorted(d.session_id for d in done) == sorted(old)
        assert stops(r) == 2
        assert r.audit_log.error is None
        records = r.records()
        for sid in old:
            events = [x["event"] for x in records if x["session_id"] == sid]
            assert events == ["intent", "outcome"]


async def test_an_unwritable_state_database_aborts_acting_plans_not_dry_runs(
    tmp_path: Path,
) -> None:
    broken: list[str | None] = ["state database: disk I/O error"]
    async with rig(tmp_path, state_error=lambda: broken[0]) as r:
        add(r, [5000])
        _, done = await r.cycle([age_policy()], enforce=True)
        assert done == []
        assert stops(r) == 0
        assert (
            r.metric(
                "duixwatch_policy_aborts_total",
                app=r.app().name,
                policy="max-age",
                reason="state_unavailable",
            )
            == 1
        )
        aborts = [x for x in r.records() if x["event"] == "abort"]
        assert len(aborts) == 1
        assert "disk I/O error" in aborts[0]["reason"]
        _, done = await r.cycle([age_policy(dry_run=True)], enforce=True)
        assert [d.outcome for d in done] == ["dry_run"]  # a dry run makes no call: not blocked
        broken[0] = None
        _, done = await r.cycle([age_policy()], enforce=True)
        assert [d.outcome for d in done] == ["stopped"]
        assert stops(r) == 1
