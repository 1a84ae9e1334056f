/**
 * XMPP over WebSocket (RFC 7395) on a real node: the framing (`<open/>`, `<close/>`, one element
 * per message, namespaces a standalone message needs), the same SASL, binding, routing and
 * XEP-0198 resumption as TCP, bad input answered with stream errors, the subprotocol and origin
 * checks, and XEP-0156 host-meta. Raw messages over the `ws` library; the TCP side is xmpp.js.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { xml } from "@xmpp/xml";
import { connectClient } from "../helpers/client.ts";
import { newUser, newUsers, useNode } from "../helpers/fixtures.ts";
import { NS_SM } from "../helpers/raw-client.ts";
import { startNode } from "../helpers/start-node.ts";
import { NS_FRAMING, WsClient, wsLogin } from "../helpers/ws-client.ts";

const NS_STREAM = "http://etherx.jabber.org/streams";
const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";

describe("XMPP over WebSocket (RFC 7395)", () => {
  const node = useNode();
  const plainUrl = () => `ws://127.0.0.1:${node().ports.webPlain}/xmpp-websocket`;

  it("opens with <open/>, offers SASL with the stream prefix declared, and every message is one element", async (t) => {
    const client = await WsClient.connect(plainUrl());
    t.after(() => client.terminate());
    assert.equal(client.ws.protocol, "xmpp", "the server agrees to the xmpp subprotocol");
    client.open(node().domain);
    const features = await client.waitFor((el) => el.is("features", NS_STREAM), "stream features");
    const open = client.received[0]!;
    assert.ok(open.is("open", NS_FRAMING), `first message is <open/>: ${client.messages[0]}`);
    assert.equal(open.attrs.from, node().domain);
    assert.equal(open.attrs.version, "1.0");
    assert.ok(open.attrs.id !== undefined && open.attrs.id.length > 0, "a stream id");
    // A standalone message must declare the prefix it uses (no enclosing stream element).
    assert.match(
      client.messages[1]!,
      /^<stream:features xmlns:stream="http:\/\/etherx\.jabber\.org\/streams"/,
    );
    const mechanisms = features
      .getChild("mechanisms", NS_SASL)
      ?.getChildren("mechanism")
      .map((m) => m.text());
    assert.ok(mechanisms?.includes("PLAIN"), `PLAIN offered on the loopback proxy port: ${features}`);
    assert.equal(features.getChild("starttls"), undefined, "no STARTTLS over WebSocket");
  });

  it("a WebSocket client and a TCP client chat both ways; stanzas carry jabber:client", async (t) => {
    const [web, tcp] = await newUsers(node(), 2, "ws");
    const { client, full } = await wsLogin(plainUrl(), node().domain, web!);
    t.after(() => client.terminate());
    const other = await connectClient(node(), { username: tcp!.username, password: tcp!.password }, t);

    client.send(
      `<message xmlns="jabber:client" to="${other.jid}" type="chat" id="w1"><body>from the browser</body></message>`,
    );
    const got = await other.waitForStanza(
      (el) => el.is("message") && el.getChildText("body") === "from the browser",
    );
    assert.equal(got.attrs.from, full);

    const mark = client.received.length;
    await other.send(xml("message", { to: full, type: "chat", id: "t1" }, xml("body", {}, "from the app")));
    const back = await client.waitFor(
      (el) => el.is("message") && el.getChildText("body") === "from the app",
      "the TCP client's message",
      mark,
    );
    assert.equal(back.attrs.from, other.jid);
    const raw = client.messages[client.received.indexOf(back)]!;
    assert.match(
      raw.slice(0, raw.indexOf(">")),
      / xmlns="jabber:client"/,
      `a stanza names its namespace: ${raw}`,
    );
  });

  it("<close/> is answered with <close/> and the server closes the connection", async (t) => {
    const user = await newUser(node(), "wsc");
    const { client } = await wsLogin(plainUrl(), node().domain, user);
    t.after(() => client.terminate());
    const mark = client.received.length;
    client.send(`<close xmlns="${NS_FRAMING}"/>`);
    // waitFor looks at what was received before it looks at the connection's end.
    await client.waitFor((el) => el.is("close", NS_FRAMING), "<close/>", mark);
    assert.equal(await client.closed(), 1000);
  });

  it("two elements in one message get <not-well-formed/>, and so does broken XML", async (t) => {
    for (const bad of [
      `<presence xmlns="jabber:client"/><presence xmlns="jabber:client"/>`,
      `<presence xmlns="jabber:client"`,
    ]) {
      const user = await newUser(node(), "wsb");
      const { client } = await wsLogin(plainUrl(), node().domain, user);
      t.after(() => client.terminate());
      const mark = client.received.length;
      client.send(bad);
      const error = await client.waitFor(
        (el) => el.is("error", NS_STREAM),
        `a stream error for ${bad}`,
        mark,
      );
      assert.ok(error.getChild("not-well-formed", "urn:ietf:params:xml:ns:xmpp-streams"), error.toString());
      assert.match(client.messages[client.received.indexOf(error)]!, /^<stream:error xmlns:stream=/);
      await client.closed();
    }
  });

  it("a message past the input budget and a limit is cut off at once, not after the 5 s grace", async (t) => {
    const client = await WsClient.connect(plainUrl());
    t.after(() => client.terminate());
    client.open(node().domain);
    await client.waitFor((el) => el.is("features", NS_STREAM), "features");
    const mark = client.received.length;
    // 400 KB against a 32 KB burst: reading is held for seconds while the parser, a slice per
    // turn, reaches the element limit (limits.maxStanzaElements) after 40 KB.
    client.send(`<message xmlns="jabber:client" to="x@${node().domain}">${"<x/>".repeat(100_000)}</message>`);
    const error = await client.waitFor((el) => el.is("error", NS_STREAM), "a stream error", mark);
    assert.ok(error.getChild("policy-violation", "urn:ietf:params:xml:ns:xmpp-streams"), error.toString());
    // The client is over its budget, so its close frame may wait behind 400 KB it is not read
    // faster for: it gets a second after the server's close frame, not the 5 s a closing
    // connection otherwise has (and the server reads nothing of it meanwhile but that frame).
    const code = await client.closed(3_000);
    assert.ok(code === 1000 || code === 1006, `close code ${code}`);
  });

  it("a malformed WebSocket frame or invalid UTF-8 closes that connection only, with its RFC 6455 code", async (t) => {
    const [user] = await newUsers(node(), 1, "wsf");
    const { client: bystander } = await wsLogin(plainUrl(), node().domain, user!, "bystander");
    t.after(() => bystander.terminate());
    // RFC 6455 §5.1: a client's frames are masked; an unmasked one is a protocol error (1002).
    // §8.1: a text message that is not UTF-8 fails the connection with 1007.
    const frames = [Buffer.from([0x81, 0x02, 0x68, 0x69]), Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28])];
    const codes: number[] = [];
    for (const frame of frames) {
      const bad = await WsClient.connect(plainUrl());
      t.after(() => bad.terminate());
      (bad.ws as unknown as { _socket: { write(b: Buffer): void } })._socket.write(frame);
      codes.push(await bad.closed());
    }
    assert.deepEqual(codes, [1002, 1007]);
    // Nothing else was disturbed: the other client's stream still answers.
    const mark = bystander.received.length;
    bystander.send(`<iq xmlns="jabber:client" type="get" id="still"><ping xmlns="urn:xmpp:ping"/></iq>`);
    const pong = await bystander.waitFor(
      (el) => el.is("iq") && el.attrs.id === "still",
      "the ping's answer",
      mark,
    );
    assert.equal(pong.attrs.type, "result");
  });

  it("a stanza before authentication closes the stream with <not-authorized/>, as on TCP", async (t) => {
    const client = await WsClient.connect(plainUrl());
    t.after(() => client.terminate());
    client.open(node().domain);
    await client.waitFor((el) => el.is("features", NS_STREAM), "stream features");
    client.send(`<message xmlns="jabber:client" to="someone@${node().domain}"><body>hi</body></message>`);
    const error = await client.waitFor((el) => el.is("error", NS_STREAM), "a stream error");
    assert.ok(error.getChild("not-authorized", "urn:ietf:params:xml:ns:xmpp-streams"), error.toString());
  });

  it("a connection without the xmpp subprotocol is refused", async () => {
    await assert.rejects(WsClient.connect(plainUrl(), { protocols: ["chat"] }), /HTTP 400/);
  });

  it("an XEP-0198 session resumes on a new WebSocket connection with what it had not acknowledged", async (t) => {
    const [web, tcp] = await newUsers(node(), 2, "wsr");
    const { client, full } = await wsLogin(plainUrl(), node().domain, web!);
    t.after(() => client.terminate());
    let mark = client.received.length;
    client.send(`<enable xmlns="${NS_SM}" resume="true"/>`);
    const enabled = await client.waitFor((el) => el.is("enabled", NS_SM), "<enabled/>", mark);
    const other = await connectClient(node(), { username: tcp!.username, password: tcp!.password }, t);
    await other.send(
      xml("message", { to: full, type: "chat", id: "m1" }, xml("body", {}, "before the drop")),
    );
    await client.waitFor((el) => el.getChildText("body") === "before the drop", "the first message", mark);
    client.terminate(); // the browser tab's connection drops without a close
    await other.send(xml("message", { to: full, type: "chat", id: "m2" }, xml("body", {}, "while away")));

    const again = await WsClient.connect(plainUrl());
    t.after(() => again.terminate());
    again.open(node().domain);
    await again.waitFor((el) => el.is("features", NS_STREAM), "stream features");
    again.send(
      `<auth xmlns="${NS_SASL}" mechanism="PLAIN">${Buffer.from(`\0${web!.username}\0${web!.password}`).toString("base64")}</auth>`,
    );
    await again.waitFor((el) => el.is("success", NS_SASL), "<success/>");
    mark = again.received.length;
    again.open(node().domain);
    await again.waitFor((el) => el.is("features", NS_STREAM), "features after SASL", mark);
    // The client had received nothing it acknowledged: h=0, so both messages come (again).
    again.send(`<resume xmlns="${NS_SM}" previd="${enabled.attrs.id}" h="0"/>`);
    const resumed = await again.waitFor(
      (el) => el.is("resumed", NS_SM) || el.is("failed", NS_SM),
      "<resumed/>",
      mark,
    );
    assert.ok(resumed.is("resumed", NS_SM), resumed.toString());
    const first = await again.waitFor(
      (el) => el.getChildText("body") === "before the drop",
      "the unacknowledged message",
      mark,
    );
    const second = await again.waitFor(
      (el) => el.getChildText("body") === "while away",
      "the message sent while away",
      mark,
    );
    assert.ok(again.received.indexOf(first) < again.received.indexOf(second), "in order");
    assert.equal(again.received.filter((el) => el.getChildText("body") === "while away").length, 1, "once");
  });

  it("XEP-0156: host-meta names the WebSocket endpoint, in XML and JSON, readable from any origin", async () => {
    const base = `http://127.0.0.1:${node().ports.webPlain}`;
    const json = await fetch(`${base}/.well-known/host-meta.json`);
    assert.equal(json.status, 200);
    assert.equal(json.headers.get("access-control-allow-origin"), "*");
    const body = (await json.json()) as { links: { rel: string; href: string }[] };
    assert.deepEqual(
      body.links.find((link) => link.rel === "urn:xmpp:alt-connections:websocket"),
      {
        rel: "urn:xmpp:alt-connections:websocket",
        href: `ws://127.0.0.1:${node().ports.webPlain}/xmpp-websocket`,
      },
    );
    const xrd = await (await fetch(`${base}/.well-known/host-meta`)).text();
    assert.match(
      xrd,
      /<Link rel="urn:xmpp:alt-connections:websocket" href="ws:\/\/127\.0\.0\.1:\d+\/xmpp-websocket"\/>/,
    );
    const missing = await fetch(`${base}/nothing-here`);
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { error: string }).error, "not-found");
  });

  it("XEP-0156: behind a proxy that says X-Forwarded-Proto: https, host-meta names wss:// and https://", async () => {
    const at = `127.0.0.1:${node().ports.webPlain}`;
    const answer = await fetch(`http://${at}/.well-known/host-meta.json`, {
      headers: { "x-forwarded-proto": "https" },
    });
    const json = (await answer.json()) as { links: { rel: string; href: string }[] };
    assert.deepEqual(
      json.links.map((link) => link.href),
      [`wss://${at}/xmpp-websocket`, `https://${at}/http-bind`],
    );
  });

  it("the TLS listener serves the same streams (wss://, the node's certificate)", async (t) => {
    const user = await newUser(node(), "wss");
    const { client } = await wsLogin(
      `wss://127.0.0.1:${node().ports.web}/xmpp-websocket`,
      node().domain,
      user,
    );
    t.after(() => client.terminate());
    client.send(
      `<iq xmlns="jabber:client" type="get" id="p1" to="${node().domain}"><ping xmlns="urn:xmpp:ping"/></iq>`,
    );
    const pong = await client.waitFor((el) => el.is("iq") && el.attrs.id === "p1", "the ping's answer");
    assert.equal(pong.attrs.type, "result");
  });
});

describe("WebSocket origins (web.origins)", () => {
  it("a page of a configured origin may connect; another origin's page is refused", async (t) => {
    const node = await startNode(t, { config: { web: { origins: ["https://chat.example.org"] } } });
    const url = `ws://127.0.0.1:${node.ports.webPlain}/xmpp-websocket`;
    const allowed = await WsClient.connect(url, { origin: "https://chat.example.org" });
    allowed.terminate();
    await assert.rejects(WsClient.connect(url, { origin: "https://evil.example.com" }), /HTTP 403/);
    // The server's own pages (the /chat page) are always its own origin.
    const own = await WsClient.connect(url, { origin: `http://127.0.0.1:${node.ports.webPlain}` });
    own.terminate();
    await assert.rejects(WsClient.connect(url, { origin: "http://127.0.0.1:1" }), /HTTP 403/);
  });
});
