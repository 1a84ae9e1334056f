/**
 * The `http` authentication provider on a real node against a real HTTP server playing the web
 * site: PLAIN only (over TLS), the site's answers, its token, the cache, and a site that is down
 * or hangs (a quick temporary-auth-failure, never a hang). Users the site knows exist for
 * routing (offline messages) without any account in Starling's store; accounts are the site's.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { runStarling } from "../cli/run-starling.ts";
import { NS_SASL, RawClient, tryPlainOverTls as tryPlain } from "../helpers/raw-client.ts";
import { type StartedNode, startNode } from "../helpers/start-node.ts";

const NS_REGISTER = "jabber:iq:register";

/** The web site's password check: users, and what it was asked. */
class Site {
  readonly users = new Map([
    ["alice", "alice-pw"],
    ["bob", "bob-pw"],
  ]);
  readonly requests: {
    action: string;
    user: string;
    domain: string;
    password?: string;
    authorization?: string;
  }[] = [];
  mode: "ok" | "error" | "hang" = "ok";
  readonly #server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (c: Buffer) => chunks.push(c));
    request.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Site["requests"][number];
      this.requests.push({
        ...body,
        ...(request.headers.authorization === undefined
          ? {}
          : { authorization: request.headers.authorization }),
      });
      if (this.mode === "hang") return; // never answers
      if (this.mode === "error") {
        response.writeHead(500).end("database down");
        return;
      }
      const known = this.users.get(body.user);
      const ok =
        body.action === "exists" ? known !== undefined : known !== undefined && known === body.password;
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ok }));
    });
  });
  url = "";

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/xmpp-auth`;
  }

  stop(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

describe("auth.provider http: the web site checks passwords", () => {
  const site = new Site();
  let node: StartedNode;
  const cleanups: (() => unknown)[] = [];
  before(async () => {
    await site.start();
    node = await startNode(
      { after: (fn) => cleanups.push(fn) },
      {
        allowRegistration: true,
        config: {
          auth: {
            provider: "http",
            http: { url: site.url, token: "site-token", timeoutMs: 500, cacheTtlMs: 60_000 },
          },
        },
      },
    );
  });
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
    await site.stop();
  });

  it("offers PLAIN alone, no registration, and logs in with the site's password and token", async (t) => {
    site.mode = "ok";
    const { client, secured, outcome } = await tryPlain(node, "alice", "alice-pw");
    t.after(() => client.destroy());
    const mechanisms = secured
      .getChild("mechanisms", NS_SASL)
      ?.getChildren("mechanism")
      .map((m) => m.text());
    assert.deepEqual(mechanisms, ["PLAIN"], "no SCRAM without the site's keys");
    assert.equal(secured.getChild("register"), undefined, "accounts are the site's");
    assert.ok(outcome.is("success", NS_SASL), outcome.toString());
    const asked = site.requests.at(-1)!;
    assert.deepEqual(
      {
        action: asked.action,
        user: asked.user,
        domain: asked.domain,
        password: asked.password,
        authorization: asked.authorization,
      },
      {
        action: "auth",
        user: "alice",
        domain: node.domain,
        password: "alice-pw",
        authorization: "Bearer site-token",
      },
    );
  });

  it("a wrong password is not-authorized; a confirmed one is remembered for the cache's time", async (t) => {
    site.mode = "ok";
    const wrong = await tryPlain(node, "bob", "guess");
    t.after(() => wrong.client.destroy());
    assert.ok(wrong.outcome.getChild("not-authorized"), wrong.outcome.toString());
    const first = await tryPlain(node, "bob", "bob-pw");
    t.after(() => first.client.destroy());
    assert.ok(first.outcome.is("success", NS_SASL));
    const asked = site.requests.length;
    const again = await tryPlain(node, "bob", "bob-pw");
    t.after(() => again.client.destroy());
    assert.ok(again.outcome.is("success", NS_SASL));
    // Another worker may have answered the first login: the cache is per worker.
    assert.ok(site.requests.length - asked <= 1, "the site is not asked on every login");
    const third = await tryPlain(node, "bob", "bob-pw");
    t.after(() => third.client.destroy());
    assert.ok(site.requests.length - asked <= 1, "at most once per worker within the cache's time");
  });

  it("SCRAM is refused as a mechanism the server does not offer here", async (t) => {
    const client = await RawClient.connectTo(node);
    t.after(() => client.destroy());
    const features = await client.openStream();
    if (features.getChild("starttls") !== undefined) await client.startTls();
    const outcome = await client.authScram("SCRAM-SHA-256", "alice", "alice-pw");
    assert.ok(outcome.getChild("invalid-mechanism"), outcome.toString());
  });

  it("a site that fails or hangs gets the client temporary-auth-failure at once, not a hang", async (t) => {
    for (const mode of ["error", "hang"] as const) {
      site.mode = mode;
      const started = Date.now();
      const { client, outcome } = await tryPlain(node, "alice", `other-${mode}`);
      t.after(() => client.destroy());
      assert.ok(outcome.getChild("temporary-auth-failure"), `${mode}: ${outcome.toString()}`);
      assert.ok(Date.now() - started < 3_000, `${mode}: answered within the timeout`);
    }
    site.mode = "ok";
  });

  it("a site user who never logged in gets messages offline; a password change is refused", async (t) => {
    site.mode = "ok";
    site.users.set("carol", "carol-pw");
    site.users.set("dave", "dave-pw");
    const { client: carol } = await tryPlain(node, "carol", "carol-pw");
    t.after(() => carol.destroy());
    await carol.openStream();
    await carol.bind("phone");
    carol.send(
      `<message to='dave@${node.domain}' type='chat' id='o1'><body>while you were out</body></message>`,
    );
    const change = await carol.iq(
      "set",
      `<query xmlns='${NS_REGISTER}'><username>carol</username><password>new</password></query>`,
    );
    assert.equal(change.attrs.type, "error");
    assert.ok(change.getChild("error")?.getChild("not-allowed"), change.toString());

    const { client: dave } = await tryPlain(node, "dave", "dave-pw");
    t.after(() => dave.destroy());
    await dave.openStream();
    await dave.bind("laptop");
    dave.send("<presence/>");
    const offline = await dave.waitFor(
      (el) => el.is("message") && el.getChildText("body") === "while you were out",
      "the offline message",
    );
    assert.equal(offline.attrs.from?.split("/")[0], `carol@${node.domain}`);
    assert.ok(
      site.requests.some((r) => r.action === "exists" && r.user === "dave"),
      "the site was asked whether dave exists",
    );
  });

  it("the admin API and starling user refuse account changes: the accounts are the site's", async () => {
    const api = (method: string, path: string, body?: unknown) =>
      fetch(`http://127.0.0.1:${node.ports.http}${path}`, {
        method,
        ...(body === undefined
          ? {}
          : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
      });
    const jid = `erin@${node.domain}`;
    for (const [method, path, body] of [
      ["POST", "/api/users", { jid, password: "pw" }],
      ["POST", "/api/users/bulk", { users: [{ jid, password: "pw" }] }],
      ["PUT", `/api/users/${encodeURIComponent(jid)}/password`, { password: "pw" }],
      ["DELETE", `/api/users/${encodeURIComponent(jid)}`, undefined],
    ] as const) {
      const reply = await api(method, path, body);
      assert.equal(reply.status, 409, `${method} ${path}`);
      const { error } = (await reply.json()) as { error: { code: string; message: string } };
      assert.equal(error.code, "XSRV_ACCOUNTS_EXTERNAL");
      assert.match(error.message, /belong to the web site/);
    }
    assert.equal((await api("GET", "/api/users")).status, 200, "listing still answers");
    const cli = await runStarling(["user", "add", jid, "--http-port", String(node.ports.http)], {
      cwd: node.dataDir,
      input: "pw\npw\n",
    });
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /^starling: accounts belong to the web site/m);
  });
});
