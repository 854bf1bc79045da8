"""What the enforcement tests share: the simulator they drive (sessions of chosen ages, faults,
what reached it) and the daemon's config and process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.procs import DUIXWATCH, free_port, process

SEED, APPS = 41, 2


@dataclass
class Sim:
    url: str
    config: dict[str, Any]
    tmp: Path

    def app(self, index: int) -> dict[str, Any]:
        app: dict[str, Any] = self.config["apps"][index]
        return app

    def add(self, index: int, count: int, age: float, *, with_start: bool = True) -> list[str]:
        response = httpx.post(
            f"{self.url}/_sim/apps/{self.app(index)['app_id']}/sessions",
            json={"count": count, "age_seconds": age, "with_start": with_start},
            timeout=5,
        )
        response.raise_for_status()
        return [s["session_id"] for s in response.json()["sessions"]]

    def state(self) -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(f"{self.url}/_sim/state", timeout=5).json()
        return doc

    def live(self, index: int) -> set[str]:
        (app,) = [a for a in self.state()["apps"] if a["app_id"] == self.app(index)["app_id"]]
        return {s["session_id"] for s in app["sessions"]}

    def fault(self, **fault: Any) -> None:
        httpx.post(f"{self.url}/_sim/faults", json=fault, timeout=5).raise_for_status()

    def stops(self) -> int:
        stats = httpx.get(f"{self.url}/_sim/stats", timeout=5).json()
        return sum(r["count"] for r in stats["requests"] if r["endpoint"] == "sessionStop")

    def write_config(
        self, policies: list[dict[str, Any]], *, poll_interval: float = 1, **sections: Any
    ) -> Path:
        doc = dict(self.config)
        for app in doc["apps"]:
            app["poll_interval_seconds"] = poll_interval
        doc["server"] = {"listen": f"127.0.0.1:{free_port()}"}
        doc["state"] = {"dir": str(self.tmp / "state")}
        doc["enforcement"] = {"enabled": True, "max_stops_per_second": 50}
        doc["policies"] = policies
        doc.update(sections)
        path = self.tmp / "duixwatch.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path


def run_daemon(config: Path, log: Path) -> Any:
    return process([*DUIXWATCH, "run", "-c", str(config)], log)


def age_policy(**extra: Any) -> dict[str, Any]:
    return {
        "name": "max-age",
        "apps": ["*"],
        "match": {"session_age_over_seconds": 1800},
        "action": "stop_sessions",
        "dry_run": False,
        "max_actions_per_cycle": 50,
        "max_actions_percent": 100,
        **extra,
    }


def quota_policy(app: str, **extra: Any) -> dict[str, Any]:
    """A ``max_sessions`` policy trimming the newest sessions of ``app``, enforcing."""
    return {
        "name": "quota-guard",
        "apps": [app],
        "match": {"max_sessions": 3, "for_seconds": 3},
        "action": "stop_sessions",
        "select": "newest",
        "dry_run": False,
        "max_actions_percent": 100,
        **extra,
    }
