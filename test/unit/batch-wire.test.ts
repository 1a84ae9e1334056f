import assert from "node:assert/strict";
import { once } from "node:events";
import { describe, it } from "node:test";
import { MessageChannel } from "node:worker_threads";
import {
  addressedBatchFromWire,
  addressedBatchToWire,
  batchFromWire,
  batchToWire,
} from "../../src/cluster/batch-wire.ts";

/** Every byte value, in a view that does not start at its buffer's first byte. */
function everyByte(): Uint8Array {
  const backing = new Uint8Array(300);
  for (let i = 0; i < 256; i++) backing[i + 7] = 255 - i;
  return backing.subarray(7, 263);
}

describe("batch wire", () => {
  it("carries every byte value across a MessagePort unchanged", async () => {
    const { port1, port2 } = new MessageChannel();
    const bytes = everyByte();
    port1.postMessage(batchToWire(bytes));
    const [wire] = (await once(port2, "message")) as [string];
    assert.deepEqual([...batchFromWire(wire)], [...bytes]);
    port1.postMessage(addressedBatchToWire(2049, bytes));
    const [addressed] = (await once(port2, "message")) as [string];
    const decoded = addressedBatchFromWire(addressed);
    assert.equal(decoded?.dest, 2049);
    assert.deepEqual([...(decoded?.bytes ?? [])], [...bytes]);
    port1.close();
  });

  it("refuses an addressed batch without a destination", () => {
    assert.equal(addressedBatchFromWire("abc"), undefined);
    assert.equal(addressedBatchFromWire(":abc"), undefined);
    assert.equal(addressedBatchFromWire("-1:abc"), undefined);
    assert.deepEqual([...(addressedBatchFromWire("0:")?.bytes ?? [1])], []);
  });
});
