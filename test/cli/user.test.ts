import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Accounts } from "../../src/auth/accounts.ts";
import { deriveScramCredential } from "../../src/auth/scram.ts";
import { type AdminServer, startAdminServer } from "../../src/http/admin-server.ts";
import { createLogger } from "../../src/log.ts";
import { LevelStore } from "../../src/storage/level-store.ts";
import type { Account } from "../../src/storage/store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import { closedPort, type RunResult, runStarling } from "./run-starling.ts";

let root: string;
let dirs = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), "starling-cli-user-"));
});
after(() => rm(root, { recursive: true, force: true }));

/** A fresh data directory, and a runner pointed at it with an admin port nothing listens on. */
async function stoppedNode(httpPort?: number) {
  const data = join(root, `data-${dirs++}`);
  const port = httpPort ?? (await closedPort());
  const run = (args: string[], input?: string) =>
    runStarling([...args, "--data", data, "--http-port", String(port)], {
      cwd: root,
      ...(input === undefined ? {} : { input }),
    });
  /** Opens the store the CLI wrote, runs `fn`, closes it. */
  const withStore = async <T>(fn: (store: LevelStore) => Promise<T>): Promise<T> => {
    const store = new LevelStore(join(data, "store"));
    await store.open();
    try {
      return await fn(store);
    } finally {
      await store.close();
    }
  };
  return { data, port, run, withStore };
}

function passwordMatches(account: Account | undefined, password: string): boolean {
  assert.ok(account, "the account exists");
  const { salt, iterations, storedKey } = account.scramSha256;
  return (
    deriveScramCredential(password, "sha256", iterations, Buffer.from(salt, "base64")).storedKey === storedKey
  );
}

function assertOk(result: RunResult, stdout: string): void {
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, stdout);
}

function assertFails(result: RunResult, code: number, message: RegExp): void {
  assert.equal(result.code, code, `${result.stdout}${result.stderr}`);
  assert.equal(result.stderr.trimEnd().split("\n").length, 1, result.stderr);
  assert.match(result.stderr, message);
}

const alice = "alice@localhost" as BareJid;

describe("starling user against a stopped node", { concurrency: 4 }, () => {
  it("starling user add creates the account in the store and user list shows it", async () => {
    const node = await stoppedNode();
    assertOk(
      await node.run(["user", "add", "Alice@LocalHost", "--password", "s3cret"]),
      "created alice@localhost\n",
    );
    assertOk(await node.run(["user", "add", "bob@localhost", "--password", "b"]), "created bob@localhost\n");
    assertOk(await node.run(["user", "list"]), "alice@localhost\nbob@localhost\n");
    await node.withStore(async (store) => {
      assert.ok(passwordMatches(await store.getAccount(alice), "s3cret"));
      assert.deepEqual(await store.listAccounts(), ["alice@localhost", "bob@localhost"]);
    });
  });

  it("starling user add exits 1 when the account exists, keeping its password", async () => {
    const node = await stoppedNode();
    assertOk(
      await node.run(["user", "add", "alice@localhost", "--password", "first"]),
      "created alice@localhost\n",
    );
    const again = await node.run(["user", "add", "alice@localhost", "--password", "second"]);
    assertFails(again, 1, /^starling: alice@localhost already exists\n$/);
    await node.withStore(async (store) => assert.ok(passwordMatches(await store.getAccount(alice), "first")));
  });

  it("starling user add reads the password as one line from a non-TTY stdin", async () => {
    const node = await stoppedNode();
    assertOk(
      await node.run(["user", "add", "alice@localhost"], "piped pass\r\nsecond line\n"),
      "created alice@localhost\n",
    );
    await node.withStore(async (store) =>
      assert.ok(passwordMatches(await store.getAccount(alice), "piped pass")),
    );
  });

  it("starling user add exits 2 when stdin is empty and no --password is given", async () => {
    const node = await stoppedNode();
    assertFails(await node.run(["user", "add", "alice@localhost"], ""), 2, /no password/);
    assertFails(await node.run(["user", "add", "alice@localhost"], "\n"), 2, /password must not be empty/);
    assertOk(await node.run(["user", "list"]), "");
  });

  it("starling user passwd changes the password in the store", async () => {
    const node = await stoppedNode();
    await node.run(["user", "add", "alice@localhost", "--password", "old"]);
    const createdAt = await node.withStore(async (store) => (await store.getAccount(alice))?.createdAt);
    assertOk(
      await node.run(["user", "passwd", "alice@localhost"], "new\n"),
      "changed the password of alice@localhost\n",
    );
    await node.withStore(async (store) => {
      const account = await store.getAccount(alice);
      assert.ok(passwordMatches(account, "new") && !passwordMatches(account, "old"));
      assert.equal(account?.createdAt, createdAt);
    });
  });

  it("starling user passwd and remove exit 1 for a missing account", async () => {
    const node = await stoppedNode();
    const passwd = await node.run(["user", "passwd", "ghost@localhost", "--password", "x"]);
    assertFails(passwd, 1, /^starling: ghost@localhost does not exist\n$/);
    assertFails(
      await node.run(["user", "remove", "ghost@localhost"]),
      1,
      /^starling: ghost@localhost does not exist\n$/,
    );
    assertOk(await node.run(["user", "list"]), "");
  });

  it("starling user remove deletes the account", async () => {
    const node = await stoppedNode();
    await node.run(["user", "add", "alice@localhost", "--password", "a"]);
    await node.run(["user", "add", "bob@localhost", "--password", "b"]);
    assertOk(await node.run(["user", "remove", "alice@localhost"]), "removed alice@localhost\n");
    assertOk(await node.run(["user", "list"]), "bob@localhost\n");
    await node.withStore(async (store) => assert.equal(await store.getAccount(alice), undefined));
  });

  it("starling user uses the domain of the config file", async () => {
    const node = await stoppedNode();
    const config = join(root, `example-${dirs}.json`);
    await writeFile(config, JSON.stringify({ domain: "example.org" }));
    assertOk(
      await node.run(["user", "add", "bob@example.org", "--password", "b", "--config", config]),
      "created bob@example.org\n",
    );
    const wrong = await node.run(["user", "add", "bob@localhost", "--password", "b", "--config", config]);
    assertFails(wrong, 2, /bob@localhost is not on this server's domain example\.org/);
    assertOk(await node.run(["user", "list", "--config", config]), "bob@example.org\n");
  });

  it("starling user says so when the store is in use and no node answers", async () => {
    const node = await stoppedNode();
    const holder = new LevelStore(join(node.data, "store"));
    await holder.open();
    try {
      const result = await node.run(["user", "list"]);
      assertFails(
        result,
        1,
        /store .* is in use by another process, and no node answered on http:\/\/127\.0\.0\.1:\d+/,
      );
    } finally {
      await holder.close();
    }
  });

  it("starling user falls back to the store when the port answers but is not Starling", async () => {
    const other = createServer((_req, res) => res.writeHead(404).end("not here")).listen(0, "127.0.0.1");
    await once(other, "listening");
    try {
      const node = await stoppedNode((other.address() as { port: number }).port);
      assertOk(
        await node.run(["user", "add", "alice@localhost", "--password", "a"]),
        "created alice@localhost\n",
      );
      await node.withStore(async (store) => assert.ok(passwordMatches(await store.getAccount(alice), "a")));
      const holder = new LevelStore(join(node.data, "store"));
      await holder.open();
      try {
        const result = await node.run(["user", "list"]);
        assertFails(
          result,
          1,
          /is in use by another process, and the server answering is not a Starling node/,
        );
      } finally {
        await holder.close();
      }
    } finally {
      other.close();
      other.closeAllConnections();
    }
  });
});

describe("starling user against a node's admin endpoint", () => {
  // The store is held open by this process, as a running node holds it, so the CLI can only
  // succeed through the admin endpoint.
  let data: string;
  let store: LevelStore;
  let admin: AdminServer;
  const run = (args: string[], input?: string) =>
    runStarling([...args, "--data", data, "--http-port", String(admin.port)], {
      cwd: root,
      ...(input === undefined ? {} : { input }),
    });

  before(async () => {
    data = join(root, "running");
    store = new LevelStore(join(data, "store"));
    await store.open();
    admin = await startAdminServer({
      host: "127.0.0.1",
      port: 0,
      store,
      accounts: new Accounts(store, () => true),
      domain: "localhost",
      log: createLogger({ level: "silent" }),
      status: async () => ({}),
    });
  });
  after(async () => {
    await admin?.close();
    await store?.close();
  });

  it("starling user add, passwd, list and remove go through the admin endpoint", async () => {
    assertOk(await run(["user", "add", "alice@localhost", "--password", "one"]), "created alice@localhost\n");
    assert.ok(passwordMatches(await store.getAccount(alice), "one"));
    assertFails(
      await run(["user", "add", "alice@localhost", "--password", "x"]),
      1,
      /^starling: alice@localhost already exists\n$/,
    );
    assertOk(
      await run(["user", "passwd", "alice@localhost"], "two\n"),
      "changed the password of alice@localhost\n",
    );
    assert.ok(passwordMatches(await store.getAccount(alice), "two"));
    assertOk(await run(["user", "add", "bob@localhost"], "b\n"), "created bob@localhost\n");
    assertOk(await run(["user", "list"]), "alice@localhost\nbob@localhost\n");
    assertOk(await run(["user", "remove", "alice@localhost"]), "removed alice@localhost\n");
    assert.equal(await store.getAccount(alice), undefined);
    assertFails(
      await run(["user", "remove", "alice@localhost"]),
      1,
      /^starling: alice@localhost does not exist\n$/,
    );
  });

  it("starling user refuses a node that serves another domain", async () => {
    const config = join(root, "other-domain.json");
    await writeFile(config, JSON.stringify({ domain: "example.org" }));
    const result = await run(["user", "list", "--config", config]);
    assertFails(result, 1, /serves localhost, not example\.org/);
  });
});
