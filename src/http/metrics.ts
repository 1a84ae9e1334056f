/**
 * The Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` per family, then
 * one line per sample with its labels. The node builds the families from every worker's
 * statistics (src/cluster/node-metrics.ts); this only writes them.
 */

/** One sample: labels and value. */
export interface MetricSample {
  labels?: Record<string, string | number>;
  value: number;
}

/** One metric family. */
export interface MetricFamily {
  /** `starling_…`, snake case; counters end in `_total`. */
  name: string;
  help: string;
  type: "counter" | "gauge";
  samples: MetricSample[];
}

/** The content type Prometheus scrapes. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Writes families in the text format. */
export function renderMetrics(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    for (const sample of family.samples) {
      const labels = Object.entries(sample.labels ?? {});
      const labelText =
        labels.length === 0
          ? ""
          : `{${labels.map(([k, v]) => `${k}="${escapeLabel(String(v))}"`).join(",")}}`;
      lines.push(`${family.name}${labelText} ${formatValue(sample.value)}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

function escapeLabel(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');
}
