/**
 * Chat traffic for cluster tests: every client sends a numbered message to another client at a
 * fixed interval, and the checker counts, per (sender, recipient) pair, what was sent and what
 * arrived, so a test can assert "nothing lost, nothing twice" for exactly the pairs the design
 * promises it for (both ends on surviving nodes).
 */
import type { Element } from "@xmpp/xml";
import { xml } from "@xmpp/xml";
import type { XmppClient } from "./client.ts";

/** One client taking part. */
export interface TrafficClient {
  /** A short name, unique in the run. */
  readonly name: string;
  /** The node its socket is on. */
  readonly node: string;
  readonly jid: string;
  readonly client: XmppClient;
}

/** What a check found among a set of clients. */
export interface TrafficReport {
  sent: number;
  delivered: number;
  lost: string[];
  duplicated: string[];
}

const BODY = /^([\w-]+):(\S+)>(\S+)#(\d+)$/;

export class ChatTraffic {
  readonly #clients: TrafficClient[];
  readonly #sent = new Map<string, number[]>();
  readonly #seq = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #round = 0;
  #stopped = false;
  readonly #roundWaiters: { round: number; resolve: () => void }[] = [];
  /** Clients whose connection dropped while the traffic ran. */
  readonly disconnected = new Set<string>();

  readonly #tag: string;

  /** `tag` tells this run's messages from another run's among the same clients. */
  constructor(tag: string, clients: TrafficClient[]) {
    this.#tag = tag;
    this.#clients = clients;
    for (const c of clients) {
      c.client.entity.on("disconnect", () => {
        if (!this.#stopped) this.disconnected.add(c.name);
      });
    }
  }

  /** Starts sending: each round, client i writes to client i + 1 + round (mod n), skipping itself. */
  start(intervalMs: number): void {
    this.#timer = setInterval(() => this.#tick(), intervalMs);
  }

  /** Resolves once `count` more rounds have been sent: the traffic's own clock, not a timer. */
  rounds(count: number): Promise<void> {
    const round = this.#round + count;
    return new Promise((resolve) => this.#roundWaiters.push({ round, resolve }));
  }

  #tick(): void {
    const n = this.#clients.length;
    this.#round++;
    for (let i = this.#roundWaiters.length - 1; i >= 0; i--) {
      const waiter = this.#roundWaiters[i]!;
      if (waiter.round <= this.#round) {
        this.#roundWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
    for (let i = 0; i < n; i++) {
      const from = this.#clients[i]!;
      if (this.disconnected.has(from.name)) continue;
      const to = this.#clients[(i + 1 + (this.#round % (n - 1))) % n]!;
      const key = `${from.name}>${to.name}`;
      const seq = (this.#seq.get(key) ?? 0) + 1;
      this.#seq.set(key, seq);
      from.client
        .send(
          xml(
            "message",
            { to: to.jid, type: "chat", id: `${this.#tag}:${key}#${seq}` },
            xml("body", {}, `${this.#tag}:${key}#${seq}`),
          ),
        )
        .then(() => {
          const list = this.#sent.get(key);
          if (list === undefined) this.#sent.set(key, [seq]);
          else list.push(seq);
        })
        .catch(() => {
          // Not written to the socket: not sent.
        });
    }
  }

  /** Stops sending; later disconnects (the test's own cleanup) are not counted. */
  stop(): void {
    clearInterval(this.#timer);
  }

  /**
   * Sends one marker from every client of `among` to every other and waits until all arrived:
   * afterwards, anything still missing is lost, not late (links are ordered per pair of nodes
   * only after the owner settles, hence one marker per pair).
   */
  async flush(among: readonly string[], timeoutMs = 15_000): Promise<void> {
    const clients = this.#clients.filter((c) => among.includes(c.name));
    const waits: Promise<Element>[] = [];
    for (const to of clients) {
      for (const from of clients) {
        if (from === to) continue;
        const body = `${this.#tag}-end:${from.name}>${to.name}`;
        waits.push(to.client.waitForStanza((el) => el.getChildText("body") === body, body, timeoutMs));
        await from.client.send(xml("message", { to: to.jid, type: "chat" }, xml("body", {}, body)));
      }
    }
    await Promise.all(waits);
  }

  /** Ends the run: stops counting disconnects. */
  finish(): void {
    this.stop();
    this.#stopped = true;
  }

  /** Pairs whose sender and recipient are both in `among`: what was lost or arrived twice. */
  check(among: readonly string[]): TrafficReport {
    const report: TrafficReport = { sent: 0, delivered: 0, lost: [], duplicated: [] };
    const received = new Map<string, Map<number, number>>();
    for (const c of this.#clients) {
      for (const el of c.client.stanzas) {
        const match = BODY.exec(el.getChildText("body") ?? "");
        if (match === null || match[1] !== this.#tag || match[3] !== c.name) continue;
        const key = `${match[2]}>${match[3]}`;
        const seq = Number(match[4]);
        const counts = received.get(key) ?? new Map<number, number>();
        received.set(key, counts);
        counts.set(seq, (counts.get(seq) ?? 0) + 1);
      }
    }
    for (const [key, seqs] of this.#sent) {
      const [from, to] = key.split(">") as [string, string];
      if (!among.includes(from) || !among.includes(to)) continue;
      const counts = received.get(key) ?? new Map<number, number>();
      for (const seq of seqs) {
        report.sent++;
        const count = counts.get(seq) ?? 0;
        if (count === 0) report.lost.push(`${this.#tag}:${key}#${seq}`);
        else report.delivered++;
        if (count > 1) report.duplicated.push(`${this.#tag}:${key}#${seq}`);
      }
    }
    return report;
  }
}
