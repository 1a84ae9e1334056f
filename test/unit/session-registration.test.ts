/**
 * Which registration of a full JID a UserActor keeps (`relocate`), and how a session it refuses
 * ends (`stale`). The ghost case: a rep-end lost on a cut link leaves a copy that is promoted
 * after its owner's node dies, beside the session a client already resumed from that owner;
 * both carry the same move count (test/sim seed 1009 before the fix).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type {
  ActorRouter,
  SessionLocation,
  SessionMessage,
  SessionRegistration,
  UserMessage,
} from "../../actors/messages.ts";
import { SessionActor } from "../../actors/session-actor.ts";
import { newSessionState } from "../../actors/session-state.ts";
import { type UserActor, userActorKind, userKey } from "../../actors/user-actor.ts";
import { ActorHost } from "../../src/cluster/actor-host.ts";
import {
  adoptCopy,
  releaseCopy,
  resendCopiesHeld,
  takeResumable,
} from "../../src/cluster/client-stream-host.ts";
import { mainShardOf, nodeNoOf, shardNumber } from "../../src/cluster/ring.ts";
import type { ShardContext } from "../../src/cluster/shard-context.ts";
import { DEFAULT_CONFIG } from "../../src/config/defaults.ts";
import { createLogger } from "../../src/log.ts";
import type { Store } from "../../src/storage/store.ts";
import { type BareJid, bareOf, type FullJid, parseJid } from "../../src/xmpp/jid.ts";
import { parseElement } from "../../src/xmpp/stream-parser.ts";

const log = createLogger({ level: "silent" });
const USER = "alice@example.com" as BareJid;
const FULL = "alice@example.com/phone" as FullJid;

/** A UserActor in an actor host, with a router that records what it sends to sessions. */
function userActor() {
  const sent: { shard: number; msg: SessionMessage }[] = [];
  const router: ActorRouter = {
    toSession(shard, msg) {
      sent.push({ shard, msg });
    },
    toUser() {},
    reply() {},
    accept() {},
    goneNodes: () => [],
    nodeOf: nodeNoOf,
  };
  const store = {
    getRoster: async () => ({ items: [], version: 0 }),
    getBlocklist: async () => [],
  } as unknown as Store;
  const host = new ActorHost({ log, accept() {}, maxMailbox: () => 100 });
  host.define(userActorKind({ store, router, config: DEFAULT_CONFIG, log, accountExists: async () => true }));
  const key = userKey(USER);
  const relocate = async (shard: number, sid: string, state: Partial<SessionRegistration>) => {
    const session: SessionLocation = { full: FULL, shard, sid };
    const msg: UserMessage = {
      kind: "relocate",
      user: USER,
      session,
      state: {
        presence: undefined,
        priority: 0,
        carbons: false,
        rosterInterest: false,
        blocklistInterest: false,
        resumable: true,
        ...state,
      },
    };
    host.deliver(key, msg);
    await host.quiesce([key]);
  };
  const registered = () =>
    host
      .peek<UserActor>(key)
      ?.snapshot()
      .sessions.find(([full]) => full === FULL)?.[1].sid;
  const told = (kind: SessionMessage["kind"]) =>
    sent.filter((s) => s.msg.kind === kind).map((s) => s.msg.sid);
  const stale = () => told("stale");
  /** Nodes `nodeNos` died (handoff.ts tells every actor). */
  const nodesLost = async (nodeNos: number[]) => {
    host.nodesLost(nodeNos);
    await host.quiesce([key]);
  };
  return { relocate, registered, stale, told, nodesLost };
}

test("a copy promoted beside the session resumed from the same owner is told it is stale", async () => {
  const u = userActor();
  await u.relocate(1, "owner", { moves: 3 });
  await u.relocate(2, "resumed", { moves: 4 }); // take: +1
  await u.relocate(3, "ghost", { moves: 4, promoted: true }); // promotion: +1 over the dead owner
  assert.equal(u.registered(), "resumed");
  assert.deepEqual(u.stale(), ["owner", "ghost"]);
});

test("the resumed session wins even when the ghost registered first", async () => {
  const u = userActor();
  await u.relocate(3, "ghost", { moves: 4, promoted: true });
  await u.relocate(2, "resumed", { moves: 4 });
  assert.equal(u.registered(), "resumed");
  assert.deepEqual(u.stale(), ["ghost"]);
});

test("every legitimate re-registration still wins", async () => {
  const u = userActor();
  // <enable resume> after bind: the same sid, no moves yet.
  await u.relocate(1, "s1", {});
  assert.equal(u.registered(), "s1");
  // Re-registration after a worker restart (handoff recovery): the same sid, same count.
  await u.relocate(1, "s1", { moves: 0 });
  // A promotion after the owner died: one move more than the owner's count.
  await u.relocate(2, "p1", { moves: 1, promoted: true });
  assert.equal(u.registered(), "p1");
  // The promoted copy re-registered after its own worker restarted: same sid.
  await u.relocate(2, "p1", { moves: 1, promoted: true });
  // A client resumes it: one more.
  await u.relocate(3, "r1", { moves: 2 });
  assert.equal(u.registered(), "r1");
  assert.deepEqual(u.stale(), ["s1", "p1"]);
});

test("a copy promoted after the resumed session's node died too is its heir", async () => {
  const u = userActor();
  // Resumed on shard 4097 (node 4), which died before its new replicas held anything; the
  // copy of the session before the resumption (same move count once promoted) is all there is.
  await u.relocate(4097, "resumed", { moves: 1 });
  await u.relocate(1024, "heir", { moves: 1, promoted: true, deadNodes: [4] });
  assert.equal(u.registered(), "heir");
  await u.relocate(2048, "ghost", { moves: 1, promoted: true, deadNodes: [4] });
  assert.equal(u.registered(), "heir");
  assert.deepEqual(u.stale(), ["resumed", "ghost"]);
});

test("a late or equal registration from another session loses, and that session is told", async () => {
  const u = userActor();
  await u.relocate(1, "new", { moves: 5 });
  await u.relocate(2, "old", { moves: 4 });
  await u.relocate(3, "twin", { moves: 5 });
  await u.relocate(4, "twin-copy", { moves: 5, promoted: true });
  assert.equal(u.registered(), "new");
  assert.deepEqual(u.stale(), ["old", "twin", "twin-copy"]);
});

/** A detached session (its client gone, resumable) of FULL on `ctx`, token "7.token". */
function detachedSession(ctx: ShardContext): SessionActor {
  const session = new SessionActor(FULL, ctx, undefined, newSessionState(FULL, "7.token"));
  ctx.sessions.set(session.sid, session);
  session.detach();
  return session;
}

/** A ShardContext with only what a detached SessionActor uses. */
function shardContext() {
  const toUser: UserMessage[] = [];
  const sentTo: { shard: number; envelope: unknown }[] = [];
  let sid = 0;
  const ctx = {
    index: 7,
    config: DEFAULT_CONFIG,
    log,
    router: {
      toUser: (m: UserMessage) => toUser.push(m),
      accept() {},
      send: (shard: number, envelope: unknown) => sentTo.push({ shard, envelope }),
      goneNodes: () => [],
    },
    sessions: new Map(),
    resumable: new Map(),
    expiredResumable: new Map(),
    movedSids: new Map(),
    lent: new Map(),
    releasedCopies: new Map(),
    nextSid: () => `7.x.${++sid}`,
    replication: { open: () => undefined },
  } as unknown as ShardContext;
  return { ctx, toUser, sentTo };
}

test("a stale promoted session ends quietly and hands back only what it logged after promotion", () => {
  const { ctx, toUser } = shardContext();
  const state = newSessionState(FULL, "7.token");
  state.presence = "<presence/>";
  state.sentOut = 2;
  state.unacked = [
    [1, "<message id='inherited-1'/>", true],
    [2, "<message id='inherited-2'/>", true],
  ];
  const session = new SessionActor(FULL, ctx, undefined, state, { promoted: true });
  ctx.sessions.set(session.sid, session);
  session.detach();
  assert.equal(session.registration().promoted, true);
  session.write("<message id='after'/>", true);
  session.deliver({ kind: "stale", full: FULL, sid: session.sid });
  assert.equal(ctx.resumable.has("7.token"), false);
  assert.equal(ctx.sessions.has(session.sid), false);
  // No unbind, no unavailable presence, no store-offline of the inherited log.
  assert.deepEqual(
    toUser.map((m) => m.kind),
    ["session-gone"],
  );
  const gone = toUser[0] as Extract<UserMessage, { kind: "session-gone" }>;
  assert.equal(gone.xml, "<message id='after'/>");
  assert.equal(gone.storable, true);
  assert.equal(gone.session.sid, session.sid);
  // Ended: a later write or resumption finds nothing.
  session.write("<message id='later'/>", true);
  assert.equal(session.lendForResume(0), undefined);
  assert.equal(toUser.length, 1);
});

test("a promoted copy does not take the resumption id of a live session on the same shard", () => {
  const { ctx } = shardContext();
  const live = new SessionActor(FULL, ctx, undefined, newSessionState(FULL, "7.token"));
  const ghost = new SessionActor(FULL, ctx, undefined, newSessionState(FULL, "7.token"), { promoted: true });
  ghost.deliver({ kind: "stale", full: FULL, sid: ghost.sid });
  assert.equal(ctx.resumable.get("7.token"), live);
});

test("a session lent to a resumption ends quietly when the taker confirms", () => {
  const { ctx, toUser } = shardContext();
  const session = detachedSession(ctx);
  const snapshot = session.lendForResume(0);
  assert.ok(snapshot !== undefined && !("refused" in snapshot), "lent");
  assert.equal(snapshot.moves, 1, "a move");
  assert.equal(ctx.resumable.has("7.token"), false, "no second resumption while lent");
  assert.equal(ctx.lent.get(session.sid), session);
  assert.equal(session.lendForResume(0), undefined, "lent once");
  session.confirmMoved();
  assert.equal(ctx.lent.size, 0);
  session.restore();
  assert.equal(ctx.resumable.has("7.token"), false, "confirmed: it does not come back");
  assert.deepEqual(toUser, [], "no unbind, no offline storage");
});

test("a session lent to a resumption that never confirms is resumable again and registers as restored", () => {
  const { ctx, toUser } = shardContext();
  const session = detachedSession(ctx);
  assert.ok(session.lendForResume(0));
  session.restore(); // the taker gave up, or its timer ran out
  assert.equal(ctx.resumable.get("7.token"), session);
  assert.equal(ctx.sessions.get(session.sid), session);
  assert.equal(ctx.movedSids.has(session.sid), false, "writes come here again");
  const relocate = toUser.find((m) => m.kind === "relocate") as Extract<UserMessage, { kind: "relocate" }>;
  assert.equal(relocate?.state.restored, true);
  assert.ok(session.lendForResume(0), "and can be resumed again");
});

test("a restored session wins over the taker that died before confirming, not over a live one", async () => {
  const u = userActor();
  await u.relocate(4097, "taker", { moves: 2 });
  await u.relocate(1024, "lender", { moves: 1, restored: true, deadNodes: [] });
  assert.equal(u.registered(), "taker", "the taker is alive: the lender waits as its standby");
  await u.relocate(4097, "taker", { moves: 2 });
  await u.relocate(1024, "lender", { moves: 1, restored: true, deadNodes: [4] });
  assert.equal(u.registered(), "lender", "the taker's node died before it confirmed");
});

test("when a promoted session's node dies too, the next copy promoted at the same count takes over", async () => {
  const u = userActor();
  await u.relocate(2048, "first-heir", { moves: 1, promoted: true, deadNodes: [1] });
  await u.relocate(3072, "second-heir", { moves: 1, promoted: true, deadNodes: [1, 2] });
  assert.equal(u.registered(), "second-heir");
  assert.deepEqual(u.stale(), ["first-heir"]);
});

test("a resumption that finds the session lent to another one is told to ask again, not that it is unknown", () => {
  const { ctx } = shardContext();
  const session = detachedSession(ctx);
  assert.ok(session.lendForResume(0));
  assert.deepEqual(takeResumable(ctx, "7.token", 0, bareOf(parseJid(FULL)!)), { pending: true });
  assert.equal(takeResumable(ctx, "7.token", 0, "someone@else" as BareJid), undefined, "not to another user");
});

test("a dead registration gives way to whatever registers from a live shard, even with fewer moves", async () => {
  const u = userActor();
  // Resumed twice on node 2 while its replicas were cut off, then node 2 died: the copy from
  // before (one move, promoted) is all there is, and nothing the newer one did was acknowledged.
  await u.relocate(2048, "resumed-twice", { moves: 2 });
  await u.nodesLost([2]);
  await u.relocate(1024, "older-copy", { moves: 1, promoted: true, deadNodes: [2] });
  assert.equal(u.registered(), "older-copy", "sim seed 1028");
  // A client's resumption of an older copy, after the registered one's node died (sim seed 1909).
  const v = userActor();
  await v.relocate(1024, "resumed", { moves: 1 });
  await v.relocate(3072, "taken", { moves: 1, deadNodes: [1] });
  assert.equal(v.registered(), "taken");
});

test("of two promoted copies of one stream, the one that holds more wins, in either order", async () => {
  for (const order of [
    ["behind", "ahead"],
    ["ahead", "behind"],
  ] as const) {
    const u = userActor();
    const copy = {
      behind: { shard: 1024, lsn: 21 },
      ahead: { shard: 3072, lsn: 28 },
    };
    for (const name of order) {
      await u.relocate(copy[name].shard, name, {
        moves: 1,
        promoted: true,
        copyOf: { stream: "2048.1.1", lsn: copy[name].lsn },
        deadNodes: [2],
      });
    }
    assert.equal(u.registered(), "ahead", `registered ${order.join(" then ")}`);
    assert.deepEqual(u.stale(), ["behind"]);
  }
});

test("the same copy promoted again after its adopter's worker died wins, before the crash is heard of", async () => {
  const u = userActor();
  const copy = { moves: 1, promoted: true, copyOf: { stream: "1024.a.2", lsn: 9 }, deadNodes: [1] };
  await u.relocate(2048, "2048.w1.5", copy);
  // Worker 2048 crashed before its replicas held the session; the holder promoted the copy again
  // to worker 2049, whose registration comes before any notice of the crash (sim seed 32403).
  await u.relocate(2049, "2049.w2.8", { ...copy, replaces: "2048.w1." });
  assert.equal(u.registered(), "2049.w2.8");
  assert.deepEqual(u.stale(), ["2048.w1.5"]);
  // Another promotion of that copy, not naming the registered one as dead (a zombie node's own
  // promotion, sim seed 40065), loses at the same count and lsn.
  await u.relocate(3072, "3072.z.1", { ...copy, replaces: "2048.w1." });
  await u.relocate(3073, "3073.z.1", copy);
  assert.equal(u.registered(), "2049.w2.8");
  assert.deepEqual(u.stale(), ["2048.w1.5", "3072.z.1", "3073.z.1"]);
});

test("a lender restored while its taker lives waits as standby, and takes over when the taker's node dies", async () => {
  const u = userActor();
  await u.relocate(4097, "taker", { moves: 2 });
  await u.relocate(1024, "lender", { moves: 1, restored: true, deadNodes: [] });
  assert.equal(u.registered(), "taker");
  assert.deepEqual(u.stale(), [], "the lender is not told to end: the taker may be gone with the session");
  await u.relocate(4097, "taker", { moves: 2 }); // the taker re-registers (a recovery): no change
  assert.deepEqual(u.stale(), []);
  await u.nodesLost([4]);
  assert.equal(u.registered(), "lender", "sim seed 4494: the taker's replicas never held the session");
  assert.deepEqual(u.told("active"), ["lender"], "and it may be resumed again");
  // A standby is dropped when another session replaces the registration.
  const v = userActor();
  await v.relocate(4097, "taker", { moves: 2 });
  await v.relocate(1024, "lender", { moves: 1, restored: true });
  await v.relocate(2048, "moved-on", { moves: 3 });
  assert.deepEqual(v.stale(), ["taker", "lender"]);
});

test("a restored lender answers a resumption 'pending' until its actor says it is the registered session", () => {
  const { ctx } = shardContext();
  const session = detachedSession(ctx);
  assert.ok(session.lendForResume(0));
  session.restore();
  const user = bareOf(parseJid(FULL)!);
  assert.deepEqual(
    takeResumable(ctx, "7.token", 0, user),
    { pending: true },
    "sim seed 40: not while the taker may hold it",
  );
  session.deliver({ kind: "active", full: FULL, sid: session.sid });
  assert.ok("snapshot" in (takeResumable(ctx, "7.token", 0, user) ?? {}));
});

test("a session resumed from a snapshot never acknowledges fewer stanzas than it resumed with", () => {
  const { ctx } = shardContext();
  const replication = controlledReplication(ctx);
  const sent: string[] = [];
  const link = { send: (text: string) => sent.push(text), closeWithError() {} };
  const state = newSessionState(FULL, "7.token");
  state.handledIn = 5;
  const session = new SessionActor(FULL, ctx, link as never, state);
  replication.ack(1); // the new replicas hold the initial state
  session.handle(parseElement("<r xmlns='urn:xmpp:sm:3'/>"));
  assert.deepEqual(
    sent.filter((s) => s.startsWith("<a ")),
    ['<a xmlns="urn:xmpp:sm:3" h="5"/>'],
    "sim seed 3231: h went back to 0 until the client's next stanza",
  );
});

/** A replication stream whose acknowledgements the test gives (`ack(lsn)`). */
function controlledReplication(ctx: ShardContext) {
  let lsn = 1;
  let ackedLsn = 0;
  let onAcked: (lsn: number) => void = () => {};
  (ctx as { replication: ShardContext["replication"] }).replication = {
    open: (_state, acked) => {
      onAcked = acked;
      return {
        id: "stream-1",
        soleReplica: undefined,
        push: () => ++lsn,
        pushDeferred: () => ++lsn,
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
  };
  return {
    ack(upTo: number) {
      ackedLsn = upTo;
      onAcked(upTo);
    },
  };
}

test("a session made of a replica's copy releases it once its replicas hold it, once", () => {
  const { ctx } = shardContext();
  const replication = controlledReplication(ctx);
  let released = 0;
  const state = newSessionState(FULL, "7.token");
  const session = new SessionActor(FULL, ctx, undefined, state, {
    promoted: true,
    copyOf: { stream: "1024.a.1", lsn: 4 },
    releaseCopy: () => released++,
    replaces: "2048.w1.",
  });
  assert.equal(released, 0, "kept while no replica holds the session");
  assert.equal(session.registration().replaces, "2048.w1.", "it replaces the dead adopter's registration");
  replication.ack(1);
  assert.equal(released, 1);
  session.end();
  assert.equal(released, 1, "not again when it ends");
});

test("a session made of a copy that ends before its replicas hold it releases the copy then", () => {
  const { ctx } = shardContext();
  controlledReplication(ctx);
  let released = 0;
  const session = new SessionActor(FULL, ctx, undefined, newSessionState(FULL, "7.token"), {
    releaseCopy: () => released++,
  });
  session.end();
  assert.equal(released, 1, "an ended session's copy must not be promoted again later");
});

/** A copy of session "7.token" promoted from owner stream "1024.a.1", after `moves` moves. */
function promotedCopy(moves: number, sentOut: number) {
  const state = newSessionState(FULL, "7.token");
  state.moves = moves;
  state.sentOut = sentOut;
  return { state, stream: "1024.a.1", lsn: 9, holder: 4095 };
}

test("a copy promoted beside a live session resumed from its owner is a ghost: dropped, its holder told", () => {
  const { ctx, toUser, sentTo } = shardContext();
  const live = new SessionActor(FULL, ctx, undefined, { ...newSessionState(FULL, "7.token"), moves: 1 });
  ctx.sessions.set(live.sid, live);
  live.detach();
  toUser.length = 0;
  assert.equal(adoptCopy(ctx, promotedCopy(0, 3), []), undefined);
  assert.equal(ctx.resumable.get("7.token"), live, "a resumption still takes the live session");
  assert.equal(toUser.length, 0, "the ghost does not register");
  assert.deepEqual(
    sentTo.map(({ shard, envelope }) => [shard, (envelope as { msg: { kind: string } }).msg.kind]),
    [[4095, "copy-held"]],
    "its holder may drop the copy",
  );
});

test("a copy at the same move count as the session here is a ghost even if it wrote more: the UserActor keeps the session", () => {
  const { ctx } = shardContext();
  const live = new SessionActor(FULL, ctx, undefined, {
    ...newSessionState(FULL, "7.token"),
    moves: 1,
    sentOut: 3,
  });
  ctx.sessions.set(live.sid, live);
  live.detach();
  assert.equal(adoptCopy(ctx, promotedCopy(1, 7), []), undefined);
  assert.equal(ctx.resumable.get("7.token"), live);
});

test("a copy ahead of the session here (a restored lender whose taker went on) is adopted and taken first", () => {
  const { ctx, toUser } = shardContext();
  // The lender: lent at 3 stanzas, never confirmed, restored; its taker resumed twice more and
  // died, and this is its heir's copy (sim seed 36521).
  const lender = new SessionActor(FULL, ctx, undefined, { ...newSessionState(FULL, "7.token"), sentOut: 3 });
  ctx.sessions.set(lender.sid, lender);
  lender.detach();
  toUser.length = 0;
  const adopted = adoptCopy(ctx, promotedCopy(2, 7), [3]);
  assert.ok(adopted !== undefined, "the heir's copy is not dropped as a ghost");
  assert.equal(ctx.resumable.get("7.token"), adopted, "a resumption takes the copy, not the lender");
  const relocate = toUser.find((m) => m.kind === "relocate");
  assert.equal(relocate?.kind === "relocate" && relocate.state.promoted, true);
  assert.deepEqual(relocate?.kind === "relocate" && relocate.state.deadNodes, [3]);
  // The lender ends (its resumption window, say): the entry stays the adopted copy's.
  lender.end();
  assert.equal(ctx.resumable.get("7.token"), adopted);
  const snapshot = takeResumable(ctx, "7.token", 7, USER);
  assert.ok(snapshot !== undefined && "snapshot" in snapshot && snapshot.snapshot.sentOut === 7);
});

test("copies released to a node are confirmed again after its peer link dropped its queue, for 15 minutes", (t) => {
  const { ctx, sentTo } = shardContext();
  const onNode2 = mainShardOf(2);
  const onNode3 = shardNumber(3, 0);
  t.mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
  releaseCopy(ctx, "tok-a", { stream: "s1", holder: onNode2 });
  releaseCopy(ctx, "tok-b", { stream: "s2", holder: onNode3 });
  releaseCopy(ctx, "tok-c", { stream: "s3" }); // a copy nobody keeps: nothing to confirm
  assert.equal(sentTo.length, 2);
  sentTo.length = 0;
  assert.equal(resendCopiesHeld(ctx, 2), 1);
  assert.deepEqual(sentTo, [
    { shard: onNode2, envelope: { t: "worker", msg: { kind: "copy-held", token: "tok-a", stream: "s1" } } },
  ]);
  sentTo.length = 0;
  t.mock.timers.tick(15 * 60_000);
  assert.equal(resendCopiesHeld(ctx, 3), 0, "past 15 minutes the holder has forgotten the copy anyway");
  releaseCopy(ctx, "tok-d", { stream: "s4", holder: onNode3 });
  assert.deepEqual([...ctx.releasedCopies.keys()], ["tok-d s4"], "older ones are pruned as new ones come");
});

test("a resumed session that ends at its log limit before its replicas hold it settles what waited for them", () => {
  const { ctx, toUser } = shardContext();
  // Replicas that never answer: the state the resumption brought (change 1) is never acknowledged.
  let lsn = 1;
  const stream = {
    push: () => ++lsn,
    pushDeferred: () => ++lsn,
    hurry() {},
    get lsn() {
      return lsn;
    },
    ackedLsn: 0,
    resync() {},
    quiet: false,
    end() {},
  };
  const limits = { ...DEFAULT_CONFIG.limits, smMaxUnackedBytes: 1_000 };
  const context = {
    ...ctx,
    config: { ...DEFAULT_CONFIG, limits },
    replication: { open: () => stream },
  } as unknown as ShardContext;
  const state = newSessionState(FULL, "7.token");
  const session = new SessionActor(FULL, context, undefined, state);
  context.sessions.set(session.sid, session);
  session.detach();
  // As client-stream-host.ts resume() does for the lender it took the session from.
  let lenderAnswered = false;
  session.whenReplicated(() => {
    lenderAnswered = true;
  });
  assert.equal(lenderAnswered, false, "waits for the replicas");
  session.write(`<message><body>${"x".repeat(1_200)}</body></message>`, true);
  assert.equal(context.sessions.has(session.sid), false, "the session ended");
  assert.ok(context.expiredResumable.has("7.token"), "a late <resume/> gets <failed h/>");
  assert.ok(
    toUser.some((m) => m.kind === "store-offline"),
    "its log went to offline storage",
  );
  // Left waiting, the lender came back after its timeout as a ghost with the same log.
  assert.equal(lenderAnswered, true, "the lender is answered: the state is in storage");
});

test("writes held while binding that come after the one passing the log limit go where the log went", () => {
  const { ctx, toUser } = shardContext();
  const limits = { ...DEFAULT_CONFIG.limits, smMaxUnackedBytes: 1_000 };
  const context = { ...ctx, config: { ...DEFAULT_CONFIG, limits } } as unknown as ShardContext;
  // As XEP-0386 Bind 2 with XEP-0198 inline does: writes wait for the bind result.
  const session = new SessionActor(FULL, context, undefined, undefined, { hold: true });
  context.sessions.set(session.sid, session);
  session.enableSm(false);
  const big = `<message id='big'><body>${"x".repeat(1_200)}</body></message>`;
  session.write(big, true);
  session.write("<message id='after-1'><body>a</body></message>", true);
  session.write("<message id='after-2'><body>b</body></message>", true);
  session.release();
  const stored = toUser.flatMap((m) => (m.kind === "store-offline" ? m.stanzas : []));
  assert.deepEqual(
    stored.map((xml) => /id='([^']+)'/.exec(xml)?.[1]),
    ["big", "after-1", "after-2"],
    "nothing dropped",
  );
});
