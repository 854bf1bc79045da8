"""The config schema of a dialog probe (``dialog_probes:``) and its TLS options.

A probe asks the customer's dialog backend a question the way DUIX does, on its own schedule,
and checks the answer by the rules of :mod:`duixwatch.dialog.contract`. Its ``url`` and
``headers`` are secrets (an API token, a signed URL): left out of the repr, masked in the
startup log, never quoted in an error. ``headers_file`` is resolved by the config loader
(read into ``headers``, the file recorded); TLS file paths arrive absolute from it.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from duixwatch.core.fields import Headers, SecretUrl, Section, label_name, redact_url

__all__ = ["DEFAULT_BUDGET_SECONDS", "ClientTLS", "DialogProbeConfig"]

#: DUIX waits this long for an answer (the seed: "expects the answer within 20 s").
DEFAULT_BUDGET_SECONDS = 20.0

_Text = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class ClientTLS(Section):
    """How to verify (and, with a client certificate, authenticate to) an HTTPS server.

    Without a ``ca_file`` the system's trust store verifies; ``insecure_skip_verify`` turns
    verification off (a test bench only); ``server_name`` is the name checked and sent as SNI
    when it differs from the URL's host.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """A client context (reads the files: raises OSError or ssl.SSLError)."""
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.cert_file is not None:
            context.load_cert_chain(
                str(self.cert_file), str(self.key_file) if self.key_file is not None else None
            )
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class DialogProbeConfig(Section):
    """One synthetic probe of a third-party dialog backend."""

    name: str
    url: SecretUrl = Field(repr=False)
    mode: Literal["json", "stream", "auto"] = "auto"
    interval_seconds: float = Field(default=60.0, ge=1, le=86_400)
    #: The whole exchange; default: the budget.
    timeout_seconds: float | None = Field(default=None, gt=0, le=600)
    budget_seconds: float = Field(default=DEFAULT_BUDGET_SECONDS, gt=0, le=600)
    #: Asked in turn, one per run, each with the earlier turns as ``dh-context``.
    questions: tuple[_Text, ...] = Field(default=("Hello",), min_length=1, max_length=100)
    sid: _Text = "duixwatch-probe"
    dh_code: _Text = "duixwatch-probe"
    conversation_id: _Text = "duixwatch-probe"
    headers: Headers = Field(default_factory=dict, repr=False)
    #: Where ``headers`` were partly read from ("Name: value" lines); set by the loader.
    headers_file: Path | None = None
    tls: ClientTLS = Field(default_factory=ClientTLS)

    @field_validator("name")
    @classmethod
    def _label(cls, value: str) -> str:
        return label_name(value, "probe")

    @property
    def timeout(self) -> float:
        """The deadline of one run (seconds)."""
        return self.timeout_seconds if self.timeout_seconds is not None else self.budget_seconds

    def __repr__(self) -> str:
        return (
            f"DialogProbeConfig(name={self.name!r}, url={redact_url(self.url)!r}, "
            f"mode={self.mode!r}, headers={sorted(self.headers)!r})"
        )
