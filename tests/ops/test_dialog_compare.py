"""`python -m bench.dialog_compare` in miniature: the detection half, with the real
blackbox_exporter and the real ``duixwatch dialog check`` against ``duixwatch sim`` on 127.0.0.1.
A missing blackbox_exporter fails these tests (``make tools`` installs it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from bench import dialog_compare as compare
from bench.procs import Processes
from bench.sim import start_simulator
from tests.tools import require_tool

pytestmark = pytest.mark.exclusive  # timings and CPU figures: run alone


def test_the_blackbox_config_is_valid_for_the_installed_blackbox(tmp_path: Path) -> None:
    binary = require_tool(compare.BLACKBOX)
    config = tmp_path / "blackbox.yml"
    config.write_text(yaml.safe_dump(compare.blackbox_config()))
    checked = subprocess.run(
        [binary, f"--config.file={config}", "--config.check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    modules = compare.blackbox_config()["modules"]
    assert set(modules) == {
        "dialog_json_20s",
        "dialog_json_2s",
        "dialog_stream_20s",
        "dialog_stream_2s",
    }
    assert modules["dialog_json_20s"]["http"]["valid_status_codes"] == [200]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_blackbox_passes_the_healthy_backend_and_duixwatch_detects_every_fault(
    tmp_path: Path,
) -> None:
    require_tool(compare.BLACKBOX)
    with Processes(tmp_path) as procs:
        sims = [
            start_simulator(procs, apps=1, seed=1, sim_command=None, timeout=60) for _ in range(2)
        ]
        blackbox = compare.start_blackbox(procs, tmp_path)
        rows = compare.detect(sims, blackbox)
    table = compare.format_table(rows)
    assert len(rows) == len(compare.CASES), table
    healthy = [row for row in rows if row.case.healthy]
    assert {row.case.mode for row in healthy} == {"json", "stream"}
    assert all(row.blackbox_success is True for row in healthy), table
    assert all(row.duixwatch_conformant is True for row in healthy), table
    missed = [
        f"{r.case.mode} {r.case.name}"
        for r in rows
        if not r.case.healthy and not r.duixwatch_detects
    ]
    assert not missed, f"duixwatch missed {missed}\n{table}"
    # What a regexp cannot see: the README's comparison table says so.
    blind = {
        (r.case.mode, r.case.name) for r in rows if not r.case.healthy and not r.blackbox_detects
    }
    assert blind == {
        ("json", "wrong_conversation_id"),
        ("stream", "malformed"),
        ("stream", "after_end"),
    }, table
