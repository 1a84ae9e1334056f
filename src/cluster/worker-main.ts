/**
 * Entry of one worker thread (a shard): builds the shard context, hosts the actors (ActorHost)
 * of the partitions it owns and the sessions whose sockets it accepted, listens on the shared c2s
 * ports, and exposes its control surface to the supervisor over comlink.
 */
import { randomBytes } from "node:crypto";
import { createSecureContext } from "node:tls";
import { getHeapStatistics } from "node:v8";
import { type MessagePort, workerData } from "node:worker_threads";
import { bounceStanza } from "../../actors/bounce.ts";
import { loginActorKinds } from "../../actors/login-actor.ts";
import { askerOf, type WorkerMessage } from "../../actors/messages.ts";
import type { SessionOverview } from "../../actors/session-actor.ts";
import { userActorKind } from "../../actors/user-actor.ts";
import { Accounts } from "../auth/accounts.ts";
import { createAuthProvider } from "../auth/create-provider.ts";
import type { RegistrationThrottle } from "../auth/registration-throttle.ts";
import { expose, nodeEndpoint, type Remote, wrap } from "../comlink-setup.ts";
import type { Config } from "../config/defaults.ts";
import { applyReloadable } from "../config/runtime-config.ts";
import { createLogger } from "../log.ts";
import { connectStore } from "../storage/remote-store.ts";
import { terminateBody } from "../transport/bosh.ts";
import { type C2sListeners, startC2sListeners } from "../transport/tcp-listener.ts";
import { startWebListener, type WebListener } from "../transport/web-listener.ts";
import { type BareJid, splitFullJid } from "../xmpp/jid.ts";
import type { ClientTarget } from "../xmpp/stream-transport.ts";
import { ActorHost } from "./actor-host.ts";
import {
  adoptCopy,
  clientStreamHost,
  lateTakeOf,
  type ResumeTake,
  resendCopiesHeld,
  takeResumable,
} from "./client-stream-host.ts";
import type { Envelope } from "./envelope.ts";
import { type HandoffStats, type LiveNode, liveShardsOf, PartitionHandoff } from "./handoff.ts";
import { ReplicaCatchUp } from "./replica-catch-up.ts";
import { isMainShard, mainShardOf, nodeNoOf, type OwnerTable, shardNumber } from "./ring.ts";
import {
  batchLater,
  type PromotedCopy,
  placeReplicas,
  ReplicaHost,
  type ReplicaStats,
  ReplicaStream,
  ReplicaStreams,
  type ReplicationSender,
  referenceOf,
  shardOfPrefix,
  takeCopyForResume,
} from "./session-replicas.ts";
import type { ShardContext } from "./shard-context.ts";
import { ShardRouter } from "./shard-router.ts";
import type { NodeThrottles } from "./worker-pool.ts";

/** What the supervisor passes to a new worker. */
export interface WorkerInit {
  config: Config;
  /** Worker index within the node. */
  index: number;
  workers: number;
  /** The node's number in the cluster (0 for a single node). */
  nodeNo: number;
  /** The node's name in the cluster ("local" for a single node). */
  nodeName: string;
  /** The owner table to start with. */
  table: OwnerTable;
  /** To and from the main thread: batches for and from shards of other nodes. */
  uplinkPort: MessagePort;
  tls: { cert: string; key: string };
  version: string;
  storePort: MessagePort;
  controlPort: MessagePort;
  /** The node-wide {@link NodeThrottles} (registration), exposed by the supervisor. */
  throttlePort: MessagePort;
  /** A restart after a crash: the other workers re-register their sessions with this one. */
  recovering?: boolean;
  /** The nodes serving at the table (none before the node's first cluster table). */
  live?: LiveNode[];
}

/** Statistics one worker reports. */
export interface WorkerStats {
  index: number;
  connections: number;
  sessions: number;
  actors: number;
  logins: number;
  loginFailures: number;
  stanzasIn: number;
  stanzasOut: number;
  /** V8 heap in use by this worker's isolate. */
  heapUsedBytes: number;
  /** Stanzas sent to other nodes' actors and not yet accepted. */
  retained: number;
  /** The epoch of the owner table this worker routes by, and partitions still waiting for a handoff. */
  epoch: number;
  incomingPartitions: number;
  handoff: HandoffStats;
  /** Sessions of this worker streaming to replicas, and the copies it holds for others. */
  replicating: number;
  /** Replication lag of this worker's sessions (ReplicaStreams.lag). */
  replicationLag: { changes: number; stalledMs: number };
  replicas: ReplicaStats;
  /** Messages waiting in the actors' mailboxes, and the longest mailbox. */
  mailboxes: { queued: number; deepest: number };
}

/** The client-facing ports of a node (0: any free port; webPlain null: off). */
export interface ClientPorts {
  c2s: number;
  tls: number;
  web: number;
  webPlain: number | null;
}

/** The control calls the supervisor makes (comlink). */
export interface WorkerControl {
  listen(ports: ClientPorts): Promise<ClientPorts>;
  setPeerPort(shard: number, port: MessagePort): void;
  /**
   * A newer owner table; `live` are the nodes serving now. `promoted`: copies of sessions whose
   * owner died, promoted by the main thread's replica shard (main-replicas.ts), to become
   * detached sessions here once the table is applied. Resolves when our outgoing handoffs are sent.
   */
  setTable(table: OwnerTable, live: LiveNode[], promoted?: PromotedCopy[]): Promise<void>;
  /**
   * The serving members changed without a new table (WorkerPool.setLive); `died`, nodes that
   * died owning no partition, and `promoted`, the copies of their sessions this node's main
   * thread was heir to, for this worker to adopt.
   */
  setLive(live: LiveNode[], died?: number[], promoted?: PromotedCopy[]): void;
  /** Resolves once every partition this worker gained has been received (or given up on). */
  settled(): Promise<void>;
  /**
   * The link to node `nodeNo` lost what it held: re-send about `maxBytes` of what that node
   * had not accepted and round `round` has not re-sent yet; returns how many of it remain.
   */
  redrive(nodeNo: number, round: number, maxBytes: number): number;
  /**
   * The node is fenced: end every client stream now with <system-shutdown/> (the clients
   * reconnect to the nodes that own the partitions now), keep nothing for resumption here.
   */
  fence(): void;
  /**
   * Leaving the cluster: stop accepting clients, and close every client connection so that it
   * reconnects elsewhere — resumable sessions stay here, detached, for the resumption to take.
   * Clients are told where to go, spread over `targets` (`<see-other-host/>` on TCP, the web
   * transports' see-other-uri on WebSocket and BOSH); with none, `<system-shutdown/>`.
   */
  drain(targets: ClientTarget[]): void;
  /** Sessions still held (attached or detached). */
  sessionCount(): number;
  /** Ends every session of `user` wherever it is, not resumable; resolves how many there were. */
  kick(user: BareJid, reason: string): Promise<number>;
  /**
   * Applies a reloaded configuration's reloadable sections (src/config/runtime-config.ts) and,
   * when given, a new certificate for new connections.
   */
  reload(config: Config, credentials: { cert: string; key: string } | undefined): Promise<void>;
  /** Every session on every worker of the cluster that answers in time (of `user` only, when given). */
  sessions(user?: BareJid): Promise<SessionListing[]>;
  /**
   * Routes messages from the server to their users' actors; resolves how many were accepted
   * (delivered, stored or dropped as their type says) within twice the request timeout.
   */
  send(messages: ServerMessage[]): Promise<number>;
  /**
   * Worker `shard` (of this node or another) restarted (its sessions now have sids starting
   * `keepPrefix`): forget the sessions that died with it and re-register ours whose users it hosts.
   */
  /** Worker `shard` restarted: its incarnations `deadPrefixes` died, `keepPrefix` runs. */
  peerRestarted(shard: number, keepPrefix: string, deadPrefixes: string[]): void;
  /**
   * Copies of a crashed worker's sessions, promoted by the main thread's replica shard
   * (main-replicas.ts), to become detached sessions here awaiting `<resume/>`.
   */
  adopt(promoted: PromotedCopy[]): void;
  /** The prefix of this worker's session ids. */
  sidPrefix(): string;
  stats(): WorkerStats;
  stop(): Promise<void>;
  /** Resolves when this worker's actors have handled everything queued for them. */
  quiesce(): Promise<void>;
}

/** One session in an operator's listing: where it is, and what SessionActor.summary() says. */
export type SessionListing = SessionOverview & { node: string; worker: number };

/** A message the server sends to a user (an announcement, a site's notification). */
export interface ServerMessage {
  user: BareJid;
  from: string;
  to: string;
  id: string;
  type: string;
  xml: string;
  storable: boolean;
}

const init = workerData as WorkerInit;
const log = createLogger({ level: init.config.log.level, bindings: { worker: init.index } });
const store = connectStore(init.storePort);
const shard = shardNumber(init.nodeNo, init.index);
const router = new ShardRouter(shard, init.table, (envelope) => dispatch(envelope));
const actors = new ActorHost({
  log,
  accept: (ack) => router.accept(ack),
  maxMailbox: () => init.config.limits.maxMailboxSize,
});
let auth = createAuthProvider(init.config, store, log);
actors.define(
  userActorKind({ store, router, config: init.config, log, accountExists: (jid) => auth.userExists(jid) }),
);
const { limits } = init.config;
for (const kind of loginActorKinds({
  router,
  limits: () => ({
    failuresPerAddress: limits.loginFailuresPerAddress,
    failuresPerAccount: limits.loginFailuresPerAccount,
    failuresPerAccountAddress: limits.loginFailuresPerAccountAddress,
    windowMs: limits.loginFailureWindowMs,
    knownAddresses: limits.loginKnownAddresses,
    knownAddressTtlMs: limits.loginKnownAddressTtlMs,
  }),
  maxEntries: limits.loginThrottleMaxEntries,
}))
  actors.define(kind);
router.setUplink(init.uplinkPort);
init.uplinkPort.on("message", (wire: string) => router.receiveBatch(wire));
router.onDrop = (count) => log.warn({ count }, "held envelopes over the limit; dropped");
// A take that came after its resumption gave up waiting (a cut link held it): a lent session's
// holder gets it back at once; a replica's copy, taken out for good, becomes a detached session
// here, as if promoted, rather than be lost (the UserActor keeps the better registration).
router.onLateReply = (value) => {
  const late = lateTakeOf(value);
  if (late === undefined) return;
  if ("lender" in late) {
    const { shard, sid } = late.lender;
    router.send(shard, { t: "worker", msg: { kind: "resume-done", sid, ok: false } });
  } else {
    log.warn(
      { user: splitFullJid(late.adopt.state.full).bare },
      "a replica's late take kept here for resumption",
    );
    adoptCopies([late.adopt]);
  }
};
// Session ids carry this worker incarnation's prefix, so a restarted worker never reuses one.
const sidPrefix = `${shard}.${randomBytes(4).toString("hex")}.`;
let nextSidNumber = 1;
const throttles = wrap<NodeThrottles>(nodeEndpoint(init.throttlePort));
const ctx: ShardContext = {
  index: shard,
  localShards: Array.from({ length: init.workers }, (_, w) => shardNumber(init.nodeNo, w)),
  config: init.config,
  log,
  store,
  router,
  auth,
  // comlink types a nested object as a promise, but at run time it is a proxy whose methods are remote calls.
  registrationThrottle: throttles.registration as unknown as Remote<RegistrationThrottle>,
  tlsContext: createSecureContext({ cert: init.tls.cert, key: init.tls.key }),
  tlsCredentials: init.tls,
  // Asked at each change: a reload may replace the provider.
  accounts: new Accounts(store, () => ctx.auth.managesAccounts),
  sessions: new Map(),
  sidPrefix,
  nextSid: () => `${sidPrefix}${nextSidNumber++}`,
  resumable: new Map(),
  expiredResumable: new Map(),
  movedSids: new Map(),
  lent: new Map(),
  releasedCopies: new Map(),
  replication: {
    open(state, onAcked, origin) {
      if (init.config.cluster.replicationFactor <= 1) return undefined;
      const token = state.token;
      const id = `${sidPrefix}${nextStreamNo++}`;
      const stream = new ReplicaStream(
        replicationSender,
        token,
        id,
        replicasFor(),
        state,
        onAcked,
        Date.now,
        origin,
      );
      streams.add(stream, state);
      return {
        id,
        get soleReplica() {
          return stream.soleReplica;
        },
        push: (change) => stream.push(change),
        pushDeferred: (change) => stream.pushDeferred(change),
        hurry: () => stream.hurry(),
        get lsn() {
          return stream.lsn;
        },
        get ackedLsn() {
          return stream.ackedLsn;
        },
        resync() {
          for (const replica of stream.replicas) stream.reinit(replica, state);
        },
        get quiet() {
          return stream.quiet;
        },
        set quiet(value: boolean) {
          stream.quiet = value;
        },
        end() {
          stream.end();
          streams.remove(stream);
        },
      };
    },
  },
  counters: { connections: 0, logins: 0, loginFailures: 0, stanzasIn: 0, stanzasOut: 0 },
  version: init.version,
};
let listeners: C2sListeners | undefined;
let web: WebListener | undefined;
const replicaHost = new ReplicaHost(router, log, setImmediate, Date.now, (owner) =>
  router.isOnGoneNode(owner),
);
const replicationBatch =
  init.config.cluster.replicationBatchMs > 0 ? batchLater(init.config.cluster.replicationBatchMs) : undefined;
const replicationSender: ReplicationSender = {
  self: router.self,
  send: (to, envelope) => router.send(to, envelope),
  ...replicationBatch,
};
if (replicationBatch !== undefined) {
  // Deferred changes leave early, for free, with any batch this turn sends to their replicas'
  // node: riding a frame that goes anyway, they cost no frame (nor acknowledgement) of their own.
  let replicaTable: OwnerTable | undefined;
  let replicaNode: number | undefined;
  router.beforeFlush = (destinations) => {
    if (replicaTable !== router.table) {
      replicaTable = router.table;
      const [replica] = replicasFor();
      replicaNode = replica === undefined ? undefined : nodeNoOf(replica);
    }
    if (replicaNode === undefined || replicaNode === init.nodeNo) return;
    for (const dest of destinations) {
      if (nodeNoOf(dest) !== replicaNode) continue;
      replicationBatch.now();
      return;
    }
  };
}
/** This worker's replicated sessions by token, with their live state (for re-seating). */
const streams = new ReplicaStreams();
let nextStreamNo = 1;

/**
 * Replicas go to members that own partitions now: a leaving node loses its share in the epoch
 * that starts its drain, so copies move off it before it goes.
 */
function replicasFor(): number[] {
  return placeReplicas(shard, [...router.table.shardNos], init.config.cluster.replicationFactor);
}

/**
 * Chain replication (session-replicas.ts `ReplicaHost.chain`): with one replica per session, a
 * retained write to a session on another node goes through that session's replica when it is
 * another node's main thread. Computed from this worker's table, as the session's worker computes
 * its replicas; where the two differ (a table on its way), the replica holds no matching copy and
 * passes the write on as an ordinary one. A session on this node gets the write straight: through
 * the replica it would cross to that node and back, as an ordinary write's change and
 * acknowledgement do, and then tell the replica it wrote it. Cached per table.
 */
const chainReplicaOf = new Map<number, number | undefined>();
let chainTable: OwnerTable | undefined;
if (init.config.cluster.replicationFactor === 2 && init.config.cluster.chainWrites) {
  router.chainVia = (owner) => {
    if (chainTable !== router.table) {
      chainTable = router.table;
      chainReplicaOf.clear();
    }
    if (chainReplicaOf.has(owner)) return chainReplicaOf.get(owner);
    const [replica] = placeReplicas(owner, [...router.table.shardNos], 2);
    const via =
      replica !== undefined &&
      isMainShard(replica) &&
      nodeNoOf(replica) !== nodeNoOf(owner) &&
      nodeNoOf(owner) !== init.nodeNo
        ? replica
        : undefined;
    chainReplicaOf.set(owner, via);
    return via;
  };
}

/** Promoted replicas become detached sessions here, awaiting `<resume/>` (session-replicas.ts). */
function promoteCopiesOf(
  isDead: (shard: number) => boolean,
  ownerDied?: (owner: number, stream: string) => boolean,
): void {
  adoptCopies(replicaHost.promote(isDead, ownerDied));
}

/**
 * Copies promoted after their owner died (this worker's, or the main thread's handed over with
 * an owner table) become detached sessions here, awaiting `<resume/>`.
 */
function adoptCopies(promoted: readonly PromotedCopy[]): void {
  const deadNodes = router.goneNodes();
  let adopted = 0;
  for (const copy of promoted) if (adoptCopy(ctx, copy, deadNodes) !== undefined) adopted++;
  if (adopted > 0) log.info({ sessions: adopted }, "replicas promoted: sessions await resumption here");
}

/** Copies the main thread promoted with the table being applied (see WorkerControl.setTable). */
const handedOver: PromotedCopy[] = [];

/** After a change of live shards: replicas that died or moved are replaced. */
function reseatReplicas(): void {
  const isGone = (shard: number) => router.isOnGoneNode(shard);
  for (const { stream, state } of streams.values()) stream.reseat(replicasFor(), state, isGone);
}
const handoff = new PartitionHandoff({
  router,
  actors,
  sessions: ctx.sessions,
  log,
  timeoutMs: init.config.cluster.handoffTimeoutMs,
  tableApplied(deadNodes) {
    // Every node known dead, not only this table's: a copy whose heir died in an earlier table
    // (two nodes dying a moment apart) falls to the next replica now.
    if (deadNodes.size > 0) {
      // Copies taken by shards of dead nodes that had not confirmed come back to be promoted.
      replicaHost.restore((taker) => router.isOnGoneNode(shardOfPrefix(taker)));
      promoteCopiesOf((s) => router.isOnGoneNode(s));
    }
    adoptCopies(handedOver.splice(0));
    reseatReplicas();
  },
});

// Every live shard of the cluster tells a restarted worker about its sessions of the users it
// hosts: this node's workers when the pool restarts it, the other nodes' when they hear of it
// (worker-pool.ts announces the restart to their main threads).
if (init.live !== undefined && init.live.length > 0) router.setLiveShards(liveShardsOf(init.live));
if (init.recovering) handoff.awaitRecovery(router.liveShards().filter((s) => s !== shard));

/** Stanzas refused by a full mailbox on this worker (logged once per thousand). */
let mailboxRefusals = 0;

function dispatch(envelope: Envelope): void {
  switch (envelope.t) {
    case "actor": {
      const msg = envelope.msg;
      if (actors.deliver(envelope.key, msg, envelope.ack)) return;
      // One line per refusal would make a flood cost a log write per stanza on top.
      if (mailboxRefusals++ % 1000 === 0) {
        log.warn(
          { actor: envelope.key, kind: msg.kind, refused: mailboxRefusals },
          "mailbox full; message refused",
        );
      }
      // Refused is an answer too: the sender must not keep (and later re-send) it.
      if (envelope.ack !== undefined) router.accept(envelope.ack);
      // The sender learns it should retry later rather than have the stanza vanish.
      if (msg.kind === "stanza") bounceStanza(router, msg.stanza, "resource-constraint");
      else if ("reqId" in msg) {
        router.reply(askerOf(msg), msg.reqId, { ok: false, error: new Error("mailbox full") });
      }
      return;
    }
    case "session": {
      const msg = envelope.msg;
      const session = ctx.sessions.get(msg.sid);
      if (session !== undefined) return session.deliver(msg);
      if (msg.kind === "write") {
        // The session is gone without its UserActor knowing (a lost resume, a crash): say so,
        // and hand back what should not be lost.
        const user = splitFullJid(msg.full).bare;
        router.toUser({
          kind: "session-gone",
          user,
          session: { full: msg.full, shard, sid: msg.sid },
          xml: msg.xml,
          storable: msg.isMessage ?? false,
          ...(msg.dedupe === undefined ? {} : { dedupe: msg.dedupe }),
          ...(msg.accept === undefined ? {} : { accept: msg.accept }),
          ...(msg.at === undefined ? {} : { at: msg.at }),
          moved: ctx.movedSids.has(msg.sid),
          crashed: msg.sid.startsWith(`${shard}.`) && !msg.sid.startsWith(sidPrefix),
        });
      }
      return;
    }
    case "worker": {
      const msg = envelope.msg;
      if (msg.kind === "handoff") return handoff.receive(msg);
      if (msg.kind === "copy-held") return replicaHost.held(msg.token, msg.stream);
      if (msg.kind === "resume-done") {
        const lent = ctx.lent.get(msg.sid);
        if (msg.ok) lent?.confirmMoved();
        else lent?.restore();
        return;
      }
      if (msg.kind === "bosh") {
        const { toShard, reqId } = msg;
        const answered = web?.bosh.handle(msg.body, msg) ?? Promise.resolve(terminateBody("item-not-found"));
        void answered.then(
          (value) => router.reply(toShard, reqId, { ok: true, value }),
          (error: unknown) => router.reply(toShard, reqId, { ok: false, error }),
        );
        return;
      }
      if (msg.kind === "resume-refused") {
        const session = ctx.sessions.get(msg.sid);
        return router.reply(msg.toShard, msg.reqId, { ok: true, value: session?.endRefused() ?? false });
      }
      if (msg.kind === "sessions") {
        return router.reply(msg.toShard, msg.reqId, { ok: true, value: localSessions(msg.user) });
      }
      router.reply(msg.toShard, msg.reqId, { ok: true, value: resumeTake(msg) });
      return;
    }
    case "rep":
      return replicaHost.receive(envelope);
    case "rep-ack":
      return streams.acked(envelope.from, envelope.acks);
    case "rep-end":
      return replicaHost.end(envelope.token, envelope.owner, envelope.stream);
    case "chain":
      // Routers chain only through other nodes' main threads; pass it on as an ordinary write.
      return router.send(envelope.to, { t: "session", msg: envelope.msg });
    case "rep-live":
      replicaHost.audit(envelope.owner, envelope.prefix, envelope.live);
      return;
    case "reply":
    case "accepted":
      return;
  }
}

/**
 * Answers a `<resume/>` from any shard: the session if it is here (attached, detached or
 * promoted), or this shard's replica of it when its owner's node is dead (as this shard or the
 * asking one knows from a committed table), or "pending" while that is not known yet.
 */
/** This worker's sessions (of `user` only, when given), for an operator's listing. */
function localSessions(user: BareJid | undefined): SessionListing[] {
  const listing: SessionListing[] = [];
  for (const session of ctx.sessions.values()) {
    if (user !== undefined && session.bare !== user) continue;
    listing.push({ ...session.summary(), node: init.nodeName, worker: init.index });
  }
  return listing;
}

function resumeTake(msg: Extract<WorkerMessage, { kind: "resume-take" }>): ResumeTake {
  const here = takeResumable(ctx, msg.token, msg.h, msg.user);
  if (here !== undefined) return here;
  const gone = new Set([...router.goneNodes(), ...(msg.gone ?? [])]);
  const copy = takeCopyForResume(replicaHost, msg.token, msg.user, msg.h, gone, msg.taker);
  if (copy === undefined || copy === "pending") return copy === "pending" ? { pending: true } : undefined;
  log.info({ user: msg.user }, "replica taken over by a resumption: its owner's node is dead");
  return { snapshot: copy.state, copyOf: referenceOf(copy) };
}

// Passivate idle actors so memory follows the active user count, not the total.
const passivation = setInterval(() => {
  actors.passivateIdle(Date.now() - 60_000);
}, 30_000);
passivation.unref();

/** Copies on other nodes that fell behind, re-initialised in chunks (replica-catch-up.ts). */
const catchUp = new ReplicaCatchUp();
/** The re-drive round for which each node was last sent {@link catchUpReplicasOn}. */
const auditedRounds = new Map<number, number>();

/**
 * The link to node `nodeNo` dropped its queue (overflow) and is back. Its main thread holds
 * copies of our sessions: those the lost queue left behind get the whole state again, in the
 * re-drive's chunks (not after REPLICA_STALL_MS: sim seed 8470, the node died 150 ms after the
 * link came back, and the replica held nothing of a session resumed during the cut), and it
 * learns which of our streams still replicate there, so it drops the copies whose `rep-end` the
 * link lost (session-replicas.ts ReplicaHost.audit). Both go behind everything sent there before.
 */
function catchUpReplicasOn(nodeNo: number, round: number): void {
  const replica = mainShardOf(nodeNo);
  const live: number[] = [];
  catchUp.start(replica, round, streams.values(), Date.now());
  for (const { stream } of streams.values()) {
    if (stream.replicas.includes(replica) || stream.leaving.includes(replica))
      live.push(Number(stream.id.slice(sidPrefix.length)));
  }
  router.send(replica, { t: "rep-live", owner: router.self, prefix: sidPrefix, live });
  resendCopiesHeld(ctx, nodeNo);
}

/** A replica silent this long while behind gets the whole state again (see ReplicaStream.lagging). */
const REPLICA_STALL_MS = 3_000;
/**
 * What one tick of the retry timer re-sends at most to one replica as whole states: this worker's
 * share of a quarter of a peer link's budget, like a chunk of the re-drive.
 */
const STALL_REINIT_BYTES = Math.max(1, Math.floor(init.config.cluster.maxPeerBufferBytes / 4 / init.workers));

// Retained messages whose accept never came (a node died between hops) are sent again, and
// replicas that stopped acknowledging (a dropped queue, a gap) start again from the state.
const retry = setInterval(() => {
  const resent = router.retryRetained();
  if (resent > 0) log.warn({ resent }, "re-sent messages not accepted in time");
  const reinitialised = catchUp.stalled(streams.values(), REPLICA_STALL_MS, STALL_REINIT_BYTES, Date.now());
  if (reinitialised > 0)
    log.warn({ replicas: reinitialised }, "replicas silent while behind; sent the state again");
}, 1_000);
retry.unref();

const control: WorkerControl = {
  async listen(ports) {
    const host = clientStreamHost(ctx);
    listeners = await startC2sListeners(
      { host, config: ctx.config, log, tlsCredentials: ctx.tlsCredentials, tlsContext: ctx.tlsContext },
      ports,
    );
    web = await startWebListener(
      {
        host,
        config: ctx.config,
        log,
        tlsCredentials: ctx.tlsCredentials,
        connections: listeners.connections,
        shard,
        // Only to this node's workers: a session id naming another node's shard is not ours to
        // chase (a load balancer keeps a session's requests on its node).
        forwardBosh: (to, body, secure, remoteAddress) =>
          !ctx.localShards.includes(to)
            ? Promise.resolve(terminateBody("item-not-found"))
            : router.requestShard<string>(
                to,
                (reqId) => ({
                  t: "worker",
                  msg: { kind: "bosh", body, secure, remoteAddress, toShard: shard, reqId },
                }),
                // The holder answers within the session's wait (at most 60 s).
                75_000,
              ),
      },
      ports,
    );
    return { ...listeners.ports, ...web.ports };
  },
  setPeerPort(shard, port) {
    router.setPort(shard, port);
  },
  peerRestarted(restarted, keepPrefix, deadPrefixes) {
    // Sessions our actors still believe live on the restarted worker died with it.
    actors.shardLost(restarted, keepPrefix);
    // Copies of ours that its dead incarnation took for a resumption, unconfirmed, come back.
    replicaHost.restore((taker) => deadPrefixes.includes(taker));
    // Its sessions' copies here become sessions (first, so they are re-registered below), our
    // sessions' copies there are sent again, and it learns our sessions of the users it hosts.
    promoteCopiesOf(
      (s) => router.isOnGoneNode(s),
      (owner, stream) =>
        router.isOnGoneNode(owner) || (owner === restarted && !stream.startsWith(keepPrefix)),
    );
    for (const { stream, state } of streams.values()) stream.reinit(restarted, state);
    handoff.recoverFor(restarted);
  },
  setLive(live, died = [], promoted = []) {
    router.setLiveShards(liveShardsOf(live));
    handedOver.push(...promoted);
    handoff.nodesDied(new Set(died));
    // Adopted by tableApplied above when nodes died.
    adoptCopies(handedOver.splice(0));
  },
  setTable(table, live, promoted = []) {
    handedOver.push(...promoted);
    const applied = handoff.apply(table, live);
    // Applied in its synchronous part (tableApplied adopted them), unless the table was not new.
    adoptCopies(handedOver.splice(0));
    return applied;
  },
  settled() {
    return handoff.settled();
  },
  redrive(nodeNo, round, maxBytes) {
    if (auditedRounds.get(nodeNo) !== round) {
      auditedRounds.set(nodeNo, round);
      catchUpReplicasOn(nodeNo, round);
    }
    // Up to half the chunk for the copies' states, the rest for the retained messages.
    const states = catchUp.next(mainShardOf(nodeNo), Math.max(1, Math.floor(maxBytes / 2)), Date.now());
    const { resent, remaining } = router.redrive(nodeNo, round, Math.max(1, maxBytes - states.sent));
    if (resent > 0) log.warn({ nodeNo, resent, remaining }, "re-sent what a peer link dropped");
    return remaining + states.remaining;
  },
  fence() {
    void listeners?.close();
    void web?.close();
    for (const connection of listeners?.connections ?? []) {
      connection.closeWithError("system-shutdown", "this node was fenced; reconnect to the cluster");
    }
  },
  drain(targets) {
    // Stop accepting; the close resolves only when every connection is gone, which stop() awaits.
    void listeners?.close();
    void web?.close();
    // Spread over the members that stay, starting at this worker's index (the others start at theirs).
    let next = init.index;
    for (const connection of listeners?.connections ?? []) {
      const target = targets.length === 0 ? undefined : targets[next++ % targets.length];
      connection.moveAway(target);
    }
  },
  sessionCount() {
    return ctx.sessions.size;
  },
  kick(user, reason) {
    return router.requestUser<number>(
      (reqId) => ({ kind: "kick", user, reason, shard, reqId }),
      init.config.cluster.requestTimeoutMs,
    );
  },
  async reload(next, credentials) {
    const authChanged = JSON.stringify(init.config.auth) !== JSON.stringify(next.auth);
    applyReloadable(init.config, next);
    log.setLevel(next.log.level);
    if (authChanged) {
      // Logins from now on ask the new provider; one in flight finishes with the old one.
      const previous = auth;
      auth = createAuthProvider(init.config, store, log);
      ctx.auth = auth;
      await previous.close?.();
    }
    if (credentials !== undefined) {
      init.tls = credentials;
      ctx.tlsCredentials = credentials;
      ctx.tlsContext = createSecureContext(credentials);
      listeners?.setCredentials(credentials, ctx.tlsContext);
      web?.setCredentials(credentials);
    }
  },
  async sessions(user) {
    const timeoutMs = init.config.cluster.requestTimeoutMs;
    const shards = [...new Set(router.table.shardNos)];
    const answers = await Promise.allSettled(
      shards.map((to) =>
        router.requestShard<SessionListing[]>(
          to,
          (reqId) => ({
            t: "worker",
            msg: { kind: "sessions", ...(user === undefined ? {} : { user }), toShard: shard, reqId },
          }),
          timeoutMs,
        ),
      ),
    );
    const silent = shards.filter((_, i) => answers[i]!.status === "rejected");
    if (silent.length > 0) log.warn({ shards: silent }, "workers did not answer a session listing");
    return answers.flatMap((answer) => (answer.status === "fulfilled" ? answer.value : []));
  },
  send(messages) {
    return new Promise((resolve) => {
      let accepted = 0;
      let waiting = messages.length;
      if (waiting === 0) return resolve(0);
      const timer = setTimeout(() => resolve(accepted), 2 * init.config.cluster.requestTimeoutMs);
      timer.unref();
      for (const { user, from, to, id, type, xml, storable } of messages) {
        router.toUser(
          { kind: "stanza", user, stanza: { name: "message", type, from, to, id, xml, storable } },
          () => {
            accepted++;
            if (--waiting === 0) {
              clearTimeout(timer);
              resolve(accepted);
            }
          },
        );
      }
    });
  },
  adopt(promoted) {
    adoptCopies(promoted);
  },
  sidPrefix() {
    return sidPrefix;
  },
  stats() {
    return {
      index: init.index,
      connections: ctx.counters.connections,
      sessions: ctx.sessions.size,
      actors: actors.size,
      logins: ctx.counters.logins,
      loginFailures: ctx.counters.loginFailures,
      stanzasIn: ctx.counters.stanzasIn,
      stanzasOut: ctx.counters.stanzasOut,
      heapUsedBytes: getHeapStatistics().used_heap_size,
      retained: router.retainedCount,
      epoch: router.table.epoch,
      incomingPartitions: handoff.pending,
      handoff: { ...handoff.stats },
      replicating: streams.size,
      replicationLag: streams.lag(Date.now()),
      replicas: replicaHost.stats,
      mailboxes: actors.mailboxes(),
    };
  },
  async stop() {
    // Stop accepting first; a net server's close callback waits for every connection to end.
    const closed = Promise.all([listeners?.close(), web?.close()]);
    for (const connection of listeners?.connections ?? []) connection.shutdown();
    for (const session of ctx.resumable.values()) session.end();
    await closed;
    // The site's database sees its connections end rather than drop with the thread.
    await auth
      .close?.()
      .catch((error: unknown) => log.warn({ err: error }, "closing the auth provider failed"));
  },
  async quiesce() {
    // Let the router send this turn's batches, then wait for every mailbox to empty, so that a
    // graceful stop does not cut an offline write or a roster change in half.
    await new Promise((resolve) => setImmediate(resolve));
    await actors.quiesce();
  },
};

expose(control, nodeEndpoint(init.controlPort));
