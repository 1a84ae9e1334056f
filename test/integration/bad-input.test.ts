/**
 * Bad input from the first day: each kind of malformed or hostile input gets the stream error
 * RFC 6120 names for it and a close, and none of it disturbs other clients.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  becomeContacts,
  connectRaw,
  goOnline,
  isMessageWithBody,
  isPresenceFrom,
  loginRaw,
  newUser,
  newUsers,
  useNode,
} from "../helpers/fixtures.ts";
import { esc, NS_CLIENT, NS_STREAM, type RawClient } from "../helpers/raw-client.ts";
import { startNode } from "../helpers/start-node.ts";
import { tcpOnly } from "../helpers/ws-bridge.ts";

const MAX_STANZA_BYTES = 10_000;
const MAX_DEPTH = 16;
const MAX_ELEMENTS = 200;

const getNode = useNode({
  config: {
    limits: { maxStanzaBytes: MAX_STANZA_BYTES, maxStanzaDepth: MAX_DEPTH, maxStanzaElements: MAX_ELEMENTS },
  },
});

const HEADER = (domain: string) =>
  `<?xml version='1.0'?><stream:stream to='${domain}' version='1.0' xmlns='${NS_CLIENT}' xmlns:stream='${NS_STREAM}'>`;

/** Asserts that `client` gets `condition` as a stream error and then sees the connection close. */
async function expectStreamError(client: RawClient, condition: string): Promise<void> {
  assert.equal(await client.waitForStreamError(), condition, client.describe());
  await client.waitForClose();
}

describe("XML the server must refuse", () => {
  test("malformed XML after login gets <not-well-formed/> and a close", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write("<message to='x@localhost'><body>hi</message>");
    await expectStreamError(client, "not-well-formed");
  });

  test("malformed XML before authentication gets <not-well-formed/> and a close", async (t) => {
    const node = getNode();
    const client = await connectRaw(t, node);
    await client.openStream();
    client.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><<");
    await expectStreamError(client, "not-well-formed");
  });

  test("an attribute without quotes gets <not-well-formed/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write("<presence type=unavailable/>");
    await expectStreamError(client, "not-well-formed");
  });

  test("an undeclared namespace prefix gets <not-well-formed/> or <bad-namespace-prefix/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write("<message to='x@localhost'><foo:bar/></message>");
    const condition = await client.waitForStreamError();
    // RFC 6120 §4.9.3.2 names <bad-namespace-prefix/> for this; <not-well-formed/> (namespace
    // well-formedness) is also what Prosody says.
    assert.ok(["bad-namespace-prefix", "not-well-formed", "invalid-xml"].includes(condition), condition);
    await client.waitForClose();
  });

  test("a DOCTYPE before the stream header gets <restricted-xml/>", async (t) => {
    const node = getNode();
    const client = await connectRaw(t, node);
    client.write(
      `<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'y'>]>${HEADER(node.domain).slice(21)}`,
    );
    await expectStreamError(client, "restricted-xml");
  });

  test("a DOCTYPE inside the stream gets <restricted-xml/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write("<!DOCTYPE foo>");
    await expectStreamError(client, "restricted-xml");
  });

  test("an entity declaration gets <restricted-xml/> (no billion laughs)", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write(
      `<!DOCTYPE lol [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><message><body>&lol2;</body></message>`,
    );
    await expectStreamError(client, "restricted-xml");
  });

  test("a processing instruction gets <restricted-xml/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write("<?php echo 1; ?>");
    await expectStreamError(client, "restricted-xml");
  });

  test("a comment gets <restricted-xml/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    // RFC 6120 §11.1: "comments" are among what an XML stream MUST NOT contain.
    client.write("<message to='x@localhost'><!-- hidden --><body>x</body></message>");
    await expectStreamError(client, "restricted-xml");
  });

  test("a reference to an undefined entity is refused", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write("<message to='x@localhost'><body>&xxe;</body></message>");
    const condition = await client.waitForStreamError();
    assert.ok(["restricted-xml", "not-well-formed", "invalid-xml"].includes(condition), condition);
    await client.waitForClose();
  });
});

describe("limits", () => {
  test("a stanza over maxStanzaBytes gets <policy-violation/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write(`<message to='${user.jid}'><body>${"x".repeat(MAX_STANZA_BYTES * 2)}</body></message>`);
    await expectStreamError(client, "policy-violation");
  });

  test("the size limit applies before the stanza ends (an endless stanza is cut off)", async (t) => {
    if (tcpOnly(t, "a stanza split over many writes (a WebSocket message is one whole element)")) return;
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write(`<message to='${user.jid}'><body>`);
    // Never closed: the server must count bytes as they arrive, not wait for the end tag.
    for (let i = 0; i < 4; i++) client.write("y".repeat(MAX_STANZA_BYTES / 2));
    await expectStreamError(client, "policy-violation");
  });

  test("a stanza just under maxStanzaBytes is delivered", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    const body = "z".repeat(MAX_STANZA_BYTES - 400);
    a.send(`<message to='${esc(b.jid!)}' type='chat'><body>${body}</body></message>`);
    const got = await b.waitFor(isMessageWithBody(body), "the large message");
    assert.equal(got.attrs.from, a.jid);
  });

  test("a stanza nested deeper than maxStanzaDepth gets <policy-violation/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    const depth = MAX_DEPTH * 4;
    client.write(`<message to='${user.jid}'>${"<x>".repeat(depth)}${"</x>".repeat(depth)}</message>`);
    await expectStreamError(client, "policy-violation");
  });

  test("a stanza of more elements than maxStanzaElements gets <policy-violation/>, one at the limit passes", async (t) => {
    const node = getNode();
    const [a, b] = await newUsers(node, 2);
    const sender = await loginRaw(t, node, a!);
    const receiver = await loginRaw(t, node, b!, { priority: 1 });
    // The message, its body and the children: exactly the limit, well under maxStanzaBytes.
    const children = "<x/>".repeat(MAX_ELEMENTS - 2);
    sender.send(`<message to='${esc(b!.jid)}' type='chat'><body>wide</body>${children}</message>`);
    const got = await receiver.waitFor(isMessageWithBody("wide"), "the message at the limit");
    assert.equal(got.getChildren("x").length, MAX_ELEMENTS - 2);
    sender.write(`<message to='${esc(b!.jid)}' type='chat'><body>wider</body>${children}<x/></message>`);
    await expectStreamError(sender, "policy-violation");
  });

  test("a deep stanza is cut off before it is closed", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.write(`<message to='${user.jid}'>${"<x>".repeat(MAX_DEPTH * 4)}`);
    await expectStreamError(client, "policy-violation");
  });

  test("a client that stays silent before authenticating is disconnected after authTimeoutMs", async (t) => {
    const node = await startNode(t, { config: { limits: { authTimeoutMs: 500 } } });
    const client = await connectRaw(t, node);
    await client.openStream();
    await client.waitForClose(5_000);
    if (client.streamError) assert.equal(await client.waitForStreamError(), "connection-timeout");
  });
});

describe("order of negotiation", () => {
  test("a stanza before authentication gets <not-authorized/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    await client.openStream();
    await client.startTls();
    client.send(`<message to='${user.jid}'><body>sneaky</body></message>`);
    await expectStreamError(client, "not-authorized");
  });

  test("an iq before authentication gets <not-authorized/>", async (t) => {
    const node = getNode();
    const client = await connectRaw(t, node);
    await client.openStream();
    await client.startTls();
    client.send(`<iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>`);
    await expectStreamError(client, "not-authorized");
  });

  test("a stanza after SASL but before bind gets <not-authorized/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    await client.openStream();
    await client.startTls();
    await client.authPlain(user.username, user.password);
    await client.openStream();
    // RFC 6120 §7.1: stanzas before binding MUST get a <not-authorized/> stream error.
    client.send(`<message to='${user.jid}'><body>unbound</body></message>`);
    await expectStreamError(client, "not-authorized");
  });

  test("an unknown top-level element gets <unsupported-stanza-type/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    client.send(`<foo xmlns='${NS_CLIENT}'/>`);
    await expectStreamError(client, "unsupported-stanza-type");
  });
});

describe("isolation", () => {
  test("a bad stanza from one client does not disturb another conversation", async (t) => {
    const node = getNode();
    const [alice, bob, mallory] = await newUsers(node, 3);
    const a = await loginRaw(t, node, alice!, { priority: 1 });
    const b = await loginRaw(t, node, bob!, { priority: 1 });
    const bad = [
      "<message><body>oops</message>",
      "<!DOCTYPE x>",
      `<message to='${bob!.jid}'><body>${"x".repeat(MAX_STANZA_BYTES * 3)}</body></message>`,
      `<message>${"<x>".repeat(MAX_DEPTH * 3)}`,
    ];
    const malloryClients = await Promise.all(bad.map(() => loginRaw(t, node, mallory!)));
    malloryClients.forEach((client, i) => {
      client.write(bad[i]!);
    });
    for (let i = 0; i < 20; i++) {
      a.send(`<message to='${b.jid}' type='chat'><body>hello ${i}</body></message>`);
      await b.waitFor(isMessageWithBody(`hello ${i}`), `message ${i}`);
    }
    for (const client of malloryClients) await client.waitForClose();
    assert.equal(a.closed || b.closed, false);
    assert.equal(node.process.exitCode, null, "the node is still running");
  });

  test("a client that never reads is cut off at maxOutboundBufferBytes while others keep chatting", async (t) => {
    const node = await startNode(t, {
      config: {
        tls: { requireBeforeAuth: false },
        // Messages to the sloth after its cut-off are stored offline rather than bounced: bounces
        // carry the 15 kB payload back, and a burst of them could pass the flooder's own limit.
        // The flooder's own input budget must not be what slows it: it is the sloth under test.
        limits: {
          maxOutboundBufferBytes: 262_144,
          maxStanzaBytes: 20_000,
          maxOfflineMessagesPerUser: 5_000,
          inputBytesPerSecond: 1_073_741_824,
          inputBurstBytes: 1_073_741_824,
        },
      },
    });
    const [flooder, sloth, carol, dave] = await newUsers(node, 4);
    const f = await loginRaw(t, node, flooder!, { priority: 1, starttls: false, label: "flooder" });
    const s = await loginRaw(t, node, sloth!, { priority: 1, starttls: false, label: "sloth" });
    const c = await loginRaw(t, node, carol!, { priority: 1, starttls: false, label: "carol" });
    const d = await loginRaw(t, node, dave!, { priority: 1, starttls: false, label: "dave" });
    // Carol watches the sloth's presence, to see it go when the server cuts it off.
    await becomeContacts(c, s);
    await goOnline(s, { priority: 2 });
    await c.waitFor(isPresenceFrom(s.jid!), "sloth's presence update");
    s.pauseReading();

    const body = "w".repeat(15_000);
    const flood = async () => {
      // Up to ~45 MB: far more than the kernel's socket buffers on loopback hold, so the
      // server's own outbound buffer for the sloth must pass the limit.
      for (let i = 0; i < 3_000 && !c.received.some(isPresenceFrom(s.jid!, "unavailable")); i++) {
        await f.writeAndFlush(`<message to='${s.jid}' type='chat'><body>${body}</body></message>`);
      }
    };
    const chat = async () => {
      const latencies: number[] = [];
      for (let i = 0; i < 50; i++) {
        const started = performance.now();
        c.send(`<message to='${d.jid}' type='chat'><body>ping ${i}</body></message>`);
        await d.waitFor(isMessageWithBody(`ping ${i}`), `ping ${i}`, 10_000);
        latencies.push(performance.now() - started);
      }
      return latencies;
    };
    const [, latencies] = await Promise.all([flood(), chat()]);
    // RFC 6121 §4.5.3: the cut-off session's contacts see it go unavailable.
    await c.waitFor(
      isPresenceFrom(s.jid!, "unavailable"),
      "the sloth to be cut off (unavailable presence)",
      30_000,
    );
    s.resumeReading();
    await s.waitForClose(30_000);
    assert.ok(
      Math.max(...latencies) < 2_000,
      `chat stayed responsive: max ${Math.round(Math.max(...latencies))} ms`,
    );
    // The flooder itself was never disconnected.
    assert.equal(f.closed, false, f.describe());
  });

  test("a client sending past its input budget is read more slowly, not cut off, and loses nothing", async (t) => {
    const node = await startNode(t, {
      config: {
        tls: { requireBeforeAuth: false },
        limits: { inputBytesPerSecond: 20_000, inputBurstBytes: 20_000 },
      },
    });
    const [sender, receiver] = await newUsers(node, 2);
    const a = await loginRaw(t, node, sender!, { priority: 1, starttls: false, label: "sender" });
    const b = await loginRaw(t, node, receiver!, { priority: 1, starttls: false, label: "receiver" });
    const body = (i: number) => `${i} ${"z".repeat(1_000)}`;
    const started = performance.now();
    // About 124 KB in one write. The server reads at most 64 KB at a time, and only within the
    // budget (20 KB at once, then 20 KB a second): the bytes before the last read are at least
    // 60 KB, so the last message is read no sooner than two seconds after the first.
    let batch = "";
    for (let i = 0; i < 120; i++)
      batch += `<message to='${b.jid}' type='chat'><body>${body(i)}</body></message>`;
    a.write(batch);
    for (let i = 0; i < 120; i++) await b.waitFor(isMessageWithBody(body(i)), `message ${i}`, 30_000);
    const elapsed = performance.now() - started;
    assert.ok(
      elapsed > 1_500,
      `the last message arrived after ${Math.round(elapsed)} ms: the budget did not apply`,
    );
    assert.equal(a.closed, false, a.describe());
  });
});
