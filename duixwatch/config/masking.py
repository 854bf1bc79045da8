"""The effective configuration as JSON-able data with every secret masked (the startup log)."""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from duixwatch.config.schema import Config

__all__ = ["MASK", "mask"]

#: What :func:`mask` shows instead of a secret (pydantic's own SecretStr rendering).
MASK = "**********"


def _url_host(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host + (f":{parts.port}" if parts.port is not None else "")


def _mask_url(url: str) -> str:
    """``url`` with the password of its user info, if any, masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:{MASK}@{_url_host(parts)}"
    return urlunsplit(parts._replace(netloc=netloc))


def _mask_webhook(url: str) -> str:
    """Only where a webhook goes: its path and query are the credential (Slack, Teams …)."""
    parts = urlsplit(url)
    hidden = parts.path not in ("", "/") or parts.query or parts.fragment
    return urlunsplit(
        (parts.scheme, _url_host(parts), f"/{MASK}" if hidden else parts.path, "", "")
    )


def mask(cfg: Config) -> dict[str, Any]:
    """The effective config as JSON-able data, every secret replaced by ``"**********"``.

    For the startup log line and ``/status``. Secrets: appKeys, the password of
    ``duix.base_url``, and of each notify target and dialog probe the URL's path and query (a
    webhook URL is its own credential; a dialog URL may be signed) and every header value.
    """
    data = cfg.model_dump(mode="json")
    for app in data["apps"]:
        app["app_key"] = MASK
    data["duix"]["base_url"] = _mask_url(data["duix"]["base_url"])
    for policy in data["policies"]:
        for target in policy["notify"]:
            target["url"] = _mask_webhook(target["url"])
            target["headers"] = dict.fromkeys(target["headers"], MASK)
    for probe in data["dialog_probes"]:
        probe["url"] = _mask_webhook(probe["url"])
        probe["headers"] = dict.fromkeys(probe["headers"], MASK)
    return data
