"""watch.conversations: labels from the real payload, change detection by key path."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
from structlog.testing import capture_logs

from duixwatch.config import AppConfig, DuixSettings
from duixwatch.core import documents, models
from duixwatch.duix import DuixClient
from duixwatch.sim import Simulator, create_app
from duixwatch.watch.conversations import (
    AVATAR_POLL_SECONDS,
    DocumentWatch,
    changed_paths,
    conversation_labels,
    digest,
)
from tests.fakes import FakeClock

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "get_conversation_by_id.json"


def real() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())["data"]
    return data


def test_the_info_labels_are_the_real_payloads_values() -> None:
    assert conversation_labels(real()) == {
        "name": "Unnamed-18:04",
        "language": "zh",
        "model": "Model name",
        "model_type": "cloud",
        "tts": "guina",
        "tts_speaker": "zhifeng_emo",
        "third_party": "false",
    }


def test_a_missing_field_is_an_empty_label() -> None:
    assert conversation_labels({}) == dict.fromkeys(
        ("name", "language", "model", "model_type", "tts", "tts_speaker", "third_party"), ""
    )
    assert conversation_labels({"detailDto": None, "thirdIsUsed": 1})["third_party"] == "true"


def test_the_digest_ignores_key_order_and_sees_any_value() -> None:
    data = real()
    reordered = dict(reversed(list(data.items())))
    assert digest(data) == digest(reordered)
    changed = copy.deepcopy(data)
    changed["scriptDtoList"][0]["scriptContent"] = "something else"
    assert digest(changed) != digest(data)


def test_changed_paths_name_keys_and_indexes_never_values() -> None:
    old = real()
    new = copy.deepcopy(old)
    new["detailDto"]["ttsSpeaker"] = "secret-voice"
    new["modelDtoList"][0]["prompt"] = "Task: a confidential prompt"
    new["maxConversation"] = 9
    del new["asrProvider"]
    new["added"] = {"x": 1}
    paths = changed_paths(old, new)
    assert paths == [
        "added",
        "asrProvider",
        "detailDto.ttsSpeaker",
        "maxConversation",
        "modelDtoList[0].prompt",
    ]
    assert "secret" not in " ".join(paths)
    assert changed_paths(old, copy.deepcopy(old)) == []
    assert changed_paths([1, 2], [1, 2, 3], "list") == ["list[2]"]


# --------------------------------------------------------------------------- the watch


def _app(sim: Simulator, index: int = 0, **kw: Any) -> AppConfig:
    a = sim.apps[index]
    return AppConfig.model_validate(
        {"app_id": a.app_id, "name": a.name, "app_key": a.app_key, **kw}
    )


@asynccontextmanager
async def watching(
    sim: Simulator, clock: FakeClock
) -> AsyncIterator[tuple[DocumentWatch, DuixClient]]:
    """A running watch and a client of ``sim`` (in-process)."""
    transport = httpx.ASGITransport(app=create_app(sim))
    watch = DocumentWatch(clock=clock)
    settings = DuixSettings(base_url="http://sim.test")
    async with (
        DuixClient(settings, clock=clock, transport=transport) as client,
        anyio.create_task_group() as tg,
    ):
        await tg.start(watch.run)
        yield watch, client
        tg.cancel_scope.cancel()


async def _until(check: Any, clock: FakeClock) -> None:
    with anyio.fail_after(10):
        while not check():
            await anyio.sleep(0.001)


async def test_a_change_is_counted_once_and_logged_with_its_key_paths(clock: FakeClock) -> None:
    sim = Simulator(apps=1, seed=5, clock=clock, workload=False)
    cid = sim.conversation_ids(sim.apps[0].app_id)[0]
    app = _app(sim, conversations=[cid], conversation_poll_interval_seconds=60)
    async with watching(sim, clock) as (watch, client):
        watch.apply([app], client)
        await _until(lambda: watch.conversations() and watch.conversations()[0].up, clock)
        (state,) = watch.conversations()
        assert state.changes == 0
        assert state.labels["name"]
        with capture_logs() as logs:
            sim.change_conversation(
                app.app_id, cid, {"detailDto.ttsSpeaker": "a-new-voice", "maxConversation": 7}
            )
            await _until(lambda: watch.conversations()[0].changes >= 1, clock)
            reads = state.last_read_at
            await _until(lambda: watch.conversations()[0].last_read_at != reads, clock)
        (state,) = watch.conversations()
        assert state.changes == 1  # read again since, unchanged: still one
        assert state.max_sessions == 7
        assert state.labels["tts_speaker"] == "a-new-voice"
        changed = [e for e in logs if e["event"] == "conversation_changed"]
        assert len(changed) == 1
        assert changed[0]["paths"] == ["detailDto.ttsSpeaker", "maxConversation"]
        assert "a-new-voice" not in repr(changed)


async def test_auto_watches_the_conversations_of_live_sessions(clock: FakeClock) -> None:
    sim = Simulator(apps=1, seed=5, clock=clock, workload=False)
    app = _app(sim, conversations="auto", conversation_poll_interval_seconds=60)
    cid = sim.conversation_ids(app.app_id)[0]
    snapshot = models.AppSnapshot(
        app=app.name,
        app_id=app.app_id,
        poll_interval_seconds=15,
        sessions=models.SessionList(
            sessions=(models.Session("s1", conversation_id=cid), models.Session("s2")),
            shape="test",
        ),
    )
    async with watching(sim, clock) as (watch, client):
        watch.observe(app, snapshot)
        watch.apply([app], client)
        await _until(lambda: any(c.up for c in watch.conversations()), clock)
        assert [c.conversation for c in watch.conversations()] == [cid]
        watch.apply([], client)  # a reload that removes the APP forgets what it watched
        assert watch.conversations() == []


async def test_a_failing_read_marks_the_conversation_down(clock: FakeClock) -> None:
    sim = Simulator(apps=1, seed=5, clock=clock, workload=False)
    app = _app(sim, conversations=["999999"], conversation_poll_interval_seconds=60)
    async with watching(sim, clock) as (watch, client):
        watch.apply([app], client)
        await _until(lambda: watch.conversations() and watch.conversations()[0].error, clock)
        assert watch.conversations()[0].up is False


async def test_avatars_are_watched_until_their_training_ends(clock: FakeClock) -> None:
    sim = Simulator(apps=1, seed=5, clock=clock, workload=False, avatar_training_seconds=120)
    app = _app(sim)
    async with watching(sim, clock) as (watch, client):
        good = await client.create_avatar(
            app.credentials,
            documents.AvatarSpec(custom_type=2, avatar_name="host", cover_url="https://x/p.png"),
        )
        bad = await client.create_avatar(
            app.credentials,
            documents.AvatarSpec(
                custom_type=2, avatar_name="will-fail", cover_url="https://x/p.png"
            ),
        )
        watched = app.model_copy(update={"avatars": (good.avatar_id, bad.avatar_id)})
        watch.apply([watched], client)
        await _until(
            lambda: all(a.final for a in watch.avatars()) and len(watch.avatars()) == 2, clock
        )
        by_id = {a.avatar: a for a in watch.avatars()}
        assert by_id[good.avatar_id].status == "success"
        assert by_id[bad.avatar_id].status == "failed"
        assert by_id[bad.avatar_id].reason
        assert by_id[good.avatar_id].training_since is not None


async def test_an_avatar_is_no_longer_queried_once_its_training_is_final(
    clock: FakeClock,
) -> None:
    sim = Simulator(apps=1, seed=5, clock=clock, workload=False, avatar_training_seconds=120)
    app = _app(sim)

    def queries() -> int:
        return sim.stats.requests.get((app.app_id, "queryAvatar"), 0)

    async with watching(sim, clock) as (watch, client):
        spec = documents.AvatarSpec(custom_type=2, avatar_name="host", cover_url="https://x/p.png")
        avatar = await client.create_avatar(app.credentials, spec)
        watch.apply([app.model_copy(update={"avatars": (avatar.avatar_id,)})], client)
        await _until(lambda: watch.avatars() and watch.avatars()[0].final, clock)
        assert watch.avatars()[0].status == "success"
        final = queries()
        # it was asked while training (120 s, every AVATAR_POLL_SECONDS), and then once final
        assert final >= 120 // AVATAR_POLL_SECONDS
        for _ in range(10):
            clock.advance(10 * AVATAR_POLL_SECONDS)
            await anyio.sleep(0.01)  # real time: a loop still polling would run meanwhile
        assert queries() == final
        assert watch.avatars()[0].final  # still known, just no longer asked about
