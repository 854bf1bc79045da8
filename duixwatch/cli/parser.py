"""The ``duixwatch`` command line: argument parsing, output formatting and exit codes.

Exit codes (design.md §5): 0 ok, 1 runtime failure (the platform said no, the network failed),
2 usage or configuration error (argparse's own errors included). Expected failures print one
line on stderr, never a traceback; an appKey or token is never printed, except by ``token``,
whose whole purpose is to print one for debugging with curl.

Operator commands work on one APP given by ``--app-id`` and one of ``--app-key-file``,
``--app-key-env`` or ``--app-key`` (or the ``DUIX_APP_ID`` / ``DUIX_APP_KEY`` environment
variables).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO

import anyio
import yaml
from anyio.abc import TaskGroup
from pydantic import SecretStr, ValidationError

from duixwatch import __version__
from duixwatch import sim as simulator
from duixwatch.config import settings
from duixwatch.core import errors, logs, models
from duixwatch.core.clock import SystemClock
from duixwatch.daemon import Daemon
from duixwatch.duix import DuixClient
from duixwatch.duix.auth import mint_token
from duixwatch.http.server import policy_plan_status, snapshot_status
from duixwatch.policy import evaluate as policy
from duixwatch.watch import state
from duixwatch.watch.fleet import FirstSeen, MemoryFirstSeen, poll_once

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with the command line itself (exit code 2)."""


# --------------------------------------------------------------------------- output


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(_jsonable(value), indent=2, ensure_ascii=False) + "\n")


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# --------------------------------------------------------------------------- app options


def _credentials(args: argparse.Namespace) -> models.AppCredentials:
    app_id = args.app_id or os.environ.get("DUIX_APP_ID")
    if not app_id:
        raise UsageError("no app id: pass --app-id or set DUIX_APP_ID")
    key: str | None
    if args.app_key_file:
        path = Path(args.app_key_file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"--app-key-file {path}: {exc.strerror or exc}") from None
        source = f"--app-key-file {path}"
    elif args.app_key_env:
        key = os.environ.get(args.app_key_env)
        source = f"--app-key-env {args.app_key_env}"
        if key is None:
            raise UsageError(f"{source}: the variable is not set")
    elif args.app_key:
        key, source = args.app_key, "--app-key"
    else:
        key, source = os.environ.get("DUIX_APP_KEY") or None, "DUIX_APP_KEY"
        if key is None:
            raise UsageError(
                "no appKey: pass --app-key-file PATH or --app-key-env VAR, or set DUIX_APP_KEY"
            )
    if not key:
        raise UsageError(f"{source}: the appKey is empty")
    return models.AppCredentials(app_id=str(app_id), app_key=SecretStr(key))


def _duix_settings(args: argparse.Namespace) -> settings.DuixSettings:
    values: dict[str, Any] = {"base_url": args.base_url}
    if args.timeout is not None:
        values["request_timeout_seconds"] = args.timeout
    if args.timezone is not None:
        values["timezone"] = args.timezone
    try:
        return settings.DuixSettings(**values)
    except ValueError as exc:
        raise UsageError(str(exc).splitlines()[-1] if str(exc) else "bad option") from None


def _add_app_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("APP and platform")
    group.add_argument("--app-id", help="the APP's appId (default: $DUIX_APP_ID)")
    group.add_argument(
        "--app-key-file", metavar="PATH", help="read the appKey from this file (recommended)"
    )
    group.add_argument(
        "--app-key-env", metavar="VAR", help="read the appKey from this environment variable"
    )
    group.add_argument(
        "--app-key",
        metavar="KEY",
        help="the appKey itself (visible to other users in the process list; "
        "prefer --app-key-file; default: $DUIX_APP_KEY)",
    )
    group.add_argument(
        "--base-url",
        default=os.environ.get("DUIX_BASE_URL", settings.DEFAULT_BASE_URL),
        help="platform URL (default: $DUIX_BASE_URL or %(default)s)",
    )
    group.add_argument("--timeout", type=float, help="request timeout in seconds (default 10)")
    group.add_argument(
        "--timezone", help="zone of zone-less session start times (default Asia/Shanghai)"
    )
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )


# --------------------------------------------------------------------------- commands

Handler = Callable[[argparse.Namespace, DuixClient, models.AppCredentials, TextIO], Awaitable[int]]


async def _cmd_concurrency(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    numbers = await client.concurrency(app)
    if args.output == "json":
        _print_json({"app_id": app.app_id, **_jsonable(numbers)}, out)
    else:
        _print_table(
            ("APP ID", "CORP ID", "TOTAL CONCURRENT", "USER CONCURRENT"),
            [
                (
                    app.app_id,
                    numbers.corp_id,
                    numbers.total_concurrent_number,
                    numbers.user_concurrent_number,
                )
            ],
            out,
        )
    return EXIT_OK


async def _cmd_sessions(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    listing = await client.sessions(app)
    now = SystemClock().now()
    if args.output == "json":
        _print_json(
            {
                "app_id": app.app_id,
                "count": len(listing),
                "total": listing.total,
                "shape": listing.shape,
                "sessions": [
                    {
                        "session_id": s.session_id,
                        "started_at": s.started_at.isoformat() if s.started_at else None,
                        "age_seconds": None if (a := s.age_seconds(now)) is None else round(a, 3),
                        "actionable": s.actionable,
                    }
                    for s in listing.sessions
                ],
            },
            out,
        )
        return EXIT_OK
    _print_table(
        ("SESSION ID", "STARTED AT (UTC)", "AGE"),
        [
            (
                s.session_id or "(no id: never acted on)",
                s.started_at.isoformat() if s.started_at else "?",
                _age(s.age_seconds(now)),
            )
            for s in listing.sessions
        ],
        out,
    )
    out.write(f"{len(listing)} session(s) in call; read as {listing.shape}\n")
    return EXIT_OK


async def _cmd_stop_session(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    result = await client.stop_session(app, args.session_id)
    if args.output == "json":
        _print_json({"app_id": app.app_id, **_jsonable(result)}, out)
    else:
        out.write(f"session {result.session_id}: {result.outcome.replace('_', ' ')}\n")
    return EXIT_OK


async def _cmd_close_all(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    if not args.yes:
        raise UsageError(
            "refusing to close every session of the APP without --yes (this ends every live call)"
        )
    result = await client.close_all(app)
    if args.output == "json":
        _print_json({"app_id": result.app_id, "closed": True, "data": result.data}, out)
    else:
        out.write(f"app {result.app_id}: every session closed (platform answered {result.data})\n")
    return EXIT_OK


async def _cmd_conversation(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    conv = await client.conversation(app, args.conversation_id)
    if args.output == "json":
        _print_json(conv.model_dump(by_alias=True, mode="json"), out)
        return EXIT_OK
    detail = conv.detail_dto
    background = detail.background_dto if detail else None
    rows = [
        ("id", conv.id),
        ("name", conv.conversation_name),
        ("language", conv.language),
        ("model", f"{detail.model_name} ({detail.model_id})" if detail else None),
        (
            "model type",
            {"0": "cloud", "1": "local"}.get(detail.model_id_type or "", "?") if detail else None,
        ),
        ("background", background.background_url if background else None),
        ("tts speaker", detail.tts_speaker if detail else None),
        ("scripts", len(conv.script_dto_list)),
    ]
    _print_table(("FIELD", "VALUE"), rows, out)
    return EXIT_OK


async def _cmd_avatar_create(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    spec = models.AvatarSpec(
        custom_type=1 if args.video_url else 2,
        avatar_name=args.name,
        gender=args.gender,
        profile=args.profile,
        template_video=args.video_url,
        cover_url=args.photo_url,
        audio_url=args.audio_url,
        tts_speaker=args.tts_speaker,
    )
    created = await client.create_avatar(app, spec)
    if args.output == "json":
        _print_json(_jsonable(created), out)
    else:
        out.write(f"avatar {created.avatar_id}: training started\n")
    return EXIT_OK


async def _cmd_avatar_query(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    avatar = await client.query_avatar(app, args.avatar_id)
    if args.output == "json":
        _print_json(_jsonable(avatar), out)
    else:
        _print_table(
            ("AVATAR ID", "NAME", "STATUS", "DEFAULT CONVERSATION", "REASON"),
            [
                (
                    avatar.avatar_id,
                    avatar.name,
                    avatar.status,
                    avatar.default_conversation_id,
                    avatar.reason,
                )
            ],
            out,
        )
    return EXIT_OK


def _cmd_token(args: argparse.Namespace, out: TextIO) -> int:
    app = _credentials(args)
    now = SystemClock().now()
    token = mint_token(app.app_id, app.app_key, now=now, ttl_seconds=args.ttl)
    if args.output == "json":
        expires = datetime.fromtimestamp(int(now.timestamp()) + args.ttl, tz=now.tzinfo)
        _print_json(
            {
                "app_id": app.app_id,
                "token": token.get_secret_value(),
                "expires_at": expires.isoformat(),
            },
            out,
        )
    else:
        out.write(token.get_secret_value() + "\n")
    return EXIT_OK


def _run_client_command(handler: Handler, args: argparse.Namespace, out: TextIO) -> int:
    app = _credentials(args)
    config = _duix_settings(args)

    async def go() -> int:
        async with DuixClient(config, clock=SystemClock()) as client:
            return await handler(args, client, app, out)

    return anyio.run(go)


# --------------------------------------------------------------------------- sim


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _cmd_sim(args: argparse.Namespace, out: TextIO) -> int:
    host, port = args.listen
    try:
        shape: simulator.ListShape | Literal["random"] | None = (
            None
            if args.shape is None
            else ("random" if args.shape == "random" else simulator.ListShape.parse(args.shape))
        )
    except ValueError as exc:
        raise UsageError(f"--shape {args.shape}: {exc}") from None
    sim = simulator.Simulator(
        apps=args.apps,
        seed=args.seed,
        clock=SystemClock(),
        timezone=args.timezone,
        shape=shape,
        workload=not args.no_workload,
        arrivals_per_minute=args.arrivals_per_minute,
        mean_duration_seconds=args.mean_duration_seconds,
    )
    if args.print_config:
        out.write(simulator.render_config(sim, base_url=f"http://{host}:{port}"))
        return EXIT_OK

    long_running_gc()

    def ready(bound: int) -> None:
        out.write(
            f"duixwatch simulator listening on http://{host}:{bound} "
            f"({len(sim.apps)} apps, seed {args.seed}); control API at /_sim/state\n"
        )

    return _serve_until_signal(sim, host, port, ready, out)


def _serve_until_signal(
    sim: simulator.Simulator, host: str, port: int, ready: Callable[[int], None], out: TextIO
) -> int:
    """Serve the simulator until SIGTERM or SIGINT; ``ready(port)`` once it listens."""

    async def start(tg: TaskGroup) -> None:
        ready(await tg.start(simulator.serve, sim, host, port))

    return _until_signal(start, what=f"sim on {host}:{port}", out=out)


def _until_signal(start: Callable[[TaskGroup], Awaitable[None]], *, what: str, out: TextIO) -> int:
    """Run what ``start`` starts in a task group until SIGTERM or SIGINT, then exit 0.

    Signals are caught before ``start`` runs, so a supervisor that stops us right after
    reading the "listening" line still gets a clean exit.
    """

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                await start(tg)
                out.flush()
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    break

    try:
        _run(main)
    except OSError as exc:
        print(f"duixwatch {what}: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _run(main: Callable[[], Awaitable[None]]) -> None:
    """``anyio.run``, with a task group's lone error raised as itself (not in a group), so the
    command's ordinary handlers turn it into a one-line message and an exit code."""
    try:
        anyio.run(main)
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        pending: list[BaseException] = [group]
        while pending:
            item = pending.pop()
            if isinstance(item, BaseExceptionGroup):
                pending.extend(item.exceptions)
            else:
                leaves.append(item)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _own_command() -> str:
    """How the operator can run this same duixwatch again (the venv may not be on PATH)."""
    script = Path(sys.executable).with_name("duixwatch")
    if not script.exists():
        return "duixwatch"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


#: The demo's policies: dry runs, so they show in /status, the logs and the audit log what
#: they would close in the simulator, and close nothing.
DEMO_POLICIES = [
    {
        "name": "max-session-age",
        "apps": ["*"],
        "match": {"session_age_over_seconds": 2700},
        "action": "stop_sessions",
        "dry_run": True,
        "max_actions_per_cycle": 10,
        "max_actions_percent": 50,
    },
    {
        "name": "quota-guard",
        "apps": ["*"],
        "match": {"max_sessions": 20, "for_seconds": 60},
        "action": "stop_sessions",
        "select": "newest",
        "dry_run": True,
    },
]


def _demo_config(sim: simulator.Simulator, base_url: str) -> str:
    """The simulator's config with the demo's dry-run policies added."""
    doc = yaml.safe_load(simulator.render_config(sim, base_url=base_url))
    doc["policies"] = DEMO_POLICIES
    header = (
        "# Written by `duixwatch demo` for its simulator (the keys are simulator keys: public,\n"
        "# not secrets). The policies are dry runs: they report, they never close anything.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False)


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """The simulator and the daemon together on loopback, with a generated config."""
    sim_host, sim_port = args.listen
    state_dir = Path(args.state_dir)
    config_path = state_dir / "demo.yaml"
    sim = simulator.Simulator(apps=args.apps, seed=args.seed, clock=SystemClock())
    clock = SystemClock()
    long_running_gc()

    async def start(tg: TaskGroup) -> None:
        bound = await tg.start(simulator.serve, sim, sim_host, sim_port)
        base = f"http://{sim_host}:{bound}"
        target = anyio.Path(config_path)
        try:
            await anyio.Path(state_dir).mkdir(parents=True, exist_ok=True)
            await target.write_text(_demo_config(sim, base))
            await target.chmod(0o600)
        except OSError as exc:
            raise UsageError(f"--state-dir {state_dir}: {exc.strerror or exc}") from None
        host, port = args.metrics_listen
        environ = {
            **os.environ,
            "DUIXWATCH_SERVER__LISTEN": f"{host}:{port}",
            "DUIXWATCH_STATE__DIR": str(state_dir),
        }
        config = settings.load_config(config_path, environ=environ)
        daemon = Daemon(
            config,
            config_path,
            clock=clock,
            environ=environ,
            handle_signals=False,
        )
        http_port = await tg.start(daemon.run)
        url = f"http://{host}:{http_port}"
        prog = _own_command()
        out.write(
            "duixwatch demo: the DUIX simulator and the daemon on loopback, "
            "no credentials needed.\n"
            f"  metrics     {url}/metrics\n"
            f"  status      {url}/status\n"
            f"  health      {url}/healthz   readiness {url}/readyz\n"
            f"  simulator   {base}/_sim/state   "
            f"({len(sim.apps)} APPs: {', '.join(a.name for a in sim.apps)})\n"
            f"  config      {config_path}\n"
            f"Try: {prog} once -c {config_path}\n"
            "Press Ctrl-C to stop.\n"
        )

    return _until_signal(start, what="demo", out=out)


# --------------------------------------------------------------------------- daemon commands


def _load(args: argparse.Namespace) -> settings.Config:
    return settings.load_config(args.config)


def _configure_logs(args: argparse.Namespace, config: settings.Config | None) -> None:
    """Flag, then $DUIXWATCH_LOG_LEVEL, then the config file, then ``info``."""
    level = args.log_level or os.environ.get("DUIXWATCH_LOG_LEVEL")
    fmt = args.log_format
    if config is not None:
        level = level or config.daemon.log_level
        fmt = fmt or config.daemon.log_format
    fmt = fmt or "auto"
    logs.configure(json=None if fmt == "auto" else fmt == "json", level=level or "info")


def _cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args)
    names = ", ".join(a.name for a in config.apps)
    policies = len(config.policies)
    enforcement = "ENABLED" if config.enforcement.enabled else "disabled"
    out.write(
        f"{args.config}: OK - {len(config.apps)} app(s) ({names}), "
        f"{policies} polic{'y' if policies == 1 else 'ies'}; enforcement {enforcement}\n"
    )
    return EXIT_OK


#: gc thresholds for the long-running commands (generation 0, 1, 2); Python's are 700, 10, 10.
GC_THRESHOLDS = (50_000, 20, 100)


def long_running_gc() -> None:
    """Tune the garbage collector for a daemon that holds a large, long-lived heap.

    With Python's defaults, a collection ran every 700 new container objects and a full one
    every few seconds, each walking every snapshot: 15 % of the daemon's CPU at 10,000 apps
    (README, Performance). Almost nothing here is cyclic garbage (snapshots are freed by
    reference counting), so collections can be rarer; what exists at start (modules, the
    configuration) is frozen out of them altogether. Used by ``run``, ``sim`` and ``demo``.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args)
    _configure_logs(args, config)
    sharding = None
    if args.shard_count is not None:
        index = "auto" if args.shard_index is None else args.shard_index
        try:
            sharding = settings.ShardingSettings(index=index, count=args.shard_count)
        except ValidationError as exc:
            raise UsageError(f"--shard-index/--shard-count: {exc.errors()[0]['msg']}") from None
    elif args.shard_index is not None:
        raise UsageError("--shard-index needs --shard-count")
    daemon = Daemon(
        config,
        Path(args.config),
        clock=SystemClock(),
        watch_config_seconds=args.watch_config,
        sharding=sharding,
    )
    long_running_gc()
    try:
        _run(daemon.run)
    except OSError as exc:
        print(
            f"duixwatch run: cannot listen on {config.server.listen}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def _poll_all(
    config: settings.Config, clock: SystemClock, first_seen: FirstSeen
) -> list[models.AppSnapshot]:
    """One poll of every configured APP, concurrently (the client's caps still apply)."""

    async def poll_all() -> list[models.AppSnapshot]:
        results: dict[str, models.AppSnapshot] = {}
        async with DuixClient(config.duix, clock=clock) as client:

            async def one(app: settings.AppConfig) -> None:
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
        _print_json([snapshot_status(s, now) for s in snapshots], out)
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
                    _age(sessions.get("oldest_age_seconds")),
                    f"{error.reason}: {error.message}" if error else "",
                )
            )
        _print_table(
            ("APP", "APP ID", "STATE", "SESSIONS", "USER", "TOTAL", "OLDEST", "ERROR"), rows, out
        )
    return EXIT_FAILURE if any(s.error is not None for s in snapshots) else EXIT_OK


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
        now = clock.now()
        plans = []
        for app, snap in zip(config.apps, snapshots, strict=True):
            policies = [p for p in config.policies if p.selects(app)]
            over = {p.name: store.over_since(app.app_id, p.name) for p in policies}
            plans.append(
                policy.evaluate(
                    policies,
                    app,
                    snap,
                    now=now,
                    enforcement_enabled=config.enforcement.enabled,
                    over_since=over,
                )
            )
    finally:
        store.close()
    entries = [policy_plan_status(p, plan.at) for plan in plans for p in plan.policies]
    if args.output == "json":
        _print_json({"enforcement_enabled": config.enforcement.enabled, "policies": entries}, out)
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
            _print_table(("POLICY", "APP", "MODE", "DECISION", "SESSION", "WHY"), rows, out)
            if not config.enforcement.enabled:
                out.write("enforcement.enabled is false: nothing would be closed for real\n")
    return EXIT_FAILURE if any(s.error is not None for s in snapshots) else EXIT_OK


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar (exposed for tests and docs)."""
    parser = _Parser(
        prog="duixwatch",
        description="Watch, alert on and safely clean up DUIX digital-human sessions.",
    )
    parser.add_argument("--version", action="version", version=f"duixwatch {__version__}")
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="log level (default: $DUIXWATCH_LOG_LEVEL, else the config's daemon.log_level, "
        "else info)",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        help="JSON lines, console, or auto: console on a terminal, JSON otherwise (default: "
        "the config's daemon.log_format, else auto)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        return p

    p = command("concurrency", "show the APP's live concurrency (getconcurrentNumber)")
    _add_app_options(p)
    p.set_defaults(handler=_cmd_concurrency)

    p = command("sessions", "list the APP's in-call sessions with their ages (getconcurrentList)")
    _add_app_options(p)
    p.set_defaults(handler=_cmd_sessions)

    p = command("stop-session", "close one session (sessionStop)")
    p.add_argument("session_id", metavar="UUID", help="the sessionId to close")
    _add_app_options(p)
    p.set_defaults(handler=_cmd_stop_session)

    p = command(
        "close-all", "close EVERY session of the APP (distroyCallSessionsByAppId); needs --yes"
    )
    p.add_argument("--yes", action="store_true", help="confirm: end every session of the APP")
    _add_app_options(p)
    p.set_defaults(handler=_cmd_close_all)

    p = command("conversation", "show a conversation's configuration (getConversationById)")
    p.add_argument("conversation_id", metavar="ID")
    _add_app_options(p)
    p.set_defaults(handler=_cmd_conversation)

    avatar = command("avatar", "create an avatar or query its training status")
    avatar_sub = avatar.add_subparsers(dest="avatar_command", required=True, metavar="ACTION")
    p = avatar_sub.add_parser("create", help="start training an avatar (createAvatar)")
    p.add_argument("--name", required=True, help="avatar name")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video-url", help="train with this video (mp4/MOV, 10 s to 1 min)")
    source.add_argument("--photo-url", help="train with this photo (jpg/png, up to 10 MB)")
    p.add_argument("--audio-url", help="voice sample")
    p.add_argument("--gender", choices=("male", "female", "other"))
    p.add_argument("--profile", help="profile; creates a default conversation after training")
    p.add_argument("--tts-speaker", help="voice")
    _add_app_options(p)
    p.set_defaults(handler=_cmd_avatar_create)
    p = avatar_sub.add_parser("query", help="show an avatar's training status (queryAvatar)")
    p.add_argument("avatar_id", metavar="ID")
    _add_app_options(p)
    p.set_defaults(handler=_cmd_avatar_query)

    p = command("token", "print a signed request token, for debugging with curl")
    p.add_argument(
        "--ttl", type=int, default=1800, help="lifetime in seconds (default %(default)s)"
    )
    _add_app_options(p)
    p.set_defaults(plain=_cmd_token)

    p = command("sim", "run the DUIX platform simulator")
    p.add_argument(
        "--listen",
        type=_parse_listen,
        default=("127.0.0.1", 8088),
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:8088; port 0 picks a free one)",
    )
    p.add_argument("--apps", type=int, default=5, help="number of simulated APPs (default 5)")
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument(
        "--shape",
        help="session-list shape for every APP, CONTAINER/ID_KEY/TIME_KEY/TIME_FORMAT "
        "(e.g. records/sessionId/createTime/local), or 'random' for one per APP",
    )
    p.add_argument("--no-workload", action="store_true", help="start empty; no automatic sessions")
    p.add_argument("--arrivals-per-minute", type=float, default=2.0, help="per APP")
    p.add_argument("--mean-duration-seconds", type=float, default=600.0)
    p.add_argument("--timezone", default="Asia/Shanghai", help="zone of zone-less times")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print a duixwatch config for the simulated APPs and exit",
    )
    p.set_defaults(plain=_cmd_sim)

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
    p.set_defaults(plain=_cmd_run)

    p = command(
        "once", "poll every configured APP once and print the result (exit 1 if any failed)"
    )
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="config file (YAML)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(plain=_cmd_once)

    p = command("plan", "poll once and show what every policy would do now, and why (never acts)")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="config file (YAML)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(plain=_cmd_plan)

    p = command("check", "validate a config file and its policies (exit 2 on error)")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="config file (YAML)")
    p.set_defaults(plain=_cmd_check)

    p = command("demo", "run the simulator and the daemon together on loopback")
    p.add_argument(
        "--listen",
        type=_parse_listen,
        default=("127.0.0.1", 8088),
        metavar="HOST:PORT",
        help="simulator address (default 127.0.0.1:8088)",
    )
    p.add_argument(
        "--metrics-listen",
        type=_parse_listen,
        default=("127.0.0.1", 9814),
        metavar="HOST:PORT",
        help="daemon address: /metrics, /status (default 127.0.0.1:9814)",
    )
    p.add_argument("--apps", type=int, default=3, help="number of simulated APPs (default 3)")
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument(
        "--state-dir",
        default="duixwatch-state",
        help="where the demo writes its files (default ./duixwatch-state)",
    )
    p.set_defaults(plain=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    _configure_logs(args, None)
    try:
        if getattr(args, "handler", None) is not None:
            return _run_client_command(args.handler, args, out)
        plain: Callable[[argparse.Namespace, TextIO], int] = args.plain
        return plain(args, out)
    except UsageError as exc:
        print(f"duixwatch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (errors.ConfigError, errors.AuthError) as exc:
        print(f"duixwatch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.DuixwatchError as exc:
        print(f"duixwatch {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"duixwatch {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
