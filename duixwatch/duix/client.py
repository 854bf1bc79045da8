"""The async DUIX OpenAPI v2 client, one per process, shared by every APP.

It owns one connection pool (a :mod:`~duixwatch.duix.wire`: aiohttp on asyncio, httpx when
``duix.http_client`` says so or when a test injects an httpx transport such as the simulator's
ASGI app), token minting and caching, a global in-flight cap and requests-per-second limit shared
by all APPs, retries, and the translation of every failure into the typed errors of
:mod:`duixwatch.core.errors` (no HTTP library's exception leaves).

Retry rules:

* reads (``getconcurrentNumber``, ``getconcurrentList``, ``getConversationById``,
  ``queryAvatar``) are retried ``read_retries`` times on transport errors, timeouts, 5xx and 429,
  with exponential backoff and jitter, waiting at least the server's Retry-After (a Retry-After
  longer than ``retry_backoff_max_seconds`` is not waited for here: the error surfaces so the
  caller's schedule can honour it);
* writes (``sessionStop``, ``distroyCallSessionsByAppId``, ``createAvatar``) are never retried,
  and run shielded from cancellation (within the request timeout) so that shutdown never cuts
  one in half — unless the caller passes ``shield=False`` because it shields the call itself
  (the policy executor does, under a deadline it brings forward at shutdown);
* every endpoint, after an auth rejection (1005/1006/40001), drops the cached token, mints a new
  one and tries exactly once more; a second rejection surfaces as ``ApiAuthRejected``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import anyio
import httpx
import sniffio

from duixwatch import __version__
from duixwatch.config import DuixSettings
from duixwatch.core import documents, errors, models
from duixwatch.core.clock import Clock, RateLimiter
from duixwatch.duix import parse, wire
from duixwatch.duix.auth import TokenCache

__all__ = ["ENDPOINTS", "DuixClient", "RequestObserver"]

T = TypeVar("T")

#: Endpoint names, as used in metric labels and simulator faults.
ENDPOINTS = (
    "getconcurrentNumber",
    "getconcurrentList",
    "distroyCallSessionsByAppId",
    "sessionStop",
    "getConversationById",
    "createAvatar",
    "queryAvatar",
)


#: The endpoints that take a POST with a JSON body; every other one is a GET.
POST_ENDPOINTS = frozenset({"createAvatar"})


def _method(endpoint: str) -> str:
    return "POST" if endpoint in POST_ENDPOINTS else "GET"


class RequestObserver(Protocol):
    """Told about every HTTP attempt: endpoint, ``success`` or the error reason, duration."""

    def __call__(self, endpoint: str, outcome: str, duration_seconds: float) -> None: ...


class DuixClient:
    """Typed calls to the DUIX platform for any number of APPs.

    Use as an async context manager (or call :meth:`aclose`)::

        async with DuixClient(DuixSettings(), clock=SystemClock()) as client:
            numbers = await client.concurrency(credentials)
    """

    def __init__(
        self,
        config: DuixSettings,
        *,
        clock: Clock,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: RequestObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._observer = observer
        self._rng = rng or random.Random()
        self._tokens = TokenCache(
            ttl_seconds=config.token_ttl_seconds, refresh_fraction=config.token_refresh_fraction
        )
        self._in_flight = anyio.CapacityLimiter(config.max_in_flight)
        self._rate = RateLimiter(config.max_requests_per_second, clock)
        self._zone = config.zone
        self._transport = transport
        self._wire: wire.Wire | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"DuixClient(base_url={self._config.base_url!r})"

    @property
    def max_in_flight(self) -> int:
        """The cap on concurrent requests (``duix.max_in_flight``)."""
        return self._config.max_in_flight

    @property
    def tokens(self) -> TokenCache:
        """The token cache (exposed for the ``token`` command and tests)."""
        return self._tokens

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        self._closed = True
        if self._wire is not None:
            await self._wire.aclose()

    def _open_wire(self) -> wire.Wire:
        """The wire, made on first use: aiohttp on asyncio, httpx otherwise (module docstring)."""
        if self._closed:
            raise RuntimeError("DuixClient used after aclose()")
        if self._wire is None:
            config = self._config
            common: dict[str, Any] = {
                "base_url": config.base_url,
                "timeout_seconds": config.request_timeout_seconds,
                "connect_timeout_seconds": config.connect_timeout_seconds,
                "max_connections": config.max_in_flight,
                "max_response_bytes": config.max_response_bytes,
                "headers": {"user-agent": f"duixwatch/{__version__}"},
            }
            if self._transport is None and _use_aiohttp(config.http_client):
                self._wire = wire.AiohttpWire(**common)
            else:
                self._wire = wire.HttpxWire(**common, transport=self._transport)
        return self._wire

    # ------------------------------------------------------------------ endpoints

    def _path(self, endpoint: str) -> str:
        if endpoint == "getConversationById":
            return self._config.paths.conversation
        return f"{self._config.paths.prefix}/{endpoint}"

    async def concurrency(self, app: models.AppCredentials) -> models.Concurrency:
        """Live concurrency numbers of the APP (``getconcurrentNumber``)."""
        data = await self._call(app, "getconcurrentNumber", params={"appId": app.app_id})
        return self._parsed("getconcurrentNumber", parse.parse_concurrency, data)

    async def sessions(self, app: models.AppCredentials) -> models.SessionList:
        """The APP's in-call sessions (``getconcurrentList``), parsed tolerantly."""
        data = await self._call(app, "getconcurrentList", params={"appId": app.app_id})
        return self._parsed(
            "getconcurrentList",
            lambda d: parse.parse_session_list(
                d, mapping=self._config.session_list, zone=self._zone, now=self._clock.now()
            ),
            data,
        )

    async def stop_session(
        self, app: models.AppCredentials, session_id: str, *, shield: bool = True
    ) -> models.StopResult:
        """Close one session (``sessionStop``). 2002 means it was already gone: not an error."""
        try:
            await self._call(
                app, "sessionStop", params={"uuid": session_id}, write=True, shield=shield
            )
        except errors.ApiNotFound as exc:
            if exc.code in parse.NOT_FOUND_CODES:
                return models.StopResult(session_id=session_id, outcome="already_closed")
            raise
        return models.StopResult(session_id=session_id, outcome="stopped")

    async def close_all(
        self, app: models.AppCredentials, *, shield: bool = True
    ) -> models.CloseAllResult:
        """Close EVERY session of the APP (``distroyCallSessionsByAppId``). Never retried."""
        data = await self._call(
            app,
            "distroyCallSessionsByAppId",
            params={"appId": app.app_id},
            write=True,
            shield=shield,
        )
        return models.CloseAllResult(app_id=app.app_id, data=data)

    async def conversation(
        self, app: models.AppCredentials, conversation_id: str
    ) -> documents.Conversation:
        """A conversation's configuration (``getConversationById``)."""
        data = await self.conversation_data(app, conversation_id)
        return self._parsed("getConversationById", parse.parse_conversation, data)

    async def conversation_data(
        self, app: models.AppCredentials, conversation_id: str
    ) -> dict[str, Any]:
        """``getConversationById``'s ``data`` as the platform sent it (the watch hashes and
        compares the whole payload, recursively; raises ResponseParseError when it is not an
        object or nests deeper than :data:`~duixwatch.duix.parse.MAX_DOCUMENT_DEPTH`)."""
        data = await self._call(
            app, "getConversationById", params={"conversationId": conversation_id}
        )
        if not isinstance(data, dict):
            raise errors.ResponseParseError(
                "conversation: data is not an object", shape=parse.describe_shape(data)
            )
        if parse.too_deep(data):
            raise errors.ResponseParseError(
                f"conversation: data nested deeper than {parse.MAX_DOCUMENT_DEPTH} levels",
                shape=parse.describe_shape(data),
            )
        return data

    async def create_avatar(
        self, app: models.AppCredentials, spec: documents.AvatarSpec
    ) -> documents.AvatarCreated:
        """Start training an avatar (``createAvatar``). Not retried: it creates something."""
        body = spec.model_dump(by_alias=True, exclude_none=True)
        data = await self._call(app, "createAvatar", json_body=body, write=True)
        return self._parsed("createAvatar", parse.parse_avatar_created, data)

    async def query_avatar(self, app: models.AppCredentials, avatar_id: str) -> documents.Avatar:
        """An avatar's training status (``queryAvatar``)."""
        data = await self._call(app, "queryAvatar", params={"id": avatar_id})
        return self._parsed(
            "queryAvatar", lambda d: parse.parse_avatar(d, requested_id=avatar_id), data
        )

    # ------------------------------------------------------------------ machinery

    def _parsed(self, endpoint: str, parser: Callable[[Any], T], data: Any) -> T:
        try:
            return parser(data)
        except errors.ResponseParseError as exc:
            raise errors.ApiMalformed(
                str(exc), method=_method(endpoint), path=self._path(endpoint), status=200
            ) from exc

    async def _call(
        self,
        app: models.AppCredentials,
        endpoint: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        write: bool = False,
        shield: bool = True,
    ) -> Any:
        """One logical call: auth re-mint once, read retries; returns the envelope's data.
        A write's exchange is shielded from cancellation unless ``shield`` is false."""
        retries_left = 0 if write else self._config.read_retries
        reminted = False
        attempt = 0
        while True:
            try:
                return await self._attempt(
                    app,
                    endpoint,
                    method=_method(endpoint),
                    params=params,
                    json_body=json_body,
                    shield=write and shield,
                )
            except errors.ApiAuthRejected:
                if reminted:
                    raise
                reminted = True
                self._tokens.invalidate(app.app_id)
            except (errors.ApiUnavailable, errors.ApiServerError, errors.ApiRateLimited) as exc:
                if retries_left <= 0:
                    raise
                delay = self._backoff_seconds(attempt, exc)
                if delay is None:
                    raise
                retries_left -= 1
                attempt += 1
                await self._clock.sleep(delay)

    def _backoff_seconds(self, attempt: int, exc: errors.ApiError) -> float | None:
        """Exponential backoff with jitter; at least Retry-After; None: do not wait here."""
        cap = self._config.retry_backoff_max_seconds
        delay = min(cap, self._config.retry_backoff_seconds * (2.0**attempt))
        delay *= self._rng.uniform(0.5, 1.0)
        if isinstance(exc, errors.ApiRateLimited) and exc.retry_after_seconds is not None:
            if exc.retry_after_seconds > cap:
                return None
            delay = max(delay, exc.retry_after_seconds)
        return delay

    async def _attempt(
        self,
        app: models.AppCredentials,
        endpoint: str,
        *,
        method: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        shield: bool,
    ) -> Any:
        path = self._path(endpoint)
        token = self._tokens.token(app, now=self._clock.now())
        await self._rate.wait()
        async with self._in_flight:
            started = self._clock.monotonic()
            outcome = "success"
            try:
                response = await self._send(
                    method,
                    path,
                    params=params,
                    json_body=json_body,
                    token=token.get_secret_value(),
                    shield=shield,
                )
                retry_after = parse.parse_retry_after(response.retry_after, now=self._clock.now())
                return parse.parse_envelope(
                    method=method,
                    path=path,
                    status=response.status,
                    content=response.content,
                    retry_after_seconds=retry_after,
                    secrets=(token.get_secret_value(), app.app_key.get_secret_value()),
                )
            except errors.ApiError as exc:
                outcome = exc.reason
                raise
            finally:
                if self._observer is not None:
                    self._observer(endpoint, outcome, self._clock.monotonic() - started)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        json_body: Any,
        token: str,
        shield: bool,
    ) -> wire.WireResponse:
        """The HTTP exchange under one overall deadline; transport errors become ApiErrors."""
        timeout = self._config.request_timeout_seconds
        link = self._open_wire()
        response: wire.WireResponse | None = None
        with anyio.move_on_after(timeout, shield=shield):
            response = await link.exchange(
                method, path, params=params, json_body=json_body, headers={"token": token}
            )
        if response is None:
            raise errors.ApiTimeout(f"no answer within {timeout:g}s", method=method, path=path)
        return response


def _use_aiohttp(choice: str) -> bool:
    """``duix.http_client``: ``auto`` means aiohttp when running on asyncio (it is asyncio-only)."""
    if choice != "auto":
        return choice == "aiohttp"
    try:
        return sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        return False
