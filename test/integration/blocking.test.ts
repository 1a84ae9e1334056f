/**
 * XEP-0191 Blocking Command: the block list, pushes, and what blocking does to stanzas in both
 * directions and to presence.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Element } from "@xmpp/xml";
import {
  becomeContacts,
  isMessageWithBody,
  isPresenceFrom,
  loginRaw,
  newUser,
  newUsers,
  roundTrip,
  useNode,
} from "../helpers/fixtures.ts";
import { NS_PING, type RawClient, stanzaError } from "../helpers/raw-client.ts";
import { startNode } from "../helpers/start-node.ts";

const NS_BLOCKING = "urn:xmpp:blocking";
const NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors";

const getNode = useNode();

function blockedJids(reply: Element): string[] {
  return (
    reply
      .getChild("blocklist", NS_BLOCKING)
      ?.getChildren("item")
      .map((item) => item.attrs.jid ?? "") ?? []
  );
}

async function getBlocklist(client: RawClient): Promise<string[]> {
  const reply = await client.iq("get", `<blocklist xmlns='${NS_BLOCKING}'/>`);
  assert.equal(reply.attrs.type, "result", reply.toString());
  assert.ok(reply.getChild("blocklist", NS_BLOCKING), reply.toString());
  return blockedJids(reply);
}

async function block(client: RawClient, ...jids: string[]): Promise<Element> {
  const items = jids.map((jid) => `<item jid='${jid}'/>`).join("");
  return client.iq("set", `<block xmlns='${NS_BLOCKING}'>${items}</block>`);
}

async function unblock(client: RawClient, ...jids: string[]): Promise<Element> {
  const items = jids.map((jid) => `<item jid='${jid}'/>`).join("");
  return client.iq("set", `<unblock xmlns='${NS_BLOCKING}'>${items}</unblock>`);
}

function isBlockPush(kind: "block" | "unblock", jid?: string) {
  return (el: Element) => {
    if (el.getName() !== "iq" || el.attrs.type !== "set") return false;
    const child = el.getChild(kind, NS_BLOCKING);
    if (!child) return false;
    const items = child.getChildren("item").map((item) => item.attrs.jid);
    return jid === undefined ? items.length === 0 : items.includes(jid);
  };
}

describe("block list management", () => {
  test("the block list starts empty; block and unblock are pushed to every resource that asked for it", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const eve = `eve-${Date.now()}@${node.domain}`;
    const one = await loginRaw(t, node, user, { resource: "one" });
    const two = await loginRaw(t, node, user, { resource: "two" });
    assert.deepEqual(await getBlocklist(one), []);
    assert.deepEqual(await getBlocklist(two), []);

    const result = await block(one, eve);
    assert.equal(result.attrs.type, "result", result.toString());
    for (const client of [one, two]) {
      const push = await client.waitFor(isBlockPush("block", eve), `${client.label}: block push`);
      assert.ok(
        push.attrs.from === undefined || push.attrs.from === user.jid,
        `push from ${push.attrs.from}`,
      );
    }
    assert.deepEqual(await getBlocklist(two), [eve]);

    const undone = await unblock(two, eve);
    assert.equal(undone.attrs.type, "result", undone.toString());
    for (const client of [one, two]) {
      await client.waitFor(isBlockPush("unblock", eve), `${client.label}: unblock push`);
    }
    assert.deepEqual(await getBlocklist(one), []);
  });

  test("an unblock without items empties the list", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    await getBlocklist(client);
    await block(client, `x1@${node.domain}`, `x2@${node.domain}`);
    assert.deepEqual((await getBlocklist(client)).sort(), [`x1@${node.domain}`, `x2@${node.domain}`]);
    const reply = await client.iq("set", `<unblock xmlns='${NS_BLOCKING}'/>`);
    assert.equal(reply.attrs.type, "result", reply.toString());
    await client.waitFor(isBlockPush("unblock"), "the unblock-all push");
    assert.deepEqual(await getBlocklist(client), []);
  });

  test("a block without items gets bad-request and a malformed JID gets jid-malformed", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const empty = await client.iq("set", `<block xmlns='${NS_BLOCKING}'/>`);
    assert.equal(empty.attrs.type, "error", empty.toString());
    assert.equal(stanzaError(empty)?.condition, "bad-request");
    const malformed = await block(client, "a@b@c");
    assert.equal(malformed.attrs.type, "error", malformed.toString());
    assert.equal(stanzaError(malformed)?.condition, "jid-malformed");
  });
});

describe("effects of blocking", () => {
  test("stanzas from a blocked JID are not delivered; messages and iqs get service-unavailable", async (t) => {
    const node = getNode();
    const [alice, eve] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 1 });
    const e = await loginRaw(t, node, eve!, { priority: 1 });
    await getBlocklist(a);
    await block(a, eve!.jid);
    await a.waitFor(isBlockPush("block", eve!.jid), "block push");

    e.send(`<message to='${alice!.jid}' id='blocked-msg' type='chat'><body>let me in</body></message>`);
    e.send(`<presence to='${a.jid}'/>`);
    const iqReply = await e.iq("get", `<ping xmlns='${NS_PING}'/>`, { to: a.jid! });
    // XEP-0191 §3.5: iq get/set from a blocked entity gets an error (service-unavailable).
    assert.equal(iqReply.attrs.type, "error", iqReply.toString());
    assert.equal(stanzaError(iqReply)?.condition, "service-unavailable");
    const messageErrors = e.received.filter((el) => el.attrs.id === "blocked-msg");
    for (const error of messageErrors) {
      assert.equal(stanzaError(error)?.condition, "service-unavailable", "a message error, if any");
    }
    // Everything eve sent was handled before that iq; nothing of it reached alice.
    const earlier = await roundTrip(a);
    const leaked = [...earlier, ...a.pending()].filter((el) => el.attrs.from?.startsWith(eve!.jid));
    assert.deepEqual(leaked.map(String), [], "nothing from a blocked JID reaches the user");
  });

  test("sending to a blocked JID gets not-acceptable with <blocked/>", async (t) => {
    const node = getNode();
    const [alice, eve] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 1 });
    const e = await loginRaw(t, node, eve!, { priority: 1 });
    await block(a, eve!.jid);
    a.send(`<message to='${e.jid}' id='to-blocked' type='chat'><body>can you hear me</body></message>`);
    const error = await a.waitFor(
      (el) => el.attrs.id === "to-blocked" && el.attrs.type === "error",
      "the error",
    );
    // XEP-0191 §3.6: "not-acceptable" with <blocked xmlns='urn:xmpp:blocking:errors'/>.
    assert.equal(stanzaError(error)?.condition, "not-acceptable");
    assert.ok(error.getChild("error")?.getChild("blocked", NS_BLOCKING_ERRORS), error.toString());
    const earlier = await roundTrip(e);
    assert.deepEqual(
      [...earlier, ...e.pending()].filter(isMessageWithBody("can you hear me")).map(String),
      [],
      "not routed to the blocked JID",
    );
  });

  test("after unblocking, messages flow again", async (t) => {
    const node = getNode();
    const [alice, eve] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 1 });
    const e = await loginRaw(t, node, eve!, { priority: 1 });
    await block(a, eve!.jid);
    await unblock(a, eve!.jid);
    e.send(`<message to='${a.jid}' type='chat'><body>hello again</body></message>`);
    await a.waitFor(isMessageWithBody("hello again"), "the message after unblock");
  });

  test("blocking a contact sends it unavailable presence, and unblocking sends presence again", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 1 });
    const b = await loginRaw(t, node, bob!, { priority: 1 });
    await becomeContacts(a, b);
    await block(a, bob!.jid);
    // XEP-0191 §3.3: the blocked contact sees the user go unavailable...
    await b.waitFor(isPresenceFrom(a.jid!, "unavailable"), "unavailable after block");
    await unblock(a, bob!.jid);
    // ...and §3.4: available again after unblocking.
    await b.waitFor(isPresenceFrom(a.jid!), "presence after unblock");
  });
});

describe("blocklist limit", () => {
  test("a block request that would take the list past maxBlocklistItems gets not-allowed and changes nothing", async (t) => {
    const node = await startNode(t, { config: { limits: { maxBlocklistItems: 2 } } });
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    assert.equal((await block(client, `a@${node.domain}`, `b@${node.domain}`)).attrs.type, "result");
    // Blocking a JID already on the list does not grow it.
    assert.equal((await block(client, `a@${node.domain}`)).attrs.type, "result");
    const over = await block(client, `c@${node.domain}`);
    assert.equal(over.attrs.type, "error", over.toString());
    assert.equal(stanzaError(over)?.condition, "not-allowed");
    assert.deepEqual(await getBlocklist(client), [`a@${node.domain}`, `b@${node.domain}`]);
  });
});
