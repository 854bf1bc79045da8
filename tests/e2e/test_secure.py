"""The secured HTTP surface with the real consumers: a real Prometheus scrapes `duixwatch run`
over HTTPS with basic auth and with mutual TLS, and the scrapes with a wrong password or without
a client certificate are refused; a renewed certificate is served without a restart; no
password, hash or key appears in any log or response."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from tests import procs
from tests.ops_support import REPO
from tests.procs import DUIXWATCH, eventually, free_port, process
from tests.tls import CA, Issued
from tests.tools import require_tool

pytestmark = pytest.mark.e2e

PASSWORD = "scrape-Passw0rd-e2e"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(6)).decode()


@contextmanager
def daemon(tmp_path: Path, web: str) -> Iterator[dict[str, Any]]:
    sim_port, http_port = free_port(), free_port()
    config = procs.sim_config(sim_port, apps=2, seed=7)
    for app in config["apps"]:
        app["poll_interval_seconds"] = 1.0
    (tmp_path / "web.yml").write_text(web)
    config["server"] = {"listen": f"127.0.0.1:{http_port}", "web_config_file": "web.yml"}
    config["state"] = {"dir": str(tmp_path / "state")}
    path = tmp_path / "duixwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run(
        [*DUIXWATCH, "check", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    sim = procs.start_sim(sim_port, tmp_path / "sim.log", apps=2, seed=7)
    try:
        with process([*DUIXWATCH, "run", "-c", str(path)], tmp_path / "daemon.log") as d:
            yield {
                "port": http_port,
                "base": f"https://127.0.0.1:{http_port}",
                "daemon": d,
                "check": check.stdout + check.stderr,
            }
    finally:
        sim.kill()
        sim.wait(timeout=10)


@contextmanager
def prometheus(tmp_path: Path, jobs: list[dict[str, Any]]) -> Iterator[str]:
    binary = require_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                "scrape_configs": jobs,
            }
        )
    )
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with process(args, tmp_path / "prometheus.log"):
        yield f"http://127.0.0.1:{port}"


def targets(api: str) -> dict[str, dict[str, Any]] | None:
    """Each job's target, once every job has been scraped at least once."""
    try:
        response = httpx.get(f"{api}/api/v1/targets", timeout=2)
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    found = {t["labels"]["job"]: t for t in response.json()["data"]["activeTargets"]}
    if any(t["health"] == "unknown" for t in found.values()):
        return None
    return found


def job(name: str, target: str, **settings: Any) -> dict[str, Any]:
    return {
        "job_name": name,
        "scheme": "https",
        "static_configs": [{"targets": [target]}],
        **settings,
    }


def readme_job(name: str, target: str, *, ca_file: Path, password_file: Path) -> dict[str, Any]:
    """The README's plain Prometheus scrape config (Securing the endpoints), its files and
    target replaced by the test's: what it shows is what is scraped here."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Securing the endpoints\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("**Prometheus** (a plain scrape config", 1)[1]
    block = block.split("```yaml\n", 1)[1].split("```", 1)[0]
    (readme_job,) = yaml.safe_load(block)["scrape_configs"]
    assert readme_job["job_name"] == "duixwatch"  # what the rules expect
    assert readme_job["scheme"] == "https"
    readme_job["job_name"] = name
    readme_job["tls_config"]["ca_file"] = str(ca_file)
    readme_job["basic_auth"]["password_file"] = str(password_file)
    (static,) = readme_job["static_configs"]
    static["targets"] = [target]
    return dict(readme_job)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path / "ca")


def served_serial(port: int, ca: CA) -> str:
    context = ssl.create_default_context(cafile=ca.cert)
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=5),
        server_hostname="127.0.0.1",
    ) as sock:
        return str(sock.getpeercert()["serialNumber"])


def test_prometheus_scrapes_over_https_with_basic_auth_and_a_wrong_password_is_refused(
    tmp_path: Path, ca: CA
) -> None:
    server = ca.issue("duixwatch.test", sans=("IP:127.0.0.1",))
    (tmp_path / "tls.crt").write_bytes(server.cert.read_bytes())
    (tmp_path / "tls.key").write_bytes(server.key.read_bytes())
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not-the-password")
    web = (
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n"
    )
    with daemon(tmp_path, web) as dx:
        target = f"127.0.0.1:{dx['port']}"
        tls = {"ca_file": str(ca.cert)}
        jobs = [
            readme_job("right", target, ca_file=ca.cert, password_file=password_file),
            job(
                "wrong",
                target,
                tls_config=tls,
                basic_auth={"username": "prometheus", "password_file": str(wrong_file)},
            ),
            job("nobody", target, tls_config=tls),
        ]
        with prometheus(tmp_path, jobs) as api:
            found = eventually(lambda: targets(api), timeout=30, what="every job scraped")
            assert found["right"]["health"] == "up", found["right"]["lastError"]
            for refused in ("wrong", "nobody"):
                assert found[refused]["health"] == "down"
                assert "401" in found[refused]["lastError"], found[refused]["lastError"]
            # the certificate is renewed: the next handshakes get it, no restart, scrapes go on
            before = served_serial(dx["port"], ca)
            renewed = ca.issue("duixwatch.test", sans=("IP:127.0.0.1",))
            (tmp_path / "tls.key.new").write_bytes(renewed.key.read_bytes())
            (tmp_path / "tls.crt.new").write_bytes(renewed.cert.read_bytes())
            (tmp_path / "tls.key.new").replace(tmp_path / "tls.key")
            (tmp_path / "tls.crt.new").replace(tmp_path / "tls.crt")
            after = eventually(
                lambda: (s := served_serial(dx["port"], ca)) != before and s,
                timeout=10,
                what="the renewed certificate served",
            )
            assert after != before
            assert dx["daemon"].poll() is None
            query = httpx.get(
                f"{api}/api/v1/query",
                params={"query": 'up{job="right"}'},
                timeout=5,
            ).json()
            assert query["data"]["result"][0]["value"][1] == "1"
        metrics = httpx.get(
            f"{dx['base']}/metrics",
            verify=ssl.create_default_context(cafile=ca.cert),
            auth=("prometheus", PASSWORD),
            timeout=5,
        ).text
        status = httpx.get(
            f"{dx['base']}/status",
            verify=ssl.create_default_context(cafile=ca.cert),
            auth=("prometheus", PASSWORD),
            timeout=5,
        ).text
        assert 'duixwatch_http_requests_denied_total{reason="unauthorized"}' in metrics
        assert "duixwatch_web_config_last_reload_successful 1.0" in metrics
    logs = (tmp_path / "daemon.log").read_text()
    key_lines = [line for line in renewed.key.read_text().splitlines() if "-----" not in line]
    key_lines += [line for line in server.key.read_text().splitlines() if "-----" not in line]
    for shown in (logs, metrics, status, dx["check"]):
        assert PASSWORD not in shown
        assert HASH not in shown
        assert HASH[7:29] not in shown  # not even the salt
        for line in key_lines:
            assert line not in shown


def test_prometheus_scrapes_with_mutual_tls_and_without_a_client_certificate_is_refused(
    tmp_path: Path, ca: CA
) -> None:
    server = ca.issue("duixwatch.test", sans=("IP:127.0.0.1",))
    client: Issued = ca.issue("prometheus.test")
    web = (
        f"tls_server_config:\n  cert_file: {server.cert}\n  key_file: {server.key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca.cert}\n"
    )
    with daemon(tmp_path, web) as dx:
        target = f"127.0.0.1:{dx['port']}"
        jobs = [
            job(
                "mtls",
                target,
                tls_config={
                    "ca_file": str(ca.cert),
                    "cert_file": str(client.cert),
                    "key_file": str(client.key),
                },
            ),
            job("no-cert", target, tls_config={"ca_file": str(ca.cert)}),
        ]
        with prometheus(tmp_path, jobs) as api:
            found = eventually(lambda: targets(api), timeout=30, what="every job scraped")
            assert found["mtls"]["health"] == "up", found["mtls"]["lastError"]
            assert found["no-cert"]["health"] == "down"
            # refused in the handshake, never at the HTTP level; what Go reports depends on
            # when the server hangs up: a TLS alert, "EOF" or "connection reset by peer"
            error = found["no-cert"]["lastError"]
            assert error, found["no-cert"]
            assert "HTTP status" not in error, error
        # kubelet-style probes over HTTPS without a client certificate cannot get in either
        with pytest.raises(httpx.HTTPError):
            httpx.get(
                f"{dx['base']}/healthz",
                verify=ssl.create_default_context(cafile=ca.cert),
                timeout=5,
            )
