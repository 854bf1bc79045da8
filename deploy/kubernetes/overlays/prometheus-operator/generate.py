#!/usr/bin/env python3
"""Write prometheusrule.yaml (beside this file) from deploy/prometheus/rules.yaml.

Prometheus loads the rules file as it is; the Prometheus Operator wants the same groups inside a
PrometheusRule's ``spec``. Kustomize cannot wrap a file into a resource, so this script does,
verbatim (the rules text indented under ``spec:``), and tests/ops/test_kubernetes.py fails when
the committed prometheusrule.yaml differs from what this script writes. Run it after every edit
of rules.yaml:

    python3 deploy/kubernetes/overlays/prometheus-operator/generate.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE.parents[2] / "prometheus" / "rules.yaml"
TARGET = HERE / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yaml by generate.py in this directory: do not edit.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: duixwatch
  labels:
    app.kubernetes.io/component: alerting
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule holding ``rules_text`` (a Prometheus rules file) as its spec."""
    body = "".join(f"  {line}" if line.strip() else line for line in rules_text.splitlines(True))
    return HEADER + body


def main() -> None:
    """Regenerate prometheusrule.yaml."""
    TARGET.write_text(render(RULES.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()
