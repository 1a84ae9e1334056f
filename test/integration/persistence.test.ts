/**
 * Stored data survives a clean restart of the node on the same data directory: accounts,
 * rosters with subscription states, pending subscription requests, offline messages, vCards,
 * private XML and block lists.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { Element } from "@xmpp/xml";
import {
  becomeContacts,
  getRoster,
  goOnline,
  isMessageWithBody,
  isPresenceFrom,
  isRosterPush,
  loginRaw,
  newUsers,
  roundTrip,
} from "../helpers/fixtures.ts";
import { NS_ROSTER } from "../helpers/raw-client.ts";
import { startNode } from "../helpers/start-node.ts";

const NS_VCARD = "vcard-temp";
const NS_PRIVATE = "jabber:iq:private";
const NS_BLOCKING = "urn:xmpp:blocking";

function rosterItem(reply: Element, jid: string): Element | undefined {
  return reply
    .getChild("query", NS_ROSTER)
    ?.getChildren("item")
    .find((item) => item.attrs.jid === jid);
}

test("stored data survives a restart of the node", async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), "starling-restart-"));
  t.after(() => rm(dataDir, { recursive: true, force: true }));

  const first = await startNode(t, { dataDir });
  const [alice, bob, carol] = await newUsers(first, 3);
  const eve = `eve@${first.domain}`;
  {
    const a = await loginRaw(t, first, alice!, { priority: 0 });
    const b = await loginRaw(t, first, bob!, { priority: 0 });
    await becomeContacts(a, b);
    // A request to carol, who is offline: pending on both sides.
    a.send(`<presence to='${carol!.jid}' type='subscribe'/>`);
    await a.waitFor(
      isRosterPush(carol!.jid, (item) => item.attrs.ask === "subscribe"),
      "pending-out push",
    );
    a.send(`<message to='${carol!.jid}' type='chat'><body>while you were out</body></message>`);
    const stored = [
      await a.iq("set", `<vCard xmlns='${NS_VCARD}'><FN>Alice Persisted</FN></vCard>`),
      await a.iq(
        "set",
        `<query xmlns='${NS_PRIVATE}'><prefs xmlns='urn:example:prefs'><x>1</x></prefs></query>`,
      ),
      await a.iq("set", `<block xmlns='${NS_BLOCKING}'><item jid='${eve}'/></block>`),
    ];
    for (const reply of stored) assert.equal(reply.attrs.type, "result", reply.toString());
    await roundTrip(a);
  }
  // SIGTERM with clients connected: a clean exit.
  assert.deepEqual(await first.stop(), { code: 0, signal: null });

  const second = await startNode(t, { dataDir });
  const a = await loginRaw(t, second, alice!, { priority: 0 });
  const roster = await getRoster(a);
  assert.equal(rosterItem(roster, bob!.jid)?.attrs.subscription, "both", roster.toString());
  assert.equal(rosterItem(roster, carol!.jid)?.attrs.ask, "subscribe", roster.toString());
  const card = await a.iq("get", `<vCard xmlns='${NS_VCARD}'/>`);
  assert.equal(card.getChild("vCard", NS_VCARD)?.getChildText("FN"), "Alice Persisted");
  const prefs = await a.iq("get", `<query xmlns='${NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>`);
  assert.equal(
    prefs.getChild("query", NS_PRIVATE)?.getChild("prefs", "urn:example:prefs")?.getChildText("x"),
    "1",
  );
  const blocklist = await a.iq("get", `<blocklist xmlns='${NS_BLOCKING}'/>`);
  assert.deepEqual(
    blocklist
      .getChild("blocklist", NS_BLOCKING)
      ?.getChildren("item")
      .map((item) => item.attrs.jid),
    [eve],
  );

  const b = await loginRaw(t, second, bob!);
  await goOnline(b, { priority: 0 });
  // Bob is still subscribed to Alice's presence: the probe at his login returns it.
  await b.waitFor(isPresenceFrom(a.jid!), "alice's presence via the probe after restart");

  const c = await loginRaw(t, second, carol!);
  await goOnline(c, { priority: 0 });
  await c.waitFor(isPresenceFrom(alice!.jid, "subscribe"), "the pending request after restart");
  const msg = await c.waitFor(isMessageWithBody("while you were out"), "the offline message after restart");
  assert.ok(msg.getChild("delay", "urn:xmpp:delay"), msg.toString());
});
