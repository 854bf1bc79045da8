"""The Prometheus metric set of duixwatch (design.md §6), on an injected registry.

:class:`Metrics` creates every metric on the ``CollectorRegistry`` it is given (never the global
``REGISTRY``), so a test builds a fresh registry and reads it back with ``get_sample_value``.
:meth:`Metrics.render` turns it into an HTTP body, negotiating OpenMetrics from ``Accept``.

Two kinds of values:

* **Platform values** (``duix_*``) come from the snapshot store through ONE custom collector that
  reads ``snapshots()`` and ``clock.now()`` at scrape time. Nothing is cached between scrapes, so
  an app removed by a reload disappears with its snapshot, and a value is exported only while it
  is true:

  - ``duix_up{app}`` is exported for every snapshot: 1 when the latest poll succeeded and is
    fresh (``AppSnapshot.is_fresh``: no older than 2 x the poll interval), else 0;
  - ``duix_app_concurrency_total_number``, ``duix_app_concurrency_user``, ``duix_app_sessions``,
    ``duix_app_oldest_session_age_seconds`` and the gauge histogram
    ``duix_app_session_age_seconds`` are exported only for FRESH snapshots; a failed, stale or
    never-polled app has none of them (never a fake 0) and ``duix_up`` says why. The session
    series also need the app's session list to be polled (``sessions`` is not ``None``). The
    oldest age is absent when no session has a known age (including when there are no sessions:
    "0 seconds old" would be a lie); the histogram counts only sessions with a known age;
  - ``duix_app_last_poll_success_timestamp_seconds{app}`` is exported whenever the app has EVER
    succeeded, even while its latest poll failed or is stale. Unlike the values above it stays
    true as it ages (the last success did happen then), and it is exactly what a staleness alert
    needs: ``time() - duix_app_last_poll_success_timestamp_seconds > 300``.

* **Daemon values** (``duixwatch_*``) are ordinary counters, gauges and histograms updated by the
  daemon through the methods of :class:`Metrics`. Per-app children of labelled metrics are
  dropped by :meth:`Metrics.set_apps` when a reload removes the app.

Renamed from design.md §6: ``duix_app_concurrency_total`` is exported as
``duix_app_concurrency_total_number`` (DUIX's ``totalConcurrentNumber``). A ``_total`` suffix is
reserved for counters: promtool's lint rejects it on a gauge, and PromQL users and tools would
take it for a counter. The change is recorded in the CHANGELOG.

Additions beyond design.md §6, all from the same collector, for every snapshot:
``duixwatch_app_consecutive_poll_failures{app}`` (failed polls since the last success),
``duixwatch_app_poll_interval_seconds{app}`` (the configured interval: staleness is 2 x this),
and ``duixwatch_apps`` (number of apps in the snapshot store). ``set_apps`` also initialises
``duixwatch_poll_errors_total`` at 0 for every configured app and reason, so that ``rate()`` and
``increase()`` see an app's very first error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final, cast, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from duixwatch.core import errors, models
from duixwatch.core.clock import Clock
from duixwatch.export import exposition
from duixwatch.export.exposition import SMALL_MAX as _SMALL_MAX
from duixwatch.export.exposition import SMALL_NUMBERS as _SMALL
from duixwatch.export.exposition import Family, escape_label_value, number
from duixwatch.export.exposition import go_number as _go

__all__ = [
    "API_REQUEST_DURATION_BUCKETS",
    "SESSION_AGE_BUCKETS",
    "Metrics",
    "PollErrorCounter",
    "SnapshotCollector",
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

#: Upper bounds (seconds) of ``duixwatch_api_request_duration_seconds``: 5 ms … 30 s, which
#: covers the default 10 s request timeout and the slowest configurable retries.
API_REQUEST_DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_POLL_ERROR_REASONS: Final[tuple[str, ...]] = get_args(errors.Reason)

_POLICY_MATCHED_LABELS: Final = ("app", "policy")
_POLICY_ACTION_LABELS: Final = ("app", "policy", "action", "outcome")
_POLICY_ABORT_LABELS: Final = ("app", "policy", "reason")

# The platform values: one family per name, in exposition order (HELP texts live here).
UP = Family(
    "duix_up",
    "1 when the app's latest poll succeeded and is fresh (no older than 2 x its poll "
    "interval), else 0.",
    "gauge",
)
CONCURRENCY_TOTAL = Family(
    "duix_app_concurrency_total_number",
    "totalConcurrentNumber from getconcurrentNumber (sessions); absent unless fresh.",
    "gauge",
)
CONCURRENCY_USER = Family(
    "duix_app_concurrency_user",
    "userConcurrentNumber from getconcurrentNumber (sessions); absent unless fresh.",
    "gauge",
)
SESSIONS = Family(
    "duix_app_sessions",
    "In-call sessions listed by getconcurrentList (sessions); absent unless fresh and "
    "the list is polled.",
    "gauge",
)
OLDEST_SESSION_AGE = Family(
    "duix_app_oldest_session_age_seconds",
    "Age of the oldest in-call session with a known start (seconds); absent unless "
    "fresh and at least one session has a known age.",
    "gauge",
    unit="seconds",
)
SESSION_AGE = Family(
    "duix_app_session_age_seconds",
    "Ages of the in-call sessions with a known start, now (seconds); absent unless "
    "fresh and the list is polled.",
    "gaugehistogram",
    unit="seconds",
)
LAST_SUCCESS = Family(
    "duix_app_last_poll_success_timestamp_seconds",
    "Unix time of the app's last successful poll (seconds); kept while later polls "
    "fail, absent until the first success.",
    "gauge",
    unit="seconds",
)
CONSECUTIVE_FAILURES = Family(
    "duixwatch_app_consecutive_poll_failures",
    "Polls of the app that failed in a row since its last success (polls).",
    "gauge",
)
POLL_INTERVAL = Family(
    "duixwatch_app_poll_interval_seconds",
    "Configured poll interval of the app (seconds); data older than twice this is stale.",
    "gauge",
    unit="seconds",
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
    "malformed (polls).",
    "counter",
    labels=("app", "reason"),
)

# ``le`` label values written as prometheus_client writes its own histograms' ("60.0", "+Inf").
_LE: Final[tuple[str, ...]] = (*(number(bound) for bound in SESSION_AGE_BUCKETS), "+Inf")


#: What one scrape exports for one app (``None``: the series is absent): app, up,
#: consecutive failures, poll interval, last success, concurrency, sessions, oldest age,
#: cumulative counts for each bound of SESSION_AGE_BUCKETS then +Inf, sum of ages. A plain
#: tuple: building a NamedTuple per app was a tenth of a 10,000-app scrape.
_AppRow = tuple[
    str,
    int,
    int,
    float,
    float | None,
    models.Concurrency | None,
    int | None,
    float | None,
    tuple[int, ...] | None,
    float,
]


#: SESSION_AGE_BUCKETS in whole microseconds (an age is at most a bound: start >= now - bound)
_BOUNDS_US: Final = tuple(int(bound * 1_000_000) for bound in SESSION_AGE_BUCKETS)


class SnapshotCollector(Collector):
    """Exports the snapshot store as it is at scrape time (the ``duix_*`` platform values).

    ``snapshots`` is called once per scrape and ``clock.now()`` read once, so every series of
    one scrape agrees on what is fresh. :meth:`collect` gives prometheus_client families (for
    registry readers); :meth:`exposition` writes the same samples as text, fast
    (:mod:`duixwatch.exposition`).
    """

    FAMILIES: Final = (
        UP,
        CONCURRENCY_TOTAL,
        CONCURRENCY_USER,
        SESSIONS,
        OLDEST_SESSION_AGE,
        SESSION_AGE,
        LAST_SUCCESS,
        CONSECUTIVE_FAILURES,
        POLL_INTERVAL,
        APPS,
    )

    def __init__(
        self, snapshots: Callable[[], Iterable[models.AppSnapshot]], *, clock: Clock
    ) -> None:
        self._snapshots = snapshots
        self._clock = clock
        self._bucket_text: dict[str, tuple[tuple[int, ...], str]] = {}
        #: app -> (session starts, counts valid until (µs), bucket counts)
        self._counts: dict[str, tuple[tuple[int, ...], int, tuple[int, ...]]] = {}

    def _rows(self) -> list[_AppRow]:
        """Every app's values now. An app's bucket counts are kept from the last scrape while
        its sessions' starts are the same and none has grown out of a bucket since."""
        now = self._clock.now()
        now_us = models.epoch_us(now)
        previous = self._counts
        kept: dict[str, tuple[tuple[int, ...], int, tuple[int, ...]]] = {}
        rows: list[_AppRow] = []
        for snap in self._snapshots():
            fresh = snap.is_fresh(now)
            last = snap.fetched_at.timestamp() if snap.fetched_at is not None else None
            listing = snap.sessions
            if not fresh or listing is None:
                rows.append(
                    (
                        snap.app,
                        1 if fresh else 0,
                        snap.consecutive_failures,
                        snap.poll_interval_seconds,
                        last,
                        snap.concurrency if fresh else None,
                        None,
                        None,
                        None,
                        0.0,
                    )
                )
                continue
            starts = listing.starts_us
            cached = previous.get(snap.app)
            if cached is not None and now_us <= cached[1] and cached[0] == starts:
                counts = cached[2]
                oldest, age_sum = listing.oldest_and_sum(now_us)
                kept[snap.app] = cached
            else:
                ages = listing.ages(now_us, _BOUNDS_US)
                counts, oldest, age_sum = ages.counts, ages.oldest_seconds, ages.sum_seconds
                kept[snap.app] = (starts, ages.counts_valid_until_us, counts)
            rows.append(
                (
                    snap.app,
                    1,
                    snap.consecutive_failures,
                    snap.poll_interval_seconds,
                    last,
                    snap.concurrency,
                    len(listing),
                    oldest,
                    counts,
                    age_sum,
                )
            )
        self._counts = kept
        return rows

    def describe(self) -> Iterable[Metric]:
        """The families this collector owns, without samples (lets the registry catch clashes)."""
        return [family.empty() for family in self.FAMILIES]

    def collect(self) -> Iterable[Metric]:
        """One family per metric name, with a sample per app that has a true value for it."""
        rows = self._rows()
        f = [family.empty() for family in self.FAMILIES]
        gauges = [cast(GaugeMetricFamily, family) for family in f]
        up, total, user, sessions, oldest, _, last, failures, interval, apps = gauges
        ages = cast(GaugeHistogramMetricFamily, f[self.FAMILIES.index(SESSION_AGE)])
        apps.add_metric([], len(rows))
        for name, is_up, failed, every, success, numbers, listed, age, counts, age_sum in rows:
            app = [name]
            up.add_metric(app, is_up)
            failures.add_metric(app, failed)
            interval.add_metric(app, every)
            if success is not None:
                last.add_metric(app, success)
            if numbers is not None:
                total.add_metric(app, numbers.total_concurrent_number)
                user.add_metric(app, numbers.user_concurrent_number)
            if listed is not None:
                sessions.add_metric(app, listed)
            if age is not None:
                oldest.add_metric(app, age)
            if counts is not None:
                pairs = [(le, float(n)) for le, n in zip(_LE, counts, strict=True)]
                ages.add_metric(app, pairs, age_sum)
        return f

    def exposition(self, openmetrics: bool) -> list[bytes]:
        """The samples of :meth:`collect` as exposition text (what prometheus_client writes),
        one UTF-8 chunk per family.

        Family by family, so that only one family's lines exist at a time (at 10,000 apps all
        the lines at once were ~35 MB on top of the body). An app's twelve ``_bucket`` lines
        change only when a session crosses a bound, so they are kept from the previous scrape
        while its counts are the same (for the apps of this scrape only).
        """
        rows = self._rows()
        escaped = [escape_label_value(row[0]) for row in rows]
        labels = [f'{{app="{label}"}} ' for label in escaped]
        chunks: list[bytes] = []

        def emit(family: Family, lines: Iterable[str]) -> None:
            chunks.append((family.header(openmetrics) + "".join(lines)).encode())

        emit(UP, [f"duix_up{a}{_SMALL[r[1]]}\n" for a, r in zip(labels, rows, strict=True)])
        emit(
            CONCURRENCY_TOTAL,
            [
                f"duix_app_concurrency_total_number{a}{number(c.total_concurrent_number)}\n"
                for a, r in zip(labels, rows, strict=True)
                if (c := r[5]) is not None
            ],
        )
        emit(
            CONCURRENCY_USER,
            [
                f"duix_app_concurrency_user{a}{number(c.user_concurrent_number)}\n"
                for a, r in zip(labels, rows, strict=True)
                if (c := r[5]) is not None
            ],
        )
        emit(
            SESSIONS,
            [
                f"duix_app_sessions{a}{number(n)}\n"
                for a, r in zip(labels, rows, strict=True)
                if (n := r[6]) is not None
            ],
        )
        emit(
            OLDEST_SESSION_AGE,
            [
                f"duix_app_oldest_session_age_seconds{a}{_go(age)}\n"
                for a, r in zip(labels, rows, strict=True)
                if (age := r[7]) is not None
            ],
        )
        emit(SESSION_AGE, self._session_ages(rows, escaped, labels, openmetrics))
        emit(
            LAST_SUCCESS,
            [
                f"duix_app_last_poll_success_timestamp_seconds{a}{_go(t)}\n"
                for a, r in zip(labels, rows, strict=True)
                if (t := r[4]) is not None
            ],
        )
        emit(
            CONSECUTIVE_FAILURES,
            [
                f"duixwatch_app_consecutive_poll_failures{a}"
                f"{_SMALL[n] if 0 <= (n := r[2]) < _SMALL_MAX else number(n)}\n"
                for a, r in zip(labels, rows, strict=True)
            ],
        )
        emit(
            POLL_INTERVAL,
            [
                f"duixwatch_app_poll_interval_seconds{a}{number(r[3])}\n"
                for a, r in zip(labels, rows, strict=True)
            ],
        )
        emit(APPS, [f"duixwatch_apps {number(len(rows))}\n"])
        return chunks

    def _session_ages(
        self, rows: list[_AppRow], escaped: list[str], labels: list[str], openmetrics: bool
    ) -> list[str]:
        """The gauge histogram's lines (OpenMetrics keeps each app's _gcount/_gsum with its
        buckets; the text format moves them into two gauges after all the buckets)."""
        previous = self._bucket_text
        kept: dict[str, tuple[tuple[int, ...], str]] = {}
        lines: list[str] = []
        gcount: list[str] = []
        gsum: list[str] = []
        for label, app, row in zip(escaped, labels, rows, strict=True):
            counts = row[8]
            if counts is None:
                continue
            name = row[0]
            cached = previous.get(name)
            if cached is not None and cached[0] == counts:
                block = cached[1]
            else:
                block = _BUCKETS_TEMPLATE.format(
                    label, *[_SMALL[k] if k < _SMALL_MAX else number(k) for k in counts]
                )
            kept[name] = (counts, block)
            lines.append(block)
            count = f"duix_app_session_age_seconds_gcount{app}{number(counts[-1])}\n"
            total_age = f"duix_app_session_age_seconds_gsum{app}{number(row[9])}\n"
            if openmetrics:
                lines.append(count)
                lines.append(total_age)
            else:
                gcount.append(count)
                gsum.append(total_age)
        self._bucket_text = kept
        if gcount:
            lines.append(SESSION_AGE.sub_header("_gcount"))
            lines.extend(gcount)
            lines.append(SESSION_AGE.sub_header("_gsum"))
            lines.extend(gsum)
        return lines


#: ``{0}``: the escaped app; ``{1}``..: the cumulative counts, as text.
_BUCKETS_TEMPLATE: Final = "".join(
    f'duix_app_session_age_seconds_bucket{{{{app="{{0}}",le="{le}"}}}} {{{i}}}\n'
    for i, le in enumerate(_LE, start=1)
)


class PollErrorCounter(Collector):
    """``duixwatch_poll_errors_total{app,reason}``: counts kept in a dict, written fast.

    Every configured app has every reason from the start (at 0), so that ``rate()`` and
    ``increase()`` see an app's very first error; at 10,000 apps that is 70,000 series, which
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


class ScalingCollector(Collector):
    """The autoscaling signals, read from the latest readings at scrape time.

    ``duixwatch_scaling_fresh{target}`` is always there; ``duixwatch_scaling_sessions`` and
    ``duixwatch_scaling_desired_replicas`` only while every app of the target is fresh, so that
    a Prometheus-based autoscaler sees no data (and falls back) instead of a fake zero.
    """

    def __init__(self, readings: Callable[[], Iterable[models.ScalingReading]]) -> None:
        self._readings = readings

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "duixwatch_scaling_fresh",
                "1 when every app of the scaling target has fresh data, else 0.",
                labels=["target"],
            ),
            GaugeMetricFamily(
                "duixwatch_scaling_sessions",
                "Live sessions of the scaling target's apps (sessions); absent unless fresh.",
                labels=["target"],
            ),
            GaugeMetricFamily(
                "duixwatch_scaling_desired_replicas",
                "Replicas the target's backend should run, after bounds and scale-down "
                "stabilization (replicas); absent unless fresh.",
                labels=["target"],
            ),
        ]

    def collect(self) -> Iterable[Metric]:
        fresh, sessions, desired = self._families()
        for reading in self._readings():
            fresh.add_metric([reading.target], 1 if reading.fresh else 0)
            if reading.fresh and reading.sessions is not None:
                sessions.add_metric([reading.target], reading.sessions)
            if reading.fresh and reading.desired_replicas is not None:
                desired.add_metric([reading.target], reading.desired_replicas)
        return [fresh, sessions, desired]


class Metrics:
    """Every duixwatch metric, registered on ``registry``.

    ``snapshots`` returns the current snapshot of every watched app (called at scrape time);
    ``clock`` decides freshness; ``version`` is exported as ``duixwatch_build_info{version}``.
    Registering twice on one registry raises ``ValueError`` (duplicated timeseries).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        snapshots: Callable[[], Iterable[models.AppSnapshot]],
        clock: Clock,
        version: str,
        scaling: Callable[[], Iterable[models.ScalingReading]] | None = None,
    ) -> None:
        self._apps: frozenset[str] = frozenset()
        self._removed: frozenset[str] = frozenset()
        self._request_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        # The per-app families write their own text (duixwatch.exposition); everything else
        # lives on ``library`` and is written by prometheus_client. ``registry`` sees it all.
        self._snapshot_collector = SnapshotCollector(snapshots, clock=clock)
        self._poll_errors = PollErrorCounter()
        self._library = library = CollectorRegistry(auto_describe=True)
        registry.register(self._snapshot_collector)
        registry.register(self._poll_errors)
        library.register(ScalingCollector(scaling or tuple))
        self._shard_index = Gauge(
            "duixwatch_shard_index",
            "This replica's shard index (0 when not sharded).",
            registry=library,
        )
        # Issue 6 names this duixwatch_shard_count; promtool's lint (which must stay silent)
        # reserves _count for histograms and summaries, so it is duixwatch_shards.
        self._shard_count = Gauge(
            "duixwatch_shards",
            "How many shards the apps are split into (1 when not sharded).",
            registry=library,
        )
        self._owned_apps = Gauge(
            "duixwatch_owned_apps",
            "Configured apps this replica owns and polls (apps).",
            registry=library,
        )

        self._api_requests = Counter(
            "duixwatch_api_requests_total",
            "HTTP attempts to the DUIX API by endpoint and outcome (success or the error reason) "
            "(requests).",
            ["endpoint", "outcome"],
            registry=library,
        )
        self._api_duration = Histogram(
            "duixwatch_api_request_duration_seconds",
            "Duration of HTTP attempts to the DUIX API, including failed ones (seconds).",
            ["endpoint"],
            buckets=API_REQUEST_DURATION_BUCKETS,
            unit="seconds",
            registry=library,
        )
        self._policy_matched = Gauge(
            "duixwatch_policy_matched_sessions",
            "Sessions the policy matched in its latest evaluation of the app (sessions).",
            _POLICY_MATCHED_LABELS,
            registry=library,
        )
        self._policy_actions = Counter(
            "duixwatch_policy_actions_total",
            "Policy actions by outcome: stopped, already_closed, failed, dry_run (actions).",
            _POLICY_ACTION_LABELS,
            registry=library,
        )
        self._policy_aborts = Counter(
            "duixwatch_policy_aborts_total",
            "Policy cycles that acted on nothing, by reason: max_actions, max_percent, "
            "stale_data (cycles).",
            _POLICY_ABORT_LABELS,
            registry=library,
        )
        self._policy_info = Gauge(
            "duixwatch_policy_info",
            "1 for every configured policy; labels say its action and whether it is a dry run "
            '(dry_run="false" policies close sessions when enforcement is enabled).',
            ["policy", "action", "dry_run"],
            registry=library,
        )
        self._enforcement = Gauge(
            "duixwatch_enforcement_enabled",
            "1 when enforcement.enabled is true (non-dry-run policies may close sessions), else 0.",
            registry=library,
        )
        self._reload_ok = Gauge(
            "duixwatch_config_last_reload_successful",
            "1 when the latest configuration load succeeded, else 0.",
            registry=library,
        )
        self._reload_at = Gauge(
            "duixwatch_config_last_reload_success_timestamp_seconds",
            "Unix time of the latest successful configuration load (seconds).",
            unit="seconds",
            registry=library,
        )
        build_info = Gauge(
            "duixwatch_build_info",
            "Always 1; the version label says which duixwatch is running.",
            ["version"],
            registry=library,
        )
        build_info.labels(version=version).set(1)

        ProcessCollector(registry=library)
        PlatformCollector(registry=library)
        registry.register(library)

    # ------------------------------------------------------------------ the client's observer

    def observe_request(self, endpoint: str, outcome: str, duration_seconds: float) -> None:
        """Count one HTTP attempt and its duration (a ``duix.client.RequestObserver``)."""
        children = self._request_children.get((endpoint, outcome))
        if children is None:  # labels() costs more than the counting: once per pair
            children = self._request_children[(endpoint, outcome)] = (
                self._api_requests.labels(endpoint=endpoint, outcome=outcome),
                self._api_duration.labels(endpoint=endpoint),
            )
        children[0].inc()
        children[1].observe(duration_seconds)

    # ------------------------------------------------------------------ per-app values

    def poll_failed(self, app: str, reason: str) -> None:
        """Count a failed poll of ``app``; ``reason`` is an :data:`errors.Reason` word."""
        if self._watched(app):
            self._poll_errors.inc(app, reason)

    def policy_matched(self, app: str, policy: str, count: int) -> None:
        """Record how many sessions of ``app`` the policy matched in this evaluation."""
        if self._watched(app):
            self._policy_matched.labels(app=app, policy=policy).set(count)

    def policy_action(self, app: str, policy: str, action: str, outcome: str) -> None:
        """Count one action (or dry-run would-act) of a policy, by its outcome."""
        if self._watched(app):
            self._policy_actions.labels(
                app=app, policy=policy, action=action, outcome=outcome
            ).inc()

    def policy_aborted(self, app: str, policy: str, reason: str) -> None:
        """Count a policy cycle that acted on nothing (a cap or stale data stopped it)."""
        if self._watched(app):
            self._policy_aborts.labels(app=app, policy=policy, reason=reason).inc()

    def set_apps(self, names: Iterable[str]) -> None:
        """Declare the configured apps (at start and after every reload).

        Every per-app child of the labelled metrics whose app is not in ``names`` is dropped, so
        a removed app leaves no series behind, and later per-app calls for an app that a
        previous ``set_apps`` had and this one removed are ignored (a poll still in flight when
        its app was removed must not bring its series back) until a ``set_apps`` adds it again.
        Calls for an app no ``set_apps`` has named yet are recorded, so the loops of a newly added
        app may start before or after this call. ``poll_errors_total`` starts at 0 for every app
        and reason.
        """
        apps = frozenset(names)
        self._removed = (self._removed | self._apps) - apps
        self._apps = apps
        self._poll_errors.set_apps(apps)
        _drop_children(self._policy_matched, _POLICY_MATCHED_LABELS, keep=apps)
        _drop_children(self._policy_actions, _POLICY_ACTION_LABELS, keep=apps)
        _drop_children(self._policy_aborts, _POLICY_ABORT_LABELS, keep=apps)

    def render(self, accept_header: str | None) -> tuple[bytes, str]:
        """The ``/metrics`` body and its content type (OpenMetrics if ``accept_header`` asks).

        The same bytes prometheus_client would write for ``registry``, several times faster
        for the per-app families (module docstring of :mod:`duixwatch.exposition`).
        """
        chunks, content_type = self.render_chunks(accept_header)
        return b"".join(chunks), content_type

    def render_chunks(self, accept_header: str | None) -> tuple[list[bytes], str]:
        """:meth:`render`'s body in pieces, to be sent without joining them (``/metrics``)."""
        return exposition.render(
            (self._snapshot_collector, self._poll_errors), self._library, accept_header
        )

    def set_policies(self, policies: Iterable[tuple[str, str, bool]]) -> None:
        """Declare the configured policies as ``(name, action, dry_run)`` (start and reload).

        Children of ``duixwatch_policy_matched_sessions`` of policies no longer configured are
        dropped too (their counters stay: a counter that vanishes would look like a reset).
        """
        self._policy_info.clear()
        names = set()
        for name, action, dry_run in policies:
            names.add(name)
            self._policy_info.labels(
                policy=name, action=action, dry_run="true" if dry_run else "false"
            ).set(1)
        for labels in [s.labels for m in self._policy_matched.collect() for s in m.samples]:
            if labels["policy"] not in names:
                self._policy_matched.remove(labels["app"], labels["policy"])

    def set_sharding(self, *, index: int, count: int, owned: int) -> None:
        """Export which shard this replica is and how many apps it owns."""
        self._shard_index.set(index)
        self._shard_count.set(count)
        self._owned_apps.set(owned)

    def _watched(self, app: str) -> bool:
        """Whether per-app values of ``app`` are recorded: not when a reload removed it."""
        return app not in self._removed

    # ------------------------------------------------------------------ daemon state

    def set_enforcement_enabled(self, enabled: bool) -> None:
        """Export whether enforcement is switched on."""
        self._enforcement.set(1 if enabled else 0)

    def config_reloaded(self, success: bool, *, at: datetime) -> None:
        """Record a configuration load (the first one too).

        On success the gauge is 1 and the timestamp becomes ``at``; on failure the gauge is 0 and
        the timestamp keeps the last success (the configuration still in force).
        """
        self._reload_ok.set(1 if success else 0)
        if success:
            self._reload_at.set(at.timestamp())


def _drop_children(
    metric: Counter | Gauge, labelnames: tuple[str, ...], *, keep: frozenset[str]
) -> None:
    """Remove every child of ``metric`` whose ``app`` label is not in ``keep``.

    The children are read from the metric's own samples (public API) rather than its internals.
    """
    stale = {
        tuple(sample.labels[name] for name in labelnames)
        for family in metric.collect()
        for sample in family.samples
        if sample.labels["app"] not in keep
    }
    for labelvalues in stale:
        metric.remove(*labelvalues)
