/**
 * RFC 6121 §8.5 message delivery rules (bare and full JIDs, by type and priority), 'from'
 * stamping, and offline storage (XEP-0160) with XEP-0203 delay stamps and the per-user limit.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Element } from "@xmpp/xml";
import {
  goOnline,
  isMessageWithBody,
  loginRaw,
  newUser,
  newUsers,
  roundTrip,
  useNode,
} from "../helpers/fixtures.ts";
import { esc, type RawClient, stanzaError } from "../helpers/raw-client.ts";

const NS_DELAY = "urn:xmpp:delay";
const OFFLINE_LIMIT = 5;

const getNode = useNode({ config: { limits: { maxOfflineMessagesPerUser: OFFLINE_LIMIT } } });

function message(to: string, body: string, type?: string, extra = ""): string {
  const typeAttr = type === undefined ? "" : ` type='${type}'`;
  return `<message to='${esc(to)}'${typeAttr}><body>${esc(body)}</body>${extra}</message>`;
}

function isErrorFor(body: string) {
  return (el: Element) =>
    el.getName() === "message" && el.attrs.type === "error" && el.getChildText("body") === body;
}

/**
 * Sends `marker` to `recipient`'s full JID from `sender` and returns the messages with a body
 * that `recipient` received before it: the sender's stanzas reach the recipient's account in
 * order, so anything routed there earlier has been delivered (or dropped) by then.
 */
async function bodiesBefore(sender: RawClient, recipient: RawClient, marker: string): Promise<string[]> {
  sender.send(message(recipient.jid!, marker, "chat"));
  const { before } = await recipient.collectUntil(isMessageWithBody(marker), `marker ${marker}`);
  return before.filter((el) => el.getName() === "message").map((el) => el.getChildText("body") ?? "");
}

describe("delivery to a bare JID", () => {
  test("chat to a bare JID goes to the available resource with the highest priority", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const low = await loginRaw(t, node, bob!, { resource: "low", priority: 1 });
    const high = await loginRaw(t, node, bob!, { resource: "high", priority: 5 });
    a.send(message(bob!.jid, "to the best one", "chat"));
    const got = await high.waitFor(isMessageWithBody("to the best one"), "delivery to the highest priority");
    assert.equal(got.attrs.from, a.jid, "'from' is the sender's full JID");
    assert.equal(got.attrs.to, bob!.jid);
    // RFC 6121 §8.5.2.1.1 also allows delivery to every non-negative resource; both are fine for
    // "low", which is therefore not checked.
    void low;
  });

  test("a resource with negative priority never gets messages sent to the bare JID", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const positive = await loginRaw(t, node, bob!, { resource: "pos", priority: 0 });
    const negative = await loginRaw(t, node, bob!, { resource: "neg", priority: -1 });
    a.send(message(bob!.jid, "not for negative", "chat"));
    a.send(message(bob!.jid, "normal, not for negative"));
    await positive.waitFor(isMessageWithBody("not for negative"), "delivery to the non-negative resource");
    await positive.waitFor(isMessageWithBody("normal, not for negative"), "normal message");
    assert.deepEqual(await bodiesBefore(a, negative, "marker-neg"), []);
  });

  test("with only negative-priority resources, a chat to the bare JID is stored offline", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const negative = await loginRaw(t, node, bob!, { resource: "neg", priority: -5 });
    a.send(message(bob!.jid, "kept for later", "chat"));
    assert.deepEqual(await bodiesBefore(a, negative, "marker-offline"), []);
    negative.destroy();
    const later = await loginRaw(t, node, bob!, { resource: "later" });
    await goOnline(later, { priority: 1 });
    const got = await later.waitFor(isMessageWithBody("kept for later"), "the stored message");
    assert.ok(got.getChild("delay", NS_DELAY), `a delay stamp on an offline message: ${got}`);
  });

  test("headline to a bare JID goes to every non-negative resource", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const one = await loginRaw(t, node, bob!, { resource: "one", priority: 1 });
    const two = await loginRaw(t, node, bob!, { resource: "two", priority: 7 });
    const negative = await loginRaw(t, node, bob!, { resource: "neg", priority: -1 });
    a.send(message(bob!.jid, "news", "headline"));
    await one.waitFor(isMessageWithBody("news"), "headline at one");
    await two.waitFor(isMessageWithBody("news"), "headline at two");
    assert.deepEqual(await bodiesBefore(a, negative, "marker-headline"), []);
  });

  test("groupchat to a user's bare JID gets service-unavailable", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    a.send(message(bob!.jid, "not a room", "groupchat"));
    // RFC 6121 §8.5.2.1.1: "the server MUST NOT deliver the stanza ... MUST return an error".
    const error = await a.waitFor(isErrorFor("not a room"), "the groupchat error");
    assert.equal(stanzaError(error)?.condition, "service-unavailable");
    assert.deepEqual(await bodiesBefore(a, b, "marker-gc"), []);
  });

  test("groupchat to a user without resources gets an error; headline and error are dropped silently", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    a.send(message(bob!.jid, "gc offline", "groupchat"));
    const error = await a.waitFor(isErrorFor("gc offline"), "the groupchat error");
    assert.equal(stanzaError(error)?.condition, "service-unavailable");
    a.send(message(bob!.jid, "headline offline", "headline"));
    a.send(message(bob!.jid, "error offline", "error"));
    const earlier = await roundTrip(a);
    assert.deepEqual(
      [...earlier, ...a.pending()].filter((el) => el.getName() === "message").map(String),
      [],
      "RFC 6121 §8.5.2.2.1: headline and error messages to an offline user are silently ignored",
    );
    // ...and not stored either.
    const b = await loginRaw(t, node, bob!);
    await goOnline(b, { priority: 0 });
    assert.deepEqual(await bodiesBefore(a, b, "marker-after"), []);
  });

  test("a message to a user that does not exist is dropped or gets service-unavailable", async (t) => {
    const node = getNode();
    const alice = await newUser(node);
    const a = await loginRaw(t, node, alice, { priority: 0 });
    a.send(message(`no-such-user-${Date.now()}@${node.domain}`, "into the void", "chat"));
    const earlier = await roundTrip(a);
    const errors = [...earlier, ...a.pending()].filter(isErrorFor("into the void"));
    // RFC 6121 §8.5.1: silently ignore, or return <service-unavailable/>.
    for (const error of errors) assert.equal(stanzaError(error)?.condition, "service-unavailable");
  });

  test("messages to many names nobody registered leave no actors behind", async (t) => {
    const node = getNode();
    const alice = await newUser(node);
    const a = await loginRaw(t, node, alice, { priority: 0 });
    const actors = async () => {
      const response = await fetch(`http://127.0.0.1:${node.ports.http}/api/status`);
      return ((await response.json()) as { actors: number }).actors;
    };
    const before = await actors();
    const count = 200;
    for (let i = 0; i < count; i++)
      a.send(message(`nobody-${i}-${Date.now()}@${node.domain}`, `void ${i}`, "chat"));
    for (let i = 0; i < count; i++) await a.waitFor(isErrorFor(`void ${i}`), `error ${i}`);
    const after = await actors();
    assert.ok(after - before < 10, `actors grew from ${before} to ${after}`);
  });

  test("a chat to an account that does not exist is refused, not stored for whoever registers the name later", async (t) => {
    const node = getNode();
    const alice = await newUser(node);
    const a = await loginRaw(t, node, alice, { priority: 0 });
    const ghost = `ghost-${Date.now()}`;
    a.send(message(`${ghost}@${node.domain}`, "to nobody", "chat"));
    const error = await a.waitFor(isErrorFor("to nobody"), "the error for a missing account");
    assert.equal(stanzaError(error)?.condition, "service-unavailable");
    await node.createUser(`${ghost}@${node.domain}`, "pw-ghost");
    const g = await loginRaw(t, node, {
      username: ghost,
      jid: `${ghost}@${node.domain}`,
      password: "pw-ghost",
    });
    await goOnline(g, { priority: 0 });
    const delivered = await roundTrip(g);
    assert.deepEqual(
      [...delivered, ...g.pending()].filter((el) => el.getName() === "message").map(String),
      [],
    );
  });
});

describe("delivery to a full JID", () => {
  test("a message to a full JID goes to that resource only", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const best = await loginRaw(t, node, bob!, { resource: "best", priority: 9 });
    const chosen = await loginRaw(t, node, bob!, { resource: "chosen", priority: 1 });
    a.send(message(chosen.jid!, "just you", "chat"));
    const got = await chosen.waitFor(isMessageWithBody("just you"), "delivery to the full JID");
    assert.equal(got.attrs.to, chosen.jid);
    assert.deepEqual(await bodiesBefore(a, best, "marker-full"), []);
  });

  test("a chat to an offline resource is treated as sent to the bare JID", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const other = await loginRaw(t, node, bob!, { resource: "other", priority: 1 });
    // RFC 6121 §8.5.3.2.1: normal and chat to an unknown resource follow the bare JID rules.
    a.send(message(`${bob!.jid}/gone`, "to a gone resource", "chat"));
    await other.waitFor(isMessageWithBody("to a gone resource"), "redirected delivery");
  });

  test("a headline to an offline resource is dropped and groupchat gets service-unavailable", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const other = await loginRaw(t, node, bob!, { resource: "other", priority: 1 });
    a.send(message(`${bob!.jid}/gone`, "gc to gone", "groupchat"));
    const error = await a.waitFor(isErrorFor("gc to gone"), "groupchat error");
    assert.equal(stanzaError(error)?.condition, "service-unavailable");
    a.send(message(`${bob!.jid}/gone`, "headline to gone", "headline"));
    assert.deepEqual(await bodiesBefore(a, other, "marker-gone"), []);
  });

  test("the server stamps 'from' with the sender's full JID, whatever the client wrote", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    a.send(
      `<message to='${b.jid}' from='eve@${node.domain}/forged' type='chat'><body>who am i</body></message>`,
    );
    const outcome = await Promise.race([
      b.waitFor(isMessageWithBody("who am i"), "the message").then((el) => ({ delivered: el })),
      a.waitForStreamError().then((condition) => ({ condition })),
    ]);
    if ("delivered" in outcome) {
      assert.equal(outcome.delivered.attrs.from, a.jid, "RFC 6120 §8.1.2.1: 'from' is stamped by the server");
    } else {
      assert.equal(outcome.condition, "invalid-from");
    }
  });

  test("a message to a malformed JID gets jid-malformed", async (t) => {
    const node = getNode();
    const alice = await newUser(node);
    const a = await loginRaw(t, node, alice, { priority: 0 });
    a.send(message(`a@b@${node.domain}`, "bad address", "chat"));
    const error = await a.waitFor(isErrorFor("bad address"), "the error");
    assert.equal(stanzaError(error)?.condition, "jid-malformed");
  });

  test("a message with no 'to' is handled by the server for the sender's own account", async (t) => {
    const node = getNode();
    const alice = await newUser(node);
    const a = await loginRaw(t, node, alice, { priority: 0 });
    // RFC 6120 §10.3.1: a message without 'to' is treated as addressed to the sender's bare JID.
    const other = await loginRaw(t, node, alice, { resource: "other" });
    await goOnline(other, { priority: 9 });
    a.send(`<message type='chat'><body>note to self 2</body></message>`);
    await other.waitFor(isMessageWithBody("note to self 2"), "delivery to own highest-priority resource");
  });
});

describe("offline storage", () => {
  test("messages to an offline user are delivered with a delay stamp after initial presence, once", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const sentAt = Date.now();
    for (const body of ["first", "second", "third"]) a.send(message(bob!.jid, body, "chat"));
    a.send(message(bob!.jid, "normal one"));
    await roundTrip(a);

    const b = await loginRaw(t, node, bob!);
    // Not before initial presence (RFC 6121 §8.5.2.2.1 / XEP-0160 §4).
    const beforePresence = await roundTrip(b);
    assert.deepEqual(beforePresence.filter((el) => el.getName() === "message").map(String), []);
    await goOnline(b, { priority: 0 });
    const delivered: Element[] = [];
    for (const body of ["first", "second", "third", "normal one"]) {
      delivered.push(await b.waitFor(isMessageWithBody(body), `offline message "${body}"`));
    }
    const order = b.received.filter((el) => el.getName() === "message").map((el) => el.getChildText("body"));
    assert.deepEqual(order.slice(0, 4), ["first", "second", "third", "normal one"], "stored order is kept");
    for (const msg of delivered) {
      assert.equal(msg.attrs.from, a.jid);
      // XEP-0203: <delay xmlns='urn:xmpp:delay' from='domain' stamp='UTC datetime'/>.
      const delay = msg.getChild("delay", NS_DELAY);
      assert.ok(delay, `delay stamp: ${msg}`);
      const stamp = Date.parse(delay.attrs.stamp ?? "");
      assert.match(
        delay.attrs.stamp ?? "",
        /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/,
        "XEP-0082 UTC DateTime",
      );
      assert.ok(
        stamp >= sentAt - 1000 && stamp <= Date.now() + 1000,
        `stamp ${delay.attrs.stamp} is when it was sent`,
      );
      assert.equal(delay.attrs.from, node.domain);
    }
    // Delivered once: the next login gets nothing.
    b.destroy();
    const again = await loginRaw(t, node, bob!, { resource: "again" });
    await goOnline(again, { priority: 0 });
    assert.deepEqual(await bodiesBefore(a, again, "marker-again"), []);
  });

  test("messages are not flushed to a negative-priority presence", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    a.send(message(bob!.jid, "wait for positive", "chat"));
    await roundTrip(a);
    const b = await loginRaw(t, node, bob!);
    await goOnline(b, { priority: -1 });
    assert.deepEqual(await bodiesBefore(a, b, "marker-negative"), []);
    await goOnline(b, { priority: 1 });
    await b.waitFor(isMessageWithBody("wait for positive"), "delivery once the priority is non-negative");
  });

  test("a message of a type nobody knows is a normal message: stored offline, delivered without the type", async (t) => {
    // RFC 6121 §5.2.2. With the unknown type kept, it was neither stored nor bounced: lost.
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    a.send(`<message to='${bob!.jid}' type='bogus'><body>typo in the type</body></message>`);
    await roundTrip(a);
    const b = await loginRaw(t, node, bob!);
    await goOnline(b, { priority: 0 });
    const got = await b.waitFor(isMessageWithBody("typo in the type"), "the message from offline storage");
    assert.equal(got.attrs.type, undefined, got.toString());
  });

  test("the per-user offline limit returns service-unavailable for messages beyond it", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const bodies = Array.from({ length: OFFLINE_LIMIT + 2 }, (_, i) => `offline ${i}`);
    for (const body of bodies) a.send(message(bob!.jid, body, "chat"));
    for (const body of bodies.slice(OFFLINE_LIMIT)) {
      const error = await a.waitFor(isErrorFor(body), `error for "${body}"`);
      // XEP-0160 §3 / RFC 6121 §8.5.2.2.1: over the limit, the sender gets service-unavailable.
      assert.equal(stanzaError(error)?.condition, "service-unavailable");
    }
    const earlier = await roundTrip(a);
    const storedErrors = [...earlier, ...a.pending()].filter(
      (el) =>
        el.getName() === "message" && bodies.slice(0, OFFLINE_LIMIT).includes(el.getChildText("body") ?? ""),
    );
    assert.deepEqual(storedErrors.map(String), [], "no error for messages within the limit");
    const b = await loginRaw(t, node, bob!);
    await goOnline(b, { priority: 0 });
    const got = await bodiesBefore(a, b, "marker-limit");
    assert.deepEqual(got, bodies.slice(0, OFFLINE_LIMIT));
  });
});
