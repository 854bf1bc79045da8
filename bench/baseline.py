"""The baseline: the script a user writes to watch their DUIX apps without duixwatch.

One process, one thread doing the work: a sequential loop over the apps that, for each app,
signs a token (PyJWT: HS256, claims ``appId``/``iat``/``exp``, sent in the ``token`` header, as
the platform documents it) and calls ``getconcurrentNumber`` and then ``getconcurrentList`` with
``requests.get``; it keeps the numbers in ``prometheus_client`` gauges served by
``start_http_server`` (the same ``duix_*`` names as duixwatch, so both are scraped and read
alike). After a pass over every app it sleeps out the rest of the interval, if any is left.

Run as ``python -m bench.baseline --config FILE …`` (the config is duixwatch's, read only for
the base URL, the time zone and the apps' ids and keys). It imports nothing from duixwatch. On
SIGTERM/SIGINT, or after ``--max-seconds``, it finishes the poll in progress, writes every poll's
times to ``--timeline`` (JSON) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import requests
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

PREFIX = "/duix-openapi-v2/sdk/v2"
TOKEN_TTL_SECONDS = 1800
REQUEST_TIMEOUT_SECONDS = 5


def _items(data: Any) -> list[dict[str, Any]]:
    """The session list under ``data`` (the user's platform answers ``data.records``)."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("records", "list", "rows", "sessions", "items", "data"):
            if isinstance(data.get(key), list):
                return list(data[key])
    return []


def poll(base_url: str, app_id: str, app_key: str, zone: ZoneInfo) -> tuple[dict[str, Any], float]:
    """One app: both calls; the figures and when the first call's answer came back."""
    now = int(time.time())
    token = jwt.encode(
        {"appId": app_id, "iat": now, "exp": now + TOKEN_TTL_SECONDS}, app_key, algorithm="HS256"
    )
    headers = {"token": token}
    number = requests.get(
        f"{base_url}{PREFIX}/getconcurrentNumber",
        params={"appId": app_id},
        headers=headers,
        timeout=REQUEST_TIMEOUT_SECONDS,
    ).json()
    middle = time.time()
    listing = requests.get(
        f"{base_url}{PREFIX}/getconcurrentList",
        params={"appId": app_id},
        headers=headers,
        timeout=REQUEST_TIMEOUT_SECONDS,
    ).json()
    if not (number.get("success") and listing.get("success")):
        raise ValueError(f"platform error: {number.get('code')} / {listing.get('code')}")
    items = _items(listing.get("data"))
    ages = []
    for item in items:
        created = item.get("createTime")
        if created:
            started = datetime.strptime(created, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
            ages.append(time.time() - started.timestamp())
    data = number["data"]
    return {
        "total": data["totalConcurrentNumber"],
        "user": data["userConcurrentNumber"],
        "sessions": len(items),
        "oldest": max(ages) if ages else None,
    }, middle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--max-seconds", type=float, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--timeline", required=True, type=Path)
    args = parser.parse_args(argv)

    config = yaml.safe_load(args.config.read_text())
    base_url = config["duix"]["base_url"].rstrip("/")
    zone = ZoneInfo(config["duix"].get("timezone", "Asia/Shanghai"))
    apps = [(a["name"], str(a["app_id"]), a["app_key"]) for a in config["apps"]]

    registry = CollectorRegistry()
    label = ["app"]
    up = Gauge("duix_up", "1 when the last poll succeeded.", label, registry=registry)
    total = Gauge(
        "duix_app_concurrency_total_number", "totalConcurrentNumber.", label, registry=registry
    )
    user = Gauge("duix_app_concurrency_user", "userConcurrentNumber.", label, registry=registry)
    sessions = Gauge(
        "duix_app_sessions", "Sessions in getconcurrentList.", label, registry=registry
    )
    oldest = Gauge(
        "duix_app_oldest_session_age_seconds", "Oldest session's age.", label, registry=registry
    )
    last = Gauge(
        "duix_app_last_poll_success_timestamp_seconds",
        "Unix time of the last successful poll.",
        label,
        registry=registry,
    )
    server, thread = start_http_server(args.metrics_port, addr="127.0.0.1", registry=registry)

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    polls: list[tuple[int, float, float, float, bool]] = []
    cycles: list[tuple[float, float]] = []
    started = time.monotonic()
    deadline = started + args.max_seconds
    print("ready", flush=True)
    # Each pass lasts at least one interval (it sleeps out the rest), so the count bound is
    # never what ends a run; the deadline or a signal is.
    for _ in range(int(args.max_seconds / args.interval) + 2):
        cycle_start = time.time()
        completed = True
        for index, (name, app_id, app_key) in enumerate(apps):
            if stopping or time.monotonic() > deadline:
                completed = False
                break
            t0 = time.time()
            try:
                figures, middle = poll(base_url, app_id, app_key, zone)
            except (requests.RequestException, ValueError, KeyError, TypeError):
                polls.append((index, t0, t0, time.time(), False))
                up.labels(name).set(0)
                continue
            t1 = time.time()
            polls.append((index, t0, middle, t1, True))
            up.labels(name).set(1)
            total.labels(name).set(figures["total"])
            user.labels(name).set(figures["user"])
            sessions.labels(name).set(figures["sessions"])
            if figures["oldest"] is not None:
                oldest.labels(name).set(figures["oldest"])
            last.labels(name).set(t1)
        if not completed:
            break
        cycles.append((cycle_start, time.time()))
        for _ in range(int(args.interval * 10) + 1):  # sleep out the interval, 0.1 s steps
            if stopping or time.time() >= cycle_start + args.interval:
                break
            time.sleep(0.1)
        if stopping or time.monotonic() > deadline:
            break

    tmp = args.timeline.with_suffix(".tmp")
    tmp.write_text(json.dumps({"apps": len(apps), "polls": polls, "cycles": cycles}))
    tmp.replace(args.timeline)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
