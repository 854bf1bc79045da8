"""``duixwatch dialog check``: exit codes, one line per rule, ``-o json``, secrets never shown."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from duixwatch.cli import main
from tests.procs import free_port, start_sim

TOKEN = "Bearer tok-5e6f-never-print-me"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    p = start_sim(port, tmp_path_factory.mktemp("sim") / "sim.log", apps=1, seed=1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        p.kill()
        p.wait(timeout=10)


@pytest.fixture
def faults(sim: str) -> Iterator[object]:
    def set_faults(**given: object) -> None:
        httpx.post(f"{sim}/_sim/dialog/faults", json=given, timeout=5).raise_for_status()

    yield set_faults
    httpx.delete(f"{sim}/_sim/dialog/faults", timeout=5).raise_for_status()


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["dialog", "check", *argv], out=out)
    return code, out.getvalue()


@pytest.mark.parametrize(("path", "mode"), [("/dialog", "json"), ("/dialog/stream", "stream")])
def test_a_conformant_backend_exits_0_with_a_line_per_rule(sim: str, path: str, mode: str) -> None:
    code, text = run(f"{sim}{path}", "--strict")
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0] == f"dialog check {sim}/… (mode {mode})"
    assert any(line.startswith("PASS  strict.missing_sid: HTTP 400") for line in lines)
    assert lines[-1].startswith("CONFORMANT: ")
    assert "first byte" in lines[-2]
    assert lines[-2].endswith("(budget 20s)")


def test_a_fault_exits_1_naming_the_rule(sim: str, faults: object) -> None:
    faults(no_end=True)  # type: ignore[operator]
    code, text = run(f"{sim}/dialog/stream", "--mode", "stream")
    assert code == 1
    assert "FAIL  stream.final: no chunk with isEnd: true" in text
    assert text.splitlines()[-1].startswith("NOT CONFORMANT (contract): ")


def test_json_output_for_machines(sim: str, faults: object) -> None:
    faults(wrong_conversation_id=True)  # type: ignore[operator]
    code, text = run(f"{sim}/dialog", "-o", "json", "--conversation-id", "42")
    report = json.loads(text)
    assert code == 1
    assert report["conformant"] is False
    assert report["failure_reason"] == "contract"
    assert report["mode"] == "json"
    assert {"rule": "data.conversationId", "verdict": "FAIL"}.items() <= next(
        r for r in report["rules"] if r["rule"] == "data.conversationId"
    ).items()
    assert set(report["timings"]) == {
        "first_byte_seconds",
        "first_answer_seconds",
        "total_seconds",
    }


def test_headers_are_sent_and_never_printed(sim: str, faults: object, tmp_path: Path) -> None:
    faults(require_header={"name": "Authorization", "value": TOKEN})  # type: ignore[operator]
    url = f"{sim}/dialog?signature=sig-77aa-secret"
    code, text = run(url, "-H", f"Authorization: {TOKEN}", "-o", "json")
    assert code == 0, text
    assert TOKEN not in text
    assert "sig-77aa-secret" not in text
    (tmp_path / "h").write_text(f"# the token\nAuthorization: {TOKEN}\n")
    code, text = run(url, "--headers-file", str(tmp_path / "h"))
    assert code == 0, text
    assert TOKEN not in text
    code, text = run(url)
    assert code == 1
    assert "HTTP 401" in text


def test_usage_errors_exit_2(sim: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run("ftp://example.com/")[0] == 2
    assert run(f"{sim}/dialog", "-H", "no colon here")[0] == 2
    assert run(f"{sim}/dialog", "--budget-seconds", "0")[0] == 2
    (tmp_path / "h").write_text(f"{TOKEN}\n")
    assert run(f"{sim}/dialog", "--headers-file", str(tmp_path / "h"))[0] == 2
    assert TOKEN not in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        run(f"{sim}/dialog", "--mode", "sometimes")
    assert exited.value.code == 2


def test_a_backend_that_is_down_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(f"http://127.0.0.1:{free_port()}/dialog")
    assert code == 1
    assert "FAIL  transport: no response: ConnectError" in text
