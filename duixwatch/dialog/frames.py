"""Streamed answers, decoded as they arrive: Server-Sent Events or newline-delimited JSON.

DUIX's streaming dialog integration expects a stream of ``{answer, isEnd}`` chunks; the one
public implementation frames them as Server-Sent Events (``data: {...}``), others write one
JSON object per line. :class:`SseDecoder` follows the WHATWG event-stream rules: lines end in
CRLF, LF or CR; a line starting with ``:`` is a comment; ``field: value`` (one space after the
colon dropped); ``data`` lines accumulate, joined by ``\\n``; a blank line dispatches the event
(none when no ``data`` was given); ``event`` names it. :class:`NdjsonDecoder` yields each
non-blank line. Both take bytes in any pieces (a UTF-8 character or a CRLF may be split across
two reads) and report each frame with the time of the read that completed it.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Literal

__all__ = ["Frame", "FrameDecoder", "NdjsonDecoder", "SseDecoder", "decoder_for", "sniff"]

Framing = Literal["sse", "ndjson"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: its payload text, the SSE event name (``message`` by default; ``None`` for
    NDJSON) and when it was complete (seconds since the request was sent)."""

    data: str
    event: str | None
    at: float


class _Lines:
    """Bytes in, complete lines out (CRLF, LF or CR), UTF-8 decoded incrementally."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._after_cr = False

    def feed(self, chunk: bytes, *, final: bool = False) -> list[str]:
        text = self._decoder.decode(chunk, final=final)
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across two reads
        self._after_cr = False
        buffer = self._pending + text
        lines = buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pending = lines.pop()
        if buffer.endswith("\r"):
            self._after_cr = True
        if final and self._pending:
            lines.append(self._pending)
            self._pending = ""
        return lines


class SseDecoder:
    """Server-Sent Events (``text/event-stream``)."""

    framing: Framing = "sse"

    def __init__(self) -> None:
        self._lines = _Lines()
        self._data: list[str] = []
        self._event = ""
        #: Lines that are neither a field nor a comment (reported, not fatal: the spec ignores
        #: unknown fields, so a line without a colon is a field with an empty value).
        self.odd_lines = 0

    def feed(self, chunk: bytes, at: float, *, final: bool = False) -> list[Frame]:
        frames: list[Frame] = []
        for line in self._lines.feed(chunk, final=final):
            frame = self._line(line, at)
            if frame is not None:
                frames.append(frame)
        if final:
            # A stream that ends without the blank line: the spec drops the event; a
            # conformance check reports the data instead of hiding it.
            frame = self._dispatch(at)
            if frame is not None:
                frames.append(frame)
        return frames

    def _line(self, line: str, at: float) -> Frame | None:
        if line == "":
            return self._dispatch(at)
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if not colon:
            self.odd_lines += 1
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name not in ("id", "retry"):
            self.odd_lines += 1
        return None

    def _dispatch(self, at: float) -> Frame | None:
        if not self._data:
            self._event = ""
            return None
        frame = Frame("\n".join(self._data), self._event or "message", at)
        self._data = []
        self._event = ""
        return frame


class NdjsonDecoder:
    """Newline-delimited JSON: one frame per non-blank line."""

    framing: Framing = "ndjson"

    def __init__(self) -> None:
        self._lines = _Lines()
        self.odd_lines = 0

    def feed(self, chunk: bytes, at: float, *, final: bool = False) -> list[Frame]:
        return [
            Frame(line, None, at) for line in self._lines.feed(chunk, final=final) if line.strip()
        ]


FrameDecoder = SseDecoder | NdjsonDecoder


def sniff(head: bytes) -> Framing:
    """The framing of a stream whose Content-Type does not say: SSE when its first non-blank
    line is a comment or an SSE field, else NDJSON."""
    for raw in head.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith((b":", b"data:", b"event:", b"id:", b"retry:")) or line == b"data":
            return "sse"
        return "ndjson"
    return "sse"


def decoder_for(framing: Framing) -> FrameDecoder:
    return SseDecoder() if framing == "sse" else NdjsonDecoder()
