"""http.server: the routes over a daemon view, in process (the daemon's own tests go over
loopback with the real daemon)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest

from duixwatch.core import models
from duixwatch.export.autoscaling import ScalingReading
from duixwatch.http import server
from tests.fakes import FakeClock


class View:
    """A daemon as the HTTP surface sees it, with its answers set by the test."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.apps: list[models.AppSnapshot] = []
        self.waiting: list[str] = []
        self.late: list[str] = []

    def snapshots(self) -> Sequence[models.AppSnapshot]:
        return self.apps

    def pending(self) -> Sequence[str]:
        return self.waiting

    def overdue(self) -> Sequence[str]:
        return self.late

    def info(self) -> dict[str, Any]:
        return {"version": "test", "policies": [], "recent_actions": []}

    def scaling(self, target: str) -> ScalingReading | None:
        return None


def render(accept: str | None) -> tuple[list[bytes], str]:
    return [b"# a body\n", b"in two pieces\n"], "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
def view(clock: FakeClock) -> View:
    return View(clock)


@pytest.fixture
async def http(view: View, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    app = server.create_app(render=render, view=view, clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://duixwatch.test"
    ) as client:
        yield client


def snapshot(clock: FakeClock, name: str, session_id: str = "s1") -> models.AppSnapshot:
    started = clock.now() - timedelta(seconds=3725)
    return models.AppSnapshot(
        app=name,
        app_id="100",
        poll_interval_seconds=15,
        fetched_at=clock.now(),
        concurrency=models.Concurrency("1", 9, 1),
        sessions=models.SessionList((models.Session(session_id, started),), "data[]"),
    )


async def test_metrics_sends_the_pieces_with_their_length(http: httpx.AsyncClient) -> None:
    response = await http.get("/metrics")
    assert response.content == b"# a body\nin two pieces\n"
    assert response.headers["content-length"] == str(len(response.content))
    head = await http.head("/metrics")
    assert (head.status_code, head.content) == (200, b"")


async def test_health_and_readiness_name_the_apps_that_hold_them_back(
    http: httpx.AsyncClient, view: View
) -> None:
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200
    view.late, view.waiting = ["kiosk"], ["lobby"]
    health, ready = await http.get("/healthz"), await http.get("/readyz")
    assert (health.status_code, health.json()["overdue_apps"]) == (503, ["kiosk"])
    assert (ready.status_code, ready.json()["pending_apps"]) == (503, ["lobby"])


async def test_status_narrows_to_one_app_and_says_when_there_is_none(
    http: httpx.AsyncClient, view: View, clock: FakeClock
) -> None:
    view.apps = [snapshot(clock, "frontdesk"), snapshot(clock, "kiosk")]
    one = (await http.get("/status", params={"app": "kiosk"})).json()
    assert [a["app"] for a in one["apps"]] == ["kiosk"]
    assert one["apps"][0]["sessions"]["oldest_age_seconds"] == 3725
    bare = (await http.get("/status", params={"sessions": "0"})).json()
    assert "items" not in bare["apps"][0]["sessions"]
    missing = await http.get("/status", params={"app": "nobody"})
    assert missing.status_code == 404


def _whole(document: object) -> bytes:
    """The document as one ``JSONResponse`` would have written it."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@pytest.mark.parametrize("count", [0, 1, 2, 500])
@pytest.mark.parametrize("head", [{}, {"version": "1.0", "ünï": [1, None, "<b>"]}])
def test_json_chunks_are_the_bytes_of_one_dumps(
    monkeypatch: pytest.MonkeyPatch, head: dict[str, Any], count: int
) -> None:
    monkeypatch.setattr(server, "JSON_CHUNK_BYTES", 256)
    items = [
        {"app": f"a{n}", "sessions": {"items": [{"id": "é\n", "age": n / 3}]}} for n in range(count)
    ]
    chunks = server.json_chunks(head, "apps", iter(items))
    assert b"".join(chunks) == _whole({**head, "apps": items})
    if count == 500:  # split into pieces of about the chunk size, none empty
        assert len(chunks) > 10
        assert all(0 < len(chunk) < 256 + 200 for chunk in chunks)


def test_json_chunks_refuse_what_json_cannot_carry() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        server.json_chunks({}, "apps", iter([{"x": math.nan}]))


async def test_status_json_is_one_document_built_an_app_at_a_time(
    http: httpx.AsyncClient, view: View, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    view.apps = [snapshot(clock, f"app-{n}", session_id=f"s-{n}") for n in range(300)]
    steps: list[str] = []
    build, dumps = server.snapshot_status, server._dumps

    def built(snap: models.AppSnapshot, *args: Any, **kwargs: Any) -> dict[str, Any]:
        steps.append("build")
        return build(snap, *args, **kwargs)

    def encoded(value: object) -> bytes:
        steps.append("encode")
        return dumps(value)

    monkeypatch.setattr(server, "snapshot_status", built)
    monkeypatch.setattr(server, "_dumps", encoded)
    response = await http.get("/status")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    body = response.json()
    assert [a["app"] for a in body["apps"]] == [f"app-{n}" for n in range(300)]
    assert body["apps"][299]["sessions"]["items"][0]["session_id"] == "s-299"
    assert list(body) == ["version", "policies", "recent_actions", "now", "apps"]
    # Each APP's entry is encoded before the next is built: never all of them at once.
    assert steps.count("build") == 300
    assert "build,build" not in ",".join(steps)


async def test_the_status_page_escapes_what_it_shows(
    http: httpx.AsyncClient, view: View, clock: FakeClock
) -> None:
    view.apps = [snapshot(clock, "<b>frontdesk</b>")]
    page = await http.get("/status", headers={"accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;frontdesk&lt;/b&gt;" in page.text
    assert "<b>frontdesk</b>" not in page.text
    assert "1h02m05s" in page.text  # the oldest session, as the CLI writes ages


@pytest.mark.parametrize("path", ["/metrics", "/status", "/healthz", "/api/v1/scaling/x"])
async def test_no_endpoint_takes_a_write(http: httpx.AsyncClient, path: str) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert (await http.request(method, path)).status_code == 405


async def test_an_unknown_scaling_target_is_404(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/v1/scaling/nothing")).status_code == 404


async def test_a_trailing_slash_is_404_not_a_redirect_built_from_the_host(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.get("/metrics/", headers={"host": "evil.example"})
    assert answer.status_code == 404
    assert "location" not in answer.headers


async def test_control_and_bidi_characters_from_the_platform_are_shown_not_obeyed(
    http: httpx.AsyncClient, view: View, clock: FakeClock
) -> None:
    failed = replace(
        snapshot(clock, "frontdesk"),
        error=models.PollError("malformed", "id \u202egnp.exe\x07 rejected", clock.now()),
    )
    view.apps = [failed]
    page = (await http.get("/status", headers={"accept": "text/html"})).text
    assert "\u202e" not in page
    assert "\x07" not in page
    assert "\\u202egnp.exe\\u0007 rejected" in page


async def test_status_details_off_shows_counts_and_never_a_session_id(
    view: View, clock: FakeClock
) -> None:
    view.apps = [snapshot(clock, "frontdesk", session_id="secret-session-1")]
    view.info = lambda: {  # type: ignore[method-assign]
        "version": "test",
        "policies": [
            {
                "policy": "max-age",
                "app": "frontdesk",
                "dry_run": True,
                "matched": [{"session_id": "secret-session-1", "reason": "old"}],
                "actions": [{"session_id": "secret-session-1", "action": "stop_session"}],
                "abort": None,
                "waiting": None,
            }
        ],
        "recent_actions": [
            {
                "at": "2026-01-01T00:00:00+00:00",
                "policy": "max-age",
                "app": "frontdesk",
                "action": "stop_session",
                "session_id": "secret-session-1",
                "outcome": "dry_run",
                "reason": "old",
                "error": None,
            }
        ],
        "conversations": [
            {
                "app": "frontdesk",
                "conversation": "c1",
                "up": True,
                "summary": {"name": "Ada"},
                "changes": 1,
                "last_change_at": "2026-01-01T00:00:00+00:00",
                "last_change_paths": ["prompt"],
            }
        ],
    }
    app = server.create_app(render=render, view=view, clock=clock, details=lambda: False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://duixwatch.test"
    ) as http:
        body = (await http.get("/status", params={"sessions": "1"})).json()
        page = (await http.get("/status", headers={"accept": "text/html"})).text
    assert body["apps"][0]["sessions"]["count"] == 1
    assert "items" not in body["apps"][0]["sessions"]
    assert len(body["policies"][0]["matched"]) == 1
    assert body["conversations"][0]["summary"] == {}
    for shown in (str(body), page):
        assert "secret-session-1" not in shown
        assert "Ada" not in shown
