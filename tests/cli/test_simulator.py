"""`duixwatch sim`'s workload options, in-process: values reach the simulator, and a value it
refuses is a usage error (exit 2, one line), not a traceback."""

from __future__ import annotations

import io

import pytest
import yaml

from duixwatch.cli import main


def test_a_duration_floor_below_the_mean_is_accepted() -> None:
    out = io.StringIO()
    argv = ["sim", "--apps", "2", "--mean-duration-seconds", "90", "--min-duration-seconds", "30"]
    assert main([*argv, "--print-config"], out=out) == 0
    assert len(yaml.safe_load(out.getvalue())["apps"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--min-duration-seconds", "700"], "min_duration_seconds must be in [0, mean_"),
        (["--min-duration-seconds", "-1"], "min_duration_seconds must be in [0, mean_"),
        (["--arrivals-per-minute", "-1"], "arrivals_per_minute must be between 0 and 10000"),
        (["--apps", "0"], "apps must be between 1 and 50000"),
    ],
)
def test_a_workload_value_the_simulator_refuses_exits_2_with_its_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sim", *argv, "--print-config"], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
