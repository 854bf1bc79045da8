"""config.env: DUIXWATCH_ variables over the file, read through pydantic-settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from duixwatch import config as settings
from duixwatch.policy.kinds import SessionAge
from duixwatch.policy.schema import PolicyConfig
from tests.config.support import (
    APP_ID,
    MINIMAL,
    OTHER_ID,
    SECRET,
    load,
    problems,
)

# --------------------------------------------------------------------------- env overrides


def test_env_overrides_nested_keys_and_wins_over_the_file(tmp_path: Path) -> None:
    text = MINIMAL + "server:\n  listen: 0.0.0.0:1\n"
    cfg = load(
        tmp_path,
        text,
        DUIXWATCH_DUIX__BASE_URL="http://127.0.0.1:8088",
        DUIXWATCH_SERVER__LISTEN="127.0.0.1:9999",
        DUIXWATCH_ENFORCEMENT__ENABLED="true",
        DUIXWATCH_DUIX__SESSION_LIST__ITEMS="records",
        duixwatch_duix__paths__prefix="/v3",
        DUIXWATCH_DAEMON__LOG_FORMAT="json",
    )
    assert cfg.duix.base_url == "http://127.0.0.1:8088"
    assert cfg.server.listen == "127.0.0.1:9999"
    assert cfg.enforcement.enabled is True
    assert cfg.duix.session_list.items == "records"
    assert cfg.duix.paths.prefix == "/v3"
    assert cfg.daemon.log_format == "json"


def test_env_sets_a_whole_section_as_json_key_by_key(tmp_path: Path) -> None:
    text = MINIMAL + "duix:\n  session_list:\n    id: uuid\n"
    cfg = load(tmp_path, text, DUIXWATCH_DUIX__SESSION_LIST='{"items": "rows"}')
    assert cfg.duix.session_list == settings.SessionListMapping(items="rows", id="uuid")


def test_env_sets_apps_and_policies_as_json(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("file-key")
    apps = [{"app_id": OTHER_ID, "name": "lobby", "app_key_file": "k"}]
    policies = [
        {
            "name": "max-session-age",
            "match": {"session_age_over_seconds": 2700},
            "action": "stop_sessions",
            "dry_run": False,
        }
    ]
    cfg = load(
        tmp_path,
        MINIMAL,
        DUIXWATCH_APPS=json.dumps(apps),
        DUIXWATCH_POLICIES=json.dumps(policies),
    )
    assert [(a.name, a.app_key.get_secret_value()) for a in cfg.apps] == [("lobby", "file-key")]
    assert cfg.policies == (
        PolicyConfig(
            name="max-session-age",
            match=SessionAge(session_age_over_seconds=2700),
            action="stop_sessions",
            dry_run=False,
        ),
    )


def test_a_bad_env_value_names_the_variable_instead_of_a_line(tmp_path: Path) -> None:
    assert problems(tmp_path, MINIMAL, DUIXWATCH_SERVER__LISTEN="9814") == [
        "F: server.listen: '9814': expected HOST:PORT, e.g. 0.0.0.0:9814 or [::]:9814 "
        "(from env DUIXWATCH_SERVER__LISTEN)"
    ]


def test_a_bad_value_in_env_json_names_the_variable(tmp_path: Path) -> None:
    apps = json.dumps([{"app_id": APP_ID, "app_key": SECRET, "colour": "red"}])
    assert problems(tmp_path, MINIMAL, DUIXWATCH_APPS=apps) == [
        "F: apps[0].colour: unknown key (from env DUIXWATCH_APPS)"
    ]
    assert problems(tmp_path, MINIMAL, DUIXWATCH_APPS="[{") == [
        "F: apps: not valid JSON: Expecting property name enclosed in double quotes at "
        "character 2 (from env DUIXWATCH_APPS)"
    ]


@pytest.mark.parametrize("levels", [65, 900, 50_000])
def test_env_json_nested_deeper_than_a_config_file_may_be_is_refused(
    tmp_path: Path, levels: int
) -> None:
    # 50,000 levels made the JSON decoder recurse out of the stack: a traceback, not exit 2.
    deep = "[" * levels + "]" * levels
    assert problems(tmp_path, MINIMAL, DUIXWATCH_APPS=deep) == [
        "F: apps: JSON nested more than 64 levels deep: not a setting (from env DUIXWATCH_APPS)"
    ]
    # Within the bound it is read, and judged as any value is.
    shallow = "[" * 63 + "]" * 63
    assert problems(tmp_path, MINIMAL, DUIXWATCH_APPS=shallow) == [
        "F: apps[0]: must be a mapping (from env DUIXWATCH_APPS)"
    ]


@pytest.mark.parametrize(
    ("var", "expected"),
    [
        ("DUIXWATCH_SERVER__LISTN", "no such setting server.listn; did you mean 'listen'?"),
        ("DUIXWATCH_SERVR__LISTEN", "no such setting servr; did you mean 'server'?"),
        ("DUIXWATCH_SOURCE__X", "no such setting source"),
        ("DUIXWATCH_SERVER__LISTEN__X", "server.listen has no keys below it"),
        ("DUIXWATCH_APPS__0__NAME", "apps can only be set as a whole, as JSON in DUIXWATCH_APPS"),
        ("DUIXWATCH_DUIX____X", "empty name between '__' separators"),
    ],
)
def test_an_unknown_config_variable_is_rejected(tmp_path: Path, var: str, expected: str) -> None:
    assert problems(tmp_path, MINIMAL, **{var: "1"}) == [f"F: {var}: {expected}"]


def test_variables_of_the_cli_are_left_alone(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL, DUIXWATCH_LOG_LEVEL="debug", DUIXWATCH_SOMETHING="x")
    assert cfg.daemon.log_level == "info"


def test_two_spellings_of_one_variable_are_an_error(tmp_path: Path) -> None:
    found = problems(
        tmp_path, MINIMAL, DUIXWATCH_SERVER__LISTEN="1.1.1.1:1", duixwatch_server__listen="x:1"
    )
    assert found == [
        "F: duixwatch_server__listen: DUIXWATCH_SERVER__LISTEN sets server.listen too; keep one"
    ]


def test_env_values_are_literal(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL, DUIXWATCH_STATE__DIR="${HOME}/x")
    assert cfg.state.dir == Path("${HOME}/x")


# ---------------------------------------------------------------- duix.max_response_bytes


def test_the_answer_cap_is_8_mib_by_default_and_set_by_file_or_env(tmp_path: Path) -> None:
    assert load(tmp_path, MINIMAL).duix.max_response_bytes == 8 * 1024 * 1024 == 8388608
    text = MINIMAL + "duix:\n  max_response_bytes: 1048576\n"
    assert load(tmp_path, text).duix.max_response_bytes == 1048576
    cfg = load(tmp_path, text, DUIXWATCH_DUIX__MAX_RESPONSE_BYTES="65536")
    assert cfg.duix.max_response_bytes == 65536


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("0", "greater than 0"),
        ("-1", "greater than 0"),
        ("1.5", "whole number"),
        ("lots", "whole number"),
        (str(2 * 1024**3), "less than or equal to 1073741824"),
    ],
)
def test_the_answer_cap_must_be_a_positive_whole_number_of_bytes(
    tmp_path: Path, value: str, why: str
) -> None:
    (line,) = problems(tmp_path, MINIMAL + f"duix:\n  max_response_bytes: {value}\n")
    assert line.startswith("F:5: duix.max_response_bytes: ")
    assert why in line
    (env_line,) = problems(tmp_path, MINIMAL, DUIXWATCH_DUIX__MAX_RESPONSE_BYTES=value)
    assert "duix.max_response_bytes" in env_line
    assert why in env_line
