"""``python -m bench``: run the benchmark for each fleet size and print one table.

Per size N: the simulator (N apps, S sessions each, a latency fault on every endpoint), then
duixwatch (:mod:`bench.daemon_run`), then the baseline (:mod:`bench.baseline_run`) against the
same simulator, then the simulator is stopped. Defaults: 1,000 and 10,000 apps x 20 sessions,
20 ms, 15 s interval, a 45 s window (three intervals) per program; about seven minutes on a
2-core machine, most of it the 10,000-app session setup and the two windows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duixwatch
from bench import report
from bench.baseline_run import run_baseline
from bench.daemon_run import limits_for, run_duixwatch, write_config
from bench.procs import Budget, BudgetExceeded, Processes, free_port, machine, terminate_on_sigterm
from bench.sim import print_config, start_simulator

__all__ = ["main"]

#: Age given to every session the benchmark adds (old enough to fill several histogram buckets'
#: worth of cumulative counts, younger than the demo's 45-minute stale threshold).
SESSION_AGE_SECONDS = 900.0


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers like 1000,10000, got {text!r}"
        ) from None
    if not sizes or any(not 1 <= n <= 50_000 for n in sizes):
        raise argparse.ArgumentTypeError(
            "every size must be between 1 and 50,000 (the simulator's cap)"
        )
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark duixwatch against a sequential requests loop, on loopback.",
    )
    p.add_argument("--apps", type=_sizes, default=[1000, 10000], help="sizes (default 1000,10000)")
    p.add_argument("--sessions", type=int, default=20, help="sessions per app (default 20)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="added latency (default 20)")
    p.add_argument("--interval", type=float, default=15.0, help="poll interval s (default 15)")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="measurement window per program, seconds (default: 3 intervals)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="duix.max_in_flight (default: rate x latency x 2, see bench/daemon_run.py)",
    )
    p.add_argument("--scrapes", type=int, default=10, help="timed /metrics scrapes (default 10)")
    p.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    p.add_argument(
        "--budget",
        type=float,
        default=540.0,
        help="seconds the whole run may take; steps that would overrun are skipped (default 540)",
    )
    p.add_argument("--json", type=Path, help="write the raw figures to this file")
    p.add_argument(
        "--sim-command",
        help="run this instead of 'python -m duixwatch sim' (same flags; for investigations)",
    )
    return p


def _run_size(
    procs: Processes,
    n: int,
    args: argparse.Namespace,
    window: float,
    work: Path,
    budget: Budget,
) -> dict[str, Any]:
    interval = args.interval
    latency = args.latency_ms / 1000
    print(f"bench: {n:,} apps: starting the simulator", file=sys.stderr, flush=True)
    budget.need(2 * window + 60, f"measuring {n:,} apps")
    sim = start_simulator(
        procs,
        apps=n,
        seed=args.seed,
        sim_command=args.sim_command,
        timeout=60 + n / 200,
        budget=budget,
    )
    try:
        printed = print_config(
            apps=n,
            seed=args.seed,
            base_url=sim.base_url,
            sim_command=args.sim_command,
            timeout=budget.cap(120, "the config was printed"),
        )
        app_ids = [str(app["app_id"]) for app in printed["apps"]]
        names = [str(app["name"]) for app in printed["apps"]]
        print(
            f"bench: {n:,} apps: adding {args.sessions} sessions to every app",
            file=sys.stderr,
            flush=True,
        )
        setup = sim.add_sessions(
            app_ids,
            count=args.sessions,
            age_seconds=SESSION_AGE_SECONDS,
            # what is left once both windows and their start-up are accounted for
            timeout=budget.cap(
                max(10.0, budget.remaining() - 2 * window - 2 * args.interval - 90),
                "the sessions were added",
            ),
        )
        sim.set_latency(latency)
        limits = limits_for(n, interval=interval, latency=latency, max_in_flight=args.max_in_flight)
        port = free_port()
        config_path = work / f"duixwatch-{n}.yaml"
        write_config(
            printed,
            config_path,
            interval=interval,
            limits=limits,
            listen=f"127.0.0.1:{port}",
            state_dir=work / f"state-{n}",
        )
        print(f"bench: {n:,} apps: measuring duixwatch", file=sys.stderr, flush=True)
        dx = run_duixwatch(
            procs,
            sim,
            config_path=config_path,
            port=port,
            app_names=names,
            interval=interval,
            latency=latency,
            limits=limits,
            window=window,
            scrapes=args.scrapes,
            budget=budget,
        )
        print(f"bench: {n:,} apps: measuring the baseline", file=sys.stderr, flush=True)
        bl = run_baseline(
            procs,
            sim,
            config_path=config_path,
            app_names=names,
            interval=interval,
            latency=latency,
            window=window,
            scrapes=args.scrapes,
            extra_wait=window / 2,
            work_dir=work,
            budget=budget,
        )
    finally:
        procs.stop(sim.child)
    return {
        "apps": n,
        "sessions_added": n * args.sessions,
        "setup_seconds": setup,
        "duixwatch": dx,
        "baseline": bl,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    window = args.duration if args.duration is not None else 3 * args.interval
    if window < args.interval:
        print("bench: --duration must be at least one interval", file=sys.stderr)
        return 2
    started = time.monotonic()
    budget = Budget(args.budget)
    load = _load_average()
    results: list[dict[str, Any]] = []
    failed = False
    with (
        tempfile.TemporaryDirectory(prefix="duixwatch-bench-") as tmp,
        terminate_on_sigterm(),
    ):
        work = Path(tmp)
        try:
            with Processes(work) as procs:
                for n in args.apps:
                    try:
                        results.append(_run_size(procs, n, args, window, work, budget))
                    except (BudgetExceeded, Exception) as exc:  # noqa: BLE001 - keep the other sizes
                        failed = True
                        results.append({"apps": n, "error": f"{type(exc).__name__}: {exc}"})
                        print(
                            f"bench: {n:,} apps FAILED: {type(exc).__name__}: {exc}",
                            file=sys.stderr,
                        )
                        _print_logs(work)
                        procs.stop_all()
        except KeyboardInterrupt:
            print("bench: interrupted; every process it started is stopped", file=sys.stderr)
            return 130
    doc: dict[str, Any] = {
        "duixwatch_version": duixwatch.__version__,
        "machine": {**machine(), "load_average_at_start": load},
        "params": {
            "apps": args.apps,
            "sessions": args.sessions,
            "latency_ms": args.latency_ms,
            "interval": args.interval,
            "duration": window,
            "seed": args.seed,
            "budget_seconds": args.budget,
            "sim_command": args.sim_command,
        },
        "results": results,
        "targets": report.targets([r for r in results if "error" not in r], args.sessions),
        "total_seconds": time.monotonic() - started,
    }
    print(report.render(doc), flush=True)
    if args.json is not None:
        report.write_json(doc, args.json)
    return 1 if failed else 0


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _print_logs(work: Path) -> None:
    """The last lines of every child's log (stderr), to see why a step failed."""
    for log in sorted(work.glob("*.log")):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        if tail:
            print(f"--- {log.name} (last lines)\n{tail}", file=sys.stderr)
