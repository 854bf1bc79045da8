"""What the schema says about a key path: the keys allowed there, and a suggestion for a typo.

Shared by the loader (``unknown key; did you mean 'listen'?``) and the environment overlay
(``DUIXWATCH_SERVER__LISTN: no such setting server.listn; did you mean 'listen'?``).
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from duixwatch.config.schema import AppConfig, Config
from duixwatch.core.fields import KeyPath

__all__ = ["known_keys", "suggest"]


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The models a field holds: itself, the items of a tuple, the members of a union."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models(get_args(annotation)[0])
    if origin is tuple:
        return _models(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [model for arg in get_args(annotation) for model in _models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def known_keys(path: KeyPath) -> list[str] | None:
    """The keys a mapping at ``path`` may hold (``None``: no mapping of keys goes there)."""
    models: list[type[BaseModel]] = [Config]
    for part in path:
        if isinstance(part, int):
            continue
        fields = [model.model_fields[part] for model in models if part in model.model_fields]
        models = [model for f in fields for model in _models(f.annotation)]
        if not models:
            return None
    names = list(
        dict.fromkeys(
            name
            for model in models
            for name in model.model_fields
            if not (model is Config and name == "source")
        )
    )
    if AppConfig in models:
        names.append("app_key_file")  # resolved into app_key by the loader
    return names


def suggest(path: KeyPath, key: str) -> str:
    """``"; did you mean 'x'?"`` for a key that is not allowed at ``path``, or ``""``."""
    names = known_keys(path)
    close = difflib.get_close_matches(key, names or [], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
