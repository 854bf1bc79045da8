"""The snapshot store: the latest :class:`~duixwatch.core.models.AppSnapshot` of every APP.

The fleet is its only writer; the metrics, ``/status``, ``/readyz`` and the autoscaling signals
read it (the policy cycle gets each new snapshot from the fleet directly). Snapshots are
immutable and replaced whole, so a reader never sees half a poll; the
store itself only swaps dictionary entries (one event loop, no threads), so reads need no lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from duixwatch.core import models

__all__ = ["SnapshotStore"]


class SnapshotStore:
    """Latest snapshot per APP name, in configuration order."""

    def __init__(self) -> None:
        self._snapshots: dict[str, models.AppSnapshot] = {}
        self._expected: tuple[str, ...] = ()
        self._expected_set: frozenset[str] = frozenset()  # put() is on every poll's path

    def expect(self, names: Iterable[str]) -> None:
        """Set the configured APPs: snapshots of others are dropped (after a reload)."""
        self._expected = tuple(names)
        self._expected_set = keep = frozenset(self._expected)
        for name in [n for n in self._snapshots if n not in keep]:
            del self._snapshots[name]

    def put(self, snapshot: models.AppSnapshot) -> None:
        """Replace the APP's snapshot (ignored for an APP no longer configured)."""
        if snapshot.app in self._expected_set:
            self._snapshots[snapshot.app] = snapshot

    def get(self, name: str) -> models.AppSnapshot | None:
        """The APP's latest snapshot, if it has been polled."""
        return self._snapshots.get(name)

    def all(self) -> list[models.AppSnapshot]:
        """Every snapshot, in configuration order."""
        return [s for n in self._expected if (s := self._snapshots.get(n)) is not None]

    def pending(self) -> list[str]:
        """Configured APPs not polled yet (``/readyz`` waits for none)."""
        return [n for n in self._expected if n not in self._snapshots]
