"""Handing the C heap's free pages back to the kernel (glibc's ``malloc_trim``).

Python asks the C allocator for every object over 512 bytes and every buffer: response
bodies, expositions, JSON documents. glibc keeps what is freed for reuse, and gives memory
back by itself only from the *top* of its heap. A daemon whose buffers come and go in varying
sizes leaves free chunks between long-lived ones; those pages stay resident, and the heap
slowly grows around them while the bytes in use do not. The soak measured it with
``mallinfo2`` at 8 APPs: heap 16.3 → 17.4 MB in 12 minutes, free chunks 1.1 → 2.0 MB, bytes
in use flat at 15.2 MB.

``malloc_trim(0)`` releases the whole free pages inside those chunks too (``madvise``; glibc
≥ 2.8), in every arena. The daemon calls it on its clock after each middle or full garbage
collection (:mod:`duixwatch.core.garbage`), about once a minute: 0.3 ms at 8 APPs, 4 to 8 ms at
10,000 (where it handed back 13 MB of a 210 MB heap each time). A page it released and the
heap needs again costs one page fault.

Pinning glibc's mmap threshold instead (so that large buffers never enter the heap) was
tried and taken back: every large buffer then costs a ``mmap``, a ``munmap`` and a page fault
per page, and ``make bench`` at 10,000 APPs regressed (README, Memory). Elsewhere than glibc
(musl, macOS) there is no trim: :func:`glibc_malloc_trim` returns ``None``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

__all__ = ["Trim", "glibc_malloc_trim"]

#: Release free heap pages; 1 if some memory was released, 0 if none could be.
Trim = Callable[[], int]


def _glibc_version(confstr: Callable[[str], str | None]) -> str | None:
    try:
        return confstr("CS_GNU_LIBC_VERSION")
    except (OSError, ValueError):  # a C library that does not know the name: not glibc
        return None


def glibc_malloc_trim(
    *,
    confstr: Callable[[str], str | None] = os.confstr,
    load: Callable[[str], ctypes.CDLL] = ctypes.CDLL,
) -> Trim | None:
    """``malloc_trim(0)`` of this process's glibc, or ``None`` where the C library is not
    glibc (or does not have it)."""
    if not _glibc_version(confstr):
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        function = load(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int

    def trim() -> int:
        return int(function(0))

    return trim
