/**
 * The attackers of bench/abuse.ts, hosted in a load child (loadgen-child.ts) so that their
 * work never delays the canaries' clocks in the orchestrator. Each attack is what one hostile
 * or broken client can do to a server over plain TCP: XML built to be expensive, more input
 * than anyone reads, no reading at all, or one byte a second. An attack reports what the
 * server did about it: which connections it closed, with which stream error (RFC 6120 §4.9.3),
 * and after how long; a connection still open when the attack ends is "left open".
 */
import http from "node:http";
import net from "node:net";
import WebSocket from "ws";
import { BOSH_PATH, WEBSOCKET_PATH } from "../../src/transport/web-paths.ts";
import { NS_CLIENT, NS_FRAMING, NS_STREAM } from "../../src/xmpp/ns.ts";
import { LoadClient as Client, type LoadClient, loopbackSourceFor } from "./xmpp-load-client.ts";

/** One attack (see {@link AttackGroup.run}); accounts must exist, `to` is a bare JID. */
export type AttackSpec =
  /** Deeply nested XML straight after the stream header, before any authentication. */
  | { kind: "nested-pre-auth"; connections: number; depth: number; waitMs: number }
  /** The same inside a message, from logged-in accounts. */
  | { kind: "nested-post-auth"; users: string[]; to: string; depth: number; waitMs: number }
  /** One message of `children` empty child elements: small parts, a large stanza. */
  | { kind: "wide-stanza"; users: string[]; to: string; children: number; waitMs: number }
  /** Messages to `victim` (logged in, reading) as fast as each socket takes them, for `seconds`. */
  | { kind: "flood"; users: string[]; victim: string; to: string; seconds: number; bodyChars: number }
  /**
   * `receivers` log in and stop reading; `senders` write messages of `bodyChars` to them in
   * turn for `seconds` or until `maxBytes` are written.
   */
  | {
      kind: "non-readers";
      receivers: string[];
      senders: string[];
      seconds: number;
      bodyChars: number;
      maxBytes: number;
    }
  /** Connections that send their stream header one byte a second, for `seconds`. */
  | { kind: "slow-writers"; connections: number; seconds: number }
  /**
   * Before authentication, on the web listener: WebSocket messages and BOSH session requests
   * of `children` empty elements each (parsing them, not their bytes, is what they cost).
   */
  | { kind: "web-wide"; websockets: number; boshRequests: number; children: number; waitMs: number };

/** What the server did to the attacking connections. */
export interface AttackOutcome {
  kind: AttackSpec["kind"];
  connections: number;
  /** Connections the server closed, by stream error condition ("none": closed without one). */
  closedBy: Record<string, number>;
  /** Connections still open when the attack ended (the attacker then closes them). */
  leftOpen: number;
  /** Milliseconds from the attack's start to the server closing each connection: p50 and max. */
  closeMsP50: number | null;
  closeMsMax: number | null;
  /** Bytes the attackers handed to their sockets. */
  bytesWritten: number;
  /** Accounts that could not log in to attack (the server refused them, or timed out). */
  loginFailures: number;
}

/** Where the attackers connect, and the password of every account they use. */
export interface AttackGroupConfig {
  host: string;
  port: number;
  /** The plain web listener (WebSocket, BOSH), for the web attacks. */
  webPort?: number;
  domain: string;
  password: string;
}

const STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams";
const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Tallies the fate of an attack's connections. */
class Tally {
  readonly #started = performance.now();
  readonly #closeMs: number[] = [];
  readonly closedBy: Record<string, number> = {};
  connections = 0;
  bytesWritten = 0;
  loginFailures = 0;
  open = new Set<object>();

  opened(connection: object): void {
    this.connections++;
    this.open.add(connection);
  }

  /** Set once the outcome is taken: the attacker's own clean-up is not the server closing. */
  #done = false;

  closed(connection: object, condition: string | undefined): void {
    if (this.#done || !this.open.delete(connection)) return;
    this.closedBy[condition ?? "none"] = (this.closedBy[condition ?? "none"] ?? 0) + 1;
    this.#closeMs.push(performance.now() - this.#started);
  }

  outcome(kind: AttackSpec["kind"]): AttackOutcome {
    this.#done = true;
    const sorted = this.#closeMs.sort((a, b) => a - b);
    const at = (q: number): number | null =>
      sorted.length === 0
        ? null
        : Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);
    return {
      kind,
      connections: this.connections,
      closedBy: { ...this.closedBy },
      leftOpen: this.open.size,
      closeMsP50: at(0.5),
      closeMsMax: sorted.length === 0 ? null : Math.round(sorted.at(-1)!),
      bytesWritten: this.bytesWritten,
      loginFailures: this.loginFailures,
    };
  }
}

/** The attackers of one load child. */
export class AttackGroup {
  readonly #config: AttackGroupConfig;
  /** Whatever an attack leaves connected, destroyed at its end and at shutdown. */
  readonly #sockets = new Set<net.Socket>();
  readonly #clients = new Set<LoadClient>();
  readonly #webSockets = new Set<WebSocket>();
  readonly #requests = new Set<http.ClientRequest>();
  #nextSource = 40_000;

  constructor(config: AttackGroupConfig) {
    this.#config = config;
  }

  /** Runs one attack to its end and reports what the server did. */
  async run(spec: AttackSpec): Promise<AttackOutcome> {
    const tally = new Tally();
    try {
      switch (spec.kind) {
        case "nested-pre-auth":
          await this.#nestedPreAuth(spec, tally);
          break;
        case "nested-post-auth":
          await this.#oneStanza(spec.users, spec.waitMs, tally, (to) => nested(to, spec.depth), spec.to);
          break;
        case "wide-stanza":
          await this.#oneStanza(spec.users, spec.waitMs, tally, (to) => wide(to, spec.children), spec.to);
          break;
        case "flood":
          await this.#flood(spec, tally);
          break;
        case "non-readers":
          await this.#nonReaders(spec, tally);
          break;
        case "slow-writers":
          await this.#slowWriters(spec, tally);
          break;
        case "web-wide":
          await this.#webWide(spec, tally);
          break;
      }
      return tally.outcome(spec.kind);
    } finally {
      this.#cleanUp();
    }
  }

  async shutdown(): Promise<void> {
    this.#cleanUp();
  }

  #cleanUp(): void {
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    for (const client of this.#clients) client.destroy();
    this.#clients.clear();
    for (const ws of this.#webSockets) ws.terminate();
    this.#webSockets.clear();
    for (const request of this.#requests) request.destroy();
    this.#requests.clear();
  }

  /** A raw connection that has sent its stream header; reports the server's stream error. */
  #rawStream(tally: Tally, header = true): net.Socket {
    const socket = net.connect({
      host: this.#config.host,
      port: this.#config.port,
      noDelay: true,
      ...loopbackSourceFor(this.#config.host, this.#nextSource++),
    });
    this.#sockets.add(socket);
    tally.opened(socket);
    let received = "";
    socket.setEncoding("utf8");
    socket.on("data", (text: string) => {
      // Enough of the answer to find a stream error; the features are not of interest.
      if (received.length < 65_536) received += text;
    });
    socket.on("error", () => {});
    socket.on("close", () => tally.closed(socket, streamErrorIn(received)));
    if (header)
      socket.once("connect", () => (tally.bytesWritten += write(socket, streamHeader(this.#config.domain))));
    return socket;
  }

  async #nestedPreAuth(spec: Extract<AttackSpec, { kind: "nested-pre-auth" }>, tally: Tally): Promise<void> {
    const payload = "<nest>".repeat(spec.depth);
    for (let i = 0; i < spec.connections; i++) {
      const socket = this.#rawStream(tally);
      socket.once("connect", () => (tally.bytesWritten += write(socket, payload)));
    }
    await this.#untilClosed(tally, spec.waitMs);
  }

  /** Logged-in clients of `users`, each of which reports its end to `tally`. */
  async #logIn(users: readonly string[], tally: Tally, onMessage = false): Promise<LoadClient[]> {
    const clients = users.map(
      (username) =>
        new Client({
          host: this.#config.host,
          port: this.#config.port,
          domain: this.#config.domain,
          username,
          password: this.#config.password,
          resource: "attack",
          streamManagement: false,
          ...loopbackSourceFor(this.#config.host, this.#nextSource++),
          ...(onMessage ? { onMessage: () => {} } : {}),
          onClose: (client, error) => tally.closed(client, error?.condition),
        }),
    );
    const online: LoadClient[] = [];
    await Promise.all(
      clients.map(async (client) => {
        this.#clients.add(client);
        try {
          await client.login();
          tally.opened(client);
          online.push(client);
        } catch {
          tally.loginFailures++;
        }
      }),
    );
    return online;
  }

  async #oneStanza(
    users: readonly string[],
    waitMs: number,
    tally: Tally,
    stanza: (to: string) => string,
    to: string,
  ): Promise<void> {
    const clients = await this.#logIn(users, tally);
    for (const client of clients) {
      const xml = stanza(to);
      client.sendRaw(xml);
      tally.bytesWritten += Buffer.byteLength(xml);
    }
    await this.#untilClosed(tally, waitMs);
  }

  async #flood(spec: Extract<AttackSpec, { kind: "flood" }>, tally: Tally): Promise<void> {
    await this.#logIn([spec.victim], new Tally(), true);
    const clients = await this.#logIn(spec.users, tally);
    const body = "f".repeat(spec.bodyChars);
    const message = `<message to='${spec.to}' type='chat'><body>${body}</body></message>`;
    const bytes = Buffer.byteLength(message);
    const until = performance.now() + spec.seconds * 1000;
    while (performance.now() < until && tally.open.size > 0) {
      for (const client of clients) {
        // Keep each socket's own buffer topped up: the server, not this process, is the limit.
        while (client.status === "online" && client.writableLength < 262_144) {
          client.sendRaw(message);
          tally.bytesWritten += bytes;
        }
      }
      await delay(1);
    }
  }

  async #nonReaders(spec: Extract<AttackSpec, { kind: "non-readers" }>, tally: Tally): Promise<void> {
    const receivers = await this.#logIn(spec.receivers, tally);
    for (const receiver of receivers) receiver.pauseReading();
    // The senders are not the attack: they are what fills the receivers' queues.
    const senderTally = new Tally();
    const senders = await this.#logIn(spec.senders, senderTally, true);
    const body = "n".repeat(spec.bodyChars);
    const targets = receivers.map((receiver) => receiver.jid.split("/")[0]!);
    const until = performance.now() + spec.seconds * 1000;
    let next = 0;
    while (performance.now() < until && tally.bytesWritten < spec.maxBytes && tally.open.size > 0) {
      for (const sender of senders) {
        if (sender.status !== "online" || sender.writableLength >= 262_144) continue;
        const message = `<message to='${targets[next++ % targets.length]}' type='chat'><body>${body}</body></message>`;
        sender.sendRaw(message);
        tally.bytesWritten += Buffer.byteLength(message);
      }
      await delay(1);
    }
    // Whatever the server still holds for them has a moment to be cut off.
    await this.#untilClosed(tally, 3_000);
  }

  async #slowWriters(spec: Extract<AttackSpec, { kind: "slow-writers" }>, tally: Tally): Promise<void> {
    const header = streamHeader(this.#config.domain);
    const sockets: net.Socket[] = [];
    for (let i = 0; i < spec.connections; i++) sockets.push(this.#rawStream(tally, false));
    const until = performance.now() + spec.seconds * 1000;
    for (let at = 0; performance.now() < until && tally.open.size > 0; at++) {
      for (const socket of sockets) {
        if (!socket.destroyed && socket.writable)
          tally.bytesWritten += write(socket, header[at % header.length]!);
      }
      await delay(Math.min(1_000, Math.max(0, until - performance.now())));
    }
  }

  async #webWide(spec: Extract<AttackSpec, { kind: "web-wide" }>, tally: Tally): Promise<void> {
    const { host, webPort, domain } = this.#config;
    if (webPort === undefined) throw new Error("the web attacks need the server's plain web port");
    const children = "<x/>".repeat(spec.children);
    const message = `<message xmlns='${NS_CLIENT}' to='nobody@${domain}' type='chat'><body>wide</body>${children}</message>`;
    for (let i = 0; i < spec.websockets; i++) {
      const ws = new WebSocket(`ws://${host}:${webPort}${WEBSOCKET_PATH}`, "xmpp", {
        ...loopbackSourceFor(host, this.#nextSource++),
      });
      this.#webSockets.add(ws);
      tally.opened(ws);
      let received = "";
      ws.on("message", (data) => {
        if (received.length < 65_536) received += data.toString();
      });
      ws.on("error", () => {});
      ws.on("close", () => tally.closed(ws, streamErrorIn(received)));
      ws.on("open", () => {
        ws.send(`<open xmlns='${NS_FRAMING}' to='${domain}' version='1.0'/>`);
        ws.send(message);
        tally.bytesWritten += message.length;
      });
    }
    const body = `<body rid='1' to='${domain}' wait='10' hold='1' ver='1.6' xmlns='http://jabber.org/protocol/httpbind'>${message}</body>`;
    for (let i = 0; i < spec.boshRequests; i++) {
      const request = http.request({
        host,
        port: webPort,
        path: BOSH_PATH,
        method: "POST",
        agent: false,
        headers: { "content-type": "text/xml; charset=utf-8" },
        ...loopbackSourceFor(host, this.#nextSource++),
      });
      this.#requests.add(request);
      tally.opened(request);
      request.on("error", () => tally.closed(request, "none"));
      request.on("response", (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => (text += chunk));
        // A BOSH error is a terminate body's condition (XEP-0124 §17.2).
        response.on("end", () => tally.closed(request, /condition=["']([a-z-]+)/.exec(text)?.[1]));
      });
      request.end(body);
      tally.bytesWritten += body.length;
    }
    await this.#untilClosed(tally, spec.waitMs);
  }

  /** Waits until every connection of `tally` is closed, or `ms` passed. */
  async #untilClosed(tally: Tally, ms: number): Promise<void> {
    const until = performance.now() + ms;
    while (tally.open.size > 0 && performance.now() < until) await delay(20);
  }
}

function write(socket: net.Socket, text: string): number {
  if (socket.destroyed || !socket.writable) return 0;
  socket.write(text);
  return Buffer.byteLength(text);
}

function streamHeader(domain: string): string {
  return `<?xml version='1.0'?><stream:stream to='${domain}' version='1.0' xmlns='${NS_CLIENT}' xmlns:stream='${NS_STREAM}'>`;
}

function nested(to: string, depth: number): string {
  return `<message to='${to}' type='chat'><body>nested</body>${"<x>".repeat(depth)}${"</x>".repeat(depth)}</message>`;
}

function wide(to: string, children: number): string {
  return `<message to='${to}' type='chat'><body>wide</body>${"<x/>".repeat(children)}</message>`;
}

/** The condition of the stream error in what a server sent, if any (RFC 6120 §4.9.3). */
function streamErrorIn(received: string): string | undefined {
  const at = received.indexOf(STREAM_ERRORS_NS);
  if (at < 0) return undefined;
  const open = received.lastIndexOf("<", at);
  return /^<([a-z-]+)/.exec(received.slice(open))?.[1];
}
