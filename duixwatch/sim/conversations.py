"""The simulated platform's conversations: which APP owns which document, which conversation a
session belongs to, and changing a document by key path (the control API's ``PATCH``).

Key paths name a value under ``getConversationById``'s ``data``: object keys joined by dots,
list items by a zero-based index in brackets — ``maxConversation``, ``detailDto.ttsSpeaker``,
``scriptDtoList[2].scriptContent`` — the form duixwatch logs in ``conversation_changed``. Only
existing values can be changed (a path that does not exist is an error, so a typo never
silently adds a key); the new value can be any JSON value, of any type.

Pure Python, no HTTP: :mod:`duixwatch.sim.model` holds one :class:`Conversations` and
:mod:`duixwatch.sim.app` maps its errors (``KeyError`` → 404, ``ValueError`` → 400).
"""

from __future__ import annotations

import copy
import json
import re
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_CHANGES",
    "MAX_PATH_CHARS",
    "Conversations",
    "PathError",
    "apply_changes",
    "format_path",
    "parse_path",
]

#: The most key paths one change may name, and the longest path (bounds on the work).
MAX_CHANGES = 1000
MAX_PATH_CHARS = 512

#: One dotted segment: a key, then any number of ``[index]``.
_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")
#: Paths that identify the conversation rather than configure it.
_FIXED = frozenset({"id"})

Part = str | int


class PathError(ValueError):
    """A key path that is malformed or names no value of the document (answered with 400)."""


def parse_path(text: str) -> tuple[Part, ...]:
    """``"scriptDtoList[2].scriptContent"`` → ``("scriptDtoList", 2, "scriptContent")``."""
    if not isinstance(text, str) or not text or len(text) > MAX_PATH_CHARS:
        raise PathError(f"a key path is a non-empty string of at most {MAX_PATH_CHARS} characters")
    parts: list[Part] = []
    for segment in text.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise PathError(
                f"bad key path {text!r}: expected keys joined by dots, list items as [index] "
                "(e.g. scriptDtoList[2].scriptContent)"
            )
        parts.append(match.group(1))
        parts.extend(int(index) for index in _INDEX.findall(match.group(2)))
    return tuple(parts)


def format_path(parts: tuple[Part, ...]) -> str:
    """The text form of parsed parts (``parse_path(format_path(p)) == p``)."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _parent(document: Any, parts: tuple[Part, ...], text: str) -> tuple[Any, Part]:
    """The container holding the value at ``parts``, and its key or index there."""
    node = document
    for depth, part in enumerate(parts):
        above = format_path(parts[:depth])
        if isinstance(part, int):
            if not isinstance(node, list):
                raise PathError(f"no value at {text!r}: {above!r} is not a list")
            if part >= len(node):
                raise PathError(f"no value at {text!r}: {above!r} has {len(node)} items")
        elif not isinstance(node, dict):
            hint = f" (a list item is written {above}[{part}])" if part.isdigit() else ""
            raise PathError(f"no value at {text!r}: {above!r} is not an object{hint}")
        elif part not in node:
            raise PathError(f"no value at {text!r}: no key {format_path(parts[: depth + 1])!r}")
        if depth == len(parts) - 1:
            return node, part
        node = node[part]
    raise PathError(f"no value at {text!r}")  # pragma: no cover - parse_path never returns ()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _lookup(document: Any, parts: tuple[Part, ...]) -> tuple[bool, Any]:
    """``(True, value)`` at ``parts``, or ``(False, None)`` if it does not exist."""
    try:
        container, key = _parent(document, parts, "")
    except PathError:
        return False, None
    return True, container[key]


def apply_changes(document: dict[str, Any], changes: object) -> tuple[dict[str, Any], list[str]]:
    """A changed copy of ``document`` and the key paths whose value changed, in body order.

    ``changes`` maps key paths to new JSON values; all of them apply or none does
    (:class:`PathError`, a ``ValueError``, for a bad body or a path that does not exist). A
    path set to the value it already has is not reported as changed.
    """
    if not isinstance(changes, Mapping):
        raise PathError("the body must be a JSON object of key paths to new values")
    if not changes:
        raise PathError('name at least one key path, e.g. {"detailDto.ttsSpeaker": "aria"}')
    if len(changes) > MAX_CHANGES:
        raise PathError(f"at most {MAX_CHANGES} key paths per change")
    parsed = [(parse_path(text), text) for text in changes]
    changed = copy.deepcopy(document)
    for parts, text in parsed:
        if format_path(parts) in _FIXED:
            raise PathError(f"{text!r} identifies the conversation and cannot change")
        container, key = _parent(changed, parts, text)
        container[key] = copy.deepcopy(changes[text])
    reported: list[str] = []
    for parts, _ in parsed:
        path = format_path(parts)
        before = _lookup(document, parts)
        after = _lookup(changed, parts)
        differs = before[0] != after[0] or _canonical(before[1]) != _canonical(after[1])
        if differs and path not in reported:
            reported.append(path)
    return changed, reported


class Conversations:
    """Every conversation document of the simulated platform, by id and by owning APP."""

    def __init__(self) -> None:
        self._documents: dict[str, tuple[str, dict[str, Any]]] = {}
        self._by_app: dict[str, list[str]] = {}

    def add(self, app_id: str, document: dict[str, Any]) -> str:
        """Store ``document`` (its ``id`` is the conversation id) for ``app_id``; the id."""
        conversation_id = str(document["id"])
        if conversation_id in self._documents:
            raise ValueError(f"conversation {conversation_id!r} already exists")
        self._documents[conversation_id] = (app_id, document)
        self._by_app.setdefault(app_id, []).append(conversation_id)
        return conversation_id

    def get(self, app_id: str, conversation_id: str) -> dict[str, Any] | None:
        """The document of one of ``app_id``'s conversations, else ``None``."""
        entry = self._documents.get(conversation_id)
        return entry[1] if entry is not None and entry[0] == app_id else None

    def ids(self, app_id: str) -> list[str]:
        """The app's conversation ids, in the order they were created."""
        return list(self._by_app.get(app_id, ()))

    def for_session(self, app_id: str, session_id: str) -> str | None:
        """The conversation a new session of ``app_id`` talks to: one of the app's, picked by a
        hash of the session id (so the seed decides), or ``None`` if the app has none."""
        ids = self._by_app.get(app_id)
        if not ids:
            return None
        return ids[zlib.crc32(session_id.encode("utf-8")) % len(ids)]

    def change(self, app_id: str, conversation_id: str, changes: object) -> list[str]:
        """Apply ``changes`` (see :func:`apply_changes`) to one of ``app_id``'s conversations;
        the changed key paths. ``KeyError`` if the app has no such conversation."""
        document = self.get(app_id, conversation_id)
        if document is None:
            raise KeyError(f"no conversation {conversation_id!r} in this app")
        changed, paths = apply_changes(document, changes)
        self._documents[conversation_id] = (app_id, changed)
        return paths
