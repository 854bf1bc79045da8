"""policy.evaluate: the pure decision, example by example and as properties."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from duixwatch import config as settings
from duixwatch.core import models
from duixwatch.policy.evaluate import evaluate
from duixwatch.policy.plan import PolicyPlan
from duixwatch.policy.schema import PolicyConfig

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
APP = settings.AppConfig(app_id="100", name="frontdesk", app_key=SecretStr("k" * 32))
OTHER = settings.AppConfig(app_id="200", name="kiosk", app_key=SecretStr("k" * 32))


def policy_config(**values: Any) -> PolicyConfig:
    base: dict[str, Any] = {
        "name": "p",
        "action": "stop_sessions",
        "match": {"session_age_over_seconds": 600},
        "max_actions_percent": 100,  # most examples have few sessions; caps are tested apart
    }
    base.update(values)
    return PolicyConfig.model_validate(base)


def snapshot(
    ages: list[float | None],
    *,
    fetched_ago: float = 0,
    failed: bool = False,
    ids: list[str | None] | None = None,
    list_sessions: bool = True,
) -> models.AppSnapshot:
    ids = ids or [f"s{i}" for i in range(len(ages))]
    sessions = tuple(
        models.Session(
            session_id=sid,
            started_at=None if age is None else NOW - timedelta(seconds=age),
        )
        for sid, age in zip(ids, ages, strict=True)
    )
    fetched = NOW - timedelta(seconds=fetched_ago)
    return models.AppSnapshot(
        app=APP.name,
        app_id=APP.app_id,
        poll_interval_seconds=15,
        fetched_at=fetched,
        concurrency=models.Concurrency("1", 50, len(sessions)),
        sessions=models.SessionList(sessions, shape="data[]") if list_sessions else None,
        error=models.PollError("server", "x", NOW) if failed else None,
    )


def plan_of(
    config: PolicyConfig,
    snap: models.AppSnapshot | None,
    *,
    enforce: bool = True,
    over_since: datetime | None = None,
    app: settings.AppConfig = APP,
) -> PolicyPlan:
    (only,) = evaluate(
        [config],
        app,
        snap,
        now=NOW,
        enforcement_enabled=enforce,
        over_since={config.name: over_since},
    ).policies
    return only


def stopped(plan: PolicyPlan) -> list[str | None]:
    return [a.session_id for a in plan.actions]


# --------------------------------------------------------------------------- examples


def test_the_age_policy_stops_exactly_the_sessions_older_than_the_threshold() -> None:
    plan = plan_of(policy_config(), snapshot([100, 601, 599, 5000, 600]))
    assert sorted(stopped(plan)) == ["s1", "s3"]
    assert plan.abort is None
    assert plan.actions[0].reason.startswith("age ")


def test_sessions_without_an_id_are_never_acted_on() -> None:
    plan = plan_of(policy_config(), snapshot([5000, 5000], ids=[None, "b"]))
    assert stopped(plan) == ["b"]


def test_a_session_aged_from_first_sight_counts() -> None:
    seen = models.Session("s0", first_seen_at=NOW - timedelta(seconds=700))
    snap = replace(snapshot([None]), sessions=models.SessionList((seen,), "data[]"))
    assert stopped(plan_of(policy_config(), snap)) == ["s0"]


def test_a_session_whose_start_time_was_not_believed_is_never_closed_by_age() -> None:
    """A listed start of 1970 (or 1900, or a year ahead) is rejected by the parser: aged from
    first sight for display, but no age policy acts on it, however long it has been seen."""
    rejected = models.Session("s0", first_seen_at=NOW - timedelta(hours=3), start_rejected=True)
    unknown = models.Session("s1", first_seen_at=NOW - timedelta(hours=3))
    snap = replace(snapshot([None]), sessions=models.SessionList((rejected, unknown), "data[]"))
    assert stopped(plan_of(policy_config(), snap)) == ["s1"]


def test_protected_sessions_are_listed_but_never_in_an_action() -> None:
    config = policy_config(protect_sessions=["vip-*"])
    plan = plan_of(config, snapshot([5000, 5000], ids=["vip-1", "b"]))
    assert stopped(plan) == ["b"]
    assert [m.session_id for m in plan.matched if m.protected] == ["vip-1"]


def test_an_excluded_app_gets_no_plan_at_all() -> None:
    config = policy_config(apps=["*"], exclude_apps=["front*"])
    result = evaluate([config], APP, snapshot([5000]), now=NOW, enforcement_enabled=True)
    assert result.policies == ()


def test_too_many_matches_abort_the_whole_policy() -> None:
    config = policy_config(max_actions_per_cycle=2, max_actions_percent=100)
    plan = plan_of(config, snapshot([5000, 5000, 5000]))
    assert plan.actions == ()
    assert plan.abort is not None
    assert plan.abort.reason == "max_actions"
    assert len(plan.matched) == 3


def test_too_large_a_share_aborts_the_whole_policy() -> None:
    config = policy_config(max_actions_per_cycle=100, max_actions_percent=50)
    plan = plan_of(config, snapshot([5000, 5000, 10]))
    assert plan.abort is not None
    assert plan.abort.reason == "max_percent"
    assert plan.actions == ()
    ok = plan_of(config, snapshot([5000, 10, 10]))
    assert stopped(ok) == ["s0"]


def test_stale_or_failed_data_never_leads_to_an_action() -> None:
    config = policy_config()
    for snap in (
        snapshot([5000], fetched_ago=31),  # interval 15: stale after 30 s
        snapshot([5000], failed=True),
        None,
    ):
        plan = plan_of(config, snap)
        assert plan.actions == ()
        assert plan.abort is not None
        assert plan.abort.reason == "stale_data"
    assert stopped(plan_of(config, snapshot([5000], fetched_ago=30))) == ["s0"]


def test_a_stop_policy_without_the_session_list_aborts() -> None:
    plan = plan_of(policy_config(), snapshot([5000], list_sessions=False))
    assert plan.abort is not None
    assert plan.abort.reason == "no_session_list"


def test_dry_run_is_true_unless_enforcement_and_the_policy_both_say_act() -> None:
    snap = snapshot([5000])
    assert plan_of(policy_config(dry_run=True), snap, enforce=True).dry_run
    assert plan_of(policy_config(dry_run=False), snap, enforce=False).dry_run
    assert not plan_of(policy_config(dry_run=False), snap, enforce=True).dry_run
    # the decision is the same either way
    assert stopped(plan_of(policy_config(dry_run=True), snap)) == ["s0"]


def quota(**values: Any) -> PolicyConfig:
    return policy_config(match={"max_sessions": 3, "for_seconds": 60}, **values)


def test_the_quota_policy_waits_for_for_seconds_then_trims_the_newest() -> None:
    snap = snapshot([10, 20, 30, 40, 50])  # s0 is the newest
    first = plan_of(quota(), snap, over_since=None)
    assert first.actions == ()
    assert first.over_since == NOW
    assert first.waiting is not None
    assert "in 60s" in first.waiting
    later = plan_of(quota(), snap, over_since=NOW - timedelta(seconds=60))
    assert stopped(later) == ["s0", "s1"]
    assert later.over_since == NOW - timedelta(seconds=60)


def test_the_quota_policy_can_trim_the_oldest_instead() -> None:
    plan = plan_of(
        quota(select="oldest"), snapshot([10, 20, 30, 40, 50]), over_since=NOW - timedelta(hours=1)
    )
    assert stopped(plan) == ["s4", "s3"]


def test_dropping_back_under_the_quota_resets_the_clock() -> None:
    plan = plan_of(quota(), snapshot([10, 20]), over_since=NOW - timedelta(hours=1))
    assert plan.over_since is None
    assert plan.actions == ()


def test_stale_data_keeps_the_quota_clock_running() -> None:
    since = NOW - timedelta(seconds=20)
    plan = plan_of(quota(), snapshot([1, 2, 3, 4], failed=True), over_since=since)
    assert plan.over_since == since


def test_the_quota_counts_sessions_without_ids_but_trims_only_stoppable_ones() -> None:
    snap = snapshot([10, 20, 30, 40], ids=[None, "a", "b", "c"])
    plan = plan_of(quota(), snap, over_since=NOW - timedelta(hours=1))
    assert stopped(plan) == ["a"]


def test_close_all_drains_once_the_count_held_long_enough() -> None:
    config = policy_config(
        action="close_all",
        match={"max_sessions": 2, "for_seconds": 0},
        apps=["frontdesk"],
        confirm_app_id="100",
    )
    plan = plan_of(config, snapshot([1, 2, 3]))
    assert [(a.action, a.session_id) for a in plan.actions] == [("close_all", None)]
    assert len(plan.matched) == 3
    assert plan_of(config, snapshot([1, 2])).actions == ()


# --------------------------------------------------------------------------- properties

ages = st.one_of(st.none(), st.floats(min_value=0, max_value=20_000))


@st.composite
def cases(draw: st.DrawFn) -> tuple[PolicyConfig, models.AppSnapshot, bool]:
    n = draw(st.integers(min_value=0, max_value=25))
    session_ages = draw(st.lists(ages, min_size=n, max_size=n))
    ids = [draw(st.sampled_from([None, f"vip-{i}", f"s{i}"])) for i in range(n)]
    by_age = draw(st.booleans())
    match: dict[str, Any] = (
        {"session_age_over_seconds": draw(st.floats(min_value=1, max_value=10_000))}
        if by_age
        else {
            "max_sessions": draw(st.integers(min_value=0, max_value=20)),
            "for_seconds": draw(st.sampled_from([0, 30])),
        }
    )
    config = policy_config(
        match=match,
        protect_sessions=draw(st.sampled_from([[], ["vip-*"]])),
        max_actions_per_cycle=draw(st.integers(min_value=1, max_value=30)),
        max_actions_percent=draw(st.floats(min_value=1, max_value=100)),
        dry_run=draw(st.booleans()),
        exclude_apps=draw(st.sampled_from([[], ["kiosk"], ["front*"]])),
        **({} if by_age else {"select": draw(st.sampled_from(["newest", "oldest"]))}),
    )
    snap = snapshot(
        session_ages,
        ids=ids,
        fetched_ago=draw(st.sampled_from([0, 10, 29, 31, 600])),
        failed=draw(st.booleans()),
    )
    return config, snap, draw(st.booleans())


@given(cases(), st.sampled_from([None, NOW - timedelta(seconds=45), NOW]))
def test_no_plan_ever_breaks_a_safety_invariant(
    case: tuple[PolicyConfig, models.AppSnapshot, bool], since: datetime | None
) -> None:
    config, snap, enforce = case
    result = evaluate(
        [config], APP, snap, now=NOW, enforcement_enabled=enforce, over_since={config.name: since}
    )
    if config.selects(APP) is False:
        assert result.policies == ()  # exclusions win
        return
    (plan,) = result.policies
    assert plan.dry_run == (config.dry_run or not enforce)
    if not snap.is_fresh(NOW):
        assert plan.actions == ()
        assert plan.abort is not None
    ids = [a.session_id for a in plan.actions]
    assert len(ids) == len(set(ids))
    assert snap.sessions is not None
    live = len(snap.sessions)
    for session_id in ids:
        assert session_id is not None  # never a session without an id
        assert not config.protects(session_id)  # never a protected session
    if plan.actions:
        assert plan.abort is None
        assert len(plan.actions) <= config.max_actions_per_cycle
        assert 100.0 * len(plan.actions) / live <= config.max_actions_percent + 1e-9
    if plan.abort is not None:
        assert plan.actions == ()


def test_a_quota_counts_each_listed_id_once() -> None:
    """Five sessions each listed twice are five sessions: max_sessions 8 stops nothing."""
    from duixwatch.config import SessionListMapping
    from duixwatch.duix.parse import parse_session_list

    items = [
        {"sessionId": f"{100 + i % 5}", "createTime": int(NOW.timestamp()) - 60} for i in range(10)
    ]
    listing = parse_session_list({"records": items}, mapping=SessionListMapping(), zone=UTC)
    snap = replace(snapshot([]), sessions=listing)
    quota = policy_config(match={"max_sessions": 8})
    assert plan_of(quota, snap).actions == ()
    assert plan_of(policy_config(match={"max_sessions": 4}), snap).actions != ()
