/**
 * Input parsed a slice per event-loop turn (src/transport/parse-slices.ts): a WebSocket message or
 * a BOSH body of a megabyte must not hold the worker's loop while it is parsed. Each test checks
 * what runs between the slices: a callback queued with setImmediate after the input must run
 * before its last slice is written.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  PARSE_SLICE_SIZE,
  PARSE_TURN_BUDGET_MS,
  SlicedInput,
  writeInSlices,
} from "../../src/transport/parse-slices.ts";

/** Resolves after `turns` event-loop turns. */
async function turns(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * Slow writes (three turn budgets each) that record the turn they ran in, and the check that no
 * turn ran two of those that waited: `first` of them are parsed as they arrive.
 */
function slowWrites() {
  let turn = 0;
  let ticking = true;
  const tick = () => {
    turn++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  const writes: [string, number][] = [];
  return {
    writes,
    slow: (name: string) => () => {
      writes.push([name, turn]);
      const until = performance.now() + PARSE_TURN_BUDGET_MS * 3;
      while (performance.now() < until) {}
    },
    stop: () => {
      ticking = false;
    },
    assertOnePerTurn: (first: number) => {
      const waited = writes.slice(first).map(([, at]) => at);
      for (let i = 1; i < waited.length; i++) {
        assert.ok(waited[i]! > waited[i - 1]!, `two slow slices in one turn: ${JSON.stringify(writes)}`);
      }
    },
  };
}

function recorder() {
  const events: string[] = [];
  const hooks = {
    hold: () => events.push("hold"),
    release: () => events.push("release"),
    failed: (error: unknown) => events.push(`failed: ${(error as Error).message}`),
  };
  return { events, hooks };
}

describe("SlicedInput", () => {
  it("writes a long text a slice per turn, with reading held until its end, and other work between", async () => {
    const { events, hooks } = recorder();
    const input = new SlicedInput(hooks);
    const text = "x".repeat(PARSE_SLICE_SIZE * 2 + 100);
    let written = "";
    setImmediate(() => events.push("another connection's turn"));
    input.push(
      text,
      (slice) => {
        written += slice;
        events.push(`write ${slice.length}`);
      },
      () => events.push("done"),
    );
    await turns(4);
    assert.equal(written, text);
    assert.deepEqual(events, [
      `write ${PARSE_SLICE_SIZE}`,
      "hold",
      "another connection's turn",
      `write ${PARSE_SLICE_SIZE}`,
      "write 100",
      "done",
      "release",
    ]);
  });

  it("keeps messages in order, several small ones in one turn, and a message's end after its last slice", async () => {
    const { events, hooks } = recorder();
    const input = new SlicedInput(hooks);
    const write = (name: string) => (slice: string) => events.push(`${name} ${slice.length}`);
    input.push("a".repeat(10), write("a"), () => events.push("a done"));
    // Another message of the same read, in the same turn: it shares the turn's budget.
    input.push("b".repeat(PARSE_SLICE_SIZE), write("b"), () => events.push("b done"));
    // Pushed while b waits for its next turn: it must come after all of b.
    input.push("c".repeat(5), write("c"), () => events.push("c done"));
    await turns(3);
    assert.deepEqual(events, [
      "a 10",
      "a done",
      `b ${PARSE_SLICE_SIZE - 10}`,
      "hold",
      "b 10",
      "b done",
      "c 5",
      "c done",
      "release",
    ]);
  });

  it("stops at the first write that throws: the stream fails once and nothing after it is parsed", async () => {
    const { events, hooks } = recorder();
    const input = new SlicedInput(hooks);
    input.push(
      "bad",
      () => {
        throw new Error("not-well-formed");
      },
      () => events.push("bad done"),
    );
    input.push("late", (slice) => events.push(`late ${slice}`));
    await turns(2);
    assert.deepEqual(events, ["failed: not-well-formed"]);
  });

  it("a message whose end throws (two elements in one WebSocket message) fails the stream", async () => {
    const { events, hooks } = recorder();
    const input = new SlicedInput(hooks);
    input.push(
      "two",
      () => {},
      () => {
        throw new Error("one element per message");
      },
    );
    input.push("next", (slice) => events.push(`next ${slice}`));
    await turns(2);
    assert.deepEqual(events, ["failed: one element per message"]);
  });

  it("stop() drops what waits and releases the hold (the connection closed mid-message)", async () => {
    const { events, hooks } = recorder();
    const input = new SlicedInput(hooks);
    input.push("x".repeat(PARSE_SLICE_SIZE * 3), (slice) => events.push(`write ${slice.length}`));
    input.stop();
    await turns(3);
    assert.deepEqual(events, [`write ${PARSE_SLICE_SIZE}`, "hold", "release"]);
  });
});

describe("the slices of all connections", () => {
  it("take turns, and a turn with a slow slice parses no other waiting slice", async () => {
    const { writes, slow, stop, assertOnePerTurn } = slowWrites();
    const noHooks = { hold: () => {}, release: () => {}, failed: () => {} };
    new SlicedInput(noHooks).push("a".repeat(PARSE_SLICE_SIZE * 3), slow("a"));
    new SlicedInput(noHooks).push("b".repeat(PARSE_SLICE_SIZE * 3), slow("b"));
    await turns(12);
    stop();
    // The first slice of each is parsed as it arrives; the rest alternate, one per turn.
    assert.deepEqual(
      writes.map(([name]) => name),
      ["a", "b", "a", "b", "a", "b"],
    );
    assertOnePerTurn(2);
  });
});

describe("writeInSlices", () => {
  it("parses its waiting slices in the queue's turn, within its budget (BOSH bodies share it)", async () => {
    const { writes, slow, stop, assertOnePerTurn } = slowWrites();
    await Promise.all([
      writeInSlices("a".repeat(PARSE_SLICE_SIZE * 3), slow("a")),
      writeInSlices("b".repeat(PARSE_SLICE_SIZE * 3), slow("b")),
    ]);
    stop();
    assert.deepEqual(
      writes.map(([name]) => name),
      ["a", "b", "a", "b", "a", "b"],
    );
    assertOnePerTurn(2);
  });

  it("rejects with what a write threw, and writes nothing after it", async () => {
    const writes: number[] = [];
    await assert.rejects(
      writeInSlices("c".repeat(PARSE_SLICE_SIZE * 3), (slice) => {
        writes.push(slice.length);
        if (writes.length === 2) throw new Error("too many elements");
      }),
      /too many elements/,
    );
    await turns(3);
    assert.deepEqual(writes, [PARSE_SLICE_SIZE, PARSE_SLICE_SIZE]);
  });

  it("yields to the event loop between slices", async () => {
    const events: string[] = [];
    setImmediate(() => events.push("another request's turn"));
    await writeInSlices("y".repeat(PARSE_SLICE_SIZE + 1), (slice) => events.push(`write ${slice.length}`));
    assert.deepEqual(events, [`write ${PARSE_SLICE_SIZE}`, "another request's turn", "write 1"]);
  });
});
