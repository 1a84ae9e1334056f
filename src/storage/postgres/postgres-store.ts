/**
 * The cluster store: every node opens a {@link PostgresStore} on the same PostgreSQL database,
 * and any node can serve any user because nothing in the schema belongs to one node. It passes
 * `test/conformance/store-suite.ts` like the embedded {@link LevelStore}.
 *
 * Concurrency, now across processes as well as within one:
 * - a write that is one statement on one row (createAccount, putVCard, …) relies on the
 *   statement's own atomicity and the primary keys;
 * - a write that reads before it writes, or touches several tables (putRosterItem, pushOffline,
 *   deleteAccount, …), runs in a transaction that first takes a transaction-level advisory lock
 *   on the user. That is the LevelStore's per-user lock made cluster-wide: writers of one user
 *   queue up, each then reads what the previous one committed (READ COMMITTED takes a new
 *   snapshot per statement, and the lock is taken by an earlier statement), and, since every
 *   such writer takes that one lock before any row lock, they cannot deadlock.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type pg from "pg";
import type { Logger } from "../../log.ts";
import type { BareJid } from "../../xmpp/jid.ts";
import type {
  Account,
  LoginToken,
  OfflineMessage,
  PendingSubscription,
  Roster,
  RosterItem,
  ScramCredential,
  Store,
  Subscription,
} from "../store.ts";
import { ManagedPool } from "./managed-pool.ts";

/** Options for {@link PostgresStore}. */
export interface PostgresStoreOptions {
  /** Receives lifecycle events (open, close, migrations, idle connection errors). */
  log?: Logger;
  /**
   * Passed to `pg.Pool` over {@link POSTGRES_POOL_DEFAULTS}; the connection itself comes from
   * the URL, so `connectionString` is not allowed here.
   */
  pool?: pg.PoolConfig;
}

/**
 * Pool settings unless `options.pool` says otherwise. The connection timeout keeps a call from
 * hanging forever when the server is down: it fails with XSRV_STORE instead.
 */
export const POSTGRES_POOL_DEFAULTS = Object.freeze({
  max: 10,
  connectionTimeoutMillis: 10_000,
  idleTimeoutMillis: 30_000,
  application_name: "starling",
} satisfies pg.PoolConfig);

/**
 * The first key of every per-user advisory lock ("STLU" in ASCII). The two-integer lock form
 * is a lock space apart from the one-bigint form that migrations use.
 */
const USER_LOCK_CLASS = 0x53544c55;

/** The second key: 32 bits of SHA-256 of the JID. A collision only serialises two users. */
function userLockKey(jid: BareJid): number {
  return createHash("sha256").update(jid).digest().readInt32BE(0);
}

function assertJid(jid: BareJid): void {
  // PostgreSQL text cannot hold NUL; a normalised JID never contains a control character
  // (RFC 7622 §3.3.1), so this is a caller's bug, reported the way LevelStore reports it.
  if (typeof jid !== "string" || jid.length === 0 || jid.includes("\u0000")) {
    throw new TypeError(`Invalid bare JID ${JSON.stringify(jid)}`);
  }
}

/** Where the URL points, without its credentials, for log lines and error messages. */
function describeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}${parsed.port === "" ? "" : `:${parsed.port}`}${parsed.pathname}`;
  } catch {
    return "(unparsable URL)";
  }
}

/** `bigint` and `count(*)` come back from pg as strings, to lose no precision; ours fit. */
function toNumber(value: string | number): number {
  return typeof value === "number" ? value : Number(value);
}

const ACCOUNT_COLUMNS = `jid,
  scram_sha1_salt, scram_sha1_iterations, scram_sha1_stored_key, scram_sha1_server_key,
  scram_sha256_salt, scram_sha256_iterations, scram_sha256_stored_key, scram_sha256_server_key,
  created_at`;

interface AccountRow {
  jid: string;
  scram_sha1_salt: string;
  scram_sha1_iterations: number;
  scram_sha1_stored_key: string;
  scram_sha1_server_key: string;
  scram_sha256_salt: string;
  scram_sha256_iterations: number;
  scram_sha256_stored_key: string;
  scram_sha256_server_key: string;
  created_at: string;
}

/** The ten parameters of {@link ACCOUNT_COLUMNS}, in order; extra properties are not stored. */
function accountValues(account: Account): unknown[] {
  const credential = (c: ScramCredential) => [c.salt, c.iterations, c.storedKey, c.serverKey];
  return [
    account.jid,
    ...credential(account.scramSha1),
    ...credential(account.scramSha256),
    account.createdAt,
  ];
}

function accountFromRow(row: AccountRow): Account {
  return {
    jid: row.jid as BareJid,
    scramSha1: {
      salt: row.scram_sha1_salt,
      iterations: row.scram_sha1_iterations,
      storedKey: row.scram_sha1_stored_key,
      serverKey: row.scram_sha1_server_key,
    },
    scramSha256: {
      salt: row.scram_sha256_salt,
      iterations: row.scram_sha256_iterations,
      storedKey: row.scram_sha256_stored_key,
      serverKey: row.scram_sha256_server_key,
    },
    createdAt: toNumber(row.created_at),
  };
}

interface RosterRow {
  version: string;
  contact: string | null;
  name: string | null;
  subscription: Subscription | null;
  ask: boolean | null;
  approved: boolean | null;
  groups: string[] | null;
}

/** NULL is "absent": the field is left out, never set to `undefined` or `null`. */
function rosterItemFromRow(row: RosterRow & { contact: string }): RosterItem {
  const item: RosterItem = {
    jid: row.contact as BareJid,
    subscription: row.subscription ?? "none",
    groups: row.groups ?? [],
  };
  if (row.name !== null) item.name = row.name;
  if (row.ask !== null) item.ask = row.ask;
  if (row.approved !== null) item.approved = row.approved;
  return item;
}

/** JavaScript's default order (UTF-16 code units), whatever collation the database uses. */
function sorted(values: string[]): string[] {
  return values.sort();
}

/**
 * {@link Store} on PostgreSQL through a `pg.Pool`. {@link open} applies the schema migrations
 * (`migrations.ts`), so a new database needs nothing but the URL.
 *
 * @example
 * const store = new PostgresStore("postgres://starling:secret@db.example.com/starling", { log });
 * await store.open(); // connects and migrates; throws XSRV_STORE when the server is unreachable
 */
export class PostgresStore implements Store {
  /** The server and database, without credentials. */
  readonly location: string;
  #log: Logger | undefined;
  readonly #db: ManagedPool;

  constructor(url: string, options: PostgresStoreOptions = {}) {
    if (typeof url !== "string" || url.length === 0) {
      throw new TypeError("The PostgreSQL URL must be a non-empty string");
    }
    if (options.pool?.connectionString !== undefined) {
      throw new TypeError("Give the PostgreSQL URL as the first argument, not as pool.connectionString");
    }
    this.location = describeUrl(url);
    this.#log = options.log;
    this.#db = new ManagedPool({
      config: { ...POSTGRES_POOL_DEFAULTS, ...options.pool, connectionString: url },
      name: `store at "${this.location}"`,
      location: this.location,
      log: options.log,
    });
  }

  /** Connects and migrates the schema (or reopens after {@link close}); idempotent. */
  async open(): Promise<void> {
    const wasOpen = this.#db.isOpen;
    await this.#db.open();
    if (!wasOpen) this.#log?.info({ location: this.location }, "store opened");
  }

  /** Waits for the operations in progress, then closes every connection. */
  close(): Promise<void> {
    return this.#db.close();
  }

  /** Runs one operation: checks the store is open, tracks it for close(), wraps pg's errors. */
  #run<T>(what: string, fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
    return this.#db.run(what, fn);
  }

  /** One statement on its own (autocommit: the statement is the transaction). */
  #query<R extends pg.QueryResultRow>(
    what: string,
    text: string,
    values: unknown[],
  ): Promise<pg.QueryResult<R>> {
    return this.#run(what, (pool) => pool.query<R>(text, values));
  }

  /**
   * Runs `fn` in a transaction holding the user's advisory lock (see the module comment).
   * `BEGIN` and the lock go in one round trip: the simple query protocol allows several
   * statements when there are no parameters, and the lock keys are integers we computed.
   */
  #locked<T>(jid: BareJid, what: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    assertJid(jid);
    return this.#run(what, async (pool) => {
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        await client.query(`BEGIN; SELECT pg_advisory_xact_lock(${USER_LOCK_CLASS}, ${userLockKey(jid)})`);
        const result = await fn(client);
        await client.query("COMMIT");
        return result;
      } catch (error) {
        // A connection whose ROLLBACK fails is in an unknown state: destroy it, do not reuse it.
        await client.query("ROLLBACK").catch((rollbackError: unknown) => {
          broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
        });
        throw error;
      } finally {
        client.release(broken);
      }
    });
  }

  // --- accounts -------------------------------------------------------------------------------

  async getAccount(jid: BareJid): Promise<Account | undefined> {
    assertJid(jid);
    const { rows } = await this.#query<AccountRow>(
      `get account "${jid}"`,
      `SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE jid = $1`,
      [jid],
    );
    return rows[0] === undefined ? undefined : accountFromRow(rows[0]);
  }

  async createAccount(account: Account): Promise<boolean> {
    assertJid(account.jid);
    // The primary key decides between concurrent creators, on any node.
    const { rowCount } = await this.#query(
      `create account "${account.jid}"`,
      `INSERT INTO accounts (${ACCOUNT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
       ON CONFLICT (jid) DO NOTHING`,
      accountValues(account),
    );
    return rowCount === 1;
  }

  async updateAccount(account: Account): Promise<boolean> {
    assertJid(account.jid);
    const { rowCount } = await this.#query(
      `update account "${account.jid}"`,
      `UPDATE accounts SET
         scram_sha1_salt = $2, scram_sha1_iterations = $3,
         scram_sha1_stored_key = $4, scram_sha1_server_key = $5,
         scram_sha256_salt = $6, scram_sha256_iterations = $7,
         scram_sha256_stored_key = $8, scram_sha256_server_key = $9,
         created_at = $10
       WHERE jid = $1`,
      accountValues(account),
    );
    return rowCount === 1;
  }

  async deleteAccount(jid: BareJid): Promise<boolean> {
    return this.#locked(jid, `delete account "${jid}"`, async (client) => {
      // Stray data of a user without an account goes too, as in LevelStore. Every
      // data-modifying WITH runs to completion whether or not its output is read.
      const { rows } = await client.query<{ existed: number }>(
        `WITH del_account AS (DELETE FROM accounts WHERE jid = $1 RETURNING 1),
              del_version AS (DELETE FROM roster_versions WHERE jid = $1),
              del_roster AS (DELETE FROM roster_items WHERE jid = $1),
              del_pending AS (DELETE FROM pending_subscriptions WHERE jid = $1),
              del_offline AS (DELETE FROM offline_messages WHERE jid = $1),
              del_vcard AS (DELETE FROM vcards WHERE jid = $1),
              del_private AS (DELETE FROM private_xml WHERE jid = $1),
              del_blocked AS (DELETE FROM blocklist WHERE jid = $1)
         SELECT count(*)::integer AS existed FROM del_account`,
        [jid],
      );
      return (rows[0]?.existed ?? 0) > 0;
    });
  }

  async listAccounts(): Promise<BareJid[]> {
    const { rows } = await this.#query<{ jid: BareJid }>("list accounts", "SELECT jid FROM accounts", []);
    return sorted(rows.map((row) => row.jid)) as BareJid[];
  }

  async countAccounts(): Promise<number> {
    const { rows } = await this.#query<{ n: string }>(
      "count accounts",
      "SELECT count(*) AS n FROM accounts",
      [],
    );
    return toNumber(rows[0]?.n ?? 0);
  }

  // --- roster ---------------------------------------------------------------------------------

  async getRoster(jid: BareJid): Promise<Roster> {
    assertJid(jid);
    // One statement, so the version and the items come from one snapshot. The outer row
    // exists even when there are no items (contact is then NULL).
    const { rows } = await this.#query<RosterRow>(
      `get roster of "${jid}"`,
      `SELECT v.version, i.contact, i.name, i.subscription, i.ask, i.approved, i.groups
       FROM (SELECT coalesce((SELECT version FROM roster_versions WHERE jid = $1), 0) AS version) AS v
       LEFT JOIN roster_items AS i ON i.jid = $1`,
      [jid],
    );
    const items: RosterItem[] = [];
    for (const row of rows) {
      if (row.contact !== null) items.push(rosterItemFromRow({ ...row, contact: row.contact }));
    }
    return { version: toNumber(rows[0]?.version ?? 0), items };
  }

  async putRosterItem(jid: BareJid, item: RosterItem): Promise<number> {
    assertJid(item.jid);
    return this.#locked(jid, `put roster item "${item.jid}" of "${jid}"`, async (client) => {
      const { rows } = await client.query<{ version: string }>(
        `WITH item AS (
           INSERT INTO roster_items (jid, contact, name, subscription, ask, approved, groups)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (jid, contact) DO UPDATE SET
             name = EXCLUDED.name, subscription = EXCLUDED.subscription, ask = EXCLUDED.ask,
             approved = EXCLUDED.approved, groups = EXCLUDED.groups
         )
         INSERT INTO roster_versions (jid, version) VALUES ($1, 1)
         ON CONFLICT (jid) DO UPDATE SET version = roster_versions.version + 1
         RETURNING version`,
        [
          jid,
          item.jid,
          item.name ?? null,
          item.subscription,
          item.ask ?? null,
          item.approved ?? null,
          [...item.groups],
        ],
      );
      const row = rows[0];
      if (row === undefined) throw new Error("the roster version upsert returned no row");
      return toNumber(row.version);
    });
  }

  async deleteRosterItem(jid: BareJid, contact: BareJid): Promise<number | undefined> {
    assertJid(contact);
    return this.#locked(jid, `delete roster item "${contact}" of "${jid}"`, async (client) => {
      // The version moves only when an item was deleted (the SELECT yields no row otherwise).
      const { rows } = await client.query<{ version: string }>(
        `WITH deleted AS (DELETE FROM roster_items WHERE jid = $1 AND contact = $2 RETURNING 1)
         INSERT INTO roster_versions (jid, version) SELECT $1, 1 FROM deleted
         ON CONFLICT (jid) DO UPDATE SET version = roster_versions.version + 1
         RETURNING version`,
        [jid, contact],
      );
      return rows[0] === undefined ? undefined : toNumber(rows[0].version);
    });
  }

  // --- pending subscriptions ------------------------------------------------------------------

  async getPendingSubscriptions(jid: BareJid): Promise<PendingSubscription[]> {
    assertJid(jid);
    const { rows } = await this.#query<{ sender: BareJid; stanza: string }>(
      `get pending subscriptions of "${jid}"`,
      "SELECT sender, stanza FROM pending_subscriptions WHERE jid = $1",
      [jid],
    );
    return rows.map((row) => ({ from: row.sender, stanza: row.stanza }));
  }

  async putPendingSubscription(jid: BareJid, pending: PendingSubscription): Promise<void> {
    assertJid(jid);
    assertJid(pending.from);
    await this.#query(
      `put pending subscription from "${pending.from}" to "${jid}"`,
      `INSERT INTO pending_subscriptions (jid, sender, stanza) VALUES ($1, $2, $3)
       ON CONFLICT (jid, sender) DO UPDATE SET stanza = EXCLUDED.stanza`,
      [jid, pending.from, pending.stanza],
    );
  }

  async deletePendingSubscription(jid: BareJid, from: BareJid): Promise<void> {
    assertJid(jid);
    await this.#query(
      `delete pending subscription from "${from}" to "${jid}"`,
      "DELETE FROM pending_subscriptions WHERE jid = $1 AND sender = $2",
      [jid, from],
    );
  }

  // --- offline messages -----------------------------------------------------------------------

  async pushOffline(jid: BareJid, message: OfflineMessage, limit: number): Promise<boolean> {
    if (Number.isNaN(limit) || limit < 0) {
      throw new RangeError(`The offline limit must be a non-negative number, got ${limit}`);
    }
    return this.#locked(jid, `store offline message for "${jid}"`, async (client) => {
      // Under the user's lock the count sees every message committed before, on any node, so
      // concurrent pushes can never go past the limit. float8 lets the limit be Infinity.
      const { rowCount } = await client.query(
        `INSERT INTO offline_messages (jid, stanza, stored_at)
         SELECT $1, $2::text, $3::bigint
         WHERE (SELECT count(*) FROM offline_messages WHERE jid = $1) < $4::float8`,
        [jid, message.stanza, message.storedAt, limit],
      );
      return rowCount === 1;
    });
  }

  async takeOffline(jid: BareJid): Promise<OfflineMessage[]> {
    assertJid(jid);
    // No user lock needed: DELETE locks each row it removes, so concurrent takes (on any node)
    // hand each message out once.
    const { rows } = await this.#query<{ stanza: string; stored_at: string }>(
      `take offline messages of "${jid}"`,
      `WITH taken AS (DELETE FROM offline_messages WHERE jid = $1 RETURNING id, stanza, stored_at)
       SELECT stanza, stored_at FROM taken ORDER BY id`,
      [jid],
    );
    return rows.map((row) => ({ stanza: row.stanza, storedAt: toNumber(row.stored_at) }));
  }

  async listOffline(jid: BareJid): Promise<OfflineMessage[]> {
    assertJid(jid);
    const { rows } = await this.#query<{ stanza: string; stored_at: string }>(
      `list offline messages of "${jid}"`,
      "SELECT stanza, stored_at FROM offline_messages WHERE jid = $1 ORDER BY id",
      [jid],
    );
    return rows.map((row) => ({ stanza: row.stanza, storedAt: toNumber(row.stored_at) }));
  }

  async countOffline(jid: BareJid): Promise<number> {
    assertJid(jid);
    const { rows } = await this.#query<{ n: string }>(
      `count offline messages of "${jid}"`,
      "SELECT count(*) AS n FROM offline_messages WHERE jid = $1",
      [jid],
    );
    return toNumber(rows[0]?.n ?? 0);
  }

  // --- vCard and private XML ------------------------------------------------------------------

  async getVCard(jid: BareJid): Promise<string | undefined> {
    assertJid(jid);
    const { rows } = await this.#query<{ vcard: string }>(
      `get vCard of "${jid}"`,
      "SELECT vcard FROM vcards WHERE jid = $1",
      [jid],
    );
    return rows[0]?.vcard;
  }

  async putLoginToken(token: LoginToken, now: number): Promise<void> {
    assertJid(token.jid);
    await this.#query(
      "put a login token",
      `WITH expired AS (DELETE FROM login_tokens WHERE expires_at < $4)
       INSERT INTO login_tokens (hash, jid, expires_at) VALUES ($1, $2, $3)`,
      [token.hash, token.jid, token.expiresAt, now],
    );
  }

  async takeLoginToken(hash: string): Promise<LoginToken | undefined> {
    // One DELETE … RETURNING: of concurrent takes on any node, exactly one gets the row.
    const { rows } = await this.#query<{ jid: BareJid; expires_at: string }>(
      "take a login token",
      "DELETE FROM login_tokens WHERE hash = $1 RETURNING jid, expires_at",
      [hash],
    );
    const row = rows[0];
    return row === undefined ? undefined : { hash, jid: row.jid, expiresAt: Number(row.expires_at) };
  }

  async putVCard(jid: BareJid, vcard: string): Promise<void> {
    assertJid(jid);
    await this.#query(
      `put vCard of "${jid}"`,
      `INSERT INTO vcards (jid, vcard) VALUES ($1, $2)
       ON CONFLICT (jid) DO UPDATE SET vcard = EXCLUDED.vcard`,
      [jid, vcard],
    );
  }

  async getPrivate(jid: BareJid, key: string): Promise<string | undefined> {
    assertJid(jid);
    const { rows } = await this.#query<{ xml: string }>(
      `get private XML "${key}" of "${jid}"`,
      "SELECT xml FROM private_xml WHERE jid = $1 AND key = $2",
      [jid, key],
    );
    return rows[0]?.xml;
  }

  async listPrivate(jid: BareJid): Promise<{ key: string; xml: string }[]> {
    assertJid(jid);
    const { rows } = await this.#query<{ key: string; xml: string }>(
      `list private XML of "${jid}"`,
      "SELECT key, xml FROM private_xml WHERE jid = $1",
      [jid],
    );
    // Sorted here, in JavaScript string order, like every list the Store returns.
    return rows
      .map((row) => ({ key: row.key, xml: row.xml }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async putPrivate(jid: BareJid, key: string, xml: string): Promise<void> {
    assertJid(jid);
    await this.#query(
      `put private XML "${key}" of "${jid}"`,
      `INSERT INTO private_xml (jid, key, xml) VALUES ($1, $2, $3)
       ON CONFLICT (jid, key) DO UPDATE SET xml = EXCLUDED.xml`,
      [jid, key, xml],
    );
  }

  // --- blocklist ------------------------------------------------------------------------------

  async getBlocklist(jid: BareJid): Promise<string[]> {
    assertJid(jid);
    const { rows } = await this.#query<{ blocked: string }>(
      `get blocklist of "${jid}"`,
      "SELECT blocked FROM blocklist WHERE jid = $1",
      [jid],
    );
    return sorted(rows.map((row) => row.blocked));
  }

  async addBlocked(jid: BareJid, items: string[]): Promise<string[]> {
    return this.#locked(jid, `add to blocklist of "${jid}"`, async (client) => {
      // The list returned is the list after this change: the lock keeps other writers of this
      // user out, and the UNION adds what this statement inserted (its own snapshot cannot
      // see those rows).
      const { rows } = await client.query<{ blocked: string }>(
        `WITH added AS (
           INSERT INTO blocklist (jid, blocked)
           SELECT DISTINCT $1::text, item FROM unnest($2::text[]) AS item
           ON CONFLICT (jid, blocked) DO NOTHING
           RETURNING blocked
         )
         SELECT blocked FROM blocklist WHERE jid = $1 UNION SELECT blocked FROM added`,
        [jid, [...items]],
      );
      return sorted(rows.map((row) => row.blocked));
    });
  }

  async removeBlocked(jid: BareJid, items?: string[]): Promise<string[]> {
    if (items === undefined) {
      assertJid(jid);
      await this.#query(`remove from blocklist of "${jid}"`, "DELETE FROM blocklist WHERE jid = $1", [jid]);
      return [];
    }
    return this.#locked(jid, `remove from blocklist of "${jid}"`, async (client) => {
      const { rows } = await client.query<{ blocked: string }>(
        `WITH removed AS (DELETE FROM blocklist WHERE jid = $1 AND blocked = ANY($2::text[]))
         SELECT blocked FROM blocklist WHERE jid = $1 AND NOT (blocked = ANY($2::text[]))`,
        [jid, [...items]],
      );
      return sorted(rows.map((row) => row.blocked));
    });
  }
}
