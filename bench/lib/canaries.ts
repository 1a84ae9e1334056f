/**
 * Canary users for bench/abuse.ts: ordinary clients (STARTTLS, SCRAM) in pairs, each sending
 * its partner a message every `intervalMs`, that report what an ordinary user saw while the
 * server was under attack: latency p50/p99/max from send to receipt, messages never received,
 * and connections the server dropped. Each message names the phase it was sent in, so a
 * message held up by one attack counts against that attack even when it arrives later.
 */
import { escapeXML } from "ltx/src/escape.js";
import { LatencyHistogram } from "./latency-histogram.ts";
import { childOf, textOf, type XmlElement } from "./xml-stream.ts";
import { LoadClient, loopbackSourceFor } from "./xmpp-load-client.ts";

export interface CanaryOptions {
  host: string;
  port: number;
  domain: string;
  password: string;
  /** Localparts, an even number: 1 and 2 are partners, 3 and 4, and so on. */
  users: readonly string[];
  intervalMs: number;
  starttls: boolean;
}

/** What the canaries saw during one phase. */
export interface CanaryFigures {
  sent: number;
  received: number;
  /** Sent in the phase and not received by the time the figures were taken. */
  lost: number;
  /** Canary connections that ended while the phase ran (the canary logs in again). */
  dropped: number;
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
}

interface PhaseCounts {
  sent: number;
  received: number;
  dropped: number;
  latency: LatencyHistogram;
}

const RELOGIN_DELAY_MS = 1_000;

export class Canaries {
  readonly #options: CanaryOptions;
  readonly #clients: (LoadClient | undefined)[];
  readonly #phases: PhaseCounts[] = [];
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  private constructor(options: CanaryOptions) {
    this.#options = options;
    this.#clients = options.users.map(() => undefined);
  }

  /** Logs every canary in and starts their messages, counted in a first phase "login". */
  static async start(options: CanaryOptions): Promise<Canaries> {
    if (options.users.length < 2 || options.users.length % 2 !== 0)
      throw new RangeError("canaries come in pairs: give an even number of users");
    const canaries = new Canaries(options);
    canaries.beginPhase();
    await Promise.all(options.users.map((_, index) => canaries.#logIn(index)));
    canaries.#timer = setInterval(() => canaries.#tick(), options.intervalMs);
    return canaries;
  }

  /** Starts counting a new phase; returns its number. */
  beginPhase(): number {
    this.#phases.push({ sent: 0, received: 0, dropped: 0, latency: new LatencyHistogram() });
    return this.#phases.length - 1;
  }

  /** What the canaries saw in phase `phase` so far. */
  figures(phase: number): CanaryFigures {
    const counts = this.#phases[phase]!;
    const quantile = (q: number): number | null =>
      counts.latency.total === 0 ? null : Math.round(counts.latency.quantile(q) * 10) / 10;
    return {
      sent: counts.sent,
      received: counts.received,
      lost: counts.sent - counts.received,
      dropped: counts.dropped,
      p50Ms: quantile(0.5),
      p99Ms: quantile(0.99),
      maxMs: counts.latency.total === 0 ? null : Math.round(counts.latency.maxMs * 10) / 10,
    };
  }

  /** Stops sending and closes every canary. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await Promise.all(this.#clients.map((client) => client?.close()));
  }

  async #logIn(index: number): Promise<void> {
    const { host, port, domain, password, users, starttls } = this.#options;
    const client = new LoadClient({
      host,
      port,
      domain,
      username: users[index]!,
      password,
      resource: "canary",
      starttls,
      streamManagement: false,
      ...loopbackSourceFor(host, 30_000 + index),
      onMessage: (_client, message) => this.#received(message),
      onClose: (_client, error) => {
        if (error === undefined || this.#stopped) return;
        this.#phases.at(-1)!.dropped++;
        this.#clients[index] = undefined;
        setTimeout(() => void this.#logIn(index).catch(() => {}), RELOGIN_DELAY_MS).unref();
      },
    });
    await client.login();
    if (this.#stopped) return client.destroy();
    this.#clients[index] = client;
  }

  #tick(): void {
    const phase = this.#phases.length - 1;
    const counts = this.#phases[phase]!;
    const { domain, users } = this.#options;
    for (let index = 0; index < users.length; index++) {
      const client = this.#clients[index];
      // A canary whose partner is offline would only be measuring offline storage.
      if (client?.status !== "online" || this.#clients[index ^ 1]?.status !== "online") continue;
      const to = escapeXML(`${users[index ^ 1]}@${domain}`);
      client.sendMessage(to, `${phase}:${performance.now().toFixed(3)}`);
      counts.sent++;
    }
  }

  #received(message: XmlElement): void {
    const body = childOf(message, "body");
    if (body === undefined) return;
    const text = textOf(body);
    const colon = text.indexOf(":");
    const phase = this.#phases[Number(text.slice(0, colon))];
    const sentAt = Number(text.slice(colon + 1));
    if (phase === undefined || !Number.isFinite(sentAt)) return;
    phase.received++;
    phase.latency.record(performance.now() - sentAt);
  }
}
