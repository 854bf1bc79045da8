"""Text from outside (a platform-supplied session id, an error message) made inert for a
terminal or a page: control characters and format characters such as U+202E (which turns
the rest of a line around) are shown as ``\\u202e`` instead of acting."""

from __future__ import annotations

import unicodedata

__all__ = ["inert"]

#: Unicode categories that act instead of showing: controls (Cc) and format characters (Cf).
_ACTING = frozenset({"Cc", "Cf"})


def inert(text: str, *, keep: str = "") -> str:
    """``text`` with every control or format character, but those in ``keep``, as
    ``\\uXXXX``."""
    if text.isprintable():  # the common case, in C: nothing to replace
        return text
    return "".join(
        f"\\u{ord(c):04x}" if c not in keep and unicodedata.category(c) in _ACTING else c
        for c in text
    )
