/**
 * A node that leaves tells its clients where to go: `<see-other-host/>` (RFC 6120 §4.9.3.19)
 * with the client address another member advertised, where the client resumes its XEP-0198
 * session at once, with what was sent to it meanwhile.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { promisify } from "node:util";
import type { Element } from "@xmpp/xml";
import { BoshClient } from "../helpers/bosh-client.ts";
import { startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { goOnline, isMessageWithBody, loginRaw, newUsers, type TestUser } from "../helpers/fixtures.ts";
import { NS_SASL, NS_SM, NS_STREAMS_ERROR, RawClient } from "../helpers/raw-client.ts";
import { REPO_ROOT } from "../helpers/start-node.ts";
import { NS_FRAMING, NS_STREAM, type WsClient, wsAuthenticate, wsLogin } from "../helpers/ws-client.ts";

const run = promisify(execFile);

test("a leaving node sends its clients to another member with <see-other-host/>, where they resume", async (t) => {
  const cluster = await startTestCluster(t);
  const n1 = await cluster.start("n1", { workers: 1 });
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr });
  await waitForOwners(n1, ["n1", "n2"]);
  const [mover, friend] = await newUsers(n1, 2, "drain");
  const client = await loginRaw(t, n2, mover!, { label: "mover" });
  await goOnline(client);
  const enabled = await client.enableSm({ resume: true, autoAck: false });
  const other = await loginRaw(t, n1, friend!, { label: "friend" });

  // The node waits (drainTimeoutMs) for its clients to resume elsewhere before it exits.
  const leaving = run(
    process.execPath,
    [join(REPO_ROOT, "src", "main.ts"), "leave", "--http-port", String(n2.ports.http)],
    { timeout: 60_000 },
  );
  t.after(() => leaving.catch(() => {}));
  await client.waitForStreamError(20_000);
  const error = client.streamError;
  assert.ok(error !== undefined, `a stream error before the close: ${client.describe()}`);
  const seeOther = error.getChild("see-other-host", NS_STREAMS_ERROR);
  assert.ok(seeOther, `RFC 6120 §4.9.3.19 see-other-host: ${error.toString()}`);
  assert.equal(seeOther.text(), `127.0.0.1:${n1.ports.c2s}`, "n1's client address");

  // Sent while the client moves: it waits in the detached session and comes with the resumption.
  other.send(`<message to='${mover!.jid}' type='chat'><body>while you moved</body></message>`);

  const [host, port] = seeOther.text().split(":");
  const again = await RawClient.connect({
    host: host!,
    port: Number(port),
    domain: n1.domain,
    label: "mover-again",
  });
  t.after(() => again.destroy());
  await again.openStream();
  await again.startTls();
  const outcome = await again.authScram("SCRAM-SHA-1", mover!.username, mover!.password);
  assert.ok(outcome.is("success", NS_SASL), outcome.toString());
  await again.openStream();
  const resumed = await again.resumeSm(enabled.attrs.id!, client.smInbound ?? 0);
  assert.ok(resumed.is("resumed", NS_SM), resumed.toString());
  await again.waitFor(isMessageWithBody("while you moved"), "the message sent while moving");
  await leaving;
});

/**
 * Two members with the web configuration `web`, and a WebSocket client of n2 with resumption
 * enabled and available (so that a chat message to its bare JID is delivered, not stored), its
 * friend logged in on n1; `leave()` runs `starling leave` on n2.
 */
async function webClientOfLeavingNode(
  t: TestContext,
  web: Record<string, unknown>,
  prefix: string,
  resumable = true,
) {
  const cluster = await startTestCluster(t);
  const n1 = await cluster.start("n1", { workers: 1, config: web });
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr, config: web });
  await waitForOwners(n1, ["n1", "n2"]);
  const [mover, friend] = await newUsers(n1, 2, prefix);
  const { client } = await wsLogin(`wss://127.0.0.1:${n2.ports.web}/xmpp-websocket`, n2.domain, mover!);
  t.after(() => client.terminate());
  let enabled: Element | undefined;
  if (resumable) {
    client.send(`<enable xmlns="${NS_SM}" resume="true"/>`);
    enabled = await client.waitFor((el) => el.is("enabled", NS_SM), "<enabled/>");
  }
  client.send(`<presence xmlns="jabber:client"/>`);
  await client.waitFor(
    (el) => el.is("presence") && el.attrs.from?.startsWith(mover!.jid) === true,
    "own presence",
  );
  const other = await loginRaw(t, n1, friend!, { label: "friend" });
  const leave = () => {
    const leaving = run(
      process.execPath,
      [join(REPO_ROOT, "src", "main.ts"), "leave", "--http-port", String(n2.ports.http)],
      { timeout: 60_000 },
    );
    t.after(() => leaving.catch(() => {}));
    return leaving;
  };
  return { n1, n2, mover: mover!, client, enabled: enabled!, other, leave };
}

/**
 * Opens a WebSocket at `url`, authenticates as `user` and resumes the session `previd` with `h`
 * (XEP-0198 §5); fails unless the answer is `<resumed/>`.
 */
async function resumeOverWebSocket(
  t: TestContext,
  url: string,
  domain: string,
  user: TestUser,
  previd: string,
  h: number,
): Promise<WsClient> {
  const again = await wsAuthenticate(url, domain, user);
  t.after(() => again.terminate());
  again.send(`<resume xmlns="${NS_SM}" previd="${previd}" h="${h}"/>`);
  const answer = await again.waitFor((el) => el.is("resumed", NS_SM) || el.is("failed", NS_SM), "the answer");
  assert.ok(answer.is("resumed", NS_SM), answer.toString());
  return again;
}

test("a leaving node sends its WebSocket clients to another member's web listener (see-other-uri), where they resume", async (t) => {
  // No plain web port: web clients reach these nodes directly, so each advertises its own.
  const { n1, mover, client, enabled, other, leave } = await webClientOfLeavingNode(
    t,
    { ports: { webPlain: null } },
    "wsdrain",
  );
  const leaving = leave();
  // RFC 7395 §3.6.1: <close see-other-uri/> names the endpoint, then the server closes.
  const close = await client.waitFor((el) => el.is("close", NS_FRAMING), "<close/>", 0, 20_000);
  const uri = close.attrs["see-other-uri"];
  assert.equal(uri, `wss://127.0.0.1:${n1.ports.web}/xmpp-websocket`, close.toString());
  await client.closed(10_000);

  other.send(`<message to='${mover.jid}' type='chat'><body>while you moved over the web</body></message>`);
  const again = await resumeOverWebSocket(t, uri!, n1.domain, mover, enabled.attrs.id!, 0);
  await again.waitFor(
    (el) => el.is("message") && el.getChildText("body") === "while you moved over the web",
    "the message sent while it moved",
  );
  await leaving;
});

/**
 * A message every 10 ms to a WebSocket client while its node leaves: nothing comes after the
 * node's `<close see-other-uri/>` on the old connection, and every message arrives exactly once
 * across the old connection and the next one (resumed, or a new login that gets the offline
 * messages).
 */
async function floodThroughLeave(t: TestContext, resumable: boolean): Promise<void> {
  const { n1, mover, client, enabled, other, leave } = await webClientOfLeavingNode(
    t,
    { ports: { webPlain: null } },
    resumable ? "wsflood" : "wsfloodplain",
    resumable,
  );
  // A message every 10 ms, so that some are routed to the session in the moment between the
  // node's <close/> and the end of the connection (100 ms).
  let sent = 0;
  const flood = setInterval(() => {
    sent++;
    other.send(`<message to='${mover.jid}' type='chat'><body>flood-${sent}</body></message>`);
  }, 10);
  t.after(() => clearInterval(flood));
  await client.waitFor((el) => el.getChildText("body") === "flood-5", "the first messages");

  const leaving = leave();
  const close = await client.waitFor((el) => el.is("close", NS_FRAMING), "<close/>", 0, 20_000);
  await client.closed(10_000);
  const closeAt = client.received.indexOf(close);
  const afterClose = client.received.slice(closeAt + 1);
  assert.deepEqual(
    afterClose.map((el) => el.toString()),
    [],
    "nothing after the stream's end on the old connection",
  );
  let again: WsClient;
  if (resumable) {
    // XEP-0198: h counts the stanzas the client handled since <enabled/>.
    const handled = client.received
      .slice(client.received.indexOf(enabled) + 1, closeAt)
      .filter((el) => ["message", "presence", "iq"].includes(el.getName())).length;
    const url = close.attrs["see-other-uri"]!;
    again = await resumeOverWebSocket(t, url, n1.domain, mover, enabled.attrs.id!, handled);
  } else {
    // Without resumption the session ended with the stream: what came after went to offline
    // storage, which the next login's initial presence empties.
    ({ client: again } = await wsLogin(close.attrs["see-other-uri"]!, n1.domain, mover));
    t.after(() => again.terminate());
    again.send(`<presence xmlns="jabber:client"/>`);
  }
  // A few more, sent to the new stream live, then the flood stops.
  const livePast = `flood-${sent + 3}`;
  await again.waitFor((el) => el.getChildText("body") === livePast, livePast, 0, 20_000);
  clearInterval(flood);
  const last = `flood-${sent}`;
  await again.waitFor((el) => el.getChildText("body") === last, `the last message, ${last}`, 0, 20_000);
  const counts = new Map<string, number>();
  for (const el of [...client.received.slice(0, closeAt), ...again.received]) {
    const body = el.is("message") ? el.getChildText("body") : null;
    if (body?.startsWith("flood-")) counts.set(body, (counts.get(body) ?? 0) + 1);
  }
  const wrong: string[] = [];
  for (let n = 1; n <= sent; n++)
    if (counts.get(`flood-${n}`) !== 1) wrong.push(`flood-${n}: ${counts.get(`flood-${n}`) ?? 0}`);
  assert.deepEqual(wrong, [], `every one of ${sent} messages came once`);
  await leaving;
}

test("nothing follows a leaving node's <close see-other-uri/> on the old WebSocket: what was sent meanwhile comes once, on the resumed stream", (t) =>
  floodThroughLeave(t, true));

test("without XEP-0198, what was sent to a leaving node's WebSocket client as its stream ended is stored offline, not lost", (t) =>
  floodThroughLeave(t, false));

test("behind a reverse proxy (web.behindProxy), a leaving node names no node's web listener: its WebSocket clients get <system-shutdown/> and resume through the proxy", async (t) => {
  // docs/web-chat.md "Several nodes": the proxy reaches each node's TLS listener, and web
  // clients must come back through it, not to an internal address the browser cannot use.
  const { n1, mover, client, enabled, leave } = await webClientOfLeavingNode(
    t,
    { ports: { webPlain: null }, web: { behindProxy: true } },
    "wsproxied",
  );
  const leaving = leave();
  const error = await client.waitFor((el) => el.is("error", NS_STREAM), "the stream error", 0, 20_000);
  assert.ok(error.getChild("system-shutdown", NS_STREAMS_ERROR) !== undefined, error.toString());
  await client.closed(10_000);
  assert.ok(
    !client.received.some((el) => el.attrs["see-other-uri"] !== undefined),
    "no <close see-other-uri/>",
  );
  // The proxy sends the reconnection to a node that stays: here, n1 directly.
  const url = `wss://127.0.0.1:${n1.ports.web}/xmpp-websocket`;
  await resumeOverWebSocket(t, url, n1.domain, mover, enabled.attrs.id!, 0);
  await leaving;
});

test("a leaving node sends its BOSH clients to another member's BOSH endpoint (see-other-uri), where they resume", async (t) => {
  const cluster = await startTestCluster(t);
  const direct = { ports: { webPlain: null } };
  const n1 = await cluster.start("n1", { workers: 1, config: direct });
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr, config: direct });
  await waitForOwners(n1, ["n1", "n2"]);
  const [mover, friend] = await newUsers(n1, 2, "boshdrain");
  const bosh = new BoshClient({ url: `https://127.0.0.1:${n2.ports.web}/http-bind` });
  await bosh.login(n2.domain, mover!);
  const enabled = (await bosh.send(`<enable xmlns="${NS_SM}" resume="true"/>`)).getChild("enabled", NS_SM);
  assert.ok(enabled, "XEP-0198 enabled");
  await bosh.send(`<presence xmlns="jabber:client"/>`);
  const other = await loginRaw(t, n1, friend!, { label: "friend" });

  const held = bosh.send(); // the long poll the node answers when it leaves
  const leaving = run(
    process.execPath,
    [join(REPO_ROOT, "src", "main.ts"), "leave", "--http-port", String(n2.ports.http)],
    { timeout: 60_000 },
  );
  t.after(() => leaving.catch(() => {}));
  // XEP-0124 §17: the terminal condition see-other-uri names the endpoint in <uri/>.
  let answer = await held;
  while (answer.attrs.type !== "terminate") answer = await bosh.send();
  assert.equal(answer.attrs.condition, "see-other-uri", answer.toString());
  const uri = answer.getChildText("uri");
  assert.equal(uri, `https://127.0.0.1:${n1.ports.web}/http-bind`);

  other.send(`<message to='${mover!.jid}' type='chat'><body>while you moved over BOSH</body></message>`);
  const again = new BoshClient({ url: uri! });
  await again.create(n1.domain);
  const auth = Buffer.from(`\0${mover!.username}\0${mover!.password}`).toString("base64");
  assert.ok(
    (await again.send(`<auth xmlns="${NS_SASL}" mechanism="PLAIN">${auth}</auth>`)).getChild("success"),
  );
  await again.send("", ` xmpp:restart="true" xmlns:xmpp="urn:xmpp:xbosh" to="${n1.domain}"`);
  let resumed = await again.send(`<resume xmlns="${NS_SM}" previd="${enabled.attrs.id}" h="0"/>`);
  const seen = [resumed];
  while (!seen.some((b) => b.getChildText("body") !== null || b.getChild("message") !== undefined)) {
    resumed = await again.send();
    seen.push(resumed);
  }
  assert.ok(seen[0]!.getChild("resumed", NS_SM), seen[0]!.toString());
  const message = seen
    .flatMap((b) => b.getChildren("message"))
    .find((m) => m.getChildText("body") === "while you moved over BOSH");
  assert.ok(message, seen.map((b) => b.toString()).join(" | "));
});
