/**
 * BOSH (XEP-0124, XEP-0206) on a real node: session creation with the stream features, SASL and
 * the stream restart, binding, a held request answered by a message from a TCP client, rid
 * retransmission and window, terminate, unknown sessions, requests that land on another worker
 * of the node (every request on a new connection), and CORS for the configured origins. Raw
 * HTTP through node:http; the other side is xmpp.js over TCP.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { describe, it } from "node:test";
import { xml } from "@xmpp/xml";
import {
  BoshClient,
  type BoshHttpAnswer,
  boshPost,
  NS_HTTPBIND,
  plainBoshEndpoint,
} from "../helpers/bosh-client.ts";
import { connectClient } from "../helpers/client.ts";
import { newUsers, useNode } from "../helpers/fixtures.ts";
import { startNode } from "../helpers/start-node.ts";
import { parseMessage } from "../helpers/ws-client.ts";

const NS_STREAM = "http://etherx.jabber.org/streams";
const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_SASL2 = "urn:xmpp:sasl:2";

/** POSTs `body` to the node's plain port on a new connection. */
function post(port: number, body: string, headers: Record<string, string> = {}): Promise<BoshHttpAnswer> {
  return boshPost(plainBoshEndpoint(port), body, headers);
}

describe("BOSH (XEP-0124, XEP-0206)", () => {
  const node = useNode();
  const port = () => node().ports.webPlain!;

  it("the creation answer carries the session's parameters and the stream features", async () => {
    const client = new BoshClient(plainBoshEndpoint(port()));
    const body = await client.create(node().domain);
    assert.match(body.attrs.sid ?? "", /^\d+\.[0-9a-f]+$/);
    assert.equal(body.attrs.wait, "10");
    assert.equal(body.attrs.hold, "1");
    assert.equal(body.attrs.requests, "2");
    assert.equal(body.attrs.ver, "1.6");
    assert.equal(body.attrs["xmpp:version"], "1.0");
    assert.equal(body.attrs.from, node().domain);
    assert.ok((body.attrs.authid ?? "").length > 0, "the stream id");
    const features = body.getChild("features", NS_STREAM) ?? body.getChild("stream:features");
    assert.ok(features?.getChild("mechanisms", NS_SASL), body.toString());
  });

  it("SASL2 with Bind 2 logs in without the restart request (XEP-0388 over XEP-0206)", async (t) => {
    const [web, tcp] = await newUsers(node(), 2, "bosh2");
    const client = new BoshClient(plainBoshEndpoint(port()));
    const created = await client.create(node().domain);
    const features = created.getChild("features", NS_STREAM) ?? created.getChild("stream:features");
    assert.ok(features?.getChild("authentication", NS_SASL2), created.toString());
    const initial = Buffer.from(`\0${web!.username}\0${web!.password}`).toString("base64");
    // No request is held yet: the answer comes on this one, <success/> and the features.
    const answer = await client.send(
      `<authenticate xmlns="${NS_SASL2}" mechanism="PLAIN"><initial-response>${initial}</initial-response>` +
        `<bind xmlns="urn:xmpp:bind:0"><tag>web</tag></bind></authenticate>`,
    );
    const success = answer.getChild("success", NS_SASL2);
    assert.ok(success, answer.toString());
    const full = success.getChildText("authorization-identifier") ?? "";
    assert.match(full, /\/web\//, full);
    assert.ok(success.getChild("bound", "urn:xmpp:bind:0"), success.toString());
    // Bound on this very stream: a message from a TCP client reaches the held request.
    const other = await connectClient(node(), { username: tcp!.username, password: tcp!.password }, t);
    const held = client.send();
    await other.send(
      xml("message", { to: full, type: "chat", id: "s2" }, xml("body", {}, "to SASL2 over BOSH")),
    );
    assert.equal((await held).getChild("message")?.getChildText("body"), "to SASL2 over BOSH");
  });

  it("logs in, binds, and a held request is answered by a TCP client's message; it chats back", async (t) => {
    const [web, tcp] = await newUsers(node(), 2, "bosh");
    const client = new BoshClient(plainBoshEndpoint(port()));
    const full = await client.login(node().domain, web!);
    const other = await connectClient(node(), { username: tcp!.username, password: tcp!.password }, t);

    const held = client.send(); // nothing to say: the server holds it until there is something
    await other.send(xml("message", { to: full, type: "chat", id: "t1" }, xml("body", {}, "to the page")));
    const answer = await held;
    const message = answer.getChild("message");
    assert.equal(message?.getChildText("body"), "to the page", answer.toString());
    assert.equal(message?.attrs.xmlns, "jabber:client", "a stanza names its namespace");

    await client.send(
      `<message xmlns="jabber:client" to="${other.jid}" type="chat" id="w1"><body>from the page</body></message>`,
    );
    const got = await other.waitForStanza(
      (el) => el.is("message") && el.getChildText("body") === "from the page",
    );
    assert.equal(got.attrs.from, full);
  });

  it("a stream error comes in a terminate body of condition remote-stream-error (XEP-0206 §7)", async () => {
    const [web] = await newUsers(node(), 1, "bosherr");
    const client = new BoshClient(plainBoshEndpoint(port()));
    await client.login(node().domain, web!);
    // RFC 6120 §8.1.2.1: a 'from' that is not the stream's own ends the stream.
    const answer = await client.send(
      `<message xmlns="jabber:client" from="someone@else.example" type="chat"><body>x</body></message>`,
    );
    assert.equal(answer.attrs.type, "terminate", answer.toString());
    assert.equal(answer.attrs.condition, "remote-stream-error", answer.toString());
    assert.ok(answer.toString().includes("invalid-from"), answer.toString());
  });

  it("a request with nothing to answer is answered empty after wait", async () => {
    const client = new BoshClient(plainBoshEndpoint(port()));
    await client.create(node().domain, 1);
    const started = Date.now();
    const empty = await client.send();
    assert.equal(empty.children.length, 0, empty.toString());
    assert.ok(Date.now() - started >= 900, "held for wait");
  });

  it("a retransmitted rid gets the same answer; one too far ahead ends the session", async () => {
    const client = new BoshClient(plainBoshEndpoint(port()));
    const created = await client.create(node().domain);
    const again = await post(
      port(),
      `<body rid="${client.rid}" sid="${client.sid}" xmlns="${NS_HTTPBIND}"/>`,
    );
    assert.equal(parseMessage(again.text).toString(), created.toString(), "the same answer again");
    const far = await post(
      port(),
      `<body rid="${client.rid + 10}" sid="${client.sid}" xmlns="${NS_HTTPBIND}"/>`,
    );
    const ended = parseMessage(far.text);
    assert.equal(ended.attrs.type, "terminate");
    assert.equal(ended.attrs.condition, "item-not-found");
  });

  it("overlapping polls: a second held request answers the first at once (hold 1); beyond the window ends it", async () => {
    const client = new BoshClient(plainBoshEndpoint(port()));
    await client.create(node().domain, 20);
    const base = client.rid;
    const poll = (rid: number) =>
      post(port(), `<body rid="${rid}" sid="${client.sid}" xmlns="${NS_HTTPBIND}"/>`).then((a) =>
        parseMessage(a.text),
      );
    const started = Date.now();
    const first = poll(base + 1);
    const second = poll(base + 2);
    // XEP-0124 §10: with hold 1, the connection manager answers the older request when a newer
    // one arrives, and keeps the newer; it does not wait out the 20 s.
    const firstAnswer = await first;
    assert.equal(firstAnswer.attrs.type, undefined, firstAnswer.toString());
    assert.ok(Date.now() - started < 10_000, "the first poll came back at once");
    // A third beyond requests=2 while one is held: §11 allows at most `requests` at once.
    const third = await poll(base + 4);
    assert.equal(third.attrs.type, "terminate", third.toString());
    const secondAnswer = await second;
    assert.ok(
      secondAnswer.attrs.type === "terminate" || secondAnswer.children.length === 0,
      secondAnswer.toString(),
    );
  });

  it("an unknown session and a malformed body get terminate answers", async () => {
    const unknown = parseMessage(
      (await post(port(), `<body rid="1" sid="0.nope" xmlns="${NS_HTTPBIND}"/>`)).text,
    );
    assert.equal(unknown.attrs.condition, "item-not-found");
    // A session id naming a shard of no worker of this node is not chased across the cluster.
    const started = Date.now();
    const elsewhere = parseMessage(
      (await post(port(), `<body rid="1" sid="70000.nope" xmlns="${NS_HTTPBIND}"/>`)).text,
    );
    assert.equal(elsewhere.attrs.condition, "item-not-found");
    assert.ok(Date.now() - started < 3_000, "answered at once");
    const malformed = parseMessage((await post(port(), "<body rid='1' xmlns='wrong'/>")).text);
    assert.equal(malformed.attrs.condition, "bad-request");
  });

  it("terminate closes the stream and ends the session", async () => {
    const [web] = await newUsers(node(), 1, "bosht");
    const client = new BoshClient(plainBoshEndpoint(port()));
    await client.login(node().domain, web!);
    await client.send(`<presence xmlns="jabber:client"/>`);
    const ended = await client.send(
      `<presence xmlns="jabber:client" type="unavailable"/>`,
      ` type="terminate"`,
    );
    assert.equal(ended.attrs.type, "terminate", ended.toString());
    const after = parseMessage(
      (await post(port(), `<body rid="${client.rid + 1}" sid="${client.sid}" xmlns="${NS_HTTPBIND}"/>`)).text,
    );
    assert.equal(after.attrs.condition, "item-not-found", "the session is gone");
  });

  it("requests that reach another worker of the node are handed to the one holding the session", async (t) => {
    // Every request is on a new connection, so SO_REUSEPORT spreads them over both workers.
    const [web, tcp] = await newUsers(node(), 2, "boshw");
    const client = new BoshClient(plainBoshEndpoint(port()));
    const full = await client.login(node().domain, web!);
    const other = await connectClient(node(), { username: tcp!.username, password: tcp!.password }, t);
    for (let i = 0; i < 8; i++) {
      const held = client.send();
      await other.send(xml("message", { to: full, type: "chat", id: `x${i}` }, xml("body", {}, `n${i}`)));
      const answer = await held;
      assert.equal(answer.getChild("message")?.getChildText("body"), `n${i}`, answer.toString());
    }
  });

  it("XEP-0156: host-meta names the BOSH endpoint too", async () => {
    const json = (await (await fetch(`http://127.0.0.1:${port()}/.well-known/host-meta.json`)).json()) as {
      links: { rel: string; href: string }[];
    };
    assert.ok(
      json.links.some(
        (l) =>
          l.rel === "urn:xmpp:alt-connections:xbosh" && l.href === `http://127.0.0.1:${port()}/http-bind`,
      ),
      JSON.stringify(json),
    );
  });
});

describe("BOSH input pacing (limits.inputBytesPerSecond)", () => {
  it("a session's requests past its budget wait for it, and nothing is lost; within it they do not", async (t) => {
    const node = await startNode(t, {
      config: { limits: { inputBytesPerSecond: 4_000, inputBurstBytes: 4_000 } },
    });
    const [web, tcp] = await newUsers(node, 2, "boshp");
    const client = new BoshClient(plainBoshEndpoint(node.ports.webPlain!));
    await client.login(node.domain, web!, 1);
    const other = await connectClient(node, { username: tcp!.username, password: tcp!.password }, t);
    const message = (id: string, body: string) =>
      `<message xmlns="jabber:client" to="${other.jid}" type="chat" id="${id}"><body>${body}</body></message>`;
    const arrival = (body: string) =>
      other.waitForStanza(
        (el) => el.is("message") && el.getChildText("body") === body,
        "the message",
        30_000,
      );

    // The login's few hundred bytes left most of the burst: a small message goes at once.
    let started = performance.now();
    void client.send(message("p1", "small"));
    await arrival("small");
    const small = performance.now() - started;

    // 12 KB against 4 KB a second: the request waits about two seconds for the excess to drain.
    const big = "b".repeat(12_000);
    started = performance.now();
    void client.send(message("p2", big));
    await arrival(big);
    const paced = performance.now() - started;
    assert.ok(small < 1_000, `the small message took ${Math.round(small)} ms`);
    assert.ok(paced > 1_500, `the 12 KB message took ${Math.round(paced)} ms: the budget did not apply`);
  });
});

describe("BOSH CORS (web.origins)", () => {
  it("a configured origin may call it from a page; another origin gets no CORS headers", async (t) => {
    const node = await startNode(t, { config: { web: { origins: ["https://chat.example.org"] } } });
    const allowed = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const request = http.request(
        {
          host: "127.0.0.1",
          port: node.ports.webPlain!,
          path: "/http-bind",
          method: "OPTIONS",
          agent: false,
          headers: { origin: "https://chat.example.org", "access-control-request-method": "POST" },
        },
        resolve,
      );
      request.on("error", reject);
      request.end();
    });
    assert.equal(allowed.statusCode, 204);
    assert.equal(allowed.headers["access-control-allow-origin"], "https://chat.example.org");
    assert.match(String(allowed.headers["access-control-allow-methods"]), /POST/);
    const foreign = await post(
      node.ports.webPlain!,
      `<body rid="1" to="${node.domain}" wait="1" hold="1" xmlns="${NS_HTTPBIND}"/>`,
      { origin: "https://evil.example.com" },
    );
    assert.equal(foreign.headers["access-control-allow-origin"], undefined);
  });
});
