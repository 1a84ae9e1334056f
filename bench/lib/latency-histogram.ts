/**
 * A fixed-size latency histogram: 10 µs buckets below 1 ms, then buckets 1 % wide up to two
 * minutes. Recording is one array increment, and histograms from several load processes merge
 * by adding counts, so percentiles are exact to the bucket width across the whole run.
 */

const LINEAR_BUCKETS = 100;
const LOG_BASE = Math.log(1.01);
const MAX_MS = 120_000;
const BUCKETS = LINEAR_BUCKETS + Math.ceil(Math.log(MAX_MS) / LOG_BASE) + 1;

/** The plain-data form of a histogram, as sent between processes. */
export interface HistogramData {
  counts: number[];
  total: number;
  maxMs: number;
}

/** Latency histogram in milliseconds. */
export class LatencyHistogram {
  #counts = new Float64Array(BUCKETS);
  total = 0;
  maxMs = 0;

  /** Records one latency; negative values (clock skew between processes) count as zero. */
  record(ms: number): void {
    const v = Math.max(ms, 0);
    let index: number;
    if (v < 1) index = Math.floor(v * LINEAR_BUCKETS);
    else index = Math.min(BUCKETS - 1, LINEAR_BUCKETS + Math.floor(Math.log(v) / LOG_BASE));
    this.#counts[index]!++;
    this.total++;
    if (v > this.maxMs) this.maxMs = v;
  }

  /** The latency at quantile `q` (0..1), as the midpoint of its bucket; NaN when empty. */
  quantile(q: number): number {
    if (this.total === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i]!;
      if (seen >= rank) {
        const mid =
          i < LINEAR_BUCKETS ? (i + 0.5) / LINEAR_BUCKETS : Math.exp((i - LINEAR_BUCKETS + 0.5) * LOG_BASE);
        return Math.min(mid, this.maxMs);
      }
    }
    return this.maxMs;
  }

  /** Adds another histogram's counts into this one. */
  merge(data: HistogramData): void {
    const { counts } = data;
    for (let i = 0; i < counts.length && i < BUCKETS; i += 2) {
      // Sparse pairs: [index, count, index, count, ...].
      this.#counts[counts[i]!]! += counts[i + 1]!;
    }
    this.total += data.total;
    if (data.maxMs > this.maxMs) this.maxMs = data.maxMs;
  }

  /** A compact copy for postMessage/IPC: only non-empty buckets, as index/count pairs. */
  toData(): HistogramData {
    const counts: number[] = [];
    for (let i = 0; i < BUCKETS; i++) {
      const c = this.#counts[i]!;
      if (c !== 0) counts.push(i, c);
    }
    return { counts, total: this.total, maxMs: this.maxMs };
  }
}
