"""Wiring: one anyio task group holding the poll loops, the HTTP surface and the signal handler.

Data flows one way (design.md §3): config -> fleet of poll loops -> DUIX client -> snapshot
store -> (metrics, policy cycle -> executor -> DUIX client, audit) -> HTTP surface; beside it,
the dialog prober -> metrics and ``/status``. This module
builds those collaborators (or takes them injected: ``clock``, ``registry``, ``transport``),
plugs them into each other, starts every task with ``await tg.start(...)`` so that "started"
means listening and polling, and owns the lifecycle:

* SIGHUP, or a changed file with ``daemon.watch_config_seconds`` > 0, reloads: the new file is
  validated first; on any error the old configuration keeps running and
  ``duixwatch_config_last_reload_successful`` drops to 0; on success loops are started, stopped
  or restarted to match it (a new ``duix:`` section gets a new client);
* SIGTERM/SIGINT stop scheduling and cancel the task group: no policy starts another call (the
  calls planned and not started are audited as aborted, reason ``shutdown``), a call in flight
  finishes within what is left of ``daemon.shutdown_timeout_seconds`` or is recorded as
  ``interrupted``, reads are abandoned, the HTTP server closes its connections; the whole stop
  is bounded by ``daemon.shutdown_timeout_seconds``;
* under systemd (``Type=notify``) it tells the service manager ``READY=1`` once the HTTP
  surface listens and every poll loop has started, ``RELOADING=1``/``READY=1`` around a reload
  and ``STOPPING=1`` when it stops (the sd_notify datagram protocol; a no-op without
  ``$NOTIFY_SOCKET``).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus

from duixwatch import __version__
from duixwatch.config import (
    MAX_CONFIG_BYTES,
    AppConfig,
    Config,
    ShardingSettings,
    files,
    load_config,
    mask,
)
from duixwatch.config.sharding import owned_apps
from duixwatch.core import errors, models
from duixwatch.core.clock import Clock
from duixwatch.core.garbage import GarbageCollector
from duixwatch.dialog.prober import Prober
from duixwatch.duix import DuixClient, Transport
from duixwatch.duix.webhook import WebhookPoster
from duixwatch.export import status
from duixwatch.export.autoscaling import ScalingReading, TargetScaler
from duixwatch.export.exposition import Registry
from duixwatch.export.metrics import Metrics
from duixwatch.http import serve, server
from duixwatch.http.guard import ConnectionGuard
from duixwatch.http.security import SurfaceMetrics, WebSecurity
from duixwatch.policy import audit, notify
from duixwatch.policy.cycle import PolicyCycle
from duixwatch.policy.executor import Executor
from duixwatch.policy.plan import ActionRecord
from duixwatch.watch import state
from duixwatch.watch.conversations import DocumentWatch
from duixwatch.watch.fleet import Fleet
from duixwatch.watch.lifecycle import Lifecycles
from duixwatch.watch.snapshots import SnapshotStore
from duixwatch.watch.upkeep import Upkeep

__all__ = ["Daemon"]

log = structlog.get_logger("duixwatch.daemon")

#: How many actions of the audit log /status shows (read back at start, across restarts).
RECALLED_ACTIONS = 200
#: The part of ``daemon.shutdown_timeout_seconds`` kept, after the calls in flight are cut, for
#: their audit lines and closing the client (at most; a quarter of a short timeout).
SHUTDOWN_RESERVE_SECONDS = 2.0


def sd_notify(message: str, environ: Mapping[str, str]) -> bool:
    """Send one sd_notify datagram to ``$NOTIFY_SOCKET``; False when there is none or it failed."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify_failed", error=str(exc))
        return False
    return True


def _fingerprint(path: Path) -> str | None:
    """The config file's content, hashed, read as boundedly as the loader reads it: a path that
    became ``/dev/zero`` must not fill memory (a file growing past the limit changes its first
    limit + 1 bytes once, and that reload says it is too large)."""
    try:
        return hashlib.sha256(files.read_head(path, MAX_CONFIG_BYTES + 1)).hexdigest()
    except OSError:
        return None


class Daemon:
    """The long-running process behind ``duixwatch run``."""

    def __init__(
        self,
        config: Config,
        config_path: Path,
        *,
        clock: Clock,
        registry: Registry | None = None,
        transport: Transport | None = None,
        notify_transport: Transport | None = None,
        environ: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
        handle_signals: bool = True,
        watch_config_seconds: float | None = None,
        sharding: ShardingSettings | None = None,
        garbage: GarbageCollector | None = None,
    ) -> None:
        self._sharding_override = sharding
        #: Collects cyclic garbage on the clock (``run`` passes one; tests usually do not).
        self._garbage = garbage
        self._watch_override = watch_config_seconds
        self._path = config_path
        self._clock = clock
        self._transport = transport
        self._environ = environ
        self._process_env: Mapping[str, str] = environ if environ is not None else os.environ
        self._full_config = config
        self._config, self._shard = self._effective(config)
        self._scaler = TargetScaler()
        self._handle_signals = handle_signals
        self._store = SnapshotStore()
        self._documents = DocumentWatch(clock=clock, rng=rng)
        self._state = state.StateStore.open_or_memory(config.state.dir, now=clock.now)
        self._audit = audit.AuditLog(
            config.state.dir / audit.AUDIT_FILENAME,
            clock=clock,
            max_bytes=config.state.audit_max_bytes,
            keep=config.state.audit_keep,
            required=False,  # polling goes on; the upkeep reports it and retries
        )
        if self._audit.error is not None:
            log.error("audit_unavailable", error=self._audit.error)
        self._upkeep = Upkeep(store=self._state, audit_log=self._audit, clock=clock)
        self._lifecycles = Lifecycles(history=self._state)
        self._notifier = notify.Notifier(
            clock=clock, poster=WebhookPoster(clock=clock, transport=notify_transport)
        )
        self._registry = registry if registry is not None else Registry()
        self._metrics = Metrics(
            self._registry,
            snapshots=self._store.all,
            clock=clock,
            version=__version__,
            scaling=lambda: tuple(self._scaler.readings.values()),
            notifications=lambda: self._notifier,
            conversations=self._documents.conversations,
            avatars=self._documents.avatars,
            lifecycles=self._lifecycles,
            storage=self._upkeep,
        )
        try:
            recalled = self._upkeep.recall(RECALLED_ACTIONS)
        except audit.AuditError as exc:
            log.error("audit_read_failed", error=str(exc))  # noqa: TRY400 - says it all
            recalled = []
        #: The web config (TLS, basic auth, headers); a bad one at start is a ConfigError.
        self._web = WebSecurity(
            config.server.web_config_file,
            open_health_endpoints=config.server.open_health_endpoints,
            metrics=SurfaceMetrics(self._registry),
            now=clock.now,
            monotonic=clock.monotonic,
        )
        self._guard = ConnectionGuard(
            max_connections=config.server.max_connections,
            read_timeout=config.server.read_timeout_seconds,
            registry=self._registry,
            allowed_peer=self._web.allowed_peer,
        )
        self._client = self._new_client(config)
        self._executor = Executor(
            self._client,
            clock=clock,
            audit_log=self._audit,
            metric_set=self._metrics,
            notifier=self._notifier,
            max_stops_per_second=config.enforcement.max_stops_per_second,
            request_timeout_seconds=config.duix.request_timeout_seconds,
            keep_recent=RECALLED_ACTIONS,
            state_error=self._upkeep.state_error,
        )
        self._executor.recent.extend(
            r for r in map(ActionRecord.from_audit, recalled) if r is not None
        )
        self._configure_upkeep(self._config)
        self._executor.set_in_force(
            self._config.policies, enforcement_enabled=self._config.enforcement.enabled
        )
        self._cycle = PolicyCycle(clocks=self._state, clock=clock, executor=self._executor)
        self._prober = Prober(clock=clock, observer=self._metrics.probes, rng=rng)
        self._fleet = Fleet(
            self._store,
            clock=clock,
            rng=rng or random.Random(),
            on_poll_error=self._metrics.poll_failed,
            first_seen=self._state,
            after_poll=self._after_poll,
        )
        self._fingerprint = _fingerprint(config_path)
        self._started_at = clock.now()
        self._last_reload: dict[str, Any] = {"ok": True, "at": self._started_at.isoformat()}
        self._cancel: anyio.CancelScope | None = None
        #: anyio time by which a stop must be complete (set by stop())
        self._stop_deadline: float | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ DaemonView

    def snapshots(self) -> Sequence[models.AppSnapshot]:
        return self._store.all()

    def pending(self) -> Sequence[str]:
        return self._store.pending()

    def overdue(self) -> Sequence[str]:
        duix = self._config.duix
        # A poll may legitimately run for every retry of both calls before it is late.
        grace = duix.request_timeout_seconds * (duix.read_retries + 1) * 2 + 30.0
        return self._fleet.overdue(grace_seconds=grace)

    def info(self) -> Mapping[str, Any]:
        enforcement = self._config.enforcement
        return {
            "version": __version__,
            "started_at": self._started_at.isoformat(),
            "config_file": str(self._path),
            "last_reload": dict(self._last_reload),
            "enforcement_enabled": enforcement.enabled,
            "apps_configured": len(self._full_config.apps),
            "apps_owned": len(self._config.apps),
            "shard": {"index": self._shard[0], "count": self._shard[1]},
            "policies": [
                status.policy_plan_status(p, plan.at)
                for plan in self._cycle.last_plans.values()
                for p in plan.policies
            ],
            "recent_actions": [status.action_status(r) for r in reversed(self._executor.recent)],
            "conversations": [
                status.conversation_status(c) for c in self._documents.conversations()
            ],
            "avatars": [
                status.avatar_status(a, self._clock.now()) for a in self._documents.avatars()
            ],
            "storage": status.storage_status(
                self._upkeep.blocked(),
                self._upkeep.file_sizes(),
                last_rotation=self._upkeep.last_rotation_at(),
                last_prune=self._upkeep.last_prune_at(),
                moved_aside=self._state.moved_aside,
            ),
            "dialog_probes": [
                status.probe_status(p, self._prober.results.get(p.name), self._clock.now())
                for p in self._config.dialog_probes
            ],
        }

    def scaling(self, target: str) -> ScalingReading | None:
        """The target's latest reading (``None``: no such target)."""
        return self._scaler.readings.get(target)

    def _effective(self, config: Config) -> tuple[Config, tuple[int, int]]:
        """The config this replica runs: only the apps its shard owns (raises ConfigError)."""
        sharding = self._sharding_override or config.sharding
        index = sharding.resolve(self._process_env)
        owned = owned_apps(config.apps, index=index, count=sharding.count)
        return config.model_copy(update={"apps": owned}), (index, sharding.count)

    async def _scaling_loop(self) -> None:
        """Recompute the autoscaling targets from the latest snapshots, on a timer."""
        while True:
            config = self._config
            self._scaler.update(
                config.scaling.targets,
                config.apps,
                {s.app: s for s in self._store.all()},
                now=self._clock.now(),
                monotonic=self._clock.monotonic(),
            )
            await self._clock.sleep(config.scaling.evaluation_interval_seconds)

    async def _after_poll(self, app: AppConfig, snapshot: models.AppSnapshot) -> None:
        """The policy cycle on the APP's new snapshot, under the config in force now (and the
        conversation ids of its sessions, for ``conversations: auto``)."""
        self._documents.observe(app, snapshot)
        self._lifecycles.observe(snapshot)
        if snapshot.error is None:
            await self._upkeep.settle_open_intents(app.name, snapshot)
        config = self._config
        ran = await self._cycle.run(
            app,
            snapshot,
            policies=config.policies,
            enforcement_enabled=config.enforcement.enabled,
        )
        for record in ran[1] if ran is not None else ():
            if record.outcome not in ("stopped", "already_closed"):
                continue
            if record.session_id is not None:
                self._lifecycles.stopped(app.name, record.session_id, record.policy, record.at)
            elif record.action == "close_all" and snapshot.sessions is not None:
                for session in snapshot.sessions.sessions:
                    if session.session_id is not None:
                        self._lifecycles.stopped(
                            app.name, session.session_id, record.policy, record.at
                        )

    # ------------------------------------------------------------------ lifecycle

    def _new_client(self, config: Config) -> DuixClient:
        return DuixClient(
            config.duix,
            clock=self._clock,
            transport=self._transport,
            observer=self._metrics.observe_request,
        )

    @property
    def config(self) -> Config:
        """The configuration in force."""
        return self._config

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve and poll until stopped; ``task_status.started(http_port)``."""
        config = self._config
        self._publish_config(config)
        log.info(
            "starting",
            version=__version__,
            config_file=str(self._path),
            config=mask(config),
        )
        app = self._web.wrap(
            server.create_app(
                render=self._metrics.render_chunks,
                view=self,
                clock=self._clock,
                details=lambda: self._config.server.status_details,
            )
        )
        try:
            async with anyio.create_task_group() as tg:
                self._cancel = tg.cancel_scope
                if self._handle_signals:
                    await tg.start(self._signals)
                await tg.start(self._notifier.run)
                # The writer first: the first polls queue first-seen times at once.
                tg.start_soon(partial(self._state.write_behind, clock=self._clock))
                await tg.start(self._fleet.run)
                await self._fleet.apply(config.apps, self._client, config.daemon)
                await tg.start(self._prober.run)
                self._prober.apply(config.dialog_probes)
                await tg.start(self._documents.run)
                self._documents.apply(config.apps, self._client)
                tg.start_soon(self._scaling_loop)
                await tg.start(self._upkeep.run)
                if self._garbage is not None:
                    await tg.start(self._garbage.run)
                self.port = await tg.start(
                    partial(
                        serve.serve,
                        tls=self._web.listener_context(),
                        guard=self._guard,
                        idle_timeout=config.server.idle_timeout_seconds,
                    ),
                    app,
                    config.server.host,
                    config.server.port,
                )
                if self._watch_interval() > 0:
                    tg.start_soon(self._watch_config)
                log.info(
                    "listening",
                    address=f"{config.server.host}:{self.port}",
                    tls=self._web.listener_context() is not None,
                    basic_auth=bool(self._web.config.basic_auth_users),
                )
                sd_notify(f"READY=1\nSTATUS=watching {len(config.apps)} app(s)", self._process_env)
                task_status.started(self.port)
        finally:
            sd_notify("STOPPING=1", self._process_env)
            left = self._config.daemon.shutdown_timeout_seconds
            if self._stop_deadline is not None:
                left = max(0.0, self._stop_deadline - anyio.current_time())
            with anyio.move_on_after(left, shield=True):
                await self._client.aclose()
            self._audit.close()
            try:
                self._state.close()  # writes what is still queued
            except state.StateError as exc:
                self._state.log_write_failure(exc)
            log.info("stopped")

    def stop(self) -> None:
        """Stop scheduling and shut down (what SIGTERM does): no policy starts another call,
        and the calls in flight have until the shutdown timeout, less a reserve, to finish."""
        if self._stop_deadline is None:
            timeout = self._config.daemon.shutdown_timeout_seconds
            self._stop_deadline = anyio.current_time() + timeout
            self._executor.stop(grace_seconds=timeout - min(SHUTDOWN_RESERVE_SECONDS, timeout / 4))
        if self._cancel is not None:
            self._cancel.cancel()

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(
            signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1
        ) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload(trigger="SIGHUP")
                elif signum == signal.SIGUSR1:
                    await self.reopen_audit()
                else:
                    log.info("shutting_down", signal=signal.Signals(signum).name)
                    self.stop()
                    return

    async def reopen_audit(self) -> bool:
        """Reopen the audit log (SIGUSR1: logrotate moved it away); whether it opened."""
        try:
            await anyio.to_thread.run_sync(self._audit.reopen)
        except audit.AuditError as exc:
            log.error("audit_reopen_failed", error=str(exc))  # noqa: TRY400 - says it all
            return False
        return True

    def _watch_interval(self) -> float:
        if self._watch_override is not None:
            return self._watch_override
        return self._config.daemon.watch_config_seconds

    async def _watch_config(self) -> None:
        """Reload when the file's content changes (for platforms without SIGHUP, e.g. a
        Kubernetes ConfigMap update)."""
        while (interval := self._watch_interval()) > 0:  # a reload may turn it off
            await self._clock.sleep(interval)
            current = await anyio.to_thread.run_sync(_fingerprint, self._path)
            if current is not None and current != self._fingerprint:
                await self.reload(trigger="file changed")

    async def reload(self, *, trigger: str = "request") -> bool:
        """Validate the file again and swap it in; keep the old configuration on any error."""
        usec = int(time.monotonic() * 1_000_000)  # systemd compares with CLOCK_MONOTONIC
        sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", self._process_env)
        try:
            return await self._reload(trigger)
        finally:
            sd_notify(
                f"READY=1\nSTATUS=watching {len(self._config.apps)} app(s)", self._process_env
            )

    async def _reload(self, trigger: str) -> bool:
        self._fingerprint = await anyio.to_thread.run_sync(_fingerprint, self._path)
        try:
            full = await anyio.to_thread.run_sync(
                lambda: load_config(self._path, environ=self._environ)
            )
            new, shard = self._effective(full)
        except errors.ConfigError as exc:
            self._reload_failed(trigger, str(exc))
            # An expected failure: the message names file, line and key; a traceback adds noise.
            log.error("config_reload_failed", trigger=trigger, error=str(exc))  # noqa: TRY400
            return False
        except Exception as exc:
            # A duixwatch bug (the loader should have turned it into a ConfigError): the old
            # configuration keeps running, and the traceback says where.
            self._reload_failed(trigger, f"internal error: {type(exc).__name__}")
            log.exception("config_reload_failed", trigger=trigger, error=type(exc).__name__)
            return False
        old = self._config
        old_client = self._client
        self._full_config, self._shard = full, shard
        if new.duix != old.duix:
            self._client = self._new_client(new)
        for key in ("listen", "web_config_file", "idle_timeout_seconds"):
            if getattr(new.server, key) != getattr(old.server, key):
                log.warning(
                    "config_reload_partial",
                    detail=f"server.{key} changes take effect after a restart",
                    **{key: str(getattr(old.server, key))},
                )
        self._web.open_health_endpoints = new.server.open_health_endpoints
        self._guard.max_connections = new.server.max_connections
        self._guard.read_timeout = new.server.read_timeout_seconds
        self._web.refresh()
        if new.state.dir != old.state.dir:
            log.warning(
                "config_reload_partial",
                detail="state.dir changes take effect after a restart",
                dir=str(old.state.dir),
            )
        self._publish_config(new)  # first: stragglers of removed APPs are then ignored
        self._executor.reconfigure(
            self._client,
            max_stops_per_second=new.enforcement.max_stops_per_second,
            request_timeout_seconds=new.duix.request_timeout_seconds,
        )
        # The executor first: a plan made under a policy this config removes, changes or no
        # longer enforces starts nothing more, from the moment the new config is in force.
        self._executor.set_in_force(new.policies, enforcement_enabled=new.enforcement.enabled)
        self._config = new  # before the loops restart: their policy cycles read it
        await self._fleet.apply(new.apps, self._client, new.daemon)
        self._prober.apply(new.dialog_probes)
        self._documents.apply(new.apps, self._client)
        self._configure_upkeep(new)  # forgets removed APPs and policies, in a worker thread
        self._cycle.forget_apps({a.name for a in new.apps})
        if self._client is not old_client:
            await old_client.aclose()
        self._last_reload = {"ok": True, "at": self._clock.now().isoformat()}
        log.info(
            "config_reloaded",
            trigger=trigger,
            apps=len(new.apps),
            added=sorted({a.name for a in new.apps} - {a.name for a in old.apps}),
            removed=sorted({a.name for a in old.apps} - {a.name for a in new.apps}),
        )
        return True

    def _configure_upkeep(self, config: Config) -> None:
        self._upkeep.configure(
            app_ids=(a.app_id for a in config.apps),
            policies=(p.name for p in config.policies),
            history_days=config.state.history_days,
            audit_max_bytes=config.state.audit_max_bytes,
            audit_keep=config.state.audit_keep,
        )

    def _reload_failed(self, trigger: str, error: str) -> None:
        self._last_reload = {"ok": False, "at": self._clock.now().isoformat(), "error": error}
        self._metrics.config_reloaded(False, at=self._clock.now())

    def _publish_config(self, config: Config) -> None:
        self._metrics.set_apps(app.name for app in config.apps)
        self._lifecycles.set_apps(app.name for app in config.apps)
        index, count = self._shard
        self._metrics.set_sharding(index=index, count=count, owned=len(config.apps))
        self._metrics.set_policies((p.name, p.action, p.dry_run) for p in config.policies)
        self._metrics.set_enforcement_enabled(config.enforcement.enabled)
        self._metrics.probes.set_probes(config.dialog_probes)
        self._metrics.config_reloaded(True, at=self._clock.now())
