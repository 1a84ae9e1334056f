import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { Agent, request } from "node:http";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Accounts } from "../../src/auth/accounts.ts";
import { deriveScramCredential } from "../../src/auth/scram.ts";
import {
  type AdminServer,
  DOMAIN_HEADER,
  MAX_ADMIN_BODY_BYTES,
  MAX_BULK_USERS,
  startAdminServer,
} from "../../src/http/admin-server.ts";
import { createLogger } from "../../src/log.ts";
import { isLoopbackAddress } from "../../src/loopback.ts";
import { LevelStore } from "../../src/storage/level-store.ts";
import type { Account } from "../../src/storage/store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import { makeCertificate } from "../helpers/certificates.ts";

const log = createLogger({ level: "silent" });

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** One request over a real socket; `body` is sent as JSON unless `raw` is given. */
function call(
  port: number,
  method: string,
  path: string,
  options: {
    body?: unknown;
    raw?: string | Buffer;
    headers?: Record<string, string | number>;
    agent?: Agent;
  } = {},
): Promise<Reply> {
  const payload =
    options.raw ?? (options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body)));
  const headers: Record<string, string | number> = {
    ...(payload === undefined
      ? {}
      : { "content-type": "application/json", "content-length": payload.length }),
    ...options.headers,
  };
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, method, path, headers, agent: options.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            // Only JSON is parsed: /metrics answers text.
            body:
              text === ""
                ? undefined
                : /json/.test(String(res.headers["content-type"]))
                  ? JSON.parse(text)
                  : text,
          });
        });
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

function assertError(reply: Reply, status: number, code: string, message?: RegExp): void {
  assert.equal(reply.status, status, JSON.stringify(reply.body));
  assert.match(String(reply.headers["content-type"]), /^application\/json/);
  const error = (reply.body as { error: { code: string; message: string } }).error;
  assert.equal(error.code, code);
  assert.equal(typeof error.message, "string");
  if (message !== undefined) assert.match(error.message, message);
}

/** Whether `password` authenticates against the stored SCRAM-SHA-256 keys. */
function passwordMatches(account: Account, password: string): boolean {
  const { salt, iterations, storedKey } = account.scramSha256;
  return (
    deriveScramCredential(password, "sha256", iterations, Buffer.from(salt, "base64")).storedKey === storedKey
  );
}

describe("admin server", () => {
  let root: string;
  let store: LevelStore;
  let server: AdminServer;
  let port: number;
  let statusCalls = 0;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "starling-admin-"));
    store = new LevelStore(join(root, "store"));
    await store.open();
    server = await startAdminServer({
      host: "127.0.0.1",
      port: 0,
      store,
      accounts: new Accounts(store, () => true),
      domain: "localhost",
      log,
      status: async () => ({ node: "test", calls: ++statusCalls }),
    });
    port = server.port;
  });

  after(async () => {
    await server?.close();
    await store?.close();
    await rm(root, { recursive: true, force: true });
  });

  it("admin server answers GET /api/status with what status() returns", async () => {
    const reply = await call(port, "GET", "/api/status");
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.body, { node: "test", calls: statusCalls });
    assert.equal(reply.headers[DOMAIN_HEADER], "localhost");
  });

  it("admin server creates a normalised account with SCRAM keys for the password", async () => {
    const reply = await call(port, "POST", "/api/users", {
      body: { jid: "Alice@LocalHost", password: "s3cret" },
    });
    assert.equal(reply.status, 201);
    assert.deepEqual(reply.body, { jid: "alice@localhost" });
    const account = await store.getAccount("alice@localhost" as BareJid);
    assert.ok(account);
    assert.ok(passwordMatches(account, "s3cret"));
    assert.ok(!passwordMatches(account, "wrong"));
  });

  it("admin server answers 409 when the account exists", async () => {
    const reply = await call(port, "POST", "/api/users", {
      body: { jid: "alice@localhost", password: "other" },
    });
    assertError(reply, 409, "XSRV_USER_EXISTS", /^alice@localhost already exists$/);
    const account = await store.getAccount("alice@localhost" as BareJid);
    assert.ok(account && passwordMatches(account, "s3cret"), "the existing password is kept");
  });

  it("admin server answers 400 to a bad JID, a foreign domain, or a missing or empty password", async () => {
    const cases: [unknown, RegExp][] = [
      [{ jid: "no spaces@localhost", password: "x" }, /not a valid user JID/],
      [{ jid: "localhost", password: "x" }, /not a valid user JID/],
      [{ jid: "bob@localhost/res", password: "x" }, /not a valid user JID/],
      [{ jid: "bob@example.org", password: "x" }, /not on this server's domain localhost/],
      [{ jid: 42, password: "x" }, /jid must be a string/],
      [{ jid: "bob@localhost", password: "" }, /password must be a non-empty string/],
      [{ jid: "bob@localhost" }, /password must be a non-empty string/],
      [["bob@localhost", "x"], /must be a JSON object/],
    ];
    for (const [body, message] of cases) {
      assertError(await call(port, "POST", "/api/users", { body }), 400, "XSRV_ADMIN", message);
    }
    assert.equal(await store.getAccount("bob@localhost" as BareJid), undefined);
  });

  it("admin server answers 400 to a body that is not JSON", async () => {
    const reply = await call(port, "POST", "/api/users", {
      raw: '{"jid": "bob@localhost", ',
      headers: { "content-type": "application/json" },
    });
    assertError(reply, 400, "XSRV_ADMIN", /not valid JSON/);
  });

  it("admin server answers 415 to a body that is not sent as application/json", async () => {
    const reply = await call(port, "POST", "/api/users", {
      raw: JSON.stringify({ jid: "bob@localhost", password: "x" }),
      headers: { "content-type": "text/plain" },
    });
    assertError(reply, 415, "XSRV_ADMIN", /application\/json/);
    assert.equal(await store.getAccount("bob@localhost" as BareJid), undefined);
  });

  it("admin server answers 413 when Content-Length passes the limit", async () => {
    const reply = await call(port, "POST", "/api/users", {
      raw: "{}",
      headers: { "content-type": "application/json", "content-length": MAX_ADMIN_BODY_BYTES + 1 },
    });
    assertError(reply, 413, "XSRV_ADMIN", /larger than/);
    assert.equal(reply.headers.connection, "close");
  });

  it("admin server answers 413 when a chunked body passes the limit", async () => {
    const reply = await new Promise<Reply>((resolve, reject) => {
      const req = request(
        {
          host: "127.0.0.1",
          port,
          method: "POST",
          path: "/api/users/bulk",
          agent: false,
          headers: { "content-type": "application/json", "transfer-encoding": "chunked" },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: JSON.parse(Buffer.concat(chunks).toString()),
            }),
          );
        },
      );
      // The server closes the connection once it has answered; what we still write may fail.
      req.on("error", (error: NodeJS.ErrnoException) => {
        if (error.code !== "EPIPE" && error.code !== "ECONNRESET") reject(error);
      });
      req.write(`{"users":[${'{"jid":"x@localhost","password":"y"},'.repeat(40_000)}`);
      req.end();
    });
    assertError(reply, 413, "XSRV_ADMIN", /larger than/);
    assert.equal(await store.getAccount("x@localhost" as BareJid), undefined);
  });

  it("admin server lists accounts sorted", async () => {
    await call(port, "POST", "/api/users", { body: { jid: "carol@localhost", password: "c" } });
    const reply = await call(port, "GET", "/api/users");
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.body, { users: ["alice@localhost", "carol@localhost"] });
  });

  it("admin server creates accounts in bulk and counts the existing ones", async () => {
    const users = Array.from({ length: 40 }, (_, i) => ({ jid: `bulk${i}@localhost`, password: `pw${i}` }));
    users.push({ jid: "alice@localhost", password: "ignored" }, { jid: "bulk0@localhost", password: "dup" });
    const reply = await call(port, "POST", "/api/users/bulk", { body: { users } });
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    assert.deepEqual(reply.body, { created: 40, existing: 2 });
    const bulk7 = await store.getAccount("bulk7@localhost" as BareJid);
    assert.ok(bulk7 && passwordMatches(bulk7, "pw7"));
    const alice = await store.getAccount("alice@localhost" as BareJid);
    assert.ok(alice && passwordMatches(alice, "s3cret"));
    assert.equal(await store.countAccounts(), 42);
  });

  it("admin server creates nothing from a bulk request with one bad entry", async () => {
    const users = [
      { jid: "good@localhost", password: "x" },
      { jid: "bad@elsewhere", password: "x" },
    ];
    const reply = await call(port, "POST", "/api/users/bulk", { body: { users } });
    assertError(reply, 400, "XSRV_ADMIN", /^users\[1\]\.jid: bad@elsewhere is not on this server's domain/);
    assert.equal(await store.getAccount("good@localhost" as BareJid), undefined);
    assertError(await call(port, "POST", "/api/users/bulk", { body: { users: "no" } }), 400, "XSRV_ADMIN");
  });

  it("admin server refuses a bulk request over the per-request limit", async () => {
    const users = Array.from({ length: MAX_BULK_USERS + 1 }, (_, i) => ({
      jid: `m${i}@localhost`,
      password: "p",
    }));
    const reply = await call(port, "POST", "/api/users/bulk", { body: { users } });
    assertError(reply, 400, "XSRV_ADMIN", new RegExp(`at most ${MAX_BULK_USERS}`));
    assert.equal(await store.getAccount("m0@localhost" as BareJid), undefined);
  });

  it("admin server changes a password and keeps the creation time", async () => {
    const before = await store.getAccount("carol@localhost" as BareJid);
    assert.ok(before);
    const reply = await call(port, "PUT", "/api/users/carol%40localhost/password", {
      body: { password: "new" },
    });
    assert.equal(reply.status, 204);
    assert.equal(reply.body, undefined);
    const updated = await store.getAccount("carol@localhost" as BareJid);
    assert.ok(updated && passwordMatches(updated, "new") && !passwordMatches(updated, "c"));
    assert.equal(updated.createdAt, before.createdAt);
  });

  it("admin server answers 404 to a password change of a missing account and 400 to an empty one", async () => {
    const missing = await call(port, "PUT", "/api/users/nobody@localhost/password", {
      body: { password: "x" },
    });
    assertError(missing, 404, "XSRV_USER_NOT_FOUND", /^nobody@localhost does not exist$/);
    const empty = await call(port, "PUT", "/api/users/carol@localhost/password", {
      body: { password: "" },
    });
    assertError(empty, 400, "XSRV_ADMIN", /password/);
  });

  it("admin server deletes an account, then answers 404", async () => {
    assert.equal((await call(port, "DELETE", "/api/users/carol%40localhost")).status, 204);
    assert.equal(await store.getAccount("carol@localhost" as BareJid), undefined);
    const again = await call(port, "DELETE", "/api/users/carol%40localhost");
    assertError(again, 404, "XSRV_USER_NOT_FOUND", /^carol@localhost does not exist$/);
    assertError(await call(port, "DELETE", "/api/users/%E0%A4%A"), 400, "XSRV_ADMIN", /percent-encoded/);
    assertError(await call(port, "DELETE", "/api/users/carol@other"), 400, "XSRV_ADMIN", /domain/);
  });

  it("admin server answers 404 to an unknown route", async () => {
    for (const path of ["/", "/admin", "/api/users/a@localhost/other", "/api/status/x"]) {
      assertError(await call(port, "GET", path), 404, "XSRV_ADMIN", /no route/);
    }
  });

  it("admin server answers 405 with Allow to a wrong method", async () => {
    const cases: [string, string, string][] = [
      ["POST", "/api/status", "GET"],
      ["DELETE", "/api/users", "GET, POST"],
      ["GET", "/api/users/bulk", "POST"],
      ["GET", "/api/users/a@localhost", "DELETE"],
      ["POST", "/api/users/a@localhost/password", "PUT"],
    ];
    for (const [method, path, allow] of cases) {
      const reply = await call(port, method, path);
      assertError(reply, 405, "XSRV_ADMIN", /not allowed/);
      assert.equal(reply.headers.allow, allow);
    }
  });

  it("admin server answers 403 to a Host that is not a loopback name (DNS rebinding)", async () => {
    const reply = await call(port, "GET", "/api/users", { headers: { host: `evil.example:${port}` } });
    assertError(reply, 403, "XSRV_ADMIN", /loopback/);
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
      assert.equal((await call(port, "GET", "/api/status", { headers: { host } })).status, 200, host);
    }
  });

  it("admin server answers 500 with the error body when status() fails", async () => {
    const failing = await startAdminServer({
      host: "127.0.0.1",
      port: 0,
      store,
      accounts: new Accounts(store, () => true),
      domain: "localhost",
      log,
      status: async () => {
        throw new Error("boom");
      },
    });
    try {
      assertError(await call(failing.port, "GET", "/api/status"), 500, "XSRV_ADMIN", /boom/);
    } finally {
      await failing.close();
    }
  });

  it("admin server refuses to bind to a non-loopback address", async () => {
    const options = {
      port: 0,
      store,
      accounts: new Accounts(store, () => true),
      domain: "localhost",
      log,
      status: async () => null,
    };
    await assert.rejects(startAdminServer({ ...options, host: "0.0.0.0" }), TypeError);
    await assert.rejects(startAdminServer({ ...options, host: "192.0.2.1" }), TypeError);
  });

  it("admin server close() resolves with an idle keep-alive connection and then refuses connections", async () => {
    const other = await startAdminServer({
      host: "127.0.0.1",
      port: 0,
      store,
      accounts: new Accounts(store, () => true),
      domain: "localhost",
      log,
      status: async () => ({}),
    });
    const agent = new Agent({ keepAlive: true });
    try {
      assert.equal((await call(other.port, "GET", "/api/status", { agent })).status, 200);
      await other.close();
      await other.close();
      await assert.rejects(call(other.port, "GET", "/api/status"), { code: "ECONNREFUSED" });
    } finally {
      agent.destroy();
    }
  });
});

describe("isLoopbackAddress", () => {
  it("isLoopbackAddress accepts IPv4, IPv4-mapped and IPv6 loopback only", () => {
    for (const address of ["127.0.0.1", "127.1.2.3", "::ffff:127.0.0.1", "::1"]) {
      assert.equal(isLoopbackAddress(address), true, address);
    }
    for (const address of [
      undefined,
      "",
      "10.0.0.1",
      "::ffff:10.0.0.1",
      "::",
      "0.0.0.0",
      "128.0.0.1",
      "fe80::1",
    ]) {
      assert.equal(isLoopbackAddress(address), false, String(address));
    }
  });
});

describe("admin server with a key (admin.key)", () => {
  const KEY = "k".repeat(20) + randomBytes(16).toString("hex");
  let root: string;
  let store: LevelStore;
  let server: AdminServer;
  let ca: string;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "starling-admin-key-"));
    store = new LevelStore(join(root, "store"));
    await store.open();
    const certificate = await makeCertificate("localhost");
    ca = certificate.cert;
    // HTTPS as beyond loopback, bound to loopback all the same: tests stay on this machine.
    server = await startAdminServer({
      host: "127.0.0.1",
      port: 0,
      key: KEY,
      https: true,
      tls: { cert: certificate.cert, key: certificate.key },
      store,
      accounts: new Accounts(store, () => true),
      domain: "localhost",
      log,
      status: async () => ({ node: "keyed" }),
      health: () => ({ serving: true, state: "up" }),
    });
  });

  after(async () => {
    await server.close();
    await store.close();
    await rm(root, { recursive: true, force: true });
  });

  const secure = (path: string, headers: Record<string, string> = {}) =>
    new Promise<Reply>((resolve, reject) => {
      const req = httpsRequest(
        { host: "127.0.0.1", port: server.port, path, headers, ca, servername: "localhost", agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: text === "" ? undefined : JSON.parse(text),
            });
          });
        },
      );
      req.on("error", reject);
      req.end();
    });

  it("answers only a request with the right Bearer key (401 with WWW-Authenticate otherwise)", async () => {
    const none = await secure("/api/status");
    assertError(none, 401, "XSRV_ADMIN_UNAUTHORIZED", /Bearer/);
    assert.equal(none.headers["www-authenticate"], 'Bearer realm="starling"');
    assertError(
      await secure("/api/status", { authorization: `Bearer ${KEY}x` }),
      401,
      "XSRV_ADMIN_UNAUTHORIZED",
      /not this node/,
    );
    assertError(
      await secure("/api/status", { authorization: `Basic ${KEY}` }),
      401,
      "XSRV_ADMIN_UNAUTHORIZED",
    );
    const ok = await secure("/api/status", { authorization: `Bearer ${KEY}` });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { node: "keyed" });
  });

  it("with a key, the Host check gives way: a caller with the key may name the node as it likes", async () => {
    const reply = await secure("/api/status", { authorization: `Bearer ${KEY}`, host: "chat.example.org" });
    assert.equal(reply.status, 200);
  });

  it("/health and the OpenAPI document need no key", async () => {
    assert.equal((await secure("/health")).status, 200);
    const doc = (await secure("/api/openapi.json")).body as { openapi: string; servers: { url: string }[] };
    assert.equal(doc.openapi, "3.1.0");
    assert.match(doc.servers[0]!.url, /^https:/);
  });

  it("serves no plain HTTP on its port", async () => {
    await assert.rejects(call(server.port, "GET", "/health"));
  });
});

describe("the OpenAPI document", () => {
  it("describes every route the node answers, and the node answers every route it describes", async () => {
    const root = await mkdtemp(join(tmpdir(), "starling-openapi-"));
    const store = new LevelStore(join(root, "store"));
    await store.open();
    const server = await startAdminServer({
      host: "127.0.0.1",
      port: 0,
      store,
      accounts: new Accounts(store, () => true),
      domain: "localhost",
      log,
      status: async () => ({}),
      sessions: async () => [],
      kick: async () => 0,
      send: async (messages) => messages.length,
      reload: async () => ({ changed: [] }),
      restartWorker: async () => false,
      metrics: async () => [],
      health: () => ({ serving: true, state: "up" }),
    });
    try {
      const doc = (await call(server.port, "GET", "/api/openapi.json")).body as {
        paths: Record<string, Record<string, { summary: string; responses: Record<string, unknown> }>>;
      };
      const described = Object.entries(doc.paths).flatMap(([path, methods]) =>
        Object.keys(methods).map((method) => [method.toUpperCase(), path] as const),
      );
      assert.ok(described.length >= 19, `${described.length} operations`);
      for (const [method, path] of described) {
        const concrete = path.replace("{jid}", "nobody%40localhost").replace("{index}", "7");
        const reply = await call(server.port, method, concrete, { body: {} });
        // Described routes exist: whatever they say about an empty body, it is not "no route".
        assert.ok(
          reply.status !== 405 && !(reply.status === 404 && /no route/.test(JSON.stringify(reply.body))),
          `${method} ${path} answered ${reply.status} ${JSON.stringify(reply.body)}`,
        );
        // Every operation but /health says that it needs the key.
        if (path !== "/health") {
          assert.ok(Object.keys(doc.paths[path]![method.toLowerCase()]!.responses).includes("401"), path);
        }
      }
      // And nothing else answers: a path beside the described ones is 404.
      assertError(await call(server.port, "GET", "/api/undocumented"), 404, "XSRV_ADMIN", /no route/);
    } finally {
      await server.close();
      await store.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});
