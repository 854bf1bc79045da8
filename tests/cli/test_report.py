"""``duixwatch report``: the history of a real state database, as text, JSON and HTML; exit 2
on usage and config errors."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from duixwatch.cli import main
from duixwatch.watch.state import HistoryRow, StateStore

NOW = datetime.now(UTC)
DESK_ID = "1377185422953811968"


def ended(app: str, n: int, minutes: float, *, days_ago: float = 1.0) -> HistoryRow:
    # on the hour: the sessions of up to an hour lie in the hour before it
    end = (NOW - timedelta(days=days_ago)).replace(minute=0, second=0, microsecond=0)
    return HistoryRow(
        app=app,
        session_id=f"{app}-{n}",
        started=end - timedelta(minutes=minutes),
        ended=end,
        closed_by="platform",
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Two apps, an age policy for every app and one for the kiosk only; their history: desk 10,
    20, 30, 60 minutes (and a 500-minute session 10 days ago), kiosk 240, a removed app 5."""
    state = tmp_path / "state"
    store = StateStore(state)
    store.record_ended(
        [
            *(ended("desk", i, m) for i, m in enumerate((10, 20, 30, 60))),
            ended("desk", 9, 500, days_ago=10),
            ended("kiosk", 1, 240),
            ended("gone", 1, 5),
        ]
    )
    store.close()
    doc: dict[str, Any] = {
        "apps": [
            {"app_id": DESK_ID, "name": "desk", "app_key": "k"},
            {"app_id": "1377185422953811969", "name": "kiosk", "app_key": "k"},
        ],
        "state": {"dir": str(state)},
        "policies": [
            {
                "name": "max-age",
                "match": {"session_age_over_seconds": 2700},
                "action": "stop_sessions",
            },
            {
                "name": "kiosk-night",
                "apps": ["kiosk"],
                "match": {"session_age_over_seconds": 14400},
                "action": "stop_sessions",
            },
            {"name": "quota", "match": {"max_sessions": 5}, "action": "stop_sessions"},
        ],
    }
    path = tmp_path / "duixwatch.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["report", *argv], out=out)
    return code, out.getvalue()


def by_app(text: str) -> dict[str, dict[str, Any]]:
    return {a["app"]: a for a in json.loads(text)["apps"]}


def test_the_text_report_shows_every_app_with_its_histogram_and_backtest(config: Path) -> None:
    code, text = run("-c", str(config), "--threshold", "15m,1h")
    assert code == 0, text
    assert f"desk ({DESK_ID})" in text
    assert "4 sessions (0 closed by a policy) · 120.0 session-minutes" in text
    assert "◀ > 45m max-age" in text
    lines = text.splitlines()
    backtest = [line.split() for line in lines if line.startswith("  > ")]
    assert backtest[:3] == [
        [">", "15m", "--threshold", "3", "75.0", "%", "65.0", "54.2", "%"],
        [">", "45m", "max-age", "1", "25.0", "%", "15.0", "12.5", "%"],
        [">", "1h", "--threshold", "0", "0.0", "%", "0.0", "0.0", "%"],
    ]
    assert "kiosk-night" in text
    assert "\ngone\n" in text  # no longer configured: still reported, without an app id
    assert all(len(line) <= 80 for line in lines if "█" in line or "◀" in line)


def test_json_has_the_numbers_and_the_backtest_rows_of_each_app(config: Path) -> None:
    code, text = run("-c", str(config), "-o", "json", "--threshold", "30m")
    assert code == 0
    doc = json.loads(text)
    assert doc["percentiles"] == "nearest-rank"
    assert datetime.fromisoformat(doc["until"]) - datetime.fromisoformat(doc["since"]) == (
        timedelta(days=7)
    )
    apps = by_app(text)
    assert list(apps) == ["desk", "kiosk", "gone"]
    desk = apps["desk"]
    assert desk["app_id"] == DESK_ID
    assert desk["sessions"] == 4  # the 500-minute session ended before the 7 days
    assert desk["session_minutes"] == 120
    assert desk["duration_seconds"] == {"p50": 1200, "p90": 3600, "p99": 3600, "max": 3600}
    last_hour = (ended("desk", 0, 10).ended.hour - 1) % 24
    assert desk["busiest_hour"] == {"hour_utc": last_hour, "session_minutes": 120}
    assert [(b["threshold_seconds"], b["policy"], b["sessions"]) for b in desk["backtest"]] == [
        (1800, None, 1),
        (2700, "max-age", 1),
    ]
    kiosk = apps["kiosk"]
    assert [
        (b["policy"], b["sessions"], b["session_minutes_saved"]) for b in kiosk["backtest"]
    ] == [
        (None, 1, 210),
        ("max-age", 1, 195),
        ("kiosk-night", 0, 0),
    ]
    assert apps["gone"]["app_id"] is None
    assert [b["policy"] for b in apps["gone"]["backtest"]] == [None]


def test_since_widens_the_window(config: Path) -> None:
    code, text = run("-c", str(config), "-o", "json", "--since", "30d", "--app", "desk")
    assert code == 0
    assert by_app(text)["desk"]["sessions"] == 5
    code, text = run("-c", str(config), "-o", "json", "--since", "12h", "--app", "desk")
    assert by_app(text)["desk"]["sessions"] == 0


def test_app_reports_one_configured_app(config: Path) -> None:
    code, text = run("-c", str(config), "-o", "json", "--app", "kiosk")
    assert code == 0
    assert list(by_app(text)) == ["kiosk"]


def test_html_writes_a_self_contained_page(config: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    code, text = run("-c", str(config), "--html", str(page))
    assert code == 0
    assert text.endswith(f"The chart as a web page: {page}\n")
    body = page.read_text(encoding="utf-8")
    assert body.startswith("<!doctype html>")
    assert body.count("<svg") == 3  # desk, kiosk and the removed app's one session
    code, text = run("-c", str(config), "--html", str(page), "-o", "json")
    assert code == 0
    json.loads(text)  # stdout stays one JSON document


def test_no_state_database_yet_reports_no_sessions(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apps": [{"app_id": DESK_ID, "name": "desk", "app_key": "k"}],
                "state": {"dir": str(tmp_path / "none")},
            }
        )
    )
    code, text = run("-c", str(path))
    assert code == 0
    assert "no sessions ended in this window" in text
    assert not (tmp_path / "none").exists()  # reading never creates the state


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "7"], "--since: '7' is not a duration"),
        (["--since", "0d"], "--since: '0d': a duration must be more than 0"),
        (["--since", "99999999d"], "--since: '99999999d' reaches before year 1"),
        (["--threshold", "30m,soon"], "--threshold: 'soon' is not a duration"),
        (["--app", "nope"], "--app 'nope' is not a configured app (configured: desk, kiosk)"),
        (["--html", "/nonexistent/dir/r.html"], "--html: cannot write /nonexistent/dir/r.html"),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, text = run("-c", str(config), *argv)
    assert code == 2
    assert text == ""
    assert f"duixwatch report: error: {message}" in capsys.readouterr().err


def test_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run("-c", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "missing.yaml" in capsys.readouterr().err
