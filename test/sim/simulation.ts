/**
 * One seed of the simulation: builds a small cluster (2-4 nodes, 1-2 workers each, factor 2 or
 * 3), binds a few XEP-0198 clients, runs a chaos phase (traffic plus faults: kills, pauses, cut
 * and healed links, dropped sockets, a join, a worker thread's crash), then a calm phase in which links heal and clients
 * resume, and checks the invariants after every step.
 */
import { checkInvariants, checkQuiescent } from "./invariants.ts";
import { SimClient, type Violation, World } from "./world.ts";

const CHAOS_MS = 15_000;
const TRAFFIC_MS = 22_000;
const END_MS = 40_000;

export interface SeedResult {
  seed: number;
  steps: number;
  violations: Violation[];
  /** Known product gaps this seed ran into (see World.knownGaps). */
  knownGaps: string[];
  trace: string[] | undefined;
}

export function runSeed(seed: number, trace = false): SeedResult {
  const world = new World({ seed, trace });
  const { sched } = world;
  const rng = sched.rng;
  const nodes = () => [...world.nodes.values()];

  const clientCount = rng.int(2, 3);
  for (let i = 1; i <= clientCount; i++) {
    const client = new SimClient(i);
    world.clients.push(client);
    world.connect(client);
  }
  // Client traffic: stanzas to the server, stanzas from it, acks and ack requests.
  for (const client of world.clients) {
    const loop = (label: string, min: number, max: number, act: () => void) => {
      const tick = () => {
        if (sched.now > TRAFFIC_MS) return;
        act();
        sched.at(rng.int(min, max), undefined, label, tick);
      };
      sched.at(rng.int(0, max), undefined, label, tick);
    };
    loop("", 300, 2_500, () => world.clientSends(client));
    loop("", 300, 2_500, () => world.generate(client));
    loop("", 500, 3_000, () => world.clientAcks(client));
    loop("", 800, 4_000, () => world.clientRequests(client));
  }
  // Faults during the chaos phase. Node failures stay within what the factor tolerates.
  const faults = rng.int(2, 7);
  for (let i = 0; i < faults; i++) {
    sched.at(rng.int(500, CHAOS_MS), undefined, "", () => {
      const roll = rng.next();
      const candidates = nodes().filter((n) => n.proc.alive && !n.proc.paused && !n.fenced);
      if (roll < 0.2 && world.nodeFailures < world.factor - 1 && candidates.length > 2 - 1) {
        world.kill(rng.pick(candidates));
      } else if (roll < 0.35 && candidates.length > 1) {
        const long = world.nodeFailures < world.factor - 1 && rng.chance(0.5);
        world.pause(rng.pick(candidates), long ? rng.int(13_000, 20_000) : rng.int(200, 8_000));
      } else if (roll < 0.65 && candidates.length > 1) {
        const a = rng.pick(candidates);
        const b = rng.pick(candidates.filter((n) => n !== a));
        const ms = rng.int(200, 6_000);
        const overflow = rng.chance(0.25);
        sched.log(`FAULT cut n${a.nodeNo}–n${b.nodeNo} for ${ms} ms${overflow ? " (overflows)" : ""}`);
        world.net.cut(a.nodeNo, b.nodeNo);
        sched.at(ms, undefined, `heal n${a.nodeNo}–n${b.nodeNo}`, () =>
          world.net.heal(a.nodeNo, b.nodeNo, overflow),
        );
      } else if (roll < 0.75 && nodes().length < 5) {
        world.join();
      } else if (roll < 0.85 && world.nodeFailures < world.factor - 1 && candidates.length > 0) {
        // A crashed worker's sessions lose their owner: one failure of the factor's budget.
        const node = rng.pick(candidates);
        world.crashWorker(node, rng.int(0, node.workers - 1));
      } else {
        world.dropConnection(rng.pick(world.clients));
      }
    });
  }
  // Clients that are offline keep trying to resume.
  const retry = () => {
    for (const client of world.clients) world.resume(client);
    if (sched.now < END_MS) sched.at(2_000, undefined, "", retry);
  };
  sched.at(2_000, undefined, "", retry);
  // After the traffic, each client acknowledges what it has.
  sched.at(TRAFFIC_MS + 5_000, undefined, "final acks", () => {
    for (const client of world.clients) world.clientAcks(client);
  });

  let before = 0;
  while (sched.step(END_MS)) {
    checkInvariants(world);
    if (world.violations.length > before) break;
    before = world.violations.length;
  }
  if (world.violations.length === 0) checkQuiescent(world);
  return {
    seed,
    steps: sched.steps,
    violations: dedupe(world.violations),
    knownGaps: [...world.knownGaps],
    trace: sched.trace,
  };
}

function dedupe(violations: Violation[]): Violation[] {
  const seen = new Set<string>();
  return violations.filter((v) => {
    const key = `${v.rule}:${v.detail}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
