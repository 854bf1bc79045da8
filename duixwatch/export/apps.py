"""The per-app metric families: one table, one row per metric, read from the snapshot store.

:data:`COLUMNS` says, for every per-app family, its name, help, type and how to read one app's
value at scrape time from its :data:`AppFacts`; ``None`` means the app has no sample (a value
is exported only while it is true: never a fake 0). :class:`SnapshotCollector` drives
both ways a family is read from that table — prometheus_client families for registry readers
(:meth:`~SnapshotCollector.collect`) and the fast exposition text of ``/metrics``
(:meth:`~SnapshotCollector.exposition`) — so a new per-app metric is one row.

What the rows export (design.md §6, and additions):

* ``duix_up{app}`` for every snapshot: 1 when the latest poll succeeded and is fresh
  (:meth:`~duixwatch.core.models.AppSnapshot.is_fresh`: no older than 2 x the poll interval);
* ``duix_app_concurrency_total_number``, ``duix_app_concurrency_user``, ``duix_app_sessions``,
  ``duix_app_oldest_session_age_seconds`` and the gauge histogram
  ``duix_app_session_age_seconds`` only for FRESH snapshots (a failed, stale or never-polled
  app has none of them and ``duix_up`` says why); the session series also need the app's list
  to be polled. The oldest age is absent when no session has a known age; the histogram counts
  only sessions with a known age;
* ``duix_app_last_poll_success_timestamp_seconds`` whenever the app has EVER succeeded, even
  while its latest poll failed: it stays true as it ages, and is what a staleness alert needs;
* ``duixwatch_app_consecutive_poll_failures`` and ``duixwatch_app_poll_interval_seconds`` for
  every snapshot.

Beside the table: ``duixwatch_apps`` (how many apps the store holds) and
:class:`PollErrorCounter` (``duixwatch_poll_errors_total{app,reason}``, every reason at 0 from
the start so that ``rate()`` sees an app's first error).

Renamed from design.md §6: ``duix_app_concurrency_total`` is exported as
``duix_app_concurrency_total_number`` (DUIX's ``totalConcurrentNumber``): a ``_total`` suffix is
reserved for counters, promtool's lint rejects it on a gauge (CHANGELOG).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final, cast, get_args

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from duixwatch.core import errors, models
from duixwatch.core.clock import Clock
from duixwatch.export.exposition import (
    SMALL_MAX,
    SMALL_NUMBERS,
    SMALL_TEXT,
    Family,
    escape_label_value,
    go_number,
    number,
)

__all__ = [
    "AGES",
    "COLUMNS",
    "FAILURES",
    "FRESH",
    "INTERVAL",
    "LAST_SUCCESS",
    "OLDEST",
    "SESSIONS",
    "SESSION_AGE_BUCKETS",
    "SNAPSHOT",
    "TOTAL",
    "UP",
    "USER",
    "AppFacts",
    "AppGauge",
    "AppGaugeHistogram",
    "Column",
    "PollErrorCounter",
    "SnapshotCollector",
    "facts",
]

#: Upper bounds (seconds) of ``duix_app_session_age_seconds``: 1 min … 1 day (+Inf implied).
SESSION_AGE_BUCKETS: Final[tuple[float, ...]] = (
    60.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    2700.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
)
#: SESSION_AGE_BUCKETS in whole microseconds (an age is at most a bound: start >= now - bound)
_BOUNDS_US: Final = tuple(int(bound * 1_000_000) for bound in SESSION_AGE_BUCKETS)
#: ``le`` label values written as prometheus_client writes its own histograms' ("60.0", "+Inf").
_LE: Final[tuple[str, ...]] = (*(number(bound) for bound in SESSION_AGE_BUCKETS), "+Inf")

#: One app at scrape time, as the table's rows read it: a plain tuple, built once per app per
#: scrape by :func:`facts` (so every family of a scrape agrees, and the common rows read it
#: with a C-level ``itemgetter`` instead of a Python call: 80,000 calls at 10,000 apps were a
#: tenth of a scrape). The positions are the names below; a row may also read anything from
#: the snapshot (``facts[SNAPSHOT]``).
AppFacts = tuple[Any, ...]
SNAPSHOT, FRESH, AGES, UP, TOTAL, USER, SESSIONS, OLDEST, LAST_SUCCESS, FAILURES, INTERVAL = range(
    11
)
#: How a row reads one app: its sample, or ``None`` for no sample.
Reader = Callable[[AppFacts], float | None]


def facts(snap: models.AppSnapshot, fresh: bool, ages: models.AgeSummary | None) -> AppFacts:
    """An app's facts: its snapshot, whether it is fresh now, its sessions' ages over
    SESSION_AGE_BUCKETS (fresh and listed only), and the values the common rows export, each
    ``None`` while it is not true (a failed, stale or never-polled app has no numbers)."""
    numbers = snap.concurrency if fresh else None
    fetched = snap.fetched_at
    return (
        snap,
        fresh,
        ages,
        1 if fresh else 0,
        None if numbers is None else numbers.total_concurrent_number,
        None if numbers is None else numbers.user_concurrent_number,
        None if ages is None or snap.sessions is None else len(snap.sessions),
        None if ages is None else ages.oldest_seconds,
        None if fetched is None else fetched.timestamp(),
        snap.consecutive_failures,
        snap.poll_interval_seconds,
    )


@dataclass(frozen=True, slots=True)
class AppGauge:
    """A per-app gauge: ``value`` is the app's sample, or ``None`` for no sample."""

    family: Family
    value: Reader


@dataclass(frozen=True, slots=True)
class AppGaugeHistogram:
    """The per-app gauge histogram of session ages (the ``ages`` a row is given)."""

    family: Family


Column = AppGauge | AppGaugeHistogram


#: Every per-app family, in exposition order.
COLUMNS: Final[tuple[Column, ...]] = (
    AppGauge(
        Family(
            "duix_up",
            "1 when the app's latest poll succeeded and is fresh (no older than 2 x its poll "
            "interval), else 0.",
            "gauge",
        ),
        itemgetter(UP),
    ),
    AppGauge(
        Family(
            "duix_app_concurrency_total_number",
            "totalConcurrentNumber from getconcurrentNumber (sessions); absent unless fresh.",
            "gauge",
        ),
        itemgetter(TOTAL),
    ),
    AppGauge(
        Family(
            "duix_app_concurrency_user",
            "userConcurrentNumber from getconcurrentNumber (sessions); absent unless fresh.",
            "gauge",
        ),
        itemgetter(USER),
    ),
    AppGauge(
        Family(
            "duix_app_sessions",
            "In-call sessions listed by getconcurrentList (sessions); absent unless fresh and "
            "the list is polled.",
            "gauge",
        ),
        itemgetter(SESSIONS),
    ),
    AppGauge(
        Family(
            "duix_app_oldest_session_age_seconds",
            "Age of the oldest in-call session with a known start (seconds); absent unless "
            "fresh and at least one session has a known age.",
            "gauge",
            unit="seconds",
        ),
        itemgetter(OLDEST),
    ),
    AppGaugeHistogram(
        Family(
            "duix_app_session_age_seconds",
            "Ages of the in-call sessions with a known start, now (seconds); absent unless "
            "fresh and the list is polled.",
            "gaugehistogram",
            unit="seconds",
        )
    ),
    AppGauge(
        Family(
            "duix_app_last_poll_success_timestamp_seconds",
            "Unix time of the app's last successful poll (seconds); kept while later polls "
            "fail, absent until the first success.",
            "gauge",
            unit="seconds",
        ),
        itemgetter(LAST_SUCCESS),
    ),
    AppGauge(
        Family(
            "duixwatch_app_consecutive_poll_failures",
            "Polls of the app that failed in a row since its last success (polls).",
            "gauge",
        ),
        itemgetter(FAILURES),
    ),
    AppGauge(
        Family(
            "duixwatch_app_poll_interval_seconds",
            "Configured poll interval of the app (seconds); data older than twice this is stale.",
            "gauge",
            unit="seconds",
        ),
        itemgetter(INTERVAL),
    ),
)

APPS = Family(
    "duixwatch_apps",
    "Apps in the snapshot store, i.e. configured and watched (apps).",
    "gauge",
    labels=(),
)
POLL_ERRORS = Family(
    "duixwatch_poll_errors",
    "Failed polls of an app by reason: auth, quota, server, client, timeout, transport, "
    "malformed, internal (a duixwatch bug) (polls).",
    "counter",
    labels=("app", "reason"),
)

_POLL_ERROR_REASONS: Final[tuple[str, ...]] = get_args(errors.Reason)


class SnapshotCollector(Collector):
    """Exports the snapshot store as it is at scrape time, one family per table row.

    ``snapshots`` is called once per scrape and ``clock.now()`` read once, so every series of
    one scrape agrees on what is fresh. Nothing is kept between scrapes but two caches that
    cannot change what is written: an app's age-bucket counts while its sessions' starts are
    the same and none has grown out of a bucket, and the text of its bucket lines while those
    counts are the same.
    """

    def __init__(
        self,
        snapshots: Callable[[], Iterable[models.AppSnapshot]],
        *,
        clock: Clock,
        columns: Sequence[Column] = COLUMNS,
    ) -> None:
        self._snapshots = snapshots
        self._clock = clock
        self.columns = tuple(columns)
        #: app -> (session starts, counts valid until (µs), bucket counts)
        self._counts: dict[str, tuple[tuple[int, ...], int, tuple[int, ...]]] = {}
        #: app -> (bucket counts, their lines)
        self._bucket_text: dict[str, tuple[tuple[int, ...], str]] = {}

    def _rows(self) -> list[AppFacts]:
        """Every app's facts now (:func:`facts`), in the store's order.

        An app's bucket counts are kept from the last scrape while its sessions' starts are the
        same and none has grown out of a bucket since.
        """
        now = self._clock.now()
        now_us = models.epoch_us(now)
        previous = self._counts
        kept: dict[str, tuple[tuple[int, ...], int, tuple[int, ...]]] = {}
        rows: list[AppFacts] = []
        for snap in self._snapshots():
            fresh = snap.is_fresh(now)
            listing = snap.sessions
            ages: models.AgeSummary | None = None
            if fresh and listing is not None:
                starts = listing.starts_us
                cached = previous.get(snap.app)
                if cached is not None and now_us <= cached[1] and cached[0] == starts:
                    oldest, age_sum = listing.oldest_and_sum(now_us)
                    ages = models.AgeSummary(oldest, cached[2], age_sum, cached[1])
                    kept[snap.app] = cached
                else:
                    ages = listing.ages(now_us, _BOUNDS_US)
                    kept[snap.app] = (starts, ages.counts_valid_until_us, ages.counts)
            rows.append(facts(snap, fresh, ages))
        self._counts = kept
        return rows

    def describe(self) -> Iterable[Metric]:
        """The families this collector owns, without samples (lets the registry catch clashes)."""
        return [column.family.empty() for column in self.columns] + [APPS.empty()]

    def collect(self) -> Iterable[Metric]:
        """One family per row of the table, with a sample per app that has a true value."""
        rows = self._rows()
        families: list[Metric] = []
        for column in self.columns:
            family = column.family.empty()
            if isinstance(column, AppGauge):
                gauge = cast(GaugeMetricFamily, family)
                for row in rows:
                    value = column.value(row)
                    if value is not None:
                        gauge.add_metric([row[SNAPSHOT].app], value)
            else:
                histogram = cast(GaugeHistogramMetricFamily, family)
                for row in rows:
                    ages = row[AGES]
                    if ages is not None:
                        pairs = [(le, float(n)) for le, n in zip(_LE, ages.counts, strict=True)]
                        histogram.add_metric([row[SNAPSHOT].app], pairs, ages.sum_seconds)
            families.append(family)
        apps = cast(GaugeMetricFamily, APPS.empty())
        apps.add_metric([], len(rows))
        families.append(apps)
        return families

    def exposition(self, openmetrics: bool) -> list[bytes]:
        """The samples of :meth:`collect` as exposition text (what prometheus_client writes),
        one UTF-8 chunk per family.

        Family by family, so that only one family's lines exist at a time (at 10,000 apps all
        the lines at once were ~35 MB on top of the body).
        """
        rows = self._rows()
        small, go = SMALL_TEXT.get, go_number
        escaped = [escape_label_value(row[SNAPSHOT].app) for row in rows]
        labels = [f'{{app="{label}"}} ' for label in escaped]
        chunks: list[bytes] = []
        for column in self.columns:
            family = column.family
            if isinstance(column, AppGauge):
                name, read = family.name, column.value
                # number() inlined: a function call per line is a tenth of a 10,000-app scrape
                lines = [
                    f"{name}{label}{text if (text := small(value)) is not None else go(value)}\n"
                    for label, row in zip(labels, rows, strict=True)
                    if (value := read(row)) is not None
                ]
            else:
                lines = self._histogram_lines(family, rows, escaped, labels, openmetrics)
            chunks.append((family.header(openmetrics) + "".join(lines)).encode())
        chunks.append((APPS.header(openmetrics) + f"{APPS.name} {number(len(rows))}\n").encode())
        return chunks

    def _histogram_lines(
        self,
        family: Family,
        rows: list[AppFacts],
        escaped: list[str],
        labels: list[str],
        openmetrics: bool,
    ) -> list[str]:
        """The gauge histogram's lines (OpenMetrics keeps each app's _gcount/_gsum with its
        buckets; the text format moves them into two gauges after all the buckets). An app's
        bucket lines are kept from the previous scrape while its counts are the same."""
        previous = self._bucket_text
        kept: dict[str, tuple[tuple[int, ...], str]] = {}
        template = _buckets_template(family.name)
        lines: list[str] = []
        gcount: list[str] = []
        gsum: list[str] = []
        for label, app, row in zip(escaped, labels, rows, strict=True):
            ages, snap = row[AGES], row[SNAPSHOT]
            if ages is None:
                continue
            counts = ages.counts
            cached = previous.get(snap.app)
            if cached is not None and cached[0] == counts:
                block = cached[1]
            else:
                block = template.format(
                    label, *[SMALL_NUMBERS[k] if k < SMALL_MAX else number(k) for k in counts]
                )
            kept[snap.app] = (counts, block)
            lines.append(block)
            count = f"{family.name}_gcount{app}{number(counts[-1])}\n"
            total_age = f"{family.name}_gsum{app}{number(ages.sum_seconds)}\n"
            if openmetrics:
                lines.append(count)
                lines.append(total_age)
            else:
                gcount.append(count)
                gsum.append(total_age)
        self._bucket_text = kept
        if gcount:
            lines.append(family.sub_header("_gcount"))
            lines.extend(gcount)
            lines.append(family.sub_header("_gsum"))
            lines.extend(gsum)
        return lines


def _buckets_template(name: str) -> str:
    """An app's bucket lines: ``{0}`` the escaped app, ``{1}``.. the cumulative counts."""
    cached = _TEMPLATES.get(name)
    if cached is None:
        cached = _TEMPLATES[name] = "".join(
            f'{name}_bucket{{{{app="{{0}}",le="{le}"}}}} {{{i}}}\n'
            for i, le in enumerate(_LE, start=1)
        )
    return cached


_TEMPLATES: dict[str, str] = {}


class PollErrorCounter(Collector):
    """``duixwatch_poll_errors_total{app,reason}``: counts kept in a dict, written fast.

    Every configured app has every reason from the start (at 0), so that ``rate()`` and
    ``increase()`` see an app's very first error; at 10,000 apps that is 80,000 series, which
    is why this is not a prometheus_client ``Counter`` (and exports no ``_created`` series).
    """

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, float]] = {}
        #: each app's lines, kept until its counts change (most apps never fail)
        self._text: dict[str, str] = {}

    def set_apps(self, apps: Iterable[str]) -> None:
        """Keep exactly these apps (their counts survive), each with every reason."""
        fresh = dict.fromkeys(_POLL_ERROR_REASONS, 0.0)
        self._counts = {app: self._counts.get(app) or dict(fresh) for app in apps}
        self._text = {app: text for app, text in self._text.items() if app in self._counts}

    def inc(self, app: str, reason: str) -> None:
        """Count one failed poll (an app not declared yet gets its row now)."""
        row = self._counts.get(app)
        if row is None:
            row = self._counts[app] = dict.fromkeys(_POLL_ERROR_REASONS, 0.0)
        row[reason] = row.get(reason, 0.0) + 1.0
        self._text.pop(app, None)

    def describe(self) -> Iterable[Metric]:
        return [POLL_ERRORS.empty()]

    def collect(self) -> Iterable[Metric]:
        family = cast(CounterMetricFamily, POLL_ERRORS.empty())
        for app, row in self._counts.items():
            for reason, count in row.items():
                family.add_metric([app, reason], count)
        return [family]

    def exposition(self, openmetrics: bool) -> list[bytes]:
        out = [POLL_ERRORS.header(openmetrics)]
        text = self._text
        for app, row in self._counts.items():
            block = text.get(app)
            if block is None:
                prefix = f'duixwatch_poll_errors_total{{app="{escape_label_value(app)}",reason="'
                block = text[app] = "".join(
                    f'{prefix}{reason}"}} {number(count)}\n' for reason, count in row.items()
                )
            out.append(block)
        return ["".join(out).encode()]
