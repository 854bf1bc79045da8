"""config: ``dialog_probes`` — defaults, secrets kept out of errors and logs, headers files,
TLS files checked at load."""

from __future__ import annotations

import json
from pathlib import Path

from duixwatch.config import mask
from tests.config.support import MINIMAL, load, problems
from tests.tls import CA

TOKEN = "tok-9f8e7d-never-print-me"


def test_a_probe_has_the_documented_defaults(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        MINIMAL + "dialog_probes:\n  - name: bot\n    url: https://bot.example.com/answer\n",
    )
    (probe,) = cfg.dialog_probes
    assert probe.mode == "auto"
    assert probe.interval_seconds == 60
    assert probe.budget_seconds == 20
    assert probe.timeout == 20  # timeout_seconds defaults to the budget
    assert probe.questions == ("Hello",)
    assert probe.tls.insecure_skip_verify is False


def test_errors_name_the_line_and_never_quote_the_url_or_a_header(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        MINIMAL
        + "dialog_probes:\n"
        + "  - name: bot\n"
        + f"    url: ftp://{TOKEN}@host/\n"
        + "    mode: sometimes\n"
        + f"    headers: {{'Bad Name': '{TOKEN}', X-Ok: \"a\\nb{TOKEN}\"}}\n"
        + "  - name: bot\n"
        + "    url: https://bot.example.com/\n",
    )
    text = "\n".join(found)
    assert TOKEN not in text
    assert "F:6: dialog_probes[0].url: must be an http:// or https:// URL with a host" in found
    assert any(line.startswith("F:7: dialog_probes[0].mode:") for line in found)
    assert any(line.startswith("F:8: dialog_probes[0].headers") for line in found)
    assert "F:9: dialog_probes[1].name: duplicate probe name (also dialog_probes[0])" in found


def test_the_probe_name_is_a_label(tmp_path: Path) -> None:
    found = problems(
        tmp_path, MINIMAL + "dialog_probes:\n  - {name: Bot_1, url: 'https://b.example/'}\n"
    )
    assert any(
        "dialog_probes[0].name" in line and "not a valid probe name" in line for line in found
    )


def test_a_headers_file_is_read_next_to_the_config_or_from_credentials(tmp_path: Path) -> None:
    (tmp_path / "dialog-headers").write_text(
        f"# the bot's token\nAuthorization: Bearer {TOKEN}\n\nX-Tenant: acme\n"
    )
    cfg = load(
        tmp_path,
        MINIMAL
        + "dialog_probes:\n  - name: bot\n    url: https://b.example/\n"
        + "    headers: {X-Probe: '1'}\n    headers_file: dialog-headers\n",
    )
    probe = cfg.dialog_probes[0]
    assert probe.headers == {"X-Probe": "1", "Authorization": f"Bearer {TOKEN}", "X-Tenant": "acme"}
    assert probe.headers_file == tmp_path / "dialog-headers"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "dialog-headers").write_text("Authorization: Bearer other\n")
    cfg = load(
        tmp_path,
        MINIMAL + "dialog_probes:\n"
        "  - {name: bot, url: 'https://b.example/', headers_file: dialog-headers}\n",
        CREDENTIALS_DIRECTORY=str(creds),
    )
    assert cfg.dialog_probes[0].headers == {"Authorization": "Bearer other"}


def test_a_bad_headers_file_names_its_own_line_not_the_value(tmp_path: Path) -> None:
    probe = "dialog_probes:\n  - {name: bot, url: 'https://b.example/', headers_file: h}\n"
    (tmp_path / "h").write_text(f"Authorization: Bearer ok\n{TOKEN}\n")
    found = "\n".join(problems(tmp_path, MINIMAL + probe))
    assert TOKEN not in found
    assert f"{tmp_path / 'h'}:2: expected 'Name: value'" in found
    (tmp_path / "h").write_text("Authorization: Bearer ok\nauthorization: twice\n")
    found = "\n".join(problems(tmp_path, MINIMAL + probe))
    assert f"{tmp_path / 'h'}:2: 'authorization' is set twice" in found
    missing = problems(
        tmp_path,
        MINIMAL
        + "dialog_probes:\n  - {name: bot, url: 'https://b.example/', headers_file: nope}\n",
    )
    assert any("cannot read the headers file" in line for line in missing)


def test_tls_files_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    found = problems(
        tmp_path,
        MINIMAL + "dialog_probes:\n  - name: bot\n    url: https://b.example/\n"
        "    tls: {ca_file: not-a-ca.pem}\n",
    )
    assert any(
        line.startswith("F:") and "dialog_probes[0].tls: cannot load" in line for line in found
    )
    found = problems(
        tmp_path,
        MINIMAL
        + "dialog_probes:\n  - {name: bot, url: 'https://b.example/', tls: {key_file: k}}\n",
    )
    assert any("key_file needs cert_file" in line for line in found)


def test_real_certificate_files_load(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    ca.issue("duixwatch-probe").pem.rename(tmp_path / "client.pem")
    cfg = load(
        tmp_path,
        MINIMAL + "dialog_probes:\n  - {name: bot, url: 'https://b.example/', "
        "tls: {ca_file: ca.pem, cert_file: client.pem}}\n",
    )
    assert cfg.dialog_probes[0].tls.ca_file == tmp_path / "ca.pem"
    assert cfg.dialog_probes[0].tls.ssl_context().verify_mode.name == "CERT_REQUIRED"


def test_the_masked_config_hides_the_url_path_and_header_values(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        MINIMAL
        + "dialog_probes:\n  - name: bot\n"
        + f"    url: https://bot.example.com/hook/{TOKEN}?sig={TOKEN}\n"
        + f"    headers: {{Authorization: 'Bearer {TOKEN}'}}\n",
    )
    shown = json.dumps(mask(cfg))
    assert TOKEN not in shown
    assert TOKEN not in repr(cfg.dialog_probes[0])
    assert "https://bot.example.com/**********" in shown
    assert '"Authorization": "**********"' in shown
