"""``avatar create … --wait`` / ``avatar query ID --wait``: wait for a training to end.

:func:`wait` asks ``queryAvatar`` every ``interval`` seconds until the avatar succeeded or
failed, or ``timeout`` passed, telling a :class:`Progress` how it goes: on a terminal a line
that redraws itself (a spinner, the status, the time waited), elsewhere a plain line per
change of status and one a minute while it trains, with ``-o json`` nothing but the result.
Exit codes: 0 succeeded, 1 failed (the platform's reason printed), 124 timed out (as
``timeout(1)``).
"""

from __future__ import annotations

from typing import Final, Protocol, TextIO

from duixwatch.core import documents, models
from duixwatch.core.clock import Clock
from duixwatch.duix import DuixClient
from duixwatch.export.status import format_age

__all__ = [
    "EXIT_TIMEOUT",
    "JsonProgress",
    "PlainProgress",
    "Progress",
    "TerminalProgress",
    "progress_for",
    "wait",
]

EXIT_TIMEOUT: Final = 124
_SPINNER: Final = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
#: How often a terminal's line is redrawn between two queries.
_FRAME_SECONDS: Final = 0.1
#: A plain line while training, at most this often.
_PLAIN_EVERY_SECONDS: Final = 60.0


class Progress(Protocol):
    #: Seconds between two redraws while waiting (``None``: only after each query).
    frame_seconds: float | None

    def update(self, avatar: documents.Avatar | None, elapsed: float) -> None: ...

    def finish(self) -> None: ...


def _describe(avatar: documents.Avatar | None) -> str:
    if avatar is None:
        return "asking"
    name = f" ({avatar.name})" if avatar.name else ""
    return f"avatar {avatar.avatar_id}{name}: {avatar.status}"


class TerminalProgress:
    """One line, redrawn in place: spinner, status, time waited."""

    frame_seconds: float | None = _FRAME_SECONDS

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._frame = 0

    def update(self, avatar: documents.Avatar | None, elapsed: float) -> None:
        spinner = _SPINNER[self._frame % len(_SPINNER)]
        self._frame += 1
        self._out.write(f"\r\x1b[K{spinner} {_describe(avatar)} · {format_age(elapsed)} waited")
        self._out.flush()

    def finish(self) -> None:
        self._out.write("\r\x1b[K")
        self._out.flush()


class PlainProgress:
    """A line when the status changes, and one a minute while it stays the same."""

    frame_seconds: float | None = None

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._last: tuple[str | None, float] | None = None

    def update(self, avatar: documents.Avatar | None, elapsed: float) -> None:
        if avatar is None:
            return
        status = avatar.status
        if (
            self._last is None
            or self._last[0] != status
            or (elapsed - self._last[1] >= _PLAIN_EVERY_SECONDS)
        ):
            self._out.write(f"{_describe(avatar)} after {format_age(elapsed)}\n")
            self._out.flush()
            self._last = (status, elapsed)

    def finish(self) -> None:
        return None  # every line is complete already


class JsonProgress:
    """Nothing: ``-o json`` prints only the result."""

    frame_seconds: float | None = None

    def update(self, avatar: documents.Avatar | None, elapsed: float) -> None:
        return None

    def finish(self) -> None:
        return None


def progress_for(out: TextIO, *, output: str) -> Progress:
    if output == "json":
        return JsonProgress()
    isatty = getattr(out, "isatty", None)
    return TerminalProgress(out) if isatty is not None and isatty() else PlainProgress(out)


async def wait(
    client: DuixClient,
    app: models.AppCredentials,
    avatar_id: str,
    *,
    clock: Clock,
    timeout: float,  # noqa: ASYNC109 - a deadline on the injected clock, not anyio's
    interval: float,
    progress: Progress,
) -> tuple[documents.Avatar | None, float]:
    """The avatar once its training is final, and the seconds waited; ``None`` on timeout."""
    started = clock.monotonic()
    avatar: documents.Avatar | None = None
    try:
        for _ in range(int(timeout / min(interval, _FRAME_SECONDS)) + 2):  # bounded
            elapsed = clock.monotonic() - started
            if elapsed >= timeout:
                return None, elapsed
            avatar = await client.query_avatar(app, avatar_id)
            progress.update(avatar, clock.monotonic() - started)
            if avatar.status in ("success", "failed"):
                return avatar, clock.monotonic() - started
            next_query = clock.monotonic() + interval
            while (now := clock.monotonic()) < next_query and now - started < timeout:
                step = progress.frame_seconds or (next_query - now)
                await clock.sleep(min(step, next_query - now, timeout - (now - started)))
                if progress.frame_seconds is not None:
                    progress.update(avatar, clock.monotonic() - started)
        return None, clock.monotonic() - started
    finally:
        progress.finish()
