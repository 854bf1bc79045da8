"""The watched conversations' and avatars' metrics, read from the watch at scrape time.

``duix_conversation_up`` is there for every watched conversation; the others only while its
last read succeeded (a failing read is not a fake 0). ``duix_conversation_config_changes_total``
counts the changes seen since the daemon started (a restart resets it, as Prometheus counters
are). An avatar's status is there once it has been read; its training time only while it
trains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from duixwatch.core.clock import Clock
from duixwatch.watch.conversations import AvatarState, ConversationState

__all__ = ["AVATAR_STATUS_VALUES", "INFO_LABELS", "DocumentCollector"]

INFO_LABELS = ("name", "language", "model", "model_type", "tts", "tts_speaker", "third_party")
#: ``duix_avatar_training_status`` values.
AVATAR_STATUS_VALUES = {"training": 0, "success": 1, "failed": 2}


class DocumentCollector(Collector):
    """``duix_conversation_*`` and ``duix_avatar_*``."""

    def __init__(
        self,
        conversations: Callable[[], Sequence[ConversationState]],
        avatars: Callable[[], Sequence[AvatarState]],
        *,
        clock: Clock,
    ) -> None:
        self._conversations = conversations
        self._avatars = avatars
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        key = ["app", "conversation"]
        return [
            GaugeMetricFamily(
                "duix_conversation_up",
                "1 when the last read of the watched conversation (getConversationById) "
                "succeeded, else 0.",
                labels=key,
            ),
            GaugeMetricFamily(
                "duix_conversation_info",
                "The watched conversation's configuration, as labels; 1 while it can be read.",
                labels=[*key, *INFO_LABELS],
            ),
            GaugeMetricFamily(
                "duix_conversation_max_sessions",
                "maxConversation of the watched conversation (sessions).",
                labels=key,
            ),
            CounterMetricFamily(
                "duix_conversation_config_changes_total",
                "Changes of the watched conversation's configuration seen since duixwatch "
                "started (a different payload between two reads).",
                labels=key,
            ),
            GaugeMetricFamily(
                "duix_conversation_last_change_timestamp_seconds",
                "When duixwatch last saw the conversation's configuration change (Unix time).",
                labels=key,
                unit="seconds",
            ),
            GaugeMetricFamily(
                "duix_avatar_training_status",
                "The watched avatar's training: 0 training, 1 succeeded, 2 failed.",
                labels=["app", "avatar", "name"],
            ),
            GaugeMetricFamily(
                "duix_avatar_training_seconds",
                "How long the watched avatar has been training, since duixwatch first saw it "
                "training; only while it trains.",
                labels=["app", "avatar"],
                unit="seconds",
            ),
        ]

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        up, info, max_sessions, changes, changed, status, training = families
        for c in self._conversations():
            key = [c.app, c.conversation]
            up.add_metric(key, 1 if c.up else 0)
            if not c.up:
                continue
            info.add_metric([*key, *(c.labels.get(label, "") for label in INFO_LABELS)], 1)
            if c.max_sessions is not None:
                max_sessions.add_metric(key, c.max_sessions)
            changes.add_metric(key, c.changes)
            if c.last_change_at is not None:
                changed.add_metric(key, c.last_change_at.timestamp())
        now = self._clock.now()
        for a in self._avatars():
            value = AVATAR_STATUS_VALUES.get(a.status or "")
            if value is None:
                continue
            status.add_metric([a.app, a.avatar, a.name], value)
            if a.status == "training" and a.training_since is not None:
                training.add_metric([a.app, a.avatar], _seconds(now, a.training_since))
        return families


def _seconds(now: datetime, since: datetime) -> float:
    return max(0.0, (now - since).total_seconds())
