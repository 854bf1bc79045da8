"""The storage metrics: how big duixwatch's files are, when they were last rotated and pruned,
and whether broken storage blocks enforcement; read at scrape time from the daemon's upkeep.

* ``duixwatch_enforcement_blocked{reason}`` — 1 while enforcement is blocked for that reason
  (``audit_unavailable``, ``state_unavailable``: :data:`duixwatch.watch.upkeep.BLOCK_REASONS`),
  else 0; every reason is always exported, so an alert can say ``== 1``.
* ``duixwatch_state_file_bytes{file}`` — each file in ``state.dir`` (``audit.jsonl`` and its
  rotated files, ``state.sqlite3`` and its ``-wal``): at most ``state.audit_keep`` + 3 series.
* ``duixwatch_audit_rotations_total``, ``duixwatch_audit_last_rotation_timestamp_seconds``
  (absent before the first rotation), ``duixwatch_state_last_prune_timestamp_seconds`` (absent
  before the first prune), ``duixwatch_state_vacuums_total``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from duixwatch.watch.upkeep import BLOCK_REASONS

__all__ = ["StorageCollector", "StorageView"]


class StorageView(Protocol):
    """What the collector reads (:class:`duixwatch.watch.upkeep.Upkeep` and its audit log)."""

    def blocked(self) -> Mapping[str, str]: ...
    def file_sizes(self) -> Mapping[str, int]: ...
    def last_prune_at(self) -> datetime | None: ...
    def vacuum_count(self) -> int: ...
    def rotation_count(self) -> int: ...
    def last_rotation_at(self) -> datetime | None: ...


class StorageCollector(Collector):
    """The storage metrics of the module docstring."""

    def __init__(self, view: StorageView) -> None:
        self._view = view

    def describe(self) -> Iterable[Metric]:
        return self._families(describe=True)

    def collect(self) -> Iterable[Metric]:
        return self._families(describe=False)

    def _families(self, *, describe: bool) -> list[Metric]:
        view = self._view
        blocked = GaugeMetricFamily(
            "duixwatch_enforcement_blocked",
            "1 while policies make no call because duixwatch cannot record it (reason: "
            "audit_unavailable, state_unavailable), else 0.",
            labels=["reason"],
        )
        sizes = GaugeMetricFamily(
            "duixwatch_state_file_bytes",
            "Size of each file duixwatch keeps in state.dir (bytes).",
            labels=["file"],
            unit="bytes",
        )
        rotations = CounterMetricFamily(
            "duixwatch_audit_rotations",
            "Times the audit log was rotated by size since the start (rotations).",
        )
        vacuums = CounterMetricFamily(
            "duixwatch_state_vacuums",
            "Times the state database was vacuumed after shrinking by half (vacuums).",
        )
        last_rotation = GaugeMetricFamily(
            "duixwatch_audit_last_rotation_timestamp_seconds",
            "Unix time of the audit log's latest rotation by size (seconds).",
            unit="seconds",
        )
        last_prune = GaugeMetricFamily(
            "duixwatch_state_last_prune_timestamp_seconds",
            "Unix time of the state database's latest prune (seconds).",
            unit="seconds",
        )
        families: list[Metric] = [blocked, sizes, rotations, vacuums, last_rotation, last_prune]
        if describe:
            return families
        reasons = view.blocked()
        for reason in BLOCK_REASONS:
            blocked.add_metric([reason], 1.0 if reason in reasons else 0.0)
        for name, size in sorted(view.file_sizes().items()):
            sizes.add_metric([name], float(size))
        rotations.add_metric([], float(view.rotation_count()))
        vacuums.add_metric([], float(view.vacuum_count()))
        if (rotated := view.last_rotation_at()) is not None:
            last_rotation.add_metric([], rotated.timestamp())
        if (pruned := view.last_prune_at()) is not None:
            last_prune.add_metric([], pruned.timestamp())
        return families
