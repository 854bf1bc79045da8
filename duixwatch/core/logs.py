"""Structured logging: structlog set up once, from the CLI.

JSON lines for machines (the default when stderr is not a terminal), readable console lines on
a TTY. Events are snake_case names with key-value fields; context such as ``app=`` is bound
with structlog's contextvars.

:func:`drop_secrets` runs on every event before rendering: any field whose name says it holds
a secret (``app_key``, ``token``, ``authorization`` …) is removed, and any
:class:`pydantic.SecretStr` value is masked, so that no log line can carry an appKey or token
even if a caller passes one by mistake.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog
from pydantic import SecretStr

from duixwatch.core.text import inert

__all__ = ["configure", "drop_secrets", "get_logger", "inert_values"]

_SECRET_NAME_PARTS = ("app_key", "appkey", "token", "authorization", "password", "secret")


def _is_secret_name(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(part in lowered for part in _SECRET_NAME_PARTS)


def drop_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: remove secret-named fields, mask SecretStr values."""
    for key in [k for k in event_dict if k != "event" and _is_secret_name(k)]:
        del event_dict[key]
    for key, value in event_dict.items():
        if isinstance(value, SecretStr):
            event_dict[key] = "**********"
    return event_dict


def inert_values(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor for the console renderer: string values (a session id from the
    platform, an error text) cannot move the cursor, recolour or reverse the terminal line:
    control and format characters are shown as ``\\uXXXX`` (newlines and tabs kept in a
    traceback). JSON lines need no such step: the encoder escapes them."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = inert(value, keep="\n\t" if key == "exception" else "")
    return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is when a line is written, not when logging was set
    up (a test harness, or a program embedding the CLI, may swap it and close the old one)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(
    *, json: bool | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Set up structlog (and route the standard library's logging through the same stream,
    by default the process's stderr as it is at each write)."""
    stream = stream or cast(TextIO, _CurrentStderr())
    if json is None:
        json = not stream.isatty()
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            drop_secrets,
            structlog.processors.format_exc_info,
            *(() if json else (inert_values,)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream, force=True)
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, RepeatLimit) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(RepeatLimit())


class RepeatLimit(logging.Filter):
    """Lets the same asyncio complaint through once per ``every`` seconds, saying how many
    were held back: out of file descriptors, asyncio logs ``socket.accept() out of system
    resource`` with a traceback on every turn of the loop (741,470 of them, 311 MB, in 40 s of
    a connection flood)."""

    def __init__(self, every: float = 10.0) -> None:
        super().__init__()
        self._every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)[:80]
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self._every:g} s)"
        if len(self._last) > 1000:  # bounded: forget the oldest complaints
            for stale in sorted(self._last, key=self._last.__getitem__)[:500]:
                del self._last[stale]
        return True


def get_logger(name: str | None = None) -> Any:
    """A structlog logger (bound with ``logger=name`` when a name is given)."""
    log = structlog.get_logger()
    return log.bind(logger=name) if name else log
