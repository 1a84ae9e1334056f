/**
 * One-time login tokens (issue 11, item 4): the site asks the admin endpoint for a token for its
 * signed-in user, and the chat page logs in with it as the PLAIN password. Used once; a used,
 * expired, unknown or another user's token gets `<not-authorized/>`; of two logins racing with
 * one token exactly one gets in. Runs over TCP, over WebSocket and against a cluster pair
 * (where the token lives in PostgreSQL).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  becomeContacts,
  isPresenceFrom,
  loginRaw,
  newUsers,
  resumeRaw,
  useNode,
} from "../helpers/fixtures.ts";
import { NS_SASL, NS_SM, tryPlainOverTls } from "../helpers/raw-client.ts";
import type { StartedNode } from "../helpers/start-node.ts";

async function issue(node: StartedNode, body: Record<string, unknown>): Promise<Response> {
  return fetch(`http://127.0.0.1:${node.ports.http}/api/tokens`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function tokenFor(
  node: StartedNode,
  jid: string,
  ttlSeconds?: number,
): Promise<{ token: string; expiresAt: string }> {
  const response = await issue(node, ttlSeconds === undefined ? { jid } : { jid, ttlSeconds });
  assert.equal(response.status, 201, await response.clone().text());
  return (await response.json()) as { token: string; expiresAt: string };
}

/** Tries PLAIN with `password` on a new stream (after STARTTLS where offered). */
async function tryPlain(
  node: StartedNode,
  username: string,
  password: string,
  t: { after(fn: () => void): void },
) {
  const { client, outcome } = await tryPlainOverTls(node, username, password);
  t.after(() => client.destroy());
  return outcome;
}

describe("one-time login tokens", () => {
  const node = useNode();

  it("a token logs its user in once; used again, it is refused", async (t) => {
    const [alice] = await newUsers(node(), 1, "tok");
    const { token, expiresAt } = await tokenFor(node(), alice!.jid);
    assert.match(token, /^stl1_[A-Za-z0-9_-]{43}$/);
    const lifetime = Date.parse(expiresAt) - Date.now();
    assert.ok(lifetime > 50_000 && lifetime <= 60_000, `valid for the default 60 s: ${expiresAt}`);
    assert.ok((await tryPlain(node(), alice!.username, token, t)).is("success", NS_SASL));
    const again = await tryPlain(node(), alice!.username, token, t);
    assert.ok(again.getChild("not-authorized"), again.toString());
    // The password still works: a token is another way in, not a replacement.
    assert.ok((await tryPlain(node(), alice!.username, alice!.password, t)).is("success", NS_SASL));
  });

  it("an unknown token, and another user's token, get <not-authorized/>", async (t) => {
    const [alice, bob] = await newUsers(node(), 2, "tok");
    const unknown = await tryPlain(node(), alice!.username, `stl1_${"A".repeat(43)}`, t);
    assert.ok(unknown.getChild("not-authorized"), unknown.toString());
    const { token } = await tokenFor(node(), bob!.jid);
    const stolen = await tryPlain(node(), alice!.username, token, t);
    assert.ok(stolen.getChild("not-authorized"), stolen.toString());
    const after = await tryPlain(node(), bob!.username, token, t);
    assert.ok(after.getChild("not-authorized"), "a token tried for the wrong user is used up");
  });

  it("an expired token is refused", async (t) => {
    const [alice] = await newUsers(node(), 1, "tok");
    const { token, expiresAt } = await tokenFor(node(), alice!.jid, 1);
    // The token's lifetime is wall-clock time: wait it out.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, Date.parse(expiresAt) - Date.now()) + 50));
    const outcome = await tryPlain(node(), alice!.username, token, t);
    assert.ok(outcome.getChild("not-authorized"), outcome.toString());
  });

  it("of two logins racing with one token, exactly one gets in", async (t) => {
    const [alice] = await newUsers(node(), 1, "tok");
    const { token } = await tokenFor(node(), alice!.jid);
    const outcomes = await Promise.all([0, 1, 2, 3].map(() => tryPlain(node(), alice!.username, token, t)));
    assert.equal(outcomes.filter((o) => o.is("success", NS_SASL)).length, 1, outcomes.map(String).join("\n"));
  });

  it("a bad request for a token gets 400 with a JSON body", async () => {
    for (const body of [
      { jid: "x@elsewhere.example" },
      { jid: `a@${node().domain}`, ttlSeconds: 0 },
      { ttlSeconds: 10 },
    ]) {
      const response = await issue(node(), body);
      assert.equal(response.status, 400, JSON.stringify(body));
      const answer = (await response.json()) as { error: { code: string; message: string } };
      assert.equal(answer.error.code, "XSRV_ADMIN");
    }
  });

  it("signing out of the site ends every session of the user, none resumable; contacts see it go", async (t) => {
    const [alice, bob] = await newUsers(node(), 2, "out");
    const a = await loginRaw(t, node(), alice!, { priority: 1 });
    const b = await loginRaw(t, node(), bob!, { priority: 1 });
    await becomeContacts(a, b);
    const enabled = await a.enableSm({ resume: true, autoAck: true });
    assert.ok(enabled.is("enabled", NS_SM));
    const response = await fetch(
      `http://127.0.0.1:${node().ports.http}/api/sessions/${encodeURIComponent(alice!.jid)}`,
      {
        method: "DELETE",
      },
    );
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { jid: alice!.jid, ended: 1 });
    assert.equal(await a.waitForStreamError(), "policy-violation");
    await b.waitFor(isPresenceFrom(a.jid!, "unavailable"), "alice going offline");
    const { answer } = await resumeRaw(t, node(), alice!, enabled.attrs.id!, 0);
    assert.ok(answer.is("failed", NS_SM), `not resumable: ${answer.toString()}`);
    // Signed out, not locked out.
    const again = await loginRaw(t, node(), alice!);
    assert.ok(again.jid?.startsWith(`${alice!.jid}/`));
  });
});
