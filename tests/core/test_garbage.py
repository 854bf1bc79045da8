"""core.garbage: cyclic garbage collected on the clock, young often, the whole heap rarely."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import anyio
import pytest

from duixwatch.core.garbage import FULL_SECONDS, MIDDLE_EVERY, YOUNG_SECONDS, GarbageCollector
from tests.fakes import FakeClock


class Cycle:
    """An object that refers to itself: reference counting alone never frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def automatic_gc_off() -> Iterator[None]:
    """No collection but the ones the test makes (as with the daemon's high thresholds)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_a_young_collection_frees_a_fresh_cycle(automatic_gc_off: None) -> None:
    collector = GarbageCollector(FakeClock())
    gc.collect()  # start from an empty young generation
    cycle = Cycle()
    alive = weakref.ref(cycle)
    del cycle
    assert alive() is not None  # garbage, but nothing has collected it
    done = collector.tick()
    assert done.generation == 0
    assert done.objects >= 1
    assert alive() is None


class Recorder:
    """``gc.collect``'s stand-in: records the generations asked for; a full one takes
    ``full_takes`` seconds of the clock."""

    def __init__(self, clock: FakeClock, *, stop_after: int, full_takes: float = 0.0) -> None:
        self.clock = clock
        self.generations: list[int] = []
        self.stop_after = stop_after
        self.full_takes = full_takes
        self.scope = anyio.CancelScope()

    def __call__(self, generation: int) -> int:
        self.generations.append(generation)
        if generation == 2:
            self.clock.advance(self.full_takes)
        if len(self.generations) == self.stop_after:
            self.scope.cancel()
        return 0


async def test_young_every_five_seconds_and_the_whole_heap_every_minute_when_cheap(
    clock: FakeClock,
) -> None:
    recorder = Recorder(clock, stop_after=250)
    collector = GarbageCollector(clock, collect=recorder)
    with recorder.scope:
        await collector.run()
    assert set(clock.sleeps) == {YOUNG_SECONDS}
    per_full = int(FULL_SECONDS / YOUNG_SECONDS)  # the 12th tick is 60 s in
    full = [n + 1 for n, g in enumerate(recorder.generations) if g == 2]
    assert full == list(range(per_full, 251, per_full))
    assert 1 not in recorder.generations  # every middle one was a full one


async def test_a_slow_full_collection_makes_the_next_one_wait(clock: FakeClock) -> None:
    # 1 s to walk the heap: at most 0.2 % of the time, so the next waits 500 s, not 60.
    recorder = Recorder(clock, stop_after=300, full_takes=1.0)
    collector = GarbageCollector(clock, collect=recorder)
    with recorder.scope:
        await collector.run()
    full = [n + 1 for n, g in enumerate(recorder.generations) if g == 2]
    # The first at 60 s (tick 12); each next one 500 s (100 ticks) after the one before began.
    assert full == [12, 112, 212]
    middle = [n + 1 for n, g in enumerate(recorder.generations) if g == 1]
    assert middle == [n for n in range(MIDDLE_EVERY, 301, MIDDLE_EVERY) if n not in full]


class Trims:
    """``malloc_trim``'s stand-in: counts its calls, each taking ``takes`` of the clock."""

    def __init__(self, clock: FakeClock, takes: float) -> None:
        self.clock = clock
        self.takes = takes
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        self.clock.advance(self.takes)
        return 1


async def test_the_heap_is_trimmed_after_each_middle_and_full_collection(clock: FakeClock) -> None:
    trims = Trims(clock, takes=0.004)
    recorder = Recorder(clock, stop_after=10_000, full_takes=1.0)
    collector = GarbageCollector(clock, collect=recorder, trim=trims)
    done = []
    for _ in range(300):
        clock.advance(YOUNG_SECONDS)
        done.append(collector.tick())
    older = [c for c in done if c.generation > 0]
    assert {c.generation for c in older} == {1, 2}  # both kinds happened
    assert trims.calls == len(older)
    assert all(c.trim_seconds == pytest.approx(0.004) for c in older)
    assert all(c.trim_seconds is None for c in done if c.generation == 0)


async def test_without_a_trim_nothing_is_trimmed(clock: FakeClock) -> None:
    collector = GarbageCollector(clock, collect=Recorder(clock, stop_after=10_000))
    for _ in range(12):
        clock.advance(YOUNG_SECONDS)
        done = collector.tick()
    assert done.generation == 2
    assert done.trim_seconds is None
