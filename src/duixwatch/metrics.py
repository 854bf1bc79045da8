"""The Prometheus metric set of duixwatch (design.md §6), on an injected registry.

:class:`Metrics` creates every metric on the ``CollectorRegistry`` it is given (never the global
``REGISTRY``), so a test builds a fresh registry and reads it back with ``get_sample_value``.
:func:`render` turns a registry into an HTTP body, negotiating OpenMetrics from ``Accept``.

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
from typing import Final, NamedTuple, cast, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from duixwatch import errors, models
from duixwatch.clock import Clock

__all__ = [
    "API_REQUEST_DURATION_BUCKETS",
    "SESSION_AGE_BUCKETS",
    "Metrics",
    "SnapshotCollector",
    "render",
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

_POLL_ERROR_LABELS: Final = ("app", "reason")
_POLICY_MATCHED_LABELS: Final = ("app", "policy")
_POLICY_ACTION_LABELS: Final = ("app", "policy", "action", "outcome")
_POLICY_ABORT_LABELS: Final = ("app", "policy", "reason")


class _Families(NamedTuple):
    """The (empty) metric families of one scrape, in exposition order."""

    up: GaugeMetricFamily
    concurrency_total: GaugeMetricFamily
    concurrency_user: GaugeMetricFamily
    sessions: GaugeMetricFamily
    oldest_session_age: GaugeMetricFamily
    session_age: GaugeHistogramMetricFamily
    last_success: GaugeMetricFamily
    consecutive_failures: GaugeMetricFamily
    poll_interval: GaugeMetricFamily
    apps: GaugeMetricFamily


def _families() -> _Families:
    """Fresh, empty families: the HELP texts and types of the platform values live here."""
    app = ["app"]
    return _Families(
        up=GaugeMetricFamily(
            "duix_up",
            "1 when the app's latest poll succeeded and is fresh (no older than 2 x its poll "
            "interval), else 0.",
            labels=app,
        ),
        concurrency_total=GaugeMetricFamily(
            "duix_app_concurrency_total_number",
            "totalConcurrentNumber from getconcurrentNumber (sessions); absent unless fresh.",
            labels=app,
        ),
        concurrency_user=GaugeMetricFamily(
            "duix_app_concurrency_user",
            "userConcurrentNumber from getconcurrentNumber (sessions); absent unless fresh.",
            labels=app,
        ),
        sessions=GaugeMetricFamily(
            "duix_app_sessions",
            "In-call sessions listed by getconcurrentList (sessions); absent unless fresh and "
            "the list is polled.",
            labels=app,
        ),
        oldest_session_age=GaugeMetricFamily(
            "duix_app_oldest_session_age_seconds",
            "Age of the oldest in-call session with a known start (seconds); absent unless "
            "fresh and at least one session has a known age.",
            labels=app,
            unit="seconds",
        ),
        session_age=GaugeHistogramMetricFamily(
            "duix_app_session_age_seconds",
            "Ages of the in-call sessions with a known start, now (seconds); absent unless "
            "fresh and the list is polled.",
            labels=app,
            unit="seconds",
        ),
        last_success=GaugeMetricFamily(
            "duix_app_last_poll_success_timestamp_seconds",
            "Unix time of the app's last successful poll (seconds); kept while later polls "
            "fail, absent until the first success.",
            labels=app,
            unit="seconds",
        ),
        consecutive_failures=GaugeMetricFamily(
            "duixwatch_app_consecutive_poll_failures",
            "Polls of the app that failed in a row since its last success (polls).",
            labels=app,
        ),
        poll_interval=GaugeMetricFamily(
            "duixwatch_app_poll_interval_seconds",
            "Configured poll interval of the app (seconds); data older than twice this is stale.",
            labels=app,
            unit="seconds",
        ),
        apps=GaugeMetricFamily(
            "duixwatch_apps",
            "Apps in the snapshot store, i.e. configured and watched (apps).",
        ),
    )


class SnapshotCollector(Collector):
    """Exports the snapshot store as it is at scrape time (the ``duix_*`` platform values).

    ``snapshots`` is called once per scrape and ``clock.now()`` read once, so every series of
    one scrape agrees on what is fresh.
    """

    def __init__(
        self, snapshots: Callable[[], Iterable[models.AppSnapshot]], *, clock: Clock
    ) -> None:
        self._snapshots = snapshots
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        """The families this collector owns, without samples (lets the registry catch clashes)."""
        return list(_families())

    def collect(self) -> Iterable[Metric]:
        """One family per metric name, with a sample per app that has a true value for it."""
        snapshots = list(self._snapshots())
        now = self._clock.now()
        f = _families()
        f.apps.add_metric([], len(snapshots))
        for snap in snapshots:
            app = [snap.app]
            fresh = snap.is_fresh(now)
            f.up.add_metric(app, 1.0 if fresh else 0.0)
            f.consecutive_failures.add_metric(app, snap.consecutive_failures)
            f.poll_interval.add_metric(app, snap.poll_interval_seconds)
            if snap.fetched_at is not None:
                f.last_success.add_metric(app, snap.fetched_at.timestamp())
            if not fresh:
                continue
            if snap.concurrency is not None:
                f.concurrency_total.add_metric(app, snap.concurrency.total_concurrent_number)
                f.concurrency_user.add_metric(app, snap.concurrency.user_concurrent_number)
            if snap.sessions is None:
                continue
            f.sessions.add_metric(app, len(snap.sessions))
            ages = [
                age
                for age in (session.age_seconds(now) for session in snap.sessions.sessions)
                if age is not None
            ]
            if ages:
                f.oldest_session_age.add_metric(app, max(ages))
            f.session_age.add_metric(app, _cumulative_buckets(ages), sum(ages))
        return list(f)


# ``le`` label values written as prometheus_client writes its own histograms' ("60.0", "+Inf");
# the cast only gives the untyped helper its real signature.
_LE: Final[tuple[str, ...]] = tuple(
    cast(Callable[[float], str], floatToGoString)(bound) for bound in SESSION_AGE_BUCKETS
)


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


def _cumulative_buckets(ages: list[float]) -> list[tuple[str, float]]:
    """``(le, count)`` pairs over :data:`SESSION_AGE_BUCKETS`, cumulative, ending with +Inf."""
    buckets = [
        (le, float(sum(1 for age in ages if age <= bound)))
        for le, bound in zip(_LE, SESSION_AGE_BUCKETS, strict=True)
    ]
    buckets.append(("+Inf", float(len(ages))))
    return buckets


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
        registry.register(SnapshotCollector(snapshots, clock=clock))
        registry.register(ScalingCollector(scaling or tuple))
        self._shard_index = Gauge(
            "duixwatch_shard_index",
            "This replica's shard index (0 when not sharded).",
            registry=registry,
        )
        # Issue 6 names this duixwatch_shard_count; promtool's lint (which must stay silent)
        # reserves _count for histograms and summaries, so it is duixwatch_shards.
        self._shard_count = Gauge(
            "duixwatch_shards",
            "How many shards the apps are split into (1 when not sharded).",
            registry=registry,
        )
        self._owned_apps = Gauge(
            "duixwatch_owned_apps",
            "Configured apps this replica owns and polls (apps).",
            registry=registry,
        )

        self._api_requests = Counter(
            "duixwatch_api_requests_total",
            "HTTP attempts to the DUIX API by endpoint and outcome (success or the error reason) "
            "(requests).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self._api_duration = Histogram(
            "duixwatch_api_request_duration_seconds",
            "Duration of HTTP attempts to the DUIX API, including failed ones (seconds).",
            ["endpoint"],
            buckets=API_REQUEST_DURATION_BUCKETS,
            unit="seconds",
            registry=registry,
        )
        self._poll_errors = Counter(
            "duixwatch_poll_errors_total",
            "Failed polls of an app by reason: auth, quota, server, client, timeout, transport, "
            "malformed (polls).",
            _POLL_ERROR_LABELS,
            registry=registry,
        )
        self._policy_matched = Gauge(
            "duixwatch_policy_matched_sessions",
            "Sessions the policy matched in its latest evaluation of the app (sessions).",
            _POLICY_MATCHED_LABELS,
            registry=registry,
        )
        self._policy_actions = Counter(
            "duixwatch_policy_actions_total",
            "Policy actions by outcome: stopped, already_closed, failed, dry_run (actions).",
            _POLICY_ACTION_LABELS,
            registry=registry,
        )
        self._policy_aborts = Counter(
            "duixwatch_policy_aborts_total",
            "Policy cycles that acted on nothing, by reason: max_actions, max_percent, "
            "stale_data (cycles).",
            _POLICY_ABORT_LABELS,
            registry=registry,
        )
        self._policy_info = Gauge(
            "duixwatch_policy_info",
            "1 for every configured policy; labels say its action and whether it is a dry run "
            '(dry_run="false" policies close sessions when enforcement is enabled).',
            ["policy", "action", "dry_run"],
            registry=registry,
        )
        self._enforcement = Gauge(
            "duixwatch_enforcement_enabled",
            "1 when enforcement.enabled is true (non-dry-run policies may close sessions), else 0.",
            registry=registry,
        )
        self._reload_ok = Gauge(
            "duixwatch_config_last_reload_successful",
            "1 when the latest configuration load succeeded, else 0.",
            registry=registry,
        )
        self._reload_at = Gauge(
            "duixwatch_config_last_reload_success_timestamp_seconds",
            "Unix time of the latest successful configuration load (seconds).",
            unit="seconds",
            registry=registry,
        )
        build_info = Gauge(
            "duixwatch_build_info",
            "Always 1; the version label says which duixwatch is running.",
            ["version"],
            registry=registry,
        )
        build_info.labels(version=version).set(1)

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

    # ------------------------------------------------------------------ the client's observer

    def observe_request(self, endpoint: str, outcome: str, duration_seconds: float) -> None:
        """Count one HTTP attempt and its duration (a ``duix.client.RequestObserver``)."""
        self._api_requests.labels(endpoint=endpoint, outcome=outcome).inc()
        self._api_duration.labels(endpoint=endpoint).observe(duration_seconds)

    # ------------------------------------------------------------------ per-app values

    def poll_failed(self, app: str, reason: str) -> None:
        """Count a failed poll of ``app``; ``reason`` is an :data:`errors.Reason` word."""
        if self._watched(app):
            self._poll_errors.labels(app=app, reason=reason).inc()

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
        _drop_children(self._poll_errors, _POLL_ERROR_LABELS, keep=apps)
        _drop_children(self._policy_matched, _POLICY_MATCHED_LABELS, keep=apps)
        _drop_children(self._policy_actions, _POLICY_ACTION_LABELS, keep=apps)
        _drop_children(self._policy_aborts, _POLICY_ABORT_LABELS, keep=apps)
        for app in apps:
            for reason in _POLL_ERROR_REASONS:
                self._poll_errors.labels(app=app, reason=reason)

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


def render(registry: CollectorRegistry, accept_header: str | None) -> tuple[bytes, str]:
    """The exposition of ``registry`` and its content type.

    OpenMetrics when ``accept_header`` asks for ``application/openmetrics-text``, else the
    Prometheus text format 0.0.4.
    """
    encoder, content_type = choose_encoder(accept_header or "")
    return encoder(registry), content_type
