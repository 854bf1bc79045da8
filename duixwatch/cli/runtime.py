"""What every command shares: exit codes, usage errors, logging, the event loop and signals.

Exit codes (design.md §5): 0 ok, 1 runtime failure (the platform said no, the network failed),
2 usage or configuration error (argparse's own errors included). Expected failures print one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

import anyio
import structlog
from anyio.abc import TaskGroup

from duixwatch.config import Config
from duixwatch.core import allocator, logs
from duixwatch.core.clock import Clock
from duixwatch.core.garbage import GarbageCollector

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "FD_RESERVE",
    "GC_THRESHOLDS",
    "AddCommand",
    "Run",
    "UsageError",
    "configure_logs",
    "descriptors_needed",
    "fd_limit_warning",
    "long_running_gc",
    "own_command",
    "raise_fd_limit",
    "run",
    "until_signal",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

#: What a subcommand does with its parsed arguments: the exit code.
Run = Callable[[argparse.Namespace, TextIO], int]
#: How a command group adds a subcommand: ``command(name, help) -> its parser``.
AddCommand = Callable[[str, str], argparse.ArgumentParser]


class UsageError(Exception):
    """A problem with the command line itself (exit code 2)."""


def until_signal(start: Callable[[TaskGroup], Awaitable[None]], *, what: str, out: TextIO) -> int:
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
        run(main)
    except OSError as exc:
        print(f"duixwatch {what}: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def run(main: Callable[[], Awaitable[None]]) -> None:
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


def own_command() -> str:
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


def configure_logs(args: argparse.Namespace, config: Config | None) -> None:
    """Flag, then $DUIXWATCH_LOG_LEVEL, then the config file, then ``info``."""
    level = args.log_level or os.environ.get("DUIXWATCH_LOG_LEVEL")
    fmt = args.log_format
    if config is not None:
        level = level or config.daemon.log_level
        fmt = fmt or config.daemon.log_format
    fmt = fmt or "auto"
    logs.configure(json=None if fmt == "auto" else fmt == "json", level=level or "info")


GC_THRESHOLDS = (50_000, 20, 100)


def long_running_gc(clock: Clock) -> GarbageCollector:
    """Tune the garbage collector for a daemon that holds a large, long-lived heap; start the
    returned :class:`~duixwatch.core.garbage.GarbageCollector` in the command's task group.

    With Python's defaults, a collection ran every 700 new container objects and a full one
    every few seconds, each walking every snapshot: 15 % of the daemon's CPU at 10,000 apps
    (README, Performance). Almost nothing here is cyclic garbage (snapshots are freed by
    reference counting), so collections can be rarer; what exists at start (modules, the
    configuration) is frozen out of them altogether. Rarer by count alone is never at a small
    fleet, whose garbage then grows for as long as it runs: the returned collector collects on
    the clock too (:mod:`duixwatch.core.garbage`), and hands the C heap's free pages back to
    the kernel after its middle and full collections where the C library is glibc
    (:mod:`duixwatch.core.allocator`). Used by ``run``, ``sim`` and ``demo``.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return GarbageCollector(clock, trim=allocator.glibc_malloc_trim())


#: Descriptors duixwatch needs besides its HTTP connections and the DUIX client's pool: the
#: listener, the state database, the audit log, log output, webhook and dialog probe
#: connections, the event loop's own.
FD_RESERVE = 64


def descriptors_needed(config: Config) -> int:
    """Open files a flood of connections can drive the daemon to: every HTTP connection
    ``server.max_connections`` allows, the DUIX pool (``duix.max_in_flight``) and the reserve."""
    return config.server.max_connections + config.duix.max_in_flight + FD_RESERVE


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit, as Go programs (every Prometheus
    exporter) do at start, so that a flood of connections cannot take the descriptors the DUIX
    client needs; the ``(soft, hard)`` limits in force after it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            structlog.get_logger("duixwatch.cli").warning(
                "fd_limit_raise_failed", soft=soft, hard=hard, error=str(exc)
            )
        else:
            soft = target
    return soft, hard


def fd_limit_warning(config: Config, soft: int) -> str | None:
    """What to say when the open-file limit is below :func:`descriptors_needed`."""
    needed = descriptors_needed(config)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    return (
        f"the open-file limit ({soft}) is below what server.max_connections "
        f"({config.server.max_connections}) + duix.max_in_flight ({config.duix.max_in_flight}) "
        f"+ {FD_RESERVE} need ({needed}): a flood of connections could starve the polls; "
        "raise LimitNOFILE (ulimit -n) or lower server.max_connections"
    )
