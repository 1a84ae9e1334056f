/**
 * The per-worker bound on login steps in progress (src/xmpp/login-steps.ts): never more than the
 * limit at once, the rest in arrival order, a place given back however a step ends, and a
 * waiting stream told when it waits and when it starts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LoginSteps } from "../../src/xmpp/login-steps.ts";

/** A step that finishes (or fails) when the test says so. */
function pendingStep() {
  let finish!: () => void;
  let fail!: (error: Error) => void;
  const done = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  return { run: () => done, finish, fail };
}

describe("LoginSteps", () => {
  it("runs at most the limit at once and the others in arrival order as places free up", async () => {
    const steps = new LoginSteps(2);
    const started: string[] = [];
    const events: string[] = [];
    const made = ["a", "b", "c", "d"].map((name) => {
      const step = pendingStep();
      const result = steps.run(
        () => {
          started.push(name);
          return step.run();
        },
        () => events.push(`${name} waits`),
        () => events.push(`${name} starts`),
      );
      return { name, step, result };
    });
    assert.deepEqual(started, ["a", "b"]);
    assert.equal(steps.running, 2);
    assert.equal(steps.waiting, 2);
    made[1]!.step.finish();
    await made[1]!.result;
    assert.deepEqual(started, ["a", "b", "c"]);
    // A failing step gives its place back too, and its failure reaches its caller.
    made[0]!.step.fail(new Error("store down"));
    await assert.rejects(made[0]!.result, /store down/);
    assert.deepEqual(started, ["a", "b", "c", "d"]);
    assert.deepEqual(events, ["c waits", "d waits", "c starts", "d starts"]);
    made[2]!.step.finish();
    made[3]!.step.finish();
    await Promise.all([made[2]!.result, made[3]!.result]);
    assert.equal(steps.running, 0);
    assert.equal(steps.waiting, 0);
  });

  it("a step that throws before it returns a promise gives its place back", async () => {
    const steps = new LoginSteps(1);
    await assert.rejects(
      steps.run(() => {
        throw new Error("bad element");
      }),
      /bad element/,
    );
    assert.equal(steps.running, 0);
    let ran = false;
    await steps.run(async () => {
      ran = true;
    });
    assert.ok(ran);
  });
});
