"""The HTTP exchange under :class:`~duixwatch.duix.DuixClient`: one request, one answer, bytes.

The client decides what to send and what an answer means; a wire only moves it and turns its
library's failures into :class:`~duixwatch.core.errors.ApiTimeout` /
:class:`~duixwatch.core.errors.ApiUnavailable` (no httpx or aiohttp exception leaves this
module). It reads an answer's body as it arrives, decompressed, and stops at
``max_response_bytes`` (``duix.max_response_bytes``): a successful answer that is longer is
:class:`~duixwatch.core.errors.ApiMalformed` and the rest is never read (a 50 MB body, or a
small gzip bomb, costs at most the cap); an error answer (HTTP 4xx/5xx) that is longer keeps
its status and only its first ``max_response_bytes`` (they are only an excerpt). The overall
deadline over the exchange, body included, is the client's (a trickle of a byte a second runs
into it). Two implementations:

* :class:`AiohttpWire`, the default on asyncio. At 10,000 APPs the daemon sends about 1,300
  requests a second; through httpx each cost 0.8-3.4 ms of CPU (httpcore's pool bookkeeping
  grows with the pool), through aiohttp 0.17-0.19 ms (README, Performance). That difference is
  most of a core.
* :class:`HttpxWire`, for any other anyio backend, for ``duix.http_client: httpx``, and whenever
  an httpx transport is injected: the tests plug the simulator's ASGI app in that way.

Both keep one connection pool of ``max_in_flight`` connections, send the same headers, use the
same CA bundle (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi's, as httpx does) and honour
the ``*_PROXY`` / ``NO_PROXY`` variables (read at start: restart to change them).
``tests/duix/test_wire.py`` runs the same contract against both, over loopback.
"""

from __future__ import annotations

import os
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import certifi
import httpx

from duixwatch.core import errors

if TYPE_CHECKING:
    import aiohttp

__all__ = ["AiohttpWire", "HttpxWire", "Wire", "WireResponse", "ca_context", "env_proxy"]


@dataclass(frozen=True, slots=True)
class WireResponse:
    """What the client needs of an HTTP answer."""

    status: int
    content: bytes
    retry_after: str | None


class Wire(Protocol):
    """Sends one request to ``base_url + path``; raises ApiTimeout or ApiUnavailable."""

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        json_body: Any,
        headers: Mapping[str, str],
    ) -> WireResponse: ...

    async def aclose(self) -> None: ...


def ca_context() -> ssl.SSLContext:
    """The TLS context httpx would build: SSL_CERT_FILE, else SSL_CERT_DIR, else certifi."""
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    return ssl.create_default_context(cafile=certifi.where())


def env_proxy(base_url: str) -> str | None:
    """The proxy the ``*_PROXY`` / ``NO_PROXY`` variables give for ``base_url`` (or ``None``).

    The standard library's reading of the variables (``urllib.request``), as httpx and aiohttp
    read them: ``HTTPS_PROXY`` for https, ``HTTP_PROXY`` for http, ``ALL_PROXY`` for both,
    lower or upper case, unless ``NO_PROXY`` names the host.
    """
    url = urlsplit(base_url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.hostname or ""):
        return None
    return proxy


def _timeout(method: str, path: str, seconds: float) -> errors.ApiTimeout:
    return errors.ApiTimeout(f"no answer within {seconds:g}s", method=method, path=path)


def _unavailable(method: str, path: str, exc: BaseException) -> errors.ApiUnavailable:
    # The text of a transport error names the host and the OS error, never a header.
    return errors.ApiUnavailable(f"{type(exc).__name__}: {exc}", method=method, path=path)


async def _read_capped(
    chunks: AsyncIterator[bytes], *, limit: int, status: int, method: str, path: str
) -> bytes:
    """The body from ``chunks``, stopping once it is longer than ``limit`` bytes: then
    ApiMalformed for a success, the first ``limit`` bytes for an error status."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            if status >= 400:
                parts.append(chunk[: len(chunk) - (size - limit)])
                break
            raise errors.ApiMalformed(
                f"answer larger than {limit} bytes (duix.max_response_bytes)",
                method=method,
                path=path,
                status=status,
            )
        parts.append(chunk)
    return b"".join(parts)


class HttpxWire:
    """The exchange through an :class:`httpx.AsyncClient` (any anyio backend, any transport)."""

    def __init__(
        self,
        *,
        base_url: str,
        timeout_seconds: float,
        connect_timeout_seconds: float,
        max_connections: int,
        max_response_bytes: int,
        headers: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout_seconds
        self._max_bytes = max_response_bytes
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout_seconds, connect=connect_timeout_seconds),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers=dict(headers),
            follow_redirects=False,
        )

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        json_body: Any,
        headers: Mapping[str, str],
    ) -> WireResponse:
        try:
            async with self._http.stream(
                method, path, params=params, json=json_body, headers=dict(headers)
            ) as response:
                content = await _read_capped(
                    response.aiter_bytes(),
                    limit=self._max_bytes,
                    status=response.status_code,
                    method=method,
                    path=path,
                )
                return WireResponse(
                    response.status_code, content, response.headers.get("retry-after")
                )
        except httpx.TimeoutException as exc:
            raise _timeout(method, path, self._timeout) from exc
        except httpx.HTTPError as exc:
            raise _unavailable(method, path, exc) from exc

    async def aclose(self) -> None:
        await self._http.aclose()


def _aiohttp() -> ModuleType:
    """aiohttp, imported when a wire first needs it: 0.2 s of import that ``duixwatch check``
    and the other commands that never poll should not pay."""
    import aiohttp  # deliberately lazy (see the docstring)

    return aiohttp


class AiohttpWire:
    """The exchange through an :class:`aiohttp.ClientSession` (asyncio only).

    The session is made on the first request, inside the running event loop (aiohttp binds a
    session to the loop that made it).
    """

    def __init__(
        self,
        *,
        base_url: str,
        timeout_seconds: float,
        connect_timeout_seconds: float,
        max_connections: int,
        max_response_bytes: int,
        headers: Mapping[str, str],
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._max_bytes = max_response_bytes
        self._timeout = timeout_seconds
        self._connect_timeout = connect_timeout_seconds
        self._max_connections = max_connections
        self._headers = dict(headers)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._proxy = env_proxy(self._base_url)
        self._aiohttp = _aiohttp()

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("AiohttpWire used after aclose()")
        if self._session is None:
            aiohttp = self._aiohttp
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                ssl=ca_context() if self._base_url.startswith("https:") else False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # The client puts one deadline over each whole exchange (DuixClient._send); a
                # second timer per request here would only cost CPU. Connecting has its own.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                headers=self._headers,
                # Not trust_env: aiohttp would then read the proxy variables and ~/.netrc in a
                # thread on EVERY request (40 % of the CPU at 10,000 apps). The proxy is
                # looked up once instead (env_proxy).
                trust_env=False,
            )
        return self._session

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        json_body: Any,
        headers: Mapping[str, str],
    ) -> WireResponse:
        session = self._open()
        try:
            async with session.request(
                method,
                self._base_url + path,
                params=dict(params) if params else None,
                json=json_body,
                headers=dict(headers),
                allow_redirects=False,
                proxy=self._proxy,
            ) as response:
                content = await _read_capped(
                    response.content.iter_any(),
                    limit=self._max_bytes,
                    status=response.status,
                    method=method,
                    path=path,
                )
                return WireResponse(response.status, content, response.headers.get("retry-after"))
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError is one too
            raise _timeout(method, path, self._timeout) from exc
        except (self._aiohttp.ClientError, OSError) as exc:
            raise _unavailable(method, path, exc) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
