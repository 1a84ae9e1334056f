/**
 * A call through a WorkerSlot (src/cluster/worker-slot.ts) settles when its worker exits: on a
 * real worker thread that is terminated while the call waits, and for a call made afterwards.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { MessageChannel, Worker } from "node:worker_threads";
import type { WorkerControl } from "../../src/cluster/worker-main.ts";
import { EXITED, WorkerSlot } from "../../src/cluster/worker-slot.ts";
import { nodeEndpoint, wrap } from "../../src/comlink-setup.ts";

async function startSlot(): Promise<WorkerSlot> {
  const channel = new MessageChannel();
  const worker = new Worker(new URL("../fixtures/control-worker.ts", import.meta.url), {
    workerData: { port: channel.port2 },
    transferList: [channel.port2],
  });
  await new Promise((resolve) => worker.once("message", resolve));
  const slot = new WorkerSlot(worker, wrap<WorkerControl>(nodeEndpoint(channel.port1)), channel.port1);
  worker.once("exit", () => {
    channel.port1.close();
    slot.markExited();
  });
  return slot;
}

test("a call answers while the worker runs, and resolves EXITED when the worker dies first", async () => {
  const slot = await startSlot();
  assert.equal(await slot.call((control) => control.sidPrefix()), "1.abc.");
  const waiting = slot.call((control) => control.settled());
  await slot.worker.terminate();
  assert.equal(await waiting, EXITED, "the call waiting on the dead worker settles");
  assert.equal(slot.ready, false);
  assert.equal(await slot.call((control) => control.sidPrefix()), EXITED, "a call after the exit too");
  await assert.rejects(
    slot.ask((control) => control.sidPrefix()),
    { code: "XSRV_WORKER" },
  );
});
