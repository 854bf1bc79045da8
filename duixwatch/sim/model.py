"""The simulated DUIX platform's state: apps, sessions, workload, avatars, tokens.

Pure Python, no HTTP: :mod:`duixwatch.sim.app` turns requests into calls on a
:class:`Simulator` and its answers (or :class:`SimError`) into envelopes.

Everything random comes from :class:`random.Random` instances seeded from the simulator's seed
and a purpose (``"<seed>:<app index>:workload"`` …), and every time comes from the injected
clock, so the same seed read at the same clock times gives the same apps, sessions and ids.
The workload is generated lazily: whenever state is read or an endpoint is hit, the arrival and
hang-up events between the last read and ``clock.now()`` are played in time order. Conversation
documents live in :mod:`duixwatch.sim.conversations`; each session talks to one of its APP's.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jwt

from duixwatch.core import clock as clock_mod
from duixwatch.sim import avatars, conversations, documents, shapes
from duixwatch.sim.faults import Faults, Stats
from duixwatch.sim.records import (
    ClosedBy,
    SimApp,
    SimSession,
    Workload,
    bad_app,
    is_number,
    iso,
    no_such,
    session_dict,
    token_empty,
    token_invalid,
    utc,
)

__all__ = [
    "APP_ID_ENDPOINTS",
    "APP_NAMES",
    "MAX_EVENTS_PER_ADVANCE",
    "MAX_TRAINING_SECONDS",
    "TRAINING_SECONDS",
    "Simulator",
]

#: Endpoints whose query names the app (``appId=``); the others act for the token's app.
APP_ID_ENDPOINTS = frozenset(
    {"getconcurrentNumber", "getconcurrentList", "distroyCallSessionsByAppId"}
)

APP_NAMES = (
    "frontdesk",
    "lobby-kiosk",
    "support",
    "museum-guide",
    "onboarding",
    "retail-assistant",
    "hotel-concierge",
    "bank-teller",
    "campus-guide",
    "clinic-reception",
)

#: Bound on the workload events played by one catch-up; beyond it the workload skips ahead.
MAX_EVENTS_PER_ADVANCE = 100_000
#: By default an avatar trains for this long (clock time) before ``queryAvatar`` reports an
#: outcome; ``avatar_training_seconds`` (0 to :data:`MAX_TRAINING_SECONDS`) changes it.
TRAINING_SECONDS = avatars.TRAINING_SECONDS
MAX_TRAINING_SECONDS = avatars.MAX_TRAINING_SECONDS
#: ``tokens_seen`` keeps at most this many claim sets (the oldest half is dropped beyond it).
MAX_TOKENS_SEEN = 10_000
#: The most APPs one simulator holds (the benchmark runs 10,000).
MAX_APPS = 50_000
#: Sessions older than this are "stale" for the demo's max-age policy.
STALE_AGE_SECONDS = 45 * 60


class Simulator:
    """The DUIX platform, simulated for ``apps`` APPs from ``seed`` on ``clock``.

    ``shape``: a :class:`~duixwatch.sim.shapes.ListShape` for every app, ``"random"`` for a
    seeded variant per app, or ``None`` for the default shape. ``workload=False`` starts every
    app empty and never adds sessions by itself (tests build state with :meth:`add_session`).
    ``arrivals_per_minute`` is per app; durations are exponential with mean
    ``mean_duration_seconds``; a fraction ``abandon_probability`` of arrivals never hang up
    (the runaway sessions duixwatch exists to clean up). ``min_duration_seconds`` is a floor:
    durations are ``min + Exp(mean - min)`` (a floor above the poll interval lets every session
    be seen; 0 keeps the stream as it was). An avatar created now trains for
    ``avatar_training_seconds``. :meth:`sessions` is the record of every session.
    """

    def __init__(
        self,
        *,
        apps: int = 3,
        seed: int = 1,
        clock: clock_mod.Clock | None = None,
        timezone: str = "Asia/Shanghai",
        shape: shapes.ListShape | Literal["random"] | None = None,
        workload: bool = True,
        arrivals_per_minute: float = 2.0,
        mean_duration_seconds: float = 600.0,
        min_duration_seconds: float = 0.0,
        abandon_probability: float = 0.02,
        avatar_training_seconds: float = TRAINING_SECONDS,
    ) -> None:
        if not 1 <= apps <= MAX_APPS:
            raise ValueError(f"apps must be between 1 and {MAX_APPS}")
        if not 0 <= arrivals_per_minute <= 10_000:
            raise ValueError("arrivals_per_minute must be between 0 and 10000")
        if not mean_duration_seconds > 0:
            raise ValueError("mean_duration_seconds must be positive")
        if not 0 <= min_duration_seconds < mean_duration_seconds:
            raise ValueError("min_duration_seconds must be in [0, mean_duration_seconds)")
        if not 0 <= abandon_probability <= 1:
            raise ValueError("abandon_probability must be between 0 and 1")
        if shape is not None and shape != "random" and not isinstance(shape, shapes.ListShape):
            raise ValueError("shape must be a ListShape, 'random' or None")
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {timezone!r}") from exc
        self.seed = seed
        self.timezone = timezone
        self.clock: clock_mod.Clock = clock if clock is not None else clock_mod.SystemClock()
        self.workload_enabled = workload
        self.arrivals_per_minute = arrivals_per_minute
        self.mean_duration_seconds = mean_duration_seconds
        self.min_duration_seconds = min_duration_seconds
        self.abandon_probability = abandon_probability
        self.stats = Stats()
        self.tokens_seen: list[dict[str, Any]] = []
        self.faults = Faults(lambda app: self.app(app).app_id, self._rng("faults"))

        self._sessions: dict[str, SimSession] = {}
        self._live: dict[str, dict[str, SimSession]] = {}
        self._closed_count: dict[str, int] = {}
        self._workloads: dict[str, Workload] = {}
        self._conversations = conversations.Conversations()
        self._ids_rng = self._rng("ids")
        self._docs_rng = self._rng("documents")
        self._avatars = avatars.Avatars(
            clock=self.clock,
            first_id=self._rng("avatars").randint(10_000, 99_999),
            docs_rng=self._docs_rng,
            store=self._conversations,
            training_seconds=avatar_training_seconds,
        )
        self._apps: list[SimApp] = self._make_apps(apps, shape)
        self._by_key: dict[str, SimApp] = {}
        for app in self._apps:
            self._by_key[app.app_id] = app
            self._by_key[app.name] = app
            self._live[app.app_id] = {}
            self._closed_count[app.app_id] = 0
        now = self.clock.now()
        self._advanced_to = now.timestamp()
        if workload:
            for index, app in enumerate(self._apps):
                self._workloads[app.app_id] = self._start_workload(index, app, now)

    # ------------------------------------------------------------------ construction

    def _rng(self, purpose: str) -> random.Random:
        return random.Random(f"duixwatch-sim:{self.seed}:{purpose}")

    def _make_apps(
        self, count: int, shape: shapes.ListShape | Literal["random"] | None
    ) -> list[SimApp]:
        rng = self._rng("apps")
        shape_rng = self._rng("shapes")
        all_shapes = list(shapes.ListShape.variants()) if shape == "random" else []
        made: list[SimApp] = []
        used: set[str] = set()
        for index in range(count):
            app_id = self._unique_id(rng, used)
            used.add(app_id)
            name = APP_NAMES[index] if index < len(APP_NAMES) else f"app-{index + 1:03d}"
            if shape == "random":
                app_shape = shape_rng.choice(all_shapes)
            else:
                app_shape = shape or shapes.DEFAULT_SHAPE
            app = SimApp(
                app_id=app_id,
                name=name,
                app_key=f"sim-{rng.getrandbits(128):032x}",
                concurrency_limit=rng.randint(5, 50),
                shape=app_shape,
                crop_id=str(rng.randrange(1_000_000, 10_000_000)),
                user_id=str(rng.randrange(1000, 100_000)),
                conversation_id=documents.long_id(self._docs_rng),
            )
            document = documents.conversation_document(
                self._docs_rng,
                conversation_id=app.conversation_id,
                corp_id=app.crop_id,
                user_id=app.user_id,
                name=app.name,
            )
            self._conversations.add(app.app_id, document)
            made.append(app)
        return made

    def _unique_id(self, rng: random.Random, used: Iterable[str] = ()) -> str:
        taken = set(used)
        for _ in range(100):
            candidate = documents.long_id(rng)
            if candidate not in self._sessions and candidate not in taken:
                return candidate
        raise RuntimeError("could not draw a unique 19-digit id")  # pragma: no cover

    def _start_workload(self, index: int, app: SimApp, now: datetime) -> Workload:
        rng = self._rng(f"{index}:workload")
        now_ts = now.timestamp()
        workload = Workload(rng=rng, next_arrival=math.inf)
        initial = round(app.concurrency_limit * rng.uniform(0.4, 0.6))
        stale = min(initial, rng.randint(1, 3))
        for position in range(initial):
            if position < stale:
                # Abandoned long ago: nobody will hang up, only a stop ends them.
                age = rng.uniform(STALE_AGE_SECONDS + 60, 3600.0)
                ends_at = None
            else:
                age = rng.uniform(0.0, STALE_AGE_SECONDS - 60)
                ends_at = now_ts + self._draw_duration(rng)
            self._start_workload_session(app, workload, now_ts - age, ends_at)
        workload.next_arrival = self._next_gap(rng, now_ts)
        return workload

    def _draw_duration(self, rng: random.Random) -> float:
        """One hang-up delay, ``min + Exp(mean - min)`` (with min 0, exactly ``Exp(mean)``)."""
        floor = self.min_duration_seconds
        return floor + rng.expovariate(1.0 / (self.mean_duration_seconds - floor))

    def _next_gap(self, rng: random.Random, after_ts: float) -> float:
        if self.arrivals_per_minute <= 0:
            return math.inf
        return after_ts + rng.expovariate(self.arrivals_per_minute / 60.0)

    def _start_workload_session(
        self,
        app: SimApp,
        workload: Workload,
        started_ts: float,
        ends_ts: float | None,
        ids: tuple[str, str] | None = None,
    ) -> SimSession:
        session_id, user_id = ids if ids is not None else self._draw_ids(workload.rng)
        if session_id in self._sessions:  # astronomically rare: keep ids unique anyway
            session_id = self._unique_id(workload.rng)
        session = SimSession(
            session_id=session_id,
            app_id=app.app_id,
            started_at=utc(started_ts),
            ends_at=None if ends_ts is None else utc(ends_ts),
            user_id=user_id,
        )
        self._register(session)
        if ends_ts is not None:
            workload.seq += 1
            heapq.heappush(workload.ends, (ends_ts, workload.seq, session.session_id))
        return session

    @staticmethod
    def _draw_ids(rng: random.Random) -> tuple[str, str]:
        return documents.long_id(rng), str(rng.randrange(10_000, 1_000_000))

    def _register(self, session: SimSession) -> None:
        session.conversation_id = self._conversations.for_session(
            session.app_id, session.session_id
        )
        self._sessions[session.session_id] = session
        self._live[session.app_id][session.session_id] = session

    # ------------------------------------------------------------------ the workload

    def advance(self) -> None:
        """Play the workload up to ``clock.now()`` (arrivals, refusals and hang-ups)."""
        now_ts = self.clock.now().timestamp()
        if now_ts <= self._advanced_to:
            return
        if self._workloads:  # --no-workload: nothing to play (this ran per request before)
            for app in self._apps:
                workload = self._workloads.get(app.app_id)
                if workload is not None:
                    self._advance_app(app, workload, now_ts)
        self._advanced_to = now_ts

    def _advance_app(self, app: SimApp, workload: Workload, now_ts: float) -> None:
        rng = workload.rng
        for _ in range(MAX_EVENTS_PER_ADVANCE):
            next_end = workload.ends[0][0] if workload.ends else math.inf
            if min(next_end, workload.next_arrival) > now_ts:
                return
            if next_end <= workload.next_arrival:
                end_ts, _, session_id = heapq.heappop(workload.ends)
                self._close(self._sessions[session_id], "hangup", utc(end_ts))
                continue
            arrival = workload.next_arrival
            # Draw the same numbers whether or not the arrival is refused, so that one
            # refusal does not reshuffle every later session.
            duration = self._draw_duration(rng)
            abandoned = rng.random() < self.abandon_probability
            ids = self._draw_ids(rng)
            if len(self._live[app.app_id]) >= app.concurrency_limit:
                app.refused += 1
            else:
                ends_ts = None if abandoned else arrival + duration
                self._start_workload_session(app, workload, arrival, ends_ts, ids)
            workload.next_arrival = self._next_gap(rng, arrival)
        # Too far behind (a clock jump): skip ahead instead of replaying every event.
        for end_ts, _, session_id in workload.ends:
            if end_ts <= now_ts:
                self._close(self._sessions[session_id], "hangup", utc(end_ts))
        workload.ends = [entry for entry in workload.ends if entry[0] > now_ts]
        heapq.heapify(workload.ends)
        workload.next_arrival = self._next_gap(rng, now_ts)

    def _close(self, session: SimSession, by: ClosedBy, at: datetime) -> bool:
        if session.closed:
            return False
        session.closed_at = at
        session.closed_by = by
        self._live[session.app_id].pop(session.session_id, None)
        self._closed_count[session.app_id] += 1
        return True

    # ------------------------------------------------------------------ public state API

    @property
    def apps(self) -> list[SimApp]:
        """The simulated apps, in order."""
        return list(self._apps)

    def app(self, app_id_or_name: str) -> SimApp:
        """The app with this id or name; :class:`KeyError` if there is none."""
        try:
            return self._by_key[str(app_id_or_name)]
        except KeyError:
            raise KeyError(f"no simulated app {app_id_or_name!r}") from None

    def add_session(
        self,
        app_id: str,
        *,
        age_seconds: float = 0.0,
        session_id: str | None = None,
        with_id: bool = True,
        with_start: bool = True,
    ) -> SimSession:
        """Start a session now minus ``age_seconds`` that lasts until something closes it.

        Explicit sessions bypass the concurrency limit (tests build over-quota apps this way).
        ``with_id=False`` / ``with_start=False`` leave the id / start time out of the list.
        """
        app = self.app(app_id)
        self.advance()
        if age_seconds < 0:
            raise ValueError("age_seconds must not be negative")
        if session_id is None:
            session_id = self._unique_id(self._ids_rng)
        elif not session_id or session_id in self._sessions:
            raise ValueError(f"session id {session_id!r} is empty or already used")
        session = SimSession(
            session_id=session_id,
            app_id=app.app_id,
            started_at=self.clock.now() - timedelta(seconds=age_seconds),
            with_id=with_id,
            with_start=with_start,
            user_id=str(self._ids_rng.randrange(10_000, 1_000_000)),
        )
        self._register(session)
        return session

    def end_session(self, session_id: str) -> SimSession:
        """The user hangs up (``closed_by="hangup"``); :class:`KeyError` if unknown."""
        session = self.session(session_id)
        self._close(session, "hangup", self.clock.now())
        return session

    def session(self, session_id: str) -> SimSession:
        """A session, live or closed; :class:`KeyError` if there never was one."""
        self.advance()
        try:
            return self._sessions[session_id]
        except KeyError:
            raise KeyError(f"no simulated session {session_id!r}") from None

    def sessions(self, app_id: str | None = None) -> list[SimSession]:
        """Every session there has been (of ``app_id``, when given), oldest start first: when
        each began (``started_at``) and ended (``closed_at``, ``None`` while live). Read-only."""
        key = None if app_id is None else self.app(app_id).app_id
        self.advance()
        return sorted(
            (s for s in self._sessions.values() if key is None or s.app_id == key),
            key=lambda s: s.started_at,
        )

    def live_sessions(self, app_id: str) -> list[SimSession]:
        """The app's live sessions now, oldest first."""
        app = self.app(app_id)
        self.advance()
        return sorted(self._live[app.app_id].values(), key=lambda s: s.started_at)

    def closed_count(self, app_id: str) -> int:
        """How many of the app's sessions have ended."""
        app = self.app(app_id)
        self.advance()
        return self._closed_count[app.app_id]

    def set_shape(self, app_id: str, shape: shapes.ListShape) -> None:
        """Change how ``getconcurrentList`` writes this app's sessions."""
        if not isinstance(shape, shapes.ListShape):
            raise TypeError("shape must be a ListShape")
        self.app(app_id).shape = shape

    def conversation_ids(self, app_id: str) -> list[str]:
        """The ids of the app's conversations (seeded and created by avatars)."""
        return self._conversations.ids(self.app(app_id).app_id)

    def change_conversation(self, app_id: str, conversation_id: str, changes: object) -> list[str]:
        """Change one of the app's conversations by key path (``{"detailDto.ttsSpeaker": "aria",
        "scriptDtoList[2].scriptContent": "…"}``, see :mod:`~duixwatch.sim.conversations`);
        the key paths whose value changed. ``KeyError`` for an unknown app or conversation,
        ``ValueError`` for a bad body or a path that does not exist (nothing changes then).
        """
        return self._conversations.change(self.app(app_id).app_id, conversation_id, changes)

    @property
    def avatar_training_seconds(self) -> float:
        """How long an avatar created now trains (clock seconds)."""
        return self._avatars.training_seconds

    def set_avatar_training_seconds(self, seconds: float) -> float:
        """How long avatars created from now on train (0: final on the first query; at most
        :data:`MAX_TRAINING_SECONDS`); ``ValueError`` otherwise. Trainings under way keep
        their time."""
        return self._avatars.set_training_seconds(seconds)

    def record_token(self, claims: dict[str, Any]) -> None:
        """Remember an accepted token's claims (bounded)."""
        self.tokens_seen.append(claims)
        if len(self.tokens_seen) > MAX_TOKENS_SEEN:
            del self.tokens_seen[: MAX_TOKENS_SEEN // 2]

    def state(self) -> dict[str, Any]:
        """A JSON-ready picture of every app and its live sessions (for ``/_sim/state``)."""
        self.advance()
        now = self.clock.now()
        return {
            "now": iso(now),
            "seed": self.seed,
            "timezone": self.timezone,
            "avatar_training_seconds": self.avatar_training_seconds,
            "apps": [
                {
                    "app_id": app.app_id,
                    "name": app.name,
                    "concurrency_limit": app.concurrency_limit,
                    "shape": str(app.shape),
                    "conversation_id": app.conversation_id,
                    "conversation_ids": self._conversations.ids(app.app_id),
                    "refused": app.refused,
                    "closed_sessions": self._closed_count[app.app_id],
                    "sessions": [
                        session_dict(session, now) for session in self.live_sessions(app.app_id)
                    ],
                }
                for app in self._apps
            ],
        }

    # ------------------------------------------------------------------ the platform's API

    def peek_app_id(self, token: str | None) -> str | None:
        """The ``appId`` claim of a token, unverified (``None`` if there is none)."""
        if not token:
            return None
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return None
        app_id = claims.get("appId") if isinstance(claims, dict) else None
        return app_id if isinstance(app_id, str) else None

    def authenticate(self, token: str | None, *, query_app_id: str | None = None) -> SimApp:
        """Verify a request's ``token`` header; return its app or raise :class:`SimError`.

        Missing → 1005; undecodable, badly signed, expired or without ``exp``/``iat`` → 1006;
        unknown ``appId`` claim, or a query ``appId`` naming another app → 40001.
        """
        if not token:
            raise token_empty()
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            raise token_invalid("not a JWT") from exc
        app_id = unverified.get("appId")
        if not isinstance(app_id, str) or not app_id:
            raise token_invalid("no appId claim")
        app = self._app_by_id(app_id)
        if app is None:
            raise bad_app("unknown appId")
        try:
            claims = jwt.decode(
                token,
                app.app_key.encode("utf-8"),
                algorithms=["HS256"],
                options={
                    "require": ["exp", "iat"],
                    "verify_exp": False,  # checked below against the simulator's clock
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise token_invalid("signature verification failed") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise token_invalid(f"missing claim {exc.claim}") from exc
        except jwt.InvalidTokenError as exc:
            raise token_invalid("cannot verify") from exc
        exp, iat = claims["exp"], claims["iat"]
        if not is_number(exp) or not is_number(iat):
            raise token_invalid("exp and iat must be numbers")
        if exp <= self.clock.now().timestamp():
            raise token_invalid("expired")
        if query_app_id is not None and query_app_id != app.app_id:
            raise bad_app("appId does not match the token")
        self.record_token(claims)
        return app

    def _app_by_id(self, app_id: str) -> SimApp | None:
        app = self._by_key.get(app_id)
        return app if app is not None and app.app_id == app_id else None

    def concurrent_number(self, app: SimApp) -> dict[str, Any]:
        """``getconcurrentNumber`` ``data``."""
        self.advance()
        return {
            "cropId": app.crop_id,
            "totalConcurrentNumber": app.concurrency_limit,
            "userConcurrentNumber": len(self._live[app.app_id]),
        }

    def concurrent_list(self, app: SimApp) -> list[dict[str, Any]] | dict[str, Any]:
        """``getconcurrentList`` ``data``, in the app's current shape."""
        items = [
            {
                "session_id": session.session_id if session.with_id else None,
                "started_at": session.started_at if session.with_start else None,
                "extra": {
                    "userId": session.user_id,
                    "status": "in_call",
                    "conversationId": session.conversation_id,
                },
            }
            for session in self.live_sessions(app.app_id)
        ]
        return shapes.render_session_list(app.shape, items, self.zone)

    def stop_session(self, app: SimApp, session_id: str) -> SimSession:
        """``sessionStop``: close one live session of ``app``, else code 2002."""
        self.advance()
        session = self._live[app.app_id].get(session_id)
        if session is None:
            raise no_such("session")
        self._close(session, "sessionStop", self.clock.now())
        return session

    def close_all(self, app: SimApp) -> int:
        """``distroyCallSessionsByAppId``: close every live session of ``app``; how many."""
        self.advance()
        now = self.clock.now()
        doomed = list(self._live[app.app_id].values())
        for session in doomed:
            self._close(session, "distroyCallSessionsByAppId", now)
        return len(doomed)

    def conversation(self, app: SimApp, conversation_id: str) -> dict[str, Any]:
        """``getConversationById`` ``data`` for one of ``app``'s conversations, else 2002."""
        document = self._conversations.get(app.app_id, conversation_id)
        if document is None:
            raise no_such("conversation")
        return document

    def create_avatar(self, app: SimApp, body: object) -> int:
        """``createAvatar``: validate the body (HTTP 400 if bad) and start training."""
        return self._avatars.create(app, body)

    def query_avatar(self, app: SimApp, avatar_id: int) -> dict[str, Any]:
        """``queryAvatar`` ``data``: training for the time in force when it was created, then
        an outcome (see :mod:`~duixwatch.sim.avatars`); else code 2002."""
        return self._avatars.query(app, avatar_id)
