/**
 * XEP-0280 Message Carbons: enable/disable, received and sent copies to the user's other
 * carbons-enabled resources, and the private opt-out.
 */
import assert from "node:assert/strict";
import { describe, type TestContext, test } from "node:test";
import type { Element } from "@xmpp/xml";
import { isMessageWithBody, loginRaw, newUsers, useNode } from "../helpers/fixtures.ts";
import type { RawClient } from "../helpers/raw-client.ts";

const NS_CARBONS = "urn:xmpp:carbons:2";
const NS_FORWARD = "urn:xmpp:forward:0";

const getNode = useNode();

async function enableCarbons(client: RawClient): Promise<void> {
  const reply = await client.iq("set", `<enable xmlns='${NS_CARBONS}'/>`);
  assert.equal(reply.attrs.type, "result", reply.toString());
}

/** The message inside a carbon of the given direction, if `el` is one. */
function carbonPayload(el: Element, direction: "sent" | "received"): Element | undefined {
  return el.getChild(direction, NS_CARBONS)?.getChild("forwarded", NS_FORWARD)?.getChild("message");
}

function isCarbon(direction: "sent" | "received", body: string) {
  return (el: Element) => carbonPayload(el, direction)?.getChildText("body") === body;
}

function carbonBodies(elements: Element[]): string[] {
  return elements
    .map((el) => carbonPayload(el, "sent") ?? carbonPayload(el, "received"))
    .filter((inner): inner is Element => inner !== undefined)
    .map((inner) => inner.getChildText("body") ?? "");
}

async function setup(t: TestContext) {
  const node = getNode();
  const [alice, bob] = await newUsers(node, 2);
  const a1 = await loginRaw(t, node, alice!, { resource: "a1", priority: 1 });
  const a2 = await loginRaw(t, node, alice!, { resource: "a2", priority: 1 });
  const a3 = await loginRaw(t, node, alice!, { resource: "a3", priority: 1 });
  const b = await loginRaw(t, node, bob!, { resource: "b", priority: 1 });
  await enableCarbons(a1);
  await enableCarbons(a2);
  return { node, alice: alice!, bob: bob!, a1, a2, a3, b };
}

describe("message carbons", () => {
  test("a received chat is copied to the user's other carbons-enabled resources", async (t) => {
    const { alice, a1, a2, a3, b } = await setup(t);
    b.send(`<message to='${a1.jid}' type='chat' id='rc1'><body>for a1</body></message>`);
    await a1.waitFor(isMessageWithBody("for a1"), "the original");
    const carbon = await a2.waitFor(isCarbon("received", "for a1"), "the received carbon");
    // XEP-0280 §11: a carbon is only trustworthy from the user's own bare JID.
    assert.equal(carbon.attrs.from, alice.jid);
    assert.equal(carbon.attrs.to, a2.jid);
    const inner = carbonPayload(carbon, "received")!;
    assert.equal(inner.attrs.from, b.jid);
    assert.equal(inner.attrs.to, a1.jid);
    assert.equal(inner.attrs.type, "chat");
    // Not to the resource without carbons, nor back to the recipient itself.
    b.send(`<message to='${a3.jid}' type='chat'><body>marker a3</body></message>`);
    const { before } = await a3.collectUntil(isMessageWithBody("marker a3"), "marker at a3");
    assert.deepEqual(carbonBodies(before), []);
    b.send(`<message to='${a1.jid}' type='chat'><body>marker a1</body></message>`);
    const atA1 = await a1.collectUntil(isMessageWithBody("marker a1"), "marker at a1");
    // (a1 does get a carbon of "marker a3", which went to its sibling a3.)
    assert.ok(!carbonBodies(atA1.before).includes("for a1"), "no carbon of a message to the resource itself");
  });

  test("a sent chat is copied to the user's other carbons-enabled resources", async (t) => {
    const { alice, a1, a2, a3, b } = await setup(t);
    a1.send(`<message to='${b.jid}' type='chat' id='sc1'><body>from a1</body></message>`);
    await b.waitFor(isMessageWithBody("from a1"), "delivery to bob");
    const carbon = await a2.waitFor(isCarbon("sent", "from a1"), "the sent carbon");
    assert.equal(carbon.attrs.from, alice.jid);
    const inner = carbonPayload(carbon, "sent")!;
    assert.equal(inner.attrs.to, b.jid);
    assert.equal(inner.attrs.from, a1.jid, "the forwarded copy carries the sender's full JID");
    a1.send(`<message to='${a3.jid}' type='chat'><body>marker a3</body></message>`);
    const { before } = await a3.collectUntil(isMessageWithBody("marker a3"), "marker at a3");
    assert.deepEqual(carbonBodies(before), [], "no copies for a resource that did not enable carbons");
  });

  test("a normal message with a body and a chat marker are copied; a headline is not (XEP-0280 §6)", async (t) => {
    const { a1, a2, b } = await setup(t);
    b.send(`<message to='${a1.jid}' type='headline'><body>headline in</body></message>`);
    b.send(`<message to='${a1.jid}'><body>normal in</body></message>`);
    const normal = await a2.collectUntil(
      isCarbon("received", "normal in"),
      "the carbon of the normal message",
    );
    assert.deepEqual(carbonBodies(normal.before), [], "no carbon of the headline");
    // A read marker sent as a normal message from another device: the user's other devices
    // learn the chat was read (XEP-0333 with XEP-0280).
    a1.send(`<message to='${b.jid}'><displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>`);
    const marker = await a2.waitFor(
      (el) => carbonPayload(el, "sent")?.getChild("displayed", "urn:xmpp:chat-markers:0") !== undefined,
      "the sent carbon of the chat marker",
    );
    assert.equal(carbonPayload(marker, "sent")?.attrs.to, b.jid);
  });

  test("a message marked <private/> is not copied, in either direction", async (t) => {
    const { a1, a2, b } = await setup(t);
    const privately = `<private xmlns='${NS_CARBONS}'/><no-copy xmlns='urn:xmpp:hints'/>`;
    a1.send(`<message to='${b.jid}' type='chat'><body>secret out</body>${privately}</message>`);
    await b.waitFor(isMessageWithBody("secret out"), "delivery of the private message");
    a1.send(`<message to='${b.jid}' type='chat'><body>public out</body></message>`);
    const sent = await a2.collectUntil(isCarbon("sent", "public out"), "the carbon of the public message");
    assert.deepEqual(carbonBodies(sent.before), [], "no sent carbon for <private/>");

    b.send(`<message to='${a1.jid}' type='chat'><body>secret in</body>${privately}</message>`);
    await a1.waitFor(isMessageWithBody("secret in"), "delivery of the private message");
    b.send(`<message to='${a1.jid}' type='chat'><body>public in</body></message>`);
    const received = await a2.collectUntil(
      isCarbon("received", "public in"),
      "the carbon of the public message",
    );
    assert.deepEqual(carbonBodies(received.before), [], "no received carbon for <private/>");
  });

  test("after disable, a resource gets no more copies", async (t) => {
    const { a1, a2, b } = await setup(t);
    const reply = await a2.iq("set", `<disable xmlns='${NS_CARBONS}'/>`);
    assert.equal(reply.attrs.type, "result", reply.toString());
    b.send(`<message to='${a1.jid}' type='chat'><body>after disable</body></message>`);
    await a1.waitFor(isMessageWithBody("after disable"), "the original");
    b.send(`<message to='${a2.jid}' type='chat'><body>marker a2</body></message>`);
    const { before } = await a2.collectUntil(isMessageWithBody("marker a2"), "marker at a2");
    assert.deepEqual(carbonBodies(before), []);
  });
});
