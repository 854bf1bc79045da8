"""Certificates for TLS tests, made by the ``openssl`` command (Debian's package; ``make tools``
installs it): a CA, and certificates it signs for a name (server and client use). A missing
``openssl`` fails the test, as every missing tool does."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.tools import require_tool

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    @property
    def pem(self) -> Path:
        """The certificate followed by its key, in one file (what ``cert_file`` may take)."""
        both = self.cert.with_suffix(".both.pem")
        both.write_bytes(self.cert.read_bytes() + self.key.read_bytes())
        return both


class CA:
    """A throw-away certificate authority in ``directory``."""

    def __init__(self, directory: Path, name: str = "duixwatch test CA") -> None:
        self._openssl = require_tool("openssl")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.cert = directory / "ca.pem"
        self.key = directory / "ca.key"
        self._run(
            "req",
            "-x509",
            *_KEY,
            "-keyout",
            self.key,
            "-out",
            self.cert,
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )

    def _run(self, *args: object) -> None:
        subprocess.run(
            [self._openssl, *map(str, args)], check=True, capture_output=True, timeout=30
        )

    def issue(self, name: str, *, sans: tuple[str, ...] = ()) -> Issued:
        """A certificate for ``name`` (a DNS name) and any more ``sans`` (``IP:127.0.0.1``,
        ``URI:…``), good for a server and a client; issuing a name again renews it."""
        key = self.directory / f"{name}.key"
        csr = self.directory / f"{name}.csr"
        cert = self.directory / f"{name}.pem"
        ext = self.directory / f"{name}.ext"
        ext.write_text(
            f"subjectAltName={','.join((f'DNS:{name}', *sans))}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "authorityKeyIdentifier=keyid\n"
        )
        self._run("req", *_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        self._run(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            self.cert,
            "-CAkey",
            self.key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            ext,
        )
        return Issued(cert, key)
