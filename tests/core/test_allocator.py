"""core.allocator: glibc's malloc_trim found where it exists, and what it does, measured in a
child process (a 64 MiB hole in the heap is not something to make in the test process)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from duixwatch.core import allocator


def test_glibc_trim_is_found_and_runs() -> None:
    # duixwatch runs on Linux with glibc (Debian in CI and in the container image): no skip
    trim = allocator.glibc_malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)


def _unknown_name(name: str) -> str:
    raise ValueError(f"unrecognized configuration name {name!r}")


def _no_libc(name: str) -> ctypes.CDLL:
    raise OSError(f"{name}: cannot open shared object file")


@pytest.mark.parametrize(
    ("confstr", "load"),
    [
        (_unknown_name, ctypes.CDLL),  # the name is unknown: not glibc
        (lambda name: None, ctypes.CDLL),  # known but empty: not glibc
        (lambda name: "glibc 2.36", _no_libc),  # glibc, but the library will not load
    ],
)
def test_elsewhere_than_glibc_there_is_no_trim(confstr: object, load: object) -> None:
    assert allocator.glibc_malloc_trim(confstr=confstr, load=load) is None  # type: ignore[arg-type]


# In a child: 64 MiB of 64 KiB buffers from the heap (below glibc's mmap threshold), each
# followed by a small one that stays, then the big ones freed: 1,024 holes that glibc cannot
# merge into the heap's top, so their pages stay resident until the trim. Prints resident
# anonymous kB: freed, trimmed.
_CHILD = textwrap.dedent(
    """
    from duixwatch.core import allocator

    def anon_kb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])

    buffers, pins = [], []
    for _ in range(1024):
        buffers.append(bytearray(64 << 10))
        pins.append(bytearray(1024))
    del buffers
    freed = anon_kb()
    assert allocator.glibc_malloc_trim()() == 1
    print(freed, anon_kb())
    """
)


def test_a_trim_hands_a_hole_in_the_heap_back_to_the_kernel() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    freed_kb, trimmed_kb = map(int, done.stdout.split())
    assert freed_kb - trimmed_kb > 48 * 1024, done.stdout  # most of the 64 MiB went back
