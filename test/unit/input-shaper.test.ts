import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InputShaper, PacedInput } from "../../src/transport/input-shaper.ts";

describe("InputShaper", () => {
  it("InputShaper lets a burst through at once and asks to wait for the excess at the rate", () => {
    let now = 0;
    const shaper = new InputShaper(10_000, 20_000, () => now);
    assert.equal(shaper.take(20_000), 0, "the burst is free");
    // 5,000 bytes over budget at 10,000 B/s: half a second.
    assert.equal(shaper.take(5_000), 500);
    now += 500;
    assert.equal(shaper.take(0), 0, "the excess has drained");
    now += 60_000;
    // A long quiet spell refills the bucket to the burst, no further.
    assert.equal(shaper.take(20_000), 0);
    assert.equal(shaper.take(1_000), 100);
  });
});

describe("PacedInput", () => {
  it("PacedInput reads again only when neither the shaper nor the stream holds it", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const calls: string[] = [];
    let now = 0;
    const input = new PacedInput(
      { pause: () => calls.push("pause"), resume: () => calls.push("resume") },
      new InputShaper(1_000_000, 1_000, () => now),
    );
    input.received(1_020); // 20 bytes over at 1,000 B/ms: a wait of 1 ms.
    input.pause(); // The stream's flow control too.
    now += 5;
    t.mock.timers.tick(5);
    assert.deepEqual(calls, ["pause"], "the shaper's wait ended, but the stream still holds it");
    input.resume();
    assert.deepEqual(calls, ["pause", "resume"]);
    input.received(2_000); // 1,000 over: paused for 1 ms...
    assert.deepEqual(calls.slice(2), ["pause"]);
    input.received(3_000); // ...but what was read before the pause took hold is owed too.
    now += 1;
    t.mock.timers.tick(1);
    assert.deepEqual(calls.slice(2), ["pause"], "still paused: 3,000 bytes more are owed");
    now += 3;
    t.mock.timers.tick(3);
    assert.deepEqual(calls.slice(2), ["pause", "resume"]);
    input.stop();
  });

  it("PacedInput keeps reading stopped while any of its holds remains", () => {
    const calls: string[] = [];
    const input = new PacedInput(
      { pause: () => calls.push("pause"), resume: () => calls.push("resume") },
      new InputShaper(1_000, 1_000, () => 0),
    );
    input.hold("parse");
    input.pause();
    input.release("parse");
    assert.deepEqual(calls, ["pause"], "the stream still holds it");
    input.resume();
    input.release("parse"); // Released twice: nothing more happens.
    assert.deepEqual(calls, ["pause", "resume"]);
  });
});
