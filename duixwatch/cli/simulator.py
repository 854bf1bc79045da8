"""The simulator's commands: ``sim`` (the DUIX platform stand-in) and ``demo`` (it and the
daemon together on loopback, with example dry-run policies)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TextIO

import anyio
import yaml
from anyio.abc import TaskGroup

from duixwatch import sim as simulator
from duixwatch.cli import runtime
from duixwatch.config import load_config, split_listen
from duixwatch.core.clock import SystemClock
from duixwatch.core.garbage import GarbageCollector

__all__ = ["add_commands"]


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (an unresolvable name: no)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass  # a name, not an address: resolve it
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(f[4][0]).is_loopback for f in found)


def _cmd_sim(args: argparse.Namespace, out: TextIO) -> int:
    host, port = args.listen
    if not args.allow_remote and not is_loopback(host):
        raise runtime.UsageError(
            f"--listen {host}:{port}: not a loopback address; the simulator's control API "
            "(/_sim/…) has no authentication by design: add --allow-remote to listen there "
            "anyway"
        )
    try:
        shape: simulator.ListShape | Literal["random"] | None = (
            None
            if args.shape is None
            else ("random" if args.shape == "random" else simulator.ListShape.parse(args.shape))
        )
    except ValueError as exc:
        raise runtime.UsageError(f"--shape {args.shape}: {exc}") from None
    try:
        sim = simulator.Simulator(
            apps=args.apps,
            seed=args.seed,
            clock=SystemClock(),
            timezone=args.timezone,
            shape=shape,
            workload=not args.no_workload,
            arrivals_per_minute=args.arrivals_per_minute,
            mean_duration_seconds=args.mean_duration_seconds,
            min_duration_seconds=args.min_duration_seconds,
            avatar_training_seconds=args.avatar_training_seconds,
        )
    except ValueError as exc:  # a workload value out of range: a usage error, not a traceback
        raise runtime.UsageError(str(exc)) from None
    if args.print_config:
        out.write(simulator.render_config(sim, base_url=f"http://{host}:{port}"))
        return runtime.EXIT_OK

    garbage = runtime.long_running_gc(SystemClock())

    def ready(bound: int) -> None:
        out.write(
            f"duixwatch simulator listening on http://{host}:{bound} "
            f"({len(sim.apps)} apps, seed {args.seed}); control API at /_sim/state\n"
        )

    return _serve_until_signal(sim, host, port, ready, out, garbage)


def _serve_until_signal(
    sim: simulator.Simulator,
    host: str,
    port: int,
    ready: Callable[[int], None],
    out: TextIO,
    garbage: GarbageCollector,
) -> int:
    """Serve the simulator until SIGTERM or SIGINT; ``ready(port)`` once it listens."""

    async def start(tg: TaskGroup) -> None:
        await tg.start(garbage.run)
        ready(await tg.start(simulator.serve, sim, host, port))

    return runtime.until_signal(start, what=f"sim on {host}:{port}", out=out)


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
    garbage = runtime.long_running_gc(clock)

    async def start(tg: TaskGroup) -> None:
        await tg.start(garbage.run)
        bound = await tg.start(simulator.serve, sim, sim_host, sim_port)
        base = f"http://{sim_host}:{bound}"
        target = anyio.Path(config_path)
        try:
            await anyio.Path(state_dir).mkdir(parents=True, exist_ok=True)
            await target.write_text(_demo_config(sim, base))
            await target.chmod(0o600)
        except OSError as exc:
            raise runtime.UsageError(f"--state-dir {state_dir}: {exc.strerror or exc}") from None
        host, port = args.metrics_listen
        environ = {
            **os.environ,
            "DUIXWATCH_SERVER__LISTEN": f"{host}:{port}",
            "DUIXWATCH_STATE__DIR": str(state_dir),
        }
        config = load_config(config_path, environ=environ)
        from duixwatch.daemon import Daemon  # lazy: `check` and the rest start faster

        daemon = Daemon(
            config,
            config_path,
            clock=clock,
            environ=environ,
            handle_signals=False,
        )
        http_port = await tg.start(daemon.run)
        url = f"http://{host}:{http_port}"
        prog = runtime.own_command()
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

    return runtime.until_signal(start, what="demo", out=out)


def _listen(value: str) -> tuple[str, int]:
    """``--listen HOST:PORT`` as the config's ``server.listen`` reads it."""
    try:
        return split_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _training_seconds(value: str) -> float:
    """``--avatar-training-seconds S``: a number of seconds from 0 to the simulator's maximum."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 <= seconds <= simulator.MAX_TRAINING_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be between 0 and {simulator.MAX_TRAINING_SECONDS:g} seconds"
        )
    return seconds


def add_commands(command: runtime.AddCommand) -> None:
    """Add this group's subcommands to the ``duixwatch`` grammar."""
    p = command("sim", "run the DUIX platform simulator")
    p.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8088),
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:8088; port 0 picks a free one)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen on a non-loopback address (the control API has no authentication)",
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
    p.add_argument(
        "--min-duration-seconds",
        type=float,
        default=0.0,
        help="floor under the durations: min + Exp(mean - min) (default 0)",
    )
    p.add_argument("--timezone", default="Asia/Shanghai", help="zone of zone-less times")
    p.add_argument(
        "--avatar-training-seconds",
        type=_training_seconds,
        default=simulator.TRAINING_SECONDS,
        metavar="S",
        help=f"how long a created avatar trains (default {simulator.TRAINING_SECONDS:g}; "
        "0: final on the first query)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print a duixwatch config for the simulated APPs and exit",
    )
    p.set_defaults(run=_cmd_sim)

    p = command("demo", "run the simulator and the daemon together on loopback")
    p.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 8088),
        metavar="HOST:PORT",
        help="simulator address (default 127.0.0.1:8088)",
    )
    p.add_argument(
        "--metrics-listen",
        type=_listen,
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
    p.set_defaults(run=_cmd_demo)
