"""Fixtures of the end-to-end tests: a simulator process on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.enforcing import APPS, SEED, Sim
from tests.procs import free_port, sim_config, start_sim


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    port = free_port()
    proc = start_sim(port, tmp_path / "sim.log", apps=APPS, seed=SEED)
    try:
        yield Sim(f"http://127.0.0.1:{port}", sim_config(port, apps=APPS, seed=SEED), tmp_path)
    finally:
        proc.kill()
        proc.wait(timeout=10)
