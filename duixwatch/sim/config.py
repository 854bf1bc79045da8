"""A duixwatch config file (design.md §4) for the simulated apps: ``duixwatch sim --print-config``.

The text is written by hand rather than dumped from a dict so that it can carry comments: the
simulator's app keys are deterministic and public (anyone with the seed can derive them), so
they are written inline, marked as such, and the example policies are left commented out.
"""

from __future__ import annotations

import json

from duixwatch.sim import model

__all__ = ["render_config"]


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def render_config(sim: model.Simulator, base_url: str) -> str:
    """The YAML config that points duixwatch at this simulator, served at ``base_url``."""
    lines = [
        f"# duixwatch configuration for the DUIX simulator (seed {sim.seed}, "
        f"{len(sim.apps)} apps).",
        "# The app keys below belong to the simulator: public and deterministic, not secrets.",
        "# Never write a real appKey into a file like this: use ${ENV_VAR} or app_key_file.",
        "duix:",
        f"  base_url: {_q(base_url.rstrip('/'))}",
        f"  timezone: {_q(sim.timezone)}",
        "apps:",
    ]
    for app in sim.apps:
        lines += [
            f"  - app_id: {_q(app.app_id)}",
            f"    name: {_q(app.name)}",
            f"    app_key: {_q(app.app_key)}  # simulator key: public, not a secret",
            "    poll_interval_seconds: 15",
            "    list_sessions: true",
        ]
    first = sim.apps[0]
    lines += [
        "server:",
        '  listen: "127.0.0.1:9814"',
        "state:",
        '  dir: "./duixwatch-state"',
        "enforcement:",
        "  enabled: false",
        "policies: []",
        "# To rehearse policies against the simulator, replace `policies: []` with:",
        "# policies:",
        "#   - name: max-session-age",
        '#     apps: ["*"]',
        "#     match: {session_age_over_seconds: 2700}",
        "#     action: stop_sessions",
        "#     dry_run: true",
        "#     max_actions_per_cycle: 10",
        "#     max_actions_percent: 50",
        "#   - name: quota-guard",
        '#     apps: ["*"]',
        "#     match: {max_sessions: 8, for_seconds: 60}",
        "#     action: stop_sessions",
        "#     select: newest",
        "#     dry_run: true",
        "#   - name: emergency-drain",
        f"#     apps: [{first.name}]",
        "#     match: {max_sessions: 50, for_seconds: 300}",
        "#     action: close_all",
        f"#     confirm_app_id: {_q(first.app_id)}",
        "#     dry_run: true",
    ]
    return "\n".join(lines) + "\n"
