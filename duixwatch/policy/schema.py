"""The schema of one policy (an entry of ``policies:``, design.md §4 and §8).

A policy applies to the apps :meth:`PolicyConfig.selects` says, never touches the sessions
:meth:`PolicyConfig.protects` says, matches as its match kind (:mod:`duixwatch.policy.kinds`)
decides, and does nothing when its matches exceed ``max_actions_per_cycle`` or
``max_actions_percent`` of the app's live sessions.

Its rules across fields (:meth:`PolicyConfig.problems`) run when a policy is built in code; the
config loader runs them itself, to report each with its line (:mod:`duixwatch.core.fields`).
The rules that need the other sections — a policy selects at least one app, ``close_all`` names
exactly one and is allowed — are the config's (:mod:`duixwatch.config.checks`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Literal, Protocol, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from duixwatch.core.fields import (
    AppId,
    Pattern,
    Problems,
    Section,
    deferred,
    label_name,
    matches_any,
    raise_problems,
)
from duixwatch.policy import kinds
from duixwatch.policy.notify import NotifyTarget

__all__ = ["AppRef", "PolicyConfig", "protected"]


class AppRef(Protocol):
    """An app as a policy selects it: by its name or its app_id."""

    @property
    def name(self) -> str: ...
    @property
    def app_id(self) -> str: ...


class PolicyConfig(Section):
    """One enforcement policy, evaluated per app every poll cycle."""

    #: ``^[a-z][a-z0-9-]*$``, at most 63 characters, unique: a metric label and an audit field.
    name: str
    #: App names, app ids or :mod:`fnmatch` globs over either.
    apps: tuple[Pattern, ...] = ("*",)
    #: Same; an app matching one of these is never selected (exclusions win).
    exclude_apps: tuple[Pattern, ...] = ()
    #: :mod:`fnmatch` globs over session ids: matching sessions are never touched.
    protect_sessions: tuple[Pattern, ...] = ()
    match: kinds.Kind
    action: Literal["stop_sessions", "close_all"]
    #: With ``max_sessions``: which sessions are the excess, the newest or the oldest.
    select: Literal["newest", "oldest"] = "newest"
    dry_run: bool = True
    max_actions_per_cycle: int = Field(default=10, ge=1, le=10_000)
    max_actions_percent: float = Field(default=50.0, gt=0, le=100)
    #: ``close_all`` only: the app_id of the one app the policy applies to.
    confirm_app_id: AppId | None = None
    notify: tuple[NotifyTarget, ...] = ()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return label_name(value, "policy")

    @field_validator("apps")
    @classmethod
    def _some_apps(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('must not be empty: write ["*"] for every app')
        return value

    @model_validator(mode="after")
    def _combinations(self, info: ValidationInfo) -> Self:
        if not deferred(info):
            raise_problems(self.problems())
        return self

    def problems(self) -> Problems:
        """What is wrong with this policy on its own (paths relative to it)."""
        found = self.match.problems(self)
        if self.action == "close_all":
            if self.protect_sessions:
                found.append(
                    (
                        ("protect_sessions",),
                        "close_all ends every session of the app and cannot spare any: use "
                        "stop_sessions to protect sessions",
                    )
                )
        elif self.confirm_app_id is not None:
            found.append((("confirm_app_id",), "only applies to close_all policies; remove it"))
        return found

    def selects(self, app: AppRef) -> bool:
        """Whether this policy applies to ``app``: its name or app_id matches a pattern of
        ``apps`` and none of ``exclude_apps`` (exclusions win)."""
        return matches_any(self.apps, app.name, app.app_id) and not matches_any(
            self.exclude_apps, app.name, app.app_id
        )

    def protects(self, session_id: str) -> bool:
        """Whether ``session_id`` matches a ``protect_sessions`` glob (never to be touched)."""
        return protected(self.protect_sessions, session_id)


def protected(globs: Iterable[str], session_id: str) -> bool:
    """Whether ``session_id`` matches one of ``protect_sessions``-style ``globs``."""
    return any(fnmatch.fnmatchcase(session_id, glob) for glob in globs)
