"""The simulator's ``getconcurrentList`` answer shapes (design.md §2).

The real response shape is undocumented, so the simulator can render the session list in every
shape the client must detect: where the list sits inside ``data``, which key holds the session
id, which key holds the start time, and how that time is written. This module owns
:class:`ListShape` (a frozen value with a compact ``container/id/time/format`` text form for the
CLI and the control API) and the pure functions that render one session list in a shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal, cast, get_args

__all__ = [
    "BARE_CONTAINER",
    "CONTAINERS",
    "DEFAULT_SHAPE",
    "ID_KEYS",
    "TIME_FORMATS",
    "TIME_KEYS",
    "Container",
    "IdKey",
    "ListShape",
    "TimeFormat",
    "TimeKey",
    "render_session_list",
    "render_time",
]

#: ``data`` is the JSON array itself.
BARE_CONTAINER = "list"

Container = Literal["list", "object-list", "records", "rows", "sessions", "items", "data"]
IdKey = Literal["sessionId", "uuid", "session_id", "id"]
TimeKey = Literal["startTime", "createTime", "gmtCreate", "createdAt", "start_time", "beginTime"]
TimeFormat = Literal[
    "epoch_s",
    "epoch_ms",
    "epoch_s_str",
    "epoch_ms_str",
    "iso_utc",
    "iso_offset",
    "iso_naive",
    "local",
]

CONTAINERS: tuple[Container, ...] = get_args(Container)
ID_KEYS: tuple[IdKey, ...] = get_args(IdKey)
TIME_KEYS: tuple[TimeKey, ...] = get_args(TimeKey)
TIME_FORMATS: tuple[TimeFormat, ...] = get_args(TimeFormat)

_NO_TOTAL = "no-total"


@dataclass(frozen=True, slots=True)
class ListShape:
    """How the simulator writes one app's session list.

    ``container``: ``"list"`` means ``data`` is the array; any other value names the key of an
    object under ``data`` that holds the array (``"object-list"`` is the key ``list``, which
    would otherwise be ambiguous with the bare array), with ``"total": n`` beside it when
    ``include_total``. ``id_key`` and ``time_key`` are the item keys; ``time_format`` is one of
    :data:`TIME_FORMATS` (``iso_naive`` and ``local`` are written in the simulator's time zone).

    The text form is ``container/id_key/time_key/time_format`` with ``/no-total`` appended when
    ``include_total`` is false: ``ListShape.parse(str(shape)) == shape``.
    """

    container: Container = "records"
    id_key: IdKey = "sessionId"
    time_key: TimeKey = "createTime"
    time_format: TimeFormat = "local"
    include_total: bool = True

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("container", self.container, CONTAINERS),
            ("id_key", self.id_key, ID_KEYS),
            ("time_key", self.time_key, TIME_KEYS),
            ("time_format", self.time_format, TIME_FORMATS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")

    def __str__(self) -> str:
        text = f"{self.container}/{self.id_key}/{self.time_key}/{self.time_format}"
        return f"{text}/{_NO_TOTAL}" if not self.include_total else text

    @property
    def list_key(self) -> str | None:
        """The key under ``data`` that holds the array, or ``None`` when ``data`` is the array."""
        if self.container == BARE_CONTAINER:
            return None
        return "list" if self.container == "object-list" else self.container

    @classmethod
    def parse(cls, text: str) -> ListShape:
        """Read the text form, e.g. ``records/sessionId/createTime/local[/no-total]``."""
        parts = text.strip().split("/")
        include_total = True
        if len(parts) == 5 and parts[4] == _NO_TOTAL:
            include_total = False
            parts = parts[:4]
        if len(parts) != 4:
            raise ValueError(
                f"bad list shape {text!r}: expected container/id_key/time_key/time_format"
                f"[/{_NO_TOTAL}], e.g. {DEFAULT_SHAPE}"
            )
        container, id_key, time_key, time_format = parts
        return cls(
            container=cast(Container, container),
            id_key=cast(IdKey, id_key),
            time_key=cast(TimeKey, time_key),
            time_format=cast(TimeFormat, time_format),
            include_total=include_total,
        )

    @classmethod
    def variants(cls) -> Iterator[ListShape]:
        """Every distinct shape (``include_total`` only varies where there is an object)."""
        for container, id_key, time_key, time_format in itertools.product(
            CONTAINERS, ID_KEYS, TIME_KEYS, TIME_FORMATS
        ):
            totals = (True,) if container == BARE_CONTAINER else (True, False)
            for include_total in totals:
                yield cls(container, id_key, time_key, time_format, include_total)


DEFAULT_SHAPE = ListShape()


def render_time(moment: datetime, time_format: TimeFormat, zone: tzinfo) -> int | str:
    """Write an aware ``moment`` as ``time_format`` (whole seconds; milliseconds for ``_ms``)."""
    utc = moment.astimezone(UTC)
    local = moment.astimezone(zone)
    seconds = int(utc.timestamp() // 1)
    millis = int(utc.timestamp() * 1000 // 1)
    match time_format:
        case "epoch_s":
            return seconds
        case "epoch_ms":
            return millis
        case "epoch_s_str":
            return str(seconds)
        case "epoch_ms_str":
            return str(millis)
        case "iso_utc":
            return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        case "iso_offset":
            return local.isoformat(timespec="seconds")
        case "iso_naive":
            return local.replace(tzinfo=None).isoformat(timespec="seconds")
        case "local":
            return local.strftime("%Y-%m-%d %H:%M:%S")
    raise ValueError(f"unknown time format {time_format!r}")  # pragma: no cover - Literal


def render_session_list(
    shape: ListShape, items: Sequence[Mapping[str, Any]], zone: tzinfo
) -> list[dict[str, Any]] | dict[str, Any]:
    """The ``data`` of a ``getconcurrentList`` answer.

    Each input item carries ``session_id`` (``None`` to omit the id key), ``started_at`` (an
    aware datetime, ``None`` to omit the time key) and ``extra`` (other fields to copy).
    """
    rendered: list[dict[str, Any]] = []
    for item in items:
        out: dict[str, Any] = {}
        if item.get("session_id") is not None:
            out[shape.id_key] = item["session_id"]
        started_at = item.get("started_at")
        if started_at is not None:
            out[shape.time_key] = render_time(started_at, shape.time_format, zone)
        out.update(item.get("extra") or {})
        rendered.append(out)
    key = shape.list_key
    if key is None:
        return rendered
    data: dict[str, Any] = {key: rendered}
    if shape.include_total:
        data["total"] = len(rendered)
    return data
