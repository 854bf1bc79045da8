"""Fixtures of the watch tests."""

from __future__ import annotations

import pytest

from duixwatch.sim import Simulator
from tests.fakes import FakeClock, VirtualClock


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    """Three simulated apps, no workload: the tests add the sessions they need."""
    return Simulator(apps=3, seed=5, clock=clock, workload=False)


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()
