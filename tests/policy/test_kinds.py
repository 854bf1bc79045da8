"""policy.kinds: a policy's match kind is chosen by its key, and each kind checks itself."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from duixwatch.core.fields import DEFER_CROSS_CHECKS
from duixwatch.policy import kinds
from duixwatch.policy.schema import PolicyConfig


def policy(match: Any, **values: Any) -> PolicyConfig:
    """A policy validated the way the loader does: its rules across fields deferred."""
    data: dict[str, Any] = {"name": "p", "action": "stop_sessions", "match": match, **values}
    return PolicyConfig.model_validate(data, context={DEFER_CROSS_CHECKS: True})


@pytest.mark.parametrize(
    ("match", "kind"),
    [
        ({"session_age_over_seconds": 2700}, kinds.SessionAge),
        ({"max_sessions": 8, "for_seconds": 60}, kinds.SessionCount),
        ({"max_sessions": 0}, kinds.SessionCount),
        ({}, kinds.Undecided),
        ({"max_sessions": 8, "session_age_over_seconds": 60}, kinds.Undecided),
    ],
)
def test_the_key_a_match_holds_chooses_its_kind(match: dict[str, Any], kind: type) -> None:
    assert type(policy(match).match) is kind


def test_the_union_holds_every_kind_and_the_undecided_one() -> None:
    (union, _discriminator) = get_args(kinds.Kind)
    members = {get_args(member)[0] for member in get_args(union)}
    assert members == {*kinds.KINDS, kinds.Undecided}


def test_an_undecided_match_accepts_exactly_the_keys_of_the_kinds() -> None:
    """So that a typo is reported as an unknown key with the right suggestion."""
    keys = {name for kind in kinds.KINDS for name in kind.model_fields}
    assert set(kinds.Undecided.model_fields) == keys


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ({}, "needs one of session_age_over_seconds or max_sessions"),
        (
            {"max_sessions": 1, "session_age_over_seconds": 2},
            "give either session_age_over_seconds or max_sessions, not both (write two policies "
            "for both)",
        ),
    ],
)
def test_an_undecided_match_is_a_problem_of_its_policy(match: dict[str, Any], message: str) -> None:
    assert policy(match).problems() == [(("match",), message)]
    with pytest.raises(ValidationError, match=message.split(" (")[0]):
        PolicyConfig(name="p", action="stop_sessions", match=match)


def test_a_session_age_knows_what_makes_no_sense_with_it() -> None:
    found = policy(
        {"session_age_over_seconds": 60, "for_seconds": 5},
        action="close_all",
        select="oldest",
        confirm_app_id="1",
    ).problems()
    assert [path for path, _ in found] == [
        ("match", "for_seconds"),
        ("select",),
        ("match", "session_age_over_seconds"),
    ]


def test_a_session_count_takes_every_combination() -> None:
    assert policy({"max_sessions": 3, "for_seconds": 9}, select="oldest").problems() == []


def test_a_kind_key_is_left_out_of_an_error_location() -> None:
    assert kinds.key_path(("policies", 0, "match", "max_sessions", "max_sessions")) == (
        "policies",
        0,
        "match",
        "max_sessions",
    )
    assert kinds.key_path(("policies", 1, "match", "undecided", "max_session")) == (
        "policies",
        1,
        "match",
        "max_session",
    )
    assert kinds.key_path(("apps", 0, "max_sessions")) == ("apps", 0, "max_sessions")


def test_a_match_that_is_not_a_mapping_says_so() -> None:
    with pytest.raises(ValidationError) as caught:
        policy(5)
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [(("match",), "dict_type")]
