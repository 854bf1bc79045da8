// Validates the custom resources of the overlays against their projects' published schemas:
// prometheus-operator's (@kubernetes-models/prometheus-operator, generated from the operator's
// API types) and KEDA's (@kubernetes-models/keda, generated from KEDA's API types).
//
//   node validate.mjs < resources.json     # a JSON array of Kubernetes objects
//
// Prints one line per custom resource, exits 1 when one is invalid and 2 when a kind of
// monitoring.coreos.com or keda.sh has no schema here. Other API groups are skipped
// (kubernetes-validate checks those). tests/ops/test_kubernetes.py and tests/ops/test_scaling.py
// run it on every rendered overlay.
import { readFileSync } from "node:fs";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const GROUPS = ["monitoring.coreos.com/", "keda.sh/"];
const MODELS = { PrometheusRule, ServiceMonitor, PodMonitor, ScaledObject, TriggerAuthentication };
const resources = JSON.parse(readFileSync(0, "utf8"));
let status = 0;
for (const resource of resources) {
  if (!GROUPS.some((group) => String(resource.apiVersion).startsWith(group))) continue;
  const name = `${resource.kind}/${resource.metadata?.name}`;
  const Model = MODELS[resource.kind];
  if (Model === undefined || resource.apiVersion !== Model.apiVersion) {
    console.log(`NO SCHEMA ${name} (${resource.apiVersion})`);
    status = Math.max(status, 2);
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`OK ${name}`);
  } catch (error) {
    console.log(`INVALID ${name}: ${error.message}`);
    status = Math.max(status, 1);
  }
}
process.exit(status);
