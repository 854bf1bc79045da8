"""grafana/: the dashboards type-check against @grafana/schema with TypeScript, every PromQL
expression of every panel parses with promtool, the panels use only exported and documented
metrics, and the provisioning files point where the README says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops_support import (
    DASHBOARDS,
    REPO,
    RULES,
    documented_metric_names,
    exported_metric_names,
    load_json,
    load_yaml,
    metric_names_in,
    npm_dir,
    output,
    panels,
    run,
)
from tests.tools import require_tool

SCHEMA_CHECK = REPO / "grafana" / "schema-check"
PROVISIONING = REPO / "grafana" / "provisioning"
#: Grafana's template variables, replaced by values a query could really get.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "6h", "$app": "frontdesk"}


def substitute(expr: str, values: dict[str, str] = VARIABLES) -> str:
    """``expr`` with Grafana's variables replaced (longest name first: $__range vs $__rate…)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    assert "$" not in expr, f"unknown variable in {expr!r}"
    return expr


def every_expr() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target of every panel."""
    return [
        (path.name, panel["title"], target["expr"])
        for path in DASHBOARDS
        for panel in panels(load_json(path))
        for target in panel["targets"]
    ]


@pytest.mark.e2e
def test_the_dashboards_type_check_against_grafana_schema(tmp_path: Path) -> None:
    """Each dashboard `satisfies` @grafana/schema's Dashboard; each panel's options, field
    config and targets satisfy the types of its panel plugin (grafana/schema-check/types.ts)."""
    packages = npm_dir("schema-check")
    (tmp_path / "node_modules").symlink_to(packages / "node_modules")
    (tmp_path / "types.ts").write_text((SCHEMA_CHECK / "types.ts").read_text())
    lines = [
        'import type { Dashboard } from "@grafana/schema";',
        'import type { Json, PanelFieldCustom, PanelOptions, PrometheusQuery } from "./types";',
    ]
    for i, path in enumerate(DASHBOARDS):
        dashboard = load_json(path)
        lines.append(f"// {path.name}")
        lines.append(
            f"export const dashboard{i} = {json.dumps(dashboard)} satisfies Json<Dashboard>;"
        )
        for panel in panels(dashboard):
            kind = json.dumps(panel["type"])
            name = f"d{i}_panel{panel['id']}"
            lines.append(
                f"export const {name}_options = {json.dumps(panel['options'])} "
                f"satisfies PanelOptions[{kind}];"
            )
            custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
            if custom is not None:
                lines.append(
                    f"export const {name}_custom = {json.dumps(custom)} "
                    f"satisfies PanelFieldCustom[{kind}];"
                )
            lines.append(
                f"export const {name}_targets = {json.dumps(panel['targets'])} "
                "satisfies PrometheusQuery[];"
            )
    (tmp_path / "dashboards.ts").write_text("\n".join(lines) + "\n")
    config = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "target": "es2022",
            "module": "esnext",
            "moduleResolution": "bundler",
            "skipLibCheck": True,
            "exactOptionalPropertyTypes": True,
            "types": [],
        },
        "files": ["dashboards.ts"],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    result = run([packages / "node_modules/.bin/tsc", "-p", tmp_path], cwd=tmp_path)
    assert result.returncode == 0, output(result)


@pytest.mark.e2e
def test_the_type_check_rejects_an_unknown_option(tmp_path: Path) -> None:
    """The check above can fail: a misspelt option of a stat panel is a type error."""
    packages = npm_dir("schema-check")
    (tmp_path / "node_modules").symlink_to(packages / "node_modules")
    (tmp_path / "types.ts").write_text((SCHEMA_CHECK / "types.ts").read_text())
    stat = next(p for p in panels(load_json(DASHBOARDS[0])) if p["type"] == "stat")
    options = stat["options"] | {"colourMode": "background"}
    (tmp_path / "check.ts").write_text(
        'import type { PanelOptions } from "./types";\n'
        f'export const o = {json.dumps(options)} satisfies PanelOptions["stat"];\n'
    )
    result = run(
        [
            packages / "node_modules/.bin/tsc",
            "--strict",
            "--noEmit",
            "--moduleResolution",
            "bundler",
            "--module",
            "esnext",
            "--skipLibCheck",
            "check.ts",
        ],
        cwd=tmp_path,
    )
    assert result.returncode != 0, output(result)
    assert "colourMode" in result.stdout, output(result)


@pytest.mark.e2e
def test_every_panel_expression_parses_with_promtool(tmp_path: Path) -> None:
    """Each expression becomes a recording rule of a throw-away rules file: `promtool check
    rules` parses every one of them with Prometheus' own parser."""
    exprs = every_expr()
    assert exprs
    rules = {
        "groups": [
            {
                "name": "dashboard-expressions",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": substitute(expr)}
                    for i, (_, _, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "exprs.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = run([require_tool("promtool"), "check", "rules", path])
    assert result.returncode == 0, output(result) + "\n" + "\n".join(e for *_, e in exprs)
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout, output(result)


def recording_rules() -> dict[str, str]:
    """The recording rules of deploy/prometheus/rules.yaml: record name -> expression."""
    return {
        rule["record"]: rule["expr"]
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def test_every_panel_uses_only_exported_and_documented_metrics() -> None:
    """Or a recording rule of rules.yaml (test_rules.py checks the metrics those use)."""
    exported = exported_metric_names()
    documented = documented_metric_names()
    records = recording_rules()
    for name, title, expr in every_expr():
        for metric in metric_names_in(expr):
            if metric.startswith("process_"):
                continue  # the standard process collector (README: process_*)
            if ":" in metric:
                assert metric in records, f"{name} / {title}: {metric} is no recording rule"
                continue
            assert metric in exported, f"{name} / {title}: {metric} is not exported"
            assert metric in documented, f"{name} / {title}: {metric} is not in the README"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_the_dashboard_is_portable_and_tidy(path: Path) -> None:
    dashboard = load_json(path)
    assert re.fullmatch(r"duixwatch-[a-z-]+", dashboard["uid"])
    assert dashboard.get("id") is None, "no instance-specific id in a provisioned dashboard"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def test_the_app_dashboard_is_filtered_by_its_app_variable() -> None:
    dashboard = load_json(REPO / "grafana" / "dashboards" / "duixwatch-app.json")
    app = next(v for v in dashboard["templating"]["list"] if v["name"] == "app")
    assert app["type"] == "query"
    assert app["query"]["query"] == "label_values(duix_up, app)"
    for panel in panels(dashboard):
        for target in panel["targets"]:
            assert '{app="$app"}' in target["expr"], f"{panel['title']}: {target['expr']}"


def test_the_overview_shows_what_the_issue_asks_for() -> None:
    dashboard = load_json(REPO / "grafana" / "dashboards" / "duixwatch-overview.json")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for panel in panels(dashboard):
        by_type.setdefault(panel["type"], []).append(panel)
    exprs = " ".join(t["expr"] for p in panels(dashboard) for t in p["targets"])
    assert "duix_up" in exprs  # apps up
    assert "duix_app_sessions" in exprs  # sessions vs concurrency
    assert "duix_app_concurrency_total_number" in exprs
    (heatmap,) = by_type["heatmap"]  # session ages from the gauge histogram
    (target,) = heatmap["targets"]
    assert "duix_app_session_age_seconds_bucket" in target["expr"]
    assert target["format"] == "heatmap"
    assert heatmap["options"]["calculate"] is False
    assert "duixwatch_policy_actions_total" in exprs
    assert "duixwatch_policy_aborts_total" in exprs
    assert 'outcome!="success"' in exprs  # API errors
    assert "duixwatch_api_request_duration_seconds_bucket" in exprs  # and latency


def test_the_provisioning_files_load_the_dashboards_and_a_prometheus() -> None:
    providers = load_yaml(PROVISIONING / "dashboards" / "duixwatch.yaml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/duixwatch"
    sources = load_yaml(PROVISIONING / "datasources" / "duixwatch-prometheus.yaml")
    assert sources["apiVersion"] == 1
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["access"] == "proxy"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert provider["options"]["path"] in readme


def row_panels(dashboard: dict[str, Any], title: str) -> list[dict[str, Any]]:
    """The panels of the (expanded) row called ``title``: those below it, up to the next row."""
    top = dashboard["panels"]
    (row,) = [p for p in top if p["type"] == "row" and p["title"] == title]
    below = sorted(
        (p for p in top if p["gridPos"]["y"] > row["gridPos"]["y"]), key=lambda p: p["gridPos"]["y"]
    )
    end = next((p["gridPos"]["y"] for p in below if p["type"] == "row"), None)
    return [p for p in below if end is None or p["gridPos"]["y"] < end]


def test_the_overview_has_a_dialog_backend_row() -> None:
    """The dialog row: probe success, first-answer and total latency percentiles against the budget,
    failures by reason — in one row, empty (and saying so) until a probe is configured."""
    dashboard = load_json(REPO / "grafana" / "dashboards" / "duixwatch-overview.json")
    dialog = row_panels(dashboard, "Dialog backend")
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dialog}
    joined = " ".join(exprs.values())
    assert "duixwatch_dialog_probe_success" in joined
    assert "duixwatch_dialog_probe_total_duration_seconds_bucket" in joined
    assert 'phase="first_answer"' in joined
    assert "rate(duixwatch_dialog_probe_failures_total" in joined
    assert "by (probe, reason)" in joined
    for panel in dialog:
        assert panel["description"].startswith("Only when dialog probes are configured")
    latency = [
        p
        for p in dialog
        if p["fieldConfig"]["defaults"].get("unit") == "s"
        and "duration_seconds" in exprs[p["title"]]
    ]
    assert len(latency) == 2, "total and first answer"
    for panel in latency:
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["custom"]["thresholdsStyle"]["mode"] != "off"
        assert [s["value"] for s in defaults["thresholds"]["steps"]] == [None, 20]  # DUIX's
        assert "duixwatch_dialog_probe_budget_seconds" in exprs[panel["title"]]  # the probe's
        assert (
            "histogram_quantile(" in exprs[panel["title"]]
            or "quantile_over_time(" in exprs[panel["title"]]
        )


@pytest.mark.parametrize("name", ["duixwatch-overview.json", "duixwatch-app.json"])
def test_the_dashboards_have_a_what_sessions_cost_row(name: str) -> None:
    """What sessions cost: session-minutes per app per day (from the recording rule), duration
    percentiles from the histogram, starts and ends per minute, and who closed the sessions
    that ended; the percentiles are empty (and say so) until a session has ended."""
    dashboard = load_json(REPO / "grafana" / "dashboards" / name)
    cost = row_panels(dashboard, "What sessions cost")
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in cost}
    joined = {title: " ".join(e) for title, e in exprs.items()}
    records = recording_rules()
    assert records["app:duix_app_session_minutes:increase1d"] == (
        "increase(duix_app_session_seconds_total[1d]) / 60"  # the contract's session-minutes
    )
    assert records["app:duix_app_session_duration_seconds_bucket:rate1h"] == (
        "rate(duix_app_session_duration_seconds_bucket[1h])"
    )
    (minutes,) = [t for t, e in joined.items() if "app:duix_app_session_minutes:increase1d" in e]
    assert "minutes" in minutes.lower()
    (durations,) = [
        p
        for p in cost
        if "app:duix_app_session_duration_seconds_bucket:rate1h" in joined[p["title"]]
    ]
    quantiles = [
        re.fullmatch(
            r"histogram_quantile\(([0-9.]+), sum by \(le\) "
            r"\(app:duix_app_session_duration_seconds_bucket:rate1h(\{[^}]*\})?\)\)",
            expr,
        )
        for expr in exprs[durations["title"]]
    ]
    assert all(quantiles), exprs[durations["title"]]
    assert [m.group(1) for m in quantiles if m] == ["0.5", "0.9", "0.99"]
    assert durations["fieldConfig"]["defaults"]["unit"] == "s"
    assert durations["description"].startswith("Only when sessions have ended")
    everything = " ".join(joined.values())
    assert "rate(duix_app_sessions_started_total" in everything
    assert "rate(duix_app_sessions_ended_total" in everything
    assert "[$__rate_interval])) * 60" in everything  # per minute
    assert "sum by (closed_by) (increase(duix_app_sessions_ended_total" in everything
    for panel in cost:
        if panel is not durations:  # the counters are there from an app's first poll, at 0
            assert not panel["description"].startswith("Only when"), panel["title"]
