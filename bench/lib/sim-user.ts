/**
 * One simulated user of the failover benchmark: a connection that comes back. When its stream
 * breaks it waits a jittered, growing delay, connects to another address (as a client behind
 * DNS round-robin would, or to the one a `<see-other-host/>` or XEP-0198 `location` named),
 * resumes its XEP-0198 session, and logs in afresh when resumption fails. Every disconnect is
 * recorded with where the user was, why it dropped, and how and when it came back.
 */

import { SmSession } from "./sm-session.ts";
import { type LoadClient, LoadClientError, type LoginOutcome } from "./xmpp-load-client.ts";

/** A server address; its index in the address list is the node number. */
export interface Address {
  host: string;
  port: number;
}

/** One broken connection and how the user came back from it. */
export interface DisconnectRecord {
  user: number;
  /** Wall-clock ms when the break was noticed. */
  atMs: number;
  /** Address index (node) the user was connected to. */
  node: number;
  /** LoadClientError code, plus the stream error condition; or `ack-timeout`. */
  reason: string;
  /** When the user was online again; absent if it never came back. */
  backAtMs?: number;
  outcome?: "resumed" | "relogged";
  toNode?: number;
  /** Connection attempts it took. */
  attempts: number;
}

/** What a {@link SimUser} needs from the group that owns it. */
export interface SimUserHost {
  /** All addresses (index = node) and which of them clients currently know of ("in DNS"). */
  addresses(): readonly Address[];
  isActive(node: number): boolean;
  /** Builds the client for one connection attempt. */
  newClient(user: SimUser, address: Address): LoadClient;
  /** Jittered backoff before attempt `attempt` (0-based) after a break. */
  backoffMs(attempt: number): number;
  /** The user is online; `record` is the disconnect it recovered from, if any. */
  online(user: SimUser, outcome: LoginOutcome, record: DisconnectRecord | undefined): void;
  /** The user's connection broke while it was online. */
  offline(user: SimUser, record: DisconnectRecord): void;
  /** A connection attempt failed (login error, refused connection). */
  attemptFailed(user: SimUser, error: unknown): void;
}

/** Where a user is in its life. */
export type SimUserState = "idle" | "connecting" | "online" | "waiting" | "stopped";

/** See the file comment. */
export class SimUser {
  readonly n: number;
  readonly sm: SmSession;
  state: SimUserState = "idle";
  client: LoadClient | undefined;
  /** Address index of the current (or last) connection. */
  node = -1;
  /** Last sequence number this user gave a message; messages are numbered 1, 2, 3, ... */
  seq = 0;
  /** Every message up to this number is acknowledged by the server (they are acked in order). */
  ackedUpTo = 0;
  /** Acknowledgements out of order: each would mean the accounting's prefix rule broke. */
  ackAnomalies = 0;
  /** Highest sequence number received from each sender, to count reordering per pair. */
  lastSeqFrom = new Map<number, number>();
  /** Roster contacts with a mutual subscription, seen in roster pushes or the fetched roster. */
  mutualContacts = new Set<string>();
  /** Its disconnects, in order. */
  readonly disconnects: DisconnectRecord[] = [];
  /** Failed connection attempts, including those of the first login. */
  failedAttempts = 0;
  /** Whether the user was ever online. */
  everOnline = false;

  #host: SimUserHost;
  #timer: NodeJS.Timeout | undefined;
  #attempt = 0;
  /** Addresses that refused a connection since this user was last online (see #failed). */
  readonly #refused = new Set<number>();
  #open: DisconnectRecord | undefined;
  /** An address the server pointed the user at, tried first on the next attempt. */
  #redirect: string | undefined;
  /** Set before this side tears a live connection down, so the close is recorded with it. */
  #killReason: string | undefined;
  #firstLogin: { resolve: (ok: boolean) => void } | undefined;

  constructor(n: number, host: SimUserHost, onAcked: (user: SimUser, seq: number) => void) {
    this.n = n;
    this.#host = host;
    this.sm = new SmSession((seq) => onAcked(this, seq));
  }

  /** Starts the first login on address `node`; resolves true once online, false on the first failure
   * (the user keeps retrying in the background). */
  start(node: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      this.#firstLogin = { resolve };
      this.#connect(node);
    });
  }

  /** Tears the live connection down as broken (e.g. the server stopped acknowledging). */
  kill(reason: string): void {
    if (this.state !== "online" || this.client === undefined) return;
    this.#killReason = reason;
    this.client.destroy();
  }

  /** Stops for good: no more reconnects. */
  stop(): void {
    this.state = "stopped";
    clearTimeout(this.#timer);
    this.client?.destroy();
  }

  /** Closes the stream gracefully and stops. */
  async close(): Promise<void> {
    clearTimeout(this.#timer);
    const client = this.client;
    this.state = "stopped";
    if (client !== undefined) await client.close();
  }

  /** The disconnect still waiting for the user to come back. */
  get openDisconnect(): DisconnectRecord | undefined {
    return this.#open;
  }

  #connect(node: number): void {
    if (this.state === "stopped") return;
    this.state = "connecting";
    this.node = node;
    const address = this.#host.addresses()[node]!;
    const client = this.#host.newClient(this, address);
    this.client = client;
    client.login().then(
      () => {
        if (this.client !== client || this.state === "stopped") return;
        if (client.status !== "online") return this.#failed(client.error ?? new Error("closed after login"));
        this.state = "online";
        this.everOnline = true;
        this.#attempt = 0;
        this.#refused.clear();
        this.#redirect = undefined;
        const record = this.#open;
        this.#open = undefined;
        if (record !== undefined) {
          record.backAtMs = Date.now();
          record.outcome = client.outcome === "resumed" ? "resumed" : "relogged";
          record.toNode = node;
        }
        this.#host.online(this, client.outcome ?? "bound", record);
        this.#settleFirst(true);
      },
      (error: unknown) => {
        if (this.client !== client || this.state === "stopped") return;
        this.#failed(error);
      },
    );
  }

  #failed(error: unknown): void {
    this.failedAttempts++;
    if (this.#open !== undefined) this.#open.attempts++;
    this.#host.attemptFailed(this, error);
    this.#noteRedirect(error);
    this.#settleFirst(false);
    if (isRefused(error)) {
      // RFC 6120 §3.2.1: a client whose connection to one SRV target fails tries the next
      // target at once; it backs off only when every target has failed.
      this.#refused.add(this.node);
      const next = this.#untriedAfter(this.node);
      if (next !== undefined) {
        this.state = "waiting";
        clearTimeout(this.#timer);
        this.#timer = setTimeout(() => this.#connect(next), 0);
        return;
      }
      this.#refused.clear();
    }
    this.#schedule(this.#attempt++);
  }

  /** The next known address after `node` that has not refused a connection in this round. */
  #untriedAfter(node: number): number | undefined {
    const addresses = this.#host.addresses();
    for (let step = 1; step < addresses.length; step++) {
      const candidate = (node + step) % addresses.length;
      if (this.#host.isActive(candidate) && !this.#refused.has(candidate)) return candidate;
    }
    return undefined;
  }

  /** Called by the client's onClose; only a close while online is a disconnect. */
  onClientClosed(client: LoadClient, error: LoadClientError | undefined): void {
    if (client !== this.client || this.state !== "online") return;
    const reason =
      this.#killReason ??
      (error === undefined ? "closed" : `${error.code}${error.condition ? `:${error.condition}` : ""}`);
    this.#killReason = undefined;
    const record: DisconnectRecord = { user: this.n, atMs: Date.now(), node: this.node, reason, attempts: 1 };
    this.disconnects.push(record);
    this.#open = record;
    this.state = "waiting";
    this.#noteRedirect(error);
    this.#host.offline(this, record);
    this.#schedule(0);
  }

  #noteRedirect(error: unknown): void {
    if (error instanceof LoadClientError && error.condition === "see-other-host" && error.detail) {
      this.#redirect = error.detail;
    }
  }

  #schedule(attempt: number): void {
    if (this.state === "stopped") return;
    this.state = "waiting";
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#connect(this.#nextNode(attempt)), this.#host.backoffMs(attempt));
  }

  /**
   * The address for the next attempt: the one the server named (see-other-host, then XEP-0198
   * `location`) if it is one of ours; else, right after a break, a random other known address
   * (each DNS round-robin answer starts elsewhere, so a dead node's clients spread over the
   * survivors); after a failed attempt, the next known address after the one just tried.
   */
  #nextNode(attempt: number): number {
    const addresses = this.#host.addresses();
    for (const named of [this.#redirect, this.sm.location]) {
      if (named === undefined) continue;
      const index = addresses.findIndex(
        (a) => `${a.host}:${a.port}` === named || `[${a.host}]:${a.port}` === named,
      );
      if (index >= 0) return index;
    }
    const others = addresses.map((_, i) => i).filter((i) => i !== this.node && this.#host.isActive(i));
    if (others.length === 0) return this.node;
    if (attempt === 0) return others[Math.floor(Math.random() * others.length)]!;
    for (let step = 1; step <= addresses.length; step++) {
      const candidate = (this.node + step) % addresses.length;
      if (this.#host.isActive(candidate)) return candidate;
    }
    return this.node;
  }

  #settleFirst(ok: boolean): void {
    const first = this.#firstLogin;
    this.#firstLogin = undefined;
    first?.resolve(ok);
  }
}

/** Whether a connection attempt failed because nothing listens at the address. */
function isRefused(error: unknown): boolean {
  const cause = error instanceof Error ? (error.cause as { code?: string } | undefined) : undefined;
  return cause?.code === "ECONNREFUSED";
}
