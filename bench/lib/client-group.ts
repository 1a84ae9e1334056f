/**
 * A group of load clients in one process: logs a range of users in with bounded concurrency,
 * sends open-loop message traffic at a fixed rate, and records what arrives. The orchestrator
 * drives one group per load process, in-process or through loadgen-child.ts, by the same
 * {@link LoadGroup} interface.
 */
import { escapeXML } from "ltx/src/escape.js";
import { type HistogramData, LatencyHistogram } from "./latency-histogram.ts";
import { ownCpuSeconds } from "./proc-stats.ts";
import { childOf, textOf, type XmlElement } from "./xml-stream.ts";
import {
  LoadClient,
  type LoadClientError,
  loopbackSourceFor,
  type SaslMechanism,
  ScramKeyCache,
} from "./xmpp-load-client.ts";

/** Which users a group owns and where the server is. */
export interface GroupConfig {
  /** This group's number, unique in the run; it tags the messages the group sends. */
  id: number;
  host: string;
  port: number;
  domain: string;
  /** Localpart pattern; `{n}` becomes the user number (1-based). */
  userPattern: string;
  password: string;
  /** Users are numbered 1..totalUsers across all groups; recipients are drawn from all of them. */
  totalUsers: number;
  /** First user number this group owns. */
  first: number;
  /** How many consecutive users this group owns. */
  count: number;
  /** Per-client bound on login, registration and close. */
  timeoutMs: number;
}

/** One login (or registration) burst. */
export interface LoginRequest {
  starttls: boolean;
  mechanism: SaslMechanism;
  /** Logins in flight at once, within this group. */
  concurrency: number;
  /** Stop starting new logins after this long. */
  deadlineMs: number;
}

/** Result of a login burst. */
export interface LoginReport {
  ok: number;
  failed: number;
  /** Failure counts by LoadClientError code. */
  errors: Record<string, number>;
  firstError: string | undefined;
  elapsedMs: number;
  /** PBKDF2 computations done (SCRAM cache misses). */
  scramDerivations: number;
}

/** Result of an in-band registration pass. */
export interface RegisterReport {
  created: number;
  exists: number;
  failed: number;
  firstError: string | undefined;
}

/** One traffic phase: every group gets the same phase id, window start and length. */
export interface TrafficRequest {
  phase: number;
  /** Messages per second this group sends. */
  ratePerS: number;
  /** Wall-clock start of the window (ms since the epoch, fractional). */
  startAtMs: number;
  durationMs: number;
  /** Extra body characters per message, to model bigger messages. */
  payloadChars: number;
}

/** What a group sent in a phase. */
export interface TrafficReport {
  sent: number;
  /** Messages skipped because the sender's socket buffer was full (client-side backlog). */
  blocked: number;
  /** Clients online when the window closed. */
  online: number;
}

/** What a group received of a phase. */
export interface PhaseStats {
  /** Distinct messages received. */
  received: number;
  /** Copies of a message already received (a server delivering twice). */
  duplicates: number;
  /** Received before the window closed: the delivered rate while sending. */
  receivedInWindow: number;
  histogram: HistogramData;
}

/** Running counters for backlog sampling. */
export interface Counters {
  sent: number;
  received: number;
  duplicates: number;
  online: number;
  disconnects: number;
  /** Why clients were disconnected: LoadClientError code, plus the stream error condition if any. */
  disconnectReasons: Record<string, number>;
}

/** The operations the orchestrator runs on each load process. */
export interface LoadGroup {
  register(request: LoginRequest): Promise<RegisterReport>;
  /** Logs in every owned user that is not online; a no-op when all are. */
  login(request: LoginRequest): Promise<LoginReport>;
  closeAll(): Promise<number>;
  traffic(request: TrafficRequest): Promise<TrafficReport>;
  counters(phase: number): Promise<Counters>;
  phaseStats(phase: number): Promise<PhaseStats>;
  cpuSeconds(): Promise<number>;
  shutdown(): Promise<void>;
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across local processes. */
export function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Socket buffer beyond which a sender is skipped rather than queueing more (bytes). */
const MAX_SENDER_BACKLOG = 256 * 1024;
const TICK_MS = 2;

interface PhaseRecorder {
  sent: number;
  received: number;
  duplicates: number;
  /** Message keys seen (group id × 2^32 + sequence number), to tell duplicates from new messages. */
  seen: Set<number>;
  receivedInWindow: number;
  windowEndMs: number;
  histogram: LatencyHistogram;
}

/** Load clients of one process; see {@link LoadGroup}. */
export class ClientGroup implements LoadGroup {
  #config: GroupConfig;
  #scram = new ScramKeyCache();
  #bareJids: string[];
  #online: LoadClient[] = [];
  #position = new Map<LoadClient, number>();
  #userOf = new Map<LoadClient, number>();
  #onlineUsers = new Set<number>();
  #phases = new Map<number, PhaseRecorder>();
  #disconnects = 0;
  #disconnectReasons: Record<string, number> = {};
  #closing = false;

  constructor(config: GroupConfig) {
    this.#config = config;
    // Index 0 unused so that user n is at index n; escaped once, reused for every message.
    this.#bareJids = [""];
    for (let n = 1; n <= config.totalUsers; n++)
      this.#bareJids.push(escapeXML(`${this.#username(n)}@${config.domain}`));
  }

  #username(n: number): string {
    return this.#config.userPattern.replaceAll("{n}", String(n));
  }

  #recorder(phase: number): PhaseRecorder {
    let recorder = this.#phases.get(phase);
    if (recorder === undefined) {
      recorder = {
        sent: 0,
        received: 0,
        duplicates: 0,
        seen: new Set(),
        receivedInWindow: 0,
        windowEndMs: Number.POSITIVE_INFINITY,
        histogram: new LatencyHistogram(),
      };
      this.#phases.set(phase, recorder);
    }
    return recorder;
  }

  #onMessage = (_client: LoadClient, message: XmlElement): void => {
    const now = wallClockMs();
    const body = childOf(message, "body");
    if (body === undefined) return;
    // Body: "<phase> <group> <seq> <sentAtMs> [padding]" — written by this tool, so splitting the
    // text is enough here; the XML around it was parsed by the SAX reader.
    const fields = textOf(body).split(" ", 4);
    const phase = Number(fields[0]);
    const key = Number(fields[1]) * 2 ** 32 + Number(fields[2]);
    const sentAt = Number(fields[3]);
    if (!Number.isInteger(phase) || !Number.isFinite(key) || !Number.isFinite(sentAt)) return;
    const recorder = this.#recorder(phase);
    if (recorder.seen.has(key)) {
      recorder.duplicates++;
      return;
    }
    recorder.seen.add(key);
    recorder.received++;
    if (now <= recorder.windowEndMs) recorder.receivedInWindow++;
    recorder.histogram.record(now - sentAt);
  };

  #onClose = (client: LoadClient, error: LoadClientError | undefined): void => {
    const position = this.#position.get(client);
    if (position === undefined) return;
    // Swap-remove keeps sender selection O(1).
    const last = this.#online.pop()!;
    if (last !== client) {
      this.#online[position] = last;
      this.#position.set(last, position);
    }
    this.#position.delete(client);
    this.#onlineUsers.delete(this.#userOf.get(client)!);
    this.#userOf.delete(client);
    if (!this.#closing && error?.code !== "LOAD_DESTROYED") {
      this.#disconnects++;
      const reason =
        error === undefined ? "closed" : `${error.code}${error.condition ? `:${error.condition}` : ""}`;
      this.#disconnectReasons[reason] = (this.#disconnectReasons[reason] ?? 0) + 1;
    }
  };

  #newClient(n: number, request: LoginRequest): LoadClient {
    const { host, port, domain, password, timeoutMs } = this.#config;
    return new LoadClient({
      host,
      port,
      ...loopbackSourceFor(host, n),
      domain,
      username: this.#username(n),
      password,
      resource: "load",
      starttls: request.starttls,
      mechanism: request.mechanism,
      timeoutMs,
      scramCache: this.#scram,
      onMessage: this.#onMessage,
      onClose: this.#onClose,
    });
  }

  /** Runs `task` for each owned user number with at most `concurrency` in flight, until the deadline. */
  async #forEachUser(request: LoginRequest, task: (n: number) => Promise<void>): Promise<void> {
    const { first, count } = this.#config;
    const deadline = Date.now() + request.deadlineMs;
    let next = first;
    const end = first + count;
    const worker = async (): Promise<void> => {
      while (next < end && Date.now() < deadline) {
        const n = next++;
        await task(n);
      }
    };
    const workers: Promise<void>[] = [];
    for (let i = 0; i < Math.max(1, Math.min(request.concurrency, count)); i++) workers.push(worker());
    await Promise.all(workers);
  }

  async register(request: LoginRequest): Promise<RegisterReport> {
    const report: RegisterReport = { created: 0, exists: 0, failed: 0, firstError: undefined };
    await this.#forEachUser(request, async (n) => {
      const client = this.#newClient(n, request);
      try {
        const outcome = await client.register();
        report[outcome]++;
      } catch (error) {
        report.failed++;
        report.firstError ??= `${this.#username(n)}: ${(error as Error).message}`;
      }
    });
    return report;
  }

  async login(request: LoginRequest): Promise<LoginReport> {
    const startCalls = this.#scram.derivations;
    const report: LoginReport = {
      ok: 0,
      failed: 0,
      errors: {},
      firstError: undefined,
      elapsedMs: 0,
      scramDerivations: 0,
    };
    this.#closing = false;
    const started = performance.now();
    await this.#forEachUser(request, async (n) => {
      if (this.#onlineUsers.has(n)) return;
      const client = this.#newClient(n, request);
      try {
        await client.login();
        if (client.status !== "online") throw client.error ?? new Error("Closed right after login");
        report.ok++;
        this.#position.set(client, this.#online.length);
        this.#userOf.set(client, n);
        this.#onlineUsers.add(n);
        this.#online.push(client);
      } catch (error) {
        report.failed++;
        const code = (error as LoadClientError).code ?? "UNKNOWN";
        report.errors[code] = (report.errors[code] ?? 0) + 1;
        report.firstError ??= `${this.#username(n)}: ${(error as Error).message}`;
      }
    });
    report.elapsedMs = performance.now() - started;
    report.scramDerivations = this.#scram.derivations - startCalls;
    return report;
  }

  async closeAll(): Promise<number> {
    this.#closing = true;
    const clients = [...this.#online];
    // Close in slices so thousands of simultaneous closes do not flood the server at once.
    const slice = 500;
    for (let i = 0; i < clients.length; i += slice) {
      await Promise.all(clients.slice(i, i + slice).map((c) => c.close()));
    }
    return clients.length;
  }

  traffic(request: TrafficRequest): Promise<TrafficReport> {
    const recorder = this.#recorder(request.phase);
    const windowEnd = request.startAtMs + request.durationMs;
    recorder.windowEndMs = windowEnd;
    const padding = request.payloadChars > 0 ? ` ${"x".repeat(request.payloadChars)}` : "";
    const total = this.#config.totalUsers;
    const report: TrafficReport = { sent: 0, blocked: 0, online: 0 };
    let seq = 0;
    return new Promise<TrafficReport>((resolve) => {
      const tick = (): void => {
        const now = wallClockMs();
        const elapsed = Math.min(now, windowEnd) - request.startAtMs;
        if (elapsed >= 0) {
          const due = Math.floor((request.ratePerS * elapsed) / 1000) - seq;
          // One second's worth at most per tick, in case the event loop stalled for long.
          const burst = Math.min(due, Math.max(1, request.ratePerS));
          for (let i = 0; i < burst; i++) {
            seq++;
            const online = this.#online;
            if (online.length === 0 || total < 2) {
              report.blocked++;
              continue;
            }
            const sender = online[Math.floor(Math.random() * online.length)]!;
            if (sender.writableLength > MAX_SENDER_BACKLOG) {
              report.blocked++;
              continue;
            }
            const from = this.#userOf.get(sender)!;
            let to = 1 + Math.floor(Math.random() * (total - 1));
            if (to >= from) to++;
            sender.sendMessage(
              this.#bareJids[to]!,
              `${request.phase} ${this.#config.id} ${seq} ${wallClockMs().toFixed(3)}${padding}`,
            );
            report.sent++;
            recorder.sent++;
          }
        }
        if (now >= windowEnd) {
          report.online = this.#online.length;
          resolve(report);
          return;
        }
        setTimeout(tick, Math.max(0, Math.min(TICK_MS, request.startAtMs - now)));
      };
      tick();
    });
  }

  async counters(phase: number): Promise<Counters> {
    const recorder = this.#phases.get(phase);
    return {
      sent: recorder?.sent ?? 0,
      received: recorder?.received ?? 0,
      duplicates: recorder?.duplicates ?? 0,
      online: this.#online.length,
      disconnects: this.#disconnects,
      disconnectReasons: { ...this.#disconnectReasons },
    };
  }

  async phaseStats(phase: number): Promise<PhaseStats> {
    const recorder = this.#recorder(phase);
    // The phase is over once its statistics are collected; its message keys are not needed again.
    recorder.seen = new Set();
    return {
      received: recorder.received,
      duplicates: recorder.duplicates,
      receivedInWindow: recorder.receivedInWindow,
      histogram: recorder.histogram.toData(),
    };
  }

  async cpuSeconds(): Promise<number> {
    return ownCpuSeconds();
  }

  async shutdown(): Promise<void> {
    this.#closing = true;
    for (const client of [...this.#online]) client.destroy();
  }
}
