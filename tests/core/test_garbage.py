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


async def test_young_every_five_seconds_middle_every_minute_full_every_ten_minutes(
    clock: FakeClock,
) -> None:
    recorder = Recorder(clock, stop_after=250)
    collector = GarbageCollector(clock, collect=recorder)
    with recorder.scope:
        await collector.run()
    assert set(clock.sleeps) == {YOUNG_SECONDS}
    full = [n + 1 for n, g in enumerate(recorder.generations) if g == 2]
    middle = [n + 1 for n, g in enumerate(recorder.generations) if g == 1]
    per_full = int(FULL_SECONDS / YOUNG_SECONDS)  # the 120th tick is 600 s in
    assert full == [per_full, 2 * per_full]
    assert middle == [n for n in range(MIDDLE_EVERY, 251, MIDDLE_EVERY) if n not in full]


async def test_a_slow_full_collection_makes_the_next_one_wait(clock: FakeClock) -> None:
    # 20 s to walk the heap: at most 1 % of the time, so the next waits 2,000 s, not 600.
    recorder = Recorder(clock, stop_after=1000, full_takes=20.0)
    collector = GarbageCollector(clock, collect=recorder)
    with recorder.scope:
        await collector.run()
    full = [n + 1 for n, g in enumerate(recorder.generations) if g == 2]
    # The first at 600 s (tick 120), each next one 2,000 s (400 ticks) after the one before.
    assert full == [120, 520, 920]
