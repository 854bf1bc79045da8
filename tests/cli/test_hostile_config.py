"""``duixwatch check`` and ``run`` on hostile config files, as a new user would try them: exit
2 with one ``FILE:LINE:`` error, no traceback, no stall (real processes)."""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import pytest

from tests.procs import DUIXWATCH

#: Startup (about 1 s here) plus the load; a stall or a traceback after 8 s would exceed it.
SECONDS = 15.0
#: The child's address space: if a bound ever fails, it dies of MemoryError instead of
#: taking the machine's memory with it.
MEMORY_BYTES = 2 << 30

MINIMAL = 'apps:\n  - app_id: "1377185422953811968"\n    app_key: k\n'


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def _bomb() -> str:
    text = MINIMAL + "lol:\n  a: &a [" + ", ".join(["lol"] * 10) + "]\n"
    for before, name in zip("abcdef", "bcdefg", strict=True):
        text += f"  {name}: &{name} [" + ", ".join([f"*{before}"] * 10) + "]\n"
    return text


CASES = {
    "deep-mappings": (
        MINIMAL + "x:\n" + "".join(" " * (i + 1) + "k:\n" for i in range(3000)),
        ":68: x.k.k.k…: YAML nested more than 64 levels deep: not a config file",
    ),
    "nul-byte": (MINIMAL + "x: 1\x00\n", ":4: YAML: character U+0000 is not allowed"),
    "alias-bomb": (_bomb(), ":9: lol.e[7]: YAML aliases expand to more than 100,000 nodes"),
    "dev-zero": (None, ":1: the config file is over the 16 MiB limit"),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_hostile_config_file_exits_2_with_its_file_and_line(
    tmp_path: Path, case: str, command: str
) -> None:
    text, expected = CASES[case]
    path = Path("/dev/zero")
    if text is not None:
        path = tmp_path / "duixwatch.yaml"
        path.write_text(text)
    started = time.monotonic()
    done = subprocess.run(
        [*DUIXWATCH, command, "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=SECONDS * 4,
        preexec_fn=_limit_memory,
        check=False,
    )
    assert time.monotonic() - started < SECONDS
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"duixwatch {command}: error: {path}{expected}")
