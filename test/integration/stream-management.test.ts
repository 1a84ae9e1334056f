/**
 * XEP-0198 Stream Management on one node: enable, <r/>/<a/> counting, resumption on a new
 * connection with redelivery of exactly the unacked stanzas, unknown ids, the resumption timeout
 * (unacked stanzas then go to offline storage) and the unacked-queue limit.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Element } from "@xmpp/xml";
import { xml } from "@xmpp/xml";
import { connectClient } from "../helpers/client.ts";
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
import { bareJid, NS_PING, NS_SASL, NS_SM, NS_STANZAS_ERROR, type RawClient } from "../helpers/raw-client.ts";
import type { StartedNode } from "../helpers/start-node.ts";
import { startNode } from "../helpers/start-node.ts";
import { waitForMatchingEvent } from "../helpers/wait-for.ts";

const getNode = useNode();

function isSmStanza(el: Element): boolean {
  return ["message", "presence", "iq"].includes(el.getName()) && el.getNS() === "jabber:client";
}

/** The XEP-0198 count of `el`: its position among the stanzas received since `<enabled/>` (1-based). */
function smCountOf(client: RawClient, el: Element): number {
  const start = client.received.findIndex((e) => e.is("enabled", NS_SM));
  assert.ok(start >= 0, "stream management was enabled");
  const index = client.received.indexOf(el);
  assert.ok(index > start, "the stanza came after <enabled/>");
  return client.received.slice(start + 1, index + 1).filter(isSmStanza).length;
}

/** Opens a new connection and authenticates (no bind), ready to send <resume/>. */
async function authenticatedWithoutBind(
  t: Parameters<typeof connectRaw>[0],
  node: StartedNode,
  user: { username: string; password: string },
): Promise<{ client: RawClient; features: Element }> {
  const client = await connectRaw(t, node, { label: `${user.username}-resume` });
  await client.openStream();
  await client.startTls();
  const outcome = await client.authScram("SCRAM-SHA-1", user.username, user.password);
  assert.ok(outcome.is("success", NS_SASL), outcome.toString());
  const features = await client.openStream();
  return { client, features };
}

describe("enable and acknowledgements", () => {
  test("enable after bind gets <enabled/> with an id and resumption, and <r/> gets the handled count", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user, { roster: false });
    const enabled = await client.enableSm({ resume: true });
    assert.ok(enabled.is("enabled", NS_SM), enabled.toString());
    assert.ok(enabled.attrs.id, `a stream id to resume: ${enabled.toString()}`);
    assert.ok(["true", "1"].includes(enabled.attrs.resume ?? ""), `resume allowed: ${enabled.toString()}`);
    // Three stanzas, then a request: the server has handled three.
    client.send("<presence/>");
    client.send(`<iq type='get' id='sm-ping' to='${node.domain}'><ping xmlns='${NS_PING}'/></iq>`);
    client.send(`<message to='${user.jid}/elsewhere' type='headline'><body>x</body></message>`);
    assert.equal(await client.requestAck(), 3);
    client.send(`<iq type='get' id='sm-ping-2' to='${node.domain}'><ping xmlns='${NS_PING}'/></iq>`);
    assert.equal(await client.requestAck(), 4, "the count keeps going");
  });

  test("the server's keepalive pings count in XEP-0198: a client that acknowledges them is not cut off", async (t) => {
    const node = await startNode(t, {
      config: { limits: { clientPingIntervalMs: 300, clientPingTimeoutMs: 5_000 } },
    });
    const user = await newUser(node);
    const client = await loginRaw(t, node, user, { roster: false });
    await client.enableSm({ resume: true });
    // XEP-0199 §3: a silent client is pinged; it answers, and (XEP-0198 §4) counts the ping as a
    // stanza it handled, as every client does.
    const ping = await client.waitFor(
      (el) => el.getName() === "iq" && el.attrs.type === "get" && el.getChild("ping", NS_PING) !== undefined,
      "a ping from the server",
    );
    assert.ok((client.smInbound ?? 0) >= 1, "the ping counted");
    client.send(`<a xmlns='${NS_SM}' h='${client.smInbound}'/>`);
    client.send(`<message to='${user.jid}/elsewhere' type='headline'><body>after the ping</body></message>`);
    assert.equal(await client.requestAck(), 2, "the pong and the message");
    assert.equal(client.streamError, undefined, client.describe());
    assert.ok(ping.attrs.id);
  });

  test("enable before resource binding is refused with <unexpected-request/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const { client } = await authenticatedWithoutBind(t, node, user);
    const answer = await client.enableSm({ resume: true });
    assert.ok(answer.is("failed", NS_SM), answer.toString());
    assert.ok(answer.getChild("unexpected-request", NS_STANZAS_ERROR), answer.toString());
  });

  test("an xmpp.js client enables stream management and its stanzas are acknowledged", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectClient(node, { ...user, resource: "sm" }, t);
    assert.ok(client.smEnabled, "xmpp.js saw <enabled/>");
    assert.ok(client.sm?.enabled);
    assert.ok(client.sm?.id, "a resumption id");
    for (let i = 0; i < 3; i++) {
      await client.send(
        xml("message", { to: `${user.jid}/nowhere`, type: "headline" }, xml("body", {}, `n${i}`)),
      );
    }
    const ack = waitForMatchingEvent<[Element]>(client.entity, "nonza", (el) => el.is("a", NS_SM), "<a/>");
    await client.send(xml("r", { xmlns: NS_SM }));
    const [a] = await ack;
    assert.equal(Number(a.attrs.h), 3);
    assert.equal(client.sm?.outbound, 3, "xmpp.js' queue is acknowledged");
  });
});

describe("resumption", () => {
  test("a dropped stream is resumed on a new connection with exactly the unacked stanzas resent", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const b = await loginRaw(t, node, bob!, { priority: 0, label: "bob" });
    const a = await loginRaw(t, node, alice!, { priority: 0, label: "alice" });
    const enabled = await a.enableSm({ resume: true });
    const previd = enabled.attrs.id!;
    // One stanza from alice after enable, which the server must count.
    await a.iq("get", `<ping xmlns='${NS_PING}'/>`, { to: node.domain });
    assert.equal(await a.requestAck(), 1);

    for (const body of ["m1", "m2", "m3"])
      b.send(`<message to='${a.jid}' type='chat'><body>${body}</body></message>`);
    const m1 = await a.waitFor(isMessageWithBody("m1"), "m1");
    await a.waitFor(isMessageWithBody("m3"), "m3");
    // Alice acknowledges only m1; m2 and m3 "got lost" with the connection.
    const h = smCountOf(a, m1);
    a.send(`<a xmlns='${NS_SM}' h='${h}'/>`);
    a.reset();
    await a.whenClosed;
    b.send(`<message to='${a.jid}' type='chat'><body>m4</body></message>`);

    const { client: resumed, features } = await authenticatedWithoutBind(t, node, alice!);
    assert.ok(features.getChild("sm", NS_SM), `XEP-0198 offered for resumption: ${features.toString()}`);
    const answer = await resumed.resumeSm(previd, h);
    assert.ok(answer.is("resumed", NS_SM), answer.toString());
    assert.equal(answer.attrs.previd, previd);
    assert.equal(Number(answer.attrs.h), 1, "the server reports the stanzas it handled from alice");
    resumed.jid = a.jid;
    const redelivered: string[] = [];
    for (const body of ["m2", "m3", "m4"]) {
      await resumed.waitFor(isMessageWithBody(body), `${body} after resumption`);
      redelivered.push(body);
    }
    const messages = resumed.received
      .filter((el) => el.getName() === "message")
      .map((el) => el.getChildText("body"));
    assert.deepEqual(messages.slice(0, 3), ["m2", "m3", "m4"], "unacked stanzas in order, m1 not repeated");
    // The resumed stream is the same session: same full JID, counters continue.
    resumed.send(`<message to='${b.jid}' type='chat'><body>back</body></message>`);
    const back = await b.waitFor(isMessageWithBody("back"), "alice's message after resuming");
    assert.equal(back.attrs.from, a.jid);
    assert.equal(await resumed.requestAck(), 2);
  });

  test("a contact does not see the user go offline while the session waits for resumption", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0, label: "alice" });
    const b = await loginRaw(t, node, bob!, { priority: 0, label: "bob" });
    await becomeContacts(a, b);
    const enabled = await a.enableSm({ resume: true, autoAck: true });
    a.reset();
    await a.whenClosed;
    const { client: resumed } = await authenticatedWithoutBind(t, node, alice!);
    const answer = await resumed.resumeSm(enabled.attrs.id!, a.smInbound ?? 0);
    assert.ok(answer.is("resumed", NS_SM), answer.toString());
    // A presence update from the resumed session is the barrier: no unavailable before it.
    resumed.send("<presence><status>resumed</status></presence>");
    const { before } = await b.collectUntil(
      (el) => isPresenceFrom(a.jid!)(el) && el.getChildText("status") === "resumed",
      "alice's update after resumption",
    );
    assert.deepEqual(before.filter(isPresenceFrom(a.jid!, "unavailable")).map(String), []);
  });

  test("a session can be resumed again and again, whichever worker each new connection lands on", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const b = await loginRaw(t, node, bob!, { priority: 0, label: "bob" });
    let a = await loginRaw(t, node, alice!, { priority: 0, label: "alice" });
    const previd = (await a.enableSm({ resume: true, autoAck: true })).attrs.id!;
    const fullJid = a.jid;
    // With two workers, six drops make it all but certain that some resume crosses workers
    // and a later one must find the session where the previous resume left it.
    for (let round = 0; round < 6; round++) {
      const h = a.smInbound ?? 0;
      a.reset();
      await a.whenClosed;
      b.send(`<message to='${fullJid}' type='chat'><body>round ${round}</body></message>`);
      const { client } = await authenticatedWithoutBind(t, node, alice!);
      const answer = await client.resumeSm(previd, h, { autoAck: true });
      assert.ok(answer.is("resumed", NS_SM), `round ${round}: ${answer.toString()}`);
      client.jid = fullJid;
      await client.waitFor(isMessageWithBody(`round ${round}`), `round ${round} after resuming`);
      a = client;
    }
  });

  test("resuming an unknown id gets <failed><item-not-found/>, and the stream can still bind", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const { client } = await authenticatedWithoutBind(t, node, user);
    const answer = await client.resumeSm("no-such-stream-id", 0);
    assert.ok(answer.is("failed", NS_SM), answer.toString());
    assert.ok(answer.getChild("item-not-found", NS_STANZAS_ERROR), answer.toString());
    const jid = await client.bind("after-failed-resume");
    assert.equal(jid, `${user.jid}/after-failed-resume`);
  });

  test("a session of another account cannot be resumed", async (t) => {
    const node = getNode();
    const [alice, mallory] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const enabled = await a.enableSm({ resume: true });
    a.reset();
    await a.whenClosed;
    const { client } = await authenticatedWithoutBind(t, node, mallory!);
    const answer = await client.resumeSm(enabled.attrs.id!, 0);
    assert.ok(answer.is("failed", NS_SM), `mallory must not take over alice's session: ${answer.toString()}`);
  });
});

describe("counts that do not fit (XEP-0198 §4, §6)", () => {
  test("an <a/> below an earlier one is ignored; one above what was sent ends the stream with the counts", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const b = await loginRaw(t, node, bob!, { label: "bob" });
    const a = await loginRaw(t, node, alice!, { label: "alice" });
    await a.enableSm();
    for (const body of ["m1", "m2"])
      b.send(`<message to='${a.jid}' type='chat'><body>${body}</body></message>`);
    const m1 = await a.waitFor(isMessageWithBody("m1"), "m1");
    const m2 = await a.waitFor(isMessageWithBody("m2"), "m2");
    a.send(`<a xmlns='${NS_SM}' h='${smCountOf(a, m2)}'/>`);
    // An older count: nothing new, and no reason to end the stream (ejabberd ignores it too).
    a.send(`<a xmlns='${NS_SM}' h='${smCountOf(a, m1)}'/>`);
    assert.equal(await a.requestAck(), 0, "the stream goes on after the stale <a/>");
    const sent = smCountOf(a, m2);
    a.send(`<a xmlns='${NS_SM}' h='${sent + 5}'/>`);
    await a.waitForClose();
    const error = a.streamError;
    assert.ok(error?.getChild("undefined-condition") !== undefined, `undefined-condition: ${error}`);
    const counts = error?.getChild("handled-count-too-high", NS_SM);
    assert.ok(counts !== undefined, `the XEP-0198 condition: ${error}`);
    assert.deepEqual([counts.attrs.h, counts.attrs["send-count"]], [String(sent + 5), String(sent)]);
  });

  test("a <resume/> with an h above what was sent ends the session at once; its stanzas wait offline", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const b = await loginRaw(t, node, bob!, { label: "bob" });
    const a = await loginRaw(t, node, alice!, { label: "alice" });
    const previd = (await a.enableSm({ resume: true })).attrs.id!;
    b.send(`<message to='${a.jid}' type='chat'><body>got, not acknowledged</body></message>`);
    const m1 = await a.waitFor(isMessageWithBody("got, not acknowledged"), "m1");
    const sent = smCountOf(a, m1);
    a.reset();
    await a.whenClosed;
    const { client } = await authenticatedWithoutBind(t, node, alice!);
    client.send(`<resume xmlns='${NS_SM}' previd='${previd}' h='${sent + 7}'/>`);
    // It used to search the cluster for another holder until cluster.requestTimeoutMs (5 s) and
    // then answer <item-not-found/>, leaving the session (and the client's old resource) alive.
    await client.waitForClose();
    const counts = client.streamError?.getChild("handled-count-too-high", NS_SM);
    assert.ok(counts !== undefined, `the XEP-0198 condition: ${client.streamError}`);
    assert.deepEqual([counts.attrs.h, counts.attrs["send-count"]], [String(sent + 7), String(sent)]);
    // The session ended: resuming it now fails, and a fresh login gets the message from storage.
    const { client: again } = await authenticatedWithoutBind(t, node, alice!);
    const failed = await again.resumeSm(previd, 0);
    assert.ok(failed.is("failed", NS_SM), failed.toString());
    const fresh = await loginRaw(t, node, alice!, { label: "alice-fresh" });
    await goOnline(fresh);
    await fresh.waitFor(isMessageWithBody("got, not acknowledged"), "the message, from offline storage");
  });

  test("a <resume/> after binding gets <failed><unexpected-request/></failed> and the stream goes on", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const a = await loginRaw(t, node, user);
    const previd = (await a.enableSm({ resume: true })).attrs.id!;
    a.send(`<resume xmlns='${NS_SM}' previd='${previd}' h='0'/>`);
    const failed = await a.waitFor((el) => el.is("failed", NS_SM), "<failed/>");
    assert.ok(failed.getChild("unexpected-request", NS_STANZAS_ERROR), failed.toString());
    assert.equal(await a.requestAck(), 0, "the stream goes on");
  });

  test("a late <resume/> of a session another login replaced gets <failed h/>", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const a = await loginRaw(t, node, user, { resource: "phone", label: "first" });
    const previd = (await a.enableSm({ resume: true })).attrs.id!;
    await a.iq("get", `<ping xmlns='${NS_PING}'/>`, { to: node.domain });
    assert.equal(await a.requestAck(), 1);
    await loginRaw(t, node, user, { resource: "phone", label: "second" });
    await a.whenClosed;
    const { client } = await authenticatedWithoutBind(t, node, user);
    const failed = await client.resumeSm(previd, 0);
    assert.ok(failed.is("failed", NS_SM), failed.toString());
    // Without h the client re-sent everything it had sent, and its contacts got it twice.
    assert.equal(failed.attrs.h, "1", failed.toString());
  });
});

describe("resumption timeout and limits", () => {
  test("after the resumption timeout the session ends and unacked messages go to offline storage", async (t) => {
    const node = await startNode(t, { config: { limits: { smResumeTimeoutSeconds: 2 } } });
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0, label: "alice" });
    const b = await loginRaw(t, node, bob!, { priority: 0, label: "bob" });
    await becomeContacts(a, b);
    const enabled = await a.enableSm({ resume: true });
    for (const body of ["u1", "u2"])
      b.send(`<message to='${a.jid}' type='chat'><body>${body}</body></message>`);
    await a.waitFor(isMessageWithBody("u2"), "u2");
    // Three stanzas from alice that the server handles before her connection drops.
    for (const body of ["a1", "a2", "a3"])
      a.send(`<message to='${b.jid}' type='chat'><body>${body}</body></message>`);
    await b.waitFor(isMessageWithBody("a3"), "a3");
    a.reset();
    const lostAt = Date.now();
    // The session ends when the timeout passes: contacts then see it go.
    await b.waitFor(isPresenceFrom(a.jid!, "unavailable"), "alice's session to time out", 15_000);
    assert.ok(Date.now() - lostAt >= 1_500, "not before the resumption timeout");

    const { client: late } = await authenticatedWithoutBind(t, node, alice!);
    const failed = await late.resumeSm(enabled.attrs.id!, 0);
    assert.ok(failed.is("failed", NS_SM), `too late to resume: ${failed.toString()}`);
    if (node.kind === "starling") {
      // XEP-0198 1.6: <failed h/> says how many of her stanzas the server handled, so that a
      // client re-sends only the others.
      assert.equal(failed.attrs.h, "3", failed.toString());
      // Another account learns nothing of it.
      const { client: other } = await authenticatedWithoutBind(t, node, bob!);
      const refused = await other.resumeSm(enabled.attrs.id!, 0);
      assert.ok(refused.is("failed", NS_SM) && refused.attrs.h === undefined, refused.toString());
    }

    const fresh = await loginRaw(t, node, alice!, { label: "alice-fresh" });
    await goOnline(fresh, { priority: 0 });
    for (const body of ["u1", "u2"]) {
      const msg = await fresh.waitFor(isMessageWithBody(body), `${body} from offline storage`);
      const stamp = msg.getChild("delay", "urn:xmpp:delay")?.attrs.stamp;
      assert.ok(stamp !== undefined, `a delay stamp: ${msg}`);
      if (node.kind === "starling") {
        // XEP-0198 §4: when delivery failed (the message reached her session before the
        // connection dropped), not when the session ended 2 s later; clients order by it.
        assert.ok(
          Date.parse(stamp) <= lostAt,
          `stamped ${stamp}, before the drop at ${new Date(lostAt).toISOString()}`,
        );
      }
    }
  });

  test("a session's unacknowledged stanzas go to a resource that bound after they were routed, not to older ones", async (t) => {
    // XEP-0198 §4 / RFC 6121 §8.5.3.2.1: as if sent to an unavailable resource. A resource that
    // bound later cannot have had them (nor a carbon): it gets them now, not at its next login.
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const b = await loginRaw(t, node, bob!, { label: "bob" });
    const tablet = await loginRaw(t, node, alice!, { resource: "tablet", priority: 0, label: "tablet" });
    const phone = await loginRaw(t, node, alice!, { resource: "phone", priority: 0, label: "phone" });
    await phone.enableSm({ resume: true });
    b.send(`<message to='${phone.jid}' type='chat'><body>for the phone</body></message>`);
    await phone.waitFor(isMessageWithBody("for the phone"), "the message at the phone");
    const routedBy = Date.now();
    // Another resource logs in (resumable, as phones are), then the phone closes without
    // acknowledging: its session ends.
    const desk = await loginRaw(t, node, alice!, { resource: "desk", priority: 0, label: "desk" });
    await desk.enableSm({ resume: true });
    await phone.close();
    const got = await desk.waitFor(
      isMessageWithBody("for the phone"),
      "the message, when the phone's session ends",
    );
    const stamp = got.getChild("delay", "urn:xmpp:delay")?.attrs.stamp;
    assert.ok(stamp !== undefined && Date.parse(stamp) <= routedBy, `stamped when it was routed: ${got}`);
    // The tablet was there when it was routed: it is left to offline storage for it.
    b.send(`<message to='${tablet.jid}' type='chat'><body>marker</body></message>`);
    const { before } = await tablet.collectUntil(isMessageWithBody("marker"), "the marker at the tablet");
    assert.deepEqual(before.filter(isMessageWithBody("for the phone")).map(String), []);
  });

  test("a message two ending sessions both held goes once to the resource that bound after it", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const b = await loginRaw(t, node, bob!, { label: "bob" });
    const phone = await loginRaw(t, node, alice!, { resource: "phone", priority: 0, label: "phone" });
    const tablet = await loginRaw(t, node, alice!, { resource: "tablet", priority: 0, label: "tablet" });
    for (const client of [phone, tablet]) await client.enableSm({ resume: true });
    // To the bare JID: both resources of the highest priority get it.
    b.send(`<message to='${alice!.jid}' type='chat'><body>to both</body></message>`);
    for (const client of [phone, tablet]) await client.waitFor(isMessageWithBody("to both"), "the message");
    const desk = await loginRaw(t, node, alice!, { resource: "desk", priority: 0, label: "desk" });
    await phone.close();
    await tablet.close();
    await desk.waitFor(isMessageWithBody("to both"), "the message, when the sessions end");
    b.send(`<message to='${desk.jid}' type='chat'><body>marker</body></message>`);
    await desk.waitFor(isMessageWithBody("marker"), "the marker");
    assert.equal(desk.received.filter(isMessageWithBody("to both")).length, 1, "once");
  });

  test("a session closed with stanzas unacknowledged stores only what offline storage would take", async (t) => {
    // XEP-0198 §4: unacknowledged stanzas are treated as if sent to an unavailable resource, so
    // RFC 6121 §8.5.2 and XEP-0334 decide: chat states, <no-store/>, headlines and carbon copies
    // are not stored (they were, filling the offline quota: past it, real messages were lost).
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a1 = await loginRaw(t, node, alice!, { resource: "a1", priority: 1 });
    const a2 = await loginRaw(t, node, alice!, { resource: "a2", priority: 1 });
    const b = await loginRaw(t, node, bob!, { label: "bob" });
    for (const client of [a1, a2]) {
      const reply = await client.iq("set", "<enable xmlns='urn:xmpp:carbons:2'/>");
      assert.equal(reply.attrs.type, "result", reply.toString());
      await client.enableSm({ resume: true });
    }
    const to = a1.jid!;
    b.send(
      `<message to='${to}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`,
    );
    b.send(
      `<message to='${to}' type='chat'><body>not to keep</body><no-store xmlns='urn:xmpp:hints'/></message>`,
    );
    b.send(`<message to='${to}' type='headline'><body>news</body></message>`);
    b.send(`<message to='${to}' type='chat'><body>to keep</body></message>`);
    await a1.waitFor(isMessageWithBody("to keep"), "the last message at a1");
    await a2.waitFor(
      (el) =>
        el.getChild("received", "urn:xmpp:carbons:2") !== undefined && el.toString().includes("to keep"),
      "its carbon at a2",
    );
    // Neither acknowledged anything; both close cleanly, which ends their sessions.
    await a1.close();
    await a2.close();
    const fresh = await loginRaw(t, node, alice!, { label: "alice-fresh" });
    await goOnline(fresh, { priority: 0 });
    const { before } = await fresh.collectUntil(isMessageWithBody("to keep"), "the stored message");
    b.send(`<message to='${bareJid(to)}' type='chat'><body>marker</body></message>`);
    const { before: after } = await fresh.collectUntil(isMessageWithBody("marker"), "a marker after it");
    const messages = [...before, ...after].filter((el) => el.getName() === "message");
    assert.deepEqual(
      messages.map((el) => el.toString()),
      [],
      "nothing else from offline storage: no chat state, no-store, headline or carbon copy",
    );
  });

  test("a request unacknowledged when its session ends gets an error; so does a message storage refuses", async (t) => {
    // RFC 6121 §8.5.3.2.1 and §8.5.2.1.1: the senders hear of it instead of waiting for ever.
    const node = await startNode(t, { config: { limits: { maxOfflineMessagesPerUser: 1 } } });
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { label: "alice" });
    const b = await loginRaw(t, node, bob!, { label: "bob" });
    await a.enableSm({ resume: true });
    b.send(`<iq to='${a.jid}' type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>`);
    b.send(`<iq to='${a.jid}' type='get' id='q2'><query xmlns='jabber:iq:version'/></iq>`);
    // Alice answers q2 (but acknowledges nothing): it must not be answered a second time.
    await a.waitFor((el) => el.attrs.id === "q2", "q2 at alice");
    a.send(
      `<iq to='${b.jid}' type='result' id='q2'><query xmlns='jabber:iq:version'><name>x</name></query></iq>`,
    );
    await b.waitFor((el) => el.attrs.id === "q2", "alice's answer to q2");
    // A new request that reuses the id (clients that count ids per connection do) is not answered.
    b.send(`<iq to='${a.jid}' type='get' id='q2'><query xmlns='jabber:iq:version'/></iq>`);
    await a.waitFor(
      (el) => el.attrs.id === "q2" && a.received.filter((e) => e.attrs.id === "q2").length === 2,
      "q2 again",
    );
    b.send(`<message to='${a.jid}' type='chat' id='kept'><body>kept</body></message>`);
    b.send(`<message to='${a.jid}' type='chat' id='refused'><body>one too many</body></message>`);
    await a.waitFor(isMessageWithBody("one too many"), "the last one at alice");
    // Alice acknowledges none of them and closes: her session ends now.
    await a.close();
    const iqError = await b.waitFor((el) => el.getName() === "iq" && el.attrs.id === "q1", "the iq's answer");
    assert.equal(iqError.attrs.type, "error", iqError.toString());
    assert.ok(
      iqError.getChild("error")?.getChild("service-unavailable", NS_STANZAS_ERROR),
      iqError.toString(),
    );
    const refused = await b.waitFor((el) => el.attrs.id === "refused", "the refused message back");
    assert.equal(refused.attrs.type, "error", refused.toString());
    assert.equal(
      b.received.filter((el) => el.attrs.id === "kept").length,
      0,
      "the stored one is not bounced",
    );
    await b.waitFor((el) => el.attrs.id === "q2" && el.attrs.type === "error", "the error for q2 reused");
    assert.deepEqual(
      b.received.filter((el) => el.attrs.id === "q2").map((el) => el.attrs.type),
      ["result", "error"],
      "the answered request: its answer only (RFC 6120 §8.2.3); the unanswered one reusing its id: an error",
    );
  });

  test("a client that never acknowledges is disconnected past smMaxUnackedStanzas", async (t) => {
    const node = await startNode(t, { config: { limits: { smMaxUnackedStanzas: 10 } } });
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0, label: "alice" });
    const b = await loginRaw(t, node, bob!, { priority: 0, label: "bob" });
    await a.enableSm({ resume: true });
    for (let i = 0; i < 30; i++)
      b.send(`<message to='${a.jid}' type='chat'><body>flood ${i}</body></message>`);
    await a.waitForClose(10_000);
    if (a.streamError) {
      const condition = a.streamError
        .getChildElements()
        .find((el) => el.getName() !== "text")
        ?.getName();
      assert.ok(
        ["resource-constraint", "policy-violation"].includes(condition ?? ""),
        `condition ${condition}`,
      );
    }
    assert.ok(
      a.received.filter((el) => el.getName() === "message").length <= 12,
      "the server stopped sending once the unacked queue was full",
    );
  });
});
