"""Asking a dialog backend, as DUIX does, and recording what comes back with its timings.

:func:`ask` POSTs one question (:func:`duixwatch.dialog.contract.question`) and reads the
answer under one deadline: the response headers (time to first byte), every piece of the body
with the time it arrived, frames decoded as they complete (so the end of a stream is known
when its final chunk arrives, not when the server closes), then at most ``close_grace``
seconds more to see whether the stream closes after its final chunk. :func:`check` is a whole
conformance check: each question in turn (with the earlier turns as ``dh-context``), then with
``strict`` one request per required field left out. The result never holds a header value or
the URL's path or query: the report names the target by :func:`~duixwatch.core.fields.redact_url`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import anyio
import httpx

from duixwatch import __version__
from duixwatch.dialog import contract
from duixwatch.dialog.contract import Exchange, Mode, Outcome, RuleResult, Turn
from duixwatch.dialog.frames import Frame, FrameDecoder, Framing, decoder_for, sniff

__all__ = ["MAX_BODY_BYTES", "Asked", "Report", "Target", "ask", "check", "new_client"]

#: The most of an answer a probe reads (an answer is sentences, not megabytes).
MAX_BODY_BYTES: Final = 1 << 20
#: How long after the final chunk a stream may take to close.
CLOSE_GRACE_SECONDS: Final = 1.0
#: How many earlier turns ride along as ``dh-context``.
HISTORY_TURNS: Final = 5


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to ask (the same for ``dialog check`` and a configured probe)."""

    url: str = field(repr=False)
    mode: Mode = "auto"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    sid: str = "duixwatch-probe"
    dh_code: str = "duixwatch-probe"
    conversation_id: str = "duixwatch-probe"
    budget_seconds: float = 20.0
    timeout_seconds: float = 20.0
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class Asked:
    """One question's exchange and what the rules made of it."""

    question: str
    exchange: Exchange
    outcome: Outcome

    @property
    def failure_reason(self) -> contract.Reason | None:
        return contract.failure_reason(self.outcome.rules)


@dataclass(frozen=True, slots=True)
class Report:
    """A whole check: every question asked, and the ``--strict`` requests."""

    asked: tuple[Asked, ...]
    strict: tuple[RuleResult, ...] = ()

    @property
    def rules(self) -> list[RuleResult]:
        return [r for a in self.asked for r in a.outcome.rules] + list(self.strict)

    @property
    def conformant(self) -> bool:
        return all(r.verdict != "FAIL" for r in self.rules)

    @property
    def failure_reason(self) -> contract.Reason | None:
        return contract.failure_reason(self.rules)


def new_client(*, verify: Any = True) -> httpx.AsyncClient:
    """The HTTP client of probes: no redirects followed (DUIX does not follow them either),
    no proxy from the environment unless httpx's own rules say so, our User-Agent."""
    return httpx.AsyncClient(
        verify=verify,
        follow_redirects=False,
        headers={"user-agent": f"duixwatch/{__version__} (dialog probe)"},
    )


def _framing_for(mode: Mode, content_type: str) -> Framing | None:
    """The stream framing to decode as the body arrives (``None``: read it whole first)."""
    said = contract.mode_of(content_type)
    media = content_type.split(";", 1)[0].strip().lower()
    if said == "stream" or (mode == "stream" and said is None):
        return "sse" if media == "text/event-stream" else ("ndjson" if said else None)
    return None


def _is_final(data: str) -> bool:
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("isEnd") is True


class _Reader:
    """The state of one exchange while it is read (turned into an :class:`Exchange`).

    Times are on the event loop's clock, the one its deadline runs on.
    """

    def __init__(self) -> None:
        self.started = anyio.current_time()
        self.status: int | None = None
        self.content_type = ""
        self.first_byte: float | None = None
        self.end: float | None = None
        self.body = bytearray()
        self.pieces: list[tuple[bytes, float]] = []
        self.framing: Framing | None = None
        self.decoder: FrameDecoder | None = None
        self.frames: list[Frame] = []
        self.final_at: float | None = None
        self.closed = False
        self.truncated = False
        self.error: Literal["connect", "timeout"] | None = None
        self.error_detail = ""

    def elapsed(self) -> float:
        return anyio.current_time() - self.started

    def take(self, piece: bytes) -> None:
        at = self.elapsed()
        room = MAX_BODY_BYTES - len(self.body)
        if len(piece) > room:
            piece, self.truncated = piece[:room], True
        self.body += piece
        self.pieces.append((piece, at))
        if self.decoder is not None:
            self._frames(self.decoder.feed(piece, at))

    def _frames(self, frames: Sequence[Frame]) -> None:
        for frame in frames:
            self.frames.append(frame)
            if self.final_at is None and _is_final(frame.data):
                self.final_at = frame.at

    def finish(self) -> None:
        """The body ended (closed by the server, or cut short by the deadline)."""
        if self.decoder is None and self.framing is None and self.closed and self._streamish():
            # A stream whose Content-Type did not say so: decode it now, with arrival times.
            self.framing = sniff(bytes(self.body[:4096]))
            self.decoder = decoder_for(self.framing)
            for piece, at in self.pieces:
                self._frames(self.decoder.feed(piece, at))
        if self.decoder is not None:
            self._frames(self.decoder.feed(b"", self.elapsed(), final=self.closed))

    def _streamish(self) -> bool:
        head = bytes(self.body[:4096]).lstrip()
        if head.startswith((b"data:", b":", b"event:")):
            return True
        try:
            json.loads(self.body)
        except ValueError:
            return b"\n" in bytes(self.body).strip()  # several JSON lines: NDJSON
        return False

    def exchange(self) -> Exchange:
        streamed = self.decoder is not None
        end = self.final_at if streamed and self.final_at is not None else None
        if end is None and self.closed:
            end = self.end
        return Exchange(
            status=self.status,
            content_type=self.content_type,
            first_byte=self.first_byte,
            end=end,
            body=bytes(self.body),
            framing=self.framing,
            frames=tuple(self.frames),
            odd_lines=self.decoder.odd_lines if self.decoder is not None else 0,
            closed=self.closed,
            truncated=self.truncated,
            error=self.error,
            error_detail=self.error_detail,
        )


async def _read(
    client: httpx.AsyncClient,
    target: Target,
    content: bytes,
    reader: _Reader,
    *,
    close_grace: float,
) -> None:
    extensions = {"sni_hostname": target.server_name} if target.server_name else None
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream, application/x-ndjson",
        **target.headers,
    }
    request = client.build_request(
        "POST",
        target.url,
        content=content,
        headers=headers,
        extensions=extensions,
        # ask() holds the one deadline; httpx's own only bounds connecting (reported as such).
        timeout=httpx.Timeout(
            target.timeout_seconds + 1.0, connect=min(target.timeout_seconds, 10.0)
        ),
    )
    try:
        response = await client.send(request, stream=True)
    except httpx.TransportError as exc:
        reader.error, reader.error_detail = "connect", _transport_detail(exc)
        return
    try:
        reader.first_byte = reader.elapsed()
        reader.status = response.status_code
        reader.content_type = response.headers.get("content-type", "")
        if response.status_code != 200:
            return  # the status is the finding; the body is not read
        reader.framing = _framing_for(target.mode, reader.content_type)
        reader.decoder = decoder_for(reader.framing) if reader.framing else None
        pieces = response.aiter_raw()
        try:
            async for piece in pieces:
                reader.take(piece)
                if reader.truncated or reader.final_at is not None:
                    break
            else:
                reader.closed = True
                reader.end = reader.elapsed()
            if reader.final_at is not None and not reader.closed and not reader.truncated:
                with anyio.move_on_after(close_grace):
                    async for piece in pieces:
                        reader.take(piece)
                    reader.closed = True
                    reader.end = reader.elapsed()
        except httpx.TransportError as exc:
            reader.error_detail = f"the connection broke mid-answer: {_transport_detail(exc)}"
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
            await response.aclose()


def _transport_detail(exc: httpx.TransportError) -> str:
    """A transport error without the request it quotes (the URL may be a secret): its type,
    and for a TLS failure what the handshake said (``unable to get local issuer certificate``)."""
    kind = type(exc).__name__
    cause: BaseException | None = exc
    for _ in range(6):  # httpx -> httpcore -> ssl
        cause = cause.__cause__ or cause.__context__ if cause is not None else None
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"{kind} (TLS: {cause.verify_message or type(cause).__name__})"
        if isinstance(cause, ssl.SSLError):
            return f"{kind} (TLS: {cause.reason or type(cause).__name__})"
    return kind


async def ask(
    client: httpx.AsyncClient,
    target: Target,
    text: str,
    *,
    history: Sequence[Turn] = (),
    close_grace: float = CLOSE_GRACE_SECONDS,
    request_id: str | None = None,
) -> Asked:
    """Ask one question under the target's deadline and judge the answer."""
    body = contract.question(
        text,
        sid=target.sid,
        dh_code=target.dh_code,
        conversation_id=target.conversation_id,
        history=history,
        request_id=request_id,
    )
    reader = _Reader()
    with anyio.move_on_after(target.timeout_seconds) as deadline:
        await _read(client, target, json.dumps(body).encode(), reader, close_grace=close_grace)
    if deadline.cancelled_caught and reader.error is None and reader.final_at is None:
        reader.error = "timeout"
        reader.error_detail = f"no answer within {target.timeout_seconds:g}s"
    reader.finish()
    exchange = reader.exchange()
    outcome = contract.judge(
        exchange,
        mode=target.mode,
        conversation_id=target.conversation_id,
        budget_seconds=target.budget_seconds,
    )
    if exchange.error_detail and exchange.error is None and exchange.status == 200:
        outcome.add("transport", False, exchange.error_detail, "malformed")
    return Asked(text, exchange, outcome)


async def _bad_request(client: httpx.AsyncClient, target: Target, missing: str) -> RuleResult:
    body: dict[str, Any] = contract.question(
        "Is this request rejected?",
        sid=target.sid,
        dh_code=target.dh_code,
        conversation_id=target.conversation_id,
    )
    del body[missing]
    reader = _Reader()
    with anyio.move_on_after(target.timeout_seconds):
        await _read(client, target, json.dumps(body).encode(), reader, close_grace=0.0)
    if reader.status is None and reader.error is None:
        reader.error = "timeout"
    return contract.judge_bad_request(missing, reader.exchange())


async def check(
    client: httpx.AsyncClient,
    target: Target,
    questions: Sequence[str],
    *,
    strict: bool,
    close_grace: float = CLOSE_GRACE_SECONDS,
) -> Report:
    """A conformance check: the questions in turn, then (``strict``) the bad requests."""
    asked: list[Asked] = []
    history: list[Turn] = []
    for text in questions:
        one = await ask(client, target, text, history=history, close_grace=close_grace)
        asked.append(one)
        history = [*history, Turn(text, one.outcome.answer)][-HISTORY_TURNS:]
    strict_rules: list[RuleResult] = []
    if strict:
        for missing in contract.REQUIRED_FIELDS:
            strict_rules.append(await _bad_request(client, target, missing))
    return Report(tuple(asked), tuple(strict_rules))
