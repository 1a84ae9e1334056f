/**
 * A reply that reaches a worker after its request gave up (src/cluster/client-stream-host.ts
 * `lateTakeOf`, run for every late reply by worker-main.ts): a lent session goes back to its
 * lender, a replica's copy is kept, and any other late answer is ignored without throwing (it
 * runs in the worker's port handler: a throw there would kill the worker and drop its clients).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { newSessionState } from "../../actors/session-state.ts";
import { lateTakeOf } from "../../src/cluster/client-stream-host.ts";
import type { FullJid } from "../../src/xmpp/jid.ts";

const snapshot = newSessionState("a@x/r" as FullJid, "1024.ab.1");

test("a late take asks for a lent session back, and keeps a replica's copy", () => {
  const lender = { shard: 2048, sid: "2048.cd.7" };
  assert.deepEqual(lateTakeOf({ snapshot, lender }), { lender });
  assert.deepEqual(lateTakeOf({ snapshot, copyOf: { stream: "1024.ab.3", lsn: 9 } }), {
    adopt: { state: snapshot, stream: "1024.ab.3", lsn: 9 },
  });
  assert.equal(lateTakeOf({ snapshot }), undefined, "neither lent nor a copy: nothing to do");
});

test("any other late reply asks nothing and does not throw", () => {
  // A shard that held nothing answers undefined; kicks answer a count, BOSH a body.
  for (const value of [undefined, null, 3, "<body/>", true, { pending: true }, { expired: 2 }, []])
    assert.equal(lateTakeOf(value), undefined, JSON.stringify(value));
});
