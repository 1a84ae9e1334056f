/**
 * The fault schedule of each failover scenario, run while the load goes on. A scenario only
 * says what happens when; the driver does it and the run records each action as an event with
 * its timings (the report attributes disconnects to the events whose nodes they were on).
 */
import type { ActionResult, ClusterDriver, FaultAction, StepTiming } from "./cluster-driver.ts";
import type { ScenarioName } from "./options.ts";

/** What kind of fault or change an event was. */
export type EventKind =
  | "kill"
  | "drain"
  | "join"
  | "restart"
  | "restart-after-kill"
  | "db-outage"
  | "db-crash"
  | "cut"
  | "pause"
  | "clients-cut";

/** One fault or change, as it happened. */
export interface EventRecord {
  kind: EventKind;
  nodes: number[];
  /** Wall-clock ms when the action started and when it completed. */
  startMs: number;
  endMs: number;
  ok: boolean;
  detail?: string;
  steps: StepTiming[];
}

/** Events whose nodes lose their clients: disconnects on those nodes around them are expected. */
export const FAILING_KINDS: ReadonlySet<EventKind> = new Set([
  "kill",
  "drain",
  "restart",
  "restart-after-kill",
  // A node cut off from its peers, or paused past its lease, is fenced: its clients reconnect.
  "cut",
  "pause",
  // Every client's connection broke at once: all of them reconnect, on every node.
  "clients-cut",
]);

/** What a scenario script works with. */
export interface ScenarioContext {
  scenario: ScenarioName;
  nodes: number;
  victim: number | undefined;
  gapMs: number;
  driver: ClusterDriver;
  /** Wall-clock ms of the first fault. */
  firstEventAtMs: number;
  /** Resolves at wall-clock `ms`; rejects if the run is aborted. */
  waitUntil(ms: number): Promise<void>;
  /** Runs `action` as an event and records it. */
  record(kind: EventKind, nodes: number[], action: () => Promise<ActionResult>): Promise<EventRecord>;
  /** Node `i` now serves clients: make it known to them (as a DNS update would). */
  announce(i: number): Promise<void>;
  /** How long a fault that heals lasts (ms). */
  faultMs: number;
  /** Closes every online client's connection at once, as a proxy in front of the servers restarting would. */
  cutClients(): Promise<ActionResult>;
}

/** A fault that heals: `cause`, hold it `ctx.faultMs`, `heal`; one event from start to healed. */
function heals(
  ctx: ScenarioContext,
  kind: EventKind,
  nodes: number[],
  cause: FaultAction,
  heal: FaultAction,
) {
  const i = nodes[0] ?? 0;
  return ctx.record(kind, nodes, async () => {
    const caused = await ctx.driver.fault(cause, i);
    if (!caused.ok) return caused;
    await ctx.waitUntil(Date.now() + ctx.faultMs);
    const healed = await ctx.driver.fault(heal, i);
    return {
      ok: healed.ok,
      steps: [...caused.steps, { step: "fault held", ms: ctx.faultMs }, ...healed.steps],
      ...(healed.detail === undefined ? {} : { detail: healed.detail }),
    };
  });
}

/** Runs several actions at once as one (both kills of kill-two-of-five). */
async function together(
  nodes: number[],
  action: (i: number) => Promise<ActionResult>,
): Promise<ActionResult> {
  const results = await Promise.all(nodes.map(action));
  const details = results.map((r, k) => (r.detail ? `node ${nodes[k]}: ${r.detail}` : "")).filter(Boolean);
  return {
    ok: results.every((r) => r.ok),
    steps: results.flatMap((r, k) => r.steps.map((s) => ({ step: `node ${nodes[k]}: ${s.step}`, ms: s.ms }))),
    ...(details.length > 0 ? { detail: details.join("; ") } : {}),
  };
}

/** Runs the fault schedule of `ctx.scenario`; resolves when its last action is done. */
export async function runScenario(ctx: ScenarioContext): Promise<void> {
  const { driver, nodes } = ctx;
  const victim = ctx.victim ?? nodes - 1;
  switch (ctx.scenario) {
    case "steady":
      return;
    case "kill-under-load": {
      await ctx.waitUntil(ctx.firstEventAtMs);
      await ctx.record("kill", [victim], () => driver.kill(victim));
      // With no survivor the clients need the node back; a cluster keeps it dead.
      if (nodes === 1) await ctx.record("restart-after-kill", [victim], () => driver.join(victim));
      return;
    }
    case "kill-two-of-five": {
      const victims = ctx.victim === undefined ? [nodes - 1, nodes - 2] : [victim, (victim + 1) % nodes];
      await ctx.waitUntil(ctx.firstEventAtMs);
      await ctx.record("kill", victims, () => together(victims, (i) => driver.kill(i)));
      return;
    }
    case "drain-under-load": {
      await ctx.waitUntil(ctx.firstEventAtMs);
      await ctx.record("drain", [victim], () => driver.drain(victim));
      return;
    }
    case "join-under-load": {
      const joiner = nodes;
      await ctx.waitUntil(ctx.firstEventAtMs);
      const event = await ctx.record("join", [joiner], () => driver.join(joiner));
      if (event.ok) await ctx.announce(joiner);
      return;
    }
    case "rolling-restart": {
      let at = ctx.firstEventAtMs;
      for (let i = 0; i < nodes; i++) {
        await ctx.waitUntil(at);
        const event = await ctx.record("restart", [i], () => driver.restart(i));
        at = event.endMs + ctx.gapMs;
      }
      return;
    }
    case "db-outage":
      await ctx.waitUntil(ctx.firstEventAtMs);
      await heals(ctx, "db-outage", [], "pause-db", "resume-db");
      return;
    case "db-restart":
      await ctx.waitUntil(ctx.firstEventAtMs);
      await heals(ctx, "db-crash", [], "crash-db", "restart-db");
      return;
    case "partition":
      await ctx.waitUntil(ctx.firstEventAtMs);
      await heals(ctx, "cut", [victim], "cut-node", "heal-node");
      return;
    case "pause-node":
      await ctx.waitUntil(ctx.firstEventAtMs);
      await heals(ctx, "pause", [victim], "pause-node", "resume-node");
      return;
    case "reconnect-storm": {
      // Every client at once, on every node, as a proxy in front of the servers restarting
      // would: the connections close (the servers see them go at once; a silent network loss,
      // where a server still holds the old stream when the client resumes, is not this). The
      // servers stay up, so each client can resume.
      const all = Array.from({ length: nodes }, (_, i) => i);
      await ctx.waitUntil(ctx.firstEventAtMs);
      await ctx.record("clients-cut", all, () => ctx.cutClients());
      return;
    }
    case "joins-at-once": {
      const joiners = [nodes, nodes + 1];
      await ctx.waitUntil(ctx.firstEventAtMs);
      // The second starts 0.1 s after the first, while the first is still joining.
      const events = await Promise.all(
        joiners.map(async (joiner, k) => {
          await ctx.waitUntil(ctx.firstEventAtMs + k * 100);
          return ctx.record("join", [joiner], () => driver.join(joiner));
        }),
      );
      for (const [k, event] of events.entries()) if (event.ok) await ctx.announce(joiners[k]!);
      return;
    }
    default: {
      const never: never = ctx.scenario;
      throw new TypeError(`Unknown scenario ${JSON.stringify(never)}`);
    }
  }
}
