"""Conversations and avatars, watched: which configuration is live, when it changed, and how
an avatar's training goes.

Per APP (a task each, :class:`~duixwatch.core.tasks.KeyedTasks`), :class:`DocumentWatch` reads:

* every ``conversation_poll_interval_seconds``, each conversation of ``apps[].conversations`` —
  the ids given, or with ``auto`` the ids the APP's live sessions carry (remembered for a day
  after they were last seen, at most :data:`MAX_AUTO_CONVERSATIONS`) — through the shared DUIX
  client, so within its global in-flight and request-rate limits. A change is a different
  :func:`digest` (SHA-256 of the payload's canonical JSON; no field of the documented payload
  changes by itself between reads) and is logged once as ``conversation_changed`` with the key
  paths that differ (:func:`changed_paths`) — never their values: prompts and knowledge may be
  confidential;
* every :data:`AVATAR_POLL_SECONDS`, each avatar of ``apps[].avatars`` until its training is
  final (succeeded or failed), then no more.

A failed read keeps what was known (so the next success is compared with the last one) but
marks the conversation down: the metrics then show only its up series.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import anyio
import structlog
from anyio.abc import TaskStatus

from duixwatch.config import AppConfig
from duixwatch.core import errors, models
from duixwatch.core.clock import Clock
from duixwatch.core.tasks import KeyedTasks
from duixwatch.duix import DuixClient, parse

__all__ = [
    "AVATAR_POLL_SECONDS",
    "MAX_AUTO_CONVERSATIONS",
    "AvatarState",
    "ConversationState",
    "DocumentWatch",
    "changed_paths",
    "conversation_labels",
    "digest",
]

log = structlog.get_logger("duixwatch.watch.conversations")

#: How often an avatar in training is asked about.
AVATAR_POLL_SECONDS: Final = 30.0
#: ``conversations: auto`` watches at most this many ids per APP (the most recently seen).
MAX_AUTO_CONVERSATIONS: Final = 100
#: An auto-watched id not seen in a live session for this long is no longer watched.
AUTO_FORGET: Final = timedelta(days=1)
#: The first reads of an APP come at a random offset within this (or its interval).
FIRST_READ_SPREAD_SECONDS: Final = 10.0
#: A change logs at most this many key paths (and how many more there were).
MAX_LOGGED_PATHS: Final = 50

_MODEL_TYPES: Final = {"0": "cloud", "1": "local"}


def digest(data: Mapping[str, Any]) -> str:
    """The payload's fingerprint: SHA-256 of its canonical JSON (keys sorted)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted key paths at which ``new`` differs from ``old`` (``a.b``, ``list[2].c``);
    a key added or removed is a path too. Values are never part of the result."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        paths: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                paths.append(where)
            else:
                paths += changed_paths(old[key], new[key], where)
        return paths
    if isinstance(old, list) and isinstance(new, list):
        paths = []
        for index in range(max(len(old), len(new))):
            where = f"{prefix}[{index}]"
            if index >= len(old) or index >= len(new):
                paths.append(where)
            else:
                paths += changed_paths(old[index], new[index], where)
        return paths
    return [] if old == new else [prefix or "."]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def conversation_labels(data: Mapping[str, Any]) -> dict[str, str]:
    """The ``duix_conversation_info`` labels from a ``getConversationById`` payload (a
    missing field is ``""``, never a failure)."""
    detail = data.get("detailDto")
    detail = detail if isinstance(detail, Mapping) else {}
    model_type = _text(detail.get("modelIdType"))
    third = data.get("thirdIsUsed")
    return {
        "name": _text(data.get("conversationName")),
        "language": _text(data.get("language")),
        "model": _text(detail.get("modelName")),
        "model_type": _MODEL_TYPES.get(model_type, model_type),
        "tts": _text(detail.get("ttsName")),
        "tts_speaker": _text(detail.get("ttsSpeaker")),
        "third_party": "" if third is None else ("true" if str(third) == "1" else "false"),
    }


@dataclass(slots=True)
class ConversationState:
    """What is known of one watched conversation."""

    app: str
    conversation: str
    up: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    max_sessions: int | None = None
    digest: str | None = None
    data: Mapping[str, Any] | None = field(default=None, repr=False)
    changes: int = 0
    last_change_at: datetime | None = None
    changed_paths: tuple[str, ...] = ()
    last_read_at: datetime | None = None
    last_success_at: datetime | None = None
    error: str | None = None


@dataclass(slots=True)
class AvatarState:
    """What is known of one watched avatar's training."""

    app: str
    avatar: str
    name: str = ""
    #: ``training``, ``success``, ``failed`` or ``unknown``; ``None`` before the first read.
    status: str | None = None
    reason: str | None = None
    training_since: datetime | None = None
    final_at: datetime | None = None
    last_read_at: datetime | None = None
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.status in ("success", "failed")


@dataclass(frozen=True)
class _Work:
    app: AppConfig
    client: DuixClient


class DocumentWatch:
    """Every APP's watched conversations and avatars."""

    def __init__(self, *, clock: Clock, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._tasks: KeyedTasks[_Work] = KeyedTasks(self._loop)
        self._conversations: dict[tuple[str, str], ConversationState] = {}
        self._avatars: dict[tuple[str, str], AvatarState] = {}
        #: ``auto`` APPs: conversation id -> when a live session last carried it.
        self._seen: dict[str, dict[str, datetime]] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._tasks.run(task_status=task_status)

    def apply(self, apps: Sequence[AppConfig], client: DuixClient) -> None:
        """Watch what ``apps`` ask for with ``client`` (after :meth:`run` started)."""
        watched = {a.name: a for a in apps if a.conversations or a.avatars}
        for key in list(self._conversations):
            app = watched.get(key[0])
            if app is None or (app.conversations != "auto" and key[1] not in app.conversations):
                del self._conversations[key]
        for key in list(self._avatars):
            app = watched.get(key[0])
            if app is None or key[1] not in app.avatars:
                del self._avatars[key]
        for name in list(self._seen):
            if name not in watched or watched[name].conversations != "auto":
                del self._seen[name]
        self._tasks.apply({name: _Work(app, client) for name, app in watched.items()})

    def observe(self, app: AppConfig, snapshot: models.AppSnapshot) -> None:
        """Remember the conversation ids of the APP's live sessions (``conversations: auto``)."""
        if app.conversations != "auto" or snapshot.sessions is None:
            return
        seen = self._seen.setdefault(app.name, {})
        now = self._clock.now()
        for session in snapshot.sessions.sessions:
            if session.conversation_id is not None:
                seen[session.conversation_id] = now
        if len(seen) > MAX_AUTO_CONVERSATIONS:
            newest = sorted(seen.items(), key=lambda item: item[1])[-MAX_AUTO_CONVERSATIONS:]
            self._seen[app.name] = dict(newest)

    def conversations(self) -> list[ConversationState]:
        return list(self._conversations.values())

    def avatars(self) -> list[AvatarState]:
        return list(self._avatars.values())

    # ------------------------------------------------------------------ the per-APP task

    def _conversation_ids(self, app: AppConfig) -> list[str]:
        if app.conversations != "auto":
            return list(app.conversations)
        seen = self._seen.get(app.name, {})
        cutoff = self._clock.now() - AUTO_FORGET
        for cid in [cid for cid, at in seen.items() if at < cutoff]:
            del seen[cid]
            self._conversations.pop((app.name, cid), None)
        return sorted(seen)

    async def _loop(self, work: _Work) -> None:
        app, client = work.app, work.client
        credentials = app.credentials
        spread = min(app.conversation_poll_interval_seconds, FIRST_READ_SPREAD_SECONDS)
        await self._clock.sleep(self._rng.uniform(0, spread))
        next_conversations = next_avatars = self._clock.monotonic()
        while True:
            now = self._clock.monotonic()
            if app.conversations and now >= next_conversations:
                for cid in self._conversation_ids(app):
                    await self._read_conversation(client, app, credentials, cid)
                next_conversations = now + app.conversation_poll_interval_seconds
            pending = [a for a in app.avatars if not self._avatar(app, a).final]
            if pending and now >= next_avatars:
                for avatar in pending:
                    await self._read_avatar(client, app, credentials, avatar)
                next_avatars = now + AVATAR_POLL_SECONDS
            due = [next_conversations] if app.conversations else []
            if any(not self._avatar(app, a).final for a in app.avatars):
                due.append(next_avatars)
            if not due:
                return  # nothing left to watch: every avatar is final, no conversations
            await self._clock.sleep(min(due) - self._clock.monotonic())

    async def _read_conversation(
        self, client: DuixClient, app: AppConfig, credentials: models.AppCredentials, cid: str
    ) -> None:
        state = self._conversations.setdefault((app.name, cid), ConversationState(app.name, cid))
        now = self._clock.now()
        state.last_read_at = now
        try:
            data = await client.conversation_data(credentials, cid)
        except errors.DuixwatchError as exc:
            if state.up or state.error is None:
                log.warning(
                    "conversation_read_failed",
                    app=app.name,
                    conversation=cid,
                    error=type(exc).__name__,
                    detail=str(exc),
                )
            state.up, state.error = False, f"{type(exc).__name__}: {exc}"
            return
        fingerprint = digest(data)
        if state.digest is not None and fingerprint != state.digest:
            paths = changed_paths(state.data, data) if state.data is not None else []
            state.changes += 1
            state.last_change_at = now
            state.changed_paths = tuple(paths)
            log.info(
                "conversation_changed",
                app=app.name,
                conversation=cid,
                paths=paths[:MAX_LOGGED_PATHS],
                more_paths=max(0, len(paths) - MAX_LOGGED_PATHS),
            )
        state.digest, state.data = fingerprint, data
        state.labels = conversation_labels(data)
        max_sessions = data.get("maxConversation")
        # A count, as the session counts are (below 2^53): 10^400 is no limit, and could not
        # even be written to /metrics.
        state.max_sessions = (
            max_sessions
            if type(max_sessions) is int and 0 <= max_sessions < parse.MAX_COUNT
            else None
        )
        state.up, state.error, state.last_success_at = True, None, now

    def _avatar(self, app: AppConfig, avatar: str) -> AvatarState:
        return self._avatars.setdefault((app.name, avatar), AvatarState(app.name, avatar))

    async def _read_avatar(
        self, client: DuixClient, app: AppConfig, credentials: models.AppCredentials, avatar: str
    ) -> None:
        state = self._avatar(app, avatar)
        now = self._clock.now()
        state.last_read_at = now
        try:
            found = await client.query_avatar(credentials, avatar)
        except errors.DuixwatchError as exc:
            state.error = f"{type(exc).__name__}: {exc}"
            return
        state.error = None
        state.name = found.name or state.name
        if found.status == "training" and state.training_since is None:
            state.training_since = now
        if found.status in ("success", "failed") and not state.final:
            state.final_at = now
            log.info(
                "avatar_training_finished",
                app=app.name,
                avatar=avatar,
                status=found.status,
                reason=found.reason,
            )
        state.status, state.reason = found.status, found.reason
