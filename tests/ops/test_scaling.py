"""The autoscaling and sharding kit: deploy/kubernetes/overlays/keda/ (KEDA's metrics-api and
prometheus scalers, an HPA with prometheus-adapter) and overlays/sharded/ (a StatefulSet of
shards), and the rules behind them.

Checked the way the rest of deploy/kubernetes/ is (tests/ops/test_kubernetes.py): every
kustomization renders with ``kubectl kustomize`` and validates with ``kubernetes-validate
--strict``; the ScaledObjects validate against KEDA's published schemas (the npm package
@kubernetes-models/keda: JSON schema, and TypeScript types through tsc); prometheus-adapter's
rule, which has no published schema, is rendered as the adapter renders its templates and its
queries go through promtool. The recipes must repeat the numbers of the target in duixwatch's
config, and the README's commands and examples are the ones checked here. End to end, three
daemons with the StatefulSet's environment and a real Prometheus loading the rules: each pod
name gives its shard, the Prometheus recipes return the fleet's sessions, and a lost shard
empties them and raises DuixwatchShardMissing.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from duixwatch import config as settings
from duixwatch.config import sharding
from duixwatch.core import errors
from tests.ops.test_kubernetes import (
    CUSTOM_GROUPS,
    KUBERNETES_VERSIONS,
    TSCONFIG,
    one,
    readme_yaml_block,
    render,
    workload,
)
from tests.ops_support import (
    DEPLOY,
    DUIXWATCH,
    KUSTOMIZE_DIRS,
    REPO,
    RULES,
    eventually,
    free_port,
    load_yaml,
    npm_dir,
    output,
    process,
    run,
    simulator,
    venv_tool,
)
from tests.tools import require_tool

pytestmark = pytest.mark.e2e

KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
KEDA = KUBERNETES / "overlays" / "keda"
PROMETHEUS_SCALER = KEDA / "prometheus-scaler"
HPA_ADAPTER = KEDA / "hpa-prometheus-adapter"
SHARDED = KUBERNETES / "overlays" / "sharded"
ADAPTER_CONFIG = HPA_ADAPTER / "prometheus-adapter.yaml"
CRD_CHECK = KUBERNETES / "crd-check"
#: The three autoscaling recipes, each a kustomization.
RECIPES = (KEDA, PROMETHEUS_SCALER, HPA_ADAPTER)
#: Kustomizations below overlays/<name>/ (ops/test_kubernetes.py renders overlays/<name>/).
NESTED = (PROMETHEUS_SCALER, HPA_ADAPTER)
#: Kustomizations only ever rendered as part of another: the example backend (every recipe) and
#: the sharding component (overlays/sharded, and the README's Operator example).
PARTS = (KEDA / "example-backend", SHARDED / "statefulset", KUBERNETES / "components" / "https")
KEDA_HTTPS = KUBERNETES / "overlays" / "keda-https"
SHARDING_ENV = ("POD_NAME", "DUIXWATCH_SHARDING__INDEX", "DUIXWATCH_SHARDING__COUNT")
SCALED_OBJECT_TYPES = "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject"


def ids(directory: Path) -> str:
    return str(directory.relative_to(KUBERNETES))


def the_target() -> dict[str, Any]:
    """The scaling target of the keda overlay's duixwatch config."""
    (target,) = load_yaml(KEDA / "duixwatch.yaml")["scaling"]["targets"]
    return dict(target)


def recorded(name: str) -> bool:
    return any(
        rule.get("record") == name
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
    )


def readme_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return (
        "## Autoscaling and sharding\n"
        + readme.split("\n## Autoscaling and sharding\n", 1)[1].split("\n## ", 1)[0]
    )


def rendered_kustomization(site: Path, text: str) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a kustomization written in ``site``, beside a checkout of this
    repository called duixwatch/ (kustomize refuses absolute paths), as the README shows."""
    (site.parent / "duixwatch").symlink_to(REPO)
    site.mkdir()
    (site / "kustomization.yaml").write_text(text)
    result = run([venv_tool("kubectl"), "kustomize", site])
    assert result.returncode == 0, output(result)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# ------------------------------------------------------------------------- rendering and schemas


def test_every_kustomization_is_rendered_by_a_test() -> None:
    """A kustomization added under deploy/kubernetes/ cannot go unchecked."""
    found = {p.parent for p in KUBERNETES.rglob("kustomization.yaml")} - {CRD_CHECK}
    assert found == {*KUSTOMIZE_DIRS, *NESTED, *PARTS}
    assert {KEDA, SHARDED} <= set(KUSTOMIZE_DIRS)
    for part in PARTS:
        referenced = [
            d
            for d in (*KUSTOMIZE_DIRS, *NESTED)
            if part.name in (d / "kustomization.yaml").read_text()
        ]
        assert referenced, f"{part} is rendered by no kustomization"


def validate_strictly(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    """kubernetes-validate --strict on every core object, for every Kubernetes version; the
    custom resources are the only ones it has no schema for (they are checked below)."""
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    args: list[str | Path] = [venv_tool("kubernetes-validate"), "--strict"]
    for version in KUBERNETES_VERSIONS:
        args += ["-k", version]
    result = run([*args, rendered])
    assert result.returncode == 0, output(result)
    core = [o for o in objects if not o["apiVersion"].startswith(CUSTOM_GROUPS)]
    passed = [line for line in result.stdout.splitlines() if " passed " in line]
    assert len(passed) == len(core) * len(KUBERNETES_VERSIONS), result.stdout
    for line in result.stdout.splitlines():
        custom = any(f"api version {group}" in line for group in CUSTOM_GROUPS)
        assert line.startswith("INFO") or custom, line


@pytest.mark.parametrize("directory", NESTED, ids=ids)
def test_the_nested_recipes_render_and_validate_strictly(directory: Path, tmp_path: Path) -> None:
    validate_strictly(render(directory), tmp_path)


def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """--strict can fail: a typo in the StatefulSet (silently dropped by the API) is caught."""
    objects = copy.deepcopy(render(SHARDED))
    workload(objects)["spec"]["podManagmentPolicy"] = "Parallel"
    with pytest.raises(AssertionError, match="podManagmentPolicy"):
        validate_strictly(objects, tmp_path)


def crd_check(objects: list[dict[str, Any]], tmp_path: Path) -> tuple[int, list[str]]:
    """deploy/kubernetes/crd-check/validate.mjs on ``objects``: its exit code and lines."""
    packages = npm_dir("crd-check")
    work = tmp_path / "crd-check"
    work.mkdir(parents=True)
    (work / "node_modules").symlink_to(packages / "node_modules")
    validator = work / "validate.mjs"
    validator.write_text((CRD_CHECK / "validate.mjs").read_text())
    result = run([require_tool("node"), validator], stdin=json.dumps(objects), cwd=work)
    return result.returncode, result.stdout.splitlines()


def type_check(scaled_objects: list[dict[str, Any]], tmp_path: Path) -> str | None:
    """tsc on ``satisfies IScaledObject`` for each: None when they type-check, else tsc's
    output (the types reject unknown fields, which the JSON schema lets through)."""
    packages = npm_dir("crd-check")
    work = tmp_path / "tsc"
    work.mkdir(parents=True)
    (work / "node_modules").symlink_to(packages / "node_modules")
    lines = [f'import type {{ IScaledObject }} from "{SCALED_OBJECT_TYPES}";']
    lines += [
        f"export const s{i} = {json.dumps(o, indent=1)} satisfies IScaledObject;"
        for i, o in enumerate(scaled_objects)
    ]
    (work / "crds.ts").write_text("\n".join(lines) + "\n")
    (work / "tsconfig.json").write_text(json.dumps(TSCONFIG | {"files": ["crds.ts"]}))
    result = run([packages / "node_modules/.bin/tsc", "-p", work], cwd=work)
    return None if result.returncode == 0 else output(result)


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        (KEDA, ["OK ScaledObject/dialog-backend"]),
        (
            KEDA_HTTPS,
            ["OK ScaledObject/dialog-backend", "OK TriggerAuthentication/duixwatch-scaling"],
        ),
        (PROMETHEUS_SCALER, ["OK ScaledObject/dialog-backend"]),
        (HPA_ADAPTER, []),
        (SHARDED, []),
    ],
    ids=lambda v: ids(v) if isinstance(v, Path) else None,
)
def test_the_scaledobjects_validate_against_kedas_published_schemas(
    directory: Path, expected: list[str], tmp_path: Path
) -> None:
    """@kubernetes-models/keda is generated from KEDA's API types (KEDA 2.19): its JSON schema
    checks types, enums and required fields (trigger metadata must be strings), its TypeScript
    types reject unknown fields."""
    custom = [o for o in render(directory) if o["apiVersion"].startswith(CUSTOM_GROUPS)]
    status, lines = crd_check(custom, tmp_path)
    assert status == 0, lines
    assert sorted(lines) == expected
    scaled = [o for o in custom if o["kind"] == "ScaledObject"]
    if scaled:
        assert type_check(scaled, tmp_path) is None


def test_the_schema_checks_reject_a_broken_scaledobject(tmp_path: Path) -> None:
    """Both checks can fail: a number where KEDA wants a string and an unknown fallback
    behaviour fail the schema; a misspelt field fails the types."""
    scaled = copy.deepcopy(one(render(KEDA), "ScaledObject"))
    scaled["spec"]["triggers"][0]["metadata"]["targetValue"] = 1
    scaled["spec"]["fallback"]["behavior"] = "keepCalm"
    status, lines = crd_check([scaled], tmp_path / "schema")
    assert status == 1, lines
    (line,) = lines
    assert line.startswith("INVALID ScaledObject/dialog-backend")
    assert "targetValue must be string" in line, line
    assert "behavior must be equal to one of the allowed values" in line, line

    misspelt = copy.deepcopy(one(render(KEDA), "ScaledObject"))
    misspelt["spec"]["minReplicaCnt"] = misspelt["spec"].pop("minReplicaCount")
    failed = type_check([misspelt], tmp_path / "types")
    assert failed is not None
    assert "minReplicaCnt" in failed


# ---------------------------------------------------------------------- the recipes, one by one


def test_the_keda_overlay_config_is_the_bases_plus_one_target(tmp_path: Path) -> None:
    keda, base = load_yaml(KEDA / "duixwatch.yaml"), load_yaml(BASE / "duixwatch.yaml")
    scaling = keda.pop("scaling")
    assert keda == base, "the keda overlay's config drifted from the base's"
    assert [t["name"] for t in scaling["targets"]] == ["dialog-backend"]
    # The pod's view of the rendered overlay passes `duixwatch check`.
    objects = render(KEDA)
    config = one(objects, "ConfigMap")["data"]["duixwatch.yaml"]
    assert yaml.safe_load(config)["scaling"] == scaling
    (tmp_path / "duixwatch.yaml").write_text(config)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in one(objects, "Secret")["data"].items():
        (credentials / name).write_bytes(base64.b64decode(value))
    env = {
        "PATH": "/usr/bin:/bin",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    result = run([*DUIXWATCH, "check", "-c", tmp_path / "duixwatch.yaml"], env=env, timeout=60)
    assert result.returncode == 0, output(result)


def scale_target(objects: list[dict[str, Any]], ref: dict[str, Any]) -> dict[str, Any]:
    """The object a scaleTargetRef names, rendered in the same kustomization."""
    (found,) = [
        o
        for o in objects
        if o["apiVersion"] == ref["apiVersion"]
        and o["kind"] == ref["kind"]
        and o["metadata"]["name"] == ref["name"]
    ]
    return found


@pytest.mark.parametrize("directory", RECIPES, ids=ids)
def test_each_recipe_scales_the_example_backend_within_the_targets_bounds(
    directory: Path,
) -> None:
    target = the_target()
    objects = render(directory)
    scaler = next(o for o in objects if o["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"})
    spec = scaler["spec"]
    backend = scale_target(objects, spec["scaleTargetRef"])
    assert backend["metadata"]["name"] == target["name"] == scaler["metadata"]["name"]
    assert "replicas" not in backend["spec"], "the autoscaler owns the replica count"
    if scaler["kind"] == "ScaledObject":
        bounds = (spec["minReplicaCount"], spec["maxReplicaCount"])
        fallback = spec["fallback"]
        assert fallback["failureThreshold"] >= 1
        assert target["min_replicas"] <= fallback["replicas"] <= target["max_replicas"]
        assert fallback["behavior"] == "currentReplicasIfHigher"
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    else:
        bounds = (spec["minReplicas"], spec["maxReplicas"])
        behavior = spec["behavior"]
    assert bounds == (target["min_replicas"], target["max_replicas"])
    window = behavior["scaleDown"]["stabilizationWindowSeconds"]
    if directory == KEDA:
        assert window == 0, "duixwatch's desired_replicas is already stabilized"
    else:
        assert window == target["scale_down_stabilization_seconds"]


def test_the_metrics_api_scaler_reads_duixwatchs_endpoint_for_the_target() -> None:
    target = the_target()
    objects = render(KEDA)
    (trigger,) = one(objects, "ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    assert trigger["metricType"] == "AverageValue"  # fallback works with AverageValue only
    meta = trigger["metadata"]
    assert meta["valueLocation"] == "desired_replicas"
    assert meta["targetValue"] == "1"
    assert meta["format"] == "json"
    url = urlsplit(meta["url"])
    service = one(objects, "Service")
    assert url.scheme == "http"
    assert url.hostname == f"{service['metadata']['name']}.duixwatch.svc"
    assert url.port == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "metrics")
    assert url.path == f"/api/v1/scaling/{target['name']}"


def test_the_prometheus_scaler_queries_the_fleet_wide_sessions() -> None:
    target = the_target()
    (trigger,) = one(render(PROMETHEUS_SCALER), "ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["query"] == f'target:duixwatch_scaling_sessions:sum{{target="{target["name"]}"}}'
    assert recorded("target:duixwatch_scaling_sessions:sum")
    assert float(meta["threshold"]) == target["sessions_per_replica"]
    assert meta["ignoreNullValues"] == "false", "an empty result must be an error: fallback"
    assert urlsplit(meta["serverAddress"]).scheme == "http"


def adapter_rules() -> list[dict[str, Any]]:
    config = load_yaml(ADAPTER_CONFIG)
    assert config.keys() == {"externalRules"}
    rules: list[dict[str, Any]] = config["externalRules"]
    return rules


def adapter_queries(selector: dict[str, str]) -> list[tuple[str, str, str]]:
    """Per external rule: (metric name it serves, its seriesQuery, its metricsQuery rendered
    the way the adapter renders it for an HPA whose metric selector is ``selector``)."""
    queries = []
    for rule in adapter_rules():
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"])
        assert series, rule["seriesQuery"]
        assert re.fullmatch(rule["name"]["matches"], series.group(0))
        matchers = ",".join(f'{k}="{v}"' for k, v in sorted(selector.items()))
        metrics = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series.group(0))
            .replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", ",".join(sorted(selector)))
        )
        assert not re.search("<<|>>", metrics), metrics
        queries.append((rule["name"]["as"], rule["seriesQuery"], metrics))
    return queries


def test_the_hpa_asks_prometheus_adapter_for_the_fleet_wide_sessions() -> None:
    target = the_target()
    (metric,) = one(render(HPA_ADAPTER), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "External"
    external = metric["external"]
    assert external["target"] == {
        "type": "AverageValue",
        "averageValue": f"{target['sessions_per_replica']:g}",
    }
    selector = external["metric"]["selector"]["matchLabels"]
    assert selector == {"target": target["name"]}
    ((served, series_query, _),) = adapter_queries(selector)
    assert external["metric"]["name"] == served
    assert series_query.startswith("target:duixwatch_scaling_sessions:sum{")
    (rule,) = adapter_rules()
    # duixwatch's series carry duixwatch's namespace, the HPA lives in the backend's.
    assert rule["resources"] == {"namespaced": False}


def recipe_queries() -> dict[str, str]:
    """The PromQL each Prometheus-based recipe runs for the target."""
    target = the_target()
    (trigger,) = one(render(PROMETHEUS_SCALER), "ScaledObject")["spec"]["triggers"]
    ((_, series_query, metrics_query),) = adapter_queries({"target": target["name"]})
    return {
        "KEDA prometheus scaler": trigger["metadata"]["query"],
        "prometheus-adapter seriesQuery": series_query,
        "prometheus-adapter metricsQuery": metrics_query,
    }


def test_the_recipes_queries_pass_promtool(tmp_path: Path) -> None:
    queries = recipe_queries()
    rules = {
        "groups": [
            {
                "name": "recipes",
                "rules": [
                    {"record": f"recipe:query_{i}:check", "expr": expr}
                    for i, expr in enumerate(queries.values())
                ],
            }
        ]
    }
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = run([require_tool("promtool"), "check", "rules", path])
    assert result.returncode == 0, output(result) + "\n" + "\n".join(queries.values())
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout, output(result)


SHARD_SERIES = [
    *(
        {
            "series": f'duixwatch_shards{{job="duixwatch", instance="duixwatch-{i}:9814"}}',
            "values": "3x10" if i < 2 else "3 3 3 stale _x7",
        }
        for i in range(3)
    ),
    *(
        {
            "series": f'duixwatch_scaling_sessions{{job="duixwatch", instance="duixwatch-{i}:9814",'
            f' target="dialog-backend"}}',
            "values": f"{n}x10" if i < 2 else f"{n} {n} {n} stale _x7",
        }
        for i, n in enumerate((12, 0, 30))
    ),
]


def test_the_recipes_queries_sum_the_shards_and_go_empty_without_one(tmp_path: Path) -> None:
    """promtool test rules with deploy/prometheus/rules.yaml: three shards' sessions add up;
    once one is gone (its series stale), every recipe's query is empty: the autoscaler falls
    back (KEDA) or keeps its count (HPA) instead of scaling down on a partial sum."""
    queries = recipe_queries()
    cases = []
    for name, expr in queries.items():
        if name == "prometheus-adapter seriesQuery":
            continue  # a selector of series names, not a value
        # An aggregation drops the series name; the recorded series keeps it.
        name_part = "" if expr.startswith("sum") else expr.split("{")[0]
        labels = name_part + '{target="dialog-backend"}'
        cases.append(
            {"expr": expr, "eval_time": "2m", "exp_samples": [{"labels": labels, "value": 42}]}
        )
        cases.append({"expr": expr, "eval_time": "6m", "exp_samples": []})
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "the recipes' queries over three shards",
                "interval": "1m",
                "input_series": SHARD_SERIES,
                "promql_expr_test": cases,
            }
        ],
    }
    path = tmp_path / "recipes.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run([require_tool("promtool"), "test", "rules", path])
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


# ------------------------------------------------------------------------------------ sharding


def pod_environment(statefulset: dict[str, Any], pod: str) -> dict[str, str]:
    """The environment the kubelet gives the pod named ``pod`` (fieldRef metadata.name)."""
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            assert entry["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, entry
            env[entry["name"]] = pod
    return env


def test_the_statefulset_is_the_bases_pod_template_with_the_sharding_environment() -> None:
    deployment = workload(render(BASE))
    objects = render(SHARDED)
    statefulset = workload(objects)
    assert statefulset["kind"] == "StatefulSet"
    assert not [o for o in objects if o["kind"] == "Deployment"]
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert "strategy" not in spec
    assert "volumeClaimTemplates" not in spec
    assert spec["selector"] == deployment["spec"]["selector"]

    # The pod template is the base's, to the byte, but for three more variables.
    template, base = copy.deepcopy(spec["template"]), copy.deepcopy(deployment["spec"]["template"])
    env = template["spec"]["containers"][0].pop("env")
    base_env = base["spec"]["containers"][0].pop("env")
    assert template == base
    assert [e for e in env if e not in base_env] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "DUIXWATCH_SHARDING__INDEX", "value": "auto"},
        {"name": "DUIXWATCH_SHARDING__COUNT", "value": str(spec["replicas"])},
    ]
    assert [e for e in env if e in base_env] == base_env
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert "emptyDir" in volumes["state"], "each pod's own state (see statefulset.yaml)"

    # The headless Service governs the pods and gives Prometheus every one of them.
    service = one(objects, "Service")
    assert spec["serviceName"] == service["metadata"]["name"] == "duixwatch"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()

    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_each_pod_name_gives_its_shard_and_the_shards_split_the_apps(tmp_path: Path) -> None:
    """The rendered config and the StatefulSet's environment, loaded as each pod loads them."""
    objects = render(SHARDED)
    statefulset = workload(objects)
    replicas = statefulset["spec"]["replicas"]
    path = tmp_path / "duixwatch.yaml"
    path.write_text(one(objects, "ConfigMap")["data"]["duixwatch.yaml"])
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in one(objects, "Secret")["data"].items():
        (credentials / name).write_bytes(base64.b64decode(value))

    def load(pod: str) -> tuple[settings.Config, dict[str, str]]:
        environ = pod_environment(statefulset, pod) | {
            "CREDENTIALS_DIRECTORY": str(credentials),
            "STATE_DIRECTORY": str(tmp_path / "state"),
        }
        return settings.load_config(path, environ=environ), environ

    owners: dict[str, int] = {}
    for ordinal in range(replicas):
        config, environ = load(f"duixwatch-{ordinal}")
        assert config.sharding.count == replicas
        index = config.sharding.resolve(environ)
        assert index == ordinal
        for app in sharding.owned_apps(config.apps, index=index, count=replicas):
            assert app.name not in owners, f"{app.name} owned twice"
            owners[app.name] = index
    assert owners.keys() == {a.name for a in config.apps}
    # One replica too many (replicas raised, the count not): that pod refuses to start.
    config, environ = load(f"duixwatch-{replicas}")
    with pytest.raises(errors.ConfigError, match=r"not below sharding\.count"):
        config.sharding.resolve(environ)


def test_the_readmes_operator_example_composes_the_sharding_component(tmp_path: Path) -> None:
    objects = rendered_kustomization(
        tmp_path / "site", readme_yaml_block("# your kustomization.yaml: sharded, with the")
    )
    assert {o["metadata"].get("namespace") for o in objects} == {"duixwatch"}
    validate_strictly(objects, tmp_path)
    status, lines = crd_check(
        [o for o in objects if o["apiVersion"].startswith(CUSTOM_GROUPS)], tmp_path
    )
    assert status == 0, lines
    assert sorted(lines) == [
        "OK PrometheusRule/duixwatch",
        "OK ServiceMonitor/duixwatch",
    ], lines
    statefulset = workload(objects)
    assert statefulset["kind"] == "StatefulSet"
    assert statefulset["spec"] == workload(render(SHARDED))["spec"]
    service, monitor = one(objects, "Service"), one(objects, "ServiceMonitor")
    assert service["spec"]["clusterIP"] == "None"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


# --------------------------------------------------------------------------------------- README


def test_the_readme_section_shows_the_checked_commands_and_the_performance_figures() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.index("\n## Autoscaling and sharding\n") < readme.index(
        "\n## Operator commands\n"
    )
    section = readme_section()
    assert "\n### Performance\n" in section  # the benchmark's figures close the section
    rendered = {d.relative_to(REPO).as_posix() for d in (*KUSTOMIZE_DIRS, *NESTED)}
    shown = re.findall(r"^\$ kubectl (?:kustomize|apply -n \S+ -k) (\S+)$", section, re.M)
    assert set(shown) <= rendered, set(shown) - rendered
    for directory in (*RECIPES, SHARDED):
        assert f"$ kubectl kustomize {directory.relative_to(REPO).as_posix()}\n" in section
    # The endpoint shown is the one the metrics-api ScaledObject reads.
    (trigger,) = one(render(KEDA), "ScaledObject")["spec"]["triggers"]
    assert f"$ curl -s {trigger['metadata']['url']}\n" in section
    # So are the Prometheus scaler's query and the HPA's External metric.
    assert recipe_queries()["KEDA prometheus scaler"] in section
    (metric,) = one(render(HPA_ADAPTER), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert f"External metric `{metric['external']['metric']['name']}" in section


def test_the_readmes_config_example_is_the_overlays_target_and_passes_check(
    tmp_path: Path,
) -> None:
    block = yaml.safe_load(readme_yaml_block("# duixwatch.yaml: an autoscaling target"))
    assert block["scaling"] == load_yaml(KEDA / "duixwatch.yaml")["scaling"]
    config = load_yaml(BASE / "duixwatch.yaml") | block
    (tmp_path / "duixwatch.yaml").write_text(yaml.safe_dump(config))
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for app in config["apps"]:
        (credentials / app["name"]).write_text(f"placeholder-key-of-{app['name']}\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    result = run([*DUIXWATCH, "check", "-c", tmp_path / "duixwatch.yaml"], env=env, timeout=60)
    assert result.returncode == 0, output(result)


def test_the_readmes_scrape_config_for_the_shards_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load(readme_yaml_block("# scrape_configs of prometheus.yml for the sharded"))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "duixwatch"  # what the rules expect
    (discovery,) = job["dns_sd_configs"]
    service = one(render(SHARDED), "Service")
    assert discovery["names"] == [f"{service['metadata']['name']}.duixwatch.svc.cluster.local"]
    assert discovery["type"] == "A"  # one record per pod of the headless Service
    assert discovery["port"] == service["spec"]["ports"][0]["port"]
    config["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run([require_tool("promtool"), "check", "config", path])
    assert result.returncode == 0, output(result)


# ---------------------------------------------------------------------------------- end to end


def prometheus_query(base: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def gauge(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    (sample,) = [
        s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    ]
    return float(sample.value)


@pytest.mark.timeout(180)
def test_three_shards_with_the_statefulsets_environment_feed_the_prometheus_recipes(
    tmp_path: Path,
) -> None:
    statefulset = workload(render(SHARDED))
    replicas = statefulset["spec"]["replicas"]
    (trigger,) = one(render(KEDA), "ScaledObject")["spec"]["triggers"]
    endpoint = urlsplit(trigger["metadata"]["url"]).path
    queries = {k: v for k, v in recipe_queries().items() if "seriesQuery" not in k}
    with simulator(tmp_path, apps=6, seed=62) as (sim, config):
        apps = config["apps"]
        for count, app in enumerate(apps, start=1):  # 1 + 2 + … + 6 = 21 sessions
            httpx.post(
                f"{sim}/_sim/apps/{app['app_id']}/sessions", json={"count": count}, timeout=5
            ).raise_for_status()
            app["poll_interval_seconds"] = 1
        sessions = len(apps) * (len(apps) + 1) // 2
        config["scaling"] = load_yaml(KEDA / "duixwatch.yaml")["scaling"]
        config["scaling"]["evaluation_interval_seconds"] = 1
        (tmp_path / "duixwatch.yaml").write_text(yaml.safe_dump(config))
        daemon_args: list[str | Path] = [*DUIXWATCH, "run", "-c", tmp_path / "duixwatch.yaml"]

        with ExitStack() as stack:
            daemons: dict[str, str] = {}
            procs = {}
            for name in [f"duixwatch-{i}" for i in range(replicas)] + ["unsharded"]:
                port = free_port()
                env = {
                    **os.environ,
                    "DUIXWATCH_SERVER__LISTEN": f"127.0.0.1:{port}",
                    "DUIXWATCH_STATE__DIR": str(tmp_path / f"state-{name}"),
                }
                if name != "unsharded":  # exactly what the StatefulSet gives the pod `name`
                    pod = pod_environment(statefulset, name)
                    env |= {k: pod[k] for k in SHARDING_ENV}
                procs[name] = stack.enter_context(
                    process(daemon_args, tmp_path / f"{name}.log", env=env)
                )
                daemons[name] = f"127.0.0.1:{port}"
            prom = f"127.0.0.1:{free_port()}"
            shards = [daemons[f"duixwatch-{i}"] for i in range(replicas)]
            (tmp_path / "prometheus.yml").write_text(
                yaml.safe_dump(
                    {
                        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "rule_files": [str(RULES)],
                        "scrape_configs": [
                            {"job_name": "duixwatch", "static_configs": [{"targets": shards}]}
                        ],
                    }
                )
            )
            stack.enter_context(
                process(
                    [
                        require_tool("prometheus"),
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address={prom}",
                    ],
                    tmp_path / "prometheus.log",
                )
            )
            prometheus = f"http://{prom}"
            for name, address in daemons.items():
                eventually(
                    lambda a=address: httpx.get(f"http://{a}/readyz", timeout=1).status_code == 200,
                    timeout=30,
                    what=f"{name} ready",
                )

            # Each pod name gives its shard; together the shards own every app once.
            owned = 0.0
            for i in range(replicas):
                base = f"http://{daemons[f'duixwatch-{i}']}"
                assert gauge(base, "duixwatch_shard_index") == i
                assert gauge(base, "duixwatch_shards") == replicas
                owned += gauge(base, "duixwatch_owned_apps")
            assert owned == len(apps)

            # The unsharded daemon: what KEDA's metrics-api scaler reads, at valueLocation.
            def scaling() -> dict[str, Any] | None:
                response = httpx.get(f"http://{daemons['unsharded']}{endpoint}", timeout=2)
                body: dict[str, Any] = response.json()
                return (
                    body if response.status_code == 200 and body["sessions"] == sessions else None
                )

            body = eventually(scaling, timeout=30, what="the unsharded target's 21 sessions")
            target = the_target()
            assert body[trigger["metadata"]["valueLocation"]] == max(
                target["min_replicas"], math.ceil(sessions / target["sessions_per_replica"])
            )

            # The Prometheus recipes: the fleet's sessions, as one daemon sees them.
            def values(expr: str) -> list[float]:
                return [float(r["value"][1]) for r in prometheus_query(prometheus, expr)]

            for name, expr in queries.items():
                eventually(
                    lambda e=expr: values(e) == [sessions],
                    timeout=40,
                    what=f"{name} = {sessions}: {expr}",
                )

            def shard_alerts() -> list[dict[str, Any]]:
                response = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()
                return [
                    a
                    for a in response["data"]["alerts"]
                    if a["labels"]["alertname"].startswith("DuixwatchShard")
                ]

            eventually(lambda: not shard_alerts(), timeout=20, what="no shard alert")
            assert not shard_alerts()

            # A shard lost: no partial sum for the autoscalers, and the alert is pending.
            lost = procs[f"duixwatch-{replicas - 1}"]
            lost.kill()
            lost.wait(timeout=10)
            for name, expr in queries.items():
                eventually(lambda e=expr: values(e) == [], timeout=30, what=f"{name} empty")
            missing = eventually(
                lambda: [a for a in shard_alerts() if a["state"] in {"pending", "firing"}],
                timeout=30,
                what="DuixwatchShardMissing",
            )
            assert [a["labels"]["alertname"] for a in missing] == ["DuixwatchShardMissing"]
            assert float(missing[0]["value"]) == replicas - 1
