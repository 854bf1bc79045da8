"""Hostile platform answers: what a broken (or hostile) DUIX platform could send, on request.

A fault with ``hostile=<kind>`` (:class:`~duixwatch.sim.faults.Fault`) lets the request take
effect and then rewrites its successful answer into one of the :data:`KINDS` below; an error
answer (a bad token, an unknown session) is left as it is. Each kind is something a client must
survive without crashing, exporting a made-up value or acting on it (README → Troubleshooting):

==================== ===================== ==================================================
kind                 endpoints             the answer
==================== ===================== ==================================================
``start_1970``       getconcurrentList     the first item's start time is 1970-01-01 00:00 UTC
``start_1900``       getconcurrentList     ... 1900-01-01 00:00 (in the simulator's zone)
``start_year1``      getconcurrentList     ... ``"0001-01-01 00:00:00"`` (no zone)
``start_9999``       getconcurrentList     ... ``"9999-12-31T23:59:59-12:00"``
``future_start``     getconcurrentList     ... two days from now
``count_superscript`` getconcurrentNumber  ``userConcurrentNumber`` is ``"²"`` (and the list's
                     getconcurrentList     ``total``, where the shape has one)
``count_huge``       (same)                ... 10^400
``count_nan``        (same)                ... ``NaN`` (not JSON, which Python reads anyway)
``count_infinity``   (same)                ... ``Infinity``
``count_negative``   (same)                ... -3
``deep_json``        any                   ``data`` is arrays nested :data:`DEEP_LEVELS` deep
``huge_body``        any                   the answer padded to :data:`HUGE_BODY_BYTES`, sent
                                           in chunks without a Content-Length
``trickle``          any                   the answer one byte every :data:`TRICKLE_SECONDS`
                                           (on the simulator's clock)
``many_items``       getconcurrentList     :data:`MANY_ITEMS` items, in the app's shape
``markup_ids``       getconcurrentList     the first item's id is :data:`MARKUP_ID`
``shape_flip``       getconcurrentList     each answer puts the list in the next container
                                           of :data:`~duixwatch.sim.shapes.CONTAINERS`
``stop_ignored``     sessionStop           success, and the session stays live and listed
                                           (the request does NOT take effect)
==================== ===================== ==================================================

The start-time kinds and ``markup_ids`` change only the FIRST item of the list (nothing when the
list is empty), so that a test sees the one bad item affect that item alone. Start times of
``start_1970``, ``start_1900`` and ``future_start`` are written in the app's time format;
``start_year1`` and ``start_9999`` are always strings (only text can name those years).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, Literal, get_args

from starlette.responses import Response, StreamingResponse

from duixwatch.sim import shapes

__all__ = [
    "APPLIES_TO",
    "DEEP_LEVELS",
    "HUGE_BODY_BYTES",
    "KINDS",
    "MANY_ITEMS",
    "MARKUP_ID",
    "TRICKLE_SECONDS",
    "Hostile",
    "HostileKind",
    "check_kind",
]

HostileKind = Literal[
    "start_1970",
    "start_1900",
    "start_year1",
    "start_9999",
    "future_start",
    "count_superscript",
    "count_huge",
    "count_nan",
    "count_infinity",
    "count_negative",
    "deep_json",
    "huge_body",
    "trickle",
    "many_items",
    "markup_ids",
    "shape_flip",
    "stop_ignored",
]
KINDS: Final[tuple[HostileKind, ...]] = get_args(HostileKind)

#: How deep ``deep_json`` nests (Python's json gives up at about 1,000).
DEEP_LEVELS: Final = 5_000
#: The size of a ``huge_body`` answer (50 MiB).
HUGE_BODY_BYTES: Final = 50 * 1024 * 1024
#: Seconds between two bytes of a ``trickle`` answer.
TRICKLE_SECONDS: Final = 1.0
#: Items in a ``many_items`` list.
MANY_ITEMS: Final = 200_000
#: The session id ``markup_ids`` gives the first item: markup, quotes and a forged log line.
MARKUP_ID: Final = '<script>alert("id")</script>\n1860000000000000001 level=error event="forged"'

_LIST = "getconcurrentList"
_NUMBER = "getconcurrentNumber"
_START_KINDS: Final = frozenset(
    {"start_1970", "start_1900", "start_year1", "start_9999", "future_start"}
)
_COUNTS: Final[dict[str, Any]] = {
    "count_superscript": "²",
    "count_huge": 10**400,
    "count_nan": float("nan"),
    "count_infinity": float("inf"),
    "count_negative": -3,
}
#: The endpoints each kind changes (``None``: every endpoint).
APPLIES_TO: Final[dict[str, frozenset[str] | None]] = {
    **{kind: frozenset({_LIST}) for kind in _START_KINDS},
    **{kind: frozenset({_NUMBER, _LIST}) for kind in _COUNTS},
    "deep_json": None,
    "huge_body": None,
    "trickle": None,
    "many_items": frozenset({_LIST}),
    "markup_ids": frozenset({_LIST}),
    "shape_flip": frozenset({_LIST}),
    "stop_ignored": frozenset({"sessionStop"}),
}
_CHUNK_BYTES: Final = 64 * 1024
#: Stands for a value written by hand into an envelope's JSON (a string no answer holds).
_HOLE: Final = "\u0000hostile-hole\u0000"


def check_kind(kind: str, endpoint: str) -> None:
    """Raise :class:`ValueError` unless ``kind`` is one of :data:`KINDS` and changes
    ``endpoint`` (``"*"``: any endpoint)."""
    if kind not in APPLIES_TO:
        raise ValueError(f"unknown hostile kind {kind!r}; expected one of {', '.join(KINDS)}")
    endpoints = APPLIES_TO[kind]
    if endpoint != "*" and endpoints is not None and endpoint not in endpoints:
        raise ValueError(f"hostile {kind} changes only {', '.join(sorted(endpoints))}")


#: Sleeps the given seconds unless released; False when released (the server is stopping).
Pause = Callable[[float], Awaitable[bool]]


class Hostile:
    """Rewrites successful answers into hostile ones (module docstring).

    ``now`` and ``zone`` are the simulator's clock and zone; ``pause`` sleeps between the
    bytes of a ``trickle`` and returns False when the server lets held requests go.
    """

    def __init__(self, now: Callable[[], datetime], zone: tzinfo, pause: Pause) -> None:
        self._now = now
        self._zone = zone
        self._pause = pause
        #: app id -> answers given under ``shape_flip`` (which container comes next)
        self._flips: dict[str, int] = {}

    def answer(
        self, kind: str, endpoint: str, shape: shapes.ListShape, app_id: str, response: Response
    ) -> Response:
        """``response`` (an envelope the simulator made) made hostile, if it was a success."""
        try:
            envelope = json.loads(bytes(response.body))
        except ValueError:  # not an envelope of ours (cannot happen): leave it
            return response
        if not isinstance(envelope, dict) or envelope.get("success") is not True:
            return response
        changes = APPLIES_TO.get(kind)
        if changes is not None and endpoint not in changes:
            return response
        data = envelope.get("data")
        if kind == "deep_json":
            head, tail = _around_hole({**envelope, "data": _HOLE})
            nested = b"[" * DEEP_LEVELS + b"]" * DEEP_LEVELS
            return _raw(head + nested + tail, response.status_code)
        if kind == "huge_body":
            return StreamingResponse(_padded(envelope), media_type="application/json")
        if kind == "trickle":
            return StreamingResponse(self._trickle(_dumps(envelope)), media_type="application/json")
        if kind in _COUNTS:
            envelope["data"] = _with_count(data, _COUNTS[kind])
        elif kind in _START_KINDS:
            envelope["data"] = _with_first(data, shape, {shape.time_key: self._start(kind, shape)})
        elif kind == "markup_ids":
            envelope["data"] = _with_first(data, shape, {shape.id_key: MARKUP_ID})
        elif kind == "many_items":
            envelope["data"] = self._many(shape)
        elif kind == "shape_flip":
            envelope["data"] = self._flipped(app_id, data, shape)
        return _raw(_dumps(envelope), response.status_code)

    def _start(self, kind: str, shape: shapes.ListShape) -> int | str:
        if kind == "start_year1":
            return "0001-01-01 00:00:00"
        if kind == "start_9999":
            return "9999-12-31T23:59:59-12:00"
        if kind == "start_1970":
            moment = datetime(1970, 1, 1, tzinfo=UTC)
        elif kind == "start_1900":
            moment = datetime(1900, 1, 1, tzinfo=self._zone)
        else:  # future_start
            moment = self._now() + timedelta(days=2)
        return shapes.render_time(moment, shape.time_format, self._zone)

    def _many(self, shape: shapes.ListShape) -> list[dict[str, Any]] | dict[str, Any]:
        started = self._now() - timedelta(seconds=60)
        items = [
            {"session_id": f"9{index:018d}", "started_at": started, "extra": {"status": "in_call"}}
            for index in range(MANY_ITEMS)
        ]
        return shapes.render_session_list(shape, items, self._zone)

    def _flipped(self, app_id: str, data: Any, shape: shapes.ListShape) -> Any:
        items = _items(data, shape)
        if items is None:
            return data
        turn = self._flips.get(app_id, 0) + 1
        self._flips[app_id] = turn
        containers = shapes.CONTAINERS
        container = containers[(containers.index(shape.container) + turn) % len(containers)]
        key = None if container == shapes.BARE_CONTAINER else shapes.ListShape(container).list_key
        return items if key is None else {key: items, "total": len(items)}

    async def _trickle(self, body: bytes) -> AsyncIterator[bytes]:
        for index in range(len(body)):
            yield body[index : index + 1]
            if index + 1 < len(body) and not await self._pause(TRICKLE_SECONDS):
                return


def _dumps(value: Any) -> bytes:
    # allow_nan: NaN and Infinity are written as Python (and Java's Jackson) write them.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _around_hole(envelope: dict[str, Any]) -> tuple[bytes, bytes]:
    """The envelope's JSON before and after the value :data:`_HOLE` (which it holds once)."""
    head, tail = _dumps(envelope).split(_dumps(_HOLE), 1)
    return head, tail


def _raw(body: bytes, status_code: int) -> Response:
    return Response(body, status_code=status_code, media_type="application/json")


def _items(data: Any, shape: shapes.ListShape) -> list[Any] | None:
    """The list of session items in ``data`` as ``shape`` writes it (``None``: no list)."""
    key = shape.list_key
    items = data if key is None else data.get(key) if isinstance(data, Mapping) else None
    return items if isinstance(items, list) else None


def _with_first(data: Any, shape: shapes.ListShape, changes: Mapping[str, Any]) -> Any:
    items = _items(data, shape)
    if items and isinstance(items[0], dict):
        items[0].update(changes)
    return data


def _with_count(data: Any, count: Any) -> Any:
    if isinstance(data, dict):
        if "userConcurrentNumber" in data:
            data["userConcurrentNumber"] = count
        if "total" in data:
            data["total"] = count
    return data


async def _padded(envelope: dict[str, Any]) -> AsyncIterator[bytes]:
    """The envelope with a ``padding`` string that makes it :data:`HUGE_BODY_BYTES` long."""
    head, tail = _around_hole({**envelope, "padding": _HOLE})
    head += b'"'
    tail = b'"' + tail
    left = HUGE_BODY_BYTES - len(head) - len(tail)
    yield head
    chunk = b"x" * _CHUNK_BYTES
    while left > 0:
        piece = chunk if left >= _CHUNK_BYTES else chunk[:left]
        left -= len(piece)
        yield piece
    yield tail
