"""http.security: basic auth, headers, rate limit and reloads of the web config, in process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import bcrypt
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from duixwatch.export.exposition import Registry
from duixwatch.http.security import CACHE_SIZE, SurfaceMetrics, WebSecurity
from tests.fakes import FakeClock

PASSWORD = "correct horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


async def text(_: Request) -> Response:
    return PlainTextResponse("ok\n", headers={"X-Frame-Options": "sameorigin"})


async def page(_: Request) -> Response:
    return HTMLResponse("<p>status</p>")


APP = Starlette(
    routes=[
        Route("/metrics", text),
        Route("/status", page),
        Route("/healthz", text),
        Route("/readyz", text),
    ]
)


class Counted:
    """bcrypt's check, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.calls.append(hashed)
        return bcrypt.checkpw(password, hashed)


def bump(path: Path, text: str) -> None:
    """Rewrite ``path`` so that a stat sees the change even within one clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


class Surface:
    def __init__(self, tmp_path: Path, clock: FakeClock, text: str, **kwargs: object) -> None:
        self.path = tmp_path / "web.yml"
        bump(self.path, text)
        self.registry = Registry()
        self.checks = Counted()
        self.security = WebSecurity(
            self.path,
            open_health_endpoints=bool(kwargs.get("open_health", True)),
            metrics=SurfaceMetrics(self.registry),
            now=clock.now,
            monotonic=clock.monotonic,
            checkpw=self.checks,
        )

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def surface(tmp_path: Path, clock: FakeClock) -> Callable[..., Surface]:
    return lambda text, **kw: Surface(tmp_path, clock, text, **kw)


async def client(surface: Surface) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=surface.security.wrap(APP)),
        base_url="http://duixwatch.test",
    ) as http:
        yield http


@pytest.fixture
async def users(
    surface: Callable[..., Surface],
) -> AsyncIterator[tuple[Surface, httpx.AsyncClient]]:
    made = surface(f"basic_auth_users:\n  prometheus: {HASH}\n")
    async for http in client(made):
        yield made, http


async def test_basic_auth_lets_the_user_in_and_refuses_the_rest(
    users: tuple[Surface, httpx.AsyncClient],
) -> None:
    made, http = users
    ok = await http.get("/metrics", auth=("prometheus", PASSWORD))
    assert (ok.status_code, ok.text) == (200, "ok\n")
    for auth in (None, ("prometheus", "wrong"), ("nobody", PASSWORD), ("", "")):
        refused = await http.get("/metrics", auth=auth)
        assert refused.status_code == 401, auth
        assert refused.headers["www-authenticate"] == "Basic"
        assert refused.text == "Unauthorized\n"
    for header in ("Bearer x", "Basic !!!", "Basic bm9jb2xvbg=="):  # the last: "nocolon"
        assert (await http.get("/metrics", headers={"Authorization": header})).status_code == 401
    assert made.value("duixwatch_http_requests_denied_total", reason="unauthorized") == 7


async def test_a_scrape_costs_one_bcrypt_and_an_unknown_user_costs_one_too(
    users: tuple[Surface, httpx.AsyncClient],
) -> None:
    made, http = users
    for _ in range(5):
        assert (await http.get("/metrics", auth=("prometheus", PASSWORD))).status_code == 200
    assert made.checks.calls == [HASH.encode()]  # then cached
    assert (await http.get("/metrics", auth=("mallory", "guess"))).status_code == 401
    # an unknown user is checked against a dummy hash of the same cost: same time as a user
    (_, dummy) = made.checks.calls
    assert dummy != HASH.encode()
    assert dummy.startswith(b"$2b$04$")


async def test_the_cache_is_bounded(users: tuple[Surface, httpx.AsyncClient]) -> None:
    made, http = users
    for n in range(CACHE_SIZE + 20):
        await http.get("/metrics", auth=("prometheus", f"wrong-{n}"))
    assert len(made.security._cache) <= CACHE_SIZE


async def test_a_password_longer_than_bcrypt_reads_is_refused(
    users: tuple[Surface, httpx.AsyncClient],
) -> None:
    made, http = users
    response = await http.get("/metrics", auth=("prometheus", PASSWORD + "x" * 80))
    assert response.status_code == 401
    assert made.checks.calls == []


async def test_health_endpoints_stay_open_for_kubelet_unless_told(
    surface: Callable[..., Surface],
) -> None:
    text = f"basic_auth_users:\n  prometheus: {HASH}\n"
    async for http in client(surface(text)):
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/status")).status_code == 401
    async for http in client(surface(text, open_health=False)):
        assert (await http.get("/healthz")).status_code == 401


async def test_headers_from_the_file_and_safe_defaults(surface: Callable[..., Surface]) -> None:
    made = surface(
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n"
    )
    async for http in client(made):
        plain = await http.get("/metrics")
        assert plain.headers["x-frame-options"] == "deny"  # the file's, over the endpoint's
        assert plain.headers.get_list("x-frame-options") == ["deny"]
        assert plain.headers["strict-transport-security"] == "max-age=31536000"
        assert plain.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in plain.headers
        html = await http.get("/status")
        assert html.headers["content-security-policy"].startswith("default-src 'none'")
        assert html.headers["x-content-type-options"] == "nosniff"


async def test_the_rate_limit_is_a_token_bucket(
    surface: Callable[..., Surface], clock: FakeClock
) -> None:
    made = surface("rate_limit:\n  interval: 1s\n  burst: 2\n")
    async for http in client(made):
        codes = [(await http.get("/metrics")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert (await http.get("/healthz")).status_code == 200  # open endpoints are not limited
        clock.advance(1.0)
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/metrics")).status_code == 429
    assert made.value("duixwatch_http_requests_denied_total", reason="rate_limited") == 2


async def test_a_change_to_the_file_is_in_force_at_the_next_request(
    users: tuple[Surface, httpx.AsyncClient],
) -> None:
    made, http = users
    other = bcrypt.hashpw(b"new password", bcrypt.gensalt(4)).decode()
    bump(made.path, f"basic_auth_users:\n  grafana: {other}\n")
    assert (await http.get("/metrics", auth=("prometheus", PASSWORD))).status_code == 401
    assert (await http.get("/metrics", auth=("grafana", "new password"))).status_code == 200
    assert made.value("duixwatch_web_config_last_reload_successful") == 1
    # a file that no longer loads: the old one stays in force, said once in a metric and a log
    bump(made.path, f"basic_auth_users:\n  grafana: {other}\n  broken: [\n")
    with capture_logs() as logs:
        for _ in range(3):
            response = await http.get("/metrics", auth=("grafana", "new password"))
            assert response.status_code == 200
    assert made.value("duixwatch_web_config_last_reload_successful") == 0
    (failure,) = [e for e in logs if e["event"] == "web_config_reload_failed"]
    assert failure["error"].startswith(f"{made.path}:4: YAML syntax error")
    assert other not in str(logs)
    assert "new password" not in str(logs)


async def test_tls_cannot_be_turned_on_by_a_reload(
    users: tuple[Surface, httpx.AsyncClient], tmp_path: Path
) -> None:
    from tests.tls import CA

    made, http = users
    issued = CA(tmp_path / "ca").issue("on.test")
    bump(
        made.path,
        f"tls_server_config:\n  cert_file: {issued.cert}\n  key_file: {issued.key}\n",
    )
    assert (await http.get("/metrics", auth=("prometheus", PASSWORD))).status_code == 200
    assert made.value("duixwatch_web_config_last_reload_successful") == 0
    assert not made.security.config.tls.enabled
