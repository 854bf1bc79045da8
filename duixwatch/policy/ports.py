"""What the executor needs from the rest of duixwatch, as protocols: the APP it acts for, the
two destructive calls, the counters and the notifier. The daemon plugs in the real ones
(the DUIX client, the Prometheus metric set, :class:`~duixwatch.policy.notify.Notifier`);
tests plug in fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from duixwatch.core import models
from duixwatch.policy import notify

__all__ = ["NotificationSink", "PolicyApp", "PolicyMetrics", "SessionCloser"]


class PolicyApp(Protocol):
    """The app a plan is for, as the executor needs it: who it is and how to sign for it."""

    @property
    def name(self) -> str: ...
    @property
    def app_id(self) -> str: ...
    @property
    def credentials(self) -> models.AppCredentials: ...


class SessionCloser(Protocol):
    """The two destructive calls (:class:`duixwatch.duix.DuixClient` is one).

    The executor passes ``shield=False``: it shields each call itself, under a deadline it can
    bring forward at shutdown; the closer must then not shield the exchange on its own.
    """

    async def stop_session(
        self, app: models.AppCredentials, session_id: str, *, shield: bool = True
    ) -> models.StopResult: ...

    async def close_all(
        self, app: models.AppCredentials, *, shield: bool = True
    ) -> models.CloseAllResult: ...


class PolicyMetrics(Protocol):
    """What the executor counts (:class:`duixwatch.export.metrics.Metrics` is one)."""

    def policy_matched(self, app: str, policy: str, count: int) -> None: ...
    def policy_aborted(self, app: str, policy: str, reason: str) -> None: ...
    def policy_action(self, app: str, policy: str, action: str, outcome: str) -> None: ...


class NotificationSink(Protocol):
    """Takes notifications without waiting (:class:`duixwatch.policy.notify.Notifier`)."""

    def submit(
        self, targets: Sequence[notify.NotifyTarget], notification: notify.Notification
    ) -> bool: ...
