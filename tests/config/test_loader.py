"""config.loader: reading the file, errors with their lines, ${VAR}, app keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from duixwatch import config as settings
from duixwatch.config import loader
from duixwatch.core import errors
from duixwatch.dialog.schema import ClientTLS, DialogProbeConfig
from duixwatch.policy.kinds import SessionAge, SessionCount
from duixwatch.policy.notify import NotifyTarget
from duixwatch.policy.schema import PolicyConfig
from duixwatch.sim import Simulator, render_config
from tests.config.support import (
    APP_ID,
    EXAMPLE,
    MINIMAL,
    OTHER_ID,
    SECRET,
    load,
    problems,
    write,
)

# --------------------------------------------------------------------------- loading


def test_the_example_file_loads_with_the_variables_it_references(tmp_path: Path) -> None:
    (tmp_path / "lobby-kiosk.key").write_text("lobby-key\n")
    environ = {"DUIX_APP_KEY_FRONTDESK": SECRET, "CREDENTIALS_DIRECTORY": str(tmp_path)}
    cfg = settings.load_config(EXAMPLE, environ=environ)
    assert [app.name for app in cfg.apps] == ["frontdesk", "lobby-kiosk"]
    assert cfg.apps[0].app_key.get_secret_value() == SECRET
    assert cfg.apps[1].app_key.get_secret_value() == "lobby-key"
    assert cfg.apps[1].app_key_file == tmp_path / "lobby-kiosk.key"
    assert cfg.source == EXAMPLE
    assert cfg.state.dir == Path("./duixwatch-state")


def test_the_example_file_is_inert(tmp_path: Path) -> None:
    (tmp_path / "lobby-kiosk.key").write_text("lobby-key")
    environ = {"DUIX_APP_KEY_FRONTDESK": SECRET, "CREDENTIALS_DIRECTORY": str(tmp_path)}
    cfg = settings.load_config(EXAMPLE, environ=environ)
    assert cfg.enforcement.enabled is False
    assert cfg.enforcement.allow_close_all is False
    assert [policy.name for policy in cfg.policies] == ["max-session-age", "quota-guard"]
    assert all(policy.dry_run is True for policy in cfg.policies)
    assert all(policy.action != "close_all" for policy in cfg.policies)
    assert all(policy.notify == () for policy in cfg.policies)
    assert all(policy.selects(app) for policy in cfg.policies for app in cfg.apps)


def _uncomment(text: str, first: str) -> str:
    """``text`` with the comment block starting at the line ``first`` (``# first``) uncommented:
    the block's lines lose their ``# `` and keep their indentation and trailing comments."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == f"# {first}")
    indent = lines[start].index("#")
    end = start
    while end < len(lines) and lines[end].startswith(" " * indent + "# "):
        if end > start and not lines[end].startswith(" " * indent + "#   "):
            break
        end += 1
    for i in range(start, end):
        lines[i] = lines[i][:indent] + lines[i][indent + 2 :]
    return "".join(lines)


def test_the_commented_examples_of_the_example_file_load_when_uncommented(
    tmp_path: Path,
) -> None:
    (tmp_path / "lobby-kiosk.key").write_text("lobby-key")
    text = _uncomment(_uncomment(EXAMPLE.read_text(), "notify:"), "- name: emergency-drain")
    assert "\n    notify:\n      - url: ${SLACK_WEBHOOK_URL}" in text
    assert "\n  - name: emergency-drain\n    apps: [frontdesk]\n" in text
    text = text.replace("allow_close_all: false", "allow_close_all: true")
    hook = "https://hooks.slack.com/services/T000/B000/zz-SECRET-hook"
    environ = {
        "DUIX_APP_KEY_FRONTDESK": SECRET,
        "CREDENTIALS_DIRECTORY": str(tmp_path),
        "SLACK_WEBHOOK_URL": hook,
    }
    cfg = settings.load_config(write(tmp_path, text), environ=environ)
    age, quota, drain = cfg.policies
    assert age.notify == (NotifyTarget(url=hook, headers={}, timeout_seconds=5),)
    assert quota.notify == ()
    assert drain.action == "close_all"
    assert drain.confirm_app_id == cfg.app("frontdesk").app_id
    assert drain.dry_run is True
    assert "zz-SECRET-hook" not in json.dumps(settings.mask(cfg))


def test_the_example_file_sets_every_key_of_the_contract() -> None:
    text = EXAMPLE.read_text()

    def keys(model: type[BaseModel]) -> set[str]:
        return set(model.model_fields)

    expected = (
        keys(settings.DuixSettings)
        | keys(settings.DuixPaths)
        | keys(settings.SessionListMapping)
        | (keys(settings.AppConfig) - {"app_key"})
        | keys(settings.ServerSettings)
        | keys(settings.StateSettings)
        | keys(settings.EnforcementSettings)
        | keys(settings.DaemonSettings)
        | keys(PolicyConfig)
        | keys(SessionAge)
        | keys(SessionCount)
        | keys(NotifyTarget)
        | keys(DialogProbeConfig)
        | keys(ClientTLS)
        | (keys(settings.Config) - {"source"})
    )
    missing = [key for key in sorted(expected) if f"{key}:" not in text]
    assert missing == []


def test_the_example_file_follows_the_state_directory_of_systemd(tmp_path: Path) -> None:
    (tmp_path / "lobby-kiosk.key").write_text("lobby-key")
    environ = {
        "DUIX_APP_KEY_FRONTDESK": SECRET,
        "CREDENTIALS_DIRECTORY": str(tmp_path),
        "STATE_DIRECTORY": "/var/lib/duixwatch",
    }
    assert settings.load_config(EXAMPLE, environ=environ).state.dir == Path("/var/lib/duixwatch")


def test_the_example_file_without_its_key_variable_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "lobby-kiosk.key").write_text("lobby-key")
    with pytest.raises(settings.ConfigFileError) as caught:
        settings.load_config(EXAMPLE, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    [line] = caught.value.errors
    assert "apps[0].app_key: environment variable DUIX_APP_KEY_FRONTDESK is not set" in line


def test_the_config_the_simulator_prints_loads(tmp_path: Path) -> None:
    sim = Simulator(apps=3, seed=7, workload=False)
    text = render_config(sim, base_url="http://127.0.0.1:8088")
    cfg = settings.load_config(write(tmp_path, text), environ={})
    assert [app.app_id for app in cfg.apps] == [app.app_id for app in sim.apps]
    assert cfg.duix.base_url == "http://127.0.0.1:8088"


def test_a_minimal_file_gets_every_default(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    [app] = cfg.apps
    assert app.name == APP_ID
    assert app.poll_interval_seconds == 15
    assert app.list_sessions is True
    assert app.app_key_file is None
    assert cfg.duix == settings.DuixSettings()
    assert cfg.server.listen == "0.0.0.0:9814"
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", 9814)  # noqa: S104 - a string
    assert cfg.state.dir == Path("./duixwatch-state")
    assert cfg.enforcement == settings.EnforcementSettings(
        enabled=False, allow_close_all=False, max_stops_per_second=5
    )
    assert cfg.daemon == settings.DaemonSettings(
        shutdown_timeout_seconds=10,
        backoff_max_seconds=300,
        jitter_fraction=0.1,
        watch_config_seconds=0,
        log_level="info",
        log_format="auto",
    )
    assert cfg.policies == ()


def test_sections_left_empty_mean_their_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "server:\ndaemon:\npolicies:\n")
    assert cfg.server == settings.ServerSettings()
    assert cfg.policies == ()


def test_an_app_gives_its_credentials_to_the_client(tmp_path: Path) -> None:
    creds = load(tmp_path, MINIMAL).apps[0].credentials
    assert creds.app_id == APP_ID
    assert creds.app_key.get_secret_value() == SECRET


def test_the_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    with pytest.raises(ValidationError):
        cfg.server = settings.ServerSettings()  # type: ignore[misc]


def test_a_small_unquoted_app_id_becomes_a_string(tmp_path: Path) -> None:
    cfg = load(tmp_path, f"apps:\n  - app_id: 12345\n    app_key: {SECRET}\n")
    assert cfg.apps[0].app_id == "12345"
    assert cfg.apps[0].name == "12345"


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("0.0.0.0:9814", "0.0.0.0", 9814),  # noqa: S104 - a string, not a bind
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("localhost:8080", "localhost", 8080),
        ("[::]:9814", "::", 9814),
        ("[::1]:9814", "::1", 9814),
    ],
)
def test_listen_accepts_host_and_port(tmp_path: Path, listen: str, host: str, port: int) -> None:
    server = load(tmp_path, MINIMAL + f'server:\n  listen: "{listen}"\n').server
    assert (server.host, server.port) == (host, port)


# --------------------------------------------------------------------------- errors and lines


def test_an_unknown_top_level_key_is_an_error_on_its_line(tmp_path: Path) -> None:
    assert problems(tmp_path, MINIMAL + "sever:\n  listen: 1.2.3.4:1\n") == [
        "F:4: sever: unknown key; did you mean 'server'?"
    ]


def test_an_unknown_key_in_the_second_app_is_an_error_on_its_line(tmp_path: Path) -> None:
    text = f"""
    apps:
      - app_id: "{APP_ID}"
        app_key: {SECRET}
      - app_id: "{OTHER_ID}"
        name: lobby
        app_key: {SECRET}
        poll_interval: 5
    """
    assert problems(tmp_path, text) == [
        "F:7: apps[1].poll_interval: unknown key; did you mean 'poll_interval_seconds'?"
    ]


def test_a_value_of_the_wrong_type_is_an_error_on_its_line(tmp_path: Path) -> None:
    text = MINIMAL + "    poll_interval_seconds: fast\nenforcement:\n  enabled: maybe\n"
    assert problems(tmp_path, text) == [
        "F:4: apps[0].poll_interval_seconds: must be a number",
        "F:6: enforcement.enabled: must be true or false",
    ]


def test_a_value_out_of_range_is_an_error_on_its_line(tmp_path: Path) -> None:
    text = MINIMAL + "daemon:\n  jitter_fraction: 0.9\n"
    assert problems(tmp_path, text) == [
        "F:5: daemon.jitter_fraction: Input should be less than or equal to 0.5"
    ]


def test_true_is_not_a_number(tmp_path: Path) -> None:
    text = MINIMAL + "    poll_interval_seconds: true\n"
    assert problems(tmp_path, text) == [
        "F:4: apps[0].poll_interval_seconds: must be a number, not true/false"
    ]


@pytest.mark.parametrize(
    ("listen", "why"),
    [
        ("9814", "expected HOST:PORT"),
        (":9814", "expected HOST:PORT"),
        ("::9814", "write an IPv6 address in brackets"),
        ("[::1]9814", "expected HOST:PORT"),
        ("[nope]:9814", "is not an IPv6 address"),
        ("0.0.0.0:99999", "the port must be a number from 0 to 65535"),
        ("0.0.0.0:http", "the port must be a number from 0 to 65535"),
        ("300.1.1.1:9814", "is not an IPv4 address"),
        ("bad_host:9814", "is not a host name or IP address"),
    ],
)
def test_a_bad_listen_address_is_an_error_on_its_line(
    tmp_path: Path, listen: str, why: str
) -> None:
    [line] = problems(tmp_path, MINIMAL + f'server:\n  listen: "{listen}"\n')
    assert line.startswith(f"F:5: server.listen: {listen!r}: ")
    assert why in line


def test_a_duplicate_key_is_an_error_on_the_second_line(tmp_path: Path) -> None:
    text = MINIMAL + "server:\n  listen: 0.0.0.0:1\n  listen: 0.0.0.0:2\n"
    assert problems(tmp_path, text) == ["F:6: server.listen: duplicate key (first given on line 5)"]


def test_duplicate_app_names_and_ids_are_errors_on_their_lines(tmp_path: Path) -> None:
    text = f"""
    apps:
      - app_id: "{APP_ID}"
        name: frontdesk
        app_key: {SECRET}
      - app_id: "{OTHER_ID}"
        name: frontdesk
        app_key: {SECRET}
      - app_id: "{APP_ID}"
        name: lobby
        app_key: {SECRET}
    """
    assert problems(tmp_path, text) == [
        "F:6: apps[1].name: duplicate app name 'frontdesk' (also apps[0])",
        "F:8: apps[2].app_id: duplicate app_id '1377185422953811968' (also apps[0])",
    ]


def test_a_default_name_clashing_with_another_app_is_reported_on_the_app(
    tmp_path: Path,
) -> None:
    text = f"""
    apps:
      - app_id: "{APP_ID}"
        name: "{OTHER_ID}"
        app_key: {SECRET}
      - app_id: "{OTHER_ID}"
        app_key: {SECRET}
    """
    assert problems(tmp_path, text) == [
        f"F:5: apps[1].name: duplicate app name '{OTHER_ID}' (also apps[0])"
    ]


def test_an_invalid_app_name_is_an_error(tmp_path: Path) -> None:
    [line] = problems(tmp_path, MINIMAL + "    name: front desk\n")
    assert line.startswith("F:4: apps[0].name: 'front desk' is not a valid app name")


def test_a_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    text = MINIMAL + "server:\n  listen: [0.0.0.0:9814\nstate:\n  dir: x\n"
    [line] = problems(tmp_path, text)
    assert line.startswith("F:6: YAML syntax error:")


def test_a_tab_in_the_indentation_is_a_yaml_syntax_error_on_its_line(tmp_path: Path) -> None:
    [line] = problems(tmp_path, MINIMAL + "server:\n\tlisten: 0.0.0.0:1\n")
    assert line.startswith("F:5: YAML syntax error:")


def test_a_missing_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(settings.ConfigFileError) as caught:
        settings.load_config(path, environ={})
    assert caught.value.errors == [
        f"{path}: cannot read the config file: No such file or directory"
    ]
    assert isinstance(caught.value, errors.ConfigError)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(settings.ConfigFileError, match="cannot read the config file"):
        settings.load_config(tmp_path, environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "F:1: the config file is empty; it needs at least an `apps:` list"),
        ("# only a comment\n", "F:1: the config file is empty; it needs at least an `apps:` list"),
        ("- a\n- b\n", "F:1: the top level must be a mapping of sections (duix:, apps: …)"),
        ("apps: []\n", "F:1: apps: at least one app is required"),
        ("server: {}\n", "F:1: apps: required key is missing"),
    ],
)
def test_a_file_without_apps_is_an_error(tmp_path: Path, text: str, expected: str) -> None:
    assert problems(tmp_path, text) == [expected]


def test_an_unset_variable_is_an_error_naming_it_the_key_and_the_line(tmp_path: Path) -> None:
    text = f"""
    apps:
      - app_id: "{APP_ID}"
        app_key: ${{DUIX_APP_KEY_FRONTDESK}}
    """
    assert problems(tmp_path, text) == [
        "F:3: apps[0].app_key: environment variable DUIX_APP_KEY_FRONTDESK is not set "
        "(used as ${DUIX_APP_KEY_FRONTDESK})"
    ]


@pytest.mark.parametrize("reference", ["${}", "${1X}", "${X:+y}", "${unterminated"])
def test_a_malformed_reference_is_an_error(tmp_path: Path, reference: str) -> None:
    [line] = problems(tmp_path, MINIMAL + f'state:\n  dir: "{reference}"\n')
    assert line.startswith("F:5: state.dir: ")
    assert "$${" in line


def test_a_missing_app_key_file_is_an_error_naming_the_file_and_the_key(tmp_path: Path) -> None:
    text = f'apps:\n  - app_id: "{APP_ID}"\n    app_key_file: keys/frontdesk.key\n'
    [line] = problems(tmp_path, text)
    assert line.startswith("F:3: apps[0].app_key_file: cannot read the key file ")
    assert str(tmp_path / "keys" / "frontdesk.key") in line


def test_an_empty_app_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "frontdesk.key").write_text(" \n\t\n")
    text = f'apps:\n  - app_id: "{APP_ID}"\n    app_key_file: frontdesk.key\n'
    assert problems(tmp_path, text) == [
        f"F:3: apps[0].app_key_file: the key file {tmp_path / 'frontdesk.key'} is empty"
    ]


def test_an_unreadable_app_key_file_is_an_error_that_never_shows_content(
    tmp_path: Path,
) -> None:
    (tmp_path / "frontdesk.key").write_bytes(SECRET.encode() + b"\xff\xfe")
    text = f'apps:\n  - app_id: "{APP_ID}"\n    app_key_file: frontdesk.key\n'
    [line] = problems(tmp_path, text)
    assert "is not UTF-8 text" in line
    assert SECRET not in line


def test_an_app_key_file_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    text = f'apps:\n  - app_id: "{APP_ID}"\n    app_key_file: keys\n'
    [line] = problems(tmp_path, text)
    assert line.startswith("F:3: apps[0].app_key_file: cannot read the key file ")


def test_an_empty_app_key_is_an_error(tmp_path: Path) -> None:
    text = f'apps:\n  - app_id: "{APP_ID}"\n    app_key: "${{EMPTY}}"\n'
    assert problems(tmp_path, text, EMPTY="") == ["F:3: apps[0].app_key: is empty"]


def test_both_app_key_and_app_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "frontdesk.key").write_text("k")
    text = MINIMAL + "    app_key_file: frontdesk.key\n"
    assert problems(tmp_path, text) == [
        "F:3: apps[0].app_key: give either app_key or app_key_file, not both"
    ]


def test_an_app_without_any_key_says_how_to_give_one(tmp_path: Path) -> None:
    [line] = problems(tmp_path, f'apps:\n  - app_id: "{APP_ID}"\n    name: frontdesk\n')
    assert line.startswith("F:2: apps[0]: no app key: set app_key")
    assert "LoadCredential=frontdesk:" in line
    assert "$CREDENTIALS_DIRECTORY is not set" in line


def test_an_app_without_a_key_still_reports_its_other_problems(tmp_path: Path) -> None:
    text = f'apps:\n  - app_id: "{APP_ID}"\n    colour: red\n'
    found = problems(tmp_path, text)
    assert [line.split(": ", 2)[1] for line in found] == ["apps[0]", "apps[0].colour"]


def test_an_app_id_that_a_float_would_round_must_be_quoted(tmp_path: Path) -> None:
    text = f"apps:\n  - app_id: {APP_ID}\n    app_key: {SECRET}\n"
    assert problems(tmp_path, text) == [
        f"F:2: apps[0].app_id: {APP_ID} is written as a number too large to survive tools "
        f'that read numbers as floats; quote it: "{APP_ID}"'
    ]


def test_the_largest_exact_unquoted_app_id_is_accepted(tmp_path: Path) -> None:
    text = f"apps:\n  - app_id: {2**53 - 1}\n    app_key: {SECRET}\n"
    assert load(tmp_path, text).apps[0].app_id == str(2**53 - 1)
    text = f"apps:\n  - app_id: {2**53}\n    app_key: {SECRET}\n"
    assert "quote it" in problems(tmp_path, text)[0]


@pytest.mark.parametrize("written", ["0123", "0x1F", "1_000"])
def test_an_app_id_that_yaml_reads_as_another_number_must_be_quoted(
    tmp_path: Path, written: str
) -> None:
    [line] = problems(tmp_path, f"apps:\n  - app_id: {written}\n    app_key: {SECRET}\n")
    assert line.startswith(f"F:2: apps[0].app_id: {written} is read by YAML as the number ")
    assert f'quote the id: "{written}"' in line


@pytest.mark.parametrize("app_id", ['"12a"', '""', "-5", "1.5", "true", '"' + "1" * 33 + '"'])
def test_an_app_id_that_is_not_digits_is_an_error(tmp_path: Path, app_id: str) -> None:
    [line] = problems(tmp_path, f"apps:\n  - app_id: {app_id}\n    app_key: {SECRET}\n")
    assert line.startswith("F:2: apps[0].app_id: ")


def test_every_problem_is_listed_at_once_in_line_order(tmp_path: Path) -> None:
    text = f"""
    duix:
      base_url: ftp://example.com
    apps:
      - app_id: "{APP_ID}"
        app_key: {SECRET}
        list_sessions: sometimes
    server:
      listen: nowhere
    """
    found = problems(tmp_path, text, DUIXWATCH_SERVER__LISTN="x")
    assert [line.split(": ", 2)[:2] for line in found] == [
        ["F:2", "duix.base_url"],
        ["F:6", "apps[0].list_sessions"],
        ["F:8", "server.listen"],
        ["F", "DUIXWATCH_SERVER__LISTN"],
    ]


def test_the_error_location_is_the_first_problem(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "sever: 1\n")
    with pytest.raises(settings.ConfigFileError) as caught:
        settings.load_config(path, environ={})
    assert caught.value.location == f"{path}:4"


def test_a_yaml_anchor_and_merge_key_share_settings(tmp_path: Path) -> None:
    text = f"""
    apps:
      - &defaults
        app_id: "{APP_ID}"
        app_key: {SECRET}
        poll_interval_seconds: 30
      - <<: *defaults
        app_id: "{OTHER_ID}"
        name: lobby
        nope: 1
    """
    assert problems(tmp_path, text) == ["F:9: apps[1].nope: unknown key"]
    cfg = load(tmp_path, text.replace("    nope: 1\n", ""))
    assert [(a.app_id, a.poll_interval_seconds) for a in cfg.apps] == [
        (APP_ID, 30),
        (OTHER_ID, 30),
    ]


def test_a_non_string_key_is_an_error(tmp_path: Path) -> None:
    assert problems(tmp_path, MINIMAL + "server:\n  1: x\n") == [
        "F:5: server.1: keys must be strings (quote the key)"
    ]


# --------------------------------------------------------------------------- ${VAR}


def test_variables_expand_inside_strings_with_defaults_and_escapes(tmp_path: Path) -> None:
    text = MINIMAL + (
        "duix:\n"
        '  base_url: "http://${HOST}:${PORT:-8088}"\n'
        "state:\n"
        '  dir: "$${NOT_A_VAR}/${EMPTY:-fallback}"\n'
    )
    cfg = load(tmp_path, text, HOST="127.0.0.1", EMPTY="")
    assert cfg.duix.base_url == "http://127.0.0.1:8088"
    assert cfg.state.dir == Path("${NOT_A_VAR}/fallback")


def test_a_variable_can_hold_a_number(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "    poll_interval_seconds: ${POLL}\n", POLL="30")
    assert cfg.apps[0].poll_interval_seconds == 30


def test_a_variable_in_a_policy_expands_too(tmp_path: Path) -> None:
    text = MINIMAL + (
        "policies:\n"
        "  - name: p\n"
        "    match:\n"
        "      max_sessions: ${MAX}\n"
        "    action: stop_sessions\n"
        "    notify:\n"
        "      - url: ${HOOK}\n"
        "        headers:\n"
        "          Authorization: Bearer ${TOKEN}\n"
    )
    cfg = load(tmp_path, text, MAX="8", HOOK="https://hooks.example.com/x", TOKEN="t0k")
    [policy] = cfg.policies
    assert policy.match.max_sessions == 8
    assert policy.notify[0].url == "https://hooks.example.com/x"
    assert policy.notify[0].headers == {"Authorization": "Bearer t0k"}


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text())
def test_doubling_the_dollar_keeps_any_text_literal(text: str) -> None:
    assert loader._expand(text.replace("${", "$${"), {}) == text


# --------------------------------------------------------------------------- credentials


def test_a_relative_key_file_is_found_in_the_credentials_directory_first(
    tmp_path: Path,
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "frontdesk.key").write_text("from-systemd\n")
    (tmp_path / "frontdesk.key").write_text("beside-the-config")
    text = f'apps:\n  - app_id: "{APP_ID}"\n    app_key_file: frontdesk.key\n'
    cfg = load(tmp_path, text, CREDENTIALS_DIRECTORY=str(credentials))
    assert cfg.apps[0].app_key.get_secret_value() == "from-systemd"
    assert cfg.apps[0].app_key_file == credentials / "frontdesk.key"
    cfg = load(tmp_path, text, CREDENTIALS_DIRECTORY=str(tmp_path / "empty"))
    assert cfg.apps[0].app_key.get_secret_value() == "beside-the-config"


def test_a_key_file_path_may_use_the_credentials_directory_variable(tmp_path: Path) -> None:
    (tmp_path / "frontdesk").write_text("  k  ")
    text = (
        f'apps:\n  - app_id: "{APP_ID}"\n    app_key_file: ${{CREDENTIALS_DIRECTORY}}/frontdesk\n'
    )
    cfg = load(tmp_path, text, CREDENTIALS_DIRECTORY=str(tmp_path))
    assert cfg.apps[0].app_key.get_secret_value() == "k"


def test_an_app_without_a_key_reads_the_systemd_credential_of_its_name(tmp_path: Path) -> None:
    (tmp_path / "frontdesk").write_text("credential-key\n")
    text = f'apps:\n  - app_id: "{APP_ID}"\n    name: frontdesk\n'
    cfg = load(tmp_path, text, CREDENTIALS_DIRECTORY=str(tmp_path))
    assert cfg.apps[0].app_key.get_secret_value() == "credential-key"
    assert cfg.apps[0].app_key_file == tmp_path / "frontdesk"


def test_a_missing_systemd_credential_is_an_error_naming_the_file(tmp_path: Path) -> None:
    text = f'apps:\n  - app_id: "{APP_ID}"\n    name: frontdesk\n'
    [line] = problems(tmp_path, text, CREDENTIALS_DIRECTORY=str(tmp_path))
    assert line.startswith("F:2: apps[0]: no app key: ")
    assert f"{tmp_path / 'frontdesk'} does not exist" in line


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("# \x07\n", "YAML: character U+0007 is not allowed in a YAML file"),
        ("# \x1b[0m\n", "YAML: character U+001B is not allowed in a YAML file"),
        ("x: 1\x00\n", "YAML: character U+0000 is not allowed in a YAML file"),
    ],
)
def test_a_character_yaml_forbids_is_an_error_with_its_line(
    tmp_path: Path, tail: str, message: str
) -> None:
    found = problems(tmp_path, MINIMAL + tail)
    assert found == [f"F:4: {message}"]


def test_nesting_too_deep_for_the_parser_is_an_error_not_a_crash(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + "x: " + "[" * 5000 + "\n")
    assert found == ["F:4: YAML nested more than 64 levels deep: not a config file"]
