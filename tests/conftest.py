"""Shared fixtures: a fake clock, the simulator (in-process), and the anyio backend."""

from __future__ import annotations

import pytest

from tests.fakes import FakeClock


@pytest.fixture
def anyio_backend() -> str:
    """duixwatch runs on asyncio; the tests pin it."""
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
