"""From DUIX bytes to typed values: the envelope, the error table, and tolerant payload parsing.

Pure functions only (no I/O, no clock), so that every rule here is tested directly and by
property tests.

* :func:`parse_envelope` decides success by ``success is true`` (``code`` differs per endpoint:
  ``"0"``, ``"200"``, ``""``) and otherwise raises the error chosen by :func:`error_for`, the one
  place where HTTP statuses and envelope codes become exception classes (table beside it).
* :func:`parse_session_list` reads the undocumented ``getconcurrentList`` payload in every shape
  design.md §2 lists, or as an explicit :class:`~duixwatch.config.SessionListMapping` says.
* :func:`parse_timestamp` understands epoch seconds or milliseconds (numbers or numeric strings),
  ISO-8601, and ``yyyy-MM-dd HH:mm:ss`` without zone (read in the configured zone).

What a hostile or broken platform may send is refused here, never passed on as a made-up value:
a body that is not JSON (``NaN``/``Infinity``, a number longer than Python reads, nesting deeper
than it can read) is :class:`~duixwatch.core.errors.ApiMalformed`; a count that is not plain
ASCII digits below 2^53 makes the answer a :class:`~duixwatch.core.errors.ResponseParseError`
(the client's ``malformed``); in a session list, a start time that cannot be read, lies before
2000 or more than a day after ``now`` makes THAT session's start unknown
(:attr:`~duixwatch.core.models.Session.start_rejected`), and an id longer than
:data:`MAX_ID_CHARS` makes it id-less (counted, never acted on).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any, Final

import pydantic

from duixwatch.config import SessionListMapping
from duixwatch.core import documents, errors, models
from duixwatch.duix.shape import describe_shape

__all__ = [
    "AUTH_CODES",
    "CONVERSATION_KEYS",
    "EARLIEST_START",
    "FUTURE_START_TOLERANCE",
    "ID_KEYS",
    "ITEM_CONTAINER_KEYS",
    "MAX_COUNT",
    "MAX_DOCUMENT_DEPTH",
    "MAX_ID_CHARS",
    "NOT_FOUND_CODES",
    "QUOTA_CODES",
    "SERVER_CODES",
    "START_KEYS",
    "describe_shape",
    "error_for",
    "parse_avatar",
    "parse_avatar_created",
    "parse_concurrency",
    "parse_conversation",
    "parse_envelope",
    "parse_retry_after",
    "parse_session_list",
    "parse_timestamp",
    "too_deep",
]

# --------------------------------------------------------------------------- the error table
#
# | HTTP status / envelope code             | class                 | retried (reads) |
# |-----------------------------------------|-----------------------|-----------------|
# | 429                                     | ApiRateLimited        | yes, Retry-After|
# | 1005 token empty, 1006 token expired or | ApiAuthRejected       | once, re-minted |
# |   invalid, 40001 bad appId/appKey;      |                       |                 |
# |   HTTP 401, 403                         |                       |                 |
# | 1009 quota, 50007 concurrency exhausted | ApiQuotaExceeded      | no              |
# | 2002 session does not exist; HTTP 404   | ApiNotFound           | no (sessionStop:|
# |                                         |                       |  already_closed)|
# | -1, 40002 internal; 50004/50005/50009   | ApiServerError        | yes             |
# |   backend resource errors; HTTP 5xx     |                       |                 |
# | 50003 resource in use, other codes,     | ApiClientError        | no              |
# |   other HTTP 4xx                        |                       |                 |

AUTH_CODES = frozenset({"1005", "1006", "40001"})
QUOTA_CODES = frozenset({"1009", "50007"})
NOT_FOUND_CODES = frozenset({"2002"})
SERVER_CODES = frozenset({"-1", "40002", "50004", "50005", "50009"})

_MESSAGE_CHARS = 200


def error_for(
    *,
    method: str,
    path: str,
    status: int,
    code: str | None,
    message: str | None,
    body: str | None,
    retry_after_seconds: float | None = None,
    secrets: Sequence[str] = (),
) -> errors.ApiError:
    """The typed error for a failed call, from its HTTP status and envelope code; the
    platform's message and body with ``secrets`` and anything like a token redacted."""
    text = errors.redact((message or "").strip(), secrets)[:_MESSAGE_CHARS] or (
        f"HTTP {status}" if code is None else "request failed"
    )
    body = errors.redact(body, secrets) if body else body
    kw: dict[str, Any] = {"method": method, "path": path, "status": status, "code": code}
    if status == 429:
        return errors.ApiRateLimited(text, retry_after_seconds=retry_after_seconds, body=body, **kw)
    cls: type[errors.ApiError]
    if code in AUTH_CODES or status in (401, 403):
        cls = errors.ApiAuthRejected
    elif code in QUOTA_CODES:
        cls = errors.ApiQuotaExceeded
    elif code in NOT_FOUND_CODES or status == 404:
        cls = errors.ApiNotFound
    elif code in SERVER_CODES or status >= 500:
        cls = errors.ApiServerError
    else:
        cls = errors.ApiClientError
    return cls(text, body=body, **kw)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def parse_envelope(
    *,
    method: str,
    path: str,
    status: int,
    content: bytes,
    retry_after_seconds: float | None = None,
    secrets: Sequence[str] = (),
) -> Any:
    """Return the envelope's ``data`` on success, else raise the matching :class:`ApiError`
    (``secrets``: what to redact from the platform's text, the token and the appKey)."""
    text = content.decode("utf-8", errors="replace")
    not_json: str | None = None
    try:
        doc = json.loads(text, parse_constant=_no_constant) if text.strip() else None
    except RecursionError:  # C's json gives up at the interpreter's recursion limit (~1,000)
        doc, not_json = None, "it is nested too deeply to read"
    except ValueError as exc:  # includes a number of more than 4,300 digits
        doc, not_json = None, str(exc)[:_MESSAGE_CHARS]
    is_envelope = isinstance(doc, dict) and "success" in doc
    if not is_envelope:
        if status >= 400:
            raise error_for(
                method=method,
                path=path,
                status=status,
                code=None,
                message=None,
                body=text,
                retry_after_seconds=retry_after_seconds,
                secrets=secrets,
            )
        raise errors.ApiMalformed(
            f"the answer is not JSON: {not_json}"
            if not_json is not None
            else "the answer is not a DUIX envelope (JSON object with 'success')",
            method=method,
            path=path,
            status=status,
            body=errors.redact(text, secrets),
        )
    assert isinstance(doc, dict)  # noqa: S101 - narrowed above, for the type checker
    if doc.get("success") is True and status < 400:
        return doc.get("data")
    raw_code = doc.get("code")
    code = None if raw_code is None else str(raw_code)
    message = doc.get("message") or doc.get("msg")
    raise error_for(
        method=method,
        path=path,
        status=status,
        code=code,
        message=message if isinstance(message, str) else None,
        body=text,
        retry_after_seconds=retry_after_seconds,
        secrets=secrets,
    )


def _no_constant(name: str) -> Any:
    """``json.loads`` reads ``NaN``, ``Infinity`` and ``-Infinity``; JSON has no such numbers,
    and a NaN count or start time must never reach a metric or a page."""
    raise ValueError(f"{name} is not a JSON number")


#: A document nested deeper than this is not DUIX's (the real conversation is 4 levels deep);
#: the code that walks a whole document (diffs, digests, comparisons) must never meet one.
MAX_DOCUMENT_DEPTH: Final = 64


def too_deep(value: Any, limit: int = MAX_DOCUMENT_DEPTH) -> bool:
    """Whether ``value`` nests objects or arrays more than ``limit`` levels deep (found
    without recursion, so it works on any value ``json.loads`` can return)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# --------------------------------------------------------------------------- timestamps

# ASCII digits only: ``\d`` would also take full-width and other scripts' digits.
_NUMERIC = re.compile(r"^[+-]?\d+(\.\d+)?$", re.ASCII)
#: Epoch values at or above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_MS_THRESHOLD = 1e11
_MIN_EPOCH_SECONDS = 0.0
_MAX_EPOCH_SECONDS = 4102444800.0  # 2100-01-01


def _from_epoch(number: float) -> datetime:
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    seconds = number / 1000.0 if abs(number) >= _MS_THRESHOLD else number
    if not _MIN_EPOCH_SECONDS <= seconds <= _MAX_EPOCH_SECONDS:
        raise ValueError("epoch time out of range")
    return datetime.fromtimestamp(seconds, tz=UTC)


def parse_timestamp(value: Any, *, zone: tzinfo) -> datetime:
    """An aware UTC datetime from any start-time format DUIX may use; ``ValueError`` if none
    (also for a time no datetime can hold, such as the year 1 east of UTC or 9999 west of it)."""
    try:
        return _timestamp(value, zone)
    except OverflowError as exc:
        raise ValueError("not a timestamp (out of range)") from exc


def _timestamp(value: Any, zone: tzinfo) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _from_epoch(float(value))
    text = value.strip() if isinstance(value, str) else ""
    if _NUMERIC.match(text):
        return _from_epoch(float(text))
    if len(text) < 10 or len(text) > 40:
        raise ValueError("not a timestamp")
    # ``2026/11/21 12:00:00`` is a common Java format too.
    if text[4:5] == "/" and text[7:8] == "/":
        text = text[:4] + "-" + text[5:7] + "-" + text[8:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError("not a timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(UTC)


# --------------------------------------------------------------------------- session lists

ITEM_CONTAINER_KEYS = ("list", "records", "rows", "sessions", "items", "data")
ID_KEYS = ("sessionId", "uuid", "session_id", "id")
#: Where a list item may name its conversation (read for ``apps[].conversations: auto``).
CONVERSATION_KEYS = ("conversationId", "conversation_id", "conversation")
START_KEYS = ("startTime", "createTime", "gmtCreate", "createdAt", "start_time", "beginTime")

#: A start before this is not believed (DUIX did not exist; 0 or 1900 is a placeholder).
EARLIEST_START: Final = datetime(2000, 1, 1, tzinfo=UTC)
#: A start later than ``now`` plus this is not believed (clocks may differ, by less than that).
FUTURE_START_TOLERANCE: Final = timedelta(days=1)
#: The most distinct rejected start-time shapes one list reports (a log line each).
_MAX_REJECTED_SHAPES = 8
#: Counts are below this (2^53: every one is exact as a float, as Prometheus stores it).
MAX_COUNT: Final = 2**53
_MAX_COUNT_DIGITS = len(str(MAX_COUNT))
#: An id longer than this is no DUIX id (they are 19 digits): such an item has no usable id.
MAX_ID_CHARS: Final = 128


def _walk(data: Any, dotted: str) -> Any:
    node = data
    for part in (p for p in dotted.split(".") if p):
        if not isinstance(node, Mapping) or part not in node:
            raise errors.ResponseParseError(
                f"session list: no {dotted!r} under data (duix.session_list.items)",
                shape=describe_shape(data),
            )
        node = node[part]
    return node


def _locate_items(data: Any, items_path: str | None) -> tuple[Sequence[Any], str, int | None]:
    """The list of session items, where it was found, and the ``total`` beside it."""
    total: int | None = None
    if items_path is not None:
        container = data
        if items_path.strip("."):
            parent_path, _, _ = items_path.strip(".").rpartition(".")
            parent = _walk(data, parent_path) if parent_path else data
            if isinstance(parent, Mapping):
                total = _as_count(parent.get("total"))
            container = _walk(data, items_path)
        where = "data." + items_path.strip(".") if items_path.strip(".") else "data"
        if container is None:
            return (), where, total
        if not isinstance(container, list):
            raise errors.ResponseParseError(
                f"session list: {where} is not a list", shape=describe_shape(data)
            )
        return container, where, total
    if data is None:
        return (), "data", None
    if isinstance(data, list):
        return data, "data", None
    if isinstance(data, Mapping):
        total = _as_count(data.get("total"))
        for key in ITEM_CONTAINER_KEYS:
            if key in data and isinstance(data[key], list):
                return data[key], f"data.{key}", total
        for key in ITEM_CONTAINER_KEYS:
            if key in data and data[key] is None:
                return (), f"data.{key}", total
        if not data or set(data) <= {"total"}:
            return (), "data", total
    raise errors.ResponseParseError(
        "session list: cannot find the list of sessions; set duix.session_list.items",
        shape=describe_shape(data),
    )


def _as_count(value: Any) -> int | None:
    """A count: an int or a string of ASCII digits (``"²".isdigit()`` is true, and ``int()``
    reads other scripts' digits), from 0 to below :data:`MAX_COUNT`; else ``None``."""
    if type(value) is int:  # not bool, which is an int too
        return value if 0 <= value < MAX_COUNT else None
    if (
        isinstance(value, str)
        and len(value) <= _MAX_COUNT_DIGITS
        and value.isascii()
        and value.isdigit()
    ):
        count = int(value)
        return count if count < MAX_COUNT else None
    return None


def _as_id(value: Any) -> str | None:
    """An id as a string: a non-blank string or an int, at most :data:`MAX_ID_CHARS` long."""
    if isinstance(value, bool):
        return None
    text: str
    if isinstance(value, int):
        # bit_length first: str() of an int thousands of digits long is slow (and may raise)
        text = str(value) if value.bit_length() <= 4 * MAX_ID_CHARS else ""
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    return text if text and len(text) <= MAX_ID_CHARS else None


def _value_shape(value: Any) -> str:
    """What kind of start-time value this is, never the value (``str len 19``, ``int 13
    digits``): safe to log."""
    if isinstance(value, str):
        return f"str len {len(value)}" if len(value) <= 40 else "str len >40"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        digits = len(str(abs(value))) if value.bit_length() <= 70 else 99
        return f"int {digits} digits" if digits <= 20 else "int >20 digits"
    if isinstance(value, float):
        return "float"
    return describe_shape(value, depth=1)


def _first_present(item: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        if item.get(key) is not None:
            return key
    return None


def parse_session_list(
    data: Any, *, mapping: SessionListMapping, zone: tzinfo, now: datetime | None = None
) -> models.SessionList:
    """Sessions from a ``getconcurrentList`` ``data`` value (see the module docstring).

    A start time that cannot be read, is before :data:`EARLIEST_START` or (given ``now``) later
    than ``now`` + :data:`FUTURE_START_TOLERANCE` leaves that session without a start
    (``start_rejected``; the list's ``rejected_starts`` says which kinds of value, never the
    values). Raises :class:`~duixwatch.core.errors.ResponseParseError` (with the payload's
    shape, no values) when no list can be found or an item is neither an object nor an id.
    """
    items, where, total = _locate_items(data, mapping.items)
    latest = None if now is None else now + FUTURE_START_TOLERANCE
    rejected: dict[str, None] = {}  # ordered, distinct
    id_keys = (mapping.id,) if mapping.id else ID_KEYS
    start_keys = (mapping.started_at,) if mapping.started_at else START_KEYS
    sessions: list[models.Session] = []
    seen: set[str] = set()
    duplicates = 0
    used_id: str | None = None
    used_start: str | None = None
    for index, item in enumerate(items):
        if isinstance(item, str | int) and not isinstance(item, bool):
            bare = _as_id(item)
            if bare is not None and bare in seen:
                duplicates += 1
                continue
            if bare is not None:
                seen.add(bare)
            sessions.append(models.Session(session_id=bare))
            continue
        if not isinstance(item, Mapping):
            raise errors.ResponseParseError(
                f"session list: item {index} of {where} is not an object",
                shape=describe_shape(data),
            )
        id_key = _first_present(item, id_keys)
        start_key = _first_present(item, start_keys)
        used_id = used_id or id_key
        used_start = used_start or start_key
        started_at: datetime | None = None
        start_rejected = False
        if start_key is not None:
            try:
                started_at = parse_timestamp(item[start_key], zone=zone)
            except ValueError:
                why: str | None = "unreadable"
            else:
                if started_at < EARLIEST_START:
                    why = "before 2000"
                elif latest is not None and started_at > latest:
                    why = "more than a day ahead"
                else:
                    why = None
            if why is not None:
                started_at, start_rejected = None, True
                if len(rejected) < _MAX_REJECTED_SHAPES:
                    rejected[f"{_value_shape(item[start_key])}: {why}"] = None
        session_id = _as_id(item[id_key]) if id_key is not None else None
        if session_id is not None:
            if session_id in seen:
                duplicates += 1
                continue
            seen.add(session_id)
        conversation = _first_present(item, CONVERSATION_KEYS)
        # Interned: an APP's sessions share a handful of conversations, and 200,000 copies
        # of the same 19 digits would cost 14 MB.
        conversation_id = _as_id(item[conversation]) if conversation else None
        sessions.append(
            models.Session(
                session_id=session_id,
                started_at=started_at,
                conversation_id=sys.intern(conversation_id) if conversation_id else None,
                start_rejected=start_rejected,
            )
        )
    shape = f"{where}[] id={used_id or '?'} started_at={used_start or '?'}"
    return models.SessionList(
        sessions=tuple(sessions),
        shape=shape,
        total=total,
        duplicates=duplicates,
        rejected_starts=tuple(rejected),
    )


# --------------------------------------------------------------------------- other payloads


def _int_field(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    count = _as_count(value)
    if count is None:
        raise errors.ResponseParseError(
            f"{key} is not a non-negative integer below 2^53", shape=describe_shape(data)
        )
    return count


def parse_concurrency(data: Any) -> models.Concurrency:
    """``getconcurrentNumber`` ``data``."""
    if not isinstance(data, Mapping):
        raise errors.ResponseParseError(
            "concurrency: data is not an object", shape=describe_shape(data)
        )
    return models.Concurrency(
        corp_id=_as_id(data.get("cropId", data.get("corpId"))),
        total_concurrent_number=_int_field(data, "totalConcurrentNumber"),
        user_concurrent_number=_int_field(data, "userConcurrentNumber"),
    )


def parse_conversation(data: Any) -> documents.Conversation:
    """``getConversationById`` ``data``, every field kept."""
    try:
        return documents.Conversation.model_validate(data)
    except pydantic.ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
        raise errors.ResponseParseError(
            f"conversation: unexpected fields ({where})", shape=describe_shape(data)
        ) from None


def parse_avatar_created(data: Any) -> documents.AvatarCreated:
    """``createAvatar`` ``data``: ``{"id": …}`` (seed) or ``{"taskId": …}`` (newer docs)."""
    if isinstance(data, Mapping):
        avatar_id = _as_id(data.get("id", data.get("taskId")))
    else:
        avatar_id = _as_id(data)
    if avatar_id is None:
        raise errors.ResponseParseError("createAvatar: no avatar id", shape=describe_shape(data))
    return documents.AvatarCreated(avatar_id=avatar_id)


_SEED_STATUS: dict[int, documents.AvatarStatus] = {0: "training", 1: "success", 2: "failed"}
_NEWER_STATUS: dict[int, documents.AvatarStatus] = {0: "training", 1: "failed", 2: "success"}


def parse_avatar(data: Any, *, requested_id: str) -> documents.Avatar:
    """``queryAvatar`` ``data``, status normalised (seed's ``customizedStatus`` wins)."""
    if not isinstance(data, Mapping):
        raise errors.ResponseParseError("queryAvatar: data is not an object", shape="?")
    if "customizedStatus" in data:
        table, raw = _SEED_STATUS, data.get("customizedStatus")
    else:
        table, raw = _NEWER_STATUS, data.get("status")
    text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    digits = text[1:] if text.startswith("-") else text
    code = int(text) if 0 < len(digits) <= 9 and digits.isascii() and digits.isdigit() else None
    status: documents.AvatarStatus = table.get(code, "unknown") if code is not None else "unknown"
    name = data.get("customizedName", data.get("name"))
    reason = data.get("reason")
    return documents.Avatar(
        avatar_id=_as_id(data.get("id", data.get("taskId"))) or requested_id,
        name=name if isinstance(name, str) else None,
        status=status,
        status_code=code,
        reason=reason if isinstance(reason, str) and reason else None,
        default_conversation_id=_as_id(data.get("defaultConversationId")),
    )
