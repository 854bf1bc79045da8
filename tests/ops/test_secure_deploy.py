"""The Kubernetes kit over HTTPS (README.md → Securing the endpoints): components/https and the
https and keda-https overlays mount the web config and the certificate, probe over HTTPS, and
point the ServiceMonitor and KEDA's TriggerAuthentication at the Secrets they create; and the
pod they describe, given a certificate made here, serves its probes without a password and
/metrics only to the ServiceMonitor's credentials, with a certificate for its serverName.
(Schemas: ops/test_kubernetes.py and ops/test_scaling.py validate these overlays too.)"""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from tests.ops.test_kubernetes import app_keys, one, render, workload
from tests.ops_support import DEPLOY, DUIXWATCH, eventually, free_port, output, process, run
from tests.tls import CA

pytestmark = pytest.mark.e2e

KUBERNETES = DEPLOY / "kubernetes"
COMPONENT = KUBERNETES / "components" / "https"
HTTPS = KUBERNETES / "overlays" / "https"
KEDA = KUBERNETES / "overlays" / "keda"
KEDA_HTTPS = KUBERNETES / "overlays" / "keda-https"
#: The namespace the overlays' comments apply them to (kubectl apply -n duixwatch).
NAMESPACE = "duixwatch"
#: The Secret the operator brings (cert-manager's keys): the kit refers to it, never creates it.
TLS_SECRET = "duixwatch-tls"
WEB_ENV = "DUIXWATCH_SERVER__WEB_CONFIG_FILE"


def secret(objects: list[dict[str, Any]], name: str) -> dict[str, bytes]:
    (found,) = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name]
    return {k: base64.b64decode(v) for k, v in found["data"].items()}


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = workload(objects)["spec"]["template"]["spec"]["containers"]
    return dict(found)


def web_volume(objects: list[dict[str, Any]]) -> tuple[str, dict[str, list[str]]]:
    """Where the web volume is mounted, and secret name -> the keys it projects there."""
    pod = workload(objects)["spec"]["template"]["spec"]
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["name"] == "web"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "web"]
    projected = {
        s["secret"]["name"]: [item["key"] for item in s["secret"]["items"]]
        for s in volume["projected"]["sources"]
    }
    for source in volume["projected"]["sources"]:
        assert all(item["key"] == item["path"] for item in source["secret"]["items"])
    return mount["mountPath"], projected


@pytest.mark.parametrize("directory", [HTTPS, KEDA_HTTPS], ids=lambda d: d.name)
def test_the_pod_reads_the_web_config_beside_the_certificate_and_probes_over_https(
    directory: Path,
) -> None:
    objects = render(directory)
    c = container(objects)
    mount, projected = web_volume(objects)
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env[WEB_ENV] == f"{mount}/web-config.yml"
    assert projected == {
        "duixwatch-web": ["web-config.yml"],
        TLS_SECRET: ["tls.crt", "tls.key", "ca.crt"],
    }
    assert "web-config.yml" in secret(objects, "duixwatch-web")
    assert not [o for o in objects if o["metadata"]["name"] == TLS_SECRET]
    web = yaml.safe_load(secret(objects, "duixwatch-web")["web-config.yml"])
    tls = web["tls_server_config"]
    assert (tls["cert_file"], tls["key_file"]) == ("tls.crt", "tls.key")  # beside it
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS", probe
    annotations = workload(objects)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"
    # Only duixwatch's workload is changed: the keda overlay's example backend is not.
    others = [o for o in objects if o["kind"] == "Deployment" and o is not workload(objects)]
    for other in others:
        assert "duixwatch" not in str(other["metadata"].get("labels", {}))
        assert WEB_ENV not in str(other)


def test_the_example_scrape_password_matches_the_example_web_configs_hash() -> None:
    objects = render(HTTPS)
    auth = secret(objects, "duixwatch-scrape-auth")
    users = yaml.safe_load(secret(objects, "duixwatch-web")["web-config.yml"])["basic_auth_users"]
    user = auth["username"].decode()
    assert not auth["password"].endswith(b"\n"), "a newline would be part of the password"
    assert bcrypt.checkpw(auth["password"], users[user].encode())
    assert (COMPONENT / "scrape-auth.example" / "password").read_bytes() == auth["password"]


def test_the_servicemonitor_scrapes_https_with_the_ca_name_and_password_the_kit_provides() -> None:
    objects = render(HTTPS)
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    tls = endpoint["tlsConfig"]
    assert tls["ca"] == {"secret": {"name": TLS_SECRET, "key": "ca.crt"}}
    assert "insecureSkipVerify" not in tls
    service = one(objects, "Service")["metadata"]["name"]
    assert tls["serverName"] == f"{service}.{NAMESPACE}.svc"
    auth = endpoint["basicAuth"]
    keys = secret(objects, auth["username"]["name"])
    assert auth["username"]["name"] == auth["password"]["name"] == "duixwatch-scrape-auth"
    assert {auth["username"]["key"], auth["password"]["key"]} <= keys.keys()


def test_kedas_trigger_reads_the_same_endpoint_over_https_with_the_scrape_password() -> None:
    plain = one(render(KEDA), "ScaledObject")["spec"]["triggers"][0]
    objects = render(KEDA_HTTPS)
    (trigger,) = one(objects, "ScaledObject")["spec"]["triggers"]
    assert trigger["metadata"]["url"] == plain["metadata"]["url"].replace("http://", "https://")
    host = trigger["metadata"]["url"].split("/")[2].split(":")[0]
    assert host == f"{one(objects, 'Service')['metadata']['name']}.{NAMESPACE}.svc"
    assert trigger["metadata"]["authMode"] == "basic"
    assert "unsafeSsl" not in trigger["metadata"]
    auth = one(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert refs.keys() == {"username", "password"}
    for ref in refs.values():
        assert ref["key"] in secret(objects, ref["name"])


@pytest.mark.timeout(120)
def test_the_rendered_pod_serves_probes_openly_and_metrics_to_the_scrape_password_only(
    tmp_path: Path,
) -> None:
    """The pod's view of the https overlay, with duixwatch-tls made here for the
    ServiceMonitor's serverName: `duixwatch check` accepts it, and `duixwatch run` answers the
    kubelet's probes without a password, /metrics with the scrape Secret's password only, over
    a certificate that verifies for serverName."""
    objects = render(HTTPS)
    (tmp_path / "duixwatch.yaml").write_text(one(objects, "ConfigMap")["data"]["duixwatch.yaml"])
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, value in secret(objects, app_keys(objects)["metadata"]["name"]).items():
        (credentials / name).write_bytes(value)
    web = tmp_path / "web"
    web.mkdir()
    (web / "web-config.yml").write_bytes(secret(objects, "duixwatch-web")["web-config.yml"])
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    server_name = endpoint["tlsConfig"]["serverName"]
    ca = CA(tmp_path / "ca")
    issued = ca.issue(server_name, sans=("IP:127.0.0.1",))
    shutil.copy(issued.cert, web / "tls.crt")
    shutil.copy(issued.key, web / "tls.key")
    shutil.copy(ca.cert, web / "ca.crt")
    mount, _ = web_volume(objects)
    env_of_pod = {e["name"]: e["value"] for e in container(objects)["env"]}
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STATE_DIRECTORY": str(tmp_path / "state"),
        WEB_ENV: env_of_pod[WEB_ENV].replace(mount, str(web)),
        # Loopback only: the listen address and a DUIX that refuses (polls fail; the surface
        # is what is tested).
        "DUIXWATCH_SERVER__LISTEN": f"127.0.0.1:{port}",
        "DUIXWATCH_DUIX__BASE_URL": f"http://127.0.0.1:{free_port()}",
    }
    config = tmp_path / "duixwatch.yaml"
    check = run([*DUIXWATCH, "check", "-c", config], env=env, timeout=60)
    assert check.returncode == 0, output(check)
    assert "TLS (NoClientCert), 1 basic auth user" in check.stdout, output(check)

    auth = secret(objects, "duixwatch-scrape-auth")
    credentials_pair = (auth["username"].decode(), auth["password"].decode())
    base = f"https://127.0.0.1:{port}"
    probe_path = container(objects)["livenessProbe"]["httpGet"]["path"]
    with (
        process([*DUIXWATCH, "run", "-c", config], tmp_path / "daemon.log", env=env),
        httpx.Client(verify=ssl.create_default_context(cafile=str(ca.cert)), timeout=5) as http,
    ):

        def probe() -> httpx.Response | None:
            try:
                return http.get(f"{base}{probe_path}")
            except httpx.TransportError:
                return None

        assert eventually(probe, timeout=30, what="the liveness probe").status_code == 200
        assert http.get(f"{base}/metrics").status_code == 401
        assert http.get(f"{base}/metrics", auth=(credentials_pair[0], "wrong")).status_code == 401
        scraped = http.get(f"{base}/metrics", auth=credentials_pair)
        assert scraped.status_code == 200
        assert "duixwatch_http_tls_enabled 1.0" in scraped.text
        context = ssl.create_default_context(cafile=str(ca.cert))
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=server_name
        ) as tls:
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    log = (tmp_path / "daemon.log").read_text()
    assert credentials_pair[1] not in log
