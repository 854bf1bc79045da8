"""The policies section as the loader reads it: kinds, combinations, selection, names, notify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from duixwatch import config as settings
from duixwatch.policy.kinds import SessionAge, SessionCount
from duixwatch.policy.notify import NotifyTarget
from duixwatch.policy.schema import PolicyConfig
from tests.config.support import (
    AGE,
    APP_ID,
    OTHER_ID,
    QUOTA,
    SECRET,
    STOP,
    TWO_APPS,
    load,
    problems,
    with_policy,
)


def test_a_policy_gets_every_default(tmp_path: Path) -> None:
    [policy] = load(tmp_path, with_policy(AGE, STOP)).policies
    assert policy == PolicyConfig(
        name="p",
        apps=("*",),
        exclude_apps=(),
        protect_sessions=(),
        match=SessionAge(session_age_over_seconds=2700, for_seconds=0),
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
    assert policy.match == SessionCount(max_sessions=0, for_seconds=30.5)
    assert (policy.select, policy.dry_run) == ("oldest", False)
    assert (policy.max_actions_per_cycle, policy.max_actions_percent) == (10000, 100)
    assert policy.notify == (
        NotifyTarget(
            url="http://127.0.0.1:9/hook",
            headers={"X-Token": "abc", "Content-Type": "application/json"},
            timeout_seconds=60,
        ),
        NotifyTarget(url="https://hooks.slack.com/services/T/B/x"),
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


def _policy(**overrides: object) -> PolicyConfig:
    fields: dict[str, object] = {
        "name": "p",
        "match": {"max_sessions": 1},
        "action": "stop_sessions",
    }
    return PolicyConfig.model_validate({**fields, **overrides})


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
        "for_seconds": 0.0,
    }
    for shown in (repr(cfg), str(cfg), repr(cfg.policies[0]), repr(cfg.policies[0].notify)):
        assert "zz-webhook-secret" not in shown
        assert "zz-token-secret" not in shown


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
        _policy(match={})
    with pytest.raises(ValidationError, match=r"match\.for_seconds: only applies to max_sessions"):
        _policy(match={"session_age_over_seconds": 1, "for_seconds": 1})
    with pytest.raises(ValidationError, match="protect_sessions: close_all ends every session"):
        _policy(action="close_all", protect_sessions=["x"], confirm_app_id=APP_ID)
    with pytest.raises(ValidationError, match="select: only applies to max_sessions"):
        _policy(match={"session_age_over_seconds": 1}, select="oldest")
    with pytest.raises(ValidationError, match="confirm_app_id: only applies to close_all"):
        _policy(confirm_app_id=APP_ID)
    with pytest.raises(ValidationError, match="must be a number, not true/false"):
        SessionCount(max_sessions=True)


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
