"""``duixwatch run``/``check`` on a state directory or config that cannot work: exit 2 with one
line naming the problem, never a traceback (real processes)."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import yaml

from tests.procs import DUIXWATCH, free_port


def config(tmp_path: Path, **apps: str) -> Path:
    path = tmp_path / "duixwatch.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "duix": {"base_url": "http://127.0.0.1:9"},
                "apps": [
                    {"app_id": app_id, "name": name, "app_key": "k" * 16}
                    for name, app_id in (apps or {"desk": "1377185422953811968"}).items()
                ],
                "server": {"listen": f"127.0.0.1:{free_port()}"},
                "state": {"dir": str(tmp_path / "state")},
            }
        )
    )
    return path


def test_check_warns_of_an_app_id_shorter_than_duixs(tmp_path: Path) -> None:
    path = config(tmp_path, desk="1377185422953811968", short="12")
    done = subprocess.run(
        [*DUIXWATCH, "check", "-c", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "warning: apps[1].app_id: '12' has 2 digits; DUIX app ids have 19" in done.stderr


def test_check_warns_when_the_open_file_limit_cannot_hold_max_connections(
    tmp_path: Path,
) -> None:
    """A hard limit of 1,024 (a container's default) below 512 + 32 + 64 is fine; below
    max_connections 2,000 it is not: check says so, with what to change."""
    path = config(tmp_path)
    doc = yaml.safe_load(path.read_text())

    def hard_limit_1024() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*DUIXWATCH, "check", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            preexec_fn=hard_limit_1024,
        )

    quiet = check()
    assert quiet.returncode == 0, quiet.stderr
    assert "open-file limit" not in quiet.stderr
    doc["server"]["max_connections"] = 2000
    path.write_text(yaml.safe_dump(doc))
    loud = check()
    assert loud.returncode == 0, loud.stderr
    assert "warning: the open-file limit (1024) is below" in loud.stderr
    assert "server.max_connections (2000)" in loud.stderr
