"""notify: a tiny Starlette webhook receiver, in-process through ASGITransport and on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from duixwatch.duix.webhook import WebhookPoster
from duixwatch.http import serve as asgi
from duixwatch.policy.notify import (
    ActionOutcome,
    Notification,
    Notifier,
    NotifyTarget,
    redact_url,
)
from tests.fakes import FakeClock

WAIT_SECONDS = 5
SECRET_PATH = "/services/T0000/B0000/path-secret-xyz"
HOOK_URL = f"http://hooks.test{SECRET_PATH}?token=query-secret-xyz"
HEADERS = {"Authorization": "Bearer header-secret-xyz", "X-Hook-Key": "key-secret-xyz"}
SECRETS = ("path-secret-xyz", "query-secret-xyz", "header-secret-xyz", "key-secret-xyz")


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Receiver:
    """A webhook endpoint: answers the scripted statuses in turn, then 200; or hangs."""

    def __init__(self, *statuses: int, hang: bool = False, retry_after: str | None = None):
        self.script = list(statuses)
        self.hang = hang
        self.retry_after = retry_after
        self.requests: list[Received] = []
        self.entered = anyio.Event()
        self.never = anyio.Event()  # a hanging request waits on it; nothing sets it

    async def hook(self, request: Request) -> Response:
        self.requests.append(
            Received(request.url.path, dict(request.headers), await request.json())
        )
        if self.hang:
            self.entered.set()
            await self.never.wait()
        status = self.script.pop(0) if self.script else 200
        headers = {"retry-after": self.retry_after} if self.retry_after and status == 429 else {}
        return PlainTextResponse(
            "ok" if status < 300 else "no", status_code=status, headers=headers
        )

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.hook, methods=["POST"])])


def notification(**overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "policy": "max-session-age",
        "app": "frontdesk",
        "app_id": "1001",
        "cycle": "c-42",
        "dry_run": False,
        "outcomes": (
            ActionOutcome("stop_session", "s-1", "stopped"),
            ActionOutcome("stop_session", "s-2", "already_closed"),
            ActionOutcome("stop_session", "s-3", "failed", error="ApiServerError: 500"),
        ),
    }
    fields.update(overrides)
    return Notification(**fields)


def target(url: str = HOOK_URL, **kwargs: Any) -> NotifyTarget:
    return NotifyTarget(url=url, headers=kwargs.pop("headers", HEADERS), **kwargs)


@asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[Notifier]:
    async with anyio.create_task_group() as tg:
        await tg.start(notifier.run)
        yield notifier
        tg.cancel_scope.cancel()


async def until(condition: Callable[[], bool]) -> None:
    """Let the worker run until ``condition`` holds (the caller's fail_after bounds it)."""
    while not condition():
        await anyio.sleep(0.001)


def done(notifier: Notifier, total: int) -> Callable[[], bool]:
    return lambda: notifier.sent + notifier.failed == total


def in_process(receiver: Receiver, clock: FakeClock, **kwargs: Any) -> Notifier:
    poster = WebhookPoster(clock=clock, transport=httpx.ASGITransport(app=receiver.app()))
    return Notifier(clock=clock, poster=poster, **kwargs)


class Unreachable(httpx.AsyncBaseTransport):
    """A network where every connection is refused."""

    def __init__(self) -> None:
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        raise httpx.ConnectError("connection refused", request=request)


# --------------------------------------------------------------------------- payload


def test_payload_carries_a_slack_text_line_and_the_cycle_details() -> None:
    body = notification().payload()
    assert body == {
        "text": "duixwatch: policy max-session-age stopped 2 session(s) of frontdesk"
        " (1 failed, 1 already closed)",
        "policy": "max-session-age",
        "app": "frontdesk",
        "app_id": "1001",
        "cycle": "c-42",
        "dry_run": False,
        "aborted": None,
        "sessions": ["s-1", "s-2", "s-3"],
        "outcomes": [
            {"action": "stop_session", "session_id": "s-1", "outcome": "stopped", "error": None},
            {
                "action": "stop_session",
                "session_id": "s-2",
                "outcome": "already_closed",
                "error": None,
            },
            {
                "action": "stop_session",
                "session_id": "s-3",
                "outcome": "failed",
                "error": "ApiServerError: 500",
            },
        ],
    }


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        (
            {
                "dry_run": True,
                "outcomes": (ActionOutcome("stop_session", "s-1", "dry_run"),) * 3,
            },
            "duixwatch: policy max-session-age would stop 3 session(s) of frontdesk [dry run]",
        ),
        (
            {"outcomes": (ActionOutcome("close_all", None, "stopped"),)},
            "duixwatch: policy max-session-age closed all sessions of frontdesk",
        ),
        (
            {"outcomes": (ActionOutcome("close_all", None, "failed", error="timeout"),)},
            "duixwatch: policy max-session-age failed to close all sessions of frontdesk",
        ),
        (
            {"outcomes": (), "aborted": "would stop 12 > max_actions_per_cycle 5"},
            "duixwatch: policy max-session-age aborted for frontdesk:"
            " would stop 12 &gt; max_actions_per_cycle 5",
        ),
        (
            {"outcomes": (), "app": "R&D <lab>"},
            "duixwatch: policy max-session-age took no action on R&amp;D &lt;lab&gt;",
        ),
    ],
)
def test_text_reads_as_one_slack_safe_line(overrides: dict[str, Any], text: str) -> None:
    assert notification(**overrides).payload()["text"] == text


def test_redacted_urls_keep_only_scheme_host_and_port() -> None:
    assert redact_url(HOOK_URL) == "http://hooks.test/…"
    assert redact_url("https://user:pw@hooks.test:8443/x/y?z=1#f") == "https://hooks.test:8443/…"
    assert redact_url("http://[::1]:9/secret") == "http://[::1]:9/…"
    assert redact_url("not a url") == "<invalid url>"


def test_a_targets_repr_shows_neither_url_secrets_nor_header_values() -> None:
    shown = repr(target())
    assert "hooks.test" in shown
    assert "Authorization" in shown
    assert not any(secret in shown for secret in SECRETS)


# --------------------------------------------------------------------------- delivery


async def test_the_payload_is_posted_as_json_with_the_targets_headers(clock: FakeClock) -> None:
    receiver = Receiver()
    with anyio.fail_after(WAIT_SECONDS):
        async with running(in_process(receiver, clock)) as notifier:
            assert notifier.submit([target()], notification()) is True
            await until(done(notifier, 1))
    assert (notifier.sent, notifier.failed, notifier.dropped) == (1, 0, 0)
    [request] = receiver.requests
    assert request.path == SECRET_PATH
    assert request.body == notification().payload()
    assert request.headers["authorization"] == HEADERS["Authorization"]
    assert request.headers["x-hook-key"] == HEADERS["X-Hook-Key"]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("duixwatch/")
    assert clock.sleeps == []


async def test_each_target_gets_its_own_post(clock: FakeClock) -> None:
    receiver = Receiver()
    targets = [target("http://hooks.test/a", headers={}), target("http://hooks.test/b", headers={})]
    with anyio.fail_after(WAIT_SECONDS):
        async with running(in_process(receiver, clock)) as notifier:
            assert notifier.submit(targets, notification()) is True
            await until(done(notifier, 2))
    assert [r.path for r in receiver.requests] == ["/a", "/b"]
    assert notifier.sent == 2


async def test_a_500_is_retried_with_exponential_backoff_until_it_succeeds(
    clock: FakeClock,
) -> None:
    receiver = Receiver(500, 503)
    with anyio.fail_after(WAIT_SECONDS):
        async with running(in_process(receiver, clock, backoff_seconds=0.5)) as notifier:
            notifier.submit([target()], notification())
            await until(done(notifier, 1))
    assert len(receiver.requests) == 3
    assert clock.sleeps == [0.5, 1.0]
    assert (notifier.sent, notifier.failed) == (1, 0)


async def test_a_400_is_not_retried_and_counts_as_failed(clock: FakeClock) -> None:
    receiver = Receiver(400)
    with (
        structlog.testing.capture_logs() as logs,
        anyio.fail_after(WAIT_SECONDS),
    ):
        async with running(in_process(receiver, clock)) as notifier:
            notifier.submit([target()], notification())
            await until(done(notifier, 1))
    assert len(receiver.requests) == 1
    assert clock.sleeps == []
    assert (notifier.sent, notifier.failed) == (0, 1)
    [failed] = [e for e in logs if e["event"] == "notification_failed"]
    assert (failed["reason"], failed["status"], failed["attempts"]) == ("status", 400, 1)


async def test_it_gives_up_after_the_retries_and_counts_failed(clock: FakeClock) -> None:
    receiver = Receiver(500, 502, 503, 504)
    with (
        structlog.testing.capture_logs() as logs,
        anyio.fail_after(WAIT_SECONDS),
    ):
        async with running(in_process(receiver, clock, retries=2)) as notifier:
            notifier.submit([target()], notification())
            await until(done(notifier, 1))
    assert len(receiver.requests) == 3
    assert clock.sleeps == [1.0, 2.0]
    assert (notifier.sent, notifier.failed) == (0, 1)
    [failed] = [e for e in logs if e["event"] == "notification_failed"]
    assert failed["status"] == 503
    assert failed["attempts"] == 3
    assert failed["url"] == "http://hooks.test/…"
    assert (failed["policy"], failed["app"], failed["cycle"]) == (
        "max-session-age",
        "frontdesk",
        "c-42",
    )


async def test_a_429_waits_at_least_its_retry_after(clock: FakeClock) -> None:
    receiver = Receiver(429, 429, retry_after="7")
    with anyio.fail_after(WAIT_SECONDS):
        async with running(in_process(receiver, clock, backoff_seconds=4)) as notifier:
            notifier.submit([target()], notification())
            await until(done(notifier, 1))
    assert clock.sleeps == [7.0, 8.0]
    assert notifier.sent == 1


async def test_transport_errors_are_retried_then_counted_failed(clock: FakeClock) -> None:
    network = Unreachable()
    with (
        structlog.testing.capture_logs() as logs,
        anyio.fail_after(WAIT_SECONDS),
    ):
        async with running(
            Notifier(clock=clock, poster=WebhookPoster(clock=clock, transport=network), retries=1)
        ) as notifier:
            notifier.submit([target()], notification())
            await until(done(notifier, 1))
    assert network.attempts == 2
    assert clock.sleeps == [1.0]
    [failed] = [e for e in logs if e["event"] == "notification_failed"]
    assert (failed["reason"], failed["error"], failed["status"]) == (
        "transport",
        "ConnectError",
        None,
    )


async def test_a_receiver_that_never_answers_times_out_and_is_retried(clock: FakeClock) -> None:
    receiver = Receiver(hang=True)
    with (
        structlog.testing.capture_logs() as logs,
        anyio.fail_after(WAIT_SECONDS),
    ):
        async with running(in_process(receiver, clock, retries=1)) as notifier:
            notifier.submit([target(timeout_seconds=0.05)], notification())
            await until(done(notifier, 1))
    assert len(receiver.requests) == 2
    assert notifier.failed == 1
    [failed] = [e for e in logs if e["event"] == "notification_failed"]
    assert failed["reason"] == "timeout"


async def test_a_bad_target_fails_alone_and_the_worker_carries_on(clock: FakeClock) -> None:
    receiver = Receiver()
    with (
        structlog.testing.capture_logs() as logs,
        anyio.fail_after(WAIT_SECONDS),
    ):
        async with running(in_process(receiver, clock)) as notifier:
            bad = target(headers={"X-Name": "caf\u00e9"})  # header values must be ASCII
            notifier.submit([bad, target()], notification())
            await until(done(notifier, 2))
    assert (notifier.sent, notifier.failed) == (1, 1)
    assert clock.sleeps == []
    [failed] = [e for e in logs if e["event"] == "notification_failed"]
    assert (failed["reason"], failed["error"]) == ("invalid", "UnicodeEncodeError")
    assert "caf" not in repr(logs)


# --------------------------------------------------------------------------- never blocking


async def test_submit_never_blocks_on_a_hanging_receiver_and_drops_when_the_queue_is_full(
    clock: FakeClock,
) -> None:
    """The worker is stuck in the first POST; submits still return at once, up to the bound."""
    receiver = Receiver(hang=True)
    with (
        structlog.testing.capture_logs() as logs,
        anyio.fail_after(WAIT_SECONDS),
    ):
        async with running(in_process(receiver, clock, max_pending=2)) as notifier:
            slow = target(timeout_seconds=60)  # the longest a target may wait
            assert notifier.submit([slow], notification()) is True
            await receiver.entered.wait()
            started = anyio.current_time()
            assert notifier.submit([slow], notification()) is True
            assert notifier.submit([slow], notification()) is True
            assert notifier.submit([slow], notification(cycle="c-43")) is False
            assert anyio.current_time() - started < 0.5
            assert (notifier.sent, notifier.failed, notifier.dropped) == (0, 0, 1)
    [dropped] = [e for e in logs if e["event"] == "notification_dropped"]
    assert (dropped["reason"], dropped["cycle"]) == ("queue_full", "c-43")
    # Cancelled with two entries still queued: they were never sent, so they count as dropped.
    assert notifier.dropped == 3
    assert notifier.submit([slow], notification()) is False


def test_submit_before_the_worker_runs_queues_up_to_the_bound_and_never_raises() -> None:
    clock = FakeClock()
    notifier = Notifier(clock=clock, poster=WebhookPoster(clock=clock), max_pending=1)
    assert notifier.submit([], notification()) is True
    assert notifier.submit([target(), target()], notification()) is False
    assert notifier.dropped == 1


# --------------------------------------------------------------------------- secrets


async def test_logs_never_show_the_url_secrets_or_header_values(clock: FakeClock) -> None:
    receiver = Receiver(500, 500, 500)
    with (
        structlog.testing.capture_logs() as logs,
        anyio.fail_after(WAIT_SECONDS),
    ):
        notifier = in_process(receiver, clock, max_pending=1)
        notifier.submit([target(), target()], notification())  # the second one is dropped
        async with running(notifier):
            await until(done(notifier, 1))
    assert {e["event"] for e in logs} >= {"notification_dropped", "notification_failed"}
    assert all(e["url"] == "http://hooks.test/…" for e in logs if "url" in e)
    assert not any(secret in repr(logs) for secret in SECRETS)


# --------------------------------------------------------------------------- real sockets


async def test_a_webhook_served_on_loopback_receives_the_post() -> None:
    receiver = Receiver(503)
    clock = FakeClock()
    with anyio.fail_after(WAIT_SECONDS):
        async with anyio.create_task_group() as tg:
            port = await tg.start(asgi.serve, receiver.app())
            notifier = Notifier(clock=clock, poster=WebhookPoster(clock=clock))
            await tg.start(notifier.run)
            url = f"http://127.0.0.1:{port}{SECRET_PATH}?token=query-secret-xyz"
            assert notifier.submit([target(url, timeout_seconds=2)], notification()) is True
            await until(done(notifier, 1))
            tg.cancel_scope.cancel()
    assert (notifier.sent, notifier.failed) == (1, 0)
    assert clock.sleeps == [1.0]
    assert [r.path for r in receiver.requests] == [SECRET_PATH] * 2
    assert receiver.requests[-1].body["text"].startswith("duixwatch: policy max-session-age")
    assert receiver.requests[-1].headers["authorization"] == HEADERS["Authorization"]
