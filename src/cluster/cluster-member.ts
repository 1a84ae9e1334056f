/**
 * This node's life as a cluster member, in the main thread: registration in PostgreSQL (the
 * arbiter of membership), the lease, peer links to every other member, failure suspicion,
 * the coordinator's assignment of partitions, applying each new epoch to the workers, leaving
 * gracefully, and fencing itself when it may no longer serve.
 *
 * Who decides what (CLUSTER.md):
 * - Membership changes are PostgreSQL transactions (MembershipStore); nodes learn them by
 *   NOTIFY, a poll, and never by gossip alone.
 * - The coordinator is the first `up` member by name; it writes a new assignment (epoch e+1)
 *   with compare-and-set on the view version, so a second coordinator with a stale view loses.
 * - A member whose links reset (its process is gone) is suspected after it stays unreachable
 *   for pingInterval + pingTimeout, or at once when a redial is refused (nothing listens on its
 *   peer port), and marked down when min(2, up - 1) members suspect it.
 *   A member that goes silent (pings unanswered, links still open) is taken over only when its
 *   lease has expired plus a margin: it may be a paused process that could still write.
 * - A node that learns it is down, or whose lease expired while it reaches neither PostgreSQL
 *   nor most of its peers, fences itself: it stops serving and exits.
 */
import { isIP } from "node:net";
import { hostname } from "node:os";
import type { Config } from "../config/defaults.ts";
import { XmppServerError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { ClientTarget } from "../xmpp/stream-transport.ts";
import type { LiveNode } from "./handoff.ts";
import { type Assignment, assignPartitions, shareOf } from "./membership/assignment.ts";
import {
  type ClusterView,
  type Member,
  type MembershipStore,
  SUSPICION_WINDOW_MS,
} from "./membership/membership-store.ts";
import { PeerNetwork, type PeerTlsOptions, type PeerTrust, probePeer } from "./peer/peer-network.ts";
import type { PeerIdentity } from "./peer/protocol.ts";
import { PEER_PROTOCOL_VERSION } from "./peer/protocol.ts";
import { clusterTable, nodeNoOf, type OwnerTable, RING_HASH, workerOf } from "./ring.ts";

/** How often the view is re-read even without a NOTIFY. */
const VIEW_POLL_MS = 5_000;
/** How long a stopping node waits for its peer links to deliver what is queued. */
const PEER_FLUSH_MS = 2_000;
/** Balancing moves per epoch (orphaned partitions of dead nodes always move). */
const MAX_MOVES_PER_ROUND = Number.POSITIVE_INFINITY;

/** What the member drives: the node's workers. */
export interface MemberWorkers {
  setTable(table: OwnerTable, live: LiveNode[]): Promise<void>;
  /**
   * The members that serve changed without a new table (a node joined and owns nothing yet, or
   * one that owned nothing left): the workers look for sessions there too. `died`: nodes that
   * died owning no partition, whose sessions' copies are promoted as at a table that drops a node.
   */
  setLive(live: LiveNode[], died?: readonly number[]): Promise<void>;
  /** Resolves once the workers have received every partition they gained (or gave up waiting). */
  settled(): Promise<void>;
  /** Re-sends about `maxBytes` the workers retained for node `nodeNo`; resolves with what remains. */
  redrive(nodeNo: number, round: number, maxBytes: number): Promise<number>;
  deliverRemote(worker: number, bytes: Uint8Array): void;
  drain(targets?: readonly ClientTarget[]): Promise<void>;
  sessionCount(): Promise<number>;
  /** Messages our workers sent to other nodes' actors and still keep, unaccepted. */
  retainedCount(): Promise<number>;
}

/** Peer-link messages between members' main threads. */
type PeerMessage =
  /** A batch of envelopes for shard `dest` (on the receiving node). */
  | { t: "b"; dest: number; bytes: Uint8Array }
  /** "Re-read the view": sent after each change we commit, so peers need not wait for NOTIFY. */
  | { t: "view"; version: number };

/** What `starling status` shows. */
export interface ClusterStatus {
  node: string;
  nodeNo: number;
  incarnation: number;
  state: MemberState;
  version: number;
  epoch: number;
  partitions: number;
  members: (Omit<Member, "suspicions"> & { partitions: number; linkUp: boolean; suspectedBy: string[] })[];
}

type MemberState = "starting" | "joining" | "up" | "leaving" | "left" | "fenced";

/** Options for {@link ClusterMember}. */
export interface ClusterMemberOptions {
  config: Readonly<Config>;
  log: Logger;
  membership: MembershipStore;
  workers: number;
  /** TLS of the peer links (peerTlsOf() in src/tls/certificate.ts); null: `cluster.plainLinks`. */
  peerTls: PeerTlsOptions | null;
  /** Called when the node must stop serving at once (fenced); the process should exit. */
  onFenced(reason: string): void;
}

/** This node as a member of the cluster. */
export class ClusterMember {
  readonly name: string;
  readonly incarnation = Date.now();
  nodeNo = 0;
  state: MemberState = "starting";
  readonly #options: ClusterMemberOptions;
  readonly #log: Logger;
  readonly #membership: MembershipStore;
  #peers!: PeerNetwork;
  #identity!: PeerIdentity;
  #view: ClusterView | undefined;
  #table: OwnerTable | undefined;
  /** The serving members (their node numbers, in view order) the workers last learned. */
  #liveKey = "";
  #workers: MemberWorkers | undefined;
  #leaseUntil = 0;
  readonly #timers: NodeJS.Timeout[] = [];
  #unlisten: (() => Promise<void>) | undefined;
  /** Batches refused because their sender had been declared down (for the log). */
  #droppedFromDown = 0;
  /** Peers whose link overflowed (dropping its queue) and has not come back yet. */
  readonly #overflowed = new Set<string>();
  /** Numbers the re-drives, so that each re-sends every retained message once. */
  #redriveRound = 0;
  /** The re-drive going on for each peer (a newer one replaces it). */
  readonly #redriving = new Map<string, number>();
  /** Peers whose silent link is being reported right now. */
  readonly #reportingSilence = new Set<string>();
  /** Peers whose outbound link is down, and why. */
  readonly #unreachable = new Map<string, { since: number; reason: string; incarnation: number }>();
  #refreshing: Promise<void> | undefined;
  #refreshAgain = false;
  #applying: Promise<void> = Promise.resolve();
  /** The latest epoch our workers have applied and fully received (reported to PostgreSQL). */
  #settledEpoch = 0;
  /** When the coordinator first saw the current epoch unsettled by some member (its patience). */
  #unsettledSince: { epoch: number; at: number } | undefined;
  /**
   * Since when this node's calls to PostgreSQL have succeeded without a failure (its start
   * counts). Leases are judged only after a whole lease window of that: members could not
   * renew while the arbiter was away, and their silence was the database's, not theirs.
   */
  #arbiterBackSince = Date.now();
  #arbiterAway = false;
  /** Batches for members whose link has not come up yet (a node that just joined), in order. */
  readonly #awaitingLink = new Map<string, { bytes: number; batches: PeerMessage[] }>();

  constructor(options: ClusterMemberOptions) {
    this.#options = options;
    this.#log = options.log;
    this.#membership = options.membership;
    this.name = options.config.cluster.node ?? hostname();
  }

  get #cluster() {
    return this.#options.config.cluster;
  }

  /** The current view (after start). */
  get view(): ClusterView | undefined {
    return this.#view;
  }

  /**
   * Registers, links to the other members, and waits until the node has a table to start its
   * workers with; returns that table. Call {@link activate} once the workers run.
   */
  async join(): Promise<OwnerTable> {
    const { config } = this.#options;
    const cluster = this.#cluster;
    this.#identity = {
      node: this.name,
      incarnation: this.incarnation,
      partitions: config.partitions,
      hash: RING_HASH,
      protocol: PEER_PROTOCOL_VERSION,
      peerAddr: `${cluster.peerHost ?? config.host}:${cluster.peerPort}`,
    };
    const { peerTls } = this.#options;
    if (peerTls === null) {
      this.#log.warn(
        "cluster.plainLinks is on: peer links are not encrypted, so every stanza between nodes crosses the network in clear; use it only on a network you trust",
      );
    }
    this.#peers = new PeerNetwork({
      self: this.#identity,
      secret: cluster.secret!,
      tls: peerTls,
      // The peer address others dial is also where this node listens for and dials from them
      // (a node given its own peer address keeps cluster traffic apart from client traffic).
      host: cluster.peerHost ?? config.host,
      localAddress: cluster.peerHost !== null && isIP(cluster.peerHost) !== 0 ? cluster.peerHost : "",
      port: cluster.peerPort,
      log: this.#log,
      pingIntervalMs: cluster.pingIntervalMs,
      pingTimeoutMs: cluster.pingTimeoutMs,
      maxUnackedBytes: cluster.maxPeerBufferBytes,
    });
    const port = await this.#peers.listen();
    if (cluster.peerPort === 0) this.#identity.peerAddr = `${cluster.peerHost ?? config.host}:${port}`;
    this.#peers.on("message", (node: string, message: unknown) =>
      this.#onPeerMessage(node, message as PeerMessage),
    );
    this.#peers.on("peer-up", (peer: PeerIdentity) => {
      this.#unreachable.delete(peer.node);
      this.#flushAwaitingLink(peer.node);
      if (this.#overflowed.delete(peer.node)) void this.#redrive(peer.node);
    });
    this.#peers.on("peer-down", (node: string, reason: string) => this.#onPeerDown(node, reason));

    if (cluster.join !== null) {
      // Fails the start with the seed's reason (wrong secret, incompatible ring) before we
      // write anything into the cluster's tables.
      const seed = await this.#probe(cluster.join, await this.#membership.read());
      this.#log.info({ seed: seed.node, addr: cluster.join }, "seed accepted us");
    }
    let view = await this.#membership.register(
      {
        node: this.name,
        incarnation: this.incarnation,
        peerAddr: this.#identity.peerAddr,
        workers: this.#options.workers,
        peerCertSha256: this.#peers.certSha256 ?? undefined,
      },
      { partitions: config.partitions, hash: RING_HASH },
      cluster.leaseMs,
    );
    this.#leaseUntil = Date.now() + cluster.leaseMs;
    this.nodeNo = view.members.find((m) => m.node === this.name)!.nodeNo;
    this.state = "joining";
    this.#log.info(
      { node: this.name, nodeNo: this.nodeNo, version: view.version },
      "registered in the cluster",
    );
    if (
      cluster.join !== null &&
      !view.members.some((m) => m.peerAddr === cluster.join && m.status !== "down")
    ) {
      this.#log.warn({ seed: cluster.join }, "the seed is not a live member of the cluster in our store");
    }

    if (view.assignment === null) {
      // The first node of a new cluster takes every partition.
      const first = assignPartitions(null, [this.name], config.partitions);
      view =
        (await this.#membership.commitAssignment(view.version, first)) ?? (await this.#membership.read());
    }
    this.#view = view;
    this.#connectPeers(view);
    this.#table = this.#tableOf(view);
    return this.#table;
  }

  /** The workers run: take envelopes from peers, become `up`, start the background loops. */
  async activate(workers: MemberWorkers, clientPorts?: { c2s: number; web: number }): Promise<void> {
    this.#workers = workers;
    await this.#awaitLinks(10_000);
    this.#view = await this.#membership.setStatus(this.name, this.incarnation, "up");
    const clientHost = this.#clientHost();
    if (clientHost !== undefined && clientPorts !== undefined) {
      const bracketed = isIP(clientHost) === 6 ? `[${clientHost}]` : clientHost;
      await this.#membership
        .advertise(
          this.name,
          this.incarnation,
          `${bracketed}:${clientPorts.c2s}`,
          // Behind a reverse proxy web clients come back through the proxy, which knows the live
          // nodes; only a node that web clients reach directly is named.
          (this.#options.config.web.behindProxy ?? this.#options.config.ports.webPlain !== null)
            ? undefined
            : `https://${bracketed}:${clientPorts.web}`,
        )
        .catch((error: unknown) => this.#log.warn({ err: error }, "could not advertise the client address"));
    }
    this.state = "up";
    // The workers started from this table with nothing to receive: it is settled.
    await this.#reportSettled(this.#table!.epoch);
    this.#broadcastView();
    this.#unlisten = await this.#membership.onChange(() => this.refresh());
    this.#every(this.#cluster.leaseRenewMs, () => this.#renewLease());
    this.#every(VIEW_POLL_MS, () => this.refresh());
    this.#every(500, () => this.#checkUnreachable());
    await this.refresh();
  }

  /** Sends a batch from one of our workers to its destination shard's node. */
  sendBatch(dest: number, bytes: Uint8Array): void {
    if (this.state === "fenced") return; // Nothing more leaves a fenced node.
    const node = this.#nodeName(nodeNoOf(dest));
    if (node === undefined) {
      this.#log.warn({ dest }, "batch for a shard of an unknown node; dropped");
      return;
    }
    if (this.#awaitingLink.has(node)) return this.#holdForLink(node, { t: "b", dest, bytes });
    if (this.#peers.send(node, { t: "b", dest, bytes })) return;
    const member = this.#view?.members.find((m) => m.node === node);
    if (member !== undefined && member.status !== "down") {
      // A member we have not linked to yet (it registered moments ago): its link is being
      // dialled, and what we send it now (a handoff, a bind) must not be lost meanwhile.
      this.#holdForLink(node, { t: "b", dest, bytes });
      return;
    }
    // A node that is gone: the retained stanzas are re-sent to the new owners.
    this.#log.debug({ node }, "no link for a batch; dropped");
  }

  #holdForLink(node: string, message: Extract<PeerMessage, { t: "b" }>): void {
    let held = this.#awaitingLink.get(node);
    if (held === undefined) {
      held = { bytes: 0, batches: [] };
      this.#awaitingLink.set(node, held);
    }
    if (held.bytes + message.bytes.byteLength > this.#cluster.maxPeerBufferBytes) {
      // Bounded like a link's own queue: past the budget the node is treated as unreachable.
      this.#log.warn({ node, bytes: held.bytes }, "peer link never came up; dropped what waited for it");
      this.#awaitingLink.delete(node);
      return;
    }
    held.bytes += message.bytes.byteLength;
    // The bytes were copied out of the worker's uplink string (batch-wire.ts): safe to keep.
    held.batches.push(message);
  }

  #flushAwaitingLink(node: string): void {
    const held = this.#awaitingLink.get(node);
    if (held === undefined) return;
    this.#awaitingLink.delete(node);
    for (const batch of held.batches) this.#peers.send(node, batch);
    this.#log.info({ node, batches: held.batches.length }, "peer link up; sent what waited for it");
  }

  #onPeerMessage(node: string, message: PeerMessage): void {
    if (message.t === "b") {
      if (nodeNoOf(message.dest) !== this.nodeNo || this.#workers === undefined) return;
      if (this.#view?.members.find((m) => m.node === node)?.status === "down") {
        // A node the cluster declared down is a zombie (it woke from a pause, or its cut
        // healed, before it learned it must stop): its partitions are others' now, and what it
        // sends must not be acted on. It fences itself at its next look at the membership.
        this.#droppedFromDown++;
        if (this.#droppedFromDown === 1 || this.#droppedFromDown % 1000 === 0) {
          this.#log.warn(
            { node, batches: this.#droppedFromDown },
            "dropped batches from a node declared down",
          );
        }
        return;
      }
      this.#workers.deliverRemote(workerOf(message.dest), message.bytes);
    } else if (message.t === "view") {
      if (this.#view === undefined || message.version > this.#view.version) void this.refresh();
    } else {
      this.#log.warn({ node }, "unknown peer message");
    }
  }

  #onPeerDown(node: string, reason: string): void {
    // The link dropped its queue: what it held is re-sent once the link is back. A re-drive cut
    // short by the link going down (for any reason) starts again then too: what it had not
    // re-sent yet, and the replicas it had not caught up, would wait for ever.
    if (reason === "overflow" || this.#redriving.has(node)) this.#overflowed.add(node);
    const known = this.#unreachable.get(node);
    if (known !== undefined) {
      // A link that reset and whose redial is refused: the process is gone, no need to wait.
      if (reason === "refused" && known.reason === "closed") {
        known.reason = "refused";
        this.#checkUnreachable();
      }
      return;
    }
    const incarnation = this.#view?.members.find((m) => m.node === node)?.incarnation ?? 0;
    this.#unreachable.set(node, { since: Date.now(), reason, incarnation });
  }

  /**
   * A link that reset and could not be re-established for pingInterval + pingTimeout means the
   * process is gone: report it (suspect). A link that went silent ("timeout": its pings
   * unanswered for pingTimeout) is reported as silent at once: silence alone is left to the
   * peer's lease (it may be paused), but a peer that reports silent links too is alive behind
   * a cut, and PostgreSQL then decides which side stays (MembershipStore.reportSilence).
   */
  #checkUnreachable(): void {
    const view = this.#view;
    if (view === undefined || this.state !== "up") return;
    const grace = this.#cluster.pingIntervalMs + this.#cluster.pingTimeoutMs;
    const up = view.members.filter(isServingMember);
    const votesNeeded = Math.max(1, Math.min(2, up.length - 1));
    for (const [node, { since, reason, incarnation }] of this.#unreachable) {
      if (reason === "timeout") {
        this.#reportSilent(view, node, incarnation, votesNeeded);
        continue;
      }
      // A refused redial is as good as an answer; a reset alone may be a restart in progress.
      if (Date.now() - since < (reason === "refused" ? 0 : grace)) continue;
      const member = view.members.find((m) => m.node === node);
      if (member === undefined || this.#peers.isUp(node)) continue;
      // A restarted node under the same name is a new member: what we knew of its old
      // incarnation says nothing about it (and a joining node is not linked to us yet).
      if (member.incarnation !== incarnation || !isServingMember(member)) {
        if (member.incarnation !== incarnation || member.status === "down") this.#unreachable.delete(node);
        continue;
      }
      if (member.suspicions[this.name] !== undefined) continue;
      this.#log.warn({ node, reason, votesNeeded }, "peer unreachable; suspecting it");
      void this.#membership
        .suspect(this.name, node, member.incarnation, votesNeeded)
        .then(async (next) => {
          const known = this.#view?.version ?? 0;
          await this.#adopt(next);
          // Ours may be the vote that marked it down: the coordinator (and everyone) hears of it
          // now, not at its next lease renewal (up to leaseRenewMs later: its partitions, and
          // every session waiting on them, would wait that long).
          if (next.version > known) this.#broadcastView();
        })
        .catch((error: unknown) => this.#log.warn({ err: error, node }, "could not record a suspicion"));
    }
  }

  #reportSilent(view: ClusterView, node: string, incarnation: number, votesNeeded: number): void {
    const member = view.members.find((m) => m.node === node);
    if (member === undefined || member.incarnation !== incarnation || this.#peers.isUp(node)) return;
    if (!isServingMember(member)) return;
    // Reported again while it lasts, so the report stays within the votes' window.
    const last = member.silencedBy[this.name] ?? 0;
    if (Date.now() - last < SUSPICION_WINDOW_MS / 2 || this.#reportingSilence.has(node)) return;
    this.#reportingSilence.add(node);
    this.#log.warn({ node, votesNeeded }, "peer link silent; reporting it");
    void this.#membership
      .reportSilence(this.name, node, incarnation, votesNeeded)
      .then((down) => {
        if (down.length > 0) this.#log.warn({ down }, "a member was cut off from the others; marked down");
        return this.refresh();
      })
      .catch((error: unknown) => this.#log.warn({ err: error, node }, "could not report a silent link"))
      .finally(() => this.#reportingSilence.delete(node));
  }

  /**
   * Re-sends what `node`'s link dropped when it overflowed, a quarter of the link's budget at a
   * time and only while the link has drained below that, so that the re-drive itself does not
   * overflow it again. Ends when all is re-sent, or when the link goes down again (the next
   * link-up starts a new round).
   */
  async #redrive(node: string): Promise<void> {
    const nodeNo = this.#view?.members.find((m) => m.node === node)?.nodeNo;
    if (nodeNo === undefined || this.#workers === undefined) return;
    const round = ++this.#redriveRound;
    this.#redriving.set(node, round);
    const chunk = Math.max(1, Math.floor(this.#cluster.maxPeerBufferBytes / 4));
    this.#log.info({ peer: node, round }, "re-sending what the peer link dropped");
    let remaining = -1;
    while (this.#peers.isUp(node) && this.#redriving.get(node) === round) {
      if (this.#peers.queuedBytes(node) > chunk) {
        await this.#pause(50);
        continue;
      }
      remaining = await this.#workers.redrive(nodeNo, round, chunk);
      if (remaining === 0) break;
      // Let the chunk reach the link (worker turn, then this thread) before measuring it.
      await this.#pause(20);
    }
    if (remaining !== 0 && !this.#peers.isUp(node) && this.#redriving.get(node) === round) {
      this.#log.info(
        { peer: node, round },
        "re-send cut short by the link going down; it starts again at link-up",
      );
    }
    if (this.#redriving.get(node) === round) this.#redriving.delete(node);
  }

  /** Re-reads the view and acts on it (coalesced: one read at a time, one more if asked meanwhile). */
  refresh(): Promise<void> {
    if (this.#refreshing !== undefined) {
      this.#refreshAgain = true;
      return this.#refreshing;
    }
    this.#refreshing = (async () => {
      try {
        do {
          this.#refreshAgain = false;
          const view = await this.#membership.read();
          this.#arbiterReached();
          await this.#adopt(view);
        } while (this.#refreshAgain);
      } catch (error) {
        this.#arbiterFailed();
        this.#log.warn({ err: error }, "could not read the cluster view");
      } finally {
        this.#refreshing = undefined;
      }
    })();
    return this.#refreshing;
  }

  /**
   * Reads the view once more, without waiting for it. #coordinate runs inside a refresh (or a
   * lease renewal that a refresh may be running beside), and a refresh that awaited the next one
   * waited for itself: a commit that lost its compare-and-set froze the member's refreshes and
   * lease renewals for good, and with them the cluster's membership (kill-two-of-five, 2026-12-06).
   */
  #readViewAgain(): void {
    void this.refresh();
  }

  async #adopt(view: ClusterView): Promise<void> {
    if (this.#view !== undefined && view.version < this.#view.version) return;
    this.#view = view;
    const me = view.members.find((m) => m.node === this.name);
    if (me === undefined || me.incarnation !== this.incarnation || me.status === "down") {
      if (this.state !== "left") this.#fence("the cluster declared this node down");
      return;
    }
    this.#connectPeers(view);
    // Before activation the workers are not running yet: they start from the table join()
    // returned, and activate() brings them to the newest one (a table adopted here would
    // be reported settled without any worker having applied it).
    if (this.#workers === undefined) return;
    const live = this.#liveNodes(view);
    const liveKey = live.map((n) => n.nodeNo).join(",");
    const died = this.#diedSince(view, live);
    if (this.#table === undefined || (view.assignment !== null && view.epoch > this.#table.epoch)) {
      const prev = this.#table;
      const table = this.#tableOf(view);
      this.#table = table;
      this.#liveKey = liveKey;
      // The table's own dead nodes are those that owned partitions in the previous one; a node
      // that died owning none is handled as without a table, once this table is applied.
      const neverOwners = died.filter((n) => !inTable(prev, n) && !inTable(table, n));
      this.#applying = this.#applying.then(() => this.#workers?.setTable(table, live));
      await this.#applying;
      void this.#settle(table.epoch);
      this.#diedOwningNothing(neverOwners);
    } else if (liveKey !== this.#liveKey) {
      // A node that joined serves clients before a table gives it partitions (the cluster may not
      // be settled for a while): a resumption elsewhere must find its sessions (sim seed 16338).
      // If it dies before a table gives it any, no table says so: its sessions' copies are
      // promoted and its registrations lost here.
      this.#liveKey = liveKey;
      // A node the table names is dropped by a later table (handoff.ts deadNodesOf).
      const table = this.#table;
      const neverOwners = died.filter((n) => !inTable(table, n));
      this.#applying = this.#applying.then(() => this.#workers?.setLive(live));
      await this.#applying;
      this.#diedOwningNothing(neverOwners);
    }
    for (const node of this.#awaitingLink.keys()) {
      const member = view.members.find((m) => m.node === node);
      if (member === undefined || member.status === "down") this.#awaitingLink.delete(node);
    }
    await this.#coordinate(view);
  }

  /** Waits until the workers have received what `epoch` gave them, then reports it. */
  async #settle(epoch: number): Promise<void> {
    await this.#workers?.settled();
    if (this.#table?.epoch !== epoch) return; // A newer table: its own settle reports.
    await this.#reportSettled(epoch);
  }

  /** Records in PostgreSQL that this node settled `epoch`; retried by the lease loop on failure. */
  async #reportSettled(epoch: number): Promise<void> {
    this.#settledEpoch = Math.max(this.#settledEpoch, epoch);
    try {
      await this.#membership.reportSettled(this.name, this.incarnation, epoch);
    } catch (error) {
      this.#log.warn({ err: error, epoch }, "could not report the settled epoch; will retry");
    }
  }

  /**
   * Whether every serving member has settled the current epoch, so partitions may move again.
   * A member that moves on before it holds everything it gained would hand off a partition
   * without the state still on its way to it, or skip an epoch and wait for a handoff from the
   * wrong node. The wait is bounded: a member that does not report (an older release, a
   * wedged process the lease will catch) holds the cluster back for one handoff timeout.
   */
  #allSettled(view: ClusterView): boolean {
    const lagging = view.members.filter((m) => isServingMember(m) && m.settledEpoch < view.epoch);
    if (lagging.length === 0) {
      this.#unsettledSince = undefined;
      return true;
    }
    const now = Date.now();
    if (this.#unsettledSince?.epoch !== view.epoch) this.#unsettledSince = { epoch: view.epoch, at: now };
    const patience = this.#cluster.handoffTimeoutMs + this.#cluster.leaseRenewMs;
    if (now - this.#unsettledSince.at < patience) {
      this.#log.debug(
        { epoch: view.epoch, lagging: lagging.map((m) => m.node) },
        "waiting for members to settle",
      );
      return false;
    }
    this.#log.warn(
      { epoch: view.epoch, lagging: lagging.map((m) => m.node), waitedMs: now - this.#unsettledSince.at },
      "members did not report the epoch settled; moving partitions anyway",
    );
    return true;
  }

  /** The coordinator (first `up` member by name) keeps the assignment equal to the `up` set. */
  async #coordinate(view: ClusterView): Promise<void> {
    const up = view.members.filter((m) => m.status === "up").map((m) => m.node);
    if (up[0] !== this.name || this.state !== "up") return;
    const expired = await this.#expireLeases(view);
    if (expired.length > 0) {
      this.#log.warn({ nodes: expired }, "members' leases expired; marked down");
      return this.#readViewAgain();
    }
    const current = view.assignment;
    const owners = current === null ? [] : [...current.nodes].sort();
    if (owners.length === up.length && owners.every((n, i) => n === up[i])) return;
    // Partitions of a node that is gone move at once (nobody can hand them off); any other move
    // waits until the previous one has settled everywhere.
    const orphaned = current?.nodes.some((n) => !up.includes(n) && !isServing(view, n)) ?? false;
    if (!orphaned && !this.#allSettled(view)) return;
    const next = assignPartitions(current, up, view.partitions, MAX_MOVES_PER_ROUND);
    const committed = await this.#membership.commitAssignment(view.version, next);
    if (committed === null) {
      // Another member wrote since our read (a vote, a settled epoch): decide on the new view.
      this.#log.debug({ version: view.version }, "assignment commit lost a race; reading the view again");
      return this.#readViewAgain();
    }
    this.#log.info({ epoch: committed.epoch, nodes: up, share: shareOf(next) }, "new partition assignment");
    this.#broadcastView();
    await this.#adopt(committed);
  }

  /**
   * Marks down the members whose lease has run out, judged fairly: never this node; never a
   * member whose peer link answers our pings (direct evidence of life, whatever PostgreSQL
   * says); and nobody until this node has reached PostgreSQL for a whole lease window since it
   * last could not, so that every member had the chance to renew after an outage.
   */
  async #expireLeases(view: ClusterView): Promise<string[]> {
    const window = this.#cluster.leaseMs + this.#cluster.takeoverMarginMs;
    if (this.#arbiterAway || Date.now() - this.#arbiterBackSince < window) return [];
    const spare = [this.name, ...view.members.filter((m) => this.#peers.isUp(m.node)).map((m) => m.node)];
    return this.#membership.expireLeases(this.#cluster.takeoverMarginMs, spare);
  }

  #arbiterReached(): void {
    if (!this.#arbiterAway) return;
    this.#arbiterAway = false;
    this.#arbiterBackSince = Date.now();
    this.#log.info(
      { windowMs: this.#cluster.leaseMs + this.#cluster.takeoverMarginMs },
      "PostgreSQL reachable again; members' leases are judged again after a fresh window",
    );
  }

  #arbiterFailed(): void {
    if (this.#arbiterAway) return;
    this.#arbiterAway = true;
    this.#log.warn("PostgreSQL unreachable: membership is frozen until it answers again");
  }

  async #renewLease(): Promise<void> {
    try {
      const { ok, view } = await this.#membership.renewLease(
        this.name,
        this.incarnation,
        this.#cluster.leaseMs,
      );
      this.#arbiterReached();
      if (!ok) return this.#fence("lease renewal refused: this node was declared down");
      this.#leaseUntil = Date.now() + this.#cluster.leaseMs;
      const me = view.members.find((m) => m.node === this.name);
      if (me !== undefined && me.settledEpoch < this.#settledEpoch)
        await this.#reportSettled(this.#settledEpoch);
      await this.#adopt(view);
    } catch (error) {
      this.#arbiterFailed();
      this.#log.warn({ err: error }, "lease renewal failed");
      if (Date.now() < this.#leaseUntil) return;
      // Membership is frozen while PostgreSQL is away; only a node cut off from most of its
      // peers as well must assume the others have moved on without it.
      const others = (this.#view?.members ?? []).filter((m) => m.node !== this.name && m.status === "up");
      const reachable = others.filter((m) => this.#peers.isUp(m.node)).length;
      if (reachable < Math.floor(others.length / 2) + 1 && others.length > 0) {
        this.#fence("lease expired and neither PostgreSQL nor most peers are reachable");
      }
    }
  }

  /**
   * `starling join HOST:PORT` against this running node: checks the node at `seed` (secret,
   * ring) and that it belongs to the same cluster. Membership lives in PostgreSQL, so a node
   * started in cluster mode is already a member of the cluster in its store; two clusters on
   * different databases cannot be merged (their accounts differ), and that is said clearly.
   */
  async checkSeed(seed: string): Promise<{ seed: string; members: string[] }> {
    await this.refresh();
    const remote = await this.#probe(seed, this.#view);
    const members = (this.#view?.members ?? []).filter((m) => m.status !== "down");
    if (!members.some((m) => m.node === remote.node && m.incarnation === remote.incarnation)) {
      throw new XmppServerError(
        "XSRV_CLUSTER_STALE",
        `${seed} (node "${remote.node}") is not a member of this node's cluster: they use different PostgreSQL databases; restart this node with that cluster's --store and --join ${seed}`,
      );
    }
    return { seed: remote.node, members: members.map((m) => m.node) };
  }

  /** Leaves the cluster: hands off every partition, sends clients elsewhere, then marks itself down. */
  async leave(): Promise<void> {
    if (this.state !== "up")
      throw new XmppServerError("XSRV_CLUSTER_STALE", `cannot leave while ${this.state}`);
    this.state = "leaving";
    this.#log.info("leaving the cluster");
    this.#view = await this.#membership.setStatus(this.name, this.incarnation, "leaving");
    this.#broadcastView();
    // The coordinator (perhaps us, if we were first) assigns our partitions to the others.
    const deadline = Date.now() + this.#cluster.handoffTimeoutMs;
    while (Date.now() < deadline) {
      await this.refresh();
      const view = this.#view!;
      if (view.assignment !== null && !view.assignment.nodes.includes(this.name)) break;
      if (view.members.filter((m) => m.status === "up").length === 0) {
        throw new XmppServerError("XSRV_CLUSTER_STALE", "no other member is up to take the partitions");
      }
      await this.#pause(1_000);
    }
    await this.#applying;
    // Clients are sent to the members that stay (RFC 6120 §4.9.3.19), spread over them; with
    // none known, DNS tells them where to go.
    const stays = (this.#view?.members ?? []).flatMap((m): ClientTarget[] =>
      m.status === "up" && m.clientAddr !== undefined
        ? [{ host: m.clientAddr, ...(m.clientWeb === undefined ? {} : { web: m.clientWeb }) }]
        : [],
    );
    this.#log.info({ targets: stays }, "sending clients elsewhere");
    await this.#workers?.drain(stays);
    const drainDeadline = Date.now() + this.#cluster.drainTimeoutMs;
    while (Date.now() < drainDeadline && ((await this.#workers?.sessionCount()) ?? 0) > 0) {
      await this.#pause(200);
    }
    // What our clients sent must reach the other nodes' actors before we go: wait until every
    // retained message has been accepted.
    const settleDeadline = Date.now() + this.#cluster.drainTimeoutMs;
    while (Date.now() < settleDeadline && ((await this.#workers?.retainedCount()) ?? 0) > 0) {
      await this.#pause(100);
    }
    this.state = "left";
  }

  /** Marks this node down after its workers stopped, and closes links and timers. */
  async close(): Promise<void> {
    for (const timer of this.#timers) clearInterval(timer);
    await this.#unlisten?.().catch(() => {});
    if (this.state === "left" || this.state === "up" || this.state === "leaving") {
      await this.#membership
        .setStatus(this.name, this.incarnation, "down")
        .then(() => this.#broadcastView())
        .catch((error: unknown) => this.#log.warn({ err: error }, "could not mark this node down"));
    }
    // Let the links deliver what the stopping workers sent last (unbinds, offline stores).
    const flushDeadline = Date.now() + PEER_FLUSH_MS;
    while (this.#peers !== undefined && Date.now() < flushDeadline) {
      if (this.#peers.peers().every((peer) => this.#peers.queuedBytes(peer.node) === 0)) break;
      await this.#pause(50);
    }
    await this.#peers?.close();
  }

  /** The cluster as `starling status` shows it. */
  status(): ClusterStatus {
    const view = this.#view;
    const share = view?.assignment ? shareOf(view.assignment) : {};
    return {
      node: this.name,
      nodeNo: this.nodeNo,
      incarnation: this.incarnation,
      state: this.state,
      version: view?.version ?? 0,
      epoch: view?.epoch ?? 0,
      partitions: view?.partitions ?? this.#options.config.partitions,
      members: (view?.members ?? []).map(({ suspicions, ...member }) => ({
        ...member,
        partitions: share[member.node] ?? 0,
        linkUp: member.node === this.name || (this.#peers?.isUp(member.node) ?? false),
        suspectedBy: Object.keys(suspicions),
      })),
    };
  }

  #fence(reason: string): void {
    if (this.state === "fenced") return;
    this.state = "fenced";
    this.#log.fatal({ reason }, "fencing this node: it stops serving");
    for (const timer of this.#timers) clearInterval(timer);
    this.#options.onFenced(reason);
  }

  #tableOf(view: ClusterView): OwnerTable {
    const assignment = view.assignment as Assignment;
    const byName = new Map(view.members.map((m) => [m.node, m]));
    return clusterTable({
      epoch: view.epoch,
      partitions: view.partitions,
      nodes: assignment.nodes.map((name) => {
        const member = byName.get(name);
        // An owner's row is only deleted long after it stopped owning anything.
        return { name, nodeNo: member?.nodeNo ?? 0, workers: member?.workers ?? 1 };
      }),
      ownerNodes: assignment.owners,
    });
  }

  /** The host clients reach this node at, or undefined when only a wildcard is known. */
  #clientHost(): string | undefined {
    const cluster = this.#cluster;
    const wildcard = (h: string | null) => h === null || h === "0.0.0.0" || h === "::" || h === "";
    const listen = this.#options.config.host;
    // Where the client listener is bound, unless that is every address: then the peer address.
    const host = cluster.clientHost ?? (wildcard(listen) ? cluster.peerHost : listen);
    return host === null || wildcard(host) ? undefined : host;
  }

  /**
   * Nodes `nodeNos` died owning no partition: once each has closed its links to us (at once for
   * a crashed node; a node that stops or leaves marks itself down first and then flushes its
   * links, so the rep-ends of the sessions it ended arrive before their copies could be
   * promoted; at most PEER_FLUSH_MS and a second later), the workers handle them as a table's
   * dead nodes (WorkerPool.setLive with `died`).
   */
  #diedOwningNothing(nodeNos: readonly number[]): void {
    if (nodeNos.length === 0) return;
    void (async () => {
      const deadline = Date.now() + PEER_FLUSH_MS + 1_000;
      const linked = () =>
        nodeNos.some((n) => {
          const name = this.#nodeName(n);
          return name !== undefined && this.#peers.hasInboundFrom(name);
        });
      while (linked() && Date.now() < deadline) await this.#pause(50);
      this.#applying = this.#applying.then(() => {
        const view = this.#view;
        if (view === undefined) return;
        const live = this.#liveNodes(view);
        // One back under its name meanwhile serves again: it is not marked dead (its previous
        // incarnation's sessions' copies stay unpromoted; their clients log in again).
        const dead = nodeNos.filter((n) => !live.some((l) => l.nodeNo === n));
        return dead.length === 0 ? undefined : this.#workers?.setLive(live, dead);
      });
      await this.#applying;
    })().catch((error: unknown) =>
      this.#log.error({ err: error, nodes: nodeNos }, "could not hand over the sessions of nodes that died"),
    );
  }

  /**
   * The nodes that served when this member last applied the serving set and are declared down
   * now: they died, or stopped, or left (a leaving node marks itself down once drained).
   */
  #diedSince(view: ClusterView, live: readonly LiveNode[]): number[] {
    const before = this.#liveKey === "" ? [] : this.#liveKey.split(",").map(Number);
    const now = new Set(live.map((n) => n.nodeNo));
    return before.filter((n) => !now.has(n) && view.members.find((m) => m.nodeNo === n)?.status === "down");
  }

  #liveNodes(view: ClusterView): LiveNode[] {
    return view.members
      .filter((m) => m.status !== "down")
      .map((m) => ({ nodeNo: m.nodeNo, workers: m.workers }));
  }

  #nodeName(nodeNo: number): string | undefined {
    return this.#view?.members.find((m) => m.nodeNo === nodeNo)?.node;
  }

  #connectPeers(view: ClusterView): void {
    for (const member of view.members) {
      if (member.node === this.name) continue;
      if (member.status === "down") this.#peers.disconnect(member.node);
      else this.#peers.connect(member.peerAddr, trustOf(member));
    }
  }

  /**
   * One handshake with the node at `addr`, trusting the certificate its member row in `view`
   * pins. A node absent from our store has no pin: without a CA to verify it by, it cannot be
   * shown to be a member of this cluster (XSRV_CLUSTER_STALE), and it is not dialled.
   */
  #probe(addr: string, view: ClusterView | undefined): Promise<PeerIdentity> {
    const { peerTls } = this.#options;
    const member = view?.members.find((m) => m.peerAddr === addr && m.status !== "down");
    if (member === undefined && peerTls !== null && peerTls.ca === undefined) {
      return Promise.reject(
        new XmppServerError(
          "XSRV_CLUSTER_STALE",
          `${addr} is not a live member in this node's PostgreSQL store, so no certificate fingerprint is pinned for it: start that node with this cluster's --store, or set cluster.tls.caFile`,
        ),
      );
    }
    return probePeer(addr, {
      self: this.#identity,
      secret: this.#cluster.secret!,
      tls: peerTls,
      ...(member === undefined ? {} : { trust: trustOf(member) }),
    });
  }

  #broadcastView(): void {
    const version = this.#view?.version ?? 0;
    for (const peer of this.#peers.peers()) this.#peers.send(peer.node, { t: "view", version });
  }

  async #awaitLinks(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const others = () =>
      (this.#view?.members ?? []).filter((m) => m.node !== this.name && m.status === "up").map((m) => m.node);
    while (others().some((node) => !this.#peers.isUp(node))) {
      if (Date.now() > deadline) {
        const missing = others().filter((node) => !this.#peers.isUp(node));
        throw new XmppServerError(
          "XSRV_CLUSTER_UNREACHABLE",
          `no peer link to ${missing.join(", ")} after ${timeoutMs} ms: check cluster.peerHost/peerPort and firewalls`,
        );
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#peers.off("peer-up", done);
          resolve();
        };
        const timer = setTimeout(done, 250);
        this.#peers.on("peer-up", done);
      });
    }
  }

  /** A pause between two looks at state that no single event announces (the view, counts). */
  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms).unref());
  }

  #every(ms: number, task: () => unknown): void {
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      Promise.resolve(task())
        .catch((error: unknown) => this.#log.warn({ err: error }, "cluster task failed"))
        .finally(() => {
          running = false;
        });
    }, ms);
    timer.unref();
    this.#timers.push(timer);
  }
}

/** What a member's row tells a dialler about its peer certificate. */
function trustOf(member: Member): PeerTrust {
  return { certSha256: member.peerCertSha256 ?? null };
}

/** A member that still serves: it owns or hands off partitions itself (up, or leaving). */
function isServingMember(member: Member): boolean {
  return member.status === "up" || member.status === "leaving";
}

/** Whether node `nodeNo` is one of the table's (it may own partitions in it). */
function inTable(table: OwnerTable | undefined, nodeNo: number): boolean {
  return table?.shardNos.some((shard) => nodeNoOf(shard) === nodeNo) ?? false;
}

/** Whether `node` is a member that still serves. */
function isServing(view: ClusterView, node: string): boolean {
  const member = view.members.find((m) => m.node === node);
  return member !== undefined && isServingMember(member);
}
