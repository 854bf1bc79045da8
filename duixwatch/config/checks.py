"""The rules across sections (design.md §8 rule 5 among them), each problem at its key path.

Unique app names and ids, policy, target and probe names; each policy's own rules
(:meth:`~duixwatch.policy.schema.PolicyConfig.problems`); every policy and target selecting at
least one app (a typo must not silently disable a safety policy); and ``close_all`` allowed,
applied to exactly one app, and confirmed by that app's id.

The rules look at :class:`Facts`, which the schema builds from a validated config and the loader
from raw data when the whole file does not validate (so that a duplicate name is reported
together with, not after, an unrelated type error). Problems are ``(key path, message)``; the
loader gives each its line, a config built in code raises them together.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from duixwatch.core.fields import KeyPath, Problems, matches_any
from duixwatch.policy.schema import PolicyConfig

__all__ = ["AppRef", "Facts", "TargetRef", "cross_check"]


@dataclass(frozen=True, slots=True)
class AppRef:
    """An app as the rules see it: where it is in ``apps``, its name and id."""

    index: int
    name: str
    app_id: str


@dataclass(frozen=True, slots=True)
class TargetRef:
    """A scaling target as the rules see it."""

    name: str
    apps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules across sections look at (indexes are positions in their lists)."""

    apps: list[AppRef]
    policies: list[tuple[int, PolicyConfig]]
    policy_names: list[tuple[int, str]]
    allow_close_all: bool
    targets: list[tuple[int, TargetRef]] = field(default_factory=list)
    probe_names: list[tuple[int, str]] = field(default_factory=list)


def _duplicate_names(names: list[tuple[int, str]], section: str, kind: str) -> Problems:
    """``section[i].name`` given again: the second and later ones, each naming the first."""
    first: dict[str, int] = {}
    problems: Problems = []
    for index, name in names:
        if name in first:
            message = f"duplicate {kind} name (also {section}[{first[name]}])"
            problems.append(((section, index, "name"), message))
        else:
            first[name] = index
    return problems


def cross_check(facts: Facts) -> Problems:
    """Rules across fields: unique names and ids, policy combinations, selection, close_all."""
    problems: Problems = []
    names: dict[str, int] = {}
    ids: dict[str, int] = {}
    for app in facts.apps:
        if app.name in names:
            problems.append(
                (
                    ("apps", app.index, "name"),
                    f"duplicate app name {app.name!r} (also apps[{names[app.name]}])",
                )
            )
        else:
            names[app.name] = app.index
        if app.app_id in ids:
            problems.append(
                (
                    ("apps", app.index, "app_id"),
                    f"duplicate app_id {app.app_id!r} (also apps[{ids[app.app_id]}])",
                )
            )
        else:
            ids[app.app_id] = app.index
    problems += _duplicate_names(facts.policy_names, "policies", "policy")
    problems += _duplicate_names(facts.probe_names, "dialog_probes", "probe")
    for index, policy in facts.policies:
        here: KeyPath = ("policies", index)
        problems += [((*here, *path), message) for path, message in policy.problems()]
        selected = [app for app in facts.apps if policy.selects(app)]
        if not selected:
            problems.append(_selects_nothing(facts, policy, here))
        if policy.action == "close_all":
            problems += _check_close_all(facts, policy, here, selected)
    target_names: dict[str, int] = {}
    for index, target in facts.targets:
        here = ("scaling", "targets", index)
        if target.name in target_names:
            problems.append(
                (
                    (*here, "name"),
                    f"duplicate target name (also scaling.targets[{target_names[target.name]}])",
                )
            )
        else:
            target_names[target.name] = index
        if not any(matches_any(target.apps, app.name, app.app_id) for app in facts.apps):
            problems.append(((*here, "apps"), "matches no app: check the names, ids and globs"))
    return problems


def _selects_nothing(facts: Facts, policy: PolicyConfig, here: KeyPath) -> tuple[KeyPath, str]:
    """The problem of a policy that selects no app: a typo must not disable a safety policy."""
    message = "matches no app: check apps/exclude_apps"
    included = any(matches_any(policy.apps, app.name, app.app_id) for app in facts.apps)
    if included:
        return (*here, "exclude_apps"), f"{message} (it excludes every app `apps` selects)"
    known = [app.name for app in facts.apps] + [app.app_id for app in facts.apps]
    for pattern in policy.apps:
        close = difflib.get_close_matches(pattern, known, n=1)
        if close:
            return (*here, "apps"), f"{message}; did you mean {close[0]!r}?"
    return (*here, "apps"), message


def _check_close_all(
    facts: Facts, policy: PolicyConfig, here: KeyPath, selected: list[AppRef]
) -> Problems:
    """design.md §8 rule 5: ``close_all`` needs the global allowance and a confirmed app."""
    problems: Problems = []
    if not facts.allow_close_all:
        problems.append(
            (
                (*here, "action"),
                "close_all policies are rejected unless enforcement.allow_close_all is true",
            )
        )
    target: AppRef | None = None
    if "apps" not in policy.model_fields_set:
        problems.append((here, "a close_all policy must name its one app in `apps`"))
    elif len(selected) == 1:
        target = selected[0]
    elif selected:  # none at all is reported by the caller
        which = ", ".join(app.name for app in selected)
        problems.append(
            (
                (*here, "apps"),
                "a close_all policy must apply to exactly one app; it selects "
                f"{len(selected)} ({which})",
            )
        )
    if policy.confirm_app_id is None:
        named = f" ({target.name})" if target else ""
        problems.append(
            (
                here,
                "a close_all policy needs confirm_app_id: the app_id of the one app it "
                f"applies to{named}",
            )
        )
    elif target is not None and policy.confirm_app_id != target.app_id:
        problems.append(
            (
                (*here, "confirm_app_id"),
                f"{policy.confirm_app_id!r} is not the app_id of {target.name}, the one app "
                "this policy applies to",
            )
        )
    return problems
