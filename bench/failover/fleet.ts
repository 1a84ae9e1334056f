/**
 * All the failover load processes of a run, driven together: users are split into contiguous
 * ranges, one per process; the offered rate is split evenly; live counters are summed.
 */
import {
  type ConnectReport,
  FailoverGroup,
  type FailoverGroupConfig,
  type FailoverLoad,
  type GroupResult,
  type LiveCounters,
} from "../lib/failover-group.ts";
import { ownCpuSeconds } from "../lib/proc-stats.ts";
import { RemoteFailoverGroup } from "../lib/remote-failover-group.ts";
import { userRanges } from "../lib/user-ranges.ts";

/** See the file comment. */
export class FailoverFleet {
  readonly groups: FailoverLoad[];
  #remotes: RemoteFailoverGroup[];

  private constructor(groups: FailoverLoad[], remotes: RemoteFailoverGroup[]) {
    this.groups = groups;
    this.#remotes = remotes;
  }

  /** One in-process group when `procs` is 1, else `procs` child processes. */
  static async create(
    base: Omit<FailoverGroupConfig, "id" | "first" | "count">,
    procs: number,
  ): Promise<FailoverFleet> {
    const configs: FailoverGroupConfig[] = userRanges(base.totalUsers, procs).map((range, id) => ({
      ...base,
      id,
      ...range,
    }));
    if (configs.length === 1) return new FailoverFleet([new FailoverGroup(configs[0]!)], []);
    const remotes: RemoteFailoverGroup[] = [];
    try {
      for (const config of configs) remotes.push(await RemoteFailoverGroup.start(config));
    } catch (error) {
      for (const r of remotes) r.kill();
      throw error;
    }
    return new FailoverFleet(remotes, remotes);
  }

  async connect(concurrency: number, deadlineMs: number): Promise<ConnectReport> {
    const per = Math.max(1, Math.ceil(concurrency / this.groups.length));
    const started = performance.now();
    const reports = await Promise.all(this.groups.map((g) => g.connect({ concurrency: per, deadlineMs })));
    const merged: ConnectReport = {
      ok: 0,
      failed: 0,
      errors: {},
      firstError: undefined,
      elapsedMs: performance.now() - started,
      scramDerivations: 0,
    };
    for (const r of reports) {
      merged.ok += r.ok;
      merged.failed += r.failed;
      merged.scramDerivations += r.scramDerivations;
      merged.firstError ??= r.firstError;
      for (const [code, n] of Object.entries(r.errors)) merged.errors[code] = (merged.errors[code] ?? 0) + n;
    }
    return merged;
  }

  async setActive(active: boolean[]): Promise<void> {
    await Promise.all(this.groups.map((g) => g.setActive(active)));
  }

  async setupRosters(timeoutMs: number): Promise<{ incomplete: number }> {
    const results = await Promise.all(this.groups.map((g) => g.setupRosters({ timeoutMs })));
    return { incomplete: results.reduce((a, r) => a + r.incomplete, 0) };
  }

  async startTraffic(rate: number, startAtMs: number, burstPeriodMs: number): Promise<void> {
    const per = rate / this.groups.length;
    await Promise.all(this.groups.map((g) => g.startTraffic({ ratePerS: per, startAtMs, burstPeriodMs })));
  }

  async stopTraffic(): Promise<number> {
    const results = await Promise.all(this.groups.map((g) => g.stopTraffic()));
    return results.reduce((a, r) => a + r.sent, 0);
  }

  async requestAcks(): Promise<void> {
    await Promise.all(this.groups.map((g) => g.requestAcks()));
  }

  /** Breaks every online client's connection at once; how many were cut. */
  async cutConnections(): Promise<number> {
    const results = await Promise.all(this.groups.map((g) => g.cutConnections()));
    return results.reduce((a, r) => a + r.cut, 0);
  }

  /** Live counters of every process, summed. */
  async live(): Promise<LiveCounters> {
    const all = await Promise.all(this.groups.map((g) => g.live()));
    const total: LiveCounters = {
      users: 0,
      online: 0,
      onlineByNode: all[0]!.onlineByNode.map(() => 0),
      reconnecting: 0,
      sent: 0,
      acked: 0,
      unacked: 0,
      delivered: 0,
      duplicates: 0,
      disconnects: 0,
      resumed: 0,
      relogged: 0,
      notOffered: 0,
    };
    for (const c of all) {
      for (const key of Object.keys(total) as (keyof LiveCounters)[]) {
        if (key === "onlineByNode") {
          c.onlineByNode.forEach((n, i) => {
            total.onlineByNode[i]! += n;
          });
        } else total[key] += c[key];
      }
    }
    return total;
  }

  collect(): Promise<GroupResult[]> {
    return Promise.all(this.groups.map((g) => g.collect()));
  }

  /** Load-generator CPU seconds: every child plus this orchestrator process. */
  async cpuSeconds(): Promise<number> {
    if (this.#remotes.length === 0) return ownCpuSeconds();
    const children = await Promise.all(this.#remotes.map((r) => r.cpuSeconds()));
    return children.reduce((a, b) => a + b, ownCpuSeconds());
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.groups.map((g) => g.closeAll()));
  }

  async shutdown(): Promise<void> {
    await Promise.all(this.groups.map((g) => g.shutdown()));
  }

  killNow(): void {
    for (const r of this.#remotes) r.kill();
  }
}
