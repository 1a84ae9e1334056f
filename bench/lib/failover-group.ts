/**
 * The failover benchmark's clients in one process: a range of simulated users that log in,
 * stay connected through faults (sim-user.ts), send an open-loop message workload and account
 * for every message exactly.
 *
 * Accounting, per message identified by (sender, sequence number):
 * - a message is **sent** once the server acknowledged it with XEP-0198 `<a h/>`. A sender's
 *   stanzas are acknowledged in order, and the unacknowledged ones are re-sent (on resumption,
 *   or after a new login) before anything newer, so what a sender got acknowledged is always a
 *   prefix 1..ackedUpTo of its sequence numbers; the group checks that, and counts violations.
 * - every receipt is checked against a per-sender bit set: the first is a delivery, the others
 *   duplicates. The orchestrator merges the sets of all processes and compares them with the
 *   acknowledged prefixes: acknowledged but never received is **lost**.
 * The recipient of each message is a function of (seed, sender, sequence number), so a lost
 * message's (sender, recipient) pair is known without storing it (workload.ts).
 */
import { escapeXML } from "ltx/src/escape.js";
import { type HistogramData, LatencyHistogram } from "./latency-histogram.ts";
import { ownCpuSeconds } from "./proc-stats.ts";
import { SeqBitset } from "./seq-bitset.ts";
import { type Address, type DisconnectRecord, SimUser, type SimUserHost } from "./sim-user.ts";
import { contactsOf, recipientOf, seededRandom, type WorkloadSpec } from "./workload.ts";
import { childOf, textOf, type XmlElement } from "./xml-stream.ts";
import {
  LoadClient,
  type LoginOutcome,
  loopbackSourceFor,
  type SaslMechanism,
  ScramKeyCache,
} from "./xmpp-load-client.ts";

/** Which users a group owns, where the servers are, and how clients behave. */
export interface FailoverGroupConfig {
  /** This group's number, unique in the run. */
  id: number;
  /** Every server address of the run; index = node number. */
  addresses: Address[];
  /** Which addresses clients know of at the start (a node that joins later is not yet "in DNS"). */
  active: boolean[];
  domain: string;
  /** Localpart pattern; `{n}` becomes the user number. */
  userPattern: string;
  password: string;
  mechanism: SaslMechanism;
  starttls: boolean;
  /** XEP-0388 SASL2 with Bind 2 and XEP-0198 inline. */
  sasl2?: boolean;
  /** Users are numbered 1..totalUsers; this group owns first..first+count-1. */
  totalUsers: number;
  first: number;
  count: number;
  /** Bound on each login attempt. */
  timeoutMs: number;
  /** Try XEP-0198 resumption after a break (else always log in afresh). */
  resume: boolean;
  fetchRoster: boolean;
  /** Reconnect delay: uniformly random in [0, min(max, base·2^attempt)] ("full jitter"). */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** How often clients with unacknowledged stanzas ask for an ack (`<r/>`). */
  ackRequestMs: number;
  /** A connection whose `<r/>` stays unanswered this long is treated as dead. */
  ackTimeoutMs: number;
  workload: WorkloadSpec;
  /** Distinguishes this run's messages from leftovers of earlier runs (offline storage). */
  runId: number;
  /** Wall-clock origin of the per-second timeline. */
  t0Ms: number;
}

/** Result of the first login of every user. */
export interface ConnectReport {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  firstError: string | undefined;
  elapsedMs: number;
  scramDerivations: number;
}

/** Traffic parameters for {@link FailoverGroup.startTraffic}. */
export interface FailoverTrafficRequest {
  /** Messages per second this group offers. */
  ratePerS: number;
  /** Wall-clock ms when sending starts. */
  startAtMs: number;
  /** `burst` pattern: the period's messages are all sent at its start. */
  burstPeriodMs: number;
}

/** Counters sampled while the run goes on. */
export interface LiveCounters {
  users: number;
  online: number;
  onlineByNode: number[];
  /** Users between a break and being online again. */
  reconnecting: number;
  sent: number;
  acked: number;
  unacked: number;
  delivered: number;
  duplicates: number;
  disconnects: number;
  resumed: number;
  relogged: number;
  /** Messages due while no user of this group was online, or skipped on a full socket buffer. */
  notOffered: number;
}

/** Counts per second since t0. */
export interface PerSecondCounts {
  sent: number[];
  acked: number[];
  delivered: number[];
  duplicates: number[];
  disconnects: number[];
  resumed: number[];
  relogged: number[];
  /** Delivery latency histogram per second of receipt (sparse; null for an empty second). */
  latency: (HistogramData | null)[];
}

/** Everything a group knows at the end, for the orchestrator to merge. */
export interface GroupResult {
  first: number;
  count: number;
  /** Per owned user (index n - first): highest sequence number used, and acknowledged prefix. */
  sentUpTo: number[];
  ackedUpTo: number[];
  /** Per owned user: messages still unacknowledged at collection. */
  unacked: number[];
  /** Received sequence numbers per sender: [sender, base64 bit set]. */
  received: [number, string][];
  duplicates: number;
  /** Up to 50 duplicates as [sender, seq, recipient]. */
  duplicateSamples: [number, number, number][];
  /** Every (sender, recipient) pair that saw a duplicate. */
  duplicatePairs: [number, number][];
  /** Receipts whose sequence number was lower than one already received from that sender. */
  outOfOrder: number;
  /** Receipts at a user other than the message's recipient. */
  misrouted: number;
  /** Messages from other runs (offline storage of an earlier run) or with bodies not ours. */
  foreign: number;
  /** Messages acknowledged out of sequence order (the prefix rule broke). */
  ackAnomalies: number;
  /** Server acks claiming more stanzas than were sent. */
  impossibleAcks: number;
  /** Up to 50 out-of-order acks as [user, seq acked, acknowledged prefix before it]. */
  ackAnomalySamples: [number, number, number][];
  latency: HistogramData;
  perSecond: PerSecondCounts;
  disconnects: DisconnectRecord[];
  /** Users that were never online. */
  neverOnline: number;
  /** Users not online at collection. */
  offlineAtEnd: number;
  /** Failed connection attempts (first logins and reconnects). */
  failedAttempts: number;
  attemptErrors: Record<string, number>;
  notOffered: number;
  blocked: number;
}

/** The operations the orchestrator runs on each failover load process, in-process or over IPC. */
export interface FailoverLoad {
  connect(request: { concurrency: number; deadlineMs: number }): Promise<ConnectReport>;
  setActive(active: boolean[]): Promise<void>;
  setupRosters(request: { timeoutMs: number }): Promise<{ incomplete: number }>;
  startTraffic(request: FailoverTrafficRequest): Promise<void>;
  stopTraffic(): Promise<{ sent: number }>;
  requestAcks(): Promise<void>;
  /** Closes every online client's connection at once, as a proxy in front of the servers restarting would. */
  cutConnections(): Promise<{ cut: number }>;
  live(): Promise<LiveCounters>;
  collect(): Promise<GroupResult>;
  cpuSeconds(): Promise<number>;
  closeAll(): Promise<void>;
  shutdown(): Promise<void>;
}

/** Socket buffer beyond which a sender is skipped rather than queueing more (bytes). */
const MAX_SENDER_BACKLOG = 256 * 1024;
const TICK_MS = 2;
const MAX_SAMPLES = 50;

function bump(bins: number[], index: number): void {
  while (bins.length <= index) bins.push(0);
  bins[index]!++;
}

/** See the file comment. */
export class FailoverGroup implements SimUserHost, FailoverLoad {
  #config: FailoverGroupConfig;
  #addresses: Address[];
  #active: boolean[];
  #scram = new ScramKeyCache();
  #users: SimUser[] = [];
  /** Escaped bare JIDs, index = user number. */
  #bareJids: string[] = [""];
  #online: SimUser[] = [];
  #position = new Map<SimUser, number>();
  #random: () => number;
  #received: (SeqBitset | undefined)[] = [];
  #counters = {
    sent: 0,
    acked: 0,
    delivered: 0,
    duplicates: 0,
    disconnects: 0,
    resumed: 0,
    relogged: 0,
    notOffered: 0,
    blocked: 0,
    outOfOrder: 0,
    misrouted: 0,
    foreign: 0,
  };
  #duplicateSamples: [number, number, number][] = [];
  #duplicatePairs = new Map<string, [number, number]>();
  #ackAnomalySamples: [number, number, number][] = [];
  #latency = new LatencyHistogram();
  #bins: PerSecondCounts = {
    sent: [],
    acked: [],
    delivered: [],
    duplicates: [],
    disconnects: [],
    resumed: [],
    relogged: [],
    latency: [],
  };
  #latencyBins: (LatencyHistogram | undefined)[] = [];
  #attemptErrors: Record<string, number> = {};
  #dirty = new Set<SimUser>();
  #ackTimer: NodeJS.Timeout | undefined;
  #traffic: { stop: () => void; done: Promise<void> } | undefined;
  #stopped = false;

  constructor(config: FailoverGroupConfig) {
    this.#config = config;
    this.#addresses = [...config.addresses];
    this.#active = [...config.active];
    this.#random = seededRandom(config.workload.seed * 7919 + config.id);
    for (let n = 1; n <= config.totalUsers; n++) {
      this.#bareJids.push(escapeXML(`${this.#username(n)}@${config.domain}`));
    }
    for (let i = 0; i < config.count; i++)
      this.#users.push(new SimUser(config.first + i, this, this.#onAcked));
    this.#ackTimer = setInterval(() => this.#requestAcks(false), config.ackRequestMs);
  }

  #username(n: number): string {
    return this.#config.userPattern.replaceAll("{n}", String(n));
  }

  #second(ms: number): number {
    return Math.max(0, Math.floor((ms - this.#config.t0Ms) / 1000));
  }

  // --- SimUserHost ---------------------------------------------------------------------------

  addresses(): readonly Address[] {
    return this.#addresses;
  }

  isActive(node: number): boolean {
    return this.#active[node] === true;
  }

  backoffMs(attempt: number): number {
    const { backoffBaseMs, backoffMaxMs } = this.#config;
    return Math.random() * Math.min(backoffMaxMs, backoffBaseMs * 2 ** Math.min(attempt, 20));
  }

  newClient(user: SimUser, address: Address): LoadClient {
    const c = this.#config;
    return new LoadClient({
      host: address.host,
      port: address.port,
      ...loopbackSourceFor(address.host, user.n),
      domain: c.domain,
      username: this.#username(user.n),
      password: c.password,
      resource: "load",
      starttls: c.starttls,
      sasl2: c.sasl2 ?? false,
      mechanism: c.mechanism,
      timeoutMs: c.timeoutMs,
      scramCache: this.#scram,
      sm: user.sm,
      resume: c.resume,
      fetchRoster: c.fetchRoster,
      onMessage: (_client, message) => this.#onMessage(user, message),
      onPresence: (client, presence) => this.#onPresence(user, client, presence),
      onRosterPush: (_client, item) => this.#onRosterItem(user, item.attrs.jid, item.attrs.subscription),
      onClose: (client, error) => user.onClientClosed(client, error),
    });
  }

  online(user: SimUser, outcome: LoginOutcome, record: DisconnectRecord | undefined): void {
    if (!this.#position.has(user)) {
      this.#position.set(user, this.#online.length);
      this.#online.push(user);
    }
    if (record !== undefined) {
      if (outcome === "resumed") {
        this.#counters.resumed++;
        bump(this.#bins.resumed, this.#second(record.backAtMs!));
      } else {
        this.#counters.relogged++;
        bump(this.#bins.relogged, this.#second(record.backAtMs!));
      }
    }
    for (const jid of user.client?.roster ?? []) {
      if (jid.subscription === "both") user.mutualContacts.add(jid.jid);
    }
    // What was re-sent on resumption or after a new login needs acknowledging too.
    if (user.sm.unacked > 0) this.#dirty.add(user);
  }

  offline(user: SimUser, record: DisconnectRecord): void {
    const position = this.#position.get(user);
    if (position !== undefined) {
      const last = this.#online.pop()!;
      if (last !== user) {
        this.#online[position] = last;
        this.#position.set(last, position);
      }
      this.#position.delete(user);
    }
    this.#counters.disconnects++;
    bump(this.#bins.disconnects, this.#second(record.atMs));
  }

  attemptFailed(_user: SimUser, error: unknown): void {
    const code = (error as { code?: string }).code ?? "UNKNOWN";
    const condition = (error as { condition?: string }).condition;
    const key = condition === undefined ? code : `${code}:${condition}`;
    this.#attemptErrors[key] = (this.#attemptErrors[key] ?? 0) + 1;
  }

  // --- accounting ----------------------------------------------------------------------------

  #onAcked = (user: SimUser, seq: number): void => {
    if (seq === user.ackedUpTo + 1) user.ackedUpTo = seq;
    else {
      user.ackAnomalies++;
      if (this.#ackAnomalySamples.length < MAX_SAMPLES)
        this.#ackAnomalySamples.push([user.n, seq, user.ackedUpTo]);
      if (seq > user.ackedUpTo) user.ackedUpTo = seq;
    }
    this.#counters.acked++;
    bump(this.#bins.acked, this.#second(Date.now()));
  };

  #onMessage(user: SimUser, message: XmlElement): void {
    const now = performance.timeOrigin + performance.now();
    const body = childOf(message, "body");
    if (body === undefined) return;
    // Body: "<runId> <sender> <seq> <sentAtMs>", written by this tool.
    const fields = textOf(body).split(" ", 4);
    const runId = Number(fields[0]);
    const sender = Number(fields[1]);
    const seq = Number(fields[2]);
    const sentAt = Number(fields[3]);
    if (
      runId !== this.#config.runId ||
      !Number.isInteger(sender) ||
      !Number.isInteger(seq) ||
      sender < 1 ||
      sender > this.#config.totalUsers ||
      seq < 1 ||
      !Number.isFinite(sentAt)
    ) {
      this.#counters.foreign++;
      return;
    }
    if (recipientOf(sender, seq, this.#config.workload) !== user.n) this.#counters.misrouted++;
    let set = this.#received[sender];
    if (set === undefined) {
      set = new SeqBitset();
      this.#received[sender] = set;
    }
    const second = this.#second(now);
    if (!set.add(seq)) {
      this.#counters.duplicates++;
      bump(this.#bins.duplicates, second);
      if (this.#duplicateSamples.length < MAX_SAMPLES) this.#duplicateSamples.push([sender, seq, user.n]);
      this.#duplicatePairs.set(`${sender}>${user.n}`, [sender, user.n]);
      return;
    }
    this.#counters.delivered++;
    bump(this.#bins.delivered, second);
    const latency = now - sentAt;
    this.#latency.record(latency);
    let histogram = this.#latencyBins[second];
    if (histogram === undefined) {
      histogram = new LatencyHistogram();
      this.#latencyBins[second] = histogram;
    }
    histogram.record(latency);
    const last = user.lastSeqFrom.get(sender) ?? 0;
    if (seq < last) this.#counters.outOfOrder++;
    else user.lastSeqFrom.set(sender, seq);
  }

  // --- rosters -------------------------------------------------------------------------------

  #onPresence(user: SimUser, client: LoadClient, presence: XmlElement): void {
    const from = presence.attrs.from;
    if (from === undefined) return;
    const bare = from.split("/")[0]!;
    if (presence.attrs.type === "subscribe") {
      // Approve every contact request and ask back, so each pair ends with a mutual subscription.
      client.sendTracked(`<presence to='${escapeXML(bare)}' type='subscribed'/>`, -1);
      if (!user.mutualContacts.has(bare)) {
        client.sendTracked(`<presence to='${escapeXML(bare)}' type='subscribe'/>`, -1);
      }
    }
  }

  #onRosterItem(user: SimUser, jid: string | undefined, subscription: string | undefined): void {
    if (jid === undefined) return;
    if (subscription === "both") user.mutualContacts.add(jid);
  }

  /**
   * Makes every user's contacts (the `roster` pattern's groups) mutual roster subscriptions, in
   * band, as users would: each asks its higher-numbered contacts, and every request is approved
   * and asked back. Waits until every user sees all of its contacts as `both`, or the deadline.
   */
  async setupRosters(request: { timeoutMs: number }): Promise<{ incomplete: number }> {
    const spec = this.#config.workload;
    const domain = this.#config.domain;
    const jidOf = (m: number) => `${this.#username(m)}@${domain}`;
    const wanted = (user: SimUser) => contactsOf(user.n, spec).map(jidOf);
    for (const user of this.#users) {
      const client = user.client;
      if (user.state !== "online" || client === undefined) continue;
      for (const m of contactsOf(user.n, spec)) {
        if (m < user.n || user.mutualContacts.has(jidOf(m))) continue;
        client.sendTracked(`<presence to='${escapeXML(jidOf(m))}' type='subscribe'/>`, -1);
        this.#dirty.add(user);
      }
    }
    const incomplete = () =>
      this.#users.filter((u) => wanted(u).some((jid) => !u.mutualContacts.has(jid))).length;
    const deadline = Date.now() + request.timeoutMs;
    while (incomplete() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    return { incomplete: incomplete() };
  }

  // --- LoadGroup-like operations (called in-process or over IPC) -----------------------------

  /** Logs every user in for the first time, at most `concurrency` at once; users that fail keep retrying. */
  async connect(request: { concurrency: number; deadlineMs: number }): Promise<ConnectReport> {
    const started = performance.now();
    const derivations = this.#scram.derivations;
    const report: ConnectReport = {
      ok: 0,
      failed: 0,
      errors: {},
      firstError: undefined,
      elapsedMs: 0,
      scramDerivations: 0,
    };
    const active = this.#addresses.map((_, i) => i).filter((i) => this.#active[i]);
    const deadline = Date.now() + request.deadlineMs;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < this.#users.length && Date.now() < deadline) {
        const user = this.#users[next++]!;
        // Round-robin over the known addresses, as DNS would spread them.
        const node = active[(user.n - 1) % active.length]!;
        if (await user.start(node)) report.ok++;
        else {
          report.failed++;
          const error = user.client?.error;
          const code = error?.code ?? "UNKNOWN";
          report.errors[code] = (report.errors[code] ?? 0) + 1;
          report.firstError ??= `user ${user.n}: ${error?.message ?? "login failed"}`;
        }
      }
    };
    const workers: Promise<void>[] = [];
    for (let i = 0; i < Math.max(1, Math.min(request.concurrency, this.#users.length)); i++)
      workers.push(worker());
    await Promise.all(workers);
    report.elapsedMs = performance.now() - started;
    report.scramDerivations = this.#scram.derivations - derivations;
    return report;
  }

  /** Changes which addresses clients know of (a node joined, or left DNS). */
  async setActive(active: boolean[]): Promise<void> {
    this.#active = [...active];
  }

  /** Starts open-loop sending; {@link stopTraffic} ends it. */
  async startTraffic(request: FailoverTrafficRequest): Promise<void> {
    if (this.#traffic !== undefined) throw new TypeError("Traffic is already running");
    const { ratePerS, startAtMs, burstPeriodMs } = request;
    const burst = this.#config.workload.pattern === "burst";
    const perPeriod = (ratePerS * burstPeriodMs) / 1000;
    let issued = 0;
    let timer: NodeJS.Timeout | undefined;
    let resolveDone!: () => void;
    const done = new Promise<void>((resolve) => {
      resolveDone = resolve;
    });
    let running = true;
    const tick = (): void => {
      if (!running) return;
      const now = performance.timeOrigin + performance.now();
      const elapsed = now - startAtMs;
      if (elapsed >= 0) {
        const target = burst
          ? Math.floor((Math.floor(elapsed / burstPeriodMs) + 1) * perPeriod)
          : Math.floor((ratePerS * elapsed) / 1000);
        // One second's worth at most per tick (a burst's whole period), in case the loop stalled.
        const due = Math.min(target - issued, Math.max(1, burst ? perPeriod : ratePerS));
        for (let i = 0; i < due; i++) {
          issued++;
          this.#sendOne(now);
        }
      }
      timer = setTimeout(tick, Math.max(0, Math.min(TICK_MS, startAtMs - now)));
    };
    this.#traffic = {
      stop: () => {
        running = false;
        clearTimeout(timer);
        resolveDone();
      },
      done,
    };
    tick();
  }

  #sendOne(now: number): void {
    const online = this.#online;
    if (online.length === 0) {
      this.#counters.notOffered++;
      return;
    }
    const user = online[Math.floor(this.#random() * online.length)]!;
    const client = user.client!;
    if (client.writableLength > MAX_SENDER_BACKLOG) {
      this.#counters.blocked++;
      this.#counters.notOffered++;
      return;
    }
    const seq = ++user.seq;
    const to = recipientOf(user.n, seq, this.#config.workload);
    const body = `${this.#config.runId} ${user.n} ${seq} ${now.toFixed(3)}`;
    client.sendTracked(
      `<message to='${this.#bareJids[to]}' type='chat' id='m${user.n}-${seq}'><body>${body}</body></message>`,
      seq,
    );
    this.#counters.sent++;
    bump(this.#bins.sent, this.#second(now));
    this.#dirty.add(user);
  }

  /** Stops sending; resolves with the number of messages this group sent. */
  async stopTraffic(): Promise<{ sent: number }> {
    const traffic = this.#traffic;
    this.#traffic = undefined;
    traffic?.stop();
    await traffic?.done;
    return { sent: this.#counters.sent };
  }

  /**
   * Asks every client with unacknowledged stanzas for an ack. Periodically (force = false) it
   * only asks those that sent since the last round, and treats a request unanswered for
   * `ackTimeoutMs` as a dead connection.
   */
  #requestAcks(force: boolean): void {
    const now = Date.now();
    const candidates = force ? this.#online : [...this.#dirty];
    this.#dirty.clear();
    for (const user of candidates) {
      const client = user.client;
      if (client === undefined || user.state !== "online") continue;
      if (client.ackRequestedAt !== 0 && now - client.ackRequestedAt > this.#config.ackTimeoutMs) {
        user.kill("ack-timeout");
        continue;
      }
      if (user.sm.unacked > 0) {
        client.requestAck(now);
        this.#dirty.add(user);
      }
    }
  }

  /** Asks every online client with unacknowledged stanzas for an ack now. */
  async requestAcks(): Promise<void> {
    this.#requestAcks(true);
  }

  async cutConnections(): Promise<{ cut: number }> {
    // A snapshot first: each kill takes the user out of #online.
    const online = [...this.#online];
    for (const user of online) user.kill("cut");
    return { cut: online.length };
  }

  async live(): Promise<LiveCounters> {
    const onlineByNode = this.#addresses.map(() => 0);
    for (const user of this.#online) onlineByNode[user.node]!++;
    let unacked = 0;
    let reconnecting = 0;
    for (const user of this.#users) {
      unacked += user.seq - user.ackedUpTo;
      if (user.openDisconnect !== undefined) reconnecting++;
    }
    const c = this.#counters;
    return {
      users: this.#users.length,
      online: this.#online.length,
      onlineByNode,
      reconnecting,
      sent: c.sent,
      acked: c.acked,
      unacked,
      delivered: c.delivered,
      duplicates: c.duplicates,
      disconnects: c.disconnects,
      resumed: c.resumed,
      relogged: c.relogged,
      notOffered: c.notOffered,
    };
  }

  async collect(): Promise<GroupResult> {
    const received: [number, string][] = [];
    this.#received.forEach((set, sender) => {
      if (set !== undefined) received.push([sender, set.toBase64()]);
    });
    const perSecond: PerSecondCounts = {
      ...this.#bins,
      latency: Array.from(this.#latencyBins, (h) => h?.toData() ?? null),
    };
    const c = this.#counters;
    return {
      first: this.#config.first,
      count: this.#config.count,
      sentUpTo: this.#users.map((u) => u.seq),
      ackedUpTo: this.#users.map((u) => u.ackedUpTo),
      unacked: this.#users.map((u) => u.seq - u.ackedUpTo),
      received,
      duplicates: c.duplicates,
      duplicateSamples: this.#duplicateSamples,
      duplicatePairs: [...this.#duplicatePairs.values()],
      outOfOrder: c.outOfOrder,
      misrouted: c.misrouted,
      foreign: c.foreign,
      ackAnomalies: this.#users.reduce((a, u) => a + u.ackAnomalies, 0),
      impossibleAcks: this.#users.reduce((a, u) => a + u.sm.impossibleAcks, 0),
      ackAnomalySamples: this.#ackAnomalySamples,
      latency: this.#latency.toData(),
      perSecond,
      disconnects: this.#users.flatMap((u) => u.disconnects),
      neverOnline: this.#users.filter((u) => !u.everOnline).length,
      offlineAtEnd: this.#users.filter((u) => u.state !== "online").length,
      failedAttempts: this.#users.reduce((a, u) => a + u.failedAttempts, 0),
      attemptErrors: { ...this.#attemptErrors },
      notOffered: c.notOffered,
      blocked: c.blocked,
    };
  }

  async cpuSeconds(): Promise<number> {
    return ownCpuSeconds();
  }

  /** Closes every stream gracefully (bounded per client by timeoutMs), then stops the timers. */
  async closeAll(): Promise<void> {
    await this.stopTraffic();
    const users = [...this.#users];
    for (let i = 0; i < users.length; i += 500)
      await Promise.all(users.slice(i, i + 500).map((u) => u.close()));
  }

  async shutdown(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#ackTimer);
    await this.stopTraffic();
    for (const user of this.#users) user.stop();
  }
}
