/**
 * RFC 6121 §3 and §4: the presence subscription state machine (with pending states kept in the
 * store), pre-approval, presence broadcast and probes on login, directed presence, and unavailable
 * presence on logout and on disconnect.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Element } from "@xmpp/xml";
import {
  becomeContacts,
  getRoster,
  goOnline,
  isPresenceFrom,
  isRosterPush,
  loginRaw,
  newUsers,
  roundTrip,
  roundTripVia,
  subscribe,
  useNode,
} from "../helpers/fixtures.ts";
import { NS_ROSTER } from "../helpers/raw-client.ts";

const NS_PRE_APPROVAL = "urn:xmpp:features:pre-approval";

const getNode = useNode();

function rosterItem(reply: Element, jid: string): Element | undefined {
  return reply
    .getChild("query", NS_ROSTER)
    ?.getChildren("item")
    .find((item) => item.attrs.jid === jid);
}

function hasSubscription(subscription: string, ask?: string) {
  return (item: Element) => item.attrs.subscription === subscription && item.attrs.ask === ask;
}

/** Presence stanzas from `from` among `elements`. */
function presencesFrom(elements: Element[], from: string): Element[] {
  return elements.filter((el) => el.getName() === "presence" && el.attrs.from?.startsWith(from));
}

describe("subscription state machine", () => {
  test("subscribe and subscribed give 'to' and 'from', with roster pushes and the contact's presence", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 1 });
    const b = await loginRaw(t, node, bob!, { priority: 1 });

    a.send(`<presence to='${bob!.jid}' type='subscribe'/>`);
    // RFC 6121 §3.1.2: a push of the contact with subscription "none" and ask="subscribe".
    await a.waitFor(isRosterPush(bob!.jid, hasSubscription("none", "subscribe")), "none+ask push");
    // §3.1.3: the request is stamped with the user's bare JID.
    const request = await b.waitFor(isPresenceFrom(alice!.jid, "subscribe"), "subscribe request");
    assert.equal(request.attrs.to, bob!.jid);

    b.send(`<presence to='${alice!.jid}' type='subscribed'/>`);
    // §3.1.5: the contact's roster shows "from".
    await b.waitFor(isRosterPush(alice!.jid, hasSubscription("from")), "'from' push at the contact");
    // §3.1.6: the user gets "subscribed" from the contact's bare JID and a "to" push without ask...
    await a.waitFor(isPresenceFrom(bob!.jid, "subscribed"), "subscribed");
    await a.waitFor(isRosterPush(bob!.jid, hasSubscription("to")), "'to' push");
    // ...and the contact's current presence from each available resource (§3.1.5).
    await a.waitFor(isPresenceFrom(b.jid!), "the contact's presence");

    const rosterA = await getRoster(a);
    assert.equal(rosterItem(rosterA, bob!.jid)?.attrs.subscription, "to");
    const rosterB = await getRoster(b);
    assert.equal(rosterItem(rosterB, alice!.jid)?.attrs.subscription, "from");
  });

  test("mutual subscriptions end in 'both' on each side", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    await becomeContacts(a, b);
    assert.equal(rosterItem(await getRoster(a), bob!.jid)?.attrs.subscription, "both");
    assert.equal(rosterItem(await getRoster(b), alice!.jid)?.attrs.subscription, "both");
  });

  test("a request to an offline contact is kept and delivered at each login until answered", async (t) => {
    const node = getNode();
    const [alice, carol] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    a.send(`<presence to='${carol!.jid}' type='subscribe'><status>it is alice</status></presence>`);
    await a.waitFor(isRosterPush(carol!.jid, hasSubscription("none", "subscribe")), "none+ask push");

    // RFC 6121 §3.1.3: kept while the contact has no available resource, delivered when it has one...
    const first = await loginRaw(t, node, carol!, { label: "carol-1" });
    await goOnline(first, { priority: 0 });
    const request = await first.waitFor(isPresenceFrom(alice!.jid, "subscribe"), "the stored request");
    assert.equal(request.getChildText("status"), "it is alice", "the complete stanza is kept");
    first.destroy();
    await first.waitForClose();

    // ...and again at every new available resource until the contact answers.
    const second = await loginRaw(t, node, carol!, { label: "carol-2" });
    await goOnline(second, { priority: 0 });
    await second.waitFor(isPresenceFrom(alice!.jid, "subscribe"), "the request again");
    second.send(`<presence to='${alice!.jid}' type='subscribed'/>`);
    await a.waitFor(isPresenceFrom(carol!.jid, "subscribed"), "the approval");

    // Answered: not delivered any more.
    second.destroy();
    const third = await loginRaw(t, node, carol!, { label: "carol-3" });
    await goOnline(third, { priority: 0 });
    const earlier = await roundTrip(third);
    assert.deepEqual(
      presencesFrom([...earlier, ...third.pending()], alice!.jid).filter((p) => p.attrs.type === "subscribe"),
      [],
      "an answered request is not delivered again",
    );
  });

  test("a denied request (unsubscribed) clears the pending ask", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    a.send(`<presence to='${bob!.jid}' type='subscribe'/>`);
    await b.waitFor(isPresenceFrom(alice!.jid, "subscribe"), "request");
    b.send(`<presence to='${alice!.jid}' type='unsubscribed'/>`);
    await a.waitFor(isPresenceFrom(bob!.jid, "unsubscribed"), "the denial");
    // RFC 6121 §3.2.3: the user's item goes back to "none" without ask.
    await a.waitFor(isRosterPush(bob!.jid, hasSubscription("none")), "'none' push without ask");
    assert.equal(rosterItem(await getRoster(a), bob!.jid)?.attrs.ask, undefined);
  });

  test("unsubscribe turns 'both' into 'from'/'to' and the contact's presence goes unavailable", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    await becomeContacts(a, b);
    a.send(`<presence to='${bob!.jid}' type='unsubscribe'/>`);
    // RFC 6121 §3.3.2: the user's roster loses "to".
    await a.waitFor(isRosterPush(bob!.jid, hasSubscription("from")), "'from' push at the user");
    // §3.3.3: the contact gets the unsubscribe and loses "from"...
    await b.waitFor(isPresenceFrom(alice!.jid, "unsubscribe"), "unsubscribe at the contact");
    await b.waitFor(isRosterPush(alice!.jid, hasSubscription("to")), "'to' push at the contact");
    // ...and the user gets unavailable presence from the contact's available resources.
    await a.waitFor(isPresenceFrom(b.jid!, "unavailable"), "the contact's unavailable presence");
  });

  test("cancelling a subscription (unsubscribed) turns 'both' into 'to'/'from' and sends unavailable", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    await becomeContacts(a, b);
    // Bob cancels Alice's subscription to his presence.
    b.send(`<presence to='${alice!.jid}' type='unsubscribed'/>`);
    // RFC 6121 §3.2.2: Bob's item for Alice loses "from".
    await b.waitFor(isRosterPush(alice!.jid, hasSubscription("to")), "'to' push at the contact");
    // §3.2.3: Alice gets "unsubscribed", loses "to", and gets Bob's unavailable presence.
    await a.waitFor(isPresenceFrom(bob!.jid, "unsubscribed"), "unsubscribed");
    await a.waitFor(isRosterPush(bob!.jid, hasSubscription("from")), "'from' push at the user");
    await a.waitFor(isPresenceFrom(b.jid!, "unavailable"), "the contact's unavailable presence");
  });

  test("pre-approval: advertised, and a pre-approved request is approved without asking the contact", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    const features = b.received.findLast((el) => el.getName() === "features");
    const advertised = features?.getChild("sub", NS_PRE_APPROVAL) !== undefined;
    // Bob approves Alice before she asks (RFC 6121 §3.4).
    b.send(`<presence to='${alice!.jid}' type='subscribed'/>`);
    if (advertised) {
      // §3.4.2: a push of the contact with subscription "none" and approved="true".
      await b.waitFor(
        isRosterPush(
          alice!.jid,
          (item) => item.attrs.approved === "true" && item.attrs.subscription === "none",
        ),
        "approved='true' push",
      );
      const a = await loginRaw(t, node, alice!, { priority: 0 });
      a.send(`<presence to='${bob!.jid}' type='subscribe'/>`);
      // §3.4.3... the contact's server approves it at once.
      await a.waitFor(isPresenceFrom(bob!.jid, "subscribed"), "automatic approval");
      // §3.1.5: and, as after any approval, the contact's current presence (it was missing).
      await a.waitFor(isPresenceFrom(b.jid!), "the contact's available presence");
      await a.waitFor(isRosterPush(bob!.jid, hasSubscription("to")), "'to' push");
      await b.waitFor(isRosterPush(alice!.jid, hasSubscription("from")), "'from' push at the contact");
      const earlier = await roundTrip(b);
      assert.deepEqual(
        presencesFrom([...earlier, ...b.pending()], alice!.jid).filter((p) => p.attrs.type === "subscribe"),
        [],
        "the contact is not asked",
      );
    } else {
      // Without pre-approval, the early "subscribed" is ignored (§3.4.1) and the request asks Bob.
      const a = await loginRaw(t, node, alice!, { priority: 0 });
      a.send(`<presence to='${bob!.jid}' type='subscribe'/>`);
      await b.waitFor(isPresenceFrom(alice!.jid, "subscribe"), "a normal request");
    }
  });
});

describe("presence broadcast", () => {
  test("initial presence goes to contacts and own resources, and contacts' presence is probed", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a1 = await loginRaw(t, node, alice!, { priority: 1, resource: "one" });
    const b = await loginRaw(t, node, bob!, { resource: "bob" });
    await goOnline(b, { priority: 1, show: "dnd", status: "in a meeting" });
    await becomeContacts(a1, b);

    const a2 = await loginRaw(t, node, alice!, { resource: "two" });
    await goOnline(a2, { priority: 1 });
    // RFC 6121 §4.2.2: broadcast to contacts with a subscription from the user...
    await b.waitFor(isPresenceFrom(a2.jid!), "alice/two at bob");
    // ...and to the user's other available resources.
    await a1.waitFor(isPresenceFrom(a2.jid!), "alice/two at alice/one");
    // §4.3: the server probes the contacts on the user's behalf; bob's last presence comes back.
    const probed = await a2.waitFor(isPresenceFrom(b.jid!), "bob's presence at alice/two");
    assert.equal(probed.getChildText("show"), "dnd");
    assert.equal(probed.getChildText("status"), "in a meeting");
  });

  test("presence is not broadcast to entities without a subscription to it", async (t) => {
    const node = getNode();
    const [alice, bob, carol, dave] = await newUsers(node, 4);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    const c = await loginRaw(t, node, carol!, { priority: 0 });
    const d = await loginRaw(t, node, dave!, { priority: 0 });
    await becomeContacts(a, b);
    // Alice is subscribed to Dave's presence ("to"), but Dave is not subscribed to hers.
    await subscribe(a, d);
    // Carol only has Alice in her roster, without any subscription.
    await c.iq("set", `<query xmlns='${NS_ROSTER}'><item jid='${alice!.jid}'/></query>`);

    a.send("<presence><status>update</status></presence>");
    await b.waitFor(
      (el) => isPresenceFrom(a.jid!)(el) && el.getChildText("status") === "update",
      "the update at a subscriber",
    );
    for (const outsider of [c, d]) {
      const earlier = [...(await roundTripVia(outsider, alice!.jid)), ...(await roundTrip(outsider))];
      const leaked = presencesFrom([...earlier, ...outsider.pending()], alice!.jid).filter(
        (p) => p.getChildText("status") === "update",
      );
      assert.deepEqual(leaked, [], `${outsider.label} must not see alice's presence`);
    }
  });

  test("presence updates and unavailable presence on logout reach contacts", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    await becomeContacts(a, b);
    a.send("<presence><show>away</show><status>lunch</status></presence>");
    const update = await b.waitFor(
      (el) => isPresenceFrom(a.jid!)(el) && el.getChildText("show") === "away",
      "the away update",
    );
    assert.equal(update.getChildText("status"), "lunch");
    a.send("<presence type='unavailable'><status>bye</status></presence>");
    const gone = await b.waitFor(isPresenceFrom(a.jid!, "unavailable"), "unavailable");
    assert.equal(gone.getChildText("status"), "bye");
  });

  test("a connection that drops makes the server send unavailable presence for it", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    await becomeContacts(a, b);
    a.reset();
    // RFC 6121 §4.5.3: when a session ends without unavailable presence, the server sends it.
    await b.waitFor(isPresenceFrom(a.jid!, "unavailable"), "unavailable after a dropped connection");
  });

  test("a clean stream close without unavailable presence also sends unavailable presence", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    await becomeContacts(a, b);
    await a.close();
    await b.waitFor(isPresenceFrom(a.jid!, "unavailable"), "unavailable after </stream:stream>");
  });

  test("a resource that was never available does not broadcast unavailable on disconnect", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0, resource: "main" });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    await becomeContacts(a, b);
    const quiet = await loginRaw(t, node, alice!, { resource: "quiet" });
    quiet.reset();
    // An available resource's update is the barrier: it follows the quiet one's disconnect.
    a.send("<presence><status>still here</status></presence>");
    const { before } = await b.collectUntil(
      (el) => isPresenceFrom(a.jid!)(el) && el.getChildText("status") === "still here",
      "alice/main's update",
    );
    assert.deepEqual(
      before.filter(isPresenceFrom(quiet.jid!, "unavailable")).map(String),
      [],
      "no unavailable for a resource that was never available",
    );
  });
});

describe("directed presence", () => {
  test("directed presence reaches a non-contact, and unavailable follows when the sender leaves", async (t) => {
    const node = getNode();
    const [alice, carol] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const c = await loginRaw(t, node, carol!, { priority: 0 });
    a.send(`<presence to='${c.jid}'><status>hi carol</status></presence>`);
    const directed = await c.waitFor(isPresenceFrom(a.jid!), "directed presence");
    assert.equal(directed.getChildText("status"), "hi carol");
    // RFC 6121 §4.6.3: the unavailable broadcast also goes to entities that got directed presence.
    a.send("<presence type='unavailable'/>");
    await c.waitFor(isPresenceFrom(a.jid!, "unavailable"), "unavailable after directed presence");
  });

  test("a presence probe from a client is not honoured for a non-subscriber", async (t) => {
    const node = getNode();
    const [alice, mallory] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const m = await loginRaw(t, node, mallory!, { priority: 0 });
    m.send(`<presence to='${alice!.jid}' type='probe'/>`);
    const earlier = [...(await roundTripVia(m, alice!.jid)), ...(await roundTrip(m))];
    assert.deepEqual(
      presencesFrom([...earlier, ...m.pending()], a.jid!).filter((p) => p.attrs.type === undefined),
      [],
      "no presence leak to an unsubscribed prober",
    );
  });
});
