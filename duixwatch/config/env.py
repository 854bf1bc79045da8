"""``DUIXWATCH_…`` environment variables laid over the config file: env wins, key by key.

pydantic-settings reads them: :class:`_EnvNames` is :class:`~duixwatch.config.schema.Config`
as a pydantic-settings ``BaseSettings`` — the prefix, the ``__`` nesting, names in any case —
and its :class:`~pydantic_settings.EnvSettingsSource` turns a variable into nested data,
decoding JSON where the setting is a section or a list (``DUIXWATCH_APPS``,
``DUIXWATCH_DUIX__PATHS``). (``Config`` itself is a plain model: a ``BaseSettings`` is built
through its ``__init__``, which drops the validation context the loader's deferred checks use.) It
reads one variable at a time, so every value keeps the name of the variable it came from and a
bad one is reported alone (``… (from env DUIXWATCH_APPS)``).

What pydantic-settings leaves to its caller, this module does, because an operator's typo must
not be silently ignored:

* a variable with ``__`` that names no setting is an error, with a suggestion
  (``DUIXWATCH_SERVER__LISTN``); variables without ``__`` that are not a top-level key
  (``DUIXWATCH_LOG_LEVEL``, the CLI's) are left alone;
* ``apps`` and ``policies`` are set as a whole (JSON), never one item's key at a time;
* two spellings of one variable (``DUIXWATCH_X__Y`` and ``duixwatch_x__y``) are an error;
* a section given as JSON is laid over the file's section key by key (the file's other keys
  keep their lines); any other value replaces the file's.

Env values are literal: no ``${VAR}`` expansion (the loader skips what came from here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError
from pydantic_settings.sources.utils import parse_env_vars

from duixwatch.config.paths import known_keys, suggest
from duixwatch.config.schema import ENV_PREFIX, TOP_LEVEL_KEYS, Config
from duixwatch.config.yamllines import MAX_DEPTH, Problem
from duixwatch.core.fields import KeyPath, dotted

__all__ = ["Overlay", "overlay"]

#: Top-level keys whose items cannot be addressed one by one.
_WHOLE_ONLY = ("apps", "policies")


class _EnvNames(Config, BaseSettings):
    """How ``DUIXWATCH_…`` variables name the keys of :class:`Config` (never instantiated)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False
    )


class _Source(EnvSettingsSource):
    """pydantic-settings' env source for :class:`Config`, over the mapping it is given (the
    loader's ``environ``) instead of ``os.environ``, as its own dotenv source reads a file."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(_EnvNames)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


@dataclass
class Overlay:
    """What the environment changed: which variable set each key path, and what was wrong."""

    sources: dict[KeyPath, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def overlay(data: dict[str, Any], environ: Mapping[str, str]) -> Overlay:
    """Lay the ``DUIXWATCH_…`` variables of ``environ`` over ``data`` (in place)."""
    result = Overlay()
    seen: dict[KeyPath, str] = {}
    for var in sorted(environ):
        if not var.upper().startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        if "__" not in rest and rest not in TOP_LEVEL_KEYS:
            continue  # e.g. DUIXWATCH_LOG_LEVEL: the CLI's, not a config key
        path = _setting(var, tuple(rest.split("__")), result)
        if path is None:
            continue
        if path in seen:
            result.problems.append(
                Problem((), f"{seen[path]} sets {dotted(path)} too; keep one", env=var)
            )
            continue
        seen[path] = var
        result.sources[path] = var
        try:
            value = _dig(_Source({var: environ[var]})(), path)
        except SettingsError as exc:
            result.problems.append(Problem(path, _unreadable(exc)))
            continue
        except RecursionError:  # the JSON decoder recurses once per level
            deep = True
        else:
            deep = _too_deep(value)
        if deep:
            result.problems.append(
                Problem(path, f"JSON nested more than {MAX_DEPTH} levels deep: not a setting")
            )
            continue
        _lay(data, path, value, var, result)
    return result


def _setting(var: str, parts: tuple[str, ...], result: Overlay) -> KeyPath | None:
    """The key path ``var`` addresses, or ``None`` (with a problem) when there is none."""

    def fail(message: str) -> None:
        result.problems.append(Problem((), message, env=var))

    if any(not part for part in parts):
        fail("empty name between '__' separators")
        return None
    for depth, part in enumerate(parts):
        known = [n for n in known_keys(parts[:depth]) or [] if n != "app_key_file"]
        if part not in known:
            fail(f"no such setting {dotted(parts[: depth + 1])}{suggest(parts[:depth], part)}")
            return None
        if depth == len(parts) - 1:
            return parts
        if depth == 0 and part in _WHOLE_ONLY:
            fail(f"{part} can only be set as a whole, as JSON in {ENV_PREFIX}{part.upper()}")
            return None
        if known_keys(parts[: depth + 1]) is None:
            fail(f"{dotted(parts[: depth + 1])} has no keys below it")
            return None
    return None  # pragma: no cover - the loop always returns


def _dig(data: Mapping[str, Any], path: KeyPath) -> Any:
    """The value the source read for ``path`` (it nests a variable's value under its keys)."""
    value: Any = data
    for part in path:
        value = value[part]
    return value


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests lists or mappings more than :data:`MAX_DEPTH` deep (the bound a
    config file has; walked with a stack, not recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _unreadable(exc: SettingsError) -> str:
    """Why a variable's value could not be read (pydantic-settings raises for bad JSON)."""
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        return f"not valid JSON: {cause.msg} at character {cause.pos}"
    return "cannot be read (a section or a list is given as JSON)"


def _lay(data: dict[str, Any], path: KeyPath, value: Any, var: str, result: Overlay) -> None:
    """Set ``path`` in ``data`` to ``value``; a mapping over a mapping merges key by key."""
    target = data
    for part in path[:-1]:
        child = target.get(str(part))
        if not isinstance(child, dict):
            child = {}
            target[str(part)] = child
        target = child
    last = str(path[-1])
    existing = target.get(last)
    if isinstance(existing, dict) and isinstance(value, dict):
        del result.sources[path]
        for key in value:
            result.sources[(*path, key)] = var
        target[last] = {**existing, **value}
    else:
        target[last] = value
