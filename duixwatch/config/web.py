"""The web configuration file: exporter-toolkit's format (``--web.config.file``), read faithfully.

Every official Prometheus exporter secures its HTTP surface with this file (its
``docs/web-configuration.md`` is the contract)::

    tls_server_config: {cert_file, key_file, cert, key, client_auth_type, client_ca_file,
                        client_ca, client_allowed_sans, min_version, max_version, cipher_suites,
                        prefer_server_cipher_suites, curve_preferences}
    http_server_config: {http2, headers: {Content-Security-Policy, X-Frame-Options, …}}
    basic_auth_users: {user: bcrypt hash}
    rate_limit: {interval: 1s, burst: 10}

Read as exporter-toolkit reads it (unknown keys are errors; relative file names are relative to
the web config's own directory; TLS is on when any TLS key is set; a client CA without a client
auth policy is an error), with the differences Python's :mod:`ssl` imposes, each refused at
load rather than silently weakened:

* Python's ssl verifies every client certificate it asks for: ``RequestClientCert``,
  ``RequireAnyClientCert`` (and its old name ``RequireClientCert``) and
  ``VerifyClientCertIfGiven`` need a client CA, and a certificate presented must chain to it
  (Go would accept any certificate for the first two: stricter, never weaker);
* ``cipher_suites`` apply to TLS 1.2 (as in Go, TLS 1.3's suites are not configurable: the
  three TLS 1.3 names are accepted and have no effect); ``curve_preferences`` are checked and
  ignored (OpenSSL's default groups are used); ``http2`` is accepted and ignored (HTTP/1.1 only).

:func:`load_web_config` returns a :class:`WebConfig` or raises
:class:`~duixwatch.config.yamllines.ConfigFileError` with ``FILE:LINE: key.path: what is wrong``
lines, never quoting a key, a password hash or a certificate. It also builds the TLS context
once, so a certificate that does not load is a config error at ``check`` time.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from duixwatch.config import files
from duixwatch.config.paths import pydantic_message
from duixwatch.config.yamllines import ConfigFileError, Problem, YamlSyntaxError, parse_yaml
from duixwatch.core.fields import KeyPath, Section, Strict, dotted

__all__ = [
    "CIPHER_SUITES",
    "HTTPServerConfig",
    "RateLimit",
    "TLSServerConfig",
    "WebConfig",
    "file_signature",
    "load_web_config",
    "web_config_warnings",
]

#: A web config is a few lines; anything bigger is the wrong file.
_MAX_BYTES = 1024 * 1024

TLS_VERSIONS: Final[dict[str, ssl.TLSVersion]] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
_VERIFY_MODES: Final[dict[str, ssl.VerifyMode]] = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

#: Go's ``tls.CipherSuites()`` names (the ones exporter-toolkit accepts) → OpenSSL's names;
#: ``None``: a TLS 1.3 suite, which neither Go nor Python lets one configure.
CIPHER_SUITES: Final[dict[str, str | None]] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
_CURVES: Final = frozenset({"CurveP256", "CurveP384", "CurveP521", "X25519"})

#: The headers exporter-toolkit lets one set, and the values it allows (``None``: any).
HEADERS: Final[dict[str, tuple[str, ...] | None]] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

#: ``$2a$``/``$2b$``/``$2y$`` (htpasswd writes 2y), a two-digit cost, 22 + 31 characters.
_BCRYPT_RE = re.compile(r"\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_HASH_HINT = "make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"


def go_duration(text: str) -> float:
    """Seconds in a Go duration (``1s``, ``250ms``, ``1m30s``, ``0``)."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError("must be a duration such as 1s, 250ms or 1m30s")
    return total


class TLSServerConfig(Section):
    """``tls_server_config``: the certificate, client authentication, versions and ciphers."""

    cert: str | None = None
    key: SecretStr | None = None
    client_ca: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth_type: ClientAuthType | None = None
    client_ca_file: Path | None = None
    client_allowed_sans: tuple[str, ...] | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    @field_validator("cipher_suites")
    @classmethod
    def _known_ciphers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in CIPHER_SUITES:
                raise ValueError(f"unknown cipher {name!r} (Go's tls.CipherSuites() names)")
        return value

    @field_validator("curve_preferences")
    @classmethod
    def _known_curves(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in _CURVES:
                raise ValueError(f"unknown curve {name!r} (one of {', '.join(sorted(_CURVES))})")
        return value

    @property
    def enabled(self) -> bool:
        """TLS is on when any TLS key is set (exporter-toolkit's ``IsEnabled``)."""
        return any(
            v is not None
            for v in (
                self.cert,
                self.key,
                self.client_ca,
                self.cert_file,
                self.key_file,
                self.client_ca_file,
                self.client_auth_type,
            )
        )

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return _VERIFY_MODES[self.client_auth_type or "NoClientCert"]

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if not self.enabled:
            return self
        if self.cert is None and self.cert_file is None:
            raise ValueError("missing one of cert or cert_file")
        if self.key is None and self.key_file is None:
            raise ValueError("missing one of key or key_file")
        for inline, file in (("cert", "cert_file"), ("key", "key_file")):
            if getattr(self, inline) is not None and getattr(self, file) is not None:
                raise ValueError(f"give {inline} or {file}, not both")
        if self.client_ca is not None and self.client_ca_file is not None:
            raise ValueError("give client_ca or client_ca_file, not both")
        has_ca = self.client_ca is not None or self.client_ca_file is not None
        if has_ca and self.verify_mode == ssl.CERT_NONE:
            raise ValueError("client CA's have been configured without a Client Auth Policy")
        if not has_ca and self.verify_mode != ssl.CERT_NONE:
            raise ValueError(
                f"client_auth_type {self.client_auth_type} needs client_ca_file (or client_ca): "
                "Python's ssl verifies every client certificate it asks for"
            )
        if self.client_allowed_sans is not None and self.verify_mode == ssl.CERT_NONE:
            raise ValueError("client_allowed_sans needs a client_auth_type that asks for one")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version")
        return self

    def files(self) -> tuple[Path, ...]:
        """The files the TLS context is made of (watched for changes)."""
        found = (self.cert_file, self.key_file, self.client_ca_file)
        return tuple(f for f in found if f is not None)

    def server_context(self) -> ssl.SSLContext:
        """A server context from the files as they are now (raises OSError or ssl.SSLError)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = TLS_VERSIONS[self.min_version]
        context.maximum_version = TLS_VERSIONS[self.max_version]
        with (
            _pem_file(self.cert_file, self.cert) as cert,
            _pem_file(self.key_file, self.key.get_secret_value() if self.key else None) as key,
        ):
            context.load_cert_chain(cert, key)
        ciphers = [CIPHER_SUITES[n] for n in self.cipher_suites if CIPHER_SUITES[n] is not None]
        if ciphers:
            context.set_ciphers(":".join(c for c in ciphers if c))
        if self.prefer_server_cipher_suites:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        context.verify_mode = self.verify_mode
        if self.client_ca_file is not None:
            context.load_verify_locations(cafile=self.client_ca_file)
        elif self.client_ca is not None:
            context.load_verify_locations(cadata=self.client_ca)
        context.set_alpn_protocols(["http/1.1"])
        return context


@contextmanager
def _pem_file(path: Path | None, inline: str | None) -> Iterator[Path]:
    """``path``, or ``inline`` PEM in a private temporary file for as long as it is read
    (Python's ssl loads certificates and keys from files only)."""
    if path is not None:
        yield path
        return
    fd, name = tempfile.mkstemp(prefix="duixwatch-tls-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(inline or "")
        yield Path(name)
    finally:
        os.unlink(name)


class HTTPServerConfig(Section):
    """``http_server_config``: extra response headers (``http2`` is accepted, not used)."""

    http2: bool = True
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _allowed(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name not in HEADERS:
                raise ValueError(f"HTTP header {name!r} can not be configured")
            allowed = HEADERS[name]
            if allowed is not None and text not in allowed:
                raise ValueError(f"invalid value for {name}: expected one of {list(allowed)}")
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
                raise ValueError(f"{name}: control characters are not allowed")
        return value


class RateLimit(Section):
    """``rate_limit``: a token bucket over every request (``interval: 0`` turns it off)."""

    interval: float = 0.0
    burst: int = Field(0, ge=0)

    @field_validator("interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            return go_duration(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
            return 0.0
        raise ValueError("must be a duration such as 1s, 250ms or 1m30s")

    @model_validator(mode="after")
    def _burst(self) -> RateLimit:
        if self.interval > 0 and self.burst < 1:
            raise ValueError("burst must be at least 1 when an interval is set")
        return self


class WebConfig(Strict):
    """A whole web config file. ``source`` is the file it was read from (``None``: defaults)."""

    tls_server_config: TLSServerConfig = Field(default_factory=TLSServerConfig)
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    basic_auth_users: dict[str, SecretStr] = Field(default_factory=dict)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    source: Path | None = None

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for user, hashed in value.items():
            if ":" in user or not user:
                raise ValueError(f"user {user!r}: a basic auth user name has no ':' and is not ''")
            match = _BCRYPT_RE.fullmatch(hashed.get_secret_value())
            if match is None or not 4 <= int(match.group(1)) <= 31:
                raise ValueError(f"user {user!r}: the password is not a bcrypt hash ({_HASH_HINT})")
        return value

    @property
    def tls(self) -> TLSServerConfig:
        return self.tls_server_config

    def files(self) -> tuple[Path, ...]:
        """Every file this configuration is read from, itself first."""
        own = (self.source,) if self.source is not None else ()
        return (*own, *self.tls.files())


def web_config_warnings(config: WebConfig) -> list[str]:
    """Settings that are valid but have no effect here (Python's ssl, HTTP/1.1 only)."""
    found = []
    tls = config.tls
    tls13 = [n for n in tls.cipher_suites if CIPHER_SUITES[n] is None]
    if tls13:
        found.append(
            f"tls_server_config.cipher_suites: {', '.join(tls13)} are TLS 1.3 suites, which "
            "cannot be configured (as in Go): ignored"
        )
    if tls.curve_preferences:
        found.append("tls_server_config.curve_preferences: ignored (OpenSSL's default groups)")
    if not config.http_server_config.http2:
        found.append("http_server_config.http2: ignored (duixwatch serves HTTP/1.1 only)")
    return found


def file_signature(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int, int], ...]:
    """What changes when any of ``paths`` is rewritten, renamed over or removed (follows
    symlinks: a Kubernetes Secret volume swaps its ``..data`` link)."""
    found = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            found.append((-1, -1, -1, -1))
        else:
            found.append((st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size))
    return tuple(found)


_PATH_KEYS: Final = ("cert_file", "key_file", "client_ca_file")


def load_web_config(path: str | os.PathLike[str]) -> WebConfig:
    """Read and check the web config at ``path``, and build its TLS context once.

    Raises :class:`ConfigFileError` (every problem, ``FILE:LINE: key.path: …``)."""
    shown = os.fspath(path)
    file = Path(path)
    try:
        raw = files.read_head(file, _MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigFileError(
            shown, [f"{shown}: cannot read the web config file: {reason}"]
        ) from None
    if len(raw) > _MAX_BYTES:
        raise ConfigFileError(shown, [f"{shown}: over 1 MiB: not a web config file"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigFileError(shown, [f"{shown}: the web config file is not UTF-8 text"]) from None
    try:
        data, loader = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise ConfigFileError(shown, [f"{shown}:{exc.line}: {exc.message}"]) from None
    problems: list[Problem] = list(loader.problems)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(shown, [f"{shown}:1: the top level must be a mapping"])
    for key in ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"):
        if key in data and data[key] is None:
            del data[key]  # a section left empty means "all defaults"
    if "source" in data:
        problems.append(Problem(("source",), "unknown key"))
        del data["source"]
    tls = data.get("tls_server_config")
    if isinstance(tls, dict):
        for key in _PATH_KEYS:
            value = tls.get(key)
            if isinstance(value, str) and value:
                tls[key] = file.absolute().parent / value  # absolute paths stay as they are
    config: WebConfig | None = None
    try:
        config = WebConfig.model_validate({**data, "source": file.absolute()})
    except ValidationError as exc:
        details = exc.errors(include_input=False, include_url=False)
    else:
        details = []
    for detail in details:
        where: KeyPath = tuple(part for part in detail["loc"] if part != "[key]")
        problems.append(
            Problem(where, pydantic_message(detail["type"], detail["msg"], where, WebConfig))
        )
    if config is not None and config.tls.enabled and not problems:
        try:
            config.tls.server_context()
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            problems.append(
                Problem(("tls_server_config",), f"cannot load the certificate: {reason}")
            )
    if problems or config is None:
        lines = loader.lines

        def line(where: KeyPath) -> int:
            for cut in range(len(where), 0, -1):
                if where[:cut] in lines:
                    return lines[where[:cut]]
            return 1

        rendered = sorted(
            (
                line(p.path),
                f"{shown}:{line(p.path)}: {dotted(p.path) + ': ' if p.path else ''}{p.message}",
            )
            for p in problems
        )
        raise ConfigFileError(shown, [text for _, text in rendered])
    return config
