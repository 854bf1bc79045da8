// The types tests/test_ops_grafana.py holds every dashboard in grafana/dashboards/ to.
//
// The test writes one TypeScript module per dashboard: the dashboard JSON `satisfies` the
// Dashboard type of @grafana/schema, and each panel's options, field-config `custom` block and
// targets `satisfy` the types below; `tsc --noEmit --strict` then rejects unknown keys, wrong
// types and values outside an enum. Everything Grafana-specific comes from @grafana/schema;
// only the Prometheus query shape is written here, because @grafana/schema does not ship one.
import type { DataSourceRef } from "@grafana/schema";
import type * as bargauge from "@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen";
import type * as heatmap from "@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen";
import type * as stat from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type * as statetimeline from "@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen";
import type * as table from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";
import type * as timeseries from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";

/** A type as JSON can spell it: every string enum becomes the union of its values. */
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

/** A Prometheus data-source query as Grafana stores it in a panel's `targets`. */
export interface PrometheusQuery {
  refId: string;
  expr: string;
  datasource?: Json<DataSourceRef>;
  legendFormat?: string;
  format?: "time_series" | "table" | "heatmap";
  instant?: boolean;
  range?: boolean;
  editorMode?: "code" | "builder";
  interval?: string;
  hide?: boolean;
  exemplar?: boolean;
}

/** `options` of each panel type the dashboards use (a panel of another type fails the test). */
export interface PanelOptions {
  bargauge: Json<bargauge.Options>;
  heatmap: Json<heatmap.Options>;
  stat: Json<stat.Options>;
  "state-timeline": Json<statetimeline.Options>;
  table: Json<table.Options>;
  timeseries: Json<timeseries.Options>;
}

/** `fieldConfig.defaults.custom` of the panel types that have one. */
export interface PanelFieldCustom {
  heatmap: Json<heatmap.FieldConfig>;
  "state-timeline": Json<statetimeline.FieldConfig>;
  table: Json<table.FieldConfig>;
  timeseries: Json<timeseries.FieldConfig>;
}
