"""The simulated platform's records and errors: sessions, apps, avatars, and the error an
endpoint answers with (:class:`SimError`, turned into an envelope by :mod:`duixwatch.sim.app`)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from duixwatch.sim import shapes

__all__ = [
    "ClosedBy",
    "SimApp",
    "SimAvatar",
    "SimError",
    "SimSession",
    "Workload",
    "bad_app",
    "bad_request",
    "is_number",
    "iso",
    "no_such",
    "session_dict",
    "token_empty",
    "token_invalid",
    "utc",
]

ClosedBy = Literal["sessionStop", "distroyCallSessionsByAppId", "hangup"]


class SimError(Exception):
    """The platform's refusal: an envelope ``code`` (HTTP 200) or a plain HTTP error.

    ``http_status`` 200 renders as ``{"code", "message", "data": null, "success": false}``;
    any other status renders as ``{"code", "msg", "data": null, "success": false}`` with that
    status (the shape the platform uses for a rejected request body).
    """

    def __init__(self, code: str, message: str, *, http_status: int = 200) -> None:
        self.code = code
        self.message = message
        self.http_status = http_status
        super().__init__(f"{code}: {message}")


def token_empty() -> SimError:
    return SimError("1005", "token is empty")


def token_invalid(detail: str) -> SimError:
    return SimError("1006", f"token expired or invalid: {detail}")


def bad_app(detail: str) -> SimError:
    return SimError("40001", f"appId or appKey error: {detail}")


def no_such(what: str) -> SimError:
    return SimError("2002", f"{what} does not exist")


def bad_request(message: str) -> SimError:
    """HTTP 400 with the platform's ``{"code": "400", "msg": …}`` body."""
    return SimError("400", message, http_status=400)


# --------------------------------------------------------------------------- sessions and apps


@dataclass(slots=True, eq=False)
class SimSession:
    """One session of the simulated platform, live or closed.

    ``ends_at`` is when the user will hang up (workload sessions), ``None`` for sessions that
    live until something closes them (added explicitly, or abandoned by their user).
    ``conversation_id`` is the APP's conversation the session talks to (in the session list as
    ``conversationId``).
    """

    session_id: str
    app_id: str
    started_at: datetime
    with_id: bool = True
    with_start: bool = True
    ends_at: datetime | None = None
    user_id: str = ""
    closed_at: datetime | None = None
    closed_by: ClosedBy | None = None
    conversation_id: str | None = None

    @property
    def closed(self) -> bool:
        """Whether the session has ended (by a stop, a close-all or the user hanging up)."""
        return self.closed_at is not None

    def age_seconds(self, now: datetime) -> float:
        """Seconds since the session started (never negative)."""
        return max(0.0, (now - self.started_at).total_seconds())


@dataclass(slots=True, eq=False)
class SimApp:
    """One simulated DUIX APP: its credentials, limit, list shape and seeded documents."""

    app_id: str
    name: str
    app_key: str
    concurrency_limit: int
    shape: shapes.ListShape
    crop_id: str
    user_id: str
    conversation_id: str
    #: Workload arrivals turned away because the app was at its concurrency limit.
    refused: int = 0


@dataclass(slots=True, eq=False)
class Workload:
    """One app's arrival process: its RNG, the next arrival, and the planned hang-ups."""

    rng: random.Random
    next_arrival: float  # epoch seconds; math.inf when there are no arrivals
    ends: list[tuple[float, int, str]] = field(default_factory=list)  # heap (ts, seq, id)
    seq: int = 0


@dataclass(slots=True, eq=False)
class SimAvatar:
    """One avatar in training (for ``training_seconds`` from ``created_at``) or trained."""

    avatar_id: int
    app_id: str
    name: str
    profile: str | None
    created_at: datetime
    training_seconds: float
    conversation_id: str | None = None


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def session_dict(session: SimSession, now: datetime) -> dict[str, Any]:
    """A session as JSON-ready values (for the control API)."""
    return {
        "session_id": session.session_id,
        "app_id": session.app_id,
        "started_at": iso(session.started_at),
        "age_seconds": round(session.age_seconds(now), 3),
        "with_id": session.with_id,
        "with_start": session.with_start,
        "closed": session.closed,
        "closed_at": iso(session.closed_at),
        "closed_by": session.closed_by,
        "conversation_id": session.conversation_id,
    }
