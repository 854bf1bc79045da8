"""Helpers of the watch tests: an app of the simulator, a client on it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from duixwatch import config as settings
from duixwatch.duix import DuixClient
from duixwatch.sim import Simulator, create_app


def app_config(sim: Simulator, index: int = 0, **overrides: Any) -> settings.AppConfig:
    app = sim.apps[index]
    values: dict[str, Any] = {
        "app_id": app.app_id,
        "name": app.name,
        "app_key": SecretStr(app.app_key),
        "poll_interval_seconds": 15,
    }
    values.update(overrides)
    return settings.AppConfig(**values)


def duix_settings(**overrides: Any) -> settings.DuixSettings:
    values: dict[str, Any] = {
        "base_url": "http://sim.test",
        "max_requests_per_second": 10_000,
        "read_retries": 0,
    }
    values.update(overrides)
    return settings.DuixSettings(**values)


@asynccontextmanager
async def client_for(sim: Simulator, clock: Any, **overrides: Any) -> AsyncIterator[DuixClient]:
    async with DuixClient(
        duix_settings(**overrides),
        clock=clock,
        transport=httpx.ASGITransport(app=create_app(sim)),
        rng=random.Random(1),
    ) as client:
        yield client
