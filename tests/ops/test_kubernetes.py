"""deploy/kubernetes/: every kustomization renders with ``kubectl kustomize`` and validates with
``kubernetes-validate --strict``; the prometheus-operator kinds validate against the operator's
published schemas (an npm package); the PrometheusRule is the rules file, generated; and the
rendered objects hold the promises of README.md → Deployment → Kubernetes."""

from __future__ import annotations

import base64
import json
import runpy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.ops_support import (
    DEPLOY,
    DUIXWATCH,
    KUSTOMIZE_DIRS,
    REPO,
    RULES,
    load_yaml,
    npm_dir,
    output,
    run,
    venv_tool,
)
from tests.tools import require_tool

pytestmark = pytest.mark.e2e

OPERATOR_OVERLAY = DEPLOY / "kubernetes" / "overlays" / "prometheus-operator"
#: The prometheus-operator overlay over HTTPS with basic auth (components/https).
HTTPS_OVERLAY = DEPLOY / "kubernetes" / "overlays" / "https"
#: The overlays with the Prometheus Operator's kinds.
OPERATOR_OVERLAYS = (OPERATOR_OVERLAY, HTTPS_OVERLAY)
OPERATOR_GROUP = "monitoring.coreos.com/"
#: API groups of custom resources, which kubernetes-validate has no schema for: each is validated
#: against its project's published schemas (here, and in tests/ops/test_scaling.py for KEDA's).
CUSTOM_GROUPS = (OPERATOR_GROUP, "keda.sh/")
#: Kubernetes versions the manifests are validated against: the oldest we claim, and the newest
#: kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

_rendered: dict[Path, list[dict[str, Any]]] = {}


def render(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR`` as objects (cached: every test of a directory shares it)."""
    if directory not in _rendered:
        result = run([venv_tool("kubectl"), "kustomize", directory])
        assert result.returncode == 0, output(result)
        _rendered[directory] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return _rendered[directory]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def app_keys(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The Secret of appKeys (an overlay may add others, e.g. components/https)."""
    (found,) = [
        o
        for o in objects
        if o["kind"] == "Secret" and o["metadata"]["name"].startswith("duixwatch-app-keys")
    ]
    return found


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """duixwatch's pod controller: the base's Deployment, or the sharded overlay's StatefulSet
    (an overlay may hold other workloads, e.g. the keda overlay's example backend)."""
    (found,) = [
        o
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet"} and o["metadata"]["name"] == "duixwatch"
    ]
    return found


def ids(directory: Path) -> str:
    return str(directory.relative_to(DEPLOY / "kubernetes"))


@pytest.mark.parametrize("directory", KUSTOMIZE_DIRS, ids=ids)
def test_renders_and_validates_strictly(directory: Path, tmp_path: Path) -> None:
    objects = render(directory)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(objects))
    args: list[str | Path] = [venv_tool("kubernetes-validate"), "--strict"]
    for version in KUBERNETES_VERSIONS:
        args += ["-k", version]
    result = run([*args, rendered])
    assert result.returncode == 0, output(result)
    lines = result.stdout.splitlines()
    core = [o for o in objects if not o["apiVersion"].startswith(CUSTOM_GROUPS)]
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    assert len(passed) == len(core) * len(KUBERNETES_VERSIONS), result.stdout
    # The only objects without a Kubernetes schema are the custom resources (validated against
    # their projects' schemas: the operator's below, KEDA's in ops/test_scaling.py).
    for line in lines:
        if line.startswith("WARN"):
            assert any(f"api version {g}" in line for g in CUSTOM_GROUPS), line
        else:
            assert line.startswith("INFO"), line


@pytest.mark.parametrize("directory", OPERATOR_OVERLAYS, ids=ids)
def test_the_operator_kinds_validate_against_the_operators_published_schemas(
    directory: Path, tmp_path: Path
) -> None:
    """@kubernetes-models/prometheus-operator ships the operator's schemas twice: as JSON-schema
    validators (types, patterns, required fields) and as TypeScript types, which catch what the
    schemas let through: unknown fields (a typo like `scrapeTimout` would be dropped silently)."""
    packages = npm_dir("crd-check")
    custom = [o for o in render(directory) if o["apiVersion"].startswith(OPERATOR_GROUP)]
    assert sorted(o["kind"] for o in custom) == ["PrometheusRule", "ServiceMonitor"]
    node = require_tool("node")
    (tmp_path / "node_modules").symlink_to(packages / "node_modules")
    validator = tmp_path / "validate.mjs"
    validator.write_text((DEPLOY / "kubernetes" / "crd-check" / "validate.mjs").read_text())
    result = run([node, validator], stdin=json.dumps(custom), cwd=tmp_path)
    assert result.returncode == 0, output(result)
    assert sorted(result.stdout.split("\n")[:-1]) == [
        "OK PrometheusRule/duixwatch",
        "OK ServiceMonitor/duixwatch",
    ], output(result)

    module = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1"
    lines = [f'import type {{ I{k} }} from "{module}/{k}";' for k in {o["kind"] for o in custom}]
    lines += [
        f"export const r{i} = {json.dumps(o, indent=1)} satisfies I{o['kind']};"
        for i, o in enumerate(custom)
    ]
    (tmp_path / "crds.ts").write_text("\n".join(lines) + "\n")
    (tmp_path / "tsconfig.json").write_text(json.dumps(TSCONFIG | {"files": ["crds.ts"]}))
    result = run([packages / "node_modules/.bin/tsc", "-p", tmp_path], cwd=tmp_path)
    assert result.returncode == 0, output(result)


TSCONFIG: dict[str, Any] = {
    "compilerOptions": {
        "strict": True,
        "noEmit": True,
        "target": "es2022",
        "module": "esnext",
        "moduleResolution": "bundler",
        "skipLibCheck": True,
        "types": [],
    }
}


def test_the_schema_check_rejects_a_broken_servicemonitor(tmp_path: Path) -> None:
    """The check above can fail: a malformed interval is caught by the schema."""
    packages = npm_dir("crd-check")
    monitor = one(render(OPERATOR_OVERLAY), "ServiceMonitor")
    monitor = json.loads(json.dumps(monitor))
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    (tmp_path / "node_modules").symlink_to(packages / "node_modules")
    validator = tmp_path / "validate.mjs"
    validator.write_text((DEPLOY / "kubernetes" / "crd-check" / "validate.mjs").read_text())
    result = run([require_tool("node"), validator], stdin=json.dumps([monitor]), cwd=tmp_path)
    assert result.returncode == 1, output(result)
    assert "INVALID ServiceMonitor/duixwatch" in result.stdout


def test_the_prometheusrule_is_generated_from_the_rules_file() -> None:
    generator = runpy.run_path(str(OPERATOR_OVERLAY / "generate.py"))
    expected = generator["render"](RULES.read_text(encoding="utf-8"))
    committed = (OPERATOR_OVERLAY / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == expected, (
        "prometheusrule.yaml is out of date: run "
        "python3 deploy/kubernetes/overlays/prometheus-operator/generate.py"
    )
    rule = one(render(OPERATOR_OVERLAY), "PrometheusRule")
    assert rule["spec"] == load_yaml(RULES)


def test_the_operators_copy_of_the_rules_passes_promtool(tmp_path: Path) -> None:
    rule = one(render(OPERATOR_OVERLAY), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = run([require_tool("promtool"), "check", "rules", path])
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("directory", OPERATOR_OVERLAYS, ids=ids)
def test_the_servicemonitor_scrapes_the_service_as_job_duixwatch(directory: Path) -> None:
    objects = render(directory)
    service, monitor = one(objects, "Service"), one(objects, "ServiceMonitor")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["metadata"]["name"] == "duixwatch"  # the job label the rules expect
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


@pytest.mark.parametrize("directory", KUSTOMIZE_DIRS, ids=ids)
def test_the_deployment_is_hardened_and_probed(directory: Path) -> None:
    objects = render(directory)
    deployment = workload(objects)
    spec = deployment["spec"]
    if deployment["kind"] == "Deployment":
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
    # else: the sharded StatefulSet's replicas and update strategy, ops/test_scaling.py
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["state"]
    assert mounts["state"]["mountPath"] == env["STATE_DIRECTORY"]
    assert mounts["app-keys"]["mountPath"] == env["CREDENTIALS_DIRECTORY"]
    config = one(objects, "ConfigMap")
    assert volumes["config"]["configMap"]["name"] == config["metadata"]["name"]
    secret = app_keys(objects)
    assert volumes["app-keys"]["secret"]["secretName"] == secret["metadata"]["name"]
    port = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
    listen = yaml.safe_load(config["data"]["duixwatch.yaml"])["server"]["listen"]
    assert listen.endswith(f":{port}")


@pytest.mark.parametrize("directory", KUSTOMIZE_DIRS, ids=ids)
def test_the_network_policy_lets_in_metrics_and_out_dns_and_https_only(directory: Path) -> None:
    objects = render(directory)
    policy = one(objects, "NetworkPolicy")["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    ingress_ports = [p["port"] for rule in policy["ingress"] for p in rule["ports"]]
    assert ingress_ports == ["metrics"]
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP")}
    assert all("to" not in rule for rule in policy["egress"])  # the DUIX platform is public
    pod_labels = workload(objects)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    budget = one(objects, "PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_rendered_config_and_secret_pass_duixwatch_check(tmp_path: Path) -> None:
    """The pod's view: the ConfigMap's file, the Secret's files in $CREDENTIALS_DIRECTORY (one
    per app, named after it), $STATE_DIRECTORY; `duixwatch check` accepts it."""
    objects = render(DEPLOY / "kubernetes" / "base")
    config = one(objects, "ConfigMap")["data"]["duixwatch.yaml"]
    (tmp_path / "duixwatch.yaml").write_text(config)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in one(objects, "Secret")["data"].items():
        (credentials / name).write_bytes(base64.b64decode(value))
    apps = [a["name"] for a in yaml.safe_load(config)["apps"]]
    assert sorted(apps) == sorted(p.name for p in credentials.iterdir())
    env = {
        "PATH": "/usr/bin:/bin",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    result = run([*DUIXWATCH, "check", "-c", tmp_path / "duixwatch.yaml"], env=env, timeout=60)
    assert result.returncode == 0, output(result)


def commented_dialog_probes() -> list[dict[str, Any]]:
    """The base config's commented-out ``dialog_probes:`` example, uncommented."""
    lines = (DEPLOY / "kubernetes" / "base" / "duixwatch.yaml").read_text().splitlines()
    start = lines.index("# dialog_probes:")
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith("#   ")), len(lines)
    )
    probes: list[dict[str, Any]] = yaml.safe_load("\n".join(line[2:] for line in lines[start:end]))[
        "dialog_probes"
    ]
    assert probes
    return probes


@pytest.mark.parametrize("directory", KUSTOMIZE_DIRS, ids=ids)
def test_the_network_policy_lets_the_example_dialog_probes_out(directory: Path) -> None:
    egress = one(render(directory), "NetworkPolicy")["spec"]["egress"]
    open_ports = {p["port"] for rule in egress if "to" not in rule for p in rule["ports"]}
    for probe in commented_dialog_probes():
        url = urlsplit(probe["url"])
        port = url.port or {"https": 443, "http": 80}[url.scheme]
        assert port in open_ports, f"{probe['name']}: egress to port {port}"


def test_the_bases_dialog_probe_example_passes_duixwatch_check(tmp_path: Path) -> None:
    """Uncommented, with its headers file added to the Secret as the comment says, the base's
    dialog probe passes `duixwatch check` in the pod's view (see the test above)."""
    objects = render(DEPLOY / "kubernetes" / "base")
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["duixwatch.yaml"])
    config["dialog_probes"] = commented_dialog_probes()
    (tmp_path / "duixwatch.yaml").write_text(yaml.safe_dump(config))
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in one(objects, "Secret")["data"].items():
        (credentials / name).write_bytes(base64.b64decode(value))
    for probe in config["dialog_probes"]:
        if "headers_file" in probe:
            (credentials / probe["headers_file"]).write_text("Authorization: Bearer zz-token\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    result = run([*DUIXWATCH, "check", "-c", tmp_path / "duixwatch.yaml"], env=env, timeout=60)
    assert result.returncode == 0, output(result)
    assert "zz-token" not in result.stdout + result.stderr


def test_the_readme_commands_are_the_ones_checked_here() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Kubernetes", 1)[1].split("\n## ", 1)[0]
    for command in (
        "kubectl kustomize deploy/kubernetes/base",
        "kubectl kustomize deploy/kubernetes/overlays/prometheus-operator",
        "kubernetes-validate --strict",
        "generate.py",
    ):
        assert command in section, command


def readme_yaml_block(first_line: str) -> str:
    """The ```yaml block of the README that starts with ``first_line``."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in readme.split("```yaml\n")[1:]]
    (block,) = [b for b in blocks if b.startswith(first_line)]
    return block


def test_the_readme_overlay_example_renders_validates_and_replaces_config_keys_and_image(
    tmp_path: Path,
) -> None:
    """The README's own-overlay example, beside a checkout called duixwatch/, as documented."""
    (tmp_path / "duixwatch").symlink_to(REPO)
    site = tmp_path / "site"
    (site / "keys").mkdir(parents=True)
    (site / "kustomization.yaml").write_text(readme_yaml_block("# kustomization.yaml"))
    config = load_yaml(DEPLOY / "kubernetes" / "base" / "duixwatch.yaml")
    config["apps"] = [
        {"app_id": "1377185422953811968", "name": "frontdesk"},
        {"app_id": "1377185422953811970", "name": "support"},
    ]
    (site / "duixwatch.yaml").write_text(yaml.safe_dump(config))
    for app in ("frontdesk", "support"):
        (site / "keys" / app).write_text(f"real-key-of-{app}\n")
    result = run([venv_tool("kubectl"), "kustomize", site])
    assert result.returncode == 0, output(result)
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert {o["metadata"].get("namespace") for o in objects} == {"duixwatch"}
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.internal.example/duixwatch:0.1.0"
    rendered_config = yaml.safe_load(one(objects, "ConfigMap")["data"]["duixwatch.yaml"])
    assert [a["name"] for a in rendered_config["apps"]] == ["frontdesk", "support"]
    secret = one(objects, "Secret")["data"]
    assert base64.b64decode(secret["support"]) == b"real-key-of-support\n"
    assert "lobby-kiosk" not in secret, "behavior: replace drops the example's placeholders"
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(result.stdout)
    validated = run([venv_tool("kubernetes-validate"), "--strict", rendered])
    assert validated.returncode == 0, output(validated)
