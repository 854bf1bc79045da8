"""A session still listed after a successful stop: recorded as ``still_listed``, stopped again
only after a backoff, at most ``MAX_STOPS`` times, then left alone (and it alerts)."""

from __future__ import annotations

import itertools
from pathlib import Path

from duixwatch.policy import retries
from tests.policy.test_executor import add, age_policy, rig, stops


async def test_a_session_still_listed_is_retried_with_backoff_then_left(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        # The platform answers every sessionStop with success and closes nothing.
        r.sim.faults.set(r.sim.apps[0].app_id, "sessionStop", hostile="stop_ignored")
        (sid,) = add(r, [5000])
        outcomes: list[list[str]] = []
        # 15 s polls for an hour: without the memory that is 240 stops of one session.
        for _ in range(240):
            _, done = await r.cycle([age_policy()], enforce=True)
            outcomes.append([d.outcome for d in done])
            r.clock.advance(15)
        assert stops(r) == retries.MAX_STOPS == 4
        assert not r.sim.session(sid).closed
        flat = [o for cycle in outcomes for o in cycle]
        assert flat.count("stopped") == 4
        # once after each of the 4 stops (the 4th says it gives up), never again after that
        assert flat.count("still_listed") == 4
        assert outcomes[1] == ["still_listed"]  # the next cycle notices, and waits
        lines = [x for x in r.records() if x["outcome"] == "still_listed"]
        assert len(lines) == 4
        assert "giving up" in lines[-1]["error"]
        assert (
            r.metric(
                "duixwatch_policy_actions_total",
                app=r.app().name,
                policy="max-age",
                action="stop_session",
                outcome="still_listed",
            )
            == 4
        )
        # Backoff: 60 s after the first stop, 120 s after the second, 240 s after the third.
        stop_cycles = [i for i, c in enumerate(outcomes) if "stopped" in c]
        gaps = [(b - a) * 15 for a, b in itertools.pairwise(stop_cycles)]
        assert gaps == [60, 120, 240]


async def test_a_session_that_leaves_the_list_is_forgotten(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        (_sid,) = add(r, [5000])
        _, done = await r.cycle([age_policy()], enforce=True)
        assert [d.outcome for d in done] == ["stopped"]  # the simulator closed it
        _, done = await r.cycle([age_policy()], enforce=True)
        assert done == []
        assert len(r.executor._stop_memory) == 0


def test_the_memory_is_bounded() -> None:
    memory = retries.StopMemory(limit=3)
    for n in range(10):
        memory.stopped("app", f"s{n}", 0.0)
    assert len(memory) == 3
    assert memory.decide("app", "s9", 1.0)[0] == "call"  # not remembered: stopped as before
    memory.keep_only("app", ["s0"])
    assert len(memory) == 1
