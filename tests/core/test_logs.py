"""logs: secrets never reach a log line."""

from __future__ import annotations

import io
import json

import pytest
import structlog
from pydantic import SecretStr

from duixwatch.core import logs


@pytest.fixture(autouse=True)
def _reset_structlog() -> None:
    yield
    structlog.reset_defaults()


def test_secret_named_fields_are_dropped_and_secret_values_masked() -> None:
    stream = io.StringIO()
    logs.configure(json=True, level="debug", stream=stream)
    log = logs.get_logger("test")
    log.info(
        "poll_failed",
        app="frontdesk",
        app_key="k-1",
        token="eyJhbGciOi",
        appKey="k-2",
        Authorization="Bearer x",
        key=SecretStr("k-3"),
    )
    line = json.loads(stream.getvalue())
    assert line["event"] == "poll_failed"
    assert line["app"] == "frontdesk"
    assert line["level"] == "info"
    assert "ts" in line
    assert line["key"] == "**********"
    for secret in ("k-1", "k-2", "k-3", "eyJhbGciOi", "Bearer x"):
        assert secret not in stream.getvalue()


def test_levels_below_the_configured_one_are_not_written() -> None:
    stream = io.StringIO()
    logs.configure(json=True, level="warning", stream=stream)
    logs.get_logger().info("quiet")
    logs.get_logger().warning("loud")
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["loud"]


def test_an_unknown_level_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="log level"):
        logs.configure(level="chatty", stream=io.StringIO())


def test_a_flood_of_one_asyncio_complaint_is_logged_once_per_interval() -> None:
    import logging
    import time

    from duixwatch.core.logs import RepeatLimit

    limit = RepeatLimit(every=0.2)

    def record() -> logging.LogRecord:
        return logging.LogRecord(
            "asyncio",
            logging.ERROR,
            __file__,
            1,
            "socket.accept() out of system resource",
            None,
            None,
        )

    passed = [r for r in (record() for _ in range(10_000)) if limit.filter(r)]
    assert len(passed) == 1
    time.sleep(0.25)
    later = record()
    assert limit.filter(later)
    assert "(9999 more like it in the last 0.2 s)" in str(later.msg)
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", None, None)
    assert limit.filter(other)


def test_the_console_shows_control_and_bidi_characters_instead_of_obeying_them() -> None:
    """A session id or error text from the platform cannot recolour, move or reverse a
    terminal line; JSON lines escape them by themselves."""
    hostile = "123\u202e456\x1b[31m\x07\x00"
    stream = io.StringIO()
    logs.configure(json=False, level="info", stream=stream)
    logs.get_logger("t").info("session_stopped", session_id=hostile)
    line = stream.getvalue()
    assert "\u202e" not in line
    assert "\x1b" not in line
    assert "\x07" not in line
    assert "\x00" not in line
    assert "123\\u202e456\\u001b[31m\\u0007\\u0000" in line
    stream = io.StringIO()
    logs.configure(json=True, level="info", stream=stream)
    logs.get_logger("t").info("session_stopped", session_id=hostile)
    assert json.loads(stream.getvalue())["session_id"] == hostile  # escaped, and lossless
    assert "\u202e" not in stream.getvalue()
