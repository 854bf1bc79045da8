"""The soak's own checks (`make soak`, bench/soak): each one passes on good input and fails on
a violating one, the chaos schedule keeps its promises, and the config variants load (or are
refused) as the soak expects. The whole soak runs in CI (`SOAK_SECONDS=120 make soak`)."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from bench.soak import chaos, checks, config, observe
from duixwatch.config import ConfigFileError, StateSettings, load_config

APP, OTHER = "1111111111111111111", "2222222222222222222"
LIST, NUMBER = "getconcurrentList", "getconcurrentNumber"
T0 = 1_800_000_000.0  # a whole second (cycle ids are UTC seconds)
MARGINS = checks.Margins(request_timeout=2.0, read_call_max=7.0, slack=1.0)


def window(
    kind: str,
    start: float,
    end: float,
    *,
    app: str = APP,
    endpoint: str = LIST,
    answered: bool = True,
) -> checks.Window:
    """A fault set at ``start`` (answered 0.05 s later) and cleared at ``end``."""
    return checks.Window(
        kind=kind,
        app=app,
        endpoint=endpoint,
        set_sent=start,
        set_done=start + 0.05 if answered else None,
        clear_sent=end,
        clear_done=end + 0.05,
        failing=kind in checks.FAILING_KINDS,
    )


def cycle_at(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ") + "-00000a"


def intent(ts: float, *, plan: float | None = None, **fields: Any) -> checks.Intent:
    values: dict[str, Any] = {
        "ts": ts,
        "cycle": cycle_at(ts if plan is None else plan),
        "policy": "max-age",
        "app": "frontdesk",
        "app_id": APP,
        "action": "stop_session",
        "session_id": "5" * 19,
        "reason": "age 130s > 120s",
    }
    values.update(fields)
    return checks.Intent(**values)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- fault windows


def test_a_failing_fault_in_force_over_the_whole_window_fails_every_read() -> None:
    hang = [window("hang", T0, T0 + 30)]
    assert checks.surely_failing(hang, APP, LIST, T0 + 1, T0 + 20)
    assert not checks.surely_failing(hang, APP, LIST, T0 - 1, T0 + 20)  # set after it began
    assert not checks.surely_failing(hang, APP, LIST, T0 + 1, T0 + 31)  # cleared before its end
    assert not checks.surely_failing(hang, APP, NUMBER, T0 + 1, T0 + 20)  # another endpoint
    assert not checks.surely_failing(hang, OTHER, LIST, T0 + 1, T0 + 20)  # another app


def test_latency_only_slows_and_an_unanswered_or_counted_fault_is_never_sure() -> None:
    assert not checks.surely_failing([window("latency", T0, T0 + 30)], APP, LIST, T0 + 1, T0 + 9)
    unsure = [window("status", T0, T0 + 30, answered=False)]
    assert not checks.surely_failing(unsure, APP, LIST, T0 + 1, T0 + 9)


def test_the_most_specific_fault_decides_as_in_the_simulator() -> None:
    every_app = window("status", T0, T0 + 30, app="*")
    assert checks.surely_failing([every_app], APP, LIST, T0 + 1, T0 + 9)
    # a latency fault on the app's own key wins over the failing wildcard for part of it
    slow = window("latency", T0 + 4, T0 + 6)
    assert not checks.surely_failing([every_app, slow], APP, LIST, T0 + 1, T0 + 9)
    # a failing specific fault that may or may not be there: the wildcard below it fails too
    maybe = window("malformed", T0 + 4, T0 + 6, answered=False)
    assert checks.surely_failing([every_app, maybe], APP, LIST, T0 + 1, T0 + 9)
    # two failing faults one after the other on the same key, with a gap between them
    gap = [window("code", T0, T0 + 5), window("hang", T0 + 6, T0 + 30)]
    assert not checks.surely_failing(gap, APP, LIST, T0 + 1, T0 + 9)


def test_a_stop_planned_while_every_read_failed_is_a_violation() -> None:
    hang = [window("hang", T0, T0 + 60)]
    during = intent(T0 + 30.2, plan=T0 + 30)
    found = checks.check_stops_on_failing_data([during], hang, MARGINS)
    assert [v.check for v in found] == ["stop on failing data"]
    # planned 2.5 s after the fault was set: a poll begun before it may have read good data
    early = intent(T0 + 2.5, plan=T0 + 2)
    assert checks.check_stops_on_failing_data([early], hang, MARGINS) == []
    # the number is read before the list: its margin is a whole list call more
    number = [window("status", T0, T0 + 60, endpoint=NUMBER)]
    assert (
        checks.check_stops_on_failing_data([intent(T0 + 8.1, plan=T0 + 8)], number, MARGINS) == []
    )
    assert checks.check_stops_on_failing_data([intent(T0 + 20.1, plan=T0 + 20)], number, MARGINS)


def test_the_failing_data_check_covers_only_faults_longer_than_its_margin() -> None:
    long_hang = [window("hang", T0, T0 + 30)]
    covered = checks.judged_seconds(long_hang, [APP, OTHER], MARGINS, start=T0, end=T0 + 60)
    assert covered == pytest.approx(30 - 3 - 1, abs=1.5)  # list margin 3 s, the plan's second
    short = [window("status", T0, T0 + 2.5)]
    assert checks.judged_seconds(short, [APP], MARGINS, start=T0, end=T0 + 60) == 0


def test_the_issue_lag_is_a_lower_bound_on_the_datas_age() -> None:
    assert checks.issue_lags([intent(T0 + 4.5, plan=T0)]) == [pytest.approx(3.5)]


# --------------------------------------------------------------------------- intents


def session(sid: str, closed_at: float, app_id: str = APP) -> dict[str, Any]:
    return {"session_id": sid, "app_id": app_id, "closed_at": iso(closed_at)}


def test_every_stop_the_simulator_received_needs_an_intent_written_before() -> None:
    sid = "5" * 19
    stopped = [session(sid, T0 + 1)]
    before = [intent(T0 + 0.9)]
    requests = {(APP, "sessionStop"): 2, (APP, LIST): 50}  # one re-sent after a token rejection
    assert checks.check_stops_have_intents(stopped, [], before, requests) == []
    assert checks.check_stops_have_intents(stopped, [], [], requests)  # none at all
    late = checks.check_stops_have_intents(stopped, [], [intent(T0 + 1.5)], requests)
    assert "after it closed" in late[0].detail
    other_app = [intent(T0 + 0.9, app_id=OTHER)]
    assert checks.check_stops_have_intents(stopped, [], other_app, {})
    too_many = checks.check_stops_have_intents(stopped, [], before, {(APP, "sessionStop"): 3})
    assert "3 sessionStop requests for 1 intents" in too_many[0].detail


def test_a_drained_session_needs_a_close_all_intent_of_its_app() -> None:
    drained = [session("6" * 19, T0 + 3)]
    close_all = intent(T0 + 2, action="close_all", session_id=None, policy="emergency-drain")
    assert checks.check_stops_have_intents([], drained, [close_all], {}) == []
    assert checks.check_stops_have_intents([], drained, [intent(T0 + 2)], {})  # a stop: no
    no_request_record = {(APP, "distroyCallSessionsByAppId"): 1}
    assert checks.check_stops_have_intents([], [], [], no_request_record)


def test_intents_are_read_from_audit_records() -> None:
    records = [
        {"ts": "2027-01-15T08:00:00.250000Z", "cycle": "20270115T080000Z-abcdef", "event": e}
        | {"policy": "p", "app": "a", "app_id": APP, "action": "stop_session"}
        | {"session_id": "1", "reason": "r"}
        for e in ("intent", "outcome")
    ]
    (only,) = checks.parse_intents(records)
    assert only.ts - checks.plan_second(only.cycle) == pytest.approx(0.25)


# --------------------------------------------------------------------------- recovery


def scrape(t: float, up: float | None, **gauges: float) -> checks.Scrape:
    return checks.Scrape(
        t,
        t + 0.05,
        True,
        {} if up is None else {"frontdesk": up},
        gauges.get("ok"),
        gauges.get("ts"),
    )


def test_an_app_must_be_back_up_within_the_allowance_after_its_faults_end() -> None:
    faults = [window("status", T0, T0 + 10, endpoint="*")]
    apps = {"frontdesk": APP}
    quick = [scrape(T0 + 10.5, 0.0), scrape(T0 + 12.0, 1.0)]
    found, bad = checks.recoveries(faults, quick, apps, allowance=9.9, excluded=[], end=T0 + 60)
    assert bad == []
    assert found[0].seconds == pytest.approx(2.0)
    slow = [scrape(T0 + 15.0, 0.0), scrape(T0 + 21.0, None), scrape(T0 + 25.0, 1.0)]
    found, bad = checks.recoveries(faults, slow, apps, allowance=9.9, excluded=[], end=T0 + 60)
    assert [v.check for v in bad] == ["recovery"]
    assert found[0].seconds == pytest.approx(15.0)


def test_a_recovery_is_not_judged_across_the_next_fault_the_restart_or_the_end() -> None:
    apps = {"frontdesk": APP}
    down = [scrape(T0 + 25.0, 0.0)]
    two = [window("hang", T0, T0 + 10), window("code", T0 + 15, T0 + 30, endpoint=NUMBER)]
    found, bad = checks.recoveries(two, down, apps, allowance=9.9, excluded=[], end=T0 + 99)
    assert (found[0].why, bad) == ("another fault began", [])
    one = [window("hang", T0, T0 + 10)]
    found, bad = checks.recoveries(
        one, down, apps, allowance=9.9, excluded=[(T0 + 12, T0 + 16)], end=T0 + 99
    )
    assert (found[0].why, bad) == ("daemon restarting", [])
    found, _ = checks.recoveries(one, down, apps, allowance=9.9, excluded=[], end=T0 + 15)
    assert found[0].why == "run ended"
    # faults on the writes do not take an app down: nothing to recover from
    stop_fault = [window("hang", T0, T0 + 10, endpoint="sessionStop")]
    assert checks.recoveries(stop_fault, down, apps, allowance=9.9, excluded=[], end=T0 + 99) == (
        [],
        [],
    )


# --------------------------------------------------------------------------- reloads


def test_a_bad_reload_must_show_0_and_a_good_one_1_with_a_new_time() -> None:
    bad = checks.Reload(T0 + 10, False, "unknown_key", 125)
    good = checks.Reload(T0 + 15, True, "threshold 120", 120)
    seen = [
        scrape(T0 + 10.5, 1.0, ok=0.0, ts=T0),
        scrape(T0 + 15.5, 1.0, ok=1.0, ts=T0 + 15.1),
    ]
    assert checks.check_reloads([bad, good], seen, deadline=10) == []
    never_zero = [scrape(T0 + 10.5, 1.0, ok=1.0, ts=T0), seen[1]]
    assert checks.check_reloads([bad, good], never_zero, deadline=10)
    old_time = [seen[0], scrape(T0 + 15.5, 1.0, ok=1.0, ts=T0)]
    (found,) = checks.check_reloads([bad, good], old_time, deadline=10)
    assert "good reload" in found.detail


def test_a_reload_sent_late_and_superseded_at_once_is_not_judged_but_the_next_one_is() -> None:
    # the soak was busy: the bad file and its fix went out 0.1 s apart, before any scrape
    bad = checks.Reload(T0 + 10, False, "wrong_type", 125)
    fix = checks.Reload(T0 + 10.1, True, "threshold 120", 120)
    assert checks.superseded([bad, fix]) == [bad]
    took_it = [scrape(T0 + 10.5, 1.0, ok=1.0, ts=T0 + 10.2)]
    assert checks.check_reloads([bad, fix], took_it, deadline=10) == []
    (found,) = checks.check_reloads(
        [bad, fix], [scrape(T0 + 10.5, 1.0, ok=0.0, ts=T0)], deadline=10
    )
    assert found.at == fix.at  # the fix never landed: that is still a violation
    on_time = checks.Reload(T0 + 10 + checks.health.SUPERSEDED_SECONDS, True, "threshold 120", 120)
    assert checks.superseded([bad, on_time]) == []


def test_a_stop_must_name_the_threshold_in_force_and_a_bad_reload_changes_none() -> None:
    good = checks.Reload(T0 + 20, True, "threshold 125", 125)
    bad = checks.Reload(T0 + 40, False, "wrong_type", 120)
    seen = [scrape(T0 + 20.5, 1.0, ok=1.0, ts=T0 + 20.1), scrape(T0 + 40.5, 1.0, ok=0.0, ts=T0)]
    spans = checks.in_force_spans([good, bad], seen, initial=120, start=T0, margin=0.5)
    assert spans == [(T0, T0 + 20, 120.0), (T0 + 21.05, float("inf"), 125.0)]
    fine = [intent(T0 + 5), intent(T0 + 20.7), intent(T0 + 30, reason="age 130s > 125s")]
    assert checks.check_thresholds(fine, "max-age", spans) == []  # 20.7: not judged yet
    stale = [intent(T0 + 45, reason="age 130s > 120s")]  # as if the bad file had been taken
    assert [v.check for v in checks.check_thresholds(stale, "max-age", spans)] == [
        "config in force"
    ]


# --------------------------------------------------------------------------- secrets


def test_secrets_are_found_by_name_never_shown_and_tokens_by_shape() -> None:
    key = "sim-" + "ab" * 16
    secrets = {"app key of frontdesk": key.encode()}
    assert checks.find_secrets(b'duix_up{app="frontdesk"} 1.0\n', secrets) == []
    found = checks.find_secrets(f"error: key {key} rejected".encode(), secrets)
    assert found == ["app key of frontdesk"]
    token = jwt.encode({"appId": APP, "iat": 1, "exp": 2}, key, algorithm="HS256")
    (shape,) = checks.find_secrets(f'{{"token": "{token}"}}'.encode(), secrets)
    assert shape.startswith("a JWT at byte ")
    assert key not in shape


def test_what_the_soak_prints_has_every_secret_replaced_by_its_name() -> None:
    key = "sim-" + "cd" * 16
    token = jwt.encode({"appId": APP, "iat": 1, "exp": 2}, key, algorithm="HS256")
    secrets = {"app key of support": key.encode(), "app key of support (tail)": key[4:].encode()}
    line = f'{{"detail": "k={key}", "also": "{key[4:]}", "token": "{token}"}}'
    shown = checks.redact(line, secrets)
    assert checks.find_secrets(shown.encode(), secrets) == []
    assert "[app key of support]" in shown
    assert "[a JWT]" in shown


def test_the_soak_config_names_each_app_key_as_a_secret() -> None:
    printed = printed_config()
    names = config.SoakConfig(printed, listen="127.0.0.1:1", state_dir=Path("s")).secrets()
    assert set(names) == {
        "app key of frontdesk",
        "app key of frontdesk (without its prefix)",
        "app key of support",
        "app key of support (without its prefix)",
    }


# --------------------------------------------------------------------------- memory


def test_a_flat_rss_passes_and_a_growing_one_fails_when_the_window_is_long_enough() -> None:
    rng = random.Random(3)
    flat = [(T0 + t, 70_000_000 + rng.randrange(-400_000, 400_000)) for t in range(900)]
    fit = checks.fit_rss(flat, warmup_seconds=180)
    assert fit is not None
    assert abs(fit.mb_per_10_minutes) < 0.3
    assert checks.judge_rss(fit, limit_mb_per_10_minutes=1, min_seconds=600)[1] == []
    leak = [(t, b + int((t - T0) * 2_000_000 / 600)) for t, b in flat]  # 2 MB / 10 min
    fit = checks.fit_rss(leak, warmup_seconds=180)
    assert fit is not None
    assert fit.mb_per_10_minutes == pytest.approx(2.0, abs=0.3)
    verdict, found = checks.judge_rss(fit, limit_mb_per_10_minutes=1, min_seconds=600)
    assert verdict.startswith("FAIL")
    assert [v.check for v in found] == ["rss slope"]
    short = checks.fit_rss(leak[:200], warmup_seconds=30)
    verdict, found = checks.judge_rss(short, limit_mb_per_10_minutes=1, min_seconds=600)
    assert (verdict.startswith("not judged"), found) == (True, [])
    assert checks.fit_rss(leak[:10], warmup_seconds=30) is None


# --------------------------------------------------------------------------- files


def test_audit_files_over_their_bounds_are_violations_and_without_bounds_only_sizes() -> None:
    within = {"audit.jsonl": 1000 + 300, "audit.jsonl.1": 1000, "state.sqlite3": 10**9}
    bounds = checks.FileBounds(audit_max_bytes=1000, audit_keep=2)
    assert checks.check_file_bounds(within, bounds, longest_line=300) == []
    big = {**within, "audit.jsonl": 1301}
    assert checks.check_file_bounds(big, bounds, longest_line=300)
    many = {**within, "audit.jsonl.2": 10, "audit.jsonl.3": 10}
    (found,) = checks.check_file_bounds(many, bounds, longest_line=300)
    assert "3 rotated audit files" in found.detail
    assert checks.check_file_bounds(big, checks.FileBounds(), longest_line=300) == []


def test_the_audit_tail_follows_a_rotation_without_losing_or_repeating_a_line(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    lines = [json.dumps({"n": n}) + "\n" for n in range(5)]
    log.write_text(lines[0] + lines[1] + lines[2][:5])  # a line still being written
    tail = observe.AuditTail(tmp_path)
    tail.read()
    assert [r["n"] for r in tail.records] == [0, 1]
    with log.open("a") as f:
        f.write(lines[2][5:])
    log.rename(tmp_path / "audit.jsonl.1")  # rotated: a new file starts
    (tmp_path / "audit.jsonl").write_text(lines[3] + lines[4])
    tail.read()
    tail.read()
    assert [r["n"] for r in tail.records] == [0, 1, 2, 3, 4]
    assert tail.unparsed == []


def test_the_audit_tail_reads_a_new_file_that_got_a_deleted_files_inode(tmp_path: Path) -> None:
    """ext4 gives the next file created the inode just freed: an offset kept per inode alone
    skipped the start of every new audit.jsonl after the oldest rotated file was deleted."""
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps({"n": n, "pad": "x" * 50}) + "\n" for n in range(4)))
    tail = observe.AuditTail(tmp_path)
    tail.read()
    log.unlink()  # the oldest file deleted, a new one created (its inode, on ext4)
    log.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(4, 9)))
    tail.read()
    assert [r["n"] for r in tail.records] == list(range(9))


def test_scrapes_are_read_for_duix_up_and_the_reload_gauges() -> None:
    text = "\n".join(
        [
            "# HELP duix_up x",
            'duix_up{app="frontdesk"} 1.0',
            'duix_up{app="bank-teller"} 0.0',
            'duix_app_sessions{app="frontdesk"} 4.0',
            "duixwatch_config_last_reload_successful 0.0",
            "duixwatch_config_last_reload_success_timestamp_seconds 1.8e+09",
        ]
    )
    s = observe.parse_scrape(T0, T0 + 0.1, text)
    assert s.up == {"frontdesk": 1.0, "bank-teller": 0.0}
    assert (s.reload_ok, s.reload_success_ts) == (0.0, 1.8e9)


# --------------------------------------------------------------------------- the schedule


APPS8 = [f"app-{n}" for n in range(8)]


def build(seed: int = 1, seconds: float = 120) -> chaos.Schedule:
    return chaos.build(
        seed, seconds=seconds, apps=APPS8, thresholds=(120, 125), start=5, quiet_tail=15
    )


def test_the_schedule_is_the_seeds_and_injects_every_kind_even_in_120_s() -> None:
    assert build(7) == build(7)
    assert build(7) != build(8)
    for seed in range(1, 6):
        s = build(seed)
        assert set(Counter(f.kind for f in s.faults)) == set(chaos.KINDS)
        assert all(f.at >= 5 and f.at + f.seconds <= 105 for f in s.faults)
        assert s.kill_at is not None


def test_one_fault_key_carries_one_fault_at_a_time_and_delays_stay_below_the_timeout() -> None:
    s = build(3, seconds=1800)
    by_key: dict[tuple[str, str], list[chaos.FaultPlan]] = {}
    for f in s.faults:
        by_key.setdefault(f.key, []).append(f)
        delay = f.body.get("latency_seconds", 0) + f.body.get("jitter_seconds", 0)
        assert delay < chaos.MAX_DELAY_SECONDS < config.REQUEST_TIMEOUT_SECONDS
    for faults in by_key.values():
        for a, b in itertools.pairwise(faults):
            assert a.at + a.seconds + 1.0 <= b.at
    overlapping = sum(
        1 for a, b in zip(s.faults, s.faults[1:], strict=False) if b.at < a.at + a.seconds
    )
    assert overlapping > len(s.faults) / 3  # they overlap


def test_reloads_alternate_and_the_kill_meets_neither_a_reload_nor_a_bad_file() -> None:
    for seed, seconds in [(1, 120), (2, 120), (3, 1800)]:
        s = build(seed, seconds)
        goods = [r for r in s.reloads if r.good]
        bads = [r for r in s.reloads if not r.good]
        assert bads
        assert {r.variant for r in bads} <= set(chaos.BAD_VARIANTS)
        for r, nxt in zip(s.reloads, s.reloads[1:], strict=False):
            if not r.good:
                assert nxt.good  # a bad file is put right by the next reload
                assert nxt.at - r.at <= 6.0
        # every good reload flips the threshold, starting away from the one the daemon starts
        assert [r.threshold for r in goods][:2] == [125, 120]
        assert all(a.threshold != b.threshold for a, b in itertools.pairwise(goods))
        assert s.kill_at is not None
        assert all(abs(r.at - s.kill_at) >= chaos.KILL_CLEARANCE_SECONDS for r in s.reloads)
    assert len(build(3, 1800).reloads) > 60


# --------------------------------------------------------------------------- the config


def printed_config() -> dict[str, Any]:
    return {
        "duix": {"base_url": "http://127.0.0.1:1", "timezone": "Asia/Shanghai"},
        "apps": [
            {"app_id": APP, "name": "frontdesk", "app_key": "sim-" + "1a" * 16},
            {"app_id": OTHER, "name": "support", "app_key": "sim-" + "2b" * 16},
        ],
    }


def test_the_good_file_loads_and_every_bad_one_is_refused_without_its_key(
    tmp_path: Path,
) -> None:
    soak = config.SoakConfig(printed_config(), listen="127.0.0.1:1", state_dir=tmp_path / "s")
    path = tmp_path / "duixwatch.yaml"
    path.write_text(soak.good(125))
    loaded = load_config(path, environ={})
    assert loaded.enforcement.enabled
    assert [p.name for p in loaded.policies] == [
        config.AGE_POLICY,
        "quota-guard",
        "emergency-drain",
    ]
    for variant in chaos.BAD_VARIANTS:
        path.write_text(soak.bad(variant, 120))
        with pytest.raises(ConfigFileError) as refused:
            load_config(path, environ={})
        message = str(refused.value)
        assert checks.find_secrets(message.encode(), soak.secrets()) == [], variant
    with pytest.raises(ValueError, match="unknown bad variant"):
        soak.bad("nope", 120)


def test_the_audit_bounds_are_used_exactly_when_the_daemon_has_them(tmp_path: Path) -> None:
    soak = config.SoakConfig(printed_config(), listen="127.0.0.1:1", state_dir=tmp_path / "s")
    doc = soak.document(120)
    has_them = {"audit_max_bytes", "audit_keep"} <= set(StateSettings.model_fields)
    assert config.audit_bounds_supported(doc, tmp_path / "probe.yaml") is has_them
    doc["enforcement"]["colour"] = "red"  # refused for another reason: an error, not a "no"
    with pytest.raises(ConfigFileError, match="colour"):
        config.audit_bounds_supported(doc, tmp_path / "probe.yaml")


def test_the_allowances_follow_from_the_config() -> None:
    a = config.allowances()
    assert a.read_call_max == pytest.approx(3 * 2.0 + 1.0)
    # in flight (2 + 1) + backoff cap with jitter (4 x 1.1) + interval + scrape + slack
    assert a.recovery == pytest.approx(3.0 + 4.4 + 1.0 + 0.5 + 1.0)
