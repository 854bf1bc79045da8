"""``python -m bench.soak``: one soak run, its figures, exit 1 on any violation.

The steps: the simulator with its churning workload (:mod:`bench.soak.config`), the daemon
enforcing, the observers (:mod:`bench.soak.observe`), then the chaos schedule
(:mod:`bench.soak.chaos`) played in real time; then the daemon is stopped with SIGTERM, the
simulator's record and the audit log are read, and :mod:`bench.soak.verdict` judges. Every
process is stopped on the way out (:class:`bench.procs.Processes`), on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests

from bench.procs import (
    DUIXWATCH,
    Child,
    Processes,
    cpu_seconds,
    free_port,
    terminate_on_sigterm,
    wait_for,
)
from bench.sim import print_config, start_simulator
from bench.soak import chaos, checks, config, observe, report, verdict

__all__ = ["main"]

#: Seconds after the daemon is ready before the first fault (its first cycles run clean).
CHAOS_START_SECONDS = 5.0
READY_TIMEOUT_SECONDS = 30.0
#: ``state.audit_max_bytes`` by default, when the daemon has it: about 200 records a file, so
#: a 120 s run rotates a few times and a 30-minute one deletes old files (``audit_keep``).
AUTO_AUDIT_MAX_BYTES = 65_536
PROGRESS_EVERY_SECONDS = 30.0


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak duixwatch against the simulator under chaos; exit 1 on a violation.",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=_env_number("SOAK_SECONDS", 1800),
        help="length of the run (default $SOAK_SECONDS or 1800)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=int(_env_number("SOAK_SEED", 1)),
        help="seed of the workload and the chaos (default $SOAK_SEED or 1)",
    )
    p.add_argument(
        "--audit-max-bytes",
        default=os.environ.get("SOAK_AUDIT_MAX_BYTES", "auto"),
        help="state.audit_max_bytes for the daemon: a number, 'auto' (65536 when the daemon "
        "has the key, else unset: small, so that even a short run rotates) or 'off' (default "
        "$SOAK_AUDIT_MAX_BYTES or auto)",
    )
    p.add_argument(
        "--audit-keep",
        type=int,
        default=int(_env_number("SOAK_AUDIT_KEEP", 3)),
        help="state.audit_keep, set with --audit-max-bytes (default $SOAK_AUDIT_KEEP or 3)",
    )
    p.add_argument("--json", type=Path, help="write the raw figures to this file")
    p.add_argument(
        "--work-dir", type=Path, help="keep the logs, config and state here (default: a temp dir)"
    )
    return p


@dataclass
class _FaultRun:
    """One planned fault as it was played (Unix times; see :class:`checks.Window`)."""

    plan: chaos.FaultPlan
    app: str  # app id or "*"
    set_sent: float = 0.0
    set_done: float | None = None
    clear_sent: float = float("inf")
    clear_done: float = float("inf")
    installed: bool = False

    def window(self) -> checks.Window:
        return checks.Window(
            kind=self.plan.kind,
            app=self.app,
            endpoint=self.plan.endpoint,
            set_sent=self.set_sent,
            # a fault with `times` may wear off at any moment: never surely in force
            set_done=None if "times" in self.plan.body else self.set_done,
            clear_sent=self.clear_sent,
            clear_done=self.clear_done,
            failing=self.plan.kind in checks.FAILING_KINDS,
        )


class Soak:
    """One run (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, work: Path, procs: Processes) -> None:
        self.args = args
        self.work = work
        self.procs = procs
        self.seconds = float(args.seconds)
        self.findings = observe.Findings(report=self._say_violation)  # secrets: once known
        self.daemon: Child | None = None
        self.daemons: list[Child] = []
        self.started_at = time.time()
        self.allow = config.allowances()

    # ------------------------------------------------------------------ small helpers

    def _say(self, text: str) -> None:
        print(f"soak {time.time() - self.started_at:7.1f} s: {text}", file=sys.stderr, flush=True)

    def _say_violation(self, v: checks.Violation) -> None:
        self._say(f"VIOLATION {v.check}: {v.detail}")

    def _pid(self) -> int | None:
        d = self.daemon
        return d.pid if d is not None and d.alive() else None

    def _start_daemon(self) -> Child:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DUIXWATCH_")}
        child = self.procs.start(
            f"duixwatch-{len(self.daemons) + 1}",
            [*DUIXWATCH, "run", "-c", str(self.config_path)],
            env=env,
            stdout_to_file=True,
        )
        self.daemons.append(child)
        self.daemon = child
        return child

    def _wait_ready(self, child: Child) -> tuple[float, float]:
        """Seconds until /healthz answers, and until /readyz does (every app polled once)."""
        started = time.monotonic()

        def answers(path: str) -> bool:
            if not child.alive():
                raise RuntimeError(f"duixwatch exited early:\n{child.log_tail()}")
            return requests.get(f"{self.base}{path}", timeout=5).status_code == 200

        wait_for(lambda: answers("/healthz"), timeout=READY_TIMEOUT_SECONDS, what="/healthz")
        listening = time.monotonic() - started
        wait_for(lambda: answers("/readyz"), timeout=READY_TIMEOUT_SECONDS, what="/readyz")
        return listening, time.monotonic() - started

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        seed = self.args.seed
        self._say(f"starting: {self.seconds:g} s, seed {seed}, work dir {self.work}")
        self.sim = start_simulator(
            self.procs,
            apps=config.APPS,
            seed=seed,
            sim_command=None,
            timeout=30,
            workload=config.workload_args(),
        )
        printed = print_config(
            apps=config.APPS, seed=seed, base_url=self.sim.base_url, sim_command=None, timeout=60
        )
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.state_dir = self.work / "state"
        self.config_path = self.work / "duixwatch.yaml"
        max_bytes, keep, bounds_note = self._audit_bounds(printed, f"127.0.0.1:{port}")
        self.cfg = config.SoakConfig(
            printed,
            listen=f"127.0.0.1:{port}",
            state_dir=self.state_dir,
            audit_max_bytes=max_bytes,
            audit_keep=keep,
        )
        self.findings.secrets = self.cfg.secrets()
        self.bounds = checks.FileBounds(max_bytes, keep)
        self.bounds_note = bounds_note
        self.config_path.write_text(self.cfg.good(config.THRESHOLDS[0]))
        self.config_path.chmod(0o600)
        self.schedule = chaos.build(
            seed,
            seconds=self.seconds,
            apps=list(self.cfg.apps),
            thresholds=config.THRESHOLDS,
            start=CHAOS_START_SECONDS,
            quiet_tail=self.allow.recovery + 5.0,
        )
        _, ready = self._wait_ready(self._start_daemon())
        self.ready_seconds = time.time() - self.started_at
        self._say(f"daemon ready in {ready:.1f} s; chaos for {self.seconds:g} s")
        self.t0 = time.time()
        self.faults = [
            _FaultRun(f, "*" if f.app == "*" else self.cfg.apps[f.app])
            for f in self.schedule.faults
        ]
        self.reloads: list[checks.Reload] = []
        self.restart: dict[str, Any] | None = None
        self.excluded: list[tuple[float, float]] = []
        budget = self.seconds + 120  # the observers' own bound: the run plus its teardown
        with (
            observe.Scrapers(
                self.base,
                secrets=self.cfg.secrets(),
                findings=self.findings,
                seconds=budget,
            ) as self.scrapers,
            observe.Sampler(
                self._pid, self.state_dir, seconds=budget, findings=self.findings
            ) as self.sampler,
        ):
            try:
                self._play()
            finally:
                self._clear_all_faults()
            # the quiet tail has passed: every recovery had its time
        if self.scrapers.last_exposition is not None:
            self.scrapers.promtool(self.scrapers.last_exposition)  # the last one, always
        return self._finish()

    def _audit_bounds(
        self, printed: dict[str, Any], listen: str
    ) -> tuple[int | None, int | None, str]:
        choice = str(self.args.audit_max_bytes).strip().lower()
        if choice == "off":
            return None, None, "not set (--audit-max-bytes off): sizes reported only"
        probe_cfg = config.SoakConfig(printed, listen=listen, state_dir=self.work / "probe")
        supported = config.audit_bounds_supported(
            probe_cfg.document(config.THRESHOLDS[0]), self.work / "probe.yaml"
        )
        if not supported:
            if choice != "auto":
                raise SystemExit(
                    "soak: --audit-max-bytes given, but this daemon has no state.audit_max_bytes"
                )
            return (
                None,
                None,
                (
                    "not checked: this daemon has no state.audit_max_bytes/audit_keep yet "
                    "(sizes reported only)"
                ),
            )
        max_bytes = AUTO_AUDIT_MAX_BYTES if choice == "auto" else int(choice)
        keep = int(self.args.audit_keep)
        return (
            max_bytes,
            keep,
            (f"audit files <= {max_bytes:,} bytes + one line, <= {keep} rotated files"),
        )

    def _events(self) -> list[tuple[float, int, str, Any]]:
        """The schedule as (time from t0, order, what, which), in time order."""
        out: list[tuple[float, int, str, Any]] = []
        for index, f in enumerate(self.schedule.faults):
            out.append((f.at, 1, "set", index))
            out.append((f.at + f.seconds, 0, "clear", index))
        for r in self.schedule.reloads:
            out.append((r.at, 2, "reload", r))
        if self.schedule.kill_at is not None:
            out.append((self.schedule.kill_at, 3, "kill", None))
        out.append((self.seconds, 4, "end", None))
        return sorted(out, key=lambda e: (e[0], e[1]))

    def _play(self) -> None:
        last_progress = time.monotonic()
        for at, _, what, which in self._events():
            due = self.t0 + at
            # Bounded wait: 1 s steps until due, watching the daemon meanwhile.
            for _ in range(int(max(0.0, due - time.time())) + 2):
                left = due - time.time()
                if left <= 0:
                    break
                time.sleep(min(1.0, left))
                if not self._daemon_alive():
                    return
                if time.monotonic() - last_progress >= PROGRESS_EVERY_SECONDS:
                    last_progress = time.monotonic()
                    self._progress()
            if not self._daemon_alive():
                return
            if what == "set":
                self._set_fault(self.faults[which])
            elif what == "clear":
                self._clear_fault(self.faults[which])
            elif what == "reload":
                self._reload(which)
            elif what == "kill":
                self._kill_and_restart()
            else:
                return

    def _daemon_alive(self) -> bool:
        d = self.daemon
        if d is None or d.alive():
            return True
        self.findings.add(
            "daemon exited",
            f"duixwatch exited with {d.popen.returncode} during the run:\n{d.log_tail(15)}",
        )
        return False

    def _progress(self) -> None:
        played = sum(1 for f in self.faults if f.set_sent)
        self._say(
            f"{played} faults, {len(self.reloads)} reloads, "
            f"{self.scrapers.metrics_count} scrapes, {len(self.findings.violations)} violations"
        )

    def _set_fault(self, run: _FaultRun) -> None:
        run.set_sent = time.time()
        try:
            self.sim.set_fault(run.plan.body, timeout=5)
        except requests.RequestException as exc:
            self.findings.add("simulator", f"could not set fault {run.plan.body}: {exc}")
            return  # set_done stays None: it may be in force, never surely
        run.set_done = time.time()
        run.installed = True

    def _clear_fault(self, run: _FaultRun) -> None:
        if not run.set_sent:
            return
        run.clear_sent = time.time()
        try:
            self.sim.clear_fault(run.plan.app, run.plan.endpoint, timeout=5)
        except requests.RequestException as exc:
            self.findings.add("simulator", f"could not clear fault {run.plan.body}: {exc}")
            return  # clear_done stays inf: it may still be in force
        run.clear_done = time.time()

    def _clear_all_faults(self) -> None:
        try:
            requests.delete(f"{self.sim.base_url}/_sim/faults", timeout=10).raise_for_status()
        except requests.RequestException as exc:
            self.findings.add("simulator", f"could not clear the faults: {exc}")
            return
        now = time.time()
        for run in self.faults:
            if run.set_sent and run.clear_done == float("inf"):
                run.clear_sent = min(run.clear_sent, now)
                run.clear_done = now

    def _reload(self, plan: chaos.ReloadPlan) -> None:
        text = (
            self.cfg.good(plan.threshold)
            if plan.good
            else self.cfg.bad(plan.variant, plan.threshold)
        )
        self.config_path.write_text(text)
        d = self.daemon
        if d is None or not d.alive():
            return
        at = time.time()
        d.popen.send_signal(signal.SIGHUP)
        self.reloads.append(checks.Reload(at, plan.good, plan.variant, plan.threshold))

    def _kill_and_restart(self) -> None:
        old = self.daemon
        if old is None:  # pragma: no cover - the daemon is started before the chaos
            return
        self.scrapers.restarting.set()
        killed = time.time()
        old.popen.send_signal(signal.SIGKILL)
        old.popen.wait(timeout=10)
        self.procs.stop(old)
        self._say(f"SIGKILLed the daemon (pid {old.pid}); restarting")
        child = self._start_daemon()
        try:
            listening, ready = self._wait_ready(child)
        except (TimeoutError, RuntimeError) as exc:
            self.findings.add("restart", f"the restarted daemon did not come up: {exc}")
            self.excluded.append((killed, float("inf")))
            return
        finally:
            self.scrapers.restarting.clear()
        back = time.time()
        self.excluded.append((killed, back))
        self.restart = {
            "at": killed - self.started_at,
            "listening_seconds": listening,
            "ready_seconds": back - killed,
        }
        self._say(f"restarted: listening after {listening:.1f} s, ready after {ready:.1f} s")

    # ------------------------------------------------------------------ the end

    def _finish(self) -> dict[str, Any]:
        teardown = time.monotonic()
        self.sampler.sizes()
        self.sampler.sample_rss()  # the daemon's CPU up to now
        sim_cpu = cpu_seconds(self.sim.child.pid)
        d = self.daemon
        exit_code = None if d is None else self.procs.stop(d, grace=20)
        if exit_code not in (0, None):
            self.findings.add("daemon exit", f"duixwatch exited {exit_code} on SIGTERM")
        end = time.time()
        self.sampler.sizes()
        self.sampler.read_audit()
        stopped = self.sim.sessions(closed_by="sessionStop")
        drained = self.sim.sessions(closed_by="distroyCallSessionsByAppId")
        received = self.sim.requests_by()
        self.procs.stop(self.sim.child)
        rec = verdict.Recorded(
            seconds_asked=self.seconds,
            seed=self.args.seed,
            started_at=self.started_at,
            t0=self.t0,
            end=end,
            ready_seconds=self.ready_seconds,
            teardown_seconds=time.monotonic() - teardown,
            apps=self.cfg.apps,
            secrets=self.cfg.secrets(),
            allow=self.allow,
            windows=[r.window() for r in self.faults if r.set_sent],
            reloads=self.reloads,
            restart=self.restart,
            excluded=self.excluded,
            scrapers=self.scrapers,
            sampler=self.sampler,
            logs=[p for c in self.daemons for p in (c.log, c.out) if p is not None],
            stopped=stopped,
            drained=drained,
            received=received,
            bounds=self.bounds,
            bounds_note=self.bounds_note,
            cpu={
                "daemon_seconds": sum(self.sampler.cpu.values()),
                "simulator_seconds": sim_cpu,
                "soak_seconds": _own_cpu_seconds(),
                "wall_seconds": end - self.t0,
            },
            exit_code=exit_code,
            violations=list(self.findings.violations),
            work_dir=self.work,
        )
        return verdict.judge(rec)


def _own_cpu_seconds() -> float:
    """The soak's own CPU (its threads; not its children's)."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seconds < 60:
        print("soak: --seconds must be at least 60", file=sys.stderr)
        return 2
    if shutil.which("promtool") is None:
        print(
            "soak: promtool not found (`make tools` installs it): every exposition must pass "
            "`promtool check metrics`, so the soak fails without it",
            file=sys.stderr,
        )
        return 1
    with ExitStack() as stack:
        stack.enter_context(terminate_on_sigterm())
        if args.work_dir is not None:
            work = args.work_dir.resolve()
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="duixwatch-soak-")))
        soak: Soak | None = None
        try:
            with Processes(work) as procs:
                soak = Soak(args, work, procs)
                result = soak.run()
        except KeyboardInterrupt:
            print("soak: interrupted; every process it started is stopped", file=sys.stderr)
            return 130
        except (
            TimeoutError,
            RuntimeError,
            OSError,
            requests.RequestException,
            subprocess.SubprocessError,
        ) as exc:  # the run could not be set up or finished: a failure, said in one line
            secrets = soak.findings.secrets if soak is not None else {}
            print(f"soak: FAILED: {checks.redact(str(exc), secrets)}", file=sys.stderr)
            _print_logs(work, secrets)
            return 1
        print(report.render(result), flush=True)
        if args.json is not None:
            report.write_result(result, args.json)
        if result["violations"] and args.work_dir is None:
            _print_logs(work, soak.findings.secrets)
    return 1 if result["violations"] else 0


def _print_logs(work: Path, secrets: dict[str, bytes]) -> None:
    """The last lines of each daemon log, to see what went wrong (the work dir goes away),
    with every secret replaced by its name."""
    for log in sorted([*work.glob("duixwatch-*.log"), *work.glob("sim-*.log")]):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        if tail:
            print(f"--- {log.name} (last lines)\n{checks.redact(tail, secrets)}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
