"""export.conversations: conversation and avatar series, and none while a read fails."""

from __future__ import annotations

from duixwatch.export.conversations import DocumentCollector
from duixwatch.export.exposition import Registry
from duixwatch.watch.conversations import AvatarState, ConversationState
from tests.fakes import FakeClock

LABELS = {
    "name": "Front desk",
    "language": "en",
    "model": "m",
    "model_type": "cloud",
    "tts": "t",
    "tts_speaker": "s",
    "third_party": "false",
}


def test_series_of_a_readable_conversation_and_a_failing_one(clock: FakeClock) -> None:
    ok = ConversationState(
        "desk",
        "1",
        up=True,
        labels=LABELS,
        max_sessions=5,
        changes=2,
        last_change_at=clock.now(),
    )
    down = ConversationState("desk", "2", up=False, labels=LABELS, max_sessions=5, changes=1)
    registry = Registry()
    registry.register(DocumentCollector(lambda: [ok, down], list, clock=clock))
    get = registry.get_sample_value
    assert get("duix_conversation_up", {"app": "desk", "conversation": "1"}) == 1
    assert get("duix_conversation_info", {"app": "desk", "conversation": "1", **LABELS}) == 1
    assert get("duix_conversation_max_sessions", {"app": "desk", "conversation": "1"}) == 5
    assert get("duix_conversation_config_changes_total", {"app": "desk", "conversation": "1"}) == 2
    assert (
        get("duix_conversation_last_change_timestamp_seconds", {"app": "desk", "conversation": "1"})
        == clock.now().timestamp()
    )
    # a failing read: only its up series
    assert get("duix_conversation_up", {"app": "desk", "conversation": "2"}) == 0
    assert get("duix_conversation_max_sessions", {"app": "desk", "conversation": "2"}) is None
    assert (
        get("duix_conversation_config_changes_total", {"app": "desk", "conversation": "2"}) is None
    )
    assert get("duix_conversation_info", {"app": "desk", "conversation": "2", **LABELS}) is None


def test_avatar_status_and_training_time(clock: FakeClock) -> None:
    training = AvatarState("desk", "10", "host", status="training", training_since=clock.now())
    done = AvatarState("desk", "11", "guide", status="success")
    failed = AvatarState("desk", "12", "x", status="failed", reason="bad video")
    unread = AvatarState("desk", "13")
    registry = Registry()
    registry.register(
        DocumentCollector(list, lambda: [training, done, failed, unread], clock=clock)
    )
    clock.advance(90)
    get = registry.get_sample_value
    assert get("duix_avatar_training_status", {"app": "desk", "avatar": "10", "name": "host"}) == 0
    assert get("duix_avatar_training_status", {"app": "desk", "avatar": "11", "name": "guide"}) == 1
    assert get("duix_avatar_training_status", {"app": "desk", "avatar": "12", "name": "x"}) == 2
    assert get("duix_avatar_training_status", {"app": "desk", "avatar": "13", "name": ""}) is None
    assert get("duix_avatar_training_seconds", {"app": "desk", "avatar": "10"}) == 90
    assert get("duix_avatar_training_seconds", {"app": "desk", "avatar": "11"}) is None
