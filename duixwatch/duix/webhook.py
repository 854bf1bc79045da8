"""Webhook POSTs for policy notifications, over httpx: the HTTP half of
:class:`duixwatch.policy.notify.Notifier`.

:class:`WebhookPoster` is the notifier's :class:`~duixwatch.policy.notify.Poster`: one JSON POST
per call, under an explicit :class:`httpx.Timeout` and an overall deadline of the target's
``timeout_seconds`` (which also bounds a receiver that trickles bytes, and in-process receivers,
which httpx cannot time). The response body is never read. Every outcome is a
:class:`~duixwatch.policy.notify.Delivery`: 2xx is sent; 429 (with its ``Retry-After``) and 5xx
are retryable statuses, other statuses final; timeouts and transport errors are retryable
(except an unsupported scheme), a request that cannot be built is invalid. Errors are named by
their type only: httpx messages may quote the request, whose URL and headers are secrets.

It lives here, with the DUIX wire, because this package is where duixwatch's HTTP client
libraries are allowed (README → Development).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import httpx

from duixwatch import __version__
from duixwatch.core.clock import Clock
from duixwatch.duix.parse import parse_retry_after
from duixwatch.policy.notify import Delivery, NotifyTarget

__all__ = ["WebhookPoster"]


class WebhookPoster:
    """POSTs notifications through one :class:`httpx.AsyncClient` (made on first use)."""

    def __init__(self, *, clock: Clock, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._clock = clock
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                headers={"user-agent": f"duixwatch/{__version__}"},
                follow_redirects=False,
            )
        return self._http

    async def post(self, target: NotifyTarget, payload: Mapping[str, Any]) -> Delivery:
        """One POST under the target's deadline; the response body is never read."""
        result: Delivery | None = None
        with anyio.move_on_after(target.timeout_seconds):
            try:
                async with self._client().stream(
                    "POST",
                    target.url,
                    json=payload,
                    headers=dict(target.headers),
                    timeout=httpx.Timeout(target.timeout_seconds),
                ) as response:
                    result = self._classify(response)
            except httpx.TimeoutException as exc:
                result = Delivery("timeout", retryable=True, error=type(exc).__name__)
            except httpx.TransportError as exc:
                retryable = not isinstance(exc, httpx.UnsupportedProtocol)
                result = Delivery("transport", retryable=retryable, error=type(exc).__name__)
            except (httpx.InvalidURL, httpx.HTTPError) as exc:
                result = Delivery("invalid", retryable=False, error=type(exc).__name__)
        return result or Delivery("timeout", retryable=True, error="deadline")

    def _classify(self, response: httpx.Response) -> Delivery:
        status = response.status_code
        if 200 <= status < 300:
            return Delivery("sent", retryable=False, status=status)
        if status == 429:
            retry_after = parse_retry_after(
                response.headers.get("retry-after"), now=self._clock.now()
            )
            return Delivery(
                "status", retryable=True, status=status, retry_after_seconds=retry_after
            )
        return Delivery("status", retryable=status >= 500, status=status)

    async def aclose(self) -> None:
        """Close the connection pool (a later post opens a new one)."""
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()
