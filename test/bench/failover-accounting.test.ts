/**
 * The failover harness must report exactly what happened. These tests aim it (as a child
 * process, through `--target`) at a small XMPP server defined here, which speaks just enough of
 * the protocol for the load clients (stream, SASL PLAIN, bind, roster, presence, message
 * routing, XEP-0198 enable/ack/resume with `<failed h/>`) and misbehaves on purpose in known
 * ways: it acknowledges and then drops chosen messages, delivers others twice, cuts chosen
 * clients' connections (they resume), forgets one client's session (it must log in again), and
 * "kills" one of its two listening ports through a control endpoint used as `--kill-cmd`.
 * The report must show exactly those numbers.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { escapeXML } from "ltx/src/escape.js";
import { childOf, textOf, type XmlElement, XmlStreamReader } from "../../bench/lib/xml-stream.ts";
import { REPO_ROOT } from "../helpers/start-node.ts";
import { withTimeout } from "../helpers/wait-for.ts";

const NS_SM = "urn:xmpp:sm:3";
const DOMAIN = "localhost";

/** What the server is told to do wrong, by the routed message's 1-based index. */
interface FaultPlan {
  drop: Set<number>;
  duplicate: Set<number>;
  /** Cut this user's connection after routing message i; the session stays resumable. */
  disconnect: Map<number, string>;
  /** After message i, forget this user's session once it has acknowledged everything. */
  forget: Map<number, string>;
  /**
   * Forgotten users whose next roster query goes unanswered: that login times out after
   * `<enabled/>` and before initial presence, and the client's next attempt resumes a session
   * that never had presence.
   */
  stallRoster: Set<string>;
}

/** One XEP-0198 session on the server. */
interface Session {
  id: string;
  user: string;
  conn: Conn | undefined;
  handledIn: number;
  /** Stanzas written to the client and not yet acknowledged, oldest first. */
  unacked: string[];
  ackedOut: number;
  forgetting: boolean;
}

interface Conn {
  socket: net.Socket;
  node: number;
  reader: XmlStreamReader;
  user: string | undefined;
  session: Session | undefined;
  managed: boolean;
}

/** The misbehaving test server; see the file comment. */
class AccountingServer {
  readonly tally = {
    routed: 0,
    dropped: 0,
    duplicated: 0,
    cut: [] as string[],
    forgotten: [] as string[],
    killedSessions: 0,
  };
  readonly ports: number[] = [];
  controlPort = 0;
  #plan: FaultPlan;
  #listeners: net.Server[] = [];
  #control = http.createServer((req, res) => this.#onControl(req, res));
  #conns = new Set<Conn>();
  #sessions = new Map<string, Session>();
  #byUser = new Map<string, Session>();
  #available = new Set<string>();
  /** Resumption ids of forgotten sessions, with the count of stanzas handled (for <failed h/>). */
  #tombstones = new Map<string, number>();
  #offline = new Map<string, string[]>();
  #stallNextRoster = new Set<string>();

  constructor(plan: FaultPlan) {
    this.#plan = plan;
  }

  async listen(nodes: number): Promise<void> {
    for (let node = 0; node < nodes; node++) {
      const server = net.createServer((socket) => this.#accept(socket, node));
      server.listen(0, "127.0.0.1");
      await once(server, "listening");
      this.#listeners.push(server);
      this.ports.push((server.address() as net.AddressInfo).port);
    }
    this.#control.listen(0, "127.0.0.1");
    await once(this.#control, "listening");
    this.controlPort = (this.#control.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const conn of this.#conns) conn.socket.destroy();
    await Promise.all([...this.#listeners, this.#control].map((s) => new Promise((r) => s.close(r))));
  }

  /** POST /kill/:i — node i dies: its connections drop and it stops accepting. */
  #onControl(req: http.IncomingMessage, res: http.ServerResponse): void {
    const match = /^\/kill\/(\d+)$/.exec(req.url ?? "");
    const node = Number(match?.[1]);
    if (req.method !== "POST" || this.#listeners[node] === undefined) {
      res.writeHead(404).end();
      return;
    }
    this.#listeners[node].close();
    for (const conn of [...this.#conns]) {
      if (conn.node !== node) continue;
      if (conn.session !== undefined) this.tally.killedSessions++;
      conn.socket.destroy();
    }
    res.writeHead(204).end();
  }

  #accept(socket: net.Socket, node: number): void {
    const conn: Conn = {
      socket,
      node,
      user: undefined,
      session: undefined,
      managed: false,
      reader: new XmlStreamReader({
        onStreamStart: () => this.#onStreamStart(conn),
        onElement: (el) => this.#onElement(conn, el),
        onStreamEnd: () => {
          this.#write(conn, "</stream:stream>");
          this.#endSession(conn);
          socket.end();
        },
        onError: () => socket.destroy(),
      }),
    };
    this.#conns.add(conn);
    socket.on("data", (chunk: Buffer) => conn.reader.write(chunk));
    socket.on("error", () => socket.destroy());
    socket.on("close", () => {
      this.#conns.delete(conn);
      // A managed session outlives its connection, waiting for <resume/>.
      if (conn.session !== undefined && conn.session.conn === conn) conn.session.conn = undefined;
      if (conn.session !== undefined && !conn.managed) this.#endSession(conn);
    });
  }

  #write(conn: Conn, xml: string): void {
    if (!conn.socket.destroyed) conn.socket.write(xml);
  }

  #onStreamStart(conn: Conn): void {
    const features =
      conn.user === undefined
        ? "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>"
        : `<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='${NS_SM}'/>`;
    this.#write(
      conn,
      `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' ` +
        `id='${randomBytes(6).toString("hex")}' from='${DOMAIN}' version='1.0'><stream:features>${features}</stream:features>`,
    );
  }

  #onElement(conn: Conn, el: XmlElement): void {
    const ns = el.attrs.xmlns;
    if (el.name === "auth") {
      const [, user, password] = Buffer.from(textOf(el), "base64").toString("utf8").split("\0");
      if (password !== "pw" || user === undefined) {
        this.#write(conn, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
        return;
      }
      conn.user = user;
      this.#write(conn, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
      conn.reader.reset();
      return;
    }
    if (ns === NS_SM) return this.#onSm(conn, el);
    if (conn.managed && conn.session !== undefined) conn.session.handledIn++;
    if (el.name === "iq") return this.#onIq(conn, el);
    if (el.name === "presence") {
      if (el.attrs.type === undefined && conn.user !== undefined) {
        this.#available.add(conn.user);
        // A server-initiated stanza the client must answer, and count both ways (XEP-0198 §4).
        this.#deliver(conn.session!, "<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>");
        const stored = this.#offline.get(conn.user) ?? [];
        this.#offline.delete(conn.user);
        for (const xml of stored) this.#deliver(conn.session!, xml);
      }
      return;
    }
    if (el.name === "message") this.#route(conn, el);
  }

  #onIq(conn: Conn, iq: XmlElement): void {
    const id = escapeXML(iq.attrs.id ?? "");
    if (childOf(iq, "bind") !== undefined) {
      const user = conn.user!;
      const session: Session = {
        id: randomBytes(8).toString("hex"),
        user,
        conn,
        handledIn: 0,
        unacked: [],
        ackedOut: 0,
        forgetting: false,
      };
      this.#byUser.get(user)?.conn?.socket.destroy();
      conn.session = session;
      this.#byUser.set(user, session);
      this.#write(
        conn,
        `<iq type='result' id='${id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>${user}@${DOMAIN}/load</jid></bind></iq>`,
      );
      return;
    }
    if (childOf(iq, "query", "jabber:iq:roster") !== undefined) {
      if (this.#stallNextRoster.delete(conn.user!)) return;
      this.#deliver(conn.session!, `<iq type='result' id='${id}'><query xmlns='jabber:iq:roster'/></iq>`);
      return;
    }
    this.#deliver(conn.session!, `<iq type='result' id='${id}'/>`);
  }

  #onSm(conn: Conn, el: XmlElement): void {
    const session = conn.session;
    switch (el.name) {
      case "enable": {
        conn.managed = true;
        this.#sessions.set(session!.id, session!);
        this.#write(conn, `<enabled xmlns='${NS_SM}' id='${session!.id}' resume='true' max='60'/>`);
        return;
      }
      case "r":
        if (session !== undefined) this.#write(conn, `<a xmlns='${NS_SM}' h='${session.handledIn}'/>`);
        return;
      case "a": {
        if (session === undefined) return;
        this.#ack(session, Number(el.attrs.h));
        if (session.forgetting && session.unacked.length === 0) this.#forget(session);
        return;
      }
      case "resume": {
        const previd = el.attrs.previd ?? "";
        const old = this.#sessions.get(previd);
        if (old === undefined) {
          const h = this.#tombstones.get(previd);
          this.#write(
            conn,
            `<failed xmlns='${NS_SM}'${h === undefined ? "" : ` h='${h}'`}>` +
              "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>",
          );
          return;
        }
        old.conn?.socket.destroy();
        this.#ack(old, Number(el.attrs.h));
        old.conn = conn;
        conn.session = old;
        conn.managed = true;
        this.#write(conn, `<resumed xmlns='${NS_SM}' h='${old.handledIn}' previd='${old.id}'/>`);
        for (const xml of old.unacked) this.#write(conn, xml);
        return;
      }
      default:
        return;
    }
  }

  #ack(session: Session, h: number): void {
    session.unacked.splice(0, h - session.ackedOut);
    session.ackedOut = h;
  }

  /** Writes to the session's connection if it has one; with XEP-0198 it is kept until acked. */
  #deliver(session: Session, xml: string): void {
    if (session.conn?.managed) session.unacked.push(xml);
    else if (session.conn === undefined) session.unacked.push(xml);
    if (session.conn !== undefined) this.#write(session.conn, xml);
  }

  #route(conn: Conn, el: XmlElement): void {
    const index = ++this.tally.routed;
    const to = (el.attrs.to ?? "").split("@")[0]!;
    const xml =
      `<message from='${conn.user}@${DOMAIN}/load' to='${escapeXML(el.attrs.to ?? "")}' type='chat'>` +
      `<body>${escapeXML(textOf(childOf(el, "body")!))}</body></message>`;
    if (this.#plan.drop.has(index)) this.tally.dropped++;
    else {
      const copies = this.#plan.duplicate.has(index) ? 2 : 1;
      if (copies === 2) this.tally.duplicated++;
      for (let k = 0; k < copies; k++) {
        const target = this.#byUser.get(to);
        if (target === undefined || target.forgetting || !this.#available.has(to)) {
          const list = this.#offline.get(to) ?? [];
          list.push(xml);
          this.#offline.set(to, list);
        } else this.#deliver(target, xml);
      }
    }
    const cut = this.#plan.disconnect.get(index);
    const session = cut === undefined ? undefined : this.#byUser.get(cut);
    if (session?.conn !== undefined) {
      this.tally.cut.push(cut!);
      session.conn.socket.destroy();
    }
    const forget = this.#plan.forget.get(index);
    const doomed = forget === undefined ? undefined : this.#byUser.get(forget);
    if (doomed?.conn !== undefined) {
      // From now on its messages wait offline; once it has acknowledged all it got, it is cut
      // and forgotten, so nothing unacknowledged is lost with the session.
      doomed.forgetting = true;
      this.#write(doomed.conn, `<r xmlns='${NS_SM}'/>`);
    }
  }

  #forget(session: Session): void {
    this.tally.forgotten.push(session.user);
    if (this.#plan.stallRoster.has(session.user)) this.#stallNextRoster.add(session.user);
    this.#tombstones.set(session.id, session.handledIn);
    this.#sessions.delete(session.id);
    this.#byUser.delete(session.user);
    this.#available.delete(session.user);
    session.conn?.socket.destroy();
  }

  #endSession(conn: Conn): void {
    const session = conn.session;
    if (session === undefined) return;
    this.#sessions.delete(session.id);
    if (this.#byUser.get(session.user) === session) {
      this.#byUser.delete(session.user);
      this.#available.delete(session.user);
    }
  }
}

/** Runs `npm run bench -- <args>` as a child and returns its report.json. */
async function runHarness(args: string[], outDir: string): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [join(REPO_ROOT, "bench", "run.ts"), ...args, "--out", outDir], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk));
  const [code] = (await withTimeout(once(child, "exit"), "the harness to finish", 40_000).catch((error) => {
    child.kill("SIGKILL");
    throw error;
  })) as [number | null];
  assert.equal(code, 0, `harness failed:\n${output}`);
  return JSON.parse(await readFile(join(outDir, "report.json"), "utf8")) as Record<string, unknown>;
}

const COMMON = ["--clients", "20", "--rate", "100", "--mechanism", "PLAIN", "--backoff-ms", "100"];

test("failover harness reports exactly the messages a server dropped and duplicated and the clients it cut", async (t) => {
  const plan: FaultPlan = {
    drop: new Set([30, 60, 90]),
    duplicate: new Set([45, 75]),
    disconnect: new Map([
      [40, "user3"],
      [80, "user7"],
    ]),
    forget: new Map([
      [100, "user11"],
      [110, "user15"],
    ]),
    stallRoster: new Set(["user15"]),
  };
  const server = new AccountingServer(plan);
  await server.listen(1);
  const out = await mkdtemp(join(tmpdir(), "failover-accounting-"));
  t.after(async () => {
    await server.close();
    await rm(out, { recursive: true, force: true });
  });

  const report = await runHarness(
    [
      "steady",
      "--target",
      `127.0.0.1:${server.ports[0]}`,
      ...COMMON,
      ...["--duration", "3", "--seed", "7", "--login-timeout-ms", "1500"],
    ],
    out,
  );

  // The server did what the plan said (enough traffic reached every planned index)...
  assert.ok(server.tally.routed >= 100, `only ${server.tally.routed} messages routed`);
  assert.equal(server.tally.dropped, 3);
  assert.equal(server.tally.duplicated, 2);
  assert.deepEqual(server.tally.cut.sort(), ["user3", "user7"]);
  assert.deepEqual(server.tally.forgotten, ["user11", "user15"]);
  // ...and the harness saw exactly that.
  assert.equal(report.lost, 3);
  assert.equal(report.lost_pairs, 3);
  assert.equal(report.duplicated, 2);
  assert.equal(report.disconnected, 4);
  assert.equal(report.disconnected_not_on_failed_node, 4, "no fault event explains these");
  // user15's new login timed out after <enabled/>; it came back by resuming that session.
  assert.equal(report.resumed, 3);
  assert.equal(report.relogged, 1);
  assert.equal(report.not_reconnected, 0);
  assert.equal(report.unacked_at_end, 0);
  assert.equal(report.phantom, 0);
  assert.equal(report.misrouted, 0);
  assert.equal(report.ack_anomalies, 0);
  assert.equal(report.impossible_acks, 0);
  assert.equal(report.sent, server.tally.routed, "every routed message was acknowledged and counted as sent");
  assert.equal(report.delivered, (report.sent as number) - 3);
});

/** A server that does everything right on `nodes` ports, and a report folder; both go after `t`. */
async function faultlessServer(t: TestContext, nodes: number, prefix: string) {
  const plan: FaultPlan = {
    drop: new Set(),
    duplicate: new Set(),
    disconnect: new Map(),
    forget: new Map(),
    stallRoster: new Set(),
  };
  const server = new AccountingServer(plan);
  await server.listen(nodes);
  const out = await mkdtemp(join(tmpdir(), prefix));
  t.after(async () => {
    await server.close();
    await rm(out, { recursive: true, force: true });
  });
  return { server, out };
}

test("failover harness attributes disconnects to a killed node and counts the resumptions on the other, over two load processes", async (t) => {
  const { server, out } = await faultlessServer(t, 2, "failover-kill-");
  const killCmd = `"${process.execPath}" -e "fetch('http://127.0.0.1:${server.controlPort}/kill/{i}',{method:'POST'}).then((r)=>process.exit(r.ok?0:1))"`;

  const report = await runHarness(
    [
      "kill-under-load",
      "--target",
      server.ports.map((p) => `127.0.0.1:${p}`).join(","),
      ...COMMON,
      "--duration",
      "3",
      "--event-at",
      "1",
      "--tail",
      "1",
      "--victim",
      "1",
      "--kill-cmd",
      killCmd,
      // Two load processes: the accounting must merge what each saw.
      "--loadgen-procs",
      "2",
    ],
    out,
  );

  // Round-robin put half of the clients on node 1; all of them, and only them, were cut.
  assert.equal(server.tally.killedSessions, 10);
  const events = report.events as { kind: string; nodes: number[]; ok: boolean; clients: number }[];
  assert.equal(events.length, 1);
  assert.deepEqual([events[0]!.kind, events[0]!.nodes, events[0]!.ok], ["kill", [1], true]);
  assert.equal(events[0]!.clients, 10);
  assert.equal(report.disconnected, 10);
  assert.equal(report.disconnected_not_on_failed_node, 0);
  assert.equal(report.resumed, 10, "every session resumed on the surviving node");
  assert.equal(report.relogged, 0);
  assert.equal(report.lost, 0);
  assert.equal(report.duplicated, 0);
  assert.equal(report.unacked_at_end, 0);
  const perNode = report.per_node as { clients_at_load_start: number; disconnects: number }[];
  assert.deepEqual(
    perNode.map((n) => [n.clients_at_load_start, n.disconnects]),
    [
      [10, 0],
      [10, 10],
    ],
  );
});

test("failover harness cuts every client at once in a reconnect storm and sees all of them resume", async (t) => {
  const { server, out } = await faultlessServer(t, 1, "failover-storm-");

  const report = await runHarness(
    [
      "reconnect-storm",
      "--target",
      `127.0.0.1:${server.ports[0]}`,
      ...COMMON,
      ...["--duration", "3", "--event-at", "1", "--tail", "1", "--loadgen-procs", "2"],
      // The test process hosts the server: its CPU is what --pid samples.
      ...["--pid", String(process.pid)],
    ],
    out,
  );

  const events = report.events as {
    kind: string;
    nodes: number[];
    clients: number;
    resumed: number;
    all_back_after_ms: number | null;
    server_cpu_s_until_all_back: number | null;
  }[];
  assert.equal(events.length, 1);
  assert.deepEqual([events[0]!.kind, events[0]!.nodes], ["clients-cut", [0]]);
  assert.equal(events[0]!.clients, 20, "every client, over both load processes, was cut");
  assert.equal(events[0]!.resumed, 20);
  assert.ok(events[0]!.all_back_after_ms !== null, "everyone came back");
  assert.equal(typeof events[0]!.server_cpu_s_until_all_back, "number", "the --pid process was sampled");
  assert.equal(report.disconnected_not_on_failed_node, 0);
  assert.equal(report.relogged, 0);
  assert.equal(report.lost, 0);
  assert.equal(report.duplicated, 0);
  const perNode = report.per_node as { cpu_s: number | null }[];
  assert.ok(perNode[0]!.cpu_s !== null && perNode[0]!.cpu_s > 0, "the --pid process was sampled");
});
