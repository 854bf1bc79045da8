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

from duixwatch.config import settings
from duixwatch.core import errors
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
    assert age.notify == (settings.NotifyTarget(url=hook, headers={}, timeout_seconds=5),)
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
        | keys(settings.PolicyConfig)
        | keys(settings.PolicyMatch)
        | keys(settings.NotifyTarget)
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
        settings.PolicyConfig(
            name="max-session-age",
            match=settings.PolicyMatch(session_age_over_seconds=2700),
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

#: Two apps on lines 1-7; :func:`with_policy` puts ``policies:`` on line 8.
TWO_APPS = f"""
apps:
  - app_id: "{APP_ID}"
    name: frontdesk
    app_key: {SECRET}
  - app_id: "{OTHER_ID}"
    name: lobby
    app_key: {SECRET}
"""
AGE = "match: {session_age_over_seconds: 2700}"
QUOTA = "match: {max_sessions: 8}"
STOP = "action: stop_sessions"


def with_policy(*keys: str, head: str = TWO_APPS) -> str:
    """``head`` and one policy: ``- name: p`` on line 9, then ``keys`` from line 10 on."""
    return head + "policies:\n  - name: p\n" + "".join(f"    {key}\n" for key in keys)


def test_a_policy_gets_every_default(tmp_path: Path) -> None:
    [policy] = load(tmp_path, with_policy(AGE, STOP)).policies
    assert policy == settings.PolicyConfig(
        name="p",
        apps=("*",),
        exclude_apps=(),
        protect_sessions=(),
        match=settings.PolicyMatch(session_age_over_seconds=2700, max_sessions=None, for_seconds=0),
        action="stop_sessions",
        select="newest",
        dry_run=True,
        max_actions_per_cycle=10,
        max_actions_percent=50,
        confirm_app_id=None,
        notify=(),
    )


def test_a_policy_with_every_key_loads(tmp_path: Path) -> None:
    text = with_policy(
        f'apps: ["front*", "{OTHER_ID}"]',
        "exclude_apps: [lobby]",
        'protect_sessions: ["vip-*", "demo-?"]',
        "match: {max_sessions: 0, for_seconds: 30.5}",
        STOP,
        "select: oldest",
        "dry_run: false",
        "max_actions_per_cycle: 10000",
        "max_actions_percent: 100",
        "notify:",
        "  - url: http://127.0.0.1:9/hook",
        "    headers: {X-Token: abc, Content-Type: application/json}",
        "    timeout_seconds: 60",
        "  - url: https://hooks.slack.com/services/T/B/x",
    )
    [policy] = load(tmp_path, text).policies
    assert policy.apps == ("front*", OTHER_ID)
    assert policy.exclude_apps == ("lobby",)
    assert policy.protect_sessions == ("vip-*", "demo-?")
    assert policy.match == settings.PolicyMatch(max_sessions=0, for_seconds=30.5)
    assert (policy.select, policy.dry_run) == ("oldest", False)
    assert (policy.max_actions_per_cycle, policy.max_actions_percent) == (10000, 100)
    assert policy.notify == (
        settings.NotifyTarget(
            url="http://127.0.0.1:9/hook",
            headers={"X-Token": "abc", "Content-Type": "application/json"},
            timeout_seconds=60,
        ),
        settings.NotifyTarget(url="https://hooks.slack.com/services/T/B/x"),
    )


def test_a_policy_is_frozen(tmp_path: Path) -> None:
    [policy] = load(tmp_path, with_policy(AGE, STOP)).policies
    with pytest.raises(ValidationError):
        policy.dry_run = False  # type: ignore[misc]


# -- match


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            ["match: {}", STOP],
            "F:10: policies[0].match: needs one of session_age_over_seconds or max_sessions",
        ),
        (
            ["match:", "  session_age_over_seconds: 60", "  max_sessions: 3", STOP],
            "F:10: policies[0].match: give either session_age_over_seconds or max_sessions, "
            "not both (write two policies for both)",
        ),
        (
            ["match:", "  session_age_over_seconds: 60", "  for_seconds: 30", STOP],
            "F:12: policies[0].match.for_seconds: only applies to max_sessions: a session age "
            "is its own duration",
        ),
        ([STOP], "F:9: policies[0].match: required key is missing"),
    ],
)
def test_a_match_needs_exactly_one_condition(
    tmp_path: Path, keys: list[str], expected: str
) -> None:
    assert problems(tmp_path, with_policy(*keys)) == [expected]


def test_for_seconds_zero_is_allowed_with_an_age(tmp_path: Path) -> None:
    text = with_policy("match: {session_age_over_seconds: 60, for_seconds: 0}", STOP)
    assert load(tmp_path, text).policies[0].match.for_seconds == 0


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            ["match:", "  max_session: 8", STOP],
            "F:11: policies[0].match.max_session: unknown key; did you mean 'max_sessions'?",
        ),
        (
            [AGE, STOP, "dryrun: false"],
            "F:12: policies[0].dryrun: unknown key; did you mean 'dry_run'?",
        ),
        (
            [AGE, STOP, "max_action_per_cycle: 1"],
            "F:12: policies[0].max_action_per_cycle: unknown key; did you mean "
            "'max_actions_per_cycle'?",
        ),
        (
            [AGE, STOP, "notify:", "  - url: https://h/x", "    timeout: 3"],
            "F:14: policies[0].notify[0].timeout: unknown key; did you mean 'timeout_seconds'?",
        ),
    ],
)
def test_an_unknown_policy_key_is_an_error_with_a_suggestion(
    tmp_path: Path, keys: list[str], expected: str
) -> None:
    assert problems(tmp_path, with_policy(*keys)) == [expected]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["match: {max_sessions: true}", STOP], "F:10: policies[0].match.max_sessions"),
        (
            ["match: {session_age_over_seconds: true}", STOP],
            "F:10: policies[0].match.session_age_over_seconds",
        ),
        (
            ["match: {max_sessions: 1, for_seconds: true}", STOP],
            "F:10: policies[0].match.for_seconds",
        ),
        ([AGE, STOP, "max_actions_per_cycle: true"], "F:12: policies[0].max_actions_per_cycle"),
        ([AGE, STOP, "max_actions_percent: false"], "F:12: policies[0].max_actions_percent"),
        (
            [AGE, STOP, "notify: [{url: 'https://h/x', timeout_seconds: true}]"],
            "F:12: policies[0].notify[0].timeout_seconds",
        ),
    ],
)
def test_true_is_not_a_number_in_a_policy(tmp_path: Path, keys: list[str], expected: str) -> None:
    assert problems(tmp_path, with_policy(*keys)) == [
        f"{expected}: must be a number, not true/false"
    ]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            ["match: {session_age_over_seconds: 0}", STOP],
            "F:10: policies[0].match.session_age_over_seconds: Input should be greater than 0",
        ),
        (
            ["match: {session_age_over_seconds: .inf}", STOP],
            "F:10: policies[0].match.session_age_over_seconds: Input should be a finite number",
        ),
        (
            ["match: {max_sessions: -1}", STOP],
            "F:10: policies[0].match.max_sessions: Input should be greater than or equal to 0",
        ),
        (
            ["match: {max_sessions: 1.5}", STOP],
            "F:10: policies[0].match.max_sessions: must be a whole number",
        ),
        (
            ["match: {max_sessions: 1, for_seconds: -1}", STOP],
            "F:10: policies[0].match.for_seconds: Input should be greater than or equal to 0",
        ),
        (
            [AGE, STOP, "max_actions_per_cycle: 0"],
            "F:12: policies[0].max_actions_per_cycle: Input should be greater than or equal to 1",
        ),
        (
            [AGE, STOP, "max_actions_per_cycle: 10001"],
            "F:12: policies[0].max_actions_per_cycle: Input should be less than or equal to 10000",
        ),
        (
            [AGE, STOP, "max_actions_percent: 0"],
            "F:12: policies[0].max_actions_percent: Input should be greater than 0",
        ),
        (
            [AGE, STOP, "max_actions_percent: 100.5"],
            "F:12: policies[0].max_actions_percent: Input should be less than or equal to 100",
        ),
        (
            [AGE, "action: stop"],
            "F:11: policies[0].action: Input should be 'stop_sessions' or 'close_all'",
        ),
        (
            [QUOTA, STOP, "select: random"],
            "F:12: policies[0].select: Input should be 'newest' or 'oldest'",
        ),
        ([AGE, STOP, "dry_run: maybe"], "F:12: policies[0].dry_run: must be true or false"),
        ([AGE], "F:9: policies[0].action: required key is missing"),
    ],
)
def test_a_policy_value_out_of_range_is_an_error_on_its_line(
    tmp_path: Path, keys: list[str], expected: str
) -> None:
    assert problems(tmp_path, with_policy(*keys)) == [expected]


# -- combinations


def test_select_is_allowed_with_max_sessions_and_its_default_with_an_age(tmp_path: Path) -> None:
    assert load(tmp_path, with_policy(QUOTA, STOP, "select: oldest")).policies[0].select == "oldest"
    assert load(tmp_path, with_policy(AGE, STOP, "select: newest")).policies[0].select == "newest"


def test_select_oldest_with_an_age_match_is_an_error(tmp_path: Path) -> None:
    assert problems(tmp_path, with_policy(AGE, STOP, "select: oldest")) == [
        "F:12: policies[0].select: only applies to max_sessions: with session_age_over_seconds "
        "every matching session is closed, so it would be silently meaningless"
    ]


def test_confirm_app_id_is_only_for_close_all(tmp_path: Path) -> None:
    assert problems(tmp_path, with_policy(QUOTA, STOP, f'confirm_app_id: "{APP_ID}"')) == [
        "F:12: policies[0].confirm_app_id: only applies to close_all policies; remove it"
    ]


def test_every_combination_problem_of_a_policy_is_listed_at_once(tmp_path: Path) -> None:
    text = with_policy(
        "match:",
        "  session_age_over_seconds: 60",
        "  for_seconds: 5",
        STOP,
        "select: oldest",
        f'confirm_app_id: "{APP_ID}"',
    )
    assert [line.split(": ", 2)[:2] for line in problems(tmp_path, text)] == [
        ["F:12", "policies[0].match.for_seconds"],
        ["F:14", "policies[0].select"],
        ["F:15", "policies[0].confirm_app_id"],
    ]


# -- selecting apps


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            ["apps: [frontdsk]"],
            "F:12: policies[0].apps: matches no app: check apps/exclude_apps; "
            "did you mean 'frontdesk'?",
        ),
        (["apps: ['zzz*']"], "F:12: policies[0].apps: matches no app: check apps/exclude_apps"),
        (
            ["apps: [lobbby]"],
            "F:12: policies[0].apps: matches no app: check apps/exclude_apps; did you mean "
            "'lobby'?",
        ),
        (
            ["apps: ['Frontdesk']"],  # matching is case-sensitive
            "F:12: policies[0].apps: matches no app: check apps/exclude_apps; "
            "did you mean 'frontdesk'?",
        ),
        (
            ["exclude_apps: ['*']"],
            "F:12: policies[0].exclude_apps: matches no app: check apps/exclude_apps "
            "(it excludes every app `apps` selects)",
        ),
        (
            ["apps: [frontdesk]", f'exclude_apps: ["{APP_ID}"]'],
            "F:13: policies[0].exclude_apps: matches no app: check apps/exclude_apps "
            "(it excludes every app `apps` selects)",
        ),
    ],
)
def test_a_policy_that_selects_no_app_is_an_error(
    tmp_path: Path, keys: list[str], expected: str
) -> None:
    assert problems(tmp_path, with_policy(AGE, STOP, *keys)) == [expected]


def test_a_policy_that_selects_no_app_after_an_env_override_of_the_apps_is_an_error(
    tmp_path: Path,
) -> None:
    apps = json.dumps([{"app_id": "42", "name": "other", "app_key": SECRET}])
    assert problems(tmp_path, with_policy(AGE, STOP, "apps: [frontdesk]"), DUIXWATCH_APPS=apps) == [
        "F:12: policies[0].apps: matches no app: check apps/exclude_apps"
    ]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["apps: []"], 'F:12: policies[0].apps: must not be empty: write ["*"] for every app'),
        (["apps: frontdesk"], "F:12: policies[0].apps: must be a list"),
        (["apps: [1234]"], "F:12: policies[0].apps[0]: must be a string (quote it)"),
        (["apps:", "  - lobby", '  - "  "'], "F:14: policies[0].apps[1]: must not be empty"),
        (["exclude_apps: ['']"], "F:12: policies[0].exclude_apps[0]: must not be empty"),
        (
            ["protect_sessions: [null]"],
            "F:12: policies[0].protect_sessions[0]: must be a string (quote it)",
        ),
    ],
)
def test_app_and_session_patterns_must_be_strings(
    tmp_path: Path, keys: list[str], expected: str
) -> None:
    assert problems(tmp_path, with_policy(AGE, STOP, *keys)) == [expected]


def _app(name: str, app_id: str) -> settings.AppConfig:
    return settings.AppConfig(app_id=app_id, name=name, app_key=SecretStr(SECRET))


FRONTDESK = _app("frontdesk", APP_ID)
LOBBY = _app("lobby", OTHER_ID)


def _policy(**overrides: object) -> settings.PolicyConfig:
    fields: dict[str, object] = {
        "name": "p",
        "match": {"max_sessions": 1},
        "action": "stop_sessions",
    }
    return settings.PolicyConfig.model_validate({**fields, **overrides})


@pytest.mark.parametrize(
    ("apps", "exclude", "selected"),
    [
        (("*",), (), {"frontdesk", "lobby"}),
        (("frontdesk",), (), {"frontdesk"}),
        ((OTHER_ID,), (), {"lobby"}),
        (("front*",), (), {"frontdesk"}),
        (("137718542295381196?",), (), {"frontdesk", "lobby"}),
        (("*8",), (), {"frontdesk"}),  # a glob over the app_id
        (("[fl]o*",), (), {"lobby"}),  # [] globs: f or l, then o
        (("lobby", "frontdesk"), (), {"frontdesk", "lobby"}),
        (("FRONTDESK",), (), set()),  # case-sensitive
        (("*",), ("lobby",), {"frontdesk"}),
        (("*",), (OTHER_ID,), {"frontdesk"}),  # excluded by id, included by name
        (("lobby",), ("*9",), set()),  # excluded by an id glob: exclusions win
        (("frontdesk", "lobby"), ("*",), set()),
        (("front*",), ("lobby",), {"frontdesk"}),  # excluding what is not included is no-op
    ],
)
def test_selects_matches_names_ids_and_globs_and_exclusions_win(
    apps: tuple[str, ...], exclude: tuple[str, ...], selected: set[str]
) -> None:
    policy = _policy(apps=apps, exclude_apps=exclude)
    assert {app.name for app in (FRONTDESK, LOBBY) if policy.selects(app)} == selected


@pytest.mark.parametrize(
    ("globs", "session_id", "protected"),
    [
        ((), "s-1", False),
        (("s-1",), "s-1", True),
        (("s-1",), "s-10", False),
        (("vip-*",), "vip-42", True),
        (("vip-*",), "VIP-42", False),  # case-sensitive
        (("demo-?",), "demo-7", True),
        (("demo-?",), "demo-77", False),
        (("a*", "[0-9]*"), "7f3a", True),
        (("a*", "[0-9]*"), "f3a", False),
    ],
)
def test_protects_matches_session_id_globs(
    globs: tuple[str, ...], session_id: str, protected: bool
) -> None:
    assert _policy(protect_sessions=globs).protects(session_id) is protected


# -- names


@pytest.mark.parametrize(
    ("policies", "expected"),
    [
        (
            "  - match: {}\n",
            [
                "F:9: policies[0].name: required key is missing",
                "F:9: policies[0].action: required key is missing",
            ],
        ),
        (
            f"  - name: Max_Age\n    {AGE}\n    {STOP}\n",
            [
                "F:9: policies[0].name: 'Max_Age' is not a valid policy name: 1 to 63 of "
                "lower-case letters, digits and '-', starting with a letter"
            ],
        ),
        (
            f"  - name: {'a' * 64}\n    {AGE}\n    {STOP}\n",
            [
                f"F:9: policies[0].name: '{'a' * 64}' is not a valid policy name: 1 to 63 of "
                "lower-case letters, digits and '-', starting with a letter"
            ],
        ),
        (
            f"  - name: 12\n    {AGE}\n    {STOP}\n",
            ["F:9: policies[0].name: must be a string (quote it)"],
        ),
        (
            f"  - name: a\n    {AGE}\n    {STOP}\n  - name: a\n    {QUOTA}\n    {STOP}\n",
            ["F:12: policies[1].name: duplicate policy name (also policies[0])"],
        ),
        ("  - just-a-string\n", ["F:9: policies[0]: must be a mapping"]),
    ],
)
def test_policies_need_unique_valid_names(
    tmp_path: Path, policies: str, expected: list[str]
) -> None:
    assert problems(tmp_path, TWO_APPS + "policies:\n" + policies) == expected


def test_a_policy_name_of_63_characters_is_valid(tmp_path: Path) -> None:
    text = TWO_APPS + f"policies:\n  - name: a{'-0' * 31}\n    {AGE}\n    {STOP}\n"
    assert len(load(tmp_path, text).policies[0].name) == 63


def test_a_duplicate_name_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    text = TWO_APPS + (
        "policies:\n"
        "  - name: a\n"
        "    match: {max_sessions: x}\n"
        f"    {STOP}\n"
        "  - name: a\n"
        f"    {AGE}\n"
        f"    {STOP}\n"
        "    select: oldest\n"
    )
    assert problems(tmp_path, text) == [
        "F:10: policies[0].match.max_sessions: must be a whole number",
        "F:12: policies[1].name: duplicate policy name (also policies[0])",
        "F:15: policies[1].select: only applies to max_sessions: with session_age_over_seconds "
        "every matching session is closed, so it would be silently meaningless",
    ]


# -- notify


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "{url: 'ftp://zz-hook-secret.example.com/'}",
            "url: must be an http:// or https:// URL with a host",
        ),
        ("{url: 'https://'}", "url: must be an http:// or https:// URL with a host"),
        (
            "{url: 'hooks.slack.com/services/zz-hook-secret'}",
            "url: must be an http:// or https:// URL with a host",
        ),
        (
            "{url: 'https://h:port/zz-hook-secret'}",
            "url: must be an http:// or https:// URL with a host",
        ),
        (
            "{url: 'https://[::1/zz-hook-secret'}",
            "url: must be an http:// or https:// URL with a host",
        ),
        (
            "{url: 'https://h/zz-hook secret'}",
            "url: must be an http:// or https:// URL with a host, without spaces or control "
            "characters",
        ),
        ("{url: 8}", "url: must be a string (quote it)"),
        ("{headers: {}}", "url: required key is missing"),
        (
            "{url: 'https://h/x', timeout_seconds: 0}",
            "timeout_seconds: Input should be greater than 0",
        ),
        (
            "{url: 'https://h/x', timeout_seconds: 61}",
            "timeout_seconds: Input should be less than or equal to 60",
        ),
        ("{url: 'https://h/x', headers: [a]}", "headers: must be a mapping"),
        (
            "{url: 'https://h/x', headers: {X-Token: zz-hook-secret, x-token: zz-hook-secret}}",
            "headers: 'x-token' and 'X-Token' are the same header (names ignore case)",
        ),
        (
            "{url: 'https://h/x', headers: {'Bad Name': zz-hook-secret}}",
            "headers.Bad Name: 'Bad Name' is not a valid HTTP header name",
        ),
        (
            '{url: "https://h/x", headers: {X-A: "zz-hook-secret\\nInjected: 1"}}',
            "headers.X-A: a header value must not contain line breaks or NUL",
        ),
        ("{url: 'https://h/x', headers: {X-A: 5}}", "headers.X-A: must be a string (quote it)"),
    ],
)
def test_a_bad_notify_target_is_an_error_that_never_quotes_the_url_or_a_header_value(
    tmp_path: Path, target: str, expected: str
) -> None:
    found = problems(tmp_path, with_policy(AGE, STOP, f"notify: [{target}]"))
    assert found == [f"F:12: policies[0].notify[0].{expected}"]
    assert "zz-hook-secret" not in "\n".join(found)


def test_notify_must_be_a_list_of_targets(tmp_path: Path) -> None:
    assert problems(tmp_path, with_policy(AGE, STOP, "notify: {url: 'https://h/x'}")) == [
        "F:12: policies[0].notify: must be a list"
    ]


def test_mask_hides_the_webhook_path_and_every_header_value(tmp_path: Path) -> None:
    text = with_policy(
        AGE,
        STOP,
        "notify:",
        "  - url: ${SLACK_WEBHOOK_URL}",
        "  - url: http://[::1]:8080/hook?token=${TOKEN}",
        "    headers:",
        "      Authorization: Bearer ${TOKEN}",
        "      X-Plain: not-secret-but-masked",
        "  - url: https://ops.example.com",
    )
    hook = "https://hooks.slack.com/services/T000/B000/zz-webhook-secret"
    cfg = load(tmp_path, text, SLACK_WEBHOOK_URL=hook, TOKEN="zz-token-secret")
    assert cfg.policies[0].notify[1].headers["Authorization"] == "Bearer zz-token-secret"
    masked = settings.mask(cfg)
    dumped = json.dumps(masked)
    for secret in ("zz-webhook-secret", "zz-token-secret", "not-secret-but-masked", SECRET):
        assert secret not in dumped
    assert masked["policies"][0]["notify"] == [
        {"url": "https://hooks.slack.com/**********", "headers": {}, "timeout_seconds": 5.0},
        {
            "url": "http://[::1]:8080/**********",
            "headers": {"Authorization": "**********", "X-Plain": "**********"},
            "timeout_seconds": 5.0,
        },
        {"url": "https://ops.example.com", "headers": {}, "timeout_seconds": 5.0},
    ]
    assert masked["policies"][0]["match"] == {
        "session_age_over_seconds": 2700.0,
        "max_sessions": None,
        "for_seconds": 0.0,
    }
    for shown in (repr(cfg), str(cfg), repr(cfg.policies[0]), repr(cfg.policies[0].notify)):
        assert "zz-webhook-secret" not in shown
        assert "zz-token-secret" not in shown


# -- close_all


CLOSE_ALL_APPS = (
    TWO_APPS
    + """enforcement:
  allow_close_all: ALLOW
policies:
  - name: emergency-drain
    apps: [frontdesk]
    match: {max_sessions: 50, for_seconds: 300}
    action: close_all
"""
)


def close_all(allow: bool = True, confirm: str | None = APP_ID, apps: str = "[frontdesk]") -> str:
    """Two apps, ``enforcement`` on lines 8-9, a close_all policy from line 11 (apps: 12)."""
    text = CLOSE_ALL_APPS.replace("ALLOW", "true" if allow else "false")
    text = text.replace("apps: [frontdesk]", f"apps: {apps}")
    if confirm is not None:
        text += f'    confirm_app_id: "{confirm}"\n'
    return text


def test_a_close_all_policy_loads_when_allowed_and_confirmed(tmp_path: Path) -> None:
    cfg = load(tmp_path, close_all())
    [policy] = cfg.policies
    assert policy.action == "close_all"
    assert [app.name for app in cfg.apps if policy.selects(app)] == ["frontdesk"]


@pytest.mark.parametrize(
    "apps", ['["front*"]', f'["{APP_ID}"]', '["*"]\n    exclude_apps: [lobby]']
)
def test_a_close_all_policy_may_select_its_one_app_by_glob_or_id(tmp_path: Path, apps: str) -> None:
    assert load(tmp_path, close_all(apps=apps)).policies[0].confirm_app_id == APP_ID


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


def test_a_close_all_confirm_app_id_must_be_an_app_id(tmp_path: Path) -> None:
    text = close_all(confirm=None) + f"    confirm_app_id: {APP_ID}\n"
    assert problems(tmp_path, text) == [
        f"F:15: policies[0].confirm_app_id: {APP_ID} is written as a number too large to "
        f'survive tools that read numbers as floats; quote it: "{APP_ID}"'
    ]
    text = close_all(confirm=None) + "    confirm_app_id: frontdesk\n"
    assert problems(tmp_path, text) == ["F:15: policies[0].confirm_app_id: must be 1 to 32 digits"]


@pytest.mark.parametrize(
    ("apps", "which"),
    [("[frontdesk, lobby]", "2 (frontdesk, lobby)"), ('["*"]', "2 (frontdesk, lobby)")],
)
def test_a_close_all_policy_must_select_exactly_one_app(
    tmp_path: Path, apps: str, which: str
) -> None:
    assert problems(tmp_path, close_all(apps=apps)) == [
        f"F:12: policies[0].apps: a close_all policy must apply to exactly one app; "
        f"it selects {which}",
    ]


def test_a_close_all_policy_that_selects_no_app_says_so_once(tmp_path: Path) -> None:
    assert problems(tmp_path, close_all(apps="[x]", confirm=None)) == [
        "F:11: policies[0]: a close_all policy needs confirm_app_id: the app_id of the one app "
        "it applies to",
        "F:12: policies[0].apps: matches no app: check apps/exclude_apps",
    ]


def test_a_close_all_policy_must_list_its_app(tmp_path: Path) -> None:
    text = close_all().replace("    apps: [frontdesk]\n", "")
    assert problems(tmp_path, text) == [
        "F:11: policies[0]: a close_all policy must name its one app in `apps`"
    ]


def test_a_close_all_policy_needs_max_sessions(tmp_path: Path) -> None:
    text = close_all().replace(
        "match: {max_sessions: 50, for_seconds: 300}", "match: {session_age_over_seconds: 60}"
    )
    assert problems(tmp_path, text) == [
        "F:13: policies[0].match.session_age_over_seconds: a close_all policy needs "
        "max_sessions: draining an app because one session is old makes no sense (use "
        "stop_sessions to close old sessions)"
    ]


def test_a_close_all_policy_cannot_protect_sessions(tmp_path: Path) -> None:
    assert problems(tmp_path, close_all() + '    protect_sessions: ["vip-*"]\n') == [
        "F:16: policies[0].protect_sessions: close_all ends every session of the app and cannot "
        "spare any: use stop_sessions to protect sessions"
    ]
    assert (
        load(tmp_path, close_all() + "    protect_sessions: []\n").policies[0].protect_sessions
        == ()
    )


def test_allow_close_all_from_env_counts(tmp_path: Path) -> None:
    text = close_all(allow=False)
    cfg = load(tmp_path, text, DUIXWATCH_ENFORCEMENT__ALLOW_CLOSE_ALL="true")
    assert cfg.enforcement.allow_close_all is True


# -- policies from the environment and from code


def test_a_bad_policy_in_env_json_names_the_variable(tmp_path: Path) -> None:
    policies = [
        {"name": "a", "match": {"max_session": 1}, "action": "stop_sessions"},
        {"name": "b", "apps": ["nope"], "match": {"max_sessions": 1}, "action": "stop_sessions"},
    ]
    assert problems(tmp_path, TWO_APPS, DUIXWATCH_POLICIES=json.dumps(policies)) == [
        "F: policies[0].match.max_session: unknown key; did you mean 'max_sessions'? "
        "(from env DUIXWATCH_POLICIES)",
        "F: policies[1].apps: matches no app: check apps/exclude_apps (from env "
        "DUIXWATCH_POLICIES)",
    ]


def test_a_policy_built_in_code_checks_its_own_combinations() -> None:
    with pytest.raises(ValidationError, match="needs one of session_age_over_seconds"):
        settings.PolicyMatch()
    with pytest.raises(ValidationError, match="for_seconds: only applies to max_sessions"):
        settings.PolicyMatch(session_age_over_seconds=1, for_seconds=1)
    with pytest.raises(ValidationError, match="protect_sessions: close_all ends every session"):
        _policy(action="close_all", protect_sessions=["x"], confirm_app_id=APP_ID)
    with pytest.raises(ValidationError, match="select: only applies to max_sessions"):
        _policy(match={"session_age_over_seconds": 1}, select="oldest")
    with pytest.raises(ValidationError, match="confirm_app_id: only applies to close_all"):
        _policy(confirm_app_id=APP_ID)
    with pytest.raises(ValidationError, match="must be a number, not true/false"):
        settings.PolicyMatch(max_sessions=True)


def test_a_config_built_in_code_enforces_the_cross_field_rules_too() -> None:
    policy = _policy(name="drain", apps=["frontdesk"], action="close_all")
    with pytest.raises(ValidationError, match="allow_close_all"):
        settings.Config(apps=(FRONTDESK,), policies=(policy,))
    allowed = settings.EnforcementSettings(allow_close_all=True)
    confirmed = policy.model_copy(update={"confirm_app_id": APP_ID})
    assert settings.Config(apps=(FRONTDESK,), enforcement=allowed, policies=(confirmed,)).policies
    with pytest.raises(ValidationError, match=r"policies\[0\]\.apps: matches no app"):
        settings.Config(apps=(LOBBY,), policies=(_policy(apps=["frontdesk"]),))
    with pytest.raises(ValidationError, match=r"policies\[1\]\.name: duplicate policy name"):
        settings.Config(apps=(LOBBY,), policies=(_policy(), _policy()))


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
