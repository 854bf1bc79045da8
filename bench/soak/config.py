"""The soak's setup: the simulator's workload, the daemon's config file and its reload
variants, and the allowances the checks derive from that config.

The daemon polls 8 APPs every second and enforces three policies against a churning workload
(arrivals 12/min per APP, durations 30 s + Exp(60 s), some abandoned): an age policy (older
than 120 or 125 s, flipped by the good reloads), a quota (beyond 6 sessions for 5 s, newest
first) on every APP but the last, and an emergency drain (close_all beyond 8 sessions for
10 s) on the last. Timeouts and backoffs are short so that a fault's effects fit in seconds:
a 2 s request timeout, one read retry, a 4 s backoff cap.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.soak import chaos
from duixwatch.config import ConfigFileError, load_config

__all__ = [
    "AGE_POLICY",
    "THRESHOLDS",
    "Allowances",
    "SoakConfig",
    "audit_bounds_supported",
    "workload_args",
]

APPS = 8
POLL_INTERVAL_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 2.0
READ_RETRIES = 1
RETRY_BACKOFF_SECONDS = 0.2
RETRY_BACKOFF_MAX_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 4.0
JITTER_FRACTION = 0.1
#: Processing between a poll's last answer and its plan, and scheduling delays on a busy
#: 2-core machine (the other processes of the soak share it).
SLACK_SECONDS = 1.0
#: How often /metrics is scraped for duix_up (also the recovery's observation granularity).
METRICS_EVERY_SECONDS = 0.5
SCRAPE_TIMEOUT_SECONDS = 10.0
AGE_POLICY = "max-age"
THRESHOLDS = (120, 125)
QUOTA_MAX_SESSIONS = 6
DRAIN_MAX_SESSIONS = 8
DRAIN_FOR_SECONDS = 10


def workload_args() -> list[str]:
    """``duixwatch sim`` flags of the churning workload: sessions that outlive the age
    threshold (the floor keeps every one longer than a few polls)."""
    return [
        "--arrivals-per-minute",
        "12",
        "--mean-duration-seconds",
        "90",
        "--min-duration-seconds",
        "30",
    ]


@dataclass(frozen=True)
class Allowances:
    """Bounds derived from the config (seconds), each explained where it is computed."""

    read_call_max: float
    recovery: float
    reload_deadline: float


def allowances() -> Allowances:
    """* one read call: at most ``read_retries`` + 1 attempts, plus one more after an auth
      rejection (the re-minted token), each within the request timeout, with a backoff of at
      most ``retry_backoff_max_seconds`` before each retry;
    * recovery, from the end of an APP's faults to ``duix_up 1``: the poll in flight then ends
      within one request timeout and one retry backoff; the next poll is due one backoff after
      the failed one started (at most ``backoff_max_seconds`` + jitter, or the Retry-After);
      then one interval for that poll and its scheduling, one scrape period to see it, and the
      slack of a busy machine;
    * a reload shows on /metrics within 10 s (it is one file read and validation).
    """
    read_call_max = (READ_RETRIES + 2) * REQUEST_TIMEOUT_SECONDS + (
        READ_RETRIES * RETRY_BACKOFF_MAX_SECONDS
    )
    in_flight = REQUEST_TIMEOUT_SECONDS + RETRY_BACKOFF_MAX_SECONDS
    backoff = max(BACKOFF_MAX_SECONDS * (1 + JITTER_FRACTION), chaos.MAX_RETRY_AFTER_SECONDS)
    recovery = in_flight + backoff + POLL_INTERVAL_SECONDS + METRICS_EVERY_SECONDS + SLACK_SECONDS
    return Allowances(read_call_max=read_call_max, recovery=recovery, reload_deadline=10.0)


def audit_bounds_supported(config: dict[str, Any], path: Path) -> bool:
    """Whether this daemon accepts ``state.audit_max_bytes`` and ``state.audit_keep``: its own
    loader (what ``duixwatch check`` and the daemon use, in-process: a second saved) on the
    config, which must load (else :class:`ConfigFileError`), then on a copy that sets them."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    load_config(path, environ={})
    probe = copy.deepcopy(config)
    probe["state"] = {**probe.get("state", {}), "audit_max_bytes": 1 << 20, "audit_keep": 2}
    path.write_text(yaml.safe_dump(probe, sort_keys=False))
    try:
        load_config(path, environ={})
    except ConfigFileError:
        return False
    return True


class SoakConfig:
    """The daemon's config for the simulator's ``printed`` config, and its reload variants."""

    def __init__(
        self,
        printed: dict[str, Any],
        *,
        listen: str,
        state_dir: Path,
        audit_max_bytes: int | None = None,
        audit_keep: int | None = None,
    ) -> None:
        apps = printed["apps"]
        self.apps: dict[str, str] = {str(a["name"]): str(a["app_id"]) for a in apps}
        self.app_keys: dict[str, str] = {str(a["name"]): str(a["app_key"]) for a in apps}
        self.drain_app = str(apps[-1]["name"])
        state: dict[str, Any] = {"dir": str(state_dir)}
        if audit_max_bytes is not None:
            state["audit_max_bytes"] = audit_max_bytes
        if audit_keep is not None:
            state["audit_keep"] = audit_keep
        self.base: dict[str, Any] = {
            "duix": {
                **printed["duix"],
                "request_timeout_seconds": REQUEST_TIMEOUT_SECONDS,
                "connect_timeout_seconds": 1.0,
                "read_retries": READ_RETRIES,
                "retry_backoff_seconds": RETRY_BACKOFF_SECONDS,
                "retry_backoff_max_seconds": RETRY_BACKOFF_MAX_SECONDS,
                "max_in_flight": 16,
                "max_requests_per_second": 100,
            },
            "apps": [{**a, "poll_interval_seconds": POLL_INTERVAL_SECONDS} for a in apps],
            "server": {"listen": listen},
            "state": state,
            "enforcement": {"enabled": True, "allow_close_all": True, "max_stops_per_second": 20},
            "daemon": {
                "backoff_max_seconds": BACKOFF_MAX_SECONDS,
                "jitter_fraction": JITTER_FRACTION,
                "shutdown_timeout_seconds": 5,
                "log_format": "json",
            },
            "policies": [],
        }

    def document(self, threshold: int) -> dict[str, Any]:
        """The good config, with the age policy's threshold ``threshold`` seconds."""
        doc = copy.deepcopy(self.base)
        drain_id = self.apps[self.drain_app]
        doc["policies"] = [
            {
                "name": AGE_POLICY,
                "apps": ["*"],
                "match": {"session_age_over_seconds": threshold},
                "action": "stop_sessions",
                "dry_run": False,
                "max_actions_per_cycle": 50,
                "max_actions_percent": 100,
            },
            {
                "name": "quota-guard",
                "apps": ["*"],
                "exclude_apps": [self.drain_app],
                "match": {"max_sessions": QUOTA_MAX_SESSIONS, "for_seconds": 5},
                "action": "stop_sessions",
                "select": "newest",
                "dry_run": False,
                "max_actions_per_cycle": 50,
                "max_actions_percent": 100,
            },
            {
                "name": "emergency-drain",
                "apps": [self.drain_app],
                "match": {"max_sessions": DRAIN_MAX_SESSIONS, "for_seconds": DRAIN_FOR_SECONDS},
                "action": "close_all",
                "confirm_app_id": drain_id,
                "dry_run": False,
            },
        ]
        return doc

    def good(self, threshold: int) -> str:
        return yaml.safe_dump(self.document(threshold), sort_keys=False)

    def bad(self, variant: str, threshold: int) -> str:
        """A file the daemon must refuse whole, whose valid part names ``threshold``.

        * ``yaml_syntax_at_app_key``: a YAML syntax error on the first app's ``app_key`` line
          (so an error message that quoted its line would print the key);
        * ``unknown_key``: a key no section has;
        * ``wrong_type``: the quota's ``max_sessions`` a word;
        * ``close_all_wrong_app``: the drain's ``confirm_app_id`` another app's id.
        """
        doc = self.document(threshold)
        if variant == "yaml_syntax_at_app_key":
            lines = self.good(threshold).splitlines()
            at = next(i for i, line in enumerate(lines) if "app_key:" in line)
            lines[at] = lines[at].replace("app_key: ", "app_key: [", 1)
            return "\n".join(lines) + "\n"
        if variant == "unknown_key":
            doc["enforcement"]["max_stops_per_minute"] = 300
        elif variant == "wrong_type":
            doc["policies"][1]["match"]["max_sessions"] = "six"
        elif variant == "close_all_wrong_app":
            doc["policies"][2]["confirm_app_id"] = self.apps[next(iter(self.apps))]
        else:
            raise ValueError(f"unknown bad variant {variant!r}")
        return yaml.safe_dump(doc, sort_keys=False)

    def secrets(self) -> dict[str, bytes]:
        """What must never appear in an output: each app key, and its part after ``sim-``."""
        out: dict[str, bytes] = {}
        for name, key in self.app_keys.items():
            out[f"app key of {name}"] = key.encode()
            tail = key.removeprefix("sim-")
            if len(tail) >= 16 and tail != key:
                out[f"app key of {name} (without its prefix)"] = tail.encode()
        return out
