"""What a JSON value looks like, never what it holds: the text logs and errors give of a
platform answer duixwatch could not read (keys and types, bounded in depth and length, since the
keys are the platform's too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["describe_shape"]

#: Bounds on :func:`describe_shape`'s text: keys are the platform's too (long, or markup).
_SHAPE_CHARS = 600
_SHAPE_KEY_CHARS = 40


def describe_shape(value: Any, *, depth: int = 4, max_keys: int = 20) -> str:
    """Keys and types of a JSON value, never its values (safe to log), at most 600 chars."""
    text = _shape(value, depth, max_keys)
    return text if len(text) <= _SHAPE_CHARS else text[: _SHAPE_CHARS - 1] + "…"


def _shape(value: Any, depth: int, max_keys: int) -> str:
    if isinstance(value, Mapping):
        if depth <= 0:
            return "{…}"
        parts = []
        used = 0
        for k in list(value)[:max_keys]:
            key = str(k)
            key = key if len(key) <= _SHAPE_KEY_CHARS else key[: _SHAPE_KEY_CHARS - 1] + "…"
            parts.append(f"{key}:{_shape(value[k], depth - 1, max_keys)}")
            used += len(parts[-1])
            if used > _SHAPE_CHARS:  # the rest would be cut off anyway
                break
        more = ",…" if len(value) > len(parts) else ""
        return "{" + ",".join(parts) + more + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        if depth <= 0:  # lists count as levels too: one nested 100,000 deep must not recurse
            return f"[… x{len(value)}]"
        return f"[{_shape(value[0], depth - 1, max_keys)} x{len(value)}]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    return type(value).__name__
