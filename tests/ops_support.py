"""Helpers of the operations-kit tests (``tests/test_ops_*.py``): where the artefacts and the real
tools are, and small process/HTTP utilities.

Every tool is found the way ``make tools`` installs it: Debian commands on PATH, PyPI tools in the
virtualenv that runs pytest, npm packages under ``build/npm/<name>``. A missing tool FAILS the
test (never skips): a green run must mean the tool really checked the artefact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.procs import eventually, free_port  # shared with the other process tests
from tests.tools import require_tool

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
KUSTOMIZE_DIRS = (
    DEPLOY / "kubernetes" / "base",
    *sorted(p for p in (DEPLOY / "kubernetes" / "overlays").iterdir() if p.is_dir()),
)
RULES = DEPLOY / "prometheus" / "rules.yaml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yaml"))
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
RUNBOOKS = REPO / "docs" / "runbooks.md"
DUIXWATCH = [sys.executable, "-m", "duixwatch"]

T = TypeVar("T")


def venv_tool(name: str) -> str:
    """A PyPI-installed tool of the virtualenv running the tests (``make tools`` puts it there);
    falls back to PATH, and fails the test when neither has it."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    if shutil.which(name) is None:
        pytest.fail(f"{name} is required: run `make tools` (it installs it into .venv)")
    return require_tool(name)


def npm_dir(name: str) -> Path:
    """``build/npm/<name>`` with its ``node_modules`` (``make tools`` runs ``npm ci`` there)."""
    path = REPO / "build" / "npm" / name
    if not (path / "node_modules").is_dir():
        pytest.fail(f"{path.relative_to(REPO)}/node_modules is missing: run `make tools`")
    return path


def run(
    args: Sequence[str | Path],
    *,
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion and capture its output as text (never raises on exit codes)."""
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        input=stdin,
        check=False,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    """Both streams of a finished command, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def alerts() -> dict[str, dict[str, Any]]:
    """Every alerting rule of rules.yaml by name."""
    return {
        rule["alert"]: rule
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard that queries data (rows are walked into, not returned)."""
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        if panel.get("type") == "row":
            stack[0:0] = panel.get("panels", [])
            continue
        yield panel


@contextmanager
def process(
    args: Sequence[str | Path], log: Path, *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A background process whose output goes to ``log``; killed when the block ends."""
    with (
        log.open("ab") as out,
        subprocess.Popen(
            [str(a) for a in args], stdout=out, stderr=subprocess.STDOUT, env=env
        ) as proc,
    ):
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@contextmanager
def simulator(tmp: Path, *, apps: int, seed: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """``duixwatch sim`` on a free loopback port without workload; yields its URL and the
    duixwatch config it prints for its apps."""
    port = free_port()
    printed = run(
        [
            *DUIXWATCH,
            "sim",
            "--apps",
            str(apps),
            "--seed",
            str(seed),
            "--listen",
            f"127.0.0.1:{port}",
            "--print-config",
        ],
        timeout=30,
    )
    assert printed.returncode == 0, output(printed)
    url = f"http://127.0.0.1:{port}"
    args = [*DUIXWATCH, "sim", "--apps", str(apps), "--seed", str(seed)]
    args += ["--listen", f"127.0.0.1:{port}", "--no-workload"]
    with process(args, tmp / "sim.log"):
        eventually(
            lambda: httpx.get(f"{url}/_sim/state", timeout=1).status_code == 200,
            timeout=20,
            what="the simulator",
        )
        yield url, yaml.safe_load(printed.stdout)


_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum", "_gcount", "_gsum")
_PROMQL_WORDS = {"bool", "by", "without", "on", "ignoring", "group_left", "group_right", "offset"}


def documented_metric_names() -> set[str]:
    """Metric names in the README's "Metrics reference" table, with histogram series suffixes."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Metrics reference", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) > 2:
            names |= set(re.findall(r"`([a-z_][a-z0-9_]*)`", cells[1]))
    return names | {n + s for n in names for s in _HISTOGRAM_SUFFIXES}


def exported_metric_names() -> set[str]:
    """Metric names the daemon's metric set defines (the modules of duixwatch/export/).

    A family declared as a counter (``Family(..., "counter")``) is exported with ``_total``.
    """
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for path in sorted((REPO / "duixwatch" / "export").glob("*.py"))
    )
    names = set(re.findall(r'"(duix(?:watch)?_[a-z0-9_]+)"', source))
    counters = re.findall(r'Family\(\s*"([a-z0-9_]+)",(?:(?!Family\().)*?"counter"', source, re.S)
    return (
        names
        | {n + s for n in names for s in _HISTOGRAM_SUFFIXES}
        | {n + "_total" for n in counters}
    )


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (ours, process_* and up)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_groupings = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_labels
    )
    tokens = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*\()", without_groupings))
    return {
        t for t in tokens - _PROMQL_WORDS if "duix" in t or t.startswith("process_") or t == "up"
    }
