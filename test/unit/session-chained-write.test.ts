/**
 * The owner's side of chain replication (actors/session-actor.ts `#writeChained`): a write its
 * only replica passed on is written to the client and accepted at once, and reported in a
 * deferred change; any other is refused by `unchain` and waits for the replicas like an ordinary
 * write. The replica's side is test/unit/chain-replication.test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { SessionMessage } from "../../actors/messages.ts";
import { SessionActor } from "../../actors/session-actor.ts";
import { type DeferrableChange, newSessionState, type SessionChange } from "../../actors/session-state.ts";
import type { ShardContext } from "../../src/cluster/shard-context.ts";
import { DEFAULT_CONFIG } from "../../src/config/defaults.ts";
import { createLogger } from "../../src/log.ts";
import type { FullJid } from "../../src/xmpp/jid.ts";
import type { ClientLink } from "../../src/xmpp/stream-host.ts";

const FULL = "bob@example.com/phone" as FullJid;
const REPLICA = 1023;

/** A live session with a socket, replicating to REPLICA through a stream the test controls. */
function liveSession() {
  const accepted: number[] = [];
  const written: string[] = [];
  const pushed: { change: SessionChange; deferred: boolean }[] = [];
  let lsn = 1;
  let ackedLsn = 1;
  let onAcked: (lsn: number) => void = () => {};
  let sid = 0;
  const ctx = {
    index: 0,
    config: DEFAULT_CONFIG,
    log: createLogger({ level: "silent" }),
    router: {
      toUser() {},
      accept: (ack: { rid: number }) => accepted.push(ack.rid),
      send() {},
      goneNodes: () => [],
    },
    sessions: new Map(),
    resumable: new Map(),
    expiredResumable: new Map(),
    movedSids: new Map(),
    lent: new Map(),
    releasedCopies: new Map(),
    nextSid: () => `0.x.${++sid}`,
    replication: {
      open(_state: unknown, acked: (lsn: number) => void) {
        onAcked = acked;
        return {
          id: "0.x.s1",
          soleReplica: REPLICA,
          push(change: SessionChange) {
            pushed.push({ change, deferred: false });
            return ++lsn;
          },
          pushDeferred(change: DeferrableChange) {
            pushed.push({ change, deferred: true });
            return ++lsn;
          },
          hurry() {},
          get lsn() {
            return lsn;
          },
          get ackedLsn() {
            return ackedLsn;
          },
          resync() {},
          quiet: false,
          end() {},
        };
      },
    },
  } as unknown as ShardContext;
  const link = {
    send: (text: string) => written.push(text),
    closeWithError() {},
  } as unknown as ClientLink;
  const session = new SessionActor(FULL, ctx, link, newSessionState(FULL, "0.token"));
  ctx.sessions.set(session.sid, session);
  const write = (n: number, seq: number, via = "h.1"): Extract<SessionMessage, { kind: "write" }> => ({
    kind: "write",
    full: FULL,
    sid: session.sid,
    xml: `<message id="m${n}"/>`,
    isMessage: true,
    dedupe: `k${n}`,
    accept: { shard: 5, rid: n },
    chain: { via, seq, replica: REPLICA, stream: "0.x.s1" },
  });
  return {
    session,
    accepted,
    written,
    pushed,
    write,
    /** The replicas hold everything pushed so far. */
    ackAll() {
      ackedLsn = lsn;
      onAcked(lsn);
    },
  };
}

test("the next write its only replica passed on is written and accepted at once, reported deferred", () => {
  const s = liveSession();
  s.session.deliver(s.write(1, 1));
  s.session.deliver(s.write(2, 2));
  assert.deepEqual(s.written, ['<message id="m1"/>', '<message id="m2"/>'], "on the socket, no round trip");
  assert.deepEqual(s.accepted, [1, 2], "its senders hear it is safe");
  assert.deepEqual(
    s.pushed.map(({ change, deferred }) => [
      change.c,
      deferred,
      "chain" in change ? change.chain : undefined,
    ]),
    [
      ["out", true, { via: "h.1", seq: 1 }],
      ["out", true, { via: "h.1", seq: 2 }],
    ],
  );
});

test("a write after a gap (one the replica passed on never came) waits for the replicas", () => {
  const s = liveSession();
  s.session.deliver(s.write(1, 1));
  s.session.deliver(s.write(3, 3)); // seq 2 was lost on the way, or went to another session
  assert.deepEqual(s.written, ['<message id="m1"/>'], "not on the socket before the replicas hold it");
  assert.deepEqual(s.accepted, [1]);
  assert.deepEqual(
    s.pushed.slice(1).map(({ change, deferred }) => [change.c, deferred]),
    [
      ["unchain", true],
      ["out", false],
    ],
    "the replica drops what it kept up to it (the lost one too) before the write counts",
  );
  s.ackAll();
  assert.deepEqual(s.written, ['<message id="m1"/>', '<message id="m3"/>']);
  assert.deepEqual(s.accepted, [1, 3]);
  // After the unchain, the replica's numbering goes on from 3.
  s.session.deliver(s.write(4, 4));
  assert.deepEqual(s.written.at(-1), '<message id="m4"/>');
  assert.deepEqual(s.accepted, [1, 3, 4]);
});

test("a write from another replica, or behind one that waits, goes the ordinary way", () => {
  const s = liveSession();
  s.session.deliver({ ...s.write(1, 1), chain: { via: "h.1", seq: 1, replica: 2047, stream: "0.x.s1" } });
  assert.deepEqual(s.written, [], "another replica than the session's");
  s.session.deliver(s.write(2, 2));
  assert.deepEqual(s.written, [], "behind a write that waits for the replicas");
  s.ackAll();
  assert.deepEqual(s.written, ['<message id="m1"/>', '<message id="m2"/>'], "in the order they came");
});

test("a re-sent copy the session wrote already is dropped, and accepted once the replicas hold it", () => {
  const s = liveSession();
  s.session.deliver(s.write(1, 1));
  s.session.deliver({ ...s.write(1, 2), accept: { shard: 5, rid: 11 } });
  assert.deepEqual(s.written, ['<message id="m1"/>'], "written once");
  assert.equal(s.pushed.at(-1)?.change.c, "unchain");
  s.ackAll();
  assert.deepEqual(s.accepted, [1, 11]);
});
