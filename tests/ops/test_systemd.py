"""deploy/systemd/: the unit passes ``systemd-analyze verify`` silently and ``systemd-analyze
security`` at exposure <= 2.0, its credentials and environment file fit the daemon's config, and
the daemon really speaks the sd_notify protocol that ``Type=notify`` relies on."""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import signal
import socket
from collections import defaultdict
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from tests.ops_support import (
    DEPLOY,
    DUIXWATCH,
    REPO,
    eventually,
    free_port,
    load_yaml,
    output,
    process,
    run,
    simulator,
)
from tests.tls import CA
from tests.tools import require_tool

UNIT = DEPLOY / "systemd" / "duixwatch.service"
ENV_FILE = DEPLOY / "systemd" / "duixwatch.env"
MAX_EXPOSURE = 2.0


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """``Section.Key`` -> every value assigned to it, in order (keys may repeat in a unit)."""
    settings: dict[str, list[str]] = defaultdict(list)
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings[f"{section}.{key.strip()}"].append(value.strip())
    return settings


def readme_systemd_commands() -> list[str]:
    """The root shell commands of the README's systemd section (its ```console block)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### systemd", 1)[1].split("\n### ", 1)[0]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    return [line[2:].split("  #", 1)[0].strip() for line in block.splitlines()]


@pytest.fixture
def installed_root(tmp_path: Path) -> Path:
    """A scratch file-system root set up by the README's own install commands (every absolute
    path moved under the root), plus the host's systemd units (sysinit.target …) so that the
    unit's dependencies resolve. The virtualenv is a stub: verify only checks that ExecStart
    names an executable."""
    root = tmp_path / "root"
    for directory in ("etc/systemd/system", "opt/duixwatch/bin", "bin"):
        (root / directory).mkdir(parents=True)
    ran = []
    for command in readme_systemd_commands():
        for part in command.split("&&"):
            args = shlex.split(part)
            if args and args[0] == "install":
                args = [str(root) + a if a.startswith("/") else a for a in args]
                result = run(args, cwd=REPO)
                assert result.returncode == 0, output(result)
                ran.append(args[-1])
            elif args and args[0] == "(umask":  # the key file: one per LoadCredential= line
                for line in unit_settings()["Service.LoadCredential"]:
                    key = Path(str(root) + line.split(":", 1)[1])
                    key.write_text("a-key\n")
                    key.chmod(0o600)
    assert len(ran) >= 5, f"the README's install commands: {ran}"
    daemon = root / "opt/duixwatch/bin/duixwatch"
    daemon.write_text("#!/bin/sh\n")
    daemon.chmod(0o755)
    shutil.copy(require_tool("kill"), root / "bin/kill")  # ExecReload=/bin/kill
    units = Path("/usr/lib/systemd/system")
    assert units.is_dir(), "the host's systemd units are needed to resolve the dependencies"
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    return root


def test_the_readme_verifies_the_unit_it_installs() -> None:
    commands = readme_systemd_commands()
    assert "systemd-analyze verify /etc/systemd/system/duixwatch.service" in commands
    assert any(c.startswith("python3 -m venv /opt/duixwatch") for c in commands)


@pytest.mark.e2e
def test_systemd_analyze_verify_prints_nothing(installed_root: Path) -> None:
    tool = require_tool("systemd-analyze")
    result = run(
        [tool, "verify", f"--root={installed_root}", "/etc/systemd/system/duixwatch.service"]
    )
    assert result.returncode == 0, output(result)
    assert result.stdout == "", output(result)
    assert result.stderr == "", output(result)


@pytest.mark.e2e
def test_systemd_analyze_verify_catches_a_broken_unit(installed_root: Path) -> None:
    """The check above can fail: an unknown key and a missing binary are both reported."""
    tool = require_tool("systemd-analyze")
    unit = installed_root / "etc/systemd/system/duixwatch.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=on-failur\nBogus=1"))
    (installed_root / "opt/duixwatch/bin/duixwatch").unlink()
    result = run(
        [tool, "verify", f"--root={installed_root}", "/etc/systemd/system/duixwatch.service"]
    )
    assert "Bogus" in result.stderr, output(result)
    assert "on-failur" in result.stderr, output(result)
    assert "/opt/duixwatch/bin/duixwatch" in result.stderr, output(result)


@pytest.mark.e2e
def test_systemd_analyze_security_exposure_is_at_most_2(installed_root: Path) -> None:
    tool = require_tool("systemd-analyze")
    result = run(
        [
            tool,
            "security",
            "--offline=yes",
            f"--root={installed_root}",
            "/etc/systemd/system/duixwatch.service",
        ]
    )
    assert result.returncode == 0, output(result)
    match = re.search(r"Overall exposure level for duixwatch\.service: (\d+\.\d+)", result.stdout)
    assert match, output(result)
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{result.stdout}"


def test_the_unit_is_a_sandboxed_notify_service_with_credentials_and_state() -> None:
    s = unit_settings()
    assert s["Service.Type"] == ["notify"]
    assert s["Service.NotifyAccess"] == ["main"]
    assert s["Service.ExecStart"] == [
        "/opt/duixwatch/bin/duixwatch run -c /etc/duixwatch/duixwatch.yaml"
    ]
    assert s["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Service.DynamicUser"] == ["yes"]
    assert s["Service.StateDirectory"] == ["duixwatch"]
    assert s["Service.Restart"] == ["on-failure"]
    assert s["Service.LoadCredential"], "appKeys come in as credentials"
    assert s["Service.EnvironmentFile"] == ["-/etc/duixwatch/duixwatch.env"]
    assert not any(k.endswith(".Environment") for k in s), "no secrets in Environment="


def example_config_for_credentials() -> dict[str, Any]:
    """The example config as the README tells a systemd user to use it: without app_key and
    app_key_file (each key is then $CREDENTIALS_DIRECTORY/<app name>)."""
    config: dict[str, Any] = load_yaml(DEPLOY / "duixwatch.example.yaml")
    for app in config["apps"]:
        app.pop("app_key", None)
        app.pop("app_key_file", None)
    return config


def unit_credentials(tmp_path: Path) -> Path:
    """A credentials directory with a key file for each of the unit's LoadCredential= lines."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for line in unit_settings()["Service.LoadCredential"]:
        (credentials / line.split(":", 1)[0]).write_text("a-key-from-a-credential\n")
    return credentials


def test_the_example_config_runs_under_the_unit_with_keys_from_credentials(
    tmp_path: Path,
) -> None:
    """What the README tells a systemd user to do: drop app_key/app_key_file from the example
    (the key is then $CREDENTIALS_DIRECTORY/<app name>), put one key file per LoadCredential=
    line, load the environment file; `duixwatch check` accepts it."""
    config = example_config_for_credentials()
    path = tmp_path / "duixwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    credentials = unit_credentials(tmp_path)
    ids = [line.split(":", 1)[0] for line in unit_settings()["Service.LoadCredential"]]
    assert sorted(ids) == sorted(app["name"] for app in config["apps"])
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credentials)}
    env["STATE_DIRECTORY"] = str(tmp_path / "state")
    env |= env_file_assignments(commented_too=True)
    result = run([*DUIXWATCH, "check", "-c", path], env=env, timeout=60)
    assert result.returncode == 0, output(result)


def test_the_example_dialog_probe_gets_its_headers_from_the_units_credential(
    tmp_path: Path,
) -> None:
    """The example's commented-out dialog probe reads its secret headers from
    ``headers_file: dialog-headers``, which the unit's commented-out LoadCredential= line puts
    in $CREDENTIALS_DIRECTORY: uncommented together, `duixwatch check` accepts them."""
    (credential,) = [c for c in commented_credentials() if c.startswith("dialog-headers:")]
    name, _, source = credential.partition(":")
    assert source == f"/etc/duixwatch/keys/{name}"
    lines = (DEPLOY / "duixwatch.example.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# dialog_probes:")
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith("#   ")), len(lines)
    )
    block = yaml.safe_load("\n".join(line[2:] for line in lines[start:end]))
    (probe,) = block["dialog_probes"]
    assert probe["headers_file"] == name
    config = example_config_for_credentials()
    config["dialog_probes"] = block["dialog_probes"]
    path = tmp_path / "duixwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    credentials = unit_credentials(tmp_path)
    (credentials / name).write_text("Authorization: Bearer a-token-from-a-credential\n")
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credentials)}
    env["STATE_DIRECTORY"] = str(tmp_path / "state")
    result = run([*DUIXWATCH, "check", "-c", path], env=env, timeout=60)
    assert result.returncode == 0, output(result)
    assert "a-token-from-a-credential" not in result.stdout + result.stderr


def commented_credentials() -> list[str]:
    """The ``ID:PATH`` of every commented-out ``#LoadCredential=`` line of the unit."""
    return [
        line[1:].partition("=")[2]
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if line.startswith("#LoadCredential=")
    ]


WEB_CREDENTIALS = ("web-config.yml", "tls.crt", "tls.key")


def readme_web_config() -> str:
    """The README's example web config (Securing the endpoints), which the unit's comment
    points to."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = [
        b.split("```", 1)[0]
        for b in readme.split("```yaml\n")[1:]
        if b.startswith("# web-config.yml")
    ]
    return block


def test_the_units_web_config_credentials_give_a_config_that_passes_check(
    tmp_path: Path,
) -> None:
    """Uncommented together, the unit's web config credentials and the example config's
    commented-out ``web_config_file: ${CREDENTIALS_DIRECTORY}/web-config.yml`` give a daemon
    that `duixwatch check` accepts with HTTPS and basic auth: the web config names tls.crt
    and tls.key relative to itself, so they are read from the credentials directory too."""
    web = [c for c in commented_credentials() if c.split(":", 1)[0] in WEB_CREDENTIALS]
    assert sorted(c.split(":", 1)[0] for c in web) == sorted(WEB_CREDENTIALS)
    for credential in web:
        name, _, source = credential.partition(":")
        assert source == f"/etc/duixwatch/keys/{name}"
    example = (DEPLOY / "duixwatch.example.yaml").read_text(encoding="utf-8")
    commented = "  # web_config_file: ${CREDENTIALS_DIRECTORY}/web-config.yml"
    assert commented in example
    config = example_config_for_credentials()
    config["server"]["web_config_file"] = yaml.safe_load(commented.strip()[2:])["web_config_file"]
    path = tmp_path / "duixwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    credentials = unit_credentials(tmp_path)
    web_config = yaml.safe_load(readme_web_config())
    assert web_config["tls_server_config"]["cert_file"] == "tls.crt"
    assert web_config["tls_server_config"]["key_file"] == "tls.key"
    assert list(web_config["basic_auth_users"]) == ["prometheus"]  # its hash is elided: "…"
    web_config["basic_auth_users"]["prometheus"] = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    (credentials / "web-config.yml").write_text(yaml.safe_dump(web_config))
    server = CA(tmp_path / "ca").issue("duixwatch.example.internal")
    shutil.copy(server.cert, credentials / "tls.crt")
    shutil.copy(server.key, credentials / "tls.key")
    env = {"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credentials)}
    env["STATE_DIRECTORY"] = str(tmp_path / "state")
    result = run([*DUIXWATCH, "check", "-c", path], env=env, timeout=60)
    assert result.returncode == 0, output(result)
    assert str(credentials / "web-config.yml") in result.stdout, output(result)
    assert "TLS" in result.stdout, output(result)


@pytest.mark.e2e
def test_the_unit_with_its_web_config_credentials_uncommented_verifies(
    installed_root: Path,
) -> None:
    tool = require_tool("systemd-analyze")
    unit = installed_root / "etc/systemd/system/duixwatch.service"
    text = unit.read_text()
    for name in WEB_CREDENTIALS:
        line = f"LoadCredential={name}:/etc/duixwatch/keys/{name}"
        assert f"#{line}\n" in text
        text = text.replace(f"#{line}\n", f"{line}\n")
        source = installed_root / f"etc/duixwatch/keys/{name}"
        source.write_text("a credential\n")
        source.chmod(0o600)
    unit.write_text(text)
    result = run(
        [tool, "verify", f"--root={installed_root}", "/etc/systemd/system/duixwatch.service"]
    )
    assert result.returncode == 0, output(result)
    assert result.stdout == "", output(result)
    assert result.stderr == "", output(result)


def env_file_assignments(*, commented_too: bool) -> dict[str, str]:
    """The VAR=value lines of duixwatch.env (and, optionally, of its commented-out examples)."""
    found: dict[str, str] = {}
    for raw in ENV_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if commented_too and re.match(r"#[A-Z_]+=", line):
            line = line[1:]
        if re.match(r"[A-Z_][A-Z0-9_]*=", line):
            key, _, value = line.partition("=")
            found[key] = value
    return found


def test_the_environment_file_holds_no_secret() -> None:
    names = env_file_assignments(commented_too=True)
    assert names, "the example sets or shows at least one variable"
    for name in names:
        assert not re.search(r"KEY|TOKEN|SECRET|PASSWORD", name), name


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_the_daemon_tells_systemd_ready_reloading_and_stopping(tmp_path: Path) -> None:
    """Type=notify works only if the daemon says READY=1 once it serves, RELOADING=1 then
    READY=1 around a SIGHUP, and STOPPING=1 on SIGTERM: a datagram socket plays systemd."""
    with simulator(tmp_path, apps=2, seed=7) as (_, config):
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        for app in config["apps"]:
            (credentials / app["name"]).write_text(app.pop("app_key") + "\n")
            app["poll_interval_seconds"] = 1
        config["server"] = {"listen": f"127.0.0.1:{free_port()}"}
        config["state"] = {"dir": "${STATE_DIRECTORY}"}
        path = tmp_path / "duixwatch.yaml"
        path.write_text(yaml.safe_dump(config))
        notify_path = tmp_path / "notify.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(notify_path))
            sock.settimeout(0.2)
            env = {
                "PATH": "/usr/bin:/bin",
                "NOTIFY_SOCKET": str(notify_path),
                "CREDENTIALS_DIRECTORY": str(credentials),
                "STATE_DIRECTORY": str(tmp_path / "state"),
            }
            received: list[str] = []

            def message(prefix: str) -> str | None:
                with contextlib.suppress(TimeoutError):
                    received.append(sock.recv(4096).decode())
                return next((m for m in received if m.startswith(prefix)), None)

            log = tmp_path / "daemon.log"
            with process([*DUIXWATCH, "run", "-c", path], log, env=env) as daemon:
                ready = eventually(lambda: message("READY=1"), timeout=30, what="READY=1")
                assert "STATUS=" in ready
                received.clear()
                daemon.send_signal(signal.SIGHUP)
                eventually(lambda: message("RELOADING=1"), timeout=15, what="RELOADING=1")
                eventually(lambda: message("READY=1"), timeout=15, what="READY=1 again")
                received.clear()
                daemon.send_signal(signal.SIGTERM)
                eventually(lambda: message("STOPPING=1"), timeout=15, what="STOPPING=1")
                assert daemon.wait(timeout=15) == 0, log.read_text()
