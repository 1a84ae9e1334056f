/**
 * The operators' and the web site's admin API (issue 11, item 5) against a real node: listing
 * sessions, a message and announcements sent as the server, checked by what real clients see.
 * Runs over TCP, over WebSocket and against a cluster pair like the rest of the suite.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { SessionSummary } from "../../src/http/admin-routes.ts";
import { goOnline, isMessageWithBody, loginRaw, newUsers, useNode } from "../helpers/fixtures.ts";
import type { StartedNode } from "../helpers/start-node.ts";
import { waitUntil } from "../helpers/wait-for.ts";

async function api(node: StartedNode, method: string, path: string, body?: unknown) {
  const response = await fetch(`http://127.0.0.1:${node.ports.http}${path}`, {
    method,
    ...(body === undefined
      ? {}
      : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
  });
  const text = await response.text();
  return {
    status: response.status,
    body: text === "" ? undefined : (JSON.parse(text) as Record<string, unknown>),
  };
}

async function sessionsOf(node: StartedNode, jid?: string): Promise<SessionSummary[]> {
  const reply = await api(
    node,
    "GET",
    jid === undefined ? "/api/sessions" : `/api/sessions/${encodeURIComponent(jid)}`,
  );
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  return reply.body!.sessions as SessionSummary[];
}

describe("admin API: sessions, messages, announcements", () => {
  const node = useNode();

  it("lists every session with its full JID, address and presence; a user's own; gone when it ends", async (t) => {
    const [alice, bob] = await newUsers(node(), 2, "ls");
    const a = await loginRaw(t, node(), alice!, { resource: "laptop" });
    const b = await loginRaw(t, node(), bob!, { resource: "phone" });
    await goOnline(a, { priority: 5 });
    const all = await sessionsOf(node());
    const mine = all.filter((s) => s.jid.startsWith(alice!.jid) || s.jid.startsWith(bob!.jid));
    assert.deepEqual(mine.map((s) => s.jid).sort(), [`${alice!.jid}/laptop`, `${bob!.jid}/phone`]);
    const aliceSession = mine.find((s) => s.jid === `${alice!.jid}/laptop`)!;
    assert.equal(aliceSession.connected, true);
    assert.equal(aliceSession.available, true);
    assert.equal(aliceSession.priority, 5);
    assert.match(aliceSession.address ?? "", /127\.0\.0\.1/);
    assert.equal(mine.find((s) => s.jid === `${bob!.jid}/phone`)!.available, false);

    assert.deepEqual(
      (await sessionsOf(node(), alice!.jid)).map((s) => s.jid),
      [`${alice!.jid}/laptop`],
    );
    await b.close();
    await waitUntil(async () => (await sessionsOf(node(), bob!.jid)).length === 0, "bob's session is gone");
  });

  it("a message from the server reaches an online user at once, and an offline one when it logs in", async (t) => {
    const [alice, bob] = await newUsers(node(), 2, "msg");
    const a = await loginRaw(t, node(), alice!);
    await goOnline(a);
    const sent = await api(node(), "POST", "/api/messages", {
      to: alice!.jid,
      body: "maintenance at 22:00",
      subject: "Notice",
    });
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    const got = await a.waitFor(isMessageWithBody("maintenance at 22:00"), "the server's message");
    assert.equal(got.attrs.from, node().domain);
    assert.equal(got.attrs.type, "chat");
    assert.equal(got.getChildText("subject"), "Notice");

    const later = await api(node(), "POST", "/api/messages", { to: bob!.jid, body: "while you were away" });
    assert.equal(later.status, 202, JSON.stringify(later.body));
    const b = await loginRaw(t, node(), bob!);
    await goOnline(b);
    await b.waitFor(isMessageWithBody("while you were away"), "the stored message, on login");
  });

  it("an announcement goes to online users only (a headline), or to every account (stored)", async (t) => {
    const [alice, bob] = await newUsers(node(), 2, "ann");
    const a = await loginRaw(t, node(), alice!);
    await goOnline(a);
    const online = await api(node(), "POST", "/api/announcements", { body: "online only" });
    assert.equal(online.status, 202, JSON.stringify(online.body));
    assert.ok((online.body!.recipients as number) >= 1);
    const headline = await a.waitFor(isMessageWithBody("online only"), "the announcement");
    assert.equal(headline.attrs.type, "headline");
    assert.equal(headline.attrs.from, node().domain);

    const everyone = await api(node(), "POST", "/api/announcements", { body: "to everyone", online: false });
    assert.equal(everyone.status, 202, JSON.stringify(everyone.body));
    assert.ok((everyone.body!.recipients as number) >= 2);
    await a.waitFor(isMessageWithBody("to everyone"), "the announcement to every account, online");
    const b = await loginRaw(t, node(), bob!);
    await goOnline(b);
    await b.waitFor(isMessageWithBody("to everyone"), "the announcement to every account, stored");
    // The headline was not kept for bob: what he got is the stored announcement and nothing else.
    await b.requestAck().catch(() => {});
    assert.equal(b.pending().filter(isMessageWithBody("online only")).length, 0);
  });

  it("bad requests get 400 with the reason, and nothing is sent", async () => {
    const cases: [string, unknown, RegExp][] = [
      ["/api/messages", { to: "someone@elsewhere.example", body: "x" }, /not a JID of a user/],
      ["/api/messages", { to: `nobody@${node().domain}` }, /body must be/],
      ["/api/messages", { to: `nobody@${node().domain}`, body: "x", type: "groupchat" }, /type must be/],
      ["/api/messages", { to: `nobody@${node().domain}`, body: "x", from: "x@elsewhere.example" }, /from/],
      ["/api/announcements", { body: "x", online: "yes" }, /online must be/],
      ["/api/announcements", { body: "" }, /body must be/],
    ];
    for (const [path, body, reason] of cases) {
      const reply = await api(node(), "POST", path, body);
      assert.equal(reply.status, 400, `${path} ${JSON.stringify(body)}`);
      const error = reply.body!.error as { code: string; message: string };
      assert.equal(error.code, "XSRV_ADMIN");
      assert.match(error.message, reason);
    }
    const malformed = await fetch(`http://127.0.0.1:${node().ports.http}/api/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{not json",
    });
    assert.equal(malformed.status, 400);
    assert.match(
      ((await malformed.json()) as { error: { message: string } }).error.message,
      /not valid JSON/,
    );
  });
});
