"""Pinning glibc's mmap threshold: the decision with a fake ``mallopt``, the effect in a child
process with the real one (the threshold is process-wide, so never in the test process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from duixwatch.core import allocator


class FakeMallopt:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


def test_the_threshold_is_pinned_at_glibcs_default() -> None:
    fake = FakeMallopt()
    assert allocator.pin_mmap_threshold(environ={}, find=lambda: fake) == "pinned"
    assert fake.calls == [(allocator.M_MMAP_THRESHOLD, 128 * 1024)]


@pytest.mark.parametrize("name", allocator.OPERATOR_TUNABLES)
def test_an_operators_own_malloc_tuning_is_left_alone(name: str) -> None:
    fake = FakeMallopt()
    outcome = allocator.pin_mmap_threshold(environ={name: "65536"}, find=lambda: fake)
    assert outcome == "operator"
    assert fake.calls == []


def test_elsewhere_than_glibc_nothing_is_done() -> None:
    assert allocator.pin_mmap_threshold(environ={}, find=lambda: None) == "not_glibc"


def test_a_refusal_is_said() -> None:
    assert allocator.pin_mmap_threshold(environ={}, find=lambda: FakeMallopt(0)) == "refused"


# In a child: free one 4 MiB block (glibc then raises its dynamic threshold to 4 MiB), then
# count how many of fifty 256 KiB buffers glibc mapped on their own (mallinfo2's hblks).
_CHILD = textwrap.dedent(
    """
    import ctypes, sys
    from duixwatch.core import allocator
    if sys.argv[1] == "pin":
        assert allocator.pin_mmap_threshold(environ={}) == "pinned"
    libc = ctypes.CDLL("libc.so.6")
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
    libc.mallinfo2.restype = Info
    big = bytearray(4 << 20)
    del big
    before = libc.mallinfo2().hblks
    buffers = [bytearray(256 << 10) for _ in range(50)]
    print(libc.mallinfo2().hblks - before)
    """
)


def _mapped_buffers(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in allocator.OPERATOR_TUNABLES}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    return int(done.stdout)


def test_pinned_large_buffers_stay_mapped_after_a_larger_one_was_freed() -> None:
    # duixwatch runs on Linux with glibc (Debian in CI and in the container image): no skip
    assert allocator.glibc_mallopt() is not None
    assert _mapped_buffers("default") == 0  # glibc's dynamic threshold: all from the heap
    assert _mapped_buffers("pin") == 50
