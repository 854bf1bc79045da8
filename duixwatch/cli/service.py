"""The commands that read a config file: ``run`` (the daemon), ``once``, ``plan`` and
``check``."""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path
from typing import TextIO

import anyio
import structlog
from pydantic import ValidationError

from duixwatch.cli import output, runtime
from duixwatch.config import AppConfig, Config, ShardingSettings, load_config
from duixwatch.config.web import load_web_config, web_config_warnings
from duixwatch.core import models
from duixwatch.core.clock import SystemClock
from duixwatch.duix import DuixClient
from duixwatch.export.status import (
    action_status,
    format_age,
    policy_plan_status,
    snapshot_status,
)
from duixwatch.policy import audit
from duixwatch.policy.cycle import PolicyCycle
from duixwatch.policy.plan import ActionRecord
from duixwatch.watch import state
from duixwatch.watch.poll import FirstSeen, MemoryFirstSeen, poll_once

__all__ = ["add_commands"]


#: ``--web.config.file`` reaches the loader as this override (so a reload keeps it).
WEB_CONFIG_ENV = "DUIXWATCH_SERVER__WEB_CONFIG_FILE"


def _environ(args: argparse.Namespace) -> dict[str, str]:
    environ = dict(os.environ)
    web = getattr(args, "web_config_file", None)
    if web is not None:
        environ[WEB_CONFIG_ENV] = os.path.abspath(web)
    return environ


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, environ=_environ(args))


#: How many of the audit log's last records ``plan`` reads back (across rotated files).
PLAN_RECENT = 50

#: The length of every DUIX id seen (Java longs); a shorter one is legal but likely a typo.
DUIX_ID_DIGITS = 19


def _cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args)
    for index, app in enumerate(config.apps):
        if len(app.app_id) != DUIX_ID_DIGITS:
            print(
                f"duixwatch check: warning: apps[{index}].app_id: {app.app_id!r} has "
                f"{len(app.app_id)} digits; DUIX app ids have {DUIX_ID_DIGITS}",
                file=sys.stderr,
            )
    # What `run` would have: the soft limit raised to the hard one.
    warning = runtime.fd_limit_warning(config, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    if warning is not None:
        print(f"duixwatch check: warning: {warning}", file=sys.stderr)
    names = ", ".join(a.name for a in config.apps)
    policies = len(config.policies)
    enforcement = "ENABLED" if config.enforcement.enabled else "disabled"
    out.write(
        f"{args.config}: OK - {len(config.apps)} app(s) ({names}), "
        f"{policies} polic{'y' if policies == 1 else 'ies'}; enforcement {enforcement}\n"
    )
    if config.server.web_config_file is not None:
        web = load_web_config(config.server.web_config_file)
        for warning in web_config_warnings(web):
            print(f"duixwatch check: warning: {web.source}: {warning}", file=sys.stderr)
        tls = web.tls
        users = len(web.basic_auth_users)
        out.write(
            f"{web.source}: OK - "
            + (f"TLS ({tls.client_auth_type or 'NoClientCert'})" if tls.enabled else "no TLS")
            + f", {users} basic auth user{'' if users == 1 else 's'}\n"
        )
    return runtime.EXIT_OK


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args)
    runtime.configure_logs(args, config)
    soft, hard = runtime.raise_fd_limit()
    log = structlog.get_logger("duixwatch.cli")
    warning = runtime.fd_limit_warning(config, soft)
    if warning is not None:
        log.warning("fd_limit_low", soft=soft, hard=hard, detail=warning)
    else:
        log.info("fd_limit", soft=soft, hard=hard, needed=runtime.descriptors_needed(config))
    sharding = None
    if args.shard_count is not None:
        index = "auto" if args.shard_index is None else args.shard_index
        try:
            sharding = ShardingSettings(index=index, count=args.shard_count)
        except ValidationError as exc:
            raise runtime.UsageError(
                f"--shard-index/--shard-count: {exc.errors()[0]['msg']}"
            ) from None
    elif args.shard_index is not None:
        raise runtime.UsageError("--shard-index needs --shard-count")
    from duixwatch.daemon import Daemon  # lazy: `check` and the rest start faster

    clock = SystemClock()
    daemon = Daemon(
        config,
        Path(args.config),
        environ=_environ(args),
        clock=clock,
        watch_config_seconds=args.watch_config,
        sharding=sharding,
        garbage=runtime.long_running_gc(clock),
    )
    try:
        runtime.run(daemon.run)
    except OSError as exc:
        print(
            f"duixwatch run: cannot listen on {config.server.listen}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return runtime.EXIT_FAILURE
    return runtime.EXIT_OK


def _poll_all(
    config: Config, clock: SystemClock, first_seen: FirstSeen
) -> list[models.AppSnapshot]:
    """One poll of every configured APP, concurrently (the client's caps still apply)."""

    async def poll_all() -> list[models.AppSnapshot]:
        results: dict[str, models.AppSnapshot] = {}
        async with DuixClient(config.duix, clock=clock) as client:

            async def one(app: AppConfig) -> None:
                results[app.name] = await poll_once(app, client, clock=clock, first_seen=first_seen)

            async with anyio.create_task_group() as tg:
                for app in config.apps:
                    tg.start_soon(one, app)
        return [results[a.name] for a in config.apps]

    return anyio.run(poll_all)


def _cmd_once(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args)
    clock = SystemClock()
    snapshots = _poll_all(config, clock, MemoryFirstSeen())
    now = clock.now()
    if args.output == "json":
        output.print_json([snapshot_status(s, now) for s in snapshots], out)
    else:
        rows = []
        for snap in snapshots:
            entry = snapshot_status(snap, now, with_sessions=False)
            sessions = entry["sessions"] or {}
            conc = entry["concurrency"] or {}
            error = snap.error
            rows.append(
                (
                    snap.app,
                    snap.app_id,
                    "up" if entry["up"] else "DOWN",
                    sessions.get("count", "-"),
                    conc.get("user_concurrent_number", "-"),
                    conc.get("total_concurrent_number", "-"),
                    format_age(sessions.get("oldest_age_seconds")),
                    f"{error.reason}: {error.message}" if error else "",
                )
            )
        output.print_table(
            ("APP", "APP ID", "STATE", "SESSIONS", "USER", "TOTAL", "OLDEST", "ERROR"), rows, out
        )
    return runtime.EXIT_FAILURE if any(s.error is not None for s in snapshots) else runtime.EXIT_OK


def _cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    """One poll and one evaluation: what every policy would do now. Never acts."""
    config = _load(args)
    clock = SystemClock()
    # The daemon's state (first-seen times, for_seconds clocks) when there is one; plan never
    # creates a state directory and never changes a for_seconds clock.
    store = (
        state.StateStore(config.state.dir)
        if config.state.dir.is_dir()
        else state.StateStore.in_memory()
    )
    try:
        snapshots = _poll_all(config, clock, store)
        cycle = PolicyCycle(clocks=store, clock=clock)  # no executor: nothing acts
        now = clock.now()
        plans = [
            cycle.plan(
                app,
                snap,
                policies=config.policies,
                enforcement_enabled=config.enforcement.enabled,
                now=now,
            )
            for app, snap in zip(config.apps, snapshots, strict=True)
        ]
    finally:
        store.close()
    entries = [policy_plan_status(p, plan.at) for plan in plans for p in plan.policies]
    recent = _recent_actions(config)
    if args.output == "json":
        output.print_json(
            {
                "enforcement_enabled": config.enforcement.enabled,
                "policies": entries,
                "recent_actions": [action_status(r) for r in reversed(recent)],
            },
            out,
        )
    else:
        rows: list[tuple[str, ...]] = []
        for e in entries:
            mode = "dry-run" if e["dry_run"] else "ENFORCE"
            head = (e["policy"], e["app"], mode)
            if e["abort"]:
                rows.append((*head, "ABORT", "", f"{e['abort']['reason']}: {e['abort']['detail']}"))
            elif e["waiting"]:
                rows.append((*head, "wait", "", e["waiting"]))
            elif not e["matched"]:
                rows.append((*head, "-", "", "nothing matches"))
            for a in e["actions"] if not e["abort"] else []:
                verb = "would close ALL" if a["action"] == "close_all" else "would stop"
                rows.append((*head, verb, a["session_id"] or "", a["reason"]))
            for m in e["matched"]:
                if m["protected"]:
                    rows.append((*head, "protected", m["session_id"] or "", m["reason"]))
        if not config.policies:
            out.write("no policies configured\n")
        else:
            output.print_table(("POLICY", "APP", "MODE", "DECISION", "SESSION", "WHY"), rows, out)
            if not config.enforcement.enabled:
                out.write("enforcement.enabled is false: nothing would be closed for real\n")
        if recent:
            latest = recent[-1]
            out.write(
                f"audit log: {len(recent)} recent action(s) (-o json lists them); the latest"
                f" {latest.at:%Y-%m-%dT%H:%M:%SZ}: {latest.policy} on {latest.app},"
                f" {latest.outcome}\n"
            )
    return runtime.EXIT_FAILURE if any(s.error is not None for s in snapshots) else runtime.EXIT_OK


def _recent_actions(config: Config) -> list[ActionRecord]:
    """The last actions the daemon recorded, across the rotated audit files (oldest first)."""
    try:
        records = audit.recent_records(config.state.dir / audit.AUDIT_FILENAME, PLAN_RECENT)
    except audit.AuditError as exc:
        sys.stderr.write(f"warning: {exc}\n")
        return []
    return [r for r in map(ActionRecord.from_audit, records) if r is not None]


def _add_web_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="exporter-toolkit web config: TLS, basic auth, headers (overrides "
        "server.web_config_file)",
    )


def add_commands(command: runtime.AddCommand) -> None:
    """Add this group's subcommands to the ``duixwatch`` grammar."""
    p = command("run", "run the daemon: poll, export metrics, serve /status")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="config file (YAML)")
    p.add_argument(
        "--watch-config",
        type=float,
        nargs="?",
        const=5.0,
        metavar="SECONDS",
        help="also reload when the file changes, checking every SECONDS (default 5)",
    )
    _add_web_config(p)
    p.add_argument(
        "--shard-count",
        type=int,
        metavar="N",
        help="split the apps across N replicas (overrides sharding.count)",
    )
    p.add_argument(
        "--shard-index",
        type=int,
        metavar="I",
        help="this replica's shard, 0..N-1 (default with --shard-count: from the StatefulSet "
        "pod name in $POD_NAME or $HOSTNAME)",
    )
    p.set_defaults(run=_cmd_run)

    p = command(
        "once", "poll every configured APP once and print the result (exit 1 if any failed)"
    )
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="config file (YAML)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=_cmd_once)

    p = command("plan", "poll once and show what every policy would do now, and why (never acts)")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="config file (YAML)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=_cmd_plan)

    p = command("check", "validate a config file and its policies (exit 2 on error)")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="config file (YAML)")
    _add_web_config(p)
    p.set_defaults(run=_cmd_check)
