"""The simulator's tests: three apps, no automatic workload, and a client of it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from duixwatch.sim import Simulator, create_app
from tests.fakes import FakeClock


@pytest.fixture
def sim(clock: FakeClock) -> Simulator:
    """Three apps, no automatic workload: each test builds the sessions it needs."""
    return Simulator(apps=3, seed=7, clock=clock, workload=False)


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client
