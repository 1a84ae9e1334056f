/**
 * Peer links between node processes, tested with several PeerNetworks in this process over real
 * WebSockets on 127.0.0.1, over TLS unless a test says otherwise: authentication, versioning,
 * order and exactly-once delivery across socket loss, peer restarts, overflow and heartbeats. Faults are injected from outside the
 * code under test: a TCP proxy that can cut or black-hole the link, and raw peers written with
 * the protocol helpers.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer as createHttpsServer } from "node:https";
import { createServer, type Socket, connect as tcpConnect } from "node:net";
import { type TestContext, test } from "node:test";
import { WebSocketServer } from "ws";
import {
  PEER_PROTOCOL_VERSION,
  type PeerIdentity,
  PeerNetwork,
  type PeerNetworkOptions,
  type PeerTrust,
  probePeer,
} from "../../src/cluster/peer/peer-network.ts";
import {
  decodeFrame,
  encodeFrame,
  helloMac,
  macEquals,
  newNonce,
  PEER_PATH,
  welcomeMac,
} from "../../src/cluster/peer/protocol.ts";
import type { XmppServerError } from "../../src/errors.ts";
import { createLogger, type Logger } from "../../src/log.ts";
import { makeCa, makeCertificate, type TestCertificate } from "../helpers/certificates.ts";
import { waitForEvent, waitForMatchingEvent, waitUntil, withTimeout } from "../helpers/wait-for.ts";

const SECRET = "correct horse battery staple";
/** The TLS settings of probePeer() callers (a dialler presents no certificate of its own). */
const PROBER = await makeCertificate("prober");

interface LogLine {
  level: string;
  msg?: string;
  [key: string]: unknown;
}

function captureLog(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = createLogger({ level: "debug", write: (line) => lines.push(JSON.parse(line) as LogLine) });
  return { log, lines };
}

function identity(node: string, overrides: Partial<PeerIdentity> = {}): PeerIdentity {
  return {
    node,
    incarnation: 1_000,
    partitions: 4096,
    hash: "sha1-64",
    protocol: PEER_PROTOCOL_VERSION,
    peerAddr: "",
    ...overrides,
  };
}

interface Started {
  network: PeerNetwork;
  addr: string;
  port: number;
  lines: LogLine[];
  certificate: TestCertificate;
  /** What its member row would publish: the fingerprint of its certificate (null: plain). */
  trust: PeerTrust;
}

/**
 * Starts a network on 127.0.0.1 (closed after the test), with test-sized timers, serving TLS
 * with `certificate` (a new self-signed one by default) unless `tls` is given.
 */
async function startNetwork(
  t: TestContext,
  self: PeerIdentity,
  options: Partial<PeerNetworkOptions> & { certificate?: TestCertificate } = {},
): Promise<Started> {
  const { log, lines } = captureLog();
  const { certificate = await makeCertificate(self.node), ...rest } = options;
  const network = new PeerNetwork({
    self,
    secret: SECRET,
    tls: { cert: certificate.cert, key: certificate.key },
    host: "127.0.0.1",
    port: 0,
    log,
    reconnectMinMs: 20,
    reconnectMaxMs: 200,
    ...rest,
  });
  t.after(() => network.close());
  const port = await network.listen();
  const trust = { certSha256: network.certSha256 };
  return { network, addr: `127.0.0.1:${port}`, port, lines, certificate, trust };
}

/** Resolves when `network` has received `count` messages from `node`; collects them in order. */
function collect(network: PeerNetwork, node: string, count: number, timeoutMs = 10_000) {
  const received: unknown[] = [];
  let done: () => void = () => {};
  const all = new Promise<void>((resolve) => {
    done = resolve;
  });
  network.on("message", (from, message) => {
    if (from !== node) return;
    received.push(message);
    if (received.length === count) done();
  });
  return { received, all: () => withTimeout(all, `${count} messages from ${node}`, timeoutMs) };
}

/** Sends 0..count-1 in bursts of `burst`, one burst per event-loop turn; calls `between` after each. */
async function sendInBursts(
  network: PeerNetwork,
  to: string,
  count: number,
  burst: number,
  between: (sent: number) => Promise<void> | void = () => {},
) {
  for (let i = 0; i < count; ) {
    for (const end = Math.min(count, i + burst); i < end; i++) assert.ok(network.send(to, { i }));
    await new Promise((resolve) => setImmediate(resolve));
    await between(i);
  }
}

/** The arguments of the next `event` on `emitter`. */
function nextEvent<A extends unknown[]>(emitter: PeerNetwork, event: string, timeoutMs = 5_000): Promise<A> {
  return waitForMatchingEvent<A>(emitter, event, () => true, `"${event}"`, timeoutMs);
}

function assertInOrder(received: unknown[], count: number): void {
  assert.equal(received.length, count);
  for (let i = 0; i < count; i++) {
    if ((received[i] as { i: number }).i !== i) {
      assert.fail(`message ${i} is ${JSON.stringify(received[i])}`);
    }
  }
}

/**
 * A TCP proxy in front of a peer server that can cut or black-hole the connections it carries,
 * and keeps every byte it carried from the dialler (what a wiretap on the link would see).
 */
async function startProxy(t: TestContext, targetPort: number) {
  const pairs = new Set<[Socket, Socket]>();
  const carried: Buffer[] = [];
  const server = createServer((client) => {
    const upstream = tcpConnect(targetPort, "127.0.0.1");
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    client.on("data", (chunk: Buffer) => carried.push(chunk));
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    for (const socket of pair) {
      socket.on("error", drop);
      socket.on("close", drop);
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const cut = () => {
    for (const [client, upstream] of pairs) {
      client.destroy();
      upstream.destroy();
    }
    pairs.clear();
  };
  t.after(() => {
    cut();
    server.close();
  });
  const address = server.address();
  assert.ok(typeof address === "object" && address !== null);
  return {
    addr: `127.0.0.1:${address.port}`,
    connections: () => pairs.size,
    /** Every byte the dialler sent through the proxy so far. */
    carried: () => Buffer.concat(carried),
    /** Destroys every carried connection (both sides see it end). */
    cut,
    /** Stops carrying bytes either way on the current connections, leaving them open. */
    blackhole() {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
  };
}

/**
 * A peer written by hand with the protocol helpers: it completes the handshake as `self`, then
 * never acknowledges data, and answers pings only if told to.
 */
async function startRawPeer(t: TestContext, self: PeerIdentity, options: { answerPings: boolean }) {
  const certificate = await makeCertificate(self.node);
  const https = createHttpsServer({ cert: certificate.cert, key: certificate.key });
  const server = new WebSocketServer({ server: https, path: PEER_PATH });
  https.listen(0, "127.0.0.1");
  await once(https, "listening");
  const state = { dataFrames: 0, pings: 0 };
  server.on("connection", (ws) => {
    const nonce = newNonce();
    ws.send(encodeFrame({ kind: "challenge", protocol: 1, protocolMin: 1, nonce }));
    ws.on("message", (data) => {
      const frame = decodeFrame(data as Buffer);
      if (frame?.kind === "hello") {
        assert.ok(macEquals(helloMac(SECRET, nonce, frame), frame.mac), "the dialler proves the secret");
        const welcome = { identity: self, protocolMin: 1, negotiated: 1, lastDelivered: 0 };
        ws.send(
          encodeFrame({ kind: "welcome", ...welcome, mac: welcomeMac(SECRET, frame.nonce, nonce, welcome) }),
        );
      } else if (frame?.kind === "ping") {
        state.pings++;
        if (options.answerPings) ws.send(encodeFrame({ kind: "pong", id: frame.id }));
      } else if (frame?.kind === "data") {
        state.dataFrames++;
      }
    });
  });
  t.after(() => {
    for (const ws of server.clients) ws.terminate();
    server.close();
    https.close();
  });
  const address = https.address();
  assert.ok(typeof address === "object" && address !== null);
  return { addr: `127.0.0.1:${address.port}`, state, trust: { certSha256: certificate.certSha256 } };
}

test("peer links come up both ways and deliver 10,000 messages each way in order, exactly once", async (t) => {
  const a = await startNetwork(t, identity("a"));
  const b = await startNetwork(t, identity("b"));
  const aUp = waitForEvent<PeerIdentity>(a.network, "peer-up");
  const bUp = waitForEvent<PeerIdentity>(b.network, "peer-up");
  a.network.connect(b.addr, b.trust);
  b.network.connect(a.addr, a.trust);
  assert.equal((await aUp).node, "b");
  assert.equal((await bUp).node, "a");
  assert.ok(a.network.isUp("b") && b.network.isUp("a"));
  assert.deepEqual(
    a.network.peers().map((p) => p.node),
    ["b"],
  );
  assert.equal(a.network.protocolOf("b"), PEER_PROTOCOL_VERSION);
  assert.equal(a.network.send("nobody", "x"), false, "no link to an unknown node");

  const N = 10_000;
  const atB = collect(b.network, "a", N + 1);
  const atA = collect(a.network, "b", N + 1);
  // Bursts of 700 cross the 512-message batch limit; bursts of 300 stay under it.
  await Promise.all([sendInBursts(a.network, "b", N, 700), sendInBursts(b.network, "a", N, 300)]);
  // A marker sent after everything: nothing (no duplicate) may arrive between the last message
  // and the marker.
  a.network.send("b", "end");
  b.network.send("a", "end");
  await atB.all();
  await atA.all();
  assert.equal(atB.received.pop(), "end");
  assert.equal(atA.received.pop(), "end");
  assertInOrder(atB.received, N);
  assertInOrder(atA.received, N);
  assert.ok(
    a.lines.some((l) => l.msg === "peer link up" && l.peer === "b" && l.level === "info"),
    "peer up is logged at info",
  );

  // disconnect() closes only our outbound link: b still hears from a.
  const down = nextEvent<[string, string]>(b.network, "peer-down");
  b.network.disconnect("a");
  assert.deepEqual(await down, ["a", "disconnected"]);
  assert.equal(b.network.isUp("a"), false);
  assert.equal(b.network.send("a", "after disconnect"), false);
  const later = collect(b.network, "a", 1);
  a.network.send("b", "still linked");
  await later.all();
  assert.deepEqual(later.received, ["still linked"]);
});

test("a dialler with the wrong secret is refused on both sides and never delivers", async (t) => {
  const b = await startNetwork(t, identity("b"));
  const a = await startNetwork(t, identity("a"), { secret: "wrong secret" });
  let delivered = 0;
  b.network.on("message", () => delivered++);
  const refused = nextEvent<[string, XmppServerError]>(a.network, "refused");
  a.network.connect(b.addr, b.trust);
  const [addr, error] = await refused;
  assert.equal(addr, b.addr);
  assert.equal(error.code, "XSRV_PEER_REFUSED");
  assert.match(error.message, /secret/);
  assert.equal(a.network.isUp("b"), false);
  assert.equal(a.network.send("b", "hello?"), false);
  assert.equal(delivered, 0);

  const serverError = b.lines.find((l) => l.level === "error");
  assert.ok(serverError, "the server logs the refusal as an error");
  assert.match(String(serverError.msg), /127\.0\.0\.1:\d+/, "naming the remote address");
  assert.ok(a.lines.some((l) => l.level === "error" && l.code === "XSRV_PEER_REFUSED"));

  await assert.rejects(
    probePeer(b.addr, { self: identity("a"), secret: "wrong secret", tls: PROBER, trust: b.trust }),
    {
      code: "XSRV_PEER_REFUSED",
    },
  );
  const probed = await probePeer(b.addr, {
    self: identity("a"),
    secret: SECRET,
    tls: PROBER,
    trust: b.trust,
  });
  assert.equal(probed.node, "b");
  assert.equal(delivered, 0);
});

test("a ring or protocol mismatch is refused as incompatible; a newer protocol links down to the older one", async (t) => {
  const b = await startNetwork(t, identity("b"));
  const small = await startNetwork(t, identity("small", { partitions: 1024 }));
  const refused = nextEvent<[string, XmppServerError]>(small.network, "refused");
  small.network.connect(b.addr, b.trust);
  const [, error] = await refused;
  assert.equal(error.code, "XSRV_CLUSTER_INCOMPATIBLE");
  assert.match(error.message, /partitions/);
  assert.match(error.message, /4096/);
  assert.match(error.message, /1024/);
  await assert.rejects(
    probePeer(b.addr, {
      self: identity("small", { partitions: 1024 }),
      secret: SECRET,
      tls: PROBER,
      trust: b.trust,
    }),
    (e: XmppServerError) => e.code === "XSRV_CLUSTER_INCOMPATIBLE" && /partitions/.test(e.message),
  );
  await assert.rejects(
    probePeer(b.addr, {
      self: identity("h", { hash: "xxh64" }),
      secret: SECRET,
      tls: PROBER,
      trust: b.trust,
    }),
    {
      code: "XSRV_CLUSTER_INCOMPATIBLE",
      message: /hash/,
    },
  );
  // A release that dropped protocol 1 cannot talk to one that speaks only 1.
  await assert.rejects(
    probePeer(b.addr, {
      self: identity("v2only", { protocol: 2 }),
      secret: SECRET,
      protocolMin: 2,
      tls: PROBER,
      trust: b.trust,
    }),
    { code: "XSRV_CLUSTER_INCOMPATIBLE", message: /protocol/ },
  );

  // A release speaking 2 that still accepts 1 links with a protocol-1 node, both ways, at 1.
  const v2 = await startNetwork(t, identity("v2", { protocol: 2 }), { protocolMin: 1 });
  const upAtV2 = nextEvent<[PeerIdentity]>(v2.network, "peer-up");
  const upAtB = nextEvent<[PeerIdentity]>(b.network, "peer-up");
  v2.network.connect(b.addr, b.trust);
  b.network.connect(v2.addr, v2.trust);
  assert.equal((await upAtV2)[0].protocol, 1);
  assert.equal((await upAtB)[0].protocol, 2);
  assert.equal(v2.network.protocolOf("b"), 1);
  assert.equal(b.network.protocolOf("v2"), 1);
  const atB = collect(b.network, "v2", 1);
  const atV2 = collect(v2.network, "b", 1);
  v2.network.send("b", { hello: "from v2" });
  b.network.send("v2", { hello: "from b" });
  await atB.all();
  await atV2.all();
  assert.deepEqual(atB.received, [{ hello: "from v2" }]);
  assert.deepEqual(atV2.received, [{ hello: "from b" }]);
});

test("a link whose socket dies mid-stream reconnects and delivers every message once, in order", async (t) => {
  const b = await startNetwork(t, identity("b"));
  const proxy = await startProxy(t, b.port);
  const a = await startNetwork(t, identity("a"));
  const up = nextEvent(a.network, "peer-up");
  a.network.connect(proxy.addr, b.trust);
  await up;

  const N = 10_000;
  const atB = collect(b.network, "a", N + 1);
  const downs: string[] = [];
  a.network.on("peer-down", (_node, reason) => downs.push(reason));
  let cuts = 0;
  await sendInBursts(a.network, "b", N, 250, async (sent) => {
    // Cut the socket three times while frames are in flight and unacknowledged.
    if (sent % 3_000 === 0 && sent < N) {
      assert.equal(proxy.connections(), 1);
      const reconnected = nextEvent(a.network, "peer-up");
      proxy.cut();
      cuts++;
      // Keep sending while the link is down: these are queued and sent after the reconnect.
      for (let k = 0; k < 3; k++) await new Promise((resolve) => setImmediate(resolve));
      await reconnected;
    }
  });
  a.network.send("b", "end");
  await atB.all();
  assert.equal(atB.received.pop(), "end");
  assertInOrder(atB.received, N);
  assert.equal(cuts, 3);
  assert.deepEqual(downs, ["closed", "closed", "closed"]);
  const resent = a.lines.filter((l) => l.msg === "peer link up" && Number(l.resend) > 0);
  assert.ok(resent.length > 0, "some reconnect resent unacknowledged frames");
});

test("a peer restarted with a new incarnation is reported, its old queue dropped, and later messages arrive", async (t) => {
  const b1 = await startNetwork(t, identity("b", { incarnation: 1_000 }));
  const a = await startNetwork(t, identity("a"));
  const up = nextEvent(a.network, "peer-up");
  a.network.connect(b1.addr, b1.trust);
  await up;
  const atB1 = collect(b1.network, "a", 1);
  a.network.send("b", "before restart");
  await atB1.all();

  const down = nextEvent<[string, string]>(a.network, "peer-down");
  await b1.network.close();
  assert.deepEqual(await down, ["b", "closed"]);
  // Queued while b is down: meant for the old incarnation, so dropped on the restart.
  assert.equal(a.network.send("b", "while down"), true);

  const restarted = nextEvent<[PeerIdentity]>(a.network, "peer-restarted");
  const upAgain = nextEvent<[PeerIdentity]>(a.network, "peer-up");
  // Restarted on the same data, so with the same certificate (and the same pin).
  const b2 = await startNetwork(t, identity("b", { incarnation: 2_000 }), {
    port: b1.port,
    certificate: b1.certificate,
  });
  const atB2 = collect(b2.network, "a", 1);
  assert.equal((await restarted)[0].incarnation, 2_000);
  assert.equal((await upAgain)[0].incarnation, 2_000);
  a.network.send("b", "after restart");
  await atB2.all();
  assert.deepEqual(atB2.received, ["after restart"]);
});

test("a peer that stops acknowledging makes the link overflow instead of growing without bound", async (t) => {
  const raw = await startRawPeer(t, identity("sink"), { answerPings: true });
  const maxUnackedBytes = 64 * 1024;
  const a = await startNetwork(t, identity("a"), { maxUnackedBytes });
  const up = nextEvent(a.network, "peer-up");
  a.network.connect(raw.addr, raw.trust);
  await up;

  const down = nextEvent<[string, string]>(a.network, "peer-down");
  const payload = "x".repeat(1024);
  let sent = 0;
  let overflowed = false;
  a.network.once("peer-down", () => {
    overflowed = true;
  });
  while (!overflowed && sent < 1_000) {
    for (let k = 0; k < 16; k++) a.network.send("sink", { payload, n: sent++ });
    assert.ok(a.network.queuedBytes("sink") <= maxUnackedBytes);
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.deepEqual(await down, ["sink", "overflow"]);
  assert.ok(sent * payload.length >= maxUnackedBytes && sent < 100, `overflowed after ${sent} messages`);
  assert.ok(raw.state.dataFrames > 0, "frames were written before the overflow");
  assert.equal(a.network.queuedBytes("sink"), 0, "the queue was dropped");
  assert.ok(a.lines.some((l) => l.level === "warn" && /overflow/.test(String(l.msg))));
});

test("messages queued while the link is down count against the same budget", async (t) => {
  const b = await startNetwork(t, identity("b"));
  const a = await startNetwork(t, identity("a"), { maxUnackedBytes: 32 * 1024 });
  const up = nextEvent(a.network, "peer-up");
  a.network.connect(b.addr, b.trust);
  await up;
  const closed = nextEvent<[string, string]>(a.network, "peer-down");
  await b.network.close();
  assert.deepEqual(await closed, ["b", "closed"]);

  const overflow = nextEvent<[string, string]>(a.network, "peer-down");
  for (let k = 0; k < 64; k++) {
    a.network.send("b", "y".repeat(1024));
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.deepEqual(await overflow, ["b", "overflow"]);
});

test("a peer that answers pings keeps its link up past the ping timeout", async (t) => {
  const raw = await startRawPeer(t, identity("live"), { answerPings: true });
  const a = await startNetwork(t, identity("a"), { pingIntervalMs: 50, pingTimeoutMs: 100 });
  const downs: string[] = [];
  a.network.on("peer-down", (_node, reason) => downs.push(reason));
  const up = nextEvent(a.network, "peer-up");
  a.network.connect(raw.addr, raw.trust);
  await up;
  // Eight answered pings span far more than one ping timeout.
  await waitUntil(() => raw.state.pings >= 8, "eight pings");
  assert.deepEqual(downs, []);
  assert.equal(a.network.isUp("live"), true);
});

test("a peer that completes the handshake but never answers pings is declared down by timeout", async (t) => {
  const raw = await startRawPeer(t, identity("hung"), { answerPings: false });
  const pingIntervalMs = 100;
  const pingTimeoutMs = 200;
  const a = await startNetwork(t, identity("a"), { pingIntervalMs, pingTimeoutMs });
  const up = nextEvent(a.network, "peer-up");
  a.network.connect(raw.addr, raw.trust);
  await up;
  const start = performance.now();
  const [node, reason] = await nextEvent<[string, string]>(a.network, "peer-down", 3_000);
  const elapsed = performance.now() - start;
  assert.deepEqual([node, reason], ["hung", "timeout"]);
  assert.ok(raw.state.pings >= 1);
  assert.ok(elapsed < pingIntervalMs + pingTimeoutMs + 700, `timed out after ${elapsed} ms`);
  // The link redials by itself.
  await nextEvent(a.network, "peer-up");
});

test("a black-holed link is declared down by timeout and comes back when the path heals", async (t) => {
  const b = await startNetwork(t, identity("b"));
  const proxy = await startProxy(t, b.port);
  const a = await startNetwork(t, identity("a"), { pingIntervalMs: 100, pingTimeoutMs: 200 });
  const up = nextEvent(a.network, "peer-up");
  a.network.connect(proxy.addr, b.trust);
  await up;
  const atB = collect(b.network, "a", 2);
  a.network.send("b", 1);

  const down = nextEvent<[string, string]>(a.network, "peer-down", 3_000);
  proxy.blackhole();
  a.network.send("b", 2); // lost in the black hole, resent after the reconnect
  const start = performance.now();
  assert.deepEqual(await down, ["b", "timeout"]);
  assert.ok(performance.now() - start < 100 + 200 + 700);
  // New connections through the proxy are carried again.
  await nextEvent(a.network, "peer-up");
  await atB.all();
  assert.deepEqual(atB.received, [1, 2]);
});

// Encrypted links (docs/cluster.md, "Encrypted peer links").

/**
 * What a wiretap reads from a dialler's bytes: the payloads of the WebSocket frames after its
 * HTTP upgrade request, unmasked (RFC 6455 §5.3: a client masks every frame it sends).
 */
function unmaskedPayloads(wire: Buffer): Buffer {
  const payloads: Buffer[] = [];
  let at = wire.indexOf("\r\n\r\n") + 4;
  while (at > 3 && at + 2 <= wire.length) {
    let length = wire[at + 1]! & 0x7f;
    let start = at + 2;
    if (length === 126) {
      length = wire.readUInt16BE(start);
      start += 2;
    } else if (length === 127) {
      length = Number(wire.readBigUInt64BE(start));
      start += 8;
    }
    const mask = wire.subarray(start, start + 4);
    const payload = Buffer.from(wire.subarray(start + 4, start + 4 + length));
    for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
    payloads.push(payload);
    at = start + 4 + length;
  }
  return Buffer.concat(payloads);
}

test("a TLS peer link carries a message body only encrypted; a plain link shows it on the wire", async (t) => {
  const body = "the body of a stanza that must not cross the network in clear";
  for (const plain of [false, true]) {
    const tls = plain ? { tls: null } : {};
    const b = await startNetwork(t, identity("b"), tls);
    const proxy = await startProxy(t, b.port);
    const a = await startNetwork(t, identity("a"), tls);
    const atB = collect(b.network, "a", 1);
    const up = nextEvent(a.network, "peer-up");
    a.network.connect(proxy.addr, b.trust);
    await up;
    a.network.send("b", { body });
    await atB.all();
    assert.deepEqual(atB.received, [{ body }]);
    const wire = proxy.carried();
    if (plain) {
      // The wiretap works: on a plain link it reads the upgrade request and the body.
      assert.ok(wire.includes(`GET /starling-peer`));
      assert.ok(unmaskedPayloads(wire).includes(body), "a plain link shows the body");
    } else {
      assert.equal(wire[0], 0x16, "the dialler's first byte starts a TLS handshake record");
      assert.ok(!wire.includes("starling-peer"), "not even the HTTP upgrade is in clear");
      assert.ok(!wire.includes(body) && !unmaskedPayloads(wire).includes(body), "a TLS link hides the body");
    }
  }
});

test("a dialler refuses a peer whose certificate is not the one its member row pins, and sends it nothing", async (t) => {
  const impostor = await startNetwork(t, identity("b"));
  const pinned = await makeCertificate("the real b");
  let delivered = 0;
  impostor.network.on("message", () => delivered++);
  const a = await startNetwork(t, identity("a"));
  const refused = nextEvent<[string, XmppServerError]>(a.network, "refused");
  a.network.connect(impostor.addr, { certSha256: pinned.certSha256 });
  assert.equal(a.network.send("b", "secret plans"), false);
  const [addr, error] = await refused;
  assert.equal(addr, impostor.addr);
  assert.equal(error.code, "XSRV_PEER_UNTRUSTED");
  assert.ok(error.message.includes(impostor.certificate.certSha256), "names the fingerprint presented");
  assert.ok(error.message.includes(pinned.certSha256), "and the one pinned");
  const logged = a.lines.find((l) => l.level === "error" && l.code === "XSRV_PEER_UNTRUSTED");
  assert.ok(logged, "the refusal is logged as an error");
  assert.match(String(logged.msg), /refused its certificate.*pins/);
  assert.equal(a.network.isUp("b"), false);
  assert.deepEqual(a.network.peers(), []);
  // The impostor never got as far as the handshake: no inbound link, no message.
  assert.equal(delivered, 0);
  assert.ok(!impostor.lines.some((l) => l.msg === "peer link accepted" || /accepted/.test(String(l.msg))));

  await assert.rejects(
    probePeer(impostor.addr, {
      self: identity("a"),
      secret: SECRET,
      tls: PROBER,
      trust: { certSha256: pinned.certSha256 },
    }),
    { code: "XSRV_PEER_UNTRUSTED" },
  );
  // The right pin links.
  const up = nextEvent<[PeerIdentity]>(a.network, "peer-up");
  a.network.connect(impostor.addr, impostor.trust);
  assert.equal((await up)[0].node, "b");
});

test("with a cluster CA, a peer whose certificate does not chain to it is refused; one that does links", async (t) => {
  const ca = await makeCa();
  const otherCa = await makeCa("another CA");
  const signed = await startNetwork(t, identity("signed"), { certificate: await makeCertificate("s", ca) });
  const stranger = await startNetwork(t, identity("stranger"), {
    certificate: await makeCertificate("x", otherCa),
  });
  const selfSigned = await startNetwork(t, identity("self"));
  const mine = await makeCertificate("a", ca);
  const a = await startNetwork(t, identity("a"), { tls: { cert: mine.cert, key: mine.key, ca: ca.cert } });

  // Without a pin the CA alone decides.
  const up = nextEvent<[PeerIdentity]>(a.network, "peer-up");
  a.network.connect(signed.addr);
  assert.equal((await up)[0].node, "signed");
  for (const peer of [stranger, selfSigned]) {
    const refused = nextEvent<[string, XmppServerError]>(a.network, "refused");
    a.network.connect(peer.addr, peer.trust);
    const [addr, error] = await refused;
    assert.equal(addr, peer.addr);
    assert.equal(error.code, "XSRV_PEER_UNTRUSTED");
    assert.match(error.message, /does not chain to cluster\.tls\.caFile/);
  }
  // Signed by the CA, but not the certificate pinned: the pin still counts.
  const refused = nextEvent<[string, XmppServerError]>(a.network, "refused");
  a.network.disconnect(signed.addr);
  a.network.disconnect("signed");
  a.network.connect(signed.addr, { certSha256: mine.certSha256 });
  assert.equal((await refused)[1].code, "XSRV_PEER_UNTRUSTED");
  assert.equal(a.network.isUp("stranger") || a.network.isUp("self") || a.network.isUp("signed"), false);
});

test("a TLS node refuses a plain dialler, and a TLS dialler fails clearly against a plain node", async (t) => {
  // A plain dialler reaches a TLS server: the server turns it away at its first bytes, and says why.
  const tlsNode = await startNetwork(t, identity("tls"));
  let delivered = 0;
  tlsNode.network.on("message", () => delivered++);
  const plain = await startNetwork(t, identity("plain"), { tls: null });
  plain.network.connect(tlsNode.addr);
  const warning = await waitUntil(
    () =>
      tlsNode.lines.find((l) => l.level === "warn" && /refused a plain peer connection/.test(String(l.msg))),
    "the TLS node's warning",
  );
  assert.match(String(warning.msg), /requires TLS on peer links/);
  assert.equal(plain.network.isUp("tls"), false);
  assert.equal(plain.network.send("tls", "in clear?"), false);
  assert.equal(delivered, 0);

  // A TLS dialler (with a CA, so it may dial a member that pins nothing) reaches a plain server.
  const ca = await makeCa();
  const mine = await makeCertificate("d", ca);
  const dialler = await startNetwork(t, identity("d"), {
    tls: { cert: mine.cert, key: mine.key, ca: ca.cert },
  });
  const refused = nextEvent<[string, XmppServerError]>(dialler.network, "refused");
  dialler.network.connect(plain.addr);
  const [, error] = await refused;
  assert.equal(error.code, "XSRV_CLUSTER_INCOMPATIBLE");
  assert.match(error.message, /does not speak TLS/);
  await waitUntil(
    () => plain.lines.find((l) => l.level === "warn" && /refused a TLS peer connection/.test(String(l.msg))),
    "the plain node's warning",
  );

  // What the member rows say is enough to refuse without dialling at all.
  const mismatch = nextEvent<[string, XmppServerError]>(plain.network, "refused");
  plain.network.disconnect(tlsNode.addr);
  plain.network.connect(tlsNode.addr, tlsNode.trust);
  assert.equal((await mismatch)[1].code, "XSRV_CLUSTER_INCOMPATIBLE");
  const noPin = nextEvent<[string, XmppServerError]>(tlsNode.network, "refused");
  tlsNode.network.connect(plain.addr, plain.trust);
  const [, unpinned] = await noPin;
  assert.equal(unpinned.code, "XSRV_CLUSTER_INCOMPATIBLE");
  assert.match(unpinned.message, /publishes no certificate fingerprint/);
});
