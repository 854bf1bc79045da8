// Validates prometheus-operator custom resources against the operator's published schemas
// (@kubernetes-models/prometheus-operator, generated from the operator's API types).
//
//   node validate.mjs < resources.json     # a JSON array of Kubernetes objects
//
// Prints one line per custom resource, exits 1 when one is invalid and 2 when a kind of
// monitoring.coreos.com has no schema here. Other API groups are skipped (kubernetes-validate
// checks those). tests/test_ops_kubernetes.py runs it on every rendered overlay.
import { readFileSync } from "node:fs";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";

const MODELS = { PrometheusRule, ServiceMonitor, PodMonitor };
const resources = JSON.parse(readFileSync(0, "utf8"));
let status = 0;
for (const resource of resources) {
  if (!String(resource.apiVersion).startsWith("monitoring.coreos.com/")) continue;
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
