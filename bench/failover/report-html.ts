/**
 * report.html: the failover report as one self-contained page — summary, events, nodes, and
 * line charts drawn as inline SVG here (no script, no network), with the load window shaded
 * and every event marked on each chart.
 */
import type { FailoverReport } from "./report.ts";
import { summaryTable } from "./report.ts";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

function esc(text: unknown): string {
  return String(text)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

/** A round number ≥ `value` (1, 2 or 5 times a power of ten). */
function niceCeil(value: number): number {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (m * power >= value) return m * power;
  return 10 * power;
}

function formatTick(v: number): string {
  if (v >= 1000) return `${Number((v / 1000).toFixed(1))}k`;
  if (v >= 10 || v === 0) return String(Math.round(v));
  return String(Number(v.toPrecision(2)));
}

/** One line on a chart: y values at x positions; null leaves a gap. */
export interface ChartSeries {
  name: string;
  xs: readonly (number | null)[];
  ys: readonly (number | null)[];
}

/** Options of {@link lineChart}. */
export interface ChartOptions {
  title: string;
  yLabel: string;
  series: ChartSeries[];
  /** Vertical markers (seconds) with labels. */
  marks: { x: number; label: string }[];
  /** Shaded x range (the load window). */
  band?: [number, number];
  /** Logarithmic y axis (latency). */
  logY?: boolean;
  xMax: number;
}

/** Draws a line chart as an SVG string. */
export function lineChart(options: ChartOptions): string {
  const width = 960;
  const height = 280;
  const left = 64;
  const right = 16;
  const top = 44;
  const bottom = 36;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const values = options.series.flatMap((s) =>
    s.ys.filter((v): v is number => v !== null && Number.isFinite(v)),
  );
  const xMax = Math.max(1, options.xMax);
  const logY = options.logY === true && values.some((v) => v > 0);
  let yMin = 0;
  let yMax = niceCeil(Math.max(1e-9, ...values));
  if (logY) {
    const positive = values.filter((v) => v > 0);
    yMin = 10 ** Math.floor(Math.log10(Math.min(...positive)));
    yMax = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
    if (yMax <= yMin) yMax = yMin * 10;
  }
  const x = (v: number) => left + (v / xMax) * plotW;
  const y = (v: number) => {
    const f = logY
      ? (Math.log10(Math.max(v, yMin)) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))
      : (v - yMin) / (yMax - yMin);
    return top + plotH - f * plotH;
  };
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="100%" role="img" aria-label="${esc(options.title)}">`,
  );
  parts.push(`<text x="${left}" y="18" font-size="14" font-weight="bold">${esc(options.title)}</text>`);
  if (options.band) {
    const [b0, b1] = options.band;
    parts.push(
      `<rect x="${x(b0).toFixed(1)}" y="${top}" width="${Math.max(0, x(b1) - x(b0)).toFixed(1)}" height="${plotH}" fill="#f3f6fa"/>`,
    );
  }
  // Axes and grid.
  const yTicks: number[] = [];
  if (logY) for (let v = yMin; v <= yMax * 1.0001; v *= 10) yTicks.push(v);
  else for (let k = 0; k <= 5; k++) yTicks.push(yMin + ((yMax - yMin) * k) / 5);
  for (const v of yTicks) {
    const yy = y(v).toFixed(1);
    parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${yy}" y2="${yy}" stroke="#e3e3e3"/>`);
    parts.push(
      `<text x="${left - 6}" y="${yy}" font-size="11" text-anchor="end" dominant-baseline="middle">${formatTick(v)}</text>`,
    );
  }
  const xStep = niceCeil(xMax / 10);
  for (let v = 0; v <= xMax; v += xStep) {
    parts.push(
      `<text x="${x(v).toFixed(1)}" y="${top + plotH + 16}" font-size="11" text-anchor="middle">${formatTick(v)}</text>`,
    );
  }
  parts.push(
    `<text x="${left + plotW}" y="${height - 4}" font-size="11" text-anchor="end">seconds since the clients started</text>`,
  );
  parts.push(
    `<text transform="translate(14 ${top + plotH / 2}) rotate(-90)" font-size="11" text-anchor="middle">${esc(options.yLabel)}</text>`,
  );
  parts.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`);
  // Event marks.
  options.marks.forEach((mark, k) => {
    const xx = x(mark.x).toFixed(1);
    parts.push(
      `<line x1="${xx}" x2="${xx}" y1="${top}" y2="${top + plotH}" stroke="#555" stroke-dasharray="4 3"/>`,
    );
    // Labels near the right edge run leftwards so they stay inside the chart.
    const anchor = x(mark.x) > left + plotW - 90 ? `text-anchor="end" dx="-3"` : `dx="3"`;
    parts.push(
      `<text x="${xx}" y="${top + 12 + (k % 3) * 12}" font-size="10" ${anchor}>${esc(mark.label)}</text>`,
    );
  });
  // Lines, split at gaps.
  let legendX = 0;
  options.series.forEach((series, k) => {
    const color = COLORS[k % COLORS.length]!;
    let segment: string[] = [];
    const flush = () => {
      if (segment.length === 1) {
        const [px, py] = segment[0]!.split(",");
        parts.push(`<circle cx="${px}" cy="${py}" r="1.5" fill="${color}"/>`);
      } else if (segment.length > 1) {
        parts.push(
          `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${segment.join(" ")}"/>`,
        );
      }
      segment = [];
    };
    for (let i = 0; i < series.ys.length; i++) {
      const vx = series.xs[i];
      const vy = series.ys[i];
      if (vx === null || vx === undefined || vy === null || vy === undefined || !Number.isFinite(vy)) {
        flush();
        continue;
      }
      segment.push(`${x(vx).toFixed(1)},${y(vy).toFixed(1)}`);
    }
    flush();
    // Legend: one row under the title, so it never covers the lines or the event labels.
    const lx = left + legendX;
    legendX += 22 + series.name.length * 6.5;
    parts.push(`<rect x="${lx}" y="${24}" width="10" height="10" fill="${color}"/>`);
    parts.push(`<text x="${lx + 14}" y="${33}" font-size="11">${esc(series.name)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("");
}

function table(headers: string[], rows: unknown[][]): string {
  const head = headers.map((h) => `<th>${esc(h)}</th>`).join("");
  const body = rows.map((row) => `<tr>${row.map((c) => `<td>${esc(c ?? "–")}</td>`).join("")}</tr>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

/** Renders the whole page. */
export function renderCharts(report: FailoverReport): { name: string; svg: string }[] {
  const chart = (name: string, options: ChartOptions) => ({ name, svg: lineChart(options) });
  const t = report.timeline;
  const perSecondXs = t.delivered_per_s.map((_, i) => i + 0.5);
  const xMax = Math.max(report.run_ended_s ?? 0, t.delivered_per_s.length, ...t.t_s.map((v) => v ?? 0));
  const marks = [
    { x: report.load_started_s ?? 0, label: "load starts" },
    ...report.events.flatMap((e) => [
      { x: e.at_s ?? 0, label: `${e.kind} ${e.node_names.join("+")}` },
      ...(e.duration_ms > 1000 ? [{ x: e.done_s ?? 0, label: `${e.kind} done` }] : []),
    ]),
    { x: report.load_ended_s ?? 0, label: "load stops" },
  ];
  const band: [number, number] = [report.load_started_s ?? 0, report.load_ended_s ?? 0];
  const nodeNames = report.per_node.map((n) => n.name);
  const charts = [
    chart("connected", {
      title: "Connected clients per node (client view)",
      yLabel: "clients",
      series: [
        ...t.connected_by_node.map((ys, i) => ({ name: nodeNames[i] ?? `node ${i}`, xs: t.t_s, ys })),
        { name: "reconnecting", xs: t.t_s, ys: t.reconnecting },
      ],
      marks,
      band,
      xMax,
    }),
    chart("messages", {
      title: "Messages per second",
      yLabel: "msgs/s",
      series: [
        { name: "sent (first write)", xs: perSecondXs, ys: t.sent_per_s },
        { name: "acked by server", xs: perSecondXs, ys: t.acked_per_s },
        { name: "delivered", xs: perSecondXs, ys: t.delivered_per_s },
        { name: "duplicated", xs: perSecondXs, ys: t.duplicated_per_s },
      ],
      marks,
      band,
      xMax,
    }),
    chart("latency", {
      title: "Delivery latency per second of receipt (log scale)",
      yLabel: "ms",
      series: [
        { name: "p50", xs: perSecondXs, ys: t.latency_p50_ms },
        { name: "p99", xs: perSecondXs, ys: t.latency_p99_ms },
      ],
      marks,
      band,
      logY: true,
      xMax,
    }),
    chart("reconnects", {
      title: "Disconnects and reconnects per second",
      yLabel: "clients/s",
      series: [
        { name: "disconnects", xs: perSecondXs, ys: t.disconnects_per_s },
        { name: "resumed", xs: perSecondXs, ys: t.resumed_per_s },
        { name: "relogged", xs: perSecondXs, ys: t.relogged_per_s },
      ],
      marks,
      band,
      xMax,
    }),
  ];
  if (t.server_cores_by_node.some((ys) => ys.some((v) => v !== null))) {
    charts.push(
      chart("server-cpu", {
        title: "Server CPU per node",
        yLabel: "cores",
        series: t.server_cores_by_node.map((ys, i) => ({ name: nodeNames[i] ?? `node ${i}`, xs: t.t_s, ys })),
        marks,
        band,
        xMax,
      }),
    );
  }
  return charts;
}

/** Renders the whole page. */
export function renderHtml(report: FailoverReport): string {
  const charts = renderCharts(report).map((c) => c.svg);
  const events = table(
    [
      "event",
      "nodes",
      "at s",
      "took ms",
      "ok",
      "disconnected",
      "resumed",
      "relogged",
      "reconnect p50/p99 ms",
      "all back after ms",
      "steps",
      "detail",
    ],
    report.events.map((e) => [
      e.kind,
      e.node_names.join(", "),
      e.at_s,
      e.duration_ms,
      e.ok ? "yes" : "NO",
      e.clients,
      e.resumed,
      e.relogged,
      `${e.reconnect_p50_ms ?? "–"} / ${e.reconnect_p99_ms ?? "–"}`,
      e.all_back_after_ms,
      e.steps.map((s) => `${s.step}: ${s.ms}`).join("; "),
      e.detail,
    ]),
  );
  const nodes = table(
    [
      "node",
      "address",
      "starts",
      "clients at load start",
      "disconnects",
      "of them unexplained",
      "CPU s",
      "max RSS MiB",
      "warnings",
    ],
    report.per_node.map((n) => [
      n.name,
      n.address,
      n.starts,
      n.clients_at_load_start,
      n.disconnects,
      n.disconnects_not_on_failed_node,
      n.cpu_s,
      n.max_rss_mib,
      n.warnings,
    ]),
  );
  const m = report.machine;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Starling failover: ${esc(report.scenario)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} pre{background:#f7f7f7;padding:12px;font-size:13px;overflow:auto}
section{margin-bottom:18px}
</style></head><body>
<h1>Failover: ${esc(report.scenario)}</h1>
<p>${esc(report.started_at)} · ${esc(report.server)} · ${esc(m.cpu)}, ${m.cores} cores, ${m.memory_gib} GiB, ${esc(m.os)}, Node.js ${esc(m.node)}</p>
<pre>${esc(summaryTable(report))}</pre>
${charts.map((c) => `<section>${c}</section>`).join("\n")}
<h2>Events</h2>${events}
<h2>Nodes</h2>${nodes}
<h2>Options</h2><pre>${esc(JSON.stringify(report.options, null, 2))}</pre>
<p>All figures, the per-second series and every disconnect are in report.json next to this page.</p>
</body></html>
`;
}
