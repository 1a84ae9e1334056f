/**
 * When a worker starts login steps (src/xmpp/login-steps.ts): at most so many per event-loop
 * turn, the rest in later turns in arrival order; a step that waits on the network holds
 * nothing, so steps that never finish cannot keep others from starting.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LoginSteps } from "../../src/xmpp/login-steps.ts";

/** Counts event-loop turns while the test runs; `stop` ends it. */
function turnCounter() {
  const counter = { turn: 0, ticking: true };
  const tick = () => {
    counter.turn++;
    if (counter.ticking) setImmediate(tick);
  };
  setImmediate(tick);
  return counter;
}

async function turns(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

describe("LoginSteps", () => {
  it("starts at most the limit per turn, the rest in later turns in arrival order", async () => {
    const counter = turnCounter();
    const steps = new LoginSteps(2);
    const started: [string, number][] = [];
    const events: string[] = [];
    const results = ["a", "b", "c", "d", "e"].map((name) =>
      steps.run(
        async () => {
          started.push([name, counter.turn]);
        },
        () => events.push(`${name} waits`),
        () => events.push(`${name} starts`),
      ),
    );
    assert.equal(steps.waiting, 3);
    await Promise.all(results);
    counter.ticking = false;
    assert.deepEqual(
      started.map(([name]) => name),
      ["a", "b", "c", "d", "e"],
    );
    const turnOf = Object.fromEntries(started);
    assert.equal(turnOf.a, turnOf.b, "a and b in the first turn");
    assert.ok(turnOf.c! > turnOf.b!, "c in a later turn");
    assert.equal(turnOf.c, turnOf.d, "c and d in one turn");
    assert.ok(turnOf.e! > turnOf.d!, "e in the turn after");
    assert.deepEqual(events, ["c waits", "d waits", "e waits", "c starts", "d starts", "e starts"]);
    assert.equal(steps.waiting, 0);
  });

  it("steps that never finish (a resumption asking a dead node) do not keep others from starting", async () => {
    const steps = new LoginSteps(1);
    for (let i = 0; i < 5; i++) void steps.run(() => new Promise<void>(() => {}));
    let ran = false;
    const last = steps.run(async () => {
      ran = true;
    });
    await turns(8);
    assert.ok(ran, "the step after five hanging ones started");
    await last;
  });

  it("a step that throws rejects its own promise; one whose onStart throws does not start", async () => {
    const steps = new LoginSteps(1);
    await assert.rejects(
      steps.run(() => {
        throw new Error("bad element");
      }),
      /bad element/,
    );
    let started = false;
    const failing = steps.run(
      async () => {
        started = true;
      },
      () => {},
      () => {
        throw new Error("transport gone");
      },
    );
    await assert.rejects(failing, /transport gone/);
    assert.equal(started, false);
    let after = false;
    await steps.run(async () => {
      after = true;
    });
    assert.ok(after);
  });
});
