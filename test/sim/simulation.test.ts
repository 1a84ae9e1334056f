/**
 * Deterministic simulation of membership, handoff and session replication (issue 10, item 6):
 * thousands of seeds, each a small cluster under faults, the guarantees checked after every
 * step. `SIM_SEED=<n> node --test test/sim/simulation.test.ts` replays one seed with its trace;
 * `SIM_SEEDS=<count>` and `SIM_FROM=<first>` change the range.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { KNOWN_GAPS, UNTRIAGED_SEEDS, unexplained } from "./known-gaps.ts";
import { runSeed } from "./simulation.ts";

const one = process.env.SIM_SEED;

/**
 * Seeds beyond the first 10,000 that each found a product bug (or a flaw of the model), run with
 * every range so the fix stays (`SIM_FROM=10001 SIM_SEEDS=…` ranges are run by hand, not by
 * `npm test`):
 * - 30007, 36521: a lender restored after its taker went quiet, behind the heir of its taker's
 *   session (client-stream-host.ts adoptCopy);
 * - 51267, 91141: resumptions a client left behind on a node that woke from a pause, side by side
 *   or after the client had left (client-stream-host.ts oneAtATime, `resume`);
 * - 63292, 86123, 93094: a promoted copy's init replaced, at an equal move count, the copy of the
 *   session a client had resumed, then ended (session-replicas.ts ReplicaHost.receive);
 * - 77167: a worker that died before its restart was announced (worker-pool.ts, and the model's
 *   crashWorker);
 * - 98258: what a process wrote before it was paused stayed with it in the model (scheduler.ts).
 */
const REGRESSION_SEEDS = [30007, 36521, 51267, 63292, 77167, 86123, 91141, 93094, 98258];

if (one !== undefined) {
  test(`simulation seed ${one} keeps every guarantee (trace)`, (t) => {
    const result = runSeed(Number(one), true);
    t.diagnostic(`steps: ${result.steps}`);
    for (const line of result.trace ?? []) t.diagnostic(line);
    for (const gap of result.knownGaps) t.diagnostic(`known gap ${gap}: ${KNOWN_GAPS[gap]}`);
    for (const v of result.violations) t.diagnostic(`violation ${v.rule}: ${v.detail}`);
    assert.deepEqual(unexplained(result), []);
  });
} else {
  test("simulation keeps every guarantee over 10,000 seeds", async (t) => {
    const count = Number(process.env.SIM_SEEDS ?? 10_000);
    const from = Number(process.env.SIM_FROM ?? 1);
    const started = performance.now();
    let steps = 0;
    const failed: { seed: number; rule: string; detail: string }[] = [];
    const gaps = new Map<string, number[]>();
    const untriaged: { seed: number; rule: string; detail: string }[] = [];
    const extra = REGRESSION_SEEDS.filter((seed) => seed < from || seed >= from + count);
    for (const seed of [...Array.from({ length: count }, (_, i) => from + i), ...extra]) {
      const result = runSeed(seed);
      steps += result.steps;
      const first = unexplained(result)[0];
      if (first !== undefined && UNTRIAGED_SEEDS.has(seed)) untriaged.push({ seed, ...first });
      else if (first !== undefined) failed.push({ seed, ...first });
      else if (result.violations.length > 0) {
        for (const gap of result.knownGaps) gaps.set(gap, [...(gaps.get(gap) ?? []), seed]);
      }
    }
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(
      `${count} seeds (and ${extra.length} regression seeds), ${steps} steps in ${seconds.toFixed(1)} s: ${(count / seconds).toFixed(0)} seeds/s`,
    );
    for (const [gap, seeds] of gaps) {
      const name = `known gap ${gap} broke a guarantee in ${seeds.length} seeds (e.g. ${seeds.slice(0, 5).join(", ")})`;
      await t.test(name, { todo: KNOWN_GAPS[gap] ?? true }, () => assert.fail(name));
    }
    if (untriaged.length > 0) {
      const name = `${untriaged.length} untriaged seeds still break a guarantee (e.g. ${untriaged
        .slice(0, 5)
        .map((u) => `${u.seed}: ${u.rule}`)
        .join("; ")})`;
      await t.test(name, { todo: "see UNTRIAGED_SEEDS in test/sim/known-gaps.ts" }, () => assert.fail(name));
    }
    for (const f of failed.slice(0, 10)) {
      t.diagnostic(
        `seed ${f.seed}: ${f.rule}: ${f.detail}; replay: SIM_SEED=${f.seed} node --test test/sim/simulation.test.ts`,
      );
    }
    assert.equal(
      failed.length,
      0,
      `${failed.length} seed(s) broke a guarantee; first: seed ${failed[0]?.seed}`,
    );
  });
}
