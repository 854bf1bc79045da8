"""settings: loading the config file, env overrides, secrets, and errors with their lines."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr, ValidationError

from duixwatch import errors, settings
from duixwatch.sim import Simulator, render_config

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "duixwatch.example.yaml"
#: A key distinctive enough that finding it anywhere in an error or repr is a leak.
SECRET = "zz-SECRET-appkey-7f3a9c-never-print-me"
APP_ID = "1377185422953811968"
OTHER_ID = "1377185422953811969"


def write(tmp_path: Path, text: str, name: str = "duixwatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **environ: str) -> settings.Config:
    return settings.load_config(write(tmp_path, text), environ=environ)


def problems(tmp_path: Path, text: str, **environ: str) -> list[str]:
    """The error lines of a config that must fail, with the file name shortened to F."""
    path = write(tmp_path, text)
    with pytest.raises(settings.ConfigFileError) as caught:
        settings.load_config(path, environ=environ)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return [line.replace(str(path), "F", 1) for line in caught.value.errors]


MINIMAL = f"""
apps:
  - app_id: "{APP_ID}"
    app_key: {SECRET}
"""


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
    assert cfg.policies
    assert all(policy["dry_run"] is True for policy in cfg.policies)
    assert all(policy["action"] != "close_all" for policy in cfg.policies)


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
    text = MINIMAL + "policies:\n  - name: p\n    note: ${WHO}\n"
    assert load(tmp_path, text, WHO="ops").policies[0]["note"] == "ops"


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text())
def test_doubling_the_dollar_keeps_any_text_literal(text: str) -> None:
    assert settings._expand(text.replace("${", "$${"), {}) == text


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
    policies = [{"name": "max-session-age", "dry_run": True}]
    cfg = load(
        tmp_path,
        MINIMAL,
        DUIXWATCH_APPS=json.dumps(apps),
        DUIXWATCH_POLICIES=json.dumps(policies),
    )
    assert [(a.name, a.app_key.get_secret_value()) for a in cfg.apps] == [("lobby", "file-key")]
    assert cfg.policies == ({"name": "max-session-age", "dry_run": True},)


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


# --------------------------------------------------------------------------- policies


CLOSE_ALL_APPS = f"""
apps:
  - app_id: "{APP_ID}"
    name: frontdesk
    app_key: {SECRET}
  - app_id: "{OTHER_ID}"
    name: lobby
    app_key: {SECRET}
enforcement:
  allow_close_all: ALLOW
policies:
  - name: emergency-drain
    apps: [frontdesk]
    match: {{max_sessions: 50, for_seconds: 300}}
    action: close_all
"""


def close_all(allow: bool = True, confirm: str | None = APP_ID, apps: str = "[frontdesk]") -> str:
    text = CLOSE_ALL_APPS.replace("ALLOW", "true" if allow else "false")
    text = text.replace("apps: [frontdesk]", f"apps: {apps}")
    if confirm is not None:
        text += f'    confirm_app_id: "{confirm}"\n'
    return text


def test_a_close_all_policy_loads_when_allowed_and_confirmed(tmp_path: Path) -> None:
    cfg = load(tmp_path, close_all())
    assert cfg.policies[0]["action"] == "close_all"


@pytest.mark.parametrize(
    "apps", ['["front*"]', f'["{APP_ID}"]', '["*"]\n    exclude_apps: [lobby]']
)
def test_a_close_all_policy_may_select_its_one_app_by_glob_or_id(tmp_path: Path, apps: str) -> None:
    assert load(tmp_path, close_all(apps=apps)).policies[0]["confirm_app_id"] == APP_ID


def test_a_close_all_policy_is_rejected_unless_close_all_is_allowed(tmp_path: Path) -> None:
    assert problems(tmp_path, close_all(allow=False)) == [
        "F:14: policies[0].action: close_all policies are rejected unless "
        "enforcement.allow_close_all is true"
    ]


def test_a_close_all_policy_is_rejected_without_confirm_app_id(tmp_path: Path) -> None:
    assert problems(tmp_path, close_all(confirm=None)) == [
        "F:11: policies[0]: a close_all policy needs confirm_app_id: the app_id of the one app "
        "it applies to (frontdesk)"
    ]


def test_a_close_all_policy_is_rejected_with_the_app_id_of_another_app(tmp_path: Path) -> None:
    assert problems(tmp_path, close_all(confirm=OTHER_ID)) == [
        f"F:15: policies[0].confirm_app_id: '{OTHER_ID}' is not the app_id of frontdesk, "
        "the one app this policy applies to"
    ]


@pytest.mark.parametrize(
    ("apps", "which"),
    [("[frontdesk, lobby]", "2 (frontdesk, lobby)"), ('["*"]', "2"), ("[x]", "0")],
)
def test_a_close_all_policy_must_select_exactly_one_app(
    tmp_path: Path, apps: str, which: str
) -> None:
    [line] = problems(tmp_path, close_all(apps=apps))
    assert line.startswith(
        f"F:12: policies[0].apps: a close_all policy must apply to exactly one app; "
        f"it selects {which}"
    )


def test_a_close_all_policy_must_list_its_app(tmp_path: Path) -> None:
    text = close_all().replace("    apps: [frontdesk]\n", "")
    assert problems(tmp_path, text) == [
        "F:11: policies[0]: a close_all policy must name its one app in `apps`"
    ]


def test_allow_close_all_from_env_counts(tmp_path: Path) -> None:
    text = close_all(allow=False)
    cfg = load(tmp_path, text, DUIXWATCH_ENFORCEMENT__ALLOW_CLOSE_ALL="true")
    assert cfg.enforcement.allow_close_all is True


def test_a_config_built_in_code_enforces_the_close_all_rule_too() -> None:
    app = settings.AppConfig(app_id=APP_ID, name="frontdesk", app_key=SecretStr(SECRET))
    policy = {"name": "drain", "apps": ["frontdesk"], "action": "close_all"}
    with pytest.raises(ValidationError, match="allow_close_all"):
        settings.Config(apps=(app,), policies=(policy,))
    allowed = settings.EnforcementSettings(allow_close_all=True)
    confirmed = {**policy, "confirm_app_id": APP_ID}
    assert settings.Config(apps=(app,), enforcement=allowed, policies=(confirmed,)).policies


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        ("  - match: {}\n", "F:5: policies[0]: every policy needs a name"),
        ("  - name: Max_Age\n", "F:5: policies[0].name: 'Max_Age' is not a valid policy name"),
        ("  - name: a\n  - name: a\n", "F:6: policies[1].name: duplicate policy name"),
        ("  - just-a-string\n", "F:5: policies[0]: must be a mapping"),
    ],
)
def test_policies_need_unique_valid_names(tmp_path: Path, policies: str, expected: str) -> None:
    [line] = problems(tmp_path, MINIMAL + "policies:\n" + policies)
    assert line.startswith(expected)


# --------------------------------------------------------------------------- secrets


def test_mask_hides_every_key_and_is_json(tmp_path: Path) -> None:
    text = MINIMAL + 'duix:\n  base_url: "https://user:pw-zz@example.com:8443/x"\n'
    masked = settings.mask(load(tmp_path, text))
    dumped = json.dumps(masked)
    assert SECRET not in dumped
    assert "pw-zz" not in dumped
    assert masked["apps"][0]["app_key"] == "**********"
    assert masked["duix"]["base_url"] == "https://user:**********@example.com:8443/x"
    assert masked["server"] == {"listen": "0.0.0.0:9814"}


def test_a_loaded_config_never_shows_its_key(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    for text in (repr(cfg), str(cfg), repr(cfg.apps[0]), repr(cfg.apps[0].credentials)):
        assert SECRET not in text
    assert SECRET not in cfg.model_dump_json()


def _every_text(exc: BaseException) -> str:
    """The message, repr and errors of ``exc`` and of every exception chained to it."""
    texts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        texts += [str(current), repr(current), *getattr(current, "errors", [])]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


@pytest.mark.parametrize(
    "tail",
    [
        "    poll_interval_seconds: [1]\n",  # a pydantic error in the app holding the key
        "    app_key_file: also.key\n",  # both ways of giving a key
        "  - {app_id: 1, app_key: " + SECRET + ", nope: 1}\n",  # unknown key beside a key
        "    list_sessions: {" + SECRET + "\n",  # a YAML syntax error on a line with the key
        "  - app_id: " + SECRET + "\n    app_key: x\n",  # the key written as the app_id
        "  - app_id: 1\n    app_key: {a: " + SECRET + "}\n",  # a key of the wrong type
    ],
)
def test_no_error_ever_contains_a_key(tmp_path: Path, tail: str) -> None:
    (tmp_path / "also.key").write_text(SECRET)
    path = write(tmp_path, MINIMAL + tail)
    with pytest.raises(settings.ConfigFileError) as caught:
        settings.load_config(path, environ={})
    assert SECRET not in _every_text(caught.value)


def test_no_error_from_env_json_contains_a_key(tmp_path: Path) -> None:
    apps = json.dumps([{"app_id": APP_ID, "app_key": SECRET, "poll_interval_seconds": "x"}])
    with pytest.raises(settings.ConfigFileError) as caught:
        load(tmp_path, MINIMAL, DUIXWATCH_APPS=apps)
    assert SECRET not in _every_text(caught.value)
