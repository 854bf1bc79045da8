"""Status views: what ``/status``, the KEDA endpoint and ``duixwatch once``/``plan`` show.

JSON-able dictionaries (never a key or token) built from snapshots, plans, action records,
scaling readings and dialog probe results, the plain HTML page a browser gets for
``/status``, and :func:`format_age`, the one way an age is written for people.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from duixwatch.core import models
from duixwatch.core.fields import redact_url
from duixwatch.core.text import inert
from duixwatch.dialog.prober import ProbeResult
from duixwatch.dialog.schema import DialogProbeConfig
from duixwatch.export.autoscaling import ScalingReading
from duixwatch.policy.plan import ActionRecord, PolicyPlan
from duixwatch.watch.conversations import AvatarState, ConversationState

__all__ = [
    "action_status",
    "avatar_status",
    "conversation_status",
    "format_age",
    "policy_plan_status",
    "probe_status",
    "scaling_status",
    "snapshot_status",
    "status_html",
    "without_details",
]


def format_age(seconds: float | None) -> str:
    """An age for people: ``1h02m03s``, ``4m05s``; ``?`` when it is not known."""
    if seconds is None:
        return "?"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def snapshot_status(
    snap: models.AppSnapshot, now: datetime, *, with_sessions: bool = True
) -> dict[str, Any]:
    """One APP's entry of ``/status`` (JSON-able; never a key or token)."""
    entry: dict[str, Any] = {
        "app": snap.app,
        "app_id": snap.app_id,
        "up": snap.is_fresh(now),
        "poll_interval_seconds": snap.poll_interval_seconds,
        "last_attempt_at": _iso(snap.last_attempt_at),
        "last_success_at": _iso(snap.fetched_at),
        "consecutive_failures": snap.consecutive_failures,
        "error": None
        if snap.error is None
        else {
            "reason": snap.error.reason,
            "message": snap.error.message,
            "at": _iso(snap.error.at),
            "retry_after_seconds": snap.error.retry_after_seconds,
        },
        "concurrency": None
        if snap.concurrency is None
        else {
            "total_concurrent_number": snap.concurrency.total_concurrent_number,
            "user_concurrent_number": snap.concurrency.user_concurrent_number,
        },
        "sessions": None,
    }
    if snap.sessions is not None:
        oldest, _ = snap.sessions.oldest_and_sum(models.epoch_us(now))
        entry["sessions"] = {
            "count": len(snap.sessions),
            "shape": snap.sessions.shape,
            "oldest_age_seconds": None if oldest is None else round(oldest, 3),
            "rejected_starts": list(snap.sessions.rejected_starts),
        }
        if with_sessions:
            entry["sessions"]["items"] = [
                {
                    "session_id": s.session_id,
                    "started_at": _iso(s.started_at),
                    "first_seen_at": _iso(s.first_seen_at),
                    "age_seconds": None if (a := s.age_seconds(now)) is None else round(a, 3),
                    "actionable": s.actionable,
                    "start_rejected": s.start_rejected,
                }
                for s in snap.sessions.sessions
            ]
    return entry


def policy_plan_status(plan: PolicyPlan, at: datetime) -> dict[str, Any]:
    """One policy's last evaluation for one APP, for ``/status`` and ``duixwatch plan -o json``."""
    return {
        "policy": plan.policy,
        "app": plan.app,
        "app_id": plan.app_id,
        "action": plan.action,
        "evaluated_at": at.isoformat(),
        "dry_run": plan.dry_run,
        "matched": [
            {
                "session_id": m.session_id,
                "age_seconds": None if m.age_seconds is None else round(m.age_seconds, 3),
                "reason": m.reason,
                "protected": m.protected,
            }
            for m in plan.matched
        ],
        "actions": [
            {"action": a.action, "session_id": a.session_id, "reason": a.reason}
            for a in plan.actions
        ],
        "abort": None
        if plan.abort is None
        else {"reason": plan.abort.reason, "detail": plan.abort.detail},
        "waiting": plan.waiting,
    }


def action_status(record: ActionRecord) -> dict[str, Any]:
    """One recent action for ``/status``."""
    return {
        "at": record.at.isoformat(),
        "cycle": record.cycle,
        "policy": record.policy,
        "app": record.app,
        "action": record.action,
        "session_id": record.session_id,
        "outcome": record.outcome,
        "reason": record.reason,
        "error": record.error,
    }


def storage_status(
    blocked: Mapping[str, str],
    sizes: Mapping[str, int],
    *,
    last_rotation: datetime | None,
    last_prune: datetime | None,
    moved_aside: Path | None,
) -> dict[str, Any]:
    """``state.dir`` for ``/status``: why enforcement is blocked (empty: it is not), the
    size of each file, the latest audit rotation and state prune, and where a corrupt state
    database found at start was moved."""
    return {
        "enforcement_blocked": dict(blocked),
        "file_bytes": dict(sorted(sizes.items())),
        "audit_last_rotation_at": _iso(last_rotation),
        "state_last_prune_at": _iso(last_prune),
        "state_moved_aside_to": None if moved_aside is None else str(moved_aside),
    }


def scaling_status(reading: ScalingReading, now: datetime) -> dict[str, Any]:
    """The KEDA metrics-api body of one target (``valueLocation: desired_replicas``)."""
    successes = [a.last_success_at for a in reading.apps if a.last_success_at is not None]
    oldest = min(successes) if successes else None
    return {
        "target": reading.target,
        "fresh": reading.fresh,
        "sessions": reading.sessions,
        "desired_replicas": reading.desired_replicas,
        "raw_desired_replicas": reading.raw_desired_replicas,
        "sessions_per_replica": reading.sessions_per_replica,
        "min_replicas": reading.min_replicas,
        "max_replicas": reading.max_replicas,
        "computed_at": reading.computed_at.isoformat(),
        "oldest_data_age_seconds": None
        if oldest is None
        else round((now - oldest).total_seconds(), 3),
        "apps": [
            {
                "app": a.app,
                "fresh": a.fresh,
                "sessions": a.sessions,
                "source": a.source,
                "last_success_at": _iso(a.last_success_at),
            }
            for a in reading.apps
        ],
    }


def probe_status(
    probe: DialogProbeConfig, result: ProbeResult | None, now: datetime
) -> dict[str, Any]:
    """One dialog probe's entry of ``/status``: where it asks (host only), its last result
    and the rule that failed (never a header or the URL's path)."""
    entry: dict[str, Any] = {
        "probe": probe.name,
        "target": redact_url(probe.url),
        "mode": probe.mode,
        "interval_seconds": probe.interval_seconds,
        "budget_seconds": probe.budget_seconds,
        "last": None,
    }
    if result is None:
        return entry
    failed = result.failed_rule
    entry["last"] = {
        "at": result.at.isoformat(),
        "age_seconds": round((now - result.at).total_seconds(), 3),
        "success": result.success,
        "reason": result.reason,
        "failed_rule": (
            {"rule": failed.rule, "detail": failed.detail} if failed is not None else None
        ),
        "warnings": [{"rule": w.rule, "detail": w.detail} for w in result.warnings],
        "status": result.status,
        "first_byte_seconds": result.first_byte_seconds,
        "first_answer_seconds": result.first_answer_seconds,
        "total_seconds": result.total_seconds,
        "chunks": result.chunks,
        "answer_bytes": result.answer_bytes,
    }
    return entry


def conversation_status(state: ConversationState) -> dict[str, Any]:
    """One watched conversation on ``/status``: its summary and last change (the key paths
    that changed, never their values)."""
    return {
        "app": state.app,
        "conversation": state.conversation,
        "up": state.up,
        "summary": dict(state.labels) | {"max_sessions": state.max_sessions},
        "changes": state.changes,
        "last_change_at": _iso(state.last_change_at),
        "last_change_paths": list(state.changed_paths),
        "last_read_at": _iso(state.last_read_at),
        "last_success_at": _iso(state.last_success_at),
        "error": state.error,
    }


def avatar_status(state: AvatarState, now: datetime) -> dict[str, Any]:
    """One watched avatar on ``/status``."""
    training = (
        round((now - state.training_since).total_seconds(), 3)
        if state.status == "training" and state.training_since is not None
        else None
    )
    return {
        "app": state.app,
        "avatar": state.avatar,
        "name": state.name,
        "status": state.status,
        "reason": state.reason,
        "training_seconds": training,
        "final_at": _iso(state.final_at),
        "last_read_at": _iso(state.last_read_at),
        "error": state.error,
    }


def without_details(info: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` as ``server.status_details: false`` shows it: counts and outcomes, but no
    session id and no conversation configuration (same shape, the details emptied)."""

    def no_session(entry: Mapping[str, Any]) -> dict[str, Any]:
        return {**entry, "session_id": None}

    out = dict(info)
    out["policies"] = [
        {
            **p,
            "matched": [no_session(m) for m in p["matched"]],
            "actions": [no_session(a) for a in p["actions"]],
        }
        for p in info.get("policies", [])
    ]
    out["recent_actions"] = [no_session(a) for a in info.get("recent_actions", [])]
    out["conversations"] = [
        {**c, "summary": {}, "last_change_paths": []} for c in info.get("conversations", [])
    ]
    return out


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _probe_row(p: Mapping[str, Any]) -> str:
    esc = _visible
    last = p["last"]
    if last is None:
        state, detail, timing = "<td>not run yet</td>", "", "<td></td>"
    else:
        ok = last["success"]
        failed = last["failed_rule"]
        state = f"<td class={'up' if ok else 'down'}>{'ok' if ok else 'FAILING'}</td>"
        detail = (
            f"{last['reason']}: {failed['rule']}: {failed['detail']}" if failed is not None else ""
        )
        timing = (
            f"<td>{esc(_seconds(last['first_answer_seconds']))} / "
            f"{esc(_seconds(last['total_seconds']))}</td>"
        )
    return (
        f"<tr><td>{esc(p['probe'])}</td><td>{esc(p['target'])}</td><td>{esc(p['mode'])}</td>"
        f"{state}{timing}<td>{esc(str(p['budget_seconds']))}s</td>"
        f"<td>{esc(last['at'] if last else '')}</td><td>{esc(detail)}</td></tr>"
    )


def _conversation_row(c: Mapping[str, Any]) -> str:
    esc = _visible
    summary = c["summary"]
    paths = ", ".join(c["last_change_paths"][:5])
    change = f"{c['last_change_at']} ({paths})" if c["last_change_at"] else ""
    limit = summary.get("max_sessions")
    return (
        f"<tr><td>{esc(c['app'])}</td><td>{esc(c['conversation'])}</td>"
        f"<td class={'up' if c['up'] else 'down'}>{'up' if c['up'] else 'DOWN'}</td>"
        f"<td>{esc(summary.get('name') or '')}</td><td>{esc(summary.get('model') or '')}</td>"
        f"<td>{esc(summary.get('tts_speaker') or '')}</td>"
        f"<td>{esc('-' if limit is None else str(limit))}</td>"
        f"<td>{c['changes']}</td><td>{esc(change)}</td></tr>"
    )


def _avatar_row(a: Mapping[str, Any]) -> str:
    esc = _visible
    training = a["training_seconds"]
    return (
        f"<tr><td>{esc(a['app'])}</td><td>{esc(a['avatar'])}</td><td>{esc(a['name'] or '')}</td>"
        f"<td>{esc(a['status'] or 'not read yet')}</td>"
        f"<td>{esc(format_age(training) if training is not None else '')}</td>"
        f"<td>{esc(a['reason'] or a['error'] or '')}</td></tr>"
    )


def _visible(text: str) -> str:
    """``text`` HTML-escaped, with control and bidirectional-override characters (which a
    platform-supplied id may carry: U+202E turns the rest of a line around) shown as
    ``\\u202e`` instead of acting on the page."""
    return html.escape(inert(text))


def status_html(info: Mapping[str, Any], entries: Iterable[Mapping[str, Any]]) -> str:
    esc = _visible
    rows = []
    for e in entries:
        sessions = e["sessions"] or {}
        conc = e["concurrency"] or {}
        error = e["error"]
        rows.append(
            "<tr>"
            f"<td>{esc(e['app'])}</td><td>{esc(e['app_id'])}</td>"
            f"<td class={'up' if e['up'] else 'down'}>{'up' if e['up'] else 'DOWN'}</td>"
            f"<td>{esc(str(sessions.get('count', '-')))}</td>"
            f"<td>{esc(str(conc.get('user_concurrent_number', '-')))}</td>"
            f"<td>{esc(str(conc.get('total_concurrent_number', '-')))}</td>"
            f"<td>{esc(format_age(sessions.get('oldest_age_seconds')))}</td>"
            f"<td>{esc(e['last_success_at'] or 'never')}</td>"
            f"<td>{esc(error['reason'] + ': ' + error['message']) if error else ''}</td>"
            "</tr>"
        )
    facts = "".join(
        f"<li>{esc(str(k))}: {esc(str(v))}</li>"
        for k, v in info.items()
        if k not in ("config", "policies", "recent_actions", "dialog_probes")
        and k not in ("conversations", "avatars", "storage")
    )
    storage = info.get("storage") or {}
    blocked = "".join(
        f"<p class=down>ENFORCEMENT BLOCKED ({esc(reason)}): {esc(detail)}</p>"
        for reason, detail in (storage.get("enforcement_blocked") or {}).items()
    )
    files = "".join(
        f"<li>{esc(name)}: {size} bytes</li>"
        for name, size in (storage.get("file_bytes") or {}).items()
    )
    policy_rows = "".join(
        "<tr>"
        f"<td>{esc(p['policy'])}</td><td>{esc(p['app'])}</td>"
        f"<td>{'dry run' if p['dry_run'] else 'ENFORCING'}</td>"
        f"<td>{len(p['matched'])}</td><td>{len(p['actions'])}</td>"
        f"<td>{esc(p['abort']['reason'] + ': ' + p['abort']['detail']) if p['abort'] else ''}"
        f"{esc(p['waiting'] or '')}</td>"
        "</tr>"
        for p in info.get("policies", [])
    )
    action_rows = "".join(
        "<tr>"
        f"<td>{esc(a['at'])}</td><td>{esc(a['policy'])}</td><td>{esc(a['app'])}</td>"
        f"<td>{esc(a['action'])}</td><td>{esc(a['session_id'] or '')}</td>"
        f"<td>{esc(a['outcome'])}</td><td>{esc(a['error'] or a['reason'])}</td>"
        "</tr>"
        for a in info.get("recent_actions", [])[:50]
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>duixwatch status</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        ".down{color:#b00;font-weight:bold}.up{color:#070}</style></head><body>"
        f"<h1>duixwatch</h1>{blocked}<ul>{facts}</ul>"
        "<table><tr><th>app</th><th>app id</th><th>state</th><th>sessions</th>"
        "<th>user concurrency</th><th>total concurrency</th><th>oldest session</th>"
        "<th>last success</th><th>last error</th></tr>"
        + "".join(rows)
        + "</table><h2>Policies (last evaluation)</h2><table><tr><th>policy</th><th>app</th>"
        "<th>mode</th><th>matched</th><th>actions</th><th>abort / waiting</th></tr>"
        + policy_rows
        + "</table><h2>Recent actions</h2><table><tr><th>at</th><th>policy</th><th>app</th>"
        "<th>action</th><th>session</th><th>outcome</th><th>detail</th></tr>"
        + action_rows
        + f"</table><h2>Files in state.dir</h2><ul>{files}</ul>"
        "<h2>Dialog probes</h2><table><tr><th>probe</th><th>target</th>"
        "<th>mode</th><th>state</th><th>first answer / end</th><th>budget</th><th>at</th>"
        "<th>failed rule</th></tr>"
        + "".join(_probe_row(p) for p in info.get("dialog_probes", []))
        + "</table><h2>Conversations</h2><table><tr><th>app</th><th>conversation</th>"
        "<th>state</th><th>name</th><th>model</th><th>tts speaker</th><th>max sessions</th>"
        "<th>changes</th><th>last change</th></tr>"
        + "".join(_conversation_row(c) for c in info.get("conversations", []))
        + "</table><h2>Avatars</h2><table><tr><th>app</th><th>avatar</th><th>name</th>"
        "<th>status</th><th>training for</th><th>reason</th></tr>"
        + "".join(_avatar_row(a) for a in info.get("avatars", []))
        + "</table><p>JSON: <a href='/status?format=json'>/status?format=json</a> · "
        "<a href='/metrics'>/metrics</a></p></body></html>"
    )
