"""Generated DUIX documents: the conversation answered by ``getConversationById``.

The seed's real ``getConversationById`` output (``tests/fixtures/get_conversation_by_id.json``)
fixes the structure: this module builds documents with the same keys and value types, filled
with seeded values, so the client's parser sees what the platform sends. Pure functions of a
:class:`random.Random`; nothing here knows about HTTP.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["conversation_document", "long_id"]

_SCRIPTS = (
    (0, "Hello there"),
    (1, "Hi, I am {name}. How can I help you today?"),
    (2, "One moment, let me check that for you."),
    (3, "Sorry, I do not know the answer to that yet."),
    (4, "Thank you for visiting, goodbye!"),
)
_SPEAKERS = ("zhifeng_emo", "guina", "aria", "nova")
_BACKGROUNDS = ("lobby.jpg", "office.jpg", "museum.jpg", "zuoyi.jpg")


def long_id(rng: random.Random) -> str:
    """A 19-digit id, like the platform's Java longs (always a string)."""
    return str(rng.randrange(10**18, 10**19))


def conversation_document(
    rng: random.Random,
    *,
    conversation_id: str,
    corp_id: str,
    user_id: str,
    name: str,
    prompt: str | None = None,
    language: str = "en",
) -> dict[str, Any]:
    """A conversation with the structure of the seed's ``getConversationById`` ``data``."""
    row = rng.randrange(100, 100_000)
    background = rng.choice(_BACKGROUNDS)
    speaker = rng.choice(_SPEAKERS)
    return {
        "id": conversation_id,
        "conversationName": name,
        "language": language,
        "corpId": corp_id,
        "userId": user_id,
        "conversationConfigDto": None,
        "maxConversation": rng.randint(1, 10),
        "dataModelIsUsed": 1,
        "knowledgeIsUsed": rng.randint(0, 1),
        "fileIsUsed": 0,
        "thirdIsUsed": 0,
        "isFreedom": 0,
        "asrProvider": None,
        "conversationInfoDto": {
            "id": row + 1,
            "name": name,
            "nickName": "",
            "gender": rng.randint(0, 2),
            "age": 0,
            "height": 0,
            "weight": 0,
            "characters": "",
            "backStory": "",
        },
        "detailDto": {
            "id": row,
            "conversationId": conversation_id,
            "proportion": "16:9",
            "terminalType": 0,
            "modelId": str(rng.randrange(10**14, 10**15)),
            "modelIdType": 0,
            "imageId": None,
            "sceneId": None,
            "modelName": f"{name} model",
            "sceneType": 0,
            "background": 1,
            "backgroundDto": {
                "id": rng.randint(1, 50),
                "backgroundCode": long_id(rng),
                "backgroundName": background,
                "backgroundUrl": f"/video-server/jpg/{long_id(rng)}.jpg",
                "fileType": 0,
                "proportion": "16:9",
                "userId": None,
            },
            "modelConfig": None,
            "ttsId": str(rng.randint(1, 99)),
            "ttsName": speaker.split("_", 1)[0],
            "ttsConfig": None,
            "ttsUrl": "",
            "ttsVolume": 0,
            "ttsSpeaker": speaker,
            "ttsSpeedRate": 0,
            "ttsPitch": 0,
            "ttsSource": 20,
            "samplePictureUrl": f"/model/2026/11/21/{rng.getrandbits(128):032x}.png",
            "videoWidth": 1920,
            "videoHeight": 1920,
            "humanProportion": "9:16",
            "humanWidth": 540,
            "humanHeight": 960,
            "humanX": 690,
            "humanY": 120,
            "localModelInfo": None,
        },
        "knowledgeDtoList": [],
        "kbConversationDto": None,
        "modelDtoList": [
            {
                "id": row + 2,
                "conversationId": conversation_id,
                "largeModelType": 0,
                "modelCode": 0,
                "largeName": "chatbot_general",
                "modelId": "1",
                "prompt": prompt or f"Task: Your name is {name}. Answer visitors' questions.",
                "botUrl": "",
            }
        ],
        "thirdDto": None,
        "scriptDtoList": [
            {
                "id": row + 10 + index,
                "conversationId": conversation_id,
                "scriptType": script_type,
                "scriptContent": text.format(name=name),
                "ttsContent": None,
                "emotion": "0",
            }
            for index, (script_type, text) in enumerate(_SCRIPTS)
        ],
    }
