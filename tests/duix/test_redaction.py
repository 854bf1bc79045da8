"""A platform that quotes the rejected token (or anything else secret) in its error text: the
text reaches exceptions, logs, /status and the CLI without it."""

from __future__ import annotations

import json

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from duixwatch.config import AppConfig, DuixSettings
from duixwatch.core import errors, models
from duixwatch.duix import DuixClient
from duixwatch.watch.poll import poll_once
from tests.fakes import FakeClock

KEY = "app-key-5f1e-never-print-me"
APP = models.AppCredentials(app_id="1377185422953811968", app_key=SecretStr(KEY))


def echoing_platform() -> Starlette:
    """Answers every call with an auth error that quotes the token and the key it got."""

    async def answer(request: Request) -> Response:
        token = request.headers.get("token", "")
        return JSONResponse(
            {
                "code": "1006",
                "success": False,
                "message": f"token {token} rejected for key {KEY}; header token={token}",
                "data": {"echo": token},
            }
        )

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


async def test_the_token_and_key_are_redacted_from_the_platforms_text(
    clock: FakeClock,
) -> None:
    transport = httpx.ASGITransport(app=echoing_platform())
    async with DuixClient(
        DuixSettings(base_url="http://echo.test", read_retries=0), clock=clock, transport=transport
    ) as client:
        try:
            await client.concurrency(APP)
        except errors.ApiAuthRejected as exc:
            caught = exc
        else:
            raise AssertionError("the stand-in rejects every call")
        app = AppConfig(app_id=APP.app_id, name="desk", app_key=SecretStr(KEY))
        snapshot = await poll_once(app, client, clock=clock)
    shown = " ".join(
        [
            str(caught),
            repr(caught),
            caught.body_excerpt or "",
            json.dumps(snapshot.error.message if snapshot.error else ""),
        ]
    )
    assert "eyJ" not in shown  # no JWT, whoever's
    assert KEY not in shown
    assert "[redacted]" in str(caught)
    assert snapshot.error is not None
    assert snapshot.error.reason == "auth"
