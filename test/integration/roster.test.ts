/**
 * RFC 6121 §2: roster get/set/remove, pushes to every interested resource, and roster
 * versioning.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Element } from "@xmpp/xml";
import { getRoster, isRosterPush, loginRaw, newUser, useNode } from "../helpers/fixtures.ts";
import { NS_ROSTER, type RawClient, stanzaError } from "../helpers/raw-client.ts";
import { startNode } from "../helpers/start-node.ts";

const NS_ROSTER_VER = "urn:xmpp:features:rosterver";

const getNode = useNode();

function items(reply: Element): Element[] {
  return reply.getChild("query", NS_ROSTER)?.getChildren("item") ?? [];
}

async function rosterSet(client: RawClient, item: string): Promise<Element> {
  return client.iq("set", `<query xmlns='${NS_ROSTER}'>${item}</query>`);
}

/** RFC 6121 §2.1.6: a client accepts a push only without 'from' or from its own bare JID. */
function assertPushFrom(push: Element, userJid: string) {
  assert.ok(push.attrs.from === undefined || push.attrs.from === userJid, `push from ${push.attrs.from}`);
}

describe("roster management", () => {
  test("a new account has an empty roster", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user, { roster: false });
    const reply = await getRoster(client);
    assert.ok(reply.getChild("query", NS_ROSTER), reply.toString());
    assert.equal(items(reply).length, 0);
  });

  test("a roster set is pushed to every interested resource and returned by the next get", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const laptop = await loginRaw(t, node, user, { resource: "laptop" });
    const phone = await loginRaw(t, node, user, { resource: "phone" });
    const contact = `friend-${Date.now()}@${node.domain}`;
    const reply = await rosterSet(
      laptop,
      `<item jid='${contact}' name='Best Friend'><group>Friends</group><group>Work</group></item>`,
    );
    assert.equal(reply.attrs.type, "result", reply.toString());
    for (const client of [laptop, phone]) {
      const push = await client.waitFor(isRosterPush(contact), `${client.label}: roster push`);
      assertPushFrom(push, user.jid);
      const item = push.getChild("query", NS_ROSTER)!.getChild("item")!;
      assert.equal(item.attrs.name, "Best Friend");
      assert.equal(item.attrs.subscription, "none");
      assert.deepEqual(
        item
          .getChildren("group")
          .map((g) => g.text())
          .sort(),
        ["Friends", "Work"],
      );
    }
    const roster = await getRoster(phone);
    const stored = items(roster).find((item) => item.attrs.jid === contact);
    assert.ok(stored, roster.toString());
    assert.equal(stored.attrs.name, "Best Friend");
    assert.equal(stored.attrs.subscription, "none");
    assert.equal(stored.attrs.ask, undefined);
  });

  test("updating an item replaces its name and groups", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    const contact = `upd-${Date.now()}@${node.domain}`;
    await rosterSet(client, `<item jid='${contact}' name='Old'><group>A</group></item>`);
    await client.waitFor(isRosterPush(contact), "first push");
    await rosterSet(client, `<item jid='${contact}' name='New'><group>B</group></item>`);
    await client.waitFor(
      isRosterPush(contact, (item) => item.attrs.name === "New"),
      "second push",
    );
    const stored = items(await getRoster(client)).filter((item) => item.attrs.jid === contact);
    assert.equal(stored.length, 1);
    assert.equal(stored[0]!.attrs.name, "New");
    assert.deepEqual(
      stored[0]!.getChildren("group").map((g) => g.text()),
      ["B"],
    );
  });

  test("removing an item pushes subscription='remove' and drops it from the roster", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const a = await loginRaw(t, node, user, { resource: "a" });
    const b = await loginRaw(t, node, user, { resource: "b" });
    const contact = `gone-${Date.now()}@${node.domain}`;
    await rosterSet(a, `<item jid='${contact}'/>`);
    await a.waitFor(isRosterPush(contact), "add push");
    await b.waitFor(isRosterPush(contact), "add push");
    const reply = await rosterSet(a, `<item jid='${contact}' subscription='remove'/>`);
    assert.equal(reply.attrs.type, "result", reply.toString());
    for (const client of [a, b]) {
      await client.waitFor(
        isRosterPush(contact, (item) => item.attrs.subscription === "remove"),
        `${client.label}: remove push`,
      );
    }
    assert.equal(items(await getRoster(a)).filter((item) => item.attrs.jid === contact).length, 0);
  });

  test("removing an item that is not in the roster gets item-not-found", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    const reply = await rosterSet(client, `<item jid='never-added@${node.domain}' subscription='remove'/>`);
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "item-not-found");
  });

  test("a roster set with two items gets bad-request", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    const reply = await rosterSet(client, `<item jid='one@${node.domain}'/><item jid='two@${node.domain}'/>`);
    assert.equal(reply.attrs.type, "error", reply.toString());
    // RFC 6121 §2.3.3: "The <query/> element contains more than one <item/> child element."
    assert.equal(stanzaError(reply)?.condition, "bad-request");
  });

  test("a roster set with a duplicate group gets bad-request", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    const reply = await rosterSet(
      client,
      `<item jid='dup@${node.domain}'><group>X</group><group>X</group></item>`,
    );
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "bad-request");
  });

  test("a roster set with an empty group name gets not-acceptable", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    const reply = await rosterSet(client, `<item jid='empty@${node.domain}'><group></group></item>`);
    assert.equal(reply.attrs.type, "error", reply.toString());
    // RFC 6121 §2.3.3: "The value of the <group/> element is of zero length" → not-acceptable.
    assert.equal(stanzaError(reply)?.condition, "not-acceptable");
  });

  test("a roster set with a malformed JID gets jid-malformed or bad-request", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    const reply = await rosterSet(client, `<item jid='a@b@c'/>`);
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.ok(
      ["jid-malformed", "bad-request"].includes(stanzaError(reply)?.condition ?? ""),
      reply.toString(),
    );
  });

  test("a roster get or set addressed to another user gets forbidden or service-unavailable", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const other = await newUser(node, "other");
    const client = await loginRaw(t, node, user);
    // RFC 6121 §2.1.5: only the user's own server answers roster requests, for the user itself.
    const reply = await client.iq(
      "set",
      `<query xmlns='${NS_ROSTER}'><item jid='x@${node.domain}'/></query>`,
      {
        to: other.jid,
      },
    );
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.ok(
      ["forbidden", "service-unavailable", "not-allowed"].includes(stanzaError(reply)?.condition ?? ""),
      reply.toString(),
    );
  });

  test("a roster larger than maxRosterItems is refused", async (t) => {
    const node = await startNode(t, { config: { limits: { maxRosterItems: 3 } } });
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    for (let i = 0; i < 3; i++) {
      const reply = await rosterSet(client, `<item jid='c${i}@${node.domain}'/>`);
      assert.equal(reply.attrs.type, "result", reply.toString());
    }
    const over = await rosterSet(client, `<item jid='c3@${node.domain}'/>`);
    assert.equal(over.attrs.type, "error", over.toString());
    // RFC 6121 §2.3.3 names <not-allowed/> for a roster at its maximum; resource-constraint also fits.
    assert.ok(
      ["not-allowed", "resource-constraint", "policy-violation"].includes(stanzaError(over)?.condition ?? ""),
    );
    assert.equal(items(await getRoster(client)).length, 3);
  });

  test("a subscription that would add a roster item past maxRosterItems gets not-allowed", async (t) => {
    const node = await startNode(t, { config: { limits: { maxRosterItems: 1 } } });
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    assert.equal((await rosterSet(client, `<item jid='c0@${node.domain}'/>`)).attrs.type, "result");
    client.send(`<presence to='c1@${node.domain}' type='subscribe' id='sub-over'/>`);
    const refused = await client.waitFor(
      (el) => el.getName() === "presence" && el.attrs.type === "error",
      "the refused subscription",
    );
    assert.equal(stanzaError(refused)?.condition, "not-allowed");
    // Subscribing to a contact already on the roster still works.
    client.send(`<presence to='c0@${node.domain}' type='subscribe'/>`);
    await client.waitFor(
      isRosterPush(`c0@${node.domain}`, (item) => item.attrs.ask === "subscribe"),
      "ask push",
    );
    assert.deepEqual(
      items(await getRoster(client)).map((item) => item.attrs.jid),
      [`c0@${node.domain}`],
    );
  });
});

describe("roster versioning", () => {
  test("the server advertises roster versioning and returns a version", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user, { roster: false });
    const features = client.received.findLast((el) => el.getName() === "features");
    assert.ok(features?.getChild("ver", NS_ROSTER_VER), `rosterver feature: ${features?.toString()}`);
    const reply = await getRoster(client, "");
    const ver = reply.getChild("query", NS_ROSTER)?.attrs.ver;
    assert.equal(typeof ver, "string", `a ver attribute on the result: ${reply.toString()}`);
  });

  test("a get with the current version returns an empty result, and changes then come as pushes", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user, { roster: false });
    const contact = `v1-${Date.now()}@${node.domain}`;
    await getRoster(client, "");
    await rosterSet(client, `<item jid='${contact}'/>`);
    const push = await client.waitFor(isRosterPush(contact), "push");
    const v1 = push.getChild("query", NS_ROSTER)?.attrs.ver;
    assert.ok(v1, `a push carries the new version (RFC 6121 §2.6.3): ${push.toString()}`);

    // Reconnect with the version we have: nothing to send.
    const again = await loginRaw(t, node, user, { roster: false });
    const same = await getRoster(again, v1);
    assert.equal(
      same.getChild("query", NS_ROSTER),
      undefined,
      `an empty iq result for an up-to-date version: ${same}`,
    );

    // A change after that is pushed, with a new version.
    const later = `v2-${Date.now()}@${node.domain}`;
    await rosterSet(client, `<item jid='${later}'/>`);
    const push2 = await again.waitFor(isRosterPush(later), "push of the later change");
    const v2 = push2.getChild("query", NS_ROSTER)?.attrs.ver;
    assert.ok(v2 && v2 !== v1, `a different version after a change: ${v1} → ${v2}`);
  });

  test("a get with an older version returns the roster or the missing changes as pushes", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user, { roster: false });
    const first = `o1-${Date.now()}@${node.domain}`;
    const second = `o2-${Date.now()}@${node.domain}`;
    await getRoster(client, "");
    await rosterSet(client, `<item jid='${first}'/>`);
    const v1 = (await client.waitFor(isRosterPush(first), "push")).getChild("query", NS_ROSTER)!.attrs.ver!;
    await rosterSet(client, `<item jid='${second}'/>`);
    const v2 = (await client.waitFor(isRosterPush(second), "push")).getChild("query", NS_ROSTER)!.attrs.ver!;

    const stale = await loginRaw(t, node, user, { roster: false });
    const reply = await getRoster(stale, v1);
    const query = reply.getChild("query", NS_ROSTER);
    if (query) {
      // The whole roster, stamped with the current version.
      assert.equal(query.attrs.ver, v2);
      assert.deepEqual(
        items(reply)
          .map((item) => item.attrs.jid)
          .sort(),
        [first, second].sort(),
      );
    } else {
      // RFC 6121 §2.6.3: or an empty result followed by a push for each change since v1.
      const missed = await stale.waitFor(isRosterPush(second), "the change since v1 as a push");
      assert.equal(missed.getChild("query", NS_ROSTER)?.attrs.ver, v2);
    }
  });
});
