"""Which files make up the audit log (``audit.jsonl`` and its rotated ``audit.jsonl.N``),
and their sizes: :mod:`duixwatch.policy.audit` writes and reads them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from duixwatch.core import errors

__all__ = ["AuditError", "audit_file_sizes", "audit_files"]


class AuditError(errors.DuixwatchError):
    """The audit log cannot be opened or written: act on nothing that would go unrecorded."""


def _names_oldest_first(path: Path) -> list[str]:
    """The names in ``path``'s directory of its rotated files (``path.N`` … ``path.1``), then
    its own name: every candidate, whether it is a file or not. Raises :class:`AuditError`
    when the directory cannot be listed (``[]`` when it does not exist)."""
    prefix = path.name + "."
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AuditError(f"cannot list the audit log's directory {path.parent}: {exc}") from exc
    rotated = sorted(
        (
            (int(name[len(prefix) :]), name)
            for name in names
            if name.startswith(prefix)
            and name[len(prefix) :].isascii()
            and name[len(prefix) :].isdecimal()
        ),
        reverse=True,
    )
    return [name for _, name in rotated] + [path.name]


def audit_files(path: Path) -> list[Path]:
    """``path``'s rotated files (``path.N`` … ``path.1``) and ``path`` itself, those that are
    files, oldest first. Raises :class:`AuditError` when the directory cannot be listed."""
    path = Path(path)
    files = [path.with_name(name) for name in _names_oldest_first(path)]
    return [p for p in files if p.is_file()]


def audit_file_sizes(path: Path) -> dict[str, int]:
    """Bytes of each of :func:`audit_files`, by file name, in the same order.

    Without a :class:`~pathlib.Path` per file, because it runs on every scrape: Python 3.11's
    pathlib interns every name it parses, and a name interned and freed at each scrape used a
    slot of the interpreter's interned-string table each time, which made CPython rebuild the
    table at twice its size after about 12 minutes of the soak's scrapes (+0.94 MB of RSS at
    once: a 1.9 MB table for the 0.9 MB one; found with gdb on the soak's daemon).
    """
    directory = os.fspath(path.parent)
    sizes: dict[str, int] = {}
    for name in _names_oldest_first(path):
        try:
            status = os.stat(os.path.join(directory, name))
        except OSError:
            continue  # rotated or deleted since it was listed
        if stat.S_ISREG(status.st_mode):
            sizes[name] = status.st_size
    return sizes
