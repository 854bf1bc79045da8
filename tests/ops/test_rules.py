"""deploy/prometheus/: the rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), every alert has a case where it fires and one where it must not, and
every alert carries a severity, a summary, a description and a runbook that exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops_support import (
    REPO,
    RULE_TESTS,
    RULES,
    RUNBOOKS,
    alerts,
    documented_metric_names,
    exported_metric_names,
    load_yaml,
    metric_names_in,
    output,
    run,
)
from tests.tools import require_tool

SEVERITIES = {"critical", "warning", "info"}
REQUIRED_ALERTS = {
    "DuixwatchDown",  # daemon down
    "DuixAppPollFailing",  # app poll failing
    "DuixAppDataStale",  # app data stale
    "DuixAppAuthRejected",  # auth rejected
    "DuixAppConcurrencyNearLimit",  # concurrency near the limit
    "DuixSessionTooOld",  # sessions older than a threshold
    "DuixwatchPolicyAborting",  # policy aborting
    "DuixwatchPolicyActionsFailing",  # actions failing
    "DuixwatchConfigReloadFailed",  # config reload failed
    "DuixwatchEnforcementDisabled",  # enforcement disabled while policies expect it
    "DuixDialogProbeFailing",  # the dialog backend fails the synthetic probe
    "DuixDialogSlow",  # the dialog backend answers near or over the 20 s budget
    "DuixConversationChanged",  # a watched conversation's configuration changed
    "DuixAvatarTrainingFailed",  # a watched avatar's training failed
}


@pytest.mark.e2e
def test_promtool_check_rules_passes() -> None:
    result = run([require_tool("promtool"), "check", "rules", RULES])
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


@pytest.mark.e2e
def test_promtool_test_rules_passes() -> None:
    assert RULE_TESTS, "deploy/prometheus/tests/*.yaml"
    result = run([require_tool("promtool"), "test", "rules", *RULE_TESTS])
    assert result.returncode == 0, output(result)
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), output(result)


def test_the_issue_s_alerts_are_all_there() -> None:
    assert alerts().keys() >= REQUIRED_ALERTS


def alert_cases() -> dict[str, dict[str, int]]:
    """Per alert name: how many promtool cases expect it firing and how many expect silence."""
    cases: dict[str, dict[str, int]] = {}
    for path in RULE_TESTS:
        document = load_yaml(path)
        assert document["rule_files"] == ["../rules.yaml"], path
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = "fires" if case.get("exp_alerts") else "quiet"
                counts = cases.setdefault(case["alertname"], {"fires": 0, "quiet": 0})
                counts[kind] += 1
    return cases


def test_every_alert_has_a_firing_and_a_quiet_promtool_case() -> None:
    cases = alert_cases()
    missing = {
        name: cases.get(name, {"fires": 0, "quiet": 0})
        for name in alerts()
        if not cases.get(name, {}).get("fires") or not cases.get(name, {}).get("quiet")
    }
    assert not missing, f"alerts without both a firing and a quiet case: {missing}"
    unknown = cases.keys() - alerts().keys()
    assert not unknown, f"test cases for alerts that do not exist: {unknown}"


def test_every_recording_rule_has_a_promtool_case() -> None:
    records = {
        rule["record"]
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    tested = {
        case["expr"]
        for path in RULE_TESTS
        for test in load_yaml(path)["tests"]
        for case in test.get("promql_expr_test", [])
    }
    assert records <= tested, records - tested


def runbook_anchors() -> dict[str, str]:
    """GitHub-style anchors of the level-2 headings of docs/runbooks.md -> the section text."""
    sections: dict[str, str] = {}
    anchor = None
    for line in RUNBOOKS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            anchor = re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
            sections[anchor] = ""
        elif anchor is not None:
            sections[anchor] += line + "\n"
    return sections


@pytest.mark.parametrize("name", sorted(alerts()))
def test_every_alert_is_labelled_annotated_and_has_a_runbook(name: str) -> None:
    rule: dict[str, Any] = alerts()[name]
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations.keys() >= {"summary", "description", "runbook_url"}
    url = annotations["runbook_url"]
    path, _, anchor = url.partition("#")
    assert path == "docs/runbooks.md", url
    assert anchor == name.lower(), "one runbook section per alert, named after it"
    section = runbook_anchors().get(anchor)
    assert section is not None, f"docs/runbooks.md has no '## {name}' section"
    for heading in ("What it means", "What to do"):
        assert f"**{heading}.**" in section, f"{name}: the runbook says {heading.lower()}"


def test_the_rules_use_only_exported_and_documented_metrics() -> None:
    """Every metric an expression names is one the daemon exports and the README documents
    (or a recording rule, or `up`): a renamed metric cannot leave a rule silently empty."""
    groups = load_yaml(RULES)["groups"]
    known = {rule["record"] for g in groups for rule in g["rules"] if "record" in rule} | {"up"}
    exported, documented = exported_metric_names(), documented_metric_names()
    for group in groups:
        for rule in group["rules"]:
            for metric in metric_names_in(rule["expr"]) - known:
                assert metric in exported, f"{metric} is not exported: {rule['expr']!r}"
                assert metric in documented, f"{metric} is not in the README: {rule['expr']!r}"


@pytest.mark.e2e
def test_the_readmes_prometheus_config_for_kubernetes_passes_promtool(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = [
        b.split("```", 1)[0]
        for b in readme.split("```yaml\n")[1:]
        if b.startswith("# prometheus.yml")
    ]
    config = yaml.safe_load(block)
    assert config["scrape_configs"][0]["job_name"] == "duixwatch"  # what the rules expect
    assert config["rule_files"] == ["/etc/prometheus/rules/duixwatch.yaml"]
    config["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run([require_tool("promtool"), "check", "config", path])
    assert result.returncode == 0, output(result)
