"""The ``duixwatch`` grammar and its entry point, :func:`main`.

Each command group adds its own subcommands, each with the function that runs it:
:mod:`~duixwatch.cli.operate` (commands on one APP over the client),
:mod:`~duixwatch.cli.service` (``run``, ``once``, ``plan``, ``check``: the config file's) and
:mod:`~duixwatch.cli.simulator` (``sim``, ``demo``) and :mod:`~duixwatch.cli.dialog`
(``dialog check``). :func:`main` parses, runs the command and
turns expected failures into one line on stderr and an exit code
(:mod:`~duixwatch.cli.runtime`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from duixwatch import __version__
from duixwatch.cli import dialog, operate, report, runtime, service, simulator
from duixwatch.core import errors

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(runtime.EXIT_USAGE, f"{self.prog}: error: {message}\n")


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

    operate.add_commands(command)
    service.add_commands(command)
    simulator.add_commands(command)
    dialog.add_commands(command)
    report.add_commands(command)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    runtime.configure_logs(args, None)
    try:
        run: runtime.Run = args.run
        return run(args, out)
    except runtime.UsageError as exc:
        print(f"duixwatch {args.command}: error: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    except (errors.ConfigError, errors.AuthError) as exc:
        print(f"duixwatch {args.command}: error: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    except errors.DuixwatchError as exc:
        print(f"duixwatch {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return runtime.EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"duixwatch {args.command}: interrupted", file=sys.stderr)
        return runtime.EXIT_FAILURE
