"""close_all policies: allowed, confirmed, one app (design.md §8 rule 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.support import (
    APP_ID,
    OTHER_ID,
    TWO_APPS,
    load,
    problems,
)

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
