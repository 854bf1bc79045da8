"""The Prometheus metric set of duixwatch (design.md §6), on an injected registry.

:class:`Metrics` creates every metric on the :class:`~duixwatch.export.exposition.Registry` it
is given (never the global ``REGISTRY``), so a test builds a fresh registry and reads it back
with ``get_sample_value``; :meth:`Metrics.render` writes everything registered on it as the
``/metrics`` body, negotiating OpenMetrics from ``Accept``.

Two kinds of values:

* **Per-app values** come from the snapshot store at scrape time, through the one table of
  :mod:`duixwatch.export.apps` (``duix_*`` and ``duixwatch_app_*``), and the poll-error counters
  kept beside it. Nothing is cached between scrapes that could change what is written, so an
  app removed by a reload disappears with its snapshot, and a value is exported only while it
  is true (never a fake 0; ``duix_up`` says why).
* **Daemon values** (``duixwatch_*``) are ordinary counters, gauges and histograms updated by the
  daemon through the methods of :class:`Metrics`, and collectors that read their source at
  scrape time (autoscaling readings, the notifier's delivery counts). Per-app children of
  labelled metrics are dropped by :meth:`Metrics.set_apps` when a reload removes the app.

``set_apps`` also initialises ``duixwatch_poll_errors_total`` at 0 for every configured app and
reason, so that ``rate()`` and ``increase()`` see an app's very first error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Final, Protocol

from prometheus_client import (
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from duixwatch.core import models
from duixwatch.core.clock import Clock
from duixwatch.export import exposition
from duixwatch.export.apps import COLUMNS, Column, PollErrorCounter, SnapshotCollector
from duixwatch.export.autoscaling import ScalingReading
from duixwatch.export.conversations import DocumentCollector
from duixwatch.export.lifecycle import LifecycleCollector
from duixwatch.export.probes import ProbeMetrics
from duixwatch.export.storage import StorageCollector, StorageView
from duixwatch.watch.conversations import AvatarState, ConversationState
from duixwatch.watch.lifecycle import Lifecycles

__all__ = [
    "API_REQUEST_DURATION_BUCKETS",
    "DeliveryCounts",
    "Metrics",
]

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


_POLICY_MATCHED_LABELS: Final = ("app", "policy")
_POLICY_ACTION_LABELS: Final = ("app", "policy", "action", "outcome")
_POLICY_ABORT_LABELS: Final = ("app", "policy", "reason")


class DeliveryCounts(Protocol):
    """The notifier's delivery counts (:class:`duixwatch.policy.notify.Notifier`)."""

    @property
    def sent(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def dropped(self) -> int: ...


class NotificationCollector(Collector):
    """``duixwatch_notifications_total{outcome}``: webhook deliveries (one per target), read
    from the notifier at scrape time: sent (a 2xx), failed (after its retries), dropped (the
    queue was full, or the daemon stopped before sending)."""

    def __init__(self, counts: Callable[[], DeliveryCounts | None]) -> None:
        self._counts = counts

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            "duixwatch_notifications",
            "Policy webhook deliveries by outcome: sent, failed (after retries), dropped "
            "(queue full or stopping) (notifications).",
            labels=["outcome"],
        )

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        counts = self._counts()
        for outcome in ("sent", "failed", "dropped"):
            family.add_metric([outcome], getattr(counts, outcome) if counts is not None else 0)
        return [family]


class ScalingCollector(Collector):
    """The autoscaling signals, read from the latest readings at scrape time.

    ``duixwatch_scaling_fresh{target}`` is always there; ``duixwatch_scaling_sessions`` and
    ``duixwatch_scaling_desired_replicas`` only while every app of the target is fresh, so that
    a Prometheus-based autoscaler sees no data (and falls back) instead of a fake zero.
    """

    def __init__(self, readings: Callable[[], Iterable[ScalingReading]]) -> None:
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
    ``clock`` decides freshness; ``version`` is exported as ``duixwatch_build_info{version}``;
    ``scaling`` and ``notifications`` are read at scrape time too; ``columns`` is the per-app
    table (:data:`duixwatch.export.apps.COLUMNS`). Registering twice on one registry raises
    ``ValueError`` (duplicated timeseries).
    """

    def __init__(
        self,
        registry: exposition.Registry,
        *,
        snapshots: Callable[[], Iterable[models.AppSnapshot]],
        clock: Clock,
        version: str,
        scaling: Callable[[], Iterable[ScalingReading]] | None = None,
        notifications: Callable[[], DeliveryCounts | None] | None = None,
        conversations: Callable[[], Sequence[ConversationState]] = tuple,
        avatars: Callable[[], Sequence[AvatarState]] = tuple,
        lifecycles: Lifecycles | None = None,
        storage: StorageView | None = None,
        columns: Sequence[Column] = COLUMNS,
    ) -> None:
        self._registry = registry  # every metric lives on it
        self._apps: frozenset[str] = frozenset()
        self._removed: frozenset[str] = frozenset()
        self._request_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._snapshot_collector = SnapshotCollector(snapshots, clock=clock, columns=columns)
        self._poll_errors = PollErrorCounter()
        registry.register(self._snapshot_collector)
        registry.register(self._poll_errors)
        if lifecycles is not None:
            registry.register(LifecycleCollector(lifecycles))
        if storage is not None:
            registry.register(StorageCollector(storage))
        registry.register(ScalingCollector(scaling or tuple))
        registry.register(NotificationCollector(notifications or (lambda: None)))
        registry.register(DocumentCollector(conversations, avatars, clock=clock))
        #: ``duixwatch_dialog_probe_*``: the prober's observer.
        self.probes = ProbeMetrics(registry)
        self._shard_index = Gauge(
            "duixwatch_shard_index",
            "This replica's shard index (0 when not sharded).",
            registry=registry,
        )
        # Not duixwatch_shard_count: promtool's lint (which must stay silent) reserves _count
        # for histograms and summaries.
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
        self._policy_matched = Gauge(
            "duixwatch_policy_matched_sessions",
            "Sessions the policy matched in its latest evaluation of the app (sessions).",
            _POLICY_MATCHED_LABELS,
            registry=registry,
        )
        self._policy_actions = Counter(
            "duixwatch_policy_actions_total",
            "Policy actions by outcome: stopped, already_closed, failed, interrupted, "
            "still_listed, dry_run (actions).",
            _POLICY_ACTION_LABELS,
            registry=registry,
        )
        self._policy_aborts = Counter(
            "duixwatch_policy_aborts_total",
            "Policy cycles that acted on nothing, by reason: max_actions, max_percent, "
            "stale_data, no_session_list, state_unavailable, audit_unavailable; or stopped "
            "part-way: shutdown, "
            "reload, cancelled (cycles).",
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
        self._dropped = Counter(
            "duixwatch_exposition_dropped_samples_total",
            "Samples left out of /metrics because their value could not be written (a "
            "duixwatch bug: the rest of the scrape is unaffected) (samples).",
            ["metric"],
            registry=registry,
        )

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)  # python_gc_*: what core.garbage collects, by generation

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
        """Count a policy cycle that acted on nothing (a cap or stale data stopped it), or was
        halted part-way (shutdown, reload)."""
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
        for the per-app families (module docstring of :mod:`duixwatch.export.exposition`).
        """
        chunks, content_type = self.render_chunks(accept_header)
        return b"".join(chunks), content_type

    def render_chunks(self, accept_header: str | None) -> tuple[list[bytes], str]:
        """:meth:`render`'s body in pieces, to be sent without joining them (``/metrics``)."""
        return exposition.render(self._registry, accept_header, on_drop=self._sample_dropped)

    def _sample_dropped(self, metric: str) -> None:
        self._dropped.labels(metric=metric).inc()

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
