"""The simulated platform's avatar training: ``createAvatar`` starts one, ``queryAvatar`` reads it.

An avatar trains for the training time in force when it was created (clock time; 0 means final
on the first query), then succeeds — a success with a ``profile`` gets a default conversation —
or fails with a reason when its name contains ``fail``. Pure Python, no HTTP.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pydantic

from duixwatch.core import clock as clock_mod
from duixwatch.core.documents import AvatarSpec
from duixwatch.sim import conversations, documents
from duixwatch.sim.records import SimApp, SimAvatar, bad_request, is_number, no_such

__all__ = ["MAX_TRAINING_SECONDS", "TRAINING_SECONDS", "Avatars"]

#: How long an avatar trains by default (the ``--avatar-training-seconds`` default).
TRAINING_SECONDS = 60.0
#: The longest training time that can be set (a week).
MAX_TRAINING_SECONDS = 7 * 24 * 3600.0


class Avatars:
    """Every avatar of the simulated platform, and how long a new one trains.

    ``first_id`` is the first avatar id handed out; ``docs_rng`` draws the default
    conversations (shared with the simulator, so its sequence is the seed's).
    """

    def __init__(
        self,
        *,
        clock: clock_mod.Clock,
        first_id: int,
        docs_rng: random.Random,
        store: conversations.Conversations,
        training_seconds: float = TRAINING_SECONDS,
    ) -> None:
        self._clock = clock
        self._next_id = first_id
        self._docs_rng = docs_rng
        self._store = store
        self._avatars: dict[int, SimAvatar] = {}
        self.training_seconds = TRAINING_SECONDS
        self.set_training_seconds(training_seconds)

    def set_training_seconds(self, seconds: float) -> float:
        """How long avatars created from now on train; ``ValueError`` outside 0 to a week."""
        if not is_number(seconds) or not 0 <= seconds <= MAX_TRAINING_SECONDS:
            raise ValueError(
                f"training seconds must be a number between 0 and {MAX_TRAINING_SECONDS:g}"
            )
        self.training_seconds = float(seconds)
        return self.training_seconds

    def create(self, app: SimApp, body: object) -> int:
        """``createAvatar``: validate the body (HTTP 400 if bad) and start training."""
        if not isinstance(body, Mapping):
            raise bad_request("the body must be a JSON object")
        custom_type = body.get("customType")
        if isinstance(custom_type, bool) or custom_type not in (1, 2):
            raise bad_request("customType must be 1 (video) or 2 (photo)")
        name = body.get("avatarName")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("avatarName is required")
        if custom_type == 1 and not body.get("templateVideo"):
            raise bad_request("templateVideo is required when customType is 1")
        if custom_type == 2 and not body.get("coverUrl"):
            raise bad_request("coverUrl is required when customType is 2")
        try:
            spec = AvatarSpec.model_validate(dict(body))
        except pydantic.ValidationError as exc:
            fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
            raise bad_request(f"invalid fields: {', '.join(fields)}") from exc
        avatar_id = self._next_id
        self._next_id += 1
        self._avatars[avatar_id] = SimAvatar(
            avatar_id=avatar_id,
            app_id=app.app_id,
            name=spec.avatar_name,
            profile=spec.profile,
            created_at=self._clock.now(),
            training_seconds=self.training_seconds,
        )
        return avatar_id

    def query(self, app: SimApp, avatar_id: int) -> dict[str, Any]:
        """``queryAvatar`` ``data`` (the seed's ``customizedStatus`` 0 training / 1 success /
        2 failed), else code 2002 for an avatar that is not ``app``'s."""
        avatar = self._avatars.get(avatar_id)
        if avatar is None or avatar.app_id != app.app_id:
            raise no_such("avatar")
        done_at = avatar.created_at + timedelta(seconds=avatar.training_seconds)
        trained = self._clock.now() >= done_at
        failed = "fail" in avatar.name.lower()
        status = 0 if not trained else (2 if failed else 1)
        if status == 1 and avatar.profile and avatar.conversation_id is None:
            avatar.conversation_id = documents.long_id(self._docs_rng)
            document = documents.conversation_document(
                self._docs_rng,
                conversation_id=avatar.conversation_id,
                corp_id=app.crop_id,
                user_id=app.user_id,
                name=avatar.name,
                prompt=avatar.profile,
            )
            self._store.add(app.app_id, document)
        return {
            "id": avatar.avatar_id,
            "customizedName": avatar.name,
            "customizedStatus": status,
            "reason": "simulated training failure (the avatar name asks for it)"
            if status == 2
            else None,
            "defaultConversationId": avatar.conversation_id if status == 1 else None,
        }
