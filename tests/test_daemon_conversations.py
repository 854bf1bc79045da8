"""daemon + server in-process, watched conversations: the ``duix_conversation_info`` labels are
the simulator's payload values, and ``/status`` after a real change made through the simulator's
control API shows the change (count, time, key paths) and none of the changed values."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from duixwatch.core.clock import SystemClock
from duixwatch.sim import Simulator, create_app
from tests.test_daemon import WAIT_SECONDS, running, samples, value, write_config

#: The seed's ``detailDto.modelIdType``: 0 a cloud model, 1 a local one.
SEED_MODEL_TYPES = {0: "cloud", 1: "local"}


@pytest.fixture
def sim() -> Simulator:
    return Simulator(apps=2, seed=21, clock=SystemClock(), workload=False)


def payload(sim: Simulator, app_id: str, conversation_id: str) -> dict[str, Any]:
    """``getConversationById`` ``data`` as the simulator holds it now (a copy)."""
    return copy.deepcopy(sim.conversation(sim.app(app_id), conversation_id))


def watching_config(tmp_path: Path, sim: Simulator) -> Path:
    """Every APP watches its first conversation by id, read every second."""
    path = write_config(tmp_path / "c.yaml", sim)
    doc = yaml.safe_load(path.read_text())
    for app, entry in zip(sim.apps, doc["apps"], strict=True):
        entry |= {
            "conversations": [sim.conversation_ids(app.app_id)[0]],
            "conversation_poll_interval_seconds": 1,
        }
    path.write_text(yaml.safe_dump(doc))
    return path


async def wait_until_up(http: httpx.AsyncClient, sim: Simulator) -> str:
    """The ``/metrics`` text once every watched conversation is up."""
    with anyio.fail_after(WAIT_SECONDS):
        while True:
            text = (await http.get("/metrics")).text
            if all(
                value(
                    text,
                    "duix_conversation_up",
                    app=app.name,
                    conversation=sim.conversation_ids(app.app_id)[0],
                )
                == 1
                for app in sim.apps
            ):
                return text
            await anyio.sleep(0.05)


async def test_the_info_labels_equal_the_values_of_the_simulators_payload(
    sim: Simulator, tmp_path: Path
) -> None:
    # The seeded documents share some values (both speak "en" through "aria", a cloud model, no
    # third party): make the second one differ in each, and its voice differ from its speaker,
    # so that a label taken from the wrong field cannot pass.
    second = sim.apps[1]
    sim.change_conversation(
        second.app_id,
        sim.conversation_ids(second.app_id)[0],
        {
            "language": "zh",
            "detailDto.modelIdType": 1,
            "detailDto.ttsSpeaker": "zhifeng_emo",
            "thirdIsUsed": 1,
        },
    )
    async with running(sim, watching_config(tmp_path, sim)) as (_, http):
        text = await wait_until_up(http, sim)
    exported = samples(text)
    for app in sim.apps:
        cid = sim.conversation_ids(app.app_id)[0]
        data = payload(sim, app.app_id, cid)
        detail = data["detailDto"]
        expected = {
            "app": app.name,
            "conversation": cid,
            "name": data["conversationName"],
            "language": data["language"],
            "model": detail["modelName"],
            "model_type": SEED_MODEL_TYPES[detail["modelIdType"]],
            "tts": detail["ttsName"],
            "tts_speaker": detail["ttsSpeaker"],
            "third_party": "true" if data["thirdIsUsed"] == 1 else "false",
        }
        info = [
            (dict(labels), sample)
            for (name, labels), sample in exported.items()
            if name == "duix_conversation_info" and dict(labels)["conversation"] == cid
        ]
        assert info == [(expected, 1.0)]
        assert (
            value(text, "duix_conversation_max_sessions", app=app.name, conversation=cid)
            == data["maxConversation"]
        )
    # the two APPs' conversations differ in every label but the voice: no constant could pass
    first, second_labels = (
        next(
            dict(labels)
            for (name, labels) in exported
            if name == "duix_conversation_info" and dict(labels)["app"] == a.name
        )
        for a in sim.apps
    )
    for label in ("name", "language", "model", "model_type", "tts_speaker", "third_party"):
        assert first[label] != second_labels[label], label


async def test_status_after_a_change_shows_its_count_time_and_key_paths_and_no_values(
    sim: Simulator, tmp_path: Path
) -> None:
    app = sim.apps[0]
    cid = sim.conversation_ids(app.app_id)[0]
    secret_prompt = "Task: a confidential prompt 7f3a"
    secret_script = "a confidential script 91c2"
    changes = {
        "modelDtoList[0].prompt": secret_prompt,
        "scriptDtoList[1].scriptContent": secret_script,
    }
    async with running(sim, watching_config(tmp_path, sim)) as (_, http):
        await wait_until_up(http, sim)
        (before,) = [
            c
            for c in (await http.get("/status?format=json")).json()["conversations"]
            if c["conversation"] == cid
        ]
        assert (before["changes"], before["last_change_at"], before["last_change_paths"]) == (
            0,
            None,
            [],
        )
        changed_at = datetime.now(UTC)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(sim)), base_url="http://sim.test"
        ) as control:
            answer = await control.patch(
                f"/_sim/apps/{app.app_id}/conversations/{cid}", json=changes
            )
        assert answer.status_code == 200, answer.text
        assert sorted(answer.json()["changed"]) == sorted(changes)

        async def conversation() -> dict[str, Any]:
            status = (await http.get("/status?format=json")).json()
            found: list[dict[str, Any]] = [
                c for c in status["conversations"] if c["conversation"] == cid
            ]
            (entry,) = found
            return entry

        with anyio.fail_after(WAIT_SECONDS):
            while (changed := await conversation())["changes"] == 0:
                await anyio.sleep(0.05)
            while (after := await conversation())["last_read_at"] == changed["last_read_at"]:
                await anyio.sleep(0.05)  # read once more since, unchanged
        html = (await http.get("/status")).text
        json_text = (await http.get("/status?format=json")).text
        metrics = (await http.get("/metrics")).text

    assert after["changes"] == 1
    assert after["last_change_paths"] == [
        "modelDtoList[0].prompt",
        "scriptDtoList[1].scriptContent",
    ]
    last_change = datetime.fromisoformat(after["last_change_at"])
    assert changed_at <= last_change <= datetime.now(UTC)
    assert "modelDtoList[0].prompt" in html
    for secret in (secret_prompt, secret_script):
        assert secret not in json_text
        assert secret not in html
        assert secret not in metrics
    # the metrics count the same one change, and the other APP's conversation has none
    assert (
        value(
            metrics,
            "duix_conversation_config_changes_total",
            app=app.name,
            conversation=cid,
        )
        == 1
    )
    other = sim.apps[1]
    assert (
        value(
            metrics,
            "duix_conversation_config_changes_total",
            app=other.name,
            conversation=sim.conversation_ids(other.app_id)[0],
        )
        == 0
    )
