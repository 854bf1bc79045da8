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

__all__ = ["known_keys", "pydantic_message", "suggest"]


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


def known_keys(path: KeyPath, root: type[BaseModel] = Config) -> list[str] | None:
    """The keys a mapping at ``path`` of a ``root`` file may hold (``None``: no mapping of keys
    goes there)."""
    models: list[type[BaseModel]] = [root]
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


def suggest(path: KeyPath, key: str, root: type[BaseModel] = Config) -> str:
    """``"; did you mean 'x'?"`` for a key that is not allowed at ``path``, or ``""``."""
    names = known_keys(path, root)
    close = difflib.get_close_matches(key, names or [], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


_PLAIN_MESSAGES = {
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "string_type": "must be a string (quote it)",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
}


def pydantic_message(kind: str, text: str, path: KeyPath, root: type[BaseModel] = Config) -> str:
    """Pydantic's message (its error ``type`` and ``msg``) in the words of a config file."""
    if kind == "extra_forbidden":
        return "unknown key" + (suggest(path[:-1], str(path[-1]), root) if path else "")
    if kind == "missing":
        return "required key is missing"
    plain = _PLAIN_MESSAGES.get(kind)
    if plain is not None:
        return plain
    return text.removeprefix("Value error, ")
