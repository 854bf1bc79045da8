"""Long-running tasks kept in step with a configuration: one task per key, restarted when its
settings change, stopped when its key goes, left alone otherwise.

The dialog prober (a task per probe) and the conversation and avatar watch (a task per APP)
each hold a :class:`KeyedTasks` inside their own task group; :meth:`KeyedTasks.apply` is what a
reload calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

__all__ = ["KeyedTasks"]

S = TypeVar("S")


class KeyedTasks(Generic[S]):
    """One task per key, each running ``work(settings)`` until it returns or is stopped."""

    def __init__(self, work: Callable[[S], Awaitable[None]]) -> None:
        self._work = work
        self._tg: TaskGroup | None = None
        self._running: dict[str, tuple[S, anyio.CancelScope]] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the tasks' group until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def apply(self, wanted: Mapping[str, S]) -> None:
        """Start, stop or restart tasks to match ``wanted`` (after :meth:`run` started)."""
        if self._tg is None:
            raise RuntimeError("KeyedTasks.apply before KeyedTasks.run started")
        for key in list(self._running):
            settings, scope = self._running[key]
            if key not in wanted or wanted[key] != settings:
                scope.cancel()
                del self._running[key]
        for key, settings in wanted.items():
            if key not in self._running:
                scope = anyio.CancelScope()
                self._running[key] = (settings, scope)
                self._tg.start_soon(self._one, settings, scope, name=key)

    async def _one(self, settings: S, scope: anyio.CancelScope) -> None:
        with scope:
            await self._work(settings)

    def keys(self) -> list[str]:
        return list(self._running)
