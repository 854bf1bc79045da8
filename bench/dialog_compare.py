"""Side by side with blackbox_exporter: which dialog-backend faults each one detects, and the
CPU one probe costs. ``python -m bench.dialog_compare [--help]``.

Everything runs on 127.0.0.1, in processes this script starts and always stops
(:class:`bench.procs.Processes`): ``duixwatch sim`` (its sample dialog backend at ``/dialog``
and ``/dialog/stream``, with the faults of ``POST /_sim/dialog/faults``) and a real
``prometheus-blackbox-exporter`` (Debian package, ``make tools``) configured as a user would
point it at a dialog URL: the http prober, ``method: POST`` with a DUIX-shaped JSON body,
``valid_status_codes: [200]`` and ``fail_if_body_not_matches_regexp`` on
``"success"\\s*:\\s*true`` (json) or ``"isEnd"\\s*:\\s*true`` (stream), ``timeout: 20s``.

Detection: for each fault (and healthy) it sets the fault on the simulator, then runs at the
same time (a) blackbox's ``/probe?module=…&target=…``, reading ``probe_success``, and (b)
``duixwatch dialog check URL --mode … -o json``, reading ``conformant`` and the first rule that
failed. To keep the run short, the timing faults are measured against a 2 s budget
(``--budget-seconds 2``, blackbox ``timeout: 2s``) with faults of 3 s or so, standing for the
same faults against DUIX's real 20 s budget; the table says which rows those are.

CPU: blackbox answers K ``/probe`` calls in a row; its CPU is read from ``/proc/PID/stat``
(utime + stime) before and after. duixwatch is measured as the daemon: ``duixwatch run`` with
a few ``dialog_probes`` at ``interval_seconds: 5``; per probe = its CPU delta over a window /
the delta of ``duixwatch_dialog_probe_runs_total``. The config needs one app; it polls the
simulator once an hour and nothing is subtracted for it (nor for the two ``/metrics`` scrapes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.procs import DUIXWATCH, Child, Processes, free_port, terminate_on_sigterm, wait_for
from bench.sim import Simulator, print_config, start_simulator

__all__ = [
    "BLACKBOX",
    "CASES",
    "Case",
    "Row",
    "blackbox_config",
    "detect",
    "format_table",
    "main",
    "start_blackbox",
]

BLACKBOX = "prometheus-blackbox-exporter"
BUDGET_SECONDS = 20.0
#: The budget (duixwatch) and timeout (blackbox) of the timing rows, to keep the run short.
SHORT_BUDGET_SECONDS = 2.0
PATHS = {"json": "/dialog", "stream": "/dialog/stream"}
#: What blackbox sends: the fields DUIX sends (the body is fixed in its config).
PROBE_BODY = {
    "sid": "blackbox-probe",
    "dh-code": "blackbox-probe",
    "dh-question": "Hello",
    "dh-conversation-id": "blackbox-probe",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
REGEXP = {"json": r'"success"\s*:\s*true', "stream": r'"isEnd"\s*:\s*true'}
_SAMPLE = re.compile(r"^(\w+)(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Case:
    """One row: a fault (``{}``: healthy) against one mode; ``timing`` rows use the short budget."""

    name: str
    mode: str
    faults: dict[str, Any] = field(default_factory=dict)
    timing: bool = False

    @property
    def budget_seconds(self) -> float:
        return SHORT_BUDGET_SECONDS if self.timing else BUDGET_SECONDS

    @property
    def healthy(self) -> bool:
        return not self.faults


_HEADER = {"name": "Authorization", "value": "Bearer bench-secret"}
CASES: tuple[Case, ...] = (
    Case("healthy", "json"),
    Case("delay_seconds=3", "json", {"delay_seconds": 3}, timing=True),
    Case("stall_after_chunks=0", "json", {"stall_after_chunks": 0}, timing=True),
    Case("malformed", "json", {"malformed": True}),
    Case("wrong_conversation_id", "json", {"wrong_conversation_id": True}),
    Case("success_false", "json", {"success_false": True}),
    Case("status=500", "json", {"status": 500}),
    Case("require_header", "json", {"require_header": _HEADER}),
    Case("healthy", "stream"),
    Case("delay_seconds=3", "stream", {"delay_seconds": 3}, timing=True),
    Case("first_chunk_delay_seconds=3", "stream", {"first_chunk_delay_seconds": 3}, timing=True),
    Case("chunk_delay_seconds=0.75", "stream", {"chunk_delay_seconds": 0.75}, timing=True),
    Case("stall_after_chunks=2", "stream", {"stall_after_chunks": 2}, timing=True),
    Case("keep_open_seconds=3", "stream", {"keep_open_seconds": 3}, timing=True),
    Case("no_end", "stream", {"no_end": True}),
    Case("after_end", "stream", {"after_end": True}),
    Case("malformed", "stream", {"malformed": True}),
    Case("success_false", "stream", {"success_false": True}),
    Case("status=503", "stream", {"status": 503}),
    Case("require_header", "stream", {"require_header": _HEADER}),
)


@dataclass
class Row:
    """What each tool said about one case (``None``: the tool gave no verdict; see the detail)."""

    case: Case
    blackbox_success: bool | None
    blackbox_detail: str
    duixwatch_conformant: bool | None
    duixwatch_detail: str

    @property
    def blackbox_detects(self) -> bool:
        return self.blackbox_success is False

    @property
    def duixwatch_detects(self) -> bool:
        return self.duixwatch_conformant is False

    def to_dict(self) -> dict[str, Any]:
        return {
            "fault": self.case.name,
            "mode": self.case.mode,
            "faults": self.case.faults,
            "budget_seconds": self.case.budget_seconds,
            "blackbox_success": self.blackbox_success,
            "blackbox_detail": self.blackbox_detail,
            "duixwatch_conformant": self.duixwatch_conformant,
            "duixwatch_detail": self.duixwatch_detail,
        }


# --------------------------------------------------------------------------- blackbox


def module_name(mode: str, timeout_seconds: float) -> str:
    return f"dialog_{mode}_{timeout_seconds:g}s"


def blackbox_config() -> dict[str, Any]:
    """blackbox.yml: one module per mode and timeout (20 s, and the short one)."""
    modules: dict[str, Any] = {}
    for mode in PATHS:
        headers = {"Content-Type": "application/json"}
        if mode == "stream":
            headers["Accept"] = "text/event-stream"
        for timeout in (BUDGET_SECONDS, SHORT_BUDGET_SECONDS):
            modules[module_name(mode, timeout)] = {
                "prober": "http",
                "timeout": f"{timeout:g}s",
                "http": {
                    "method": "POST",
                    "headers": headers,
                    "body": json.dumps(PROBE_BODY),
                    "valid_status_codes": [200],
                    "fail_if_body_not_matches_regexp": [REGEXP[mode]],
                    "preferred_ip_protocol": "ip4",
                },
            }
    return {"modules": modules}


def blackbox_binary() -> str:
    path = shutil.which(BLACKBOX)
    if path is None:
        raise FileNotFoundError(
            f"{BLACKBOX} is not installed: run `make tools` (Debian package of that name)"
        )
    return path


@dataclass
class Blackbox:
    pid: int
    base_url: str


def start_blackbox(procs: Processes, workdir: Path, *, timeout: float = 30) -> Blackbox:
    """blackbox_exporter on a free 127.0.0.1 port with :func:`blackbox_config`."""
    config = workdir / "blackbox.yml"
    config.write_text(yaml.safe_dump(blackbox_config(), sort_keys=False))
    port = free_port()
    child = procs.start(
        "blackbox",
        [
            blackbox_binary(),
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not child.alive():
            raise RuntimeError(f"blackbox exited:\n{child.log_tail()}")
        return requests.get(f"{base}/-/healthy", timeout=5).status_code == 200

    wait_for(healthy, timeout=timeout, what="blackbox_exporter to listen", every=0.1)
    return Blackbox(child.pid, base)


def samples(text: str) -> dict[str, float]:
    """``name value`` of each unlabelled or labelled sample (the last one of a name wins)."""
    return {m.group(1): float(m.group(2)) for m in _SAMPLE.finditer(text)}


def blackbox_probe(
    session: requests.Session, blackbox: Blackbox, target: str, module: str, timeout: float
) -> tuple[bool | None, str]:
    """``probe_success`` of one ``/probe`` call and why it failed."""
    try:
        response = session.get(
            f"{blackbox.base_url}/probe",
            params={"module": module, "target": target},
            timeout=timeout + 10,
        )
    except requests.RequestException as exc:
        return None, f"/probe failed: {exc}"
    values = samples(response.text)
    if "probe_success" not in values:
        return None, f"/probe answered {response.status_code}: {response.text[:200]}"
    if values["probe_success"] == 1:
        return True, "success"
    status = int(values.get("probe_http_status_code", 0))
    duration = values.get("probe_duration_seconds", 0.0)
    if duration >= timeout - 0.6:  # blackbox gave up: its timeout (less its 0.5 s offset at most)
        why = "timeout" if status == 0 else f"timeout reading the body (HTTP {status})"
    elif values.get("probe_failed_due_to_regex") == 1:
        why = "body regexp not matched"
    elif status != 200:
        why = f"HTTP {status}" if status else "no answer"
    else:
        why = "failed"
    return False, f"{why} ({duration:.1f} s)"


# --------------------------------------------------------------------------- duixwatch


def duixwatch_check(target: str, case: Case) -> tuple[bool | None, str]:
    """``duixwatch dialog check`` as a process: ``conformant`` and the first failed rule."""
    args = [
        *DUIXWATCH,
        *("dialog", "check", target, "--mode", case.mode, "-o", "json"),
        *("--budget-seconds", f"{case.budget_seconds:g}"),
    ]
    try:
        done = subprocess.run(  # noqa: S603 - our own CLI, no shell
            args, capture_output=True, text=True, timeout=case.budget_seconds * 3 + 30, check=False
        )
    except subprocess.TimeoutExpired:
        return None, "the CLI did not finish"
    try:
        report = json.loads(done.stdout)
        conformant = report["conformant"]
    except (ValueError, KeyError, TypeError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        return None, f"no JSON report (exit {done.returncode}): {tail[0][:160]}"
    if conformant:
        return True, "conformant"
    failed = [r for r in report.get("rules", []) if r.get("verdict") == "FAIL"]
    if not failed:
        return False, f"not conformant ({report.get('failure_reason')})"
    first = failed[0]
    reason = first.get("reason") or report.get("failure_reason")
    more = f" +{len(failed) - 1}" if len(failed) > 1 else ""
    return False, f"{first.get('rule')} [{reason}]{more}"


# --------------------------------------------------------------------------- detection


def set_faults(sim: Simulator, faults: dict[str, Any]) -> None:
    response = requests.post(f"{sim.base_url}/_sim/dialog/faults", json=faults, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"the simulator refused {faults}: {response.text}")


def run_case(sim: Simulator, blackbox: Blackbox, case: Case) -> Row:
    """Both tools at once against one simulator with ``case``'s faults."""
    set_faults(sim, case.faults)
    target = f"{sim.base_url}{PATHS[case.mode]}"
    module = module_name(case.mode, case.budget_seconds)
    try:
        with requests.Session() as session, ThreadPoolExecutor(2) as pool:
            bb = pool.submit(blackbox_probe, session, blackbox, target, module, case.budget_seconds)
            dw = pool.submit(duixwatch_check, target, case)
            (bb_ok, bb_why), (dw_ok, dw_why) = bb.result(), dw.result()
    finally:
        set_faults(sim, {})
    return Row(case, bb_ok, bb_why, dw_ok, dw_why)


def detect(sims: list[Simulator], blackbox: Blackbox, cases: tuple[Case, ...] = CASES) -> list[Row]:
    """Every case, spread over ``sims`` (faults are per simulator: one case at a time each)."""
    lanes: list[list[Case]] = [list(cases[i :: len(sims)]) for i in range(len(sims))]

    def lane(sim: Simulator, todo: list[Case]) -> list[Row]:
        return [run_case(sim, blackbox, case) for case in todo]

    with ThreadPoolExecutor(len(sims)) as pool:
        results = list(pool.map(lane, sims, lanes))
    by_case = {id(row.case): row for rows in results for row in rows}
    return [by_case[id(case)] for case in cases]


def _verdict(detects: bool, verdict: bool | None, healthy: bool) -> str:
    if verdict is None:
        return "n/a"
    if healthy:
        return "pass (ok)" if verdict else "FAIL (false alarm)"
    return "yes" if detects else "no"


def format_table(rows: list[Row]) -> str:
    """fault | mode | budget | blackbox detects | duixwatch detects (the rule that failed)."""
    header = ("fault", "mode", "budget", "blackbox detects", "duixwatch detects (rule)")
    lines = [header]
    for row in rows:
        mark = "*" if row.case.timing else ""
        bb = _verdict(row.blackbox_detects, row.blackbox_success, row.case.healthy)
        dw = _verdict(row.duixwatch_detects, row.duixwatch_conformant, row.case.healthy)
        lines.append(
            (
                row.case.name,
                row.case.mode,
                f"{row.case.budget_seconds:g} s{mark}",
                f"{bb}: {row.blackbox_detail}",
                f"{dw}: {row.duixwatch_detail}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    ]
    text.insert(1, "-|-".join("-" * w for w in widths))
    faults = [row for row in rows if not row.case.healthy]
    text.append("")
    text.append(
        f"detected: blackbox {sum(r.blackbox_detects for r in faults)}/{len(faults)},"
        f" duixwatch {sum(r.duixwatch_detects for r in faults)}/{len(faults)} faults"
    )
    text.append(
        f"* timing faults: measured against a {SHORT_BUDGET_SECONDS:g} s budget"
        f" (duixwatch --budget-seconds {SHORT_BUDGET_SECONDS:g}, blackbox timeout:"
        f" {SHORT_BUDGET_SECONDS:g}s) to keep the run short; the others against"
        f" {BUDGET_SECONDS:g} s"
    )
    return "\n".join(text)


# --------------------------------------------------------------------------- CPU


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from ``/proc/PID/stat``, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields_after_name = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields_after_name[11]), int(fields_after_name[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def blackbox_cpu(blackbox: Blackbox, sim: Simulator, *, mode: str, probes: int) -> dict[str, Any]:
    """CPU seconds per ``/probe`` of a healthy target, over ``probes`` calls in a row."""
    target = f"{sim.base_url}{PATHS[mode]}"
    module = module_name(mode, BUDGET_SECONDS)
    failures = 0
    with requests.Session() as session:
        blackbox_probe(session, blackbox, target, module, BUDGET_SECONDS)  # warm up
        before, started = cpu_seconds(blackbox.pid), time.monotonic()
        for _ in range(probes):
            ok, _why = blackbox_probe(session, blackbox, target, module, BUDGET_SECONDS)
            failures += ok is not True
        after, elapsed = cpu_seconds(blackbox.pid), time.monotonic() - started
    return {
        "mode": mode,
        "probes": probes,
        "failures": failures,
        "cpu_seconds": after - before,
        "cpu_ms_per_probe": (after - before) / probes * 1000,
        "wall_seconds": elapsed,
    }


def _runs_total(text: str) -> float | None:
    runs = [
        float(value)
        for name, value in re.findall(r"^(\w+)\{[^}]*\} (\S+)$", text, re.MULTILINE)
        if name == "duixwatch_dialog_probe_runs_total"
    ]
    return sum(runs) if runs else None


def daemon_config(
    sim: Simulator, *, probes: int, interval: float, port: int, state_dir: Path
) -> dict[str, Any]:
    """One app (polled hourly: the config needs one) and ``probes`` dialog probes, both modes."""
    printed = print_config(apps=1, seed=1, base_url=sim.base_url, sim_command=None)
    doc = dict(printed)
    doc["apps"] = [{**printed["apps"][0], "poll_interval_seconds": 3600}]
    doc["server"] = {"listen": f"127.0.0.1:{port}"}
    doc["state"] = {"dir": str(state_dir)}
    doc["daemon"] = {**(printed.get("daemon") or {}), "log_level": "warning"}
    doc["dialog_probes"] = [
        {
            "name": f"bench-{i}",
            "url": f"{sim.base_url}{PATHS[mode]}",
            "mode": mode,
            "interval_seconds": interval,
        }
        for i, mode in enumerate(("json", "stream") * ((probes + 1) // 2))
        if i < probes
    ]
    return doc


def _alive(child: Child) -> None:
    if not child.alive():
        raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")


def duixwatch_cpu(
    procs: Processes,
    sim: Simulator,
    workdir: Path,
    *,
    probes: int,
    interval: float,
    window: float,
) -> dict[str, Any]:
    """The daemon's CPU per dialog probe run, over ``window`` seconds after every probe ran."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "duixwatch.yaml"
    doc = daemon_config(
        sim, probes=probes, interval=interval, port=port, state_dir=workdir / "state"
    )
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    child = procs.start("duixwatch", [*DUIXWATCH, "run", "-c", str(config)])
    metrics = f"http://127.0.0.1:{port}/metrics"
    out: dict[str, Any] = {"probes": probes, "interval_seconds": interval}
    try:

        def ran_once() -> float | None:
            _alive(child)
            runs = _runs_total(requests.get(metrics, timeout=5).text)
            return runs if runs is not None and runs >= probes else None

        def answers() -> bool:
            _alive(child)
            return requests.get(metrics, timeout=5).status_code == 200

        if probes == 0:  # the idle daemon: past its start-up work, as the measured one is
            wait_for(answers, timeout=30, what="the daemon")
            time.sleep(interval * 2)
            runs0 = 0.0
        else:
            runs0 = wait_for(ran_once, timeout=interval * 2 + 30, what="every probe to run")
        cpu0, started = cpu_seconds(child.pid), time.monotonic()
        time.sleep(window)
        runs1 = _runs_total(requests.get(metrics, timeout=5).text) or runs0 if probes else 0.0
        cpu1, elapsed = cpu_seconds(child.pid), time.monotonic() - started
    except (TimeoutError, RuntimeError, requests.RequestException) as exc:
        out["error"] = f"could not be measured: {exc}"
        return out
    finally:
        procs.stop(child)
    runs = runs1 - runs0
    out.update(runs=runs, cpu_seconds=cpu1 - cpu0, window_seconds=elapsed)
    if probes == 0:
        out["cpu_seconds_per_second"] = (cpu1 - cpu0) / elapsed
    elif runs > 0:
        out["cpu_ms_per_probe"] = (cpu1 - cpu0) / runs * 1000
    else:
        out["error"] = "no probe ran during the window"
    return out


def format_cpu(cpu: dict[str, Any]) -> str:
    lines = ["per-probe CPU (healthy backend, 127.0.0.1):"]
    for row in cpu.get("blackbox", []):
        lines.append(
            f"  blackbox_exporter {row['mode']:6}: {row['cpu_ms_per_probe']:.2f} ms CPU per probe"
            f" ({row['cpu_seconds']:.2f} s over {row['probes']} /probe calls,"
            f" {row['failures']} failed)"
        )
    daemon = cpu.get("duixwatch")
    if daemon is not None:
        if "cpu_ms_per_probe" in daemon:
            marginal = daemon.get("marginal_cpu_ms_per_probe")
            lines.append(
                f"  duixwatch run (json+stream): {marginal:.2f} ms CPU per probe"
                if marginal is not None
                else "  duixwatch run (json+stream): ? ms CPU per probe (no idle baseline)"
            )
            lines.append(
                f"    ({daemon['cpu_seconds']:.2f} s over {daemon['runs']:g} runs of"
                f" {daemon['probes']} probes every {daemon['interval_seconds']:g} s in"
                f" {daemon['window_seconds']:.0f} s, less"
                f" {daemon.get('idle_cpu_seconds', 0.0):.2f} s that the same daemon used"
                f" without probes; {daemon['cpu_ms_per_probe']:.2f} ms with nothing subtracted)"
            )
        else:
            lines.append(f"  duixwatch run: {daemon.get('error')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dialog_compare", description=__doc__)
    parser.add_argument("--simulators", type=int, default=2, help="cases run in parallel lanes")
    parser.add_argument("--probes", type=int, default=200, help="blackbox /probe calls per mode")
    parser.add_argument("--daemon-probes", type=int, default=20)
    parser.add_argument("--daemon-window-seconds", type=float, default=60.0)
    parser.add_argument("--no-cpu", action="store_true", help="detection only")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.simulators <= 8 or not 1 <= args.probes <= 10_000:
        parser.error("--simulators must be 1..8 and --probes 1..10000")
    if not 1 <= args.daemon_probes <= 100 or not 5 <= args.daemon_window_seconds <= 3600:
        parser.error("--daemon-probes must be 1..100 and --daemon-window-seconds 5..3600")
    result: dict[str, Any] = {}
    with (
        terminate_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="dialog-compare-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        workdir = Path(tmp)
        sims = [
            start_simulator(procs, apps=1, seed=1, sim_command=None, timeout=60)
            for _ in range(args.simulators)
        ]
        blackbox = start_blackbox(procs, workdir)
        rows = detect(sims, blackbox)
        print(format_table(rows), flush=True)
        result["detection"] = [row.to_dict() for row in rows]
        if not args.no_cpu:
            cpu: dict[str, Any] = {
                "blackbox": [
                    blackbox_cpu(blackbox, sims[0], mode=mode, probes=args.probes) for mode in PATHS
                ]
            }
            idle = duixwatch_cpu(
                procs,
                sims[0],
                workdir / "idle",
                probes=0,
                interval=2.0,
                window=args.daemon_window_seconds,
            )
            daemon = duixwatch_cpu(
                procs,
                sims[0],
                workdir / "probes",
                probes=args.daemon_probes,
                interval=2.0,
                window=args.daemon_window_seconds,
            )
            if "cpu_ms_per_probe" in daemon and "cpu_seconds_per_second" in idle:
                # What the probes cost: the same daemon's CPU without them, subtracted.
                spare = idle["cpu_seconds_per_second"] * daemon["window_seconds"]
                daemon["idle_cpu_seconds"] = spare
                daemon["marginal_cpu_ms_per_probe"] = (
                    (daemon["cpu_seconds"] - spare) / daemon["runs"] * 1000
                )
            cpu["duixwatch"] = daemon
            print()
            print(format_cpu(cpu), flush=True)
            result["cpu"] = cpu
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
