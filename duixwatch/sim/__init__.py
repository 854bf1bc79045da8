"""The DUIX platform simulator: an ASGI app, a seeded workload model and injectable faults.

Product code, used by ``duixwatch sim``, ``duixwatch demo``, the tests (in-process through
``httpx.ASGITransport`` and over loopback) and the benchmarks. Layering: the simulator
imports only ``duixwatch.core`` and the ASGI runner of :mod:`duixwatch.http.serve`, never
the client.

* :mod:`~duixwatch.sim.model` the platform's state and workload (no HTTP)
* :mod:`~duixwatch.sim.records` sessions, apps, avatars and the error an endpoint answers
* :mod:`~duixwatch.sim.faults` injected faults and request statistics
* :mod:`~duixwatch.sim.shapes` the ``getconcurrentList`` shapes
* :mod:`~duixwatch.sim.hostile` hostile answers (a ``hostile`` fault): bad times, counts, bodies
* :mod:`~duixwatch.sim.documents` generated conversation documents
* :mod:`~duixwatch.sim.conversations` who owns which conversation, changes by key path
* :mod:`~duixwatch.sim.avatars` avatar training (``createAvatar``, ``queryAvatar``)
* :mod:`~duixwatch.sim.app` the Starlette app (DUIX API, ``/_sim/`` control API)
* :mod:`~duixwatch.sim.dialog` the sample third-party dialog backend
* :mod:`~duixwatch.sim.serve` uvicorn inside the caller's task group
* :mod:`~duixwatch.sim.config` a duixwatch config for the simulated apps
"""

from __future__ import annotations

from duixwatch.sim.app import CONVERSATION_PATH, PREFIX, create_app
from duixwatch.sim.config import render_config
from duixwatch.sim.faults import ENDPOINTS, Fault, Faults, Stats
from duixwatch.sim.model import MAX_TRAINING_SECONDS, TRAINING_SECONDS, Simulator
from duixwatch.sim.records import SimApp, SimError, SimSession
from duixwatch.sim.serve import serve
from duixwatch.sim.shapes import DEFAULT_SHAPE, ListShape

__all__ = [
    "CONVERSATION_PATH",
    "DEFAULT_SHAPE",
    "ENDPOINTS",
    "MAX_TRAINING_SECONDS",
    "PREFIX",
    "TRAINING_SECONDS",
    "Fault",
    "Faults",
    "ListShape",
    "SimApp",
    "SimError",
    "SimSession",
    "Simulator",
    "Stats",
    "create_app",
    "render_config",
    "serve",
]
