/**
 * Logins in the order older clients use (libpurple/Pidgin, Psi, clients written to RFC 3921):
 * the RFC 3921 session request right after bind, addressed the way RFC 3921's own example does
 * (to the domain), then a burst of requests in one write, then presence and a ping. Any error in
 * this sequence is fatal to such a client ("Error initializing session" in libpurple).
 * Run against one node and, by `npm test`, against a cluster (half the users on another node).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Element } from "@xmpp/xml";
import { goOnline, isMessageWithBody, newUser, useNode } from "../helpers/fixtures.ts";
import { bareJid, NS_PING, NS_ROSTER, NS_SESSION, RawClient } from "../helpers/raw-client.ts";
import type { StartedNode } from "../helpers/start-node.ts";

const getNode = useNode();

const NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items";
const NS_DISCO_INFO = "http://jabber.org/protocol/disco#info";
const NS_VCARD = "vcard-temp";

function describeReply(reply: Element): string {
  return `${reply.attrs.type}: ${reply.toString()}`;
}

/** The legacy login as libpurple does it; resolves with the client once presence is reflected. */
async function legacyLogin(
  t: { after(fn: () => unknown): void },
  node: StartedNode,
  user: { username: string; password: string; jid: string },
  resource: string,
): Promise<RawClient> {
  const client = await RawClient.connectTo(node, { label: resource });
  t.after(() => client.destroy());
  client.autoReply.ping = true;
  client.autoReply.rosterPush = true;
  const full = await client.login(user.username, user.password, { resource });
  assert.equal(full, `${user.jid}/${resource}`);

  // RFC 3921 §3, example 1: the session request carries to='<domain>'.
  const session = await client.iq("set", `<session xmlns='${NS_SESSION}'/>`, { to: node.domain });
  assert.equal(session.attrs.type, "result", describeReply(session));
  assert.equal(session.attrs.from ?? node.domain, node.domain, "answered by the server");

  // One write: disco#items and disco#info of the server, the user's own vCard, the roster.
  const ids = {
    items: `${resource}-items`,
    info: `${resource}-info`,
    vcard: `${resource}-vc`,
    roster: `${resource}-roster`,
  };
  client.write(
    `<iq type='get' id='${ids.items}' to='${node.domain}'><query xmlns='${NS_DISCO_ITEMS}'/></iq>` +
      `<iq type='get' id='${ids.info}' to='${node.domain}'><query xmlns='${NS_DISCO_INFO}'/></iq>` +
      `<iq type='get' id='${ids.vcard}'><vCard xmlns='${NS_VCARD}'/></iq>` +
      `<iq type='get' id='${ids.roster}'><query xmlns='${NS_ROSTER}'/></iq>`,
  );
  const reply = (id: string) =>
    client.waitFor((el) => el.getName() === "iq" && el.attrs.id === id, `the reply to ${id}`);
  const [items, info, vcard, roster] = await Promise.all([
    reply(ids.items),
    reply(ids.info),
    reply(ids.vcard),
    reply(ids.roster),
  ]);
  for (const r of [items, info, vcard, roster]) assert.equal(r.attrs.type, "result", describeReply(r));
  assert.ok(items.getChild("query", NS_DISCO_ITEMS), describeReply(items));
  const identity = info.getChild("query", NS_DISCO_INFO)?.getChild("identity");
  assert.equal(identity?.attrs.category, "server", describeReply(info));
  assert.ok(vcard.getChild("vCard", NS_VCARD), describeReply(vcard));
  assert.ok(roster.getChild("query", NS_ROSTER), describeReply(roster));

  await goOnline(client, { priority: 1 });
  const ping = await client.iq("get", `<ping xmlns='${NS_PING}'/>`, { to: node.domain });
  assert.equal(ping.attrs.type, "result", describeReply(ping));
  return client;
}

describe("a legacy client's login order", () => {
  test("session to the domain, a pipelined burst, presence and a ping: every answer is a result", async (t) => {
    const node = getNode();
    const alice = await newUser(node, "legacy");
    const bob = await newUser(node, "legacy");
    const a = await legacyLogin(t, node, alice, "purple1");
    const b = await legacyLogin(t, node, bob, "purple2");
    // Both sessions work: a chat message arrives with the sender's full JID.
    a.send(
      `<message to='${bob.jid}' type='chat' id='hello'><body>hello from a legacy client</body></message>`,
    );
    const got = await b.waitFor(isMessageWithBody("hello from a legacy client"), "alice's message");
    assert.equal(got.attrs.from, `${alice.jid}/purple1`);
    assert.equal(bareJid(got.attrs.to!), bob.jid);
  });

  test("the session request is answered in every form addressed to the server, before and after presence", async (t) => {
    const node = getNode();
    const user = await newUser(node, "legacy");
    const client = await RawClient.connectTo(node, { label: "forms" });
    t.after(() => client.destroy());
    await client.login(user.username, user.password, { resource: "forms" });
    const forms: { label: string; to?: string }[] = [
      { label: "no to" },
      { label: "the domain", to: node.domain },
      { label: "the user's bare JID", to: user.jid },
    ];
    for (const phase of ["before presence", "after presence"]) {
      if (phase === "after presence") await goOnline(client);
      for (const form of forms) {
        const reply = await client.iq(
          "set",
          `<session xmlns='${NS_SESSION}'/>`,
          form.to === undefined ? {} : { to: form.to },
        );
        assert.equal(reply.attrs.type, "result", `${form.label}, ${phase}: ${reply.toString()}`);
      }
    }
  });

  test("a session get, or a session element in another namespace, is still not a session request", async (t) => {
    const node = getNode();
    const user = await newUser(node, "legacy");
    const client = await RawClient.connectTo(node, { label: "not-session" });
    t.after(() => client.destroy());
    await client.login(user.username, user.password);
    const get = await client.iq("get", `<session xmlns='${NS_SESSION}'/>`, { to: node.domain });
    assert.equal(get.attrs.type, "error", get.toString());
    const other = await client.iq("set", `<session xmlns='urn:example:not-session'/>`, { to: node.domain });
    assert.equal(other.attrs.type, "error", other.toString());
  });
});
