"""config.web: exporter-toolkit's web config file, read with FILE:LINE errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import pytest

from duixwatch.config import load_config
from duixwatch.config.web import (
    CIPHER_SUITES,
    go_duration,
    load_web_config,
    web_config_warnings,
)
from duixwatch.config.yamllines import ConfigFileError
from tests.tls import CA

#: bcrypt of "s3cret", cost 4 (fast; the format is what matters here)
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return CA(tmp_path_factory.mktemp("ca"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigFileError) as caught:
        load_web_config(path)
    return caught.value.errors


def test_an_empty_file_is_plain_http_without_auth(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path / "web.yml", ""))
    assert not config.tls.enabled
    assert config.basic_auth_users == {}
    assert config.files() == (tmp_path / "web.yml",)


def test_tls_files_are_relative_to_the_web_config_and_load(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("duixwatch.test", sans=("IP:127.0.0.1",))
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "cert.pem").write_bytes(issued.cert.read_bytes())
    (tmp_path / "tls" / "key.pem").write_bytes(issued.key.read_bytes())
    web = write(
        tmp_path / "tls" / "web.yml",
        "tls_server_config:\n"
        "  cert_file: cert.pem\n"
        "  key_file: key.pem\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {ca.cert}\n"
        "  min_version: TLS13\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n",
    )
    config = load_web_config(web)
    assert config.tls.cert_file == tmp_path / "tls" / "cert.pem"
    assert config.tls.client_ca_file == ca.cert  # absolute stays absolute
    context = config.tls.server_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert config.files() == (
        web,
        tmp_path / "tls" / "cert.pem",
        tmp_path / "tls" / "key.pem",
        ca.cert,
    )


def test_every_problem_is_named_with_its_line(tmp_path: Path, ca: CA) -> None:
    web = write(
        tmp_path / "web.yml",
        "tls_server_config:\n"  # 1
        f"  cert_file: {ca.cert}\n"  # 2
        "  client_auth_type: SometimesCert\n"  # 3
        "http_server_config:\n"  # 4
        "  headers:\n"  # 5
        "    X-Frame-Options: allow\n"  # 6
        "basic_auth_users:\n"  # 7
        "  prometheus: hunter2-not-a-hash\n"  # 8
        "rate_limit:\n"  # 9
        "  interval: 1x\n"  # 10
        "tls_server_confg: {}\n",  # 11
    )
    found = problems(web)
    assert found == [
        f"{web}:3: tls_server_config.client_auth_type: "
        "Input should be 'NoClientCert', 'RequestClientCert', 'RequireAnyClientCert', "
        "'RequireClientCert', 'VerifyClientCertIfGiven' or 'RequireAndVerifyClientCert'",
        f"{web}:5: http_server_config.headers: invalid value for X-Frame-Options: "
        "expected one of ['deny', 'sameorigin']",
        f"{web}:7: basic_auth_users: user 'prometheus': the password is not a bcrypt hash "
        "(make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')",
        f"{web}:10: rate_limit.interval: must be a duration such as 1s, 250ms or 1m30s",
        f"{web}:11: tls_server_confg: unknown key; did you mean 'tls_server_config'?",
    ]
    assert not any("hunter2" in line for line in found)


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ("  cert_file: c.pem\n", "missing one of key or key_file"),
        ("  key_file: k.pem\n", "missing one of cert or cert_file"),
        (
            "  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: ca.pem\n",
            "client CA's have been configured without a Client Auth Policy",
        ),
        (
            "  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireAnyClientCert\n",
            "client_auth_type RequireAnyClientCert needs client_ca_file (or client_ca)",
        ),
        (
            "  cert_file: c.pem\n  key_file: k.pem\n  client_allowed_sans: [a]\n",
            "client_allowed_sans needs a client_auth_type that asks for one",
        ),
        (
            "  cert_file: c.pem\n  key_file: k.pem\n  min_version: TLS13\n  max_version: TLS12\n",
            "min_version TLS13 is above max_version",
        ),
        ("  cert_file: c.pem\n  key_file: k.pem\n  cipher_suites: [RC4]\n", "unknown cipher 'RC4'"),
    ],
)
def test_the_tls_rules_of_exporter_toolkit_and_of_python(
    tmp_path: Path, tls: str, message: str
) -> None:
    (found,) = problems(write(tmp_path / "web.yml", "tls_server_config:\n" + tls))
    assert message in found
    assert found.startswith(f"{tmp_path / 'web.yml'}:")


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(
    tmp_path: Path, ca: CA
) -> None:
    one, other = ca.issue("one.test"), ca.issue("other.test")
    web = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {one.cert}\n  key_file: {other.key}\n",
    )
    (found,) = problems(web)
    assert found.startswith(f"{web}:1: tls_server_config: cannot load the certificate:")
    assert "PRIVATE KEY" not in found


def test_an_inline_key_never_appears_in_an_error(tmp_path: Path, ca: CA) -> None:
    one = ca.issue("inline.test")
    key = one.key.read_text()
    indented = "".join(f"    {line}\n" for line in key.splitlines())
    web = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {ca.cert}\n  key: |\n{indented}",
    )
    (found,) = problems(web)  # the CA's certificate does not go with this key
    assert "cannot load the certificate" in found
    assert key.splitlines()[1] not in found
    inline = write(
        tmp_path / "inline.yml",
        "tls_server_config:\n  cert: |\n"
        + "".join(f"    {line}\n" for line in one.cert.read_text().splitlines())
        + f"  key: |\n{indented}",
    )
    config = load_web_config(inline)
    assert config.tls.server_context().verify_mode == ssl.CERT_NONE
    assert key.splitlines()[1] not in repr(config)


def test_htpasswd_hashes_are_accepted(tmp_path: Path) -> None:
    # htpasswd -nBC 10 writes $2y$; bcrypt checks it.
    hashed = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
    config = load_web_config(write(tmp_path / "web.yml", f"basic_auth_users:\n  u: {hashed}\n"))
    assert "QOauh" not in repr(config)
    (found,) = problems(write(tmp_path / "bad.yml", "basic_auth_users:\n  'a:b': x\n"))
    assert "a basic auth user name has no ':'" in found


def test_settings_python_cannot_honour_are_named_by_check(tmp_path: Path, ca: CA) -> None:
    issued = ca.issue("warn.test")
    web = write(
        tmp_path / "web.yml",
        f"tls_server_config:\n  cert_file: {issued.cert}\n  key_file: {issued.key}\n"
        "  cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n"
        "  curve_preferences: [X25519]\n"
        "http_server_config:\n  http2: false\n",
    )
    warnings = web_config_warnings(load_web_config(web))
    assert len(warnings) == 3
    assert "TLS_AES_128_GCM_SHA256 are TLS 1.3 suites" in warnings[0]


def test_every_tls12_cipher_name_is_one_openssl_knows() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for name, openssl in CIPHER_SUITES.items():
        if openssl is not None:
            context.set_ciphers(openssl)  # raises SSLError for a name OpenSSL does not know
            assert any(c["name"] == openssl for c in context.get_ciphers()), name


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("1s", 1.0), ("250ms", 0.25), ("1m30s", 90.0), ("1.5h", 5400.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "1x", "s", "1s2", "-1s"])
def test_what_is_not_a_go_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        go_duration(text)


def test_the_main_config_names_the_web_config_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "web.yml", f"basic_auth_users:\n  u: {HASH}\n")
    main = write(
        tmp_path / "conf" / "duixwatch.yaml",
        "apps:\n  - app_id: '1377185422953811968'\n    app_key: k\n"
        "server:\n  web_config_file: web.yml\n",
    )
    config = load_config(main, environ={})
    assert config.server.web_config_file == tmp_path / "conf" / "web.yml"


def test_a_bad_web_config_fails_the_main_config_with_its_own_lines(tmp_path: Path) -> None:
    web = write(tmp_path / "web.yml", "basic_auth_users:\n  u: nope\n")
    main = write(
        tmp_path / "duixwatch.yaml",
        "apps:\n  - app_id: '1377185422953811968'\n    app_key: k\n"
        f"server:\n  web_config_file: {web}\n",
    )
    with pytest.raises(ConfigFileError) as caught:
        load_config(main, environ={})
    assert caught.value.errors == [
        f"{web}:1: basic_auth_users: user 'u': the password is not a bcrypt hash "
        "(make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')"
    ]
    missing = write(
        tmp_path / "missing.yaml",
        "apps:\n  - app_id: '1377185422953811968'\n    app_key: k\n"
        "server:\n  web_config_file: nowhere.yml\n",
    )
    with pytest.raises(ConfigFileError, match="cannot read the web config file"):
        load_config(missing, environ={})
