"""The platform's documents: a conversation's configuration, an avatar and its training.

Frozen pydantic models that keep every field the platform sent (``extra="allow"``), so nothing
is lost between the wire and ``-o json``: camelCase on the wire, snake_case here. Ids are
strings (19-digit Java longs lose precision as numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = [
    "Avatar",
    "AvatarCreated",
    "AvatarSpec",
    "AvatarStatus",
    "Conversation",
    "ConversationBackground",
    "ConversationDetail",
    "ConversationScript",
]


def _id_to_str(value: Any) -> Any:
    """Ids arrive as numbers or strings; keep them as strings (19-digit longs lose precision
    in JavaScript and in float)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


Id = Annotated[str, BeforeValidator(_id_to_str)]


class _Wire(BaseModel):
    """A DUIX JSON document: camelCase on the wire, snake_case here, extra fields kept."""

    model_config = ConfigDict(
        frozen=True,
        extra="allow",
        populate_by_name=True,
        alias_generator=to_camel,
    )


class ConversationBackground(_Wire):
    """``detailDto.backgroundDto``."""

    id: Id | None = None
    background_code: Id | None = None
    background_name: str | None = None
    background_url: str | None = None
    file_type: int | None = None
    proportion: str | None = None


class ConversationDetail(_Wire):
    """``detailDto``: model, background and TTS of a conversation."""

    id: Id | None = None
    conversation_id: Id | None = None
    model_id: Id | None = None
    model_name: str | None = None
    #: "0" cloud digital human, "1" local digital human (documented as a string).
    model_id_type: Id | None = None
    local_model_info: Mapping[str, Any] | None = None
    background_dto: ConversationBackground | None = None
    tts_id: Id | None = None
    tts_name: str | None = None
    tts_speaker: str | None = None
    proportion: str | None = None


class ConversationScript(_Wire):
    """One entry of ``scriptDtoList``: a front-end phrase of the conversation."""

    id: Id | None = None
    conversation_id: Id | None = None
    #: 0 wake-up word, 1 opening line, 2 waiting phrase, 3 unknown question, 4 farewell,
    #: 5 interruption phrase, 6 interruption sentence, 7 guiding phrase.
    script_type: Id | None = None
    script_content: str | None = None
    tts_content: str | None = None
    emotion: str | None = None


class Conversation(_Wire):
    """``getConversationById`` ``data``."""

    id: Id
    conversation_name: str | None = None
    language: str | None = None
    corp_id: Id | None = None
    user_id: Id | None = None
    max_conversation: int | None = None
    detail_dto: ConversationDetail | None = None
    script_dto_list: tuple[ConversationScript, ...] = ()


class AvatarSpec(_Wire):
    """The body of ``createAvatar``."""

    #: 1 training with a video, 2 training with a photo.
    custom_type: Literal[1, 2]
    avatar_name: str
    gender: Literal["male", "female", "other"] | None = None
    profile: str | None = None
    template_video: str | None = None
    cover_url: str | None = None
    audio_url: str | None = None
    tts_speaker: str | None = None
    video_start: float | None = None
    video_end: float | None = None
    audio_start: float | None = None
    audio_end: float | None = None


@dataclass(frozen=True, slots=True)
class AvatarCreated:
    """``createAvatar`` succeeded: query the avatar with ``avatar_id``."""

    avatar_id: str


AvatarStatus = Literal["training", "success", "failed", "unknown"]


@dataclass(frozen=True, slots=True)
class Avatar:
    """``queryAvatar``.

    ``status`` is normalised: the seed documents ``customizedStatus`` (0 training, 1 success,
    2 failed); newer public docs show ``status`` (0 training, 1 failed, 2 success). The raw
    number is kept in ``status_code``.
    """

    avatar_id: str
    name: str | None
    status: AvatarStatus
    status_code: int | None
    reason: str | None
    default_conversation_id: str | None
