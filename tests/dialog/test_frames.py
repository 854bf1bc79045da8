"""Stream framing: Server-Sent Events by the WHATWG rules, and newline-delimited JSON."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from duixwatch.dialog.frames import NdjsonDecoder, SseDecoder, sniff


def _feed_all(
    decoder: SseDecoder | NdjsonDecoder, pieces: list[bytes]
) -> list[tuple[str, str | None]]:
    frames = []
    for index, piece in enumerate(pieces):
        frames += decoder.feed(piece, float(index))
    frames += decoder.feed(b"", float(len(pieces)), final=True)
    return [(f.data, f.event) for f in frames]


def test_sse_data_lines_comments_events_and_line_endings() -> None:
    stream = (
        b": a comment, ignored\r\n"
        b'data: {"answer": "a"}\r\n\r\n'
        b"event: chunk\n"
        b"data: line one\n"
        b"data:line two\n\n"
        b"id: 7\rretry: 100\rdata: cr only\r\r"
        b"event: nothing\n\n"  # no data: no event
    )
    assert _feed_all(SseDecoder(), [stream]) == [
        ('{"answer": "a"}', "message"),
        ("line one\nline two", "chunk"),
        ("cr only", "message"),
    ]


def test_sse_reports_a_last_event_without_its_blank_line() -> None:
    assert _feed_all(SseDecoder(), [b"data: tail"]) == [("tail", "message")]


def test_sse_counts_lines_that_are_not_fields() -> None:
    decoder = SseDecoder()
    _feed_all(decoder, [b'{"answer": "x"}\n\n', b"bogus: 1\n\n"])
    assert decoder.odd_lines == 2


@given(st.integers(min_value=1, max_value=40))
def test_sse_gives_the_same_frames_however_the_bytes_are_split(size: int) -> None:
    stream = 'data: {"answer": "héllo"}\r\n\r\n: c\r\ndata: {"isEnd": true}\r\n\r\n'.encode()
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert _feed_all(SseDecoder(), pieces) == _feed_all(SseDecoder(), [stream])


@given(st.integers(min_value=1, max_value=30))
def test_ndjson_lines_however_split(size: int) -> None:
    stream = b'{"answer": "a", "isEnd": false}\r\n\n{"answer": "", "isEnd": true}'
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert _feed_all(NdjsonDecoder(), pieces) == [
        ('{"answer": "a", "isEnd": false}', None),
        ('{"answer": "", "isEnd": true}', None),
    ]


def test_a_frame_carries_the_time_of_the_read_that_completed_it() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: x", 1.0) == []
    (frame,) = decoder.feed(b"\n\n", 2.5)
    assert frame.at == 2.5


def test_sniff() -> None:
    assert sniff(b"\n: hi\ndata: 1\n\n") == "sse"
    assert sniff(b'data: {"a": 1}') == "sse"
    assert sniff(b'{"answer": "x", "isEnd": false}\n') == "ndjson"
