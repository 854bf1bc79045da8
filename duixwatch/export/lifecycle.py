"""The per-APP session lifecycle families (``duix_app_sessions_started_total`` …), from
:class:`~duixwatch.watch.lifecycle.Lifecycles` at scrape time, written fast.

Like the poll-error counters, these are plain numbers per APP (not prometheus_client children:
at 10,000 APPs those cost memory and a scrape's time), exported by :meth:`collect` for
registry readers and written straight to text by :meth:`exposition` (the same bytes; a test
compares them). Counters are there for every APP from its first poll, at 0; the duration
histogram only once one of its sessions ended (its ``_count`` would otherwise be a series of
zeros per APP).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, cast

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from duixwatch.export.exposition import Family, escape_label_value, number
from duixwatch.watch.lifecycle import DURATION_BUCKETS, Lifecycles

__all__ = ["LifecycleCollector"]

STARTED: Final = Family(
    "duix_app_sessions_started",
    "Session ids seen for the first time (the sessions live when duixwatch started count too).",
    "counter",
)
ENDED: Final = Family(
    "duix_app_sessions_ended",
    "Session ids gone from the list; closed_by policy when duixwatch stopped it, else platform.",
    "counter",
    labels=("app", "closed_by"),
)
SECONDS: Final = Family(
    "duix_app_session_seconds",
    "Session-seconds observed: live sessions integrated over time between successful polls "
    "(increase over 1d / 60 = the day's session-minutes).",
    "counter",
)
DURATION: Final = Family(
    "duix_app_session_duration_seconds",
    "Observed lifetime of ended sessions, from the platform's start time (else the first "
    "sighting) to the last sighting: short by at most one poll interval.",
    "histogram",
    unit="seconds",
)
_LE: Final = (*(number(b) for b in DURATION_BUCKETS), "+Inf")


class LifecycleCollector(Collector):
    """``duix_app_sessions_{started,ended}_total``, ``duix_app_session_seconds_total`` and
    ``duix_app_session_duration_seconds``."""

    def __init__(self, lifecycles: Lifecycles) -> None:
        self._lifecycles = lifecycles

    def describe(self) -> Iterable[Metric]:
        return [f.empty() for f in (STARTED, ENDED, SECONDS, DURATION)]

    def collect(self) -> Iterable[Metric]:
        started = cast(CounterMetricFamily, STARTED.empty())
        ended = cast(CounterMetricFamily, ENDED.empty())
        seconds = cast(CounterMetricFamily, SECONDS.empty())
        duration = cast(HistogramMetricFamily, DURATION.empty())
        for app, life in self._lifecycles.items():
            started.add_metric([app], life.started)
            ended.add_metric([app, "policy"], life.ended_policy)
            ended.add_metric([app, "platform"], life.ended_platform)
            seconds.add_metric([app], life.session_seconds)
            if life.bucket_counts is not None:
                total, buckets = 0, []
                for le, count in zip(_LE, life.bucket_counts, strict=True):
                    total += count
                    buckets.append((le, float(total)))
                duration.add_metric([app], buckets, life.duration_sum)
        return [started, ended, seconds, duration]

    def exposition(self, openmetrics: bool) -> list[bytes]:
        rows = self._lifecycles.items()
        names = [(escape_label_value(app), life) for app, life in rows]
        started = "".join(
            f'duix_app_sessions_started_total{{app="{a}"}} {number(life.started)}\n'
            for a, life in names
        )
        ended = "".join(
            f'duix_app_sessions_ended_total{{app="{a}",closed_by="policy"}} '
            f"{number(life.ended_policy)}\n"
            f'duix_app_sessions_ended_total{{app="{a}",closed_by="platform"}} '
            f"{number(life.ended_platform)}\n"
            for a, life in names
        )
        seconds = "".join(
            f'duix_app_session_seconds_total{{app="{a}"}} {number(life.session_seconds)}\n'
            for a, life in names
        )
        lines: list[str] = []
        name = DURATION.name
        for a, life in names:
            if life.bucket_counts is None:
                continue
            total = 0
            for le, count in zip(_LE, life.bucket_counts, strict=True):
                total += count
                lines.append(f'{name}_bucket{{app="{a}",le="{le}"}} {number(total)}\n')
            lines.append(f'{name}_count{{app="{a}"}} {number(total)}\n')
            lines.append(f'{name}_sum{{app="{a}"}} {number(life.duration_sum)}\n')
        return [
            (STARTED.header(openmetrics) + started).encode(),
            (ENDED.header(openmetrics) + ended).encode(),
            (SECONDS.header(openmetrics) + seconds).encode(),
            (DURATION.header(openmetrics) + "".join(lines)).encode(),
        ]
