"""export.report: the numbers of ``duixwatch report`` and their text, JSON and HTML renderings."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from duixwatch.export import report, report_page
from duixwatch.export.report import Threshold
from duixwatch.policy.schema import PolicyConfig
from duixwatch.watch.lifecycle import DURATION_BUCKETS
from duixwatch.watch.state import HistoryRow

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class App:
    """An APP as policies select it."""

    name = "desk"
    app_id = "1377185422953811968"


def row(
    minutes: float,
    *,
    start: datetime = T0,
    app: str = "desk",
    closed_by: str = "platform",
    start_known: bool = True,
) -> HistoryRow:
    return HistoryRow(
        app=app,
        session_id=f"s-{start.isoformat()}-{minutes}",
        started=start,
        ended=start + timedelta(minutes=minutes),
        closed_by=closed_by,
        policy="max-age" if closed_by == "policy" else None,
        start_known=start_known,
    )


def one_app(rows: list[HistoryRow], *thresholds: Threshold) -> report.Report:
    return report.Report(
        since=T0 - timedelta(days=7),
        until=T0 + timedelta(days=1),
        apps=(report.summarize("desk", rows, thresholds, app_id="1377185422953811968"),),
    )


# ----------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604800), ("12h", 43200), ("30m", 1800), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400)],
)
def test_durations_read_as_the_cli_writes_them(text: str, seconds: float) -> None:
    assert report.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "7x", "h", "-1h", "0m", "1h 30m", "1e3s", "30m,"])
def test_a_duration_without_a_known_unit_or_not_positive_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        report.parse_duration(text)


@given(st.integers(min_value=1, max_value=400 * 86400))
def test_a_formatted_duration_reads_back_as_the_same_seconds(seconds: int) -> None:
    assert report.parse_duration(report.format_duration(seconds)) == seconds


def test_thresholds_are_a_comma_list_with_duplicates_once() -> None:
    assert report.parse_thresholds("30m,45m,1800s,1h") == [
        Threshold(1800),
        Threshold(2700),
        Threshold(3600),
    ]
    with pytest.raises(ValueError, match="'forever'"):
        report.parse_thresholds("30m,forever")


def test_the_age_policies_that_select_an_app_give_its_thresholds() -> None:
    policies = [
        PolicyConfig.model_validate(
            {
                "name": "max-age",
                "match": {"session_age_over_seconds": 2700},
                "action": "stop_sessions",
            }
        ),
        PolicyConfig.model_validate(
            {
                "name": "kiosks-only",
                "apps": ["kiosk-*"],
                "match": {"session_age_over_seconds": 600},
                "action": "stop_sessions",
            }
        ),
        PolicyConfig.model_validate(
            {"name": "quota", "match": {"max_sessions": 3}, "action": "stop_sessions"}
        ),
    ]
    assert report.policy_thresholds(policies, App()) == [Threshold(2700, policy="max-age")]


# ----------------------------------------------------------------------- numbers


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert report.nearest_rank(values, 50) == 5  # ceil(5.0) = 5th
    assert report.nearest_rank(values, 90) == 9
    assert report.nearest_rank(values, 99) == 10  # ceil(9.9) = 10th
    assert report.nearest_rank(values, 100) == 10
    assert report.nearest_rank([7.0], 50) == 7
    assert report.nearest_rank([1.0, 2.0, 3.0, 4.0], 50) == 2  # no interpolation to 2.5


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1), st.integers(1, 100))
def test_a_nearest_rank_percentile_is_the_smallest_value_covering_p_percent(
    values: list[float], percent: int
) -> None:
    ordered = sorted(values)
    value = report.nearest_rank(ordered, percent)
    assert value in ordered
    assert sum(1 for v in ordered if v <= value) * 100 >= percent * len(ordered)
    assert sum(1 for v in ordered if v < value) * 100 < percent * len(ordered)


def test_summary_counts_sessions_minutes_and_percentiles() -> None:
    rows = [row(m) for m in (1, 2, 3, 4, 5, 6, 7, 8, 9, 100)]
    rows[-1] = row(100, closed_by="policy", start_known=False)
    a = report.summarize("desk", rows, [])
    assert (a.sessions, a.closed_by_policy, a.start_unknown) == (10, 1, 1)
    assert a.session_minutes == pytest.approx(145)
    assert a.durations == report.Percentiles(p50=300, p90=540, p99=6000, max=6000)


def test_an_app_without_sessions_has_no_percentiles_and_no_busiest_hour() -> None:
    a = report.summarize("desk", [], [Threshold(60)])
    assert (a.sessions, a.session_minutes, a.durations, a.busiest) == (0, 0, None, None)
    assert a.backtest == (report.BacktestRow(Threshold(60), 0, 0.0),)


def test_the_busiest_hour_splits_a_session_across_midnight() -> None:
    """23:30 → 01:10 gives 30 min to 23h, 60 to 0h and 10 to 1h."""
    late = datetime(2025, 3, 1, 23, 30, tzinfo=UTC)
    minutes = report.hourly_minutes([row(100, start=late)])
    assert minutes[23] == pytest.approx(30)
    assert minutes[0] == pytest.approx(60)
    assert minutes[1] == pytest.approx(10)
    assert sum(minutes) == pytest.approx(100)
    assert report.busiest_hour([row(100, start=late)]) == report.BusiestHour(0, 60)


def test_the_busiest_hour_is_in_utc_whatever_the_rows_zone() -> None:
    shanghai = datetime(2025, 3, 2, 17, 15, tzinfo=ZoneInfo("Asia/Shanghai"))  # 09:15 UTC
    busiest = report.busiest_hour([row(30, start=shanghai)])
    assert busiest == report.BusiestHour(9, 30)


def test_a_session_longer_than_a_day_counts_in_every_hour() -> None:
    minutes = report.hourly_minutes([row(2 * 24 * 60 + 15, start=T0)])  # two days and 15 min
    assert minutes[12] == pytest.approx(2 * 60 + 15)
    assert all(minutes[h] == pytest.approx(120) for h in range(24) if h != 12)


def test_the_busiest_hour_goes_to_the_earlier_hour_on_a_tie() -> None:
    rows = [row(60, start=T0.replace(hour=7)), row(60, start=T0.replace(hour=3))]
    assert report.busiest_hour(rows) == report.BusiestHour(3, 60)


@given(
    st.lists(
        st.tuples(st.integers(0, 10 * 86400), st.integers(0, 3 * 86400)), min_size=1, max_size=20
    )
)
def test_the_hours_share_exactly_the_session_minutes(spans: list[tuple[int, int]]) -> None:
    rows = [
        HistoryRow("desk", f"s{i}", T0 + timedelta(seconds=a), T0 + timedelta(seconds=a + d), "x")
        for i, (a, d) in enumerate(spans)
    ]
    assert sum(report.hourly_minutes(rows)) == pytest.approx(
        report.summarize("desk", rows, []).session_minutes
    )


def test_the_backtest_counts_sessions_over_the_threshold_and_the_minutes_beyond_it() -> None:
    rows = [row(m) for m in (10, 30, 31, 45, 90, 240)]
    a = report.summarize("desk", rows, [Threshold(2700, policy="max-age"), Threshold(1800)])
    assert a.backtest == (
        # 31, 45, 90, 240 are over 30 (30 itself is not): 1 + 15 + 60 + 210 minutes
        report.BacktestRow(Threshold(1800), 4, 286.0),
        # 90 and 240 are over 45: 45 + 195
        report.BacktestRow(Threshold(2700, policy="max-age"), 2, 240.0),
    )


def test_the_backtest_leaves_out_the_sessions_a_policy_protects() -> None:
    """A policy's ``protect_sessions`` would never have closed those: the backtest says so."""
    vip, other = replace(row(90), session_id="1860-vip"), replace(row(240), session_id="42")
    policy = PolicyConfig.model_validate(
        {
            "name": "max-age",
            "match": {"session_age_over_seconds": 2700},
            "action": "stop_sessions",
            "protect_sessions": ["1860*"],
        }
    )
    (threshold,) = report.policy_thresholds([policy], App())
    a = report.summarize("desk", [vip, other], [threshold, Threshold(2700)])
    by_policy = {b.threshold.policy: b for b in a.backtest}
    assert (by_policy["max-age"].sessions, by_policy["max-age"].session_minutes_saved) == (
        1,
        195.0,
    )
    # a --threshold has no protections: both
    assert (by_policy[None].sessions, by_policy[None].session_minutes_saved) == (2, 240.0)


def test_the_histogram_uses_the_duration_metric_buckets_upper_bound_included() -> None:
    counts = report.histogram([0, 60, 60.5, 2700, 86400, 86401])
    assert len(counts) == len(DURATION_BUCKETS) + 1
    assert counts[0] == 2  # 0 and 60 (le="60")
    assert counts[1] == 1  # 60.5
    assert counts[DURATION_BUCKETS.index(2700)] == 1
    assert counts[-2:] == (1, 1)  # le="86400" and +Inf


# ----------------------------------------------------------------------- renderings


def test_the_histogram_fits_80_columns_and_marks_each_threshold_on_the_first_row_it_closes() -> (
    None
):
    rows = [row(m) for m in (0.5, 3, 3, 8, 20, 20, 20, 40, 50, 70, 300)]
    a = one_app(rows, Threshold(2700, policy="x" * 63), Threshold(1800), Threshold(2000)).apps[0]
    lines = report.render_histogram(a)
    assert all(len(line) <= report.COLUMNS for line in lines)
    marked = {line.split()[0]: line for line in lines if "◀" in line}
    assert set(marked) == {"30m-45m", "45m-1h"}
    # 30m is the upper bound of 15m-30m: all of 30m-45m would be closed, so it is marked there,
    # with 2000s, which falls inside that row.
    assert "> 30m, > 33m20s" in marked["30m-45m"]
    assert marked["45m-1h"].rstrip().endswith("…")  # the long policy name is cut
    by_label = {line.split()[0]: line for line in lines[1:]}
    assert by_label["15m-30m"].split()[1] == "3"
    assert "█" * report._BAR_CELLS in by_label["15m-30m"]  # the biggest bucket, a full bar
    assert len(by_label["8h-1d"].split()) == 2  # no sessions: no bar


def test_the_text_report_has_the_numbers_and_the_backtest() -> None:
    rows = [row(m, start=T0.replace(hour=22)) for m in (10, 20, 30, 60)]
    text = report.render_text(one_app(rows, Threshold(1800, policy="max-age")))
    assert "desk (1377185422953811968)" in text
    assert "4 sessions (0 closed by a policy) · 120.0 session-minutes" in text
    assert "p50 20m  p90 1h  p99 1h  max 1h" in text
    assert "busiest hour  22:00-23:00 UTC · 120.0 session-minutes" in text
    assert re.search(r"> 30m\s+max-age\s+1\s+25\.0 %\s+30\.0\s+25\.0 %", text)


def test_an_app_without_sessions_says_so() -> None:
    text = report.render_text(one_app([]))
    assert "no sessions ended in this window" in text


def test_the_json_document_has_the_numbers_and_the_backtest_rows() -> None:
    rows = [row(m) for m in (10, 20, 30, 60)]
    doc = report.report_json(one_app(rows, Threshold(1800, policy="max-age"), Threshold(3600)))
    assert doc["percentiles"] == "nearest-rank"
    assert doc["since"] == "2025-02-22T12:00:00+00:00"
    (app,) = doc["apps"]
    assert app["sessions"] == 4
    assert app["session_minutes"] == 120
    assert app["duration_seconds"] == {"p50": 1200, "p90": 3600, "p99": 3600, "max": 3600}
    assert app["busiest_hour"] == {"hour_utc": 12, "session_minutes": 120}
    assert app["closed_by"] == {"policy": 0, "platform": 4}
    assert sum(b["sessions"] for b in app["histogram"]) == 4
    assert app["histogram"][-1]["le_seconds"] is None
    assert app["backtest"] == [
        {
            "threshold_seconds": 1800,
            "policy": "max-age",
            "sessions": 1,
            "sessions_percent": 25.0,
            "session_minutes_saved": 30.0,
            "session_minutes_percent": 25.0,
        },
        {
            "threshold_seconds": 3600,
            "policy": None,
            "sessions": 0,
            "sessions_percent": 0.0,
            "session_minutes_saved": 0.0,
            "session_minutes_percent": 0.0,
        },
    ]


def test_the_html_page_is_one_file_with_an_svg_chart_and_escaped_names() -> None:
    rows = [row(m, app="<b>desk</b>") for m in (10, 20, 50)]
    evil = Threshold(1800, policy='"><script>alert(1)</script>')
    page = report_page.render_html(
        report.Report(
            since=T0 - timedelta(days=7),
            until=T0,
            apps=(report.summarize("<b>desk</b>", rows, [evil], app_id="1&2"),),
        )
    )
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 1
    assert page.count("</svg>") == 1
    assert "<script" not in page
    assert "<b>" not in page
    assert "&lt;b&gt;desk&lt;/b&gt;" in page
    assert "&quot;&gt;&lt;script&gt;" in page
    assert "1&amp;2" in page
    # self-contained: nothing is fetched (the one URL is the SVG namespace, a name)
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]
    assert not re.search(r"\b(src|href)=|url\(|@import", page)
    assert "default-src 'none'" in page  # and the CSP forbids it anyway
    # one dashed line per threshold, where it cuts the axis: 30m is the 6th bucket edge
    lines = re.findall(r'<line x1="([\d.]+)"[^>]*stroke-dasharray', page)
    assert len(lines) == 1
    assert float(lines[0]) == 30 + 56 * (DURATION_BUCKETS.index(1800) + 1)


def test_the_html_page_of_an_app_without_sessions_has_no_chart() -> None:
    page = report_page.render_html(one_app([]))
    assert "<svg" not in page
    assert "No sessions ended" in page
