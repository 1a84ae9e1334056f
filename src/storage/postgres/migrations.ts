/**
 * The PostgreSQL schema as an ordered list of versioned migrations. {@link migrate} runs at every
 * {@link PostgresStore.open}: it applies, in one transaction, every step the database has not
 * recorded in `schema_migrations` yet, so a node started on an older database brings it up to
 * date, and a node started on an up-to-date one changes nothing.
 *
 * Rules for editing this file:
 * - migrations are append-only: never edit or renumber a published step, add a new one;
 * - a step must keep the previous release working on the new schema (add columns and tables,
 *   do not drop or rename them in the same release), because a rolling upgrade runs two
 *   releases against one database;
 * - the schema is cluster-ready: every row is keyed by the owner's normalised bare JID and
 *   nothing in it describes one node, so any node can serve any user.
 */
import type pg from "pg";
import { XmppServerError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { wrapStoreError } from "../store-error.ts";

/** One schema step. */
export interface Migration {
  /** 1, 2, 3… with no gap: the order in which steps run. */
  version: number;
  /** What the step does; recorded with the version so an edited history is detected. */
  name: string;
  /** Plain SQL (several statements allowed, no parameters). */
  sql: string;
}

/**
 * Every step, in order. Timestamps are `bigint` milliseconds since the epoch, as in the `Store`
 * contract; optional fields are nullable columns, NULL meaning "absent".
 */
export const MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    version: 1,
    name: "initial schema",
    sql: `
      -- SCRAM keys only (RFC 5802 §3): the password itself is never stored.
      CREATE TABLE accounts (
        jid                   text PRIMARY KEY,
        scram_sha1_salt       text NOT NULL,
        scram_sha1_iterations integer NOT NULL,
        scram_sha1_stored_key text NOT NULL,
        scram_sha1_server_key text NOT NULL,
        scram_sha256_salt       text NOT NULL,
        scram_sha256_iterations integer NOT NULL,
        scram_sha256_stored_key text NOT NULL,
        scram_sha256_server_key text NOT NULL,
        created_at            bigint NOT NULL
      );

      -- RFC 6121 §2.6: one version per roster, bumped in the same transaction as every change.
      CREATE TABLE roster_versions (
        jid     text PRIMARY KEY,
        version bigint NOT NULL
      );

      CREATE TABLE roster_items (
        jid          text NOT NULL,
        contact      text NOT NULL,
        name         text,
        subscription text NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
        ask          boolean,
        approved     boolean,
        groups       text[] NOT NULL DEFAULT '{}',
        PRIMARY KEY (jid, contact)
      );

      -- Inbound subscription requests waiting for the user's answer ("pending in").
      CREATE TABLE pending_subscriptions (
        jid    text NOT NULL,
        sender text NOT NULL,
        stanza text NOT NULL,
        PRIMARY KEY (jid, sender)
      );

      -- The bigserial is the delivery order; it is global, so it stays increasing whichever
      -- node stores the message.
      CREATE TABLE offline_messages (
        id        bigserial PRIMARY KEY,
        jid       text NOT NULL,
        stanza    text NOT NULL,
        stored_at bigint NOT NULL
      );
      CREATE INDEX offline_messages_jid_id ON offline_messages (jid, id);

      CREATE TABLE vcards (
        jid   text PRIMARY KEY,
        vcard text NOT NULL
      );

      -- XEP-0049, keyed by "name xmlns" of the stored element.
      CREATE TABLE private_xml (
        jid  text NOT NULL,
        key  text NOT NULL,
        xml  text NOT NULL,
        PRIMARY KEY (jid, key)
      );

      -- XEP-0191; the JIDs are kept as the client sent them (they may be domains or full JIDs).
      CREATE TABLE blocklist (
        jid     text NOT NULL,
        blocked text NOT NULL,
        PRIMARY KEY (jid, blocked)
      );
    `,
  },
  {
    version: 2,
    name: "cluster membership",
    // src/cluster/membership/membership-store.ts: PostgreSQL arbitrates membership the Orleans
    // way. Every change locks the one `cluster` row FOR UPDATE, so changes are serialised and
    // `version` counts them. The one exception to "nothing describes one node": these tables
    // describe the cluster itself, and no user data refers to them.
    sql: `
      CREATE TABLE cluster (
        id          integer PRIMARY KEY CHECK (id = 1),
        version     bigint NOT NULL,      -- bumped by every membership or assignment change
        epoch       bigint NOT NULL,      -- bumped by every assignment change
        partitions  integer,              -- the ring spec, set by the first node to register
        hash        text,
        owner_nodes text[],               -- the assignment, NULL until the first one:
        owners      bytea                 -- a Uint16 LE index into owner_nodes per partition
      );
      INSERT INTO cluster (id, version, epoch) VALUES (1, 0, 0);

      CREATE TABLE members (
        node        text PRIMARY KEY,
        node_no     integer NOT NULL UNIQUE CHECK (node_no > 0),
        incarnation bigint NOT NULL,
        peer_addr   text NOT NULL,
        workers     integer NOT NULL,
        status      text NOT NULL CHECK (status IN ('joining', 'up', 'leaving', 'down')),
        lease_until bigint NOT NULL,      -- ms since the epoch, on the nodes' clocks
        suspicions  jsonb NOT NULL DEFAULT '{}', -- reporter node → ms of its latest suspicion
        updated_at  bigint NOT NULL
      );
    `,
  },
  {
    version: 3,
    name: "members report the epoch they have settled",
    // The coordinator commits the next assignment only once every serving member has applied
    // the current one and received the partitions it gained (cluster-member.ts), so that no
    // member ever skips an epoch. Older releases never write it: the coordinator stops
    // waiting for them after a bounded time.
    sql: `
      ALTER TABLE members ADD COLUMN settled_epoch bigint NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 4,
    name: "members report peers whose links went silent",
    // A link that goes silent is either a paused peer (judged by its lease) or a cut network
    // (the peer is alive and reports its own silent links): membership-store.ts reportSilence.
    sql: `
      ALTER TABLE members ADD COLUMN silenced_by jsonb NOT NULL DEFAULT '{}';
    `,
  },
  {
    version: 5,
    name: "members advertise the address clients reach them at",
    // A leaving node sends its clients to another member with <see-other-host/>.
    sql: `
      ALTER TABLE members ADD COLUMN client_addr text;
    `,
  },
  {
    version: 6,
    name: "members publish the fingerprint of their peer certificate",
    // Peer links are TLS; a dialler accepts only the certificate whose SHA-256 fingerprint the
    // dialled member's row pins (src/cluster/peer/peer-tls.ts). NULL: plain links, or an older
    // release, which neither writes nor reads it.
    sql: `
      ALTER TABLE members ADD COLUMN peer_cert_sha256 text;
    `,
  },
  {
    version: 7,
    name: "one-time login tokens",
    // Stored hashed (SHA-256 of the token); a DELETE … RETURNING consumes one exactly once.
    sql: `
      CREATE TABLE login_tokens (
        hash text PRIMARY KEY,
        jid text NOT NULL,
        expires_at bigint NOT NULL
      );
      CREATE INDEX login_tokens_expiry ON login_tokens (expires_at);
    `,
  },
  {
    version: 8,
    name: "members advertise the web address clients reach them at",
    // A leaving node sends its WebSocket and BOSH clients to another member's web listener
    // (RFC 7395 §3.6.1, XEP-0124 §17 see-other-uri), as it sends TCP clients to client_addr.
    sql: `
      ALTER TABLE members ADD COLUMN client_web text;
    `,
  },
]);

/**
 * The key of the transaction-level advisory lock that serialises migrations: two nodes starting
 * at once on an empty database would otherwise both try to create the same tables. Advisory
 * locks are per database, so two databases on one server never wait for each other.
 * ("STLNMIGR" in ASCII; the one-bigint form, a lock space apart from the per-user locks.)
 */
export const MIGRATION_LOCK_KEY = "6004508102379521874";

/** What {@link migrate} found and did. */
export interface MigrationResult {
  /** The versions this call applied, in order (empty when the schema was up to date). */
  applied: number[];
  /** The highest version recorded in the database after the call. */
  version: number;
}

/**
 * Brings the database up to {@link MIGRATIONS}' last version, in one transaction under
 * {@link MIGRATION_LOCK_KEY}: either every missing step is applied and recorded, or none is.
 * A database already at a newer version (a newer release ran first, during a rolling upgrade)
 * is left alone with a warning. Throws XSRV_STORE when a recorded step has another name than
 * ours, i.e. the history was edited.
 */
export async function migrate(
  client: pg.ClientBase,
  options: { log?: Logger | undefined; migrations?: readonly Migration[] } = {},
): Promise<MigrationResult> {
  const migrations = options.migrations ?? MIGRATIONS;
  for (const [index, migration] of migrations.entries()) {
    if (migration.version !== index + 1) {
      throw new RangeError(`Migration #${index} has version ${migration.version}, expected ${index + 1}`);
    }
  }
  await client.query("BEGIN");
  try {
    // The lock comes first: CREATE TABLE IF NOT EXISTS alone is not safe against a concurrent
    // creator (both may pass the check, and one then fails on the catalog's unique index).
    await client.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
    await client.query(`
      CREATE TABLE IF NOT EXISTS schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
    const { rows } = await client.query<{ version: number; name: string }>(
      "SELECT version, name FROM schema_migrations ORDER BY version",
    );
    const recorded = new Map(rows.map((row) => [row.version, row.name]));
    for (const migration of migrations) {
      const name = recorded.get(migration.version);
      if (name !== undefined && name !== migration.name) {
        throw new XmppServerError(
          "XSRV_STORE",
          `Cannot migrate the database: version ${migration.version} is recorded as "${name}", this release calls it "${migration.name}"`,
        );
      }
    }
    const applied: number[] = [];
    for (const migration of migrations) {
      if (recorded.has(migration.version)) continue;
      await client.query(migration.sql);
      await client.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [
        migration.version,
        migration.name,
      ]);
      applied.push(migration.version);
    }
    await client.query("COMMIT");
    const known = migrations.length;
    const version = Math.max(known, ...recorded.keys());
    if (version > known) {
      options.log?.warn(
        { version, known },
        "the database schema is newer than this release; running on it unchanged",
      );
    }
    if (applied.length > 0) options.log?.info({ applied, version }, "database schema migrated");
    return { applied, version };
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  }
}

/**
 * Brings a new pool's database up to date before anything uses it. On failure the pool is ended
 * and the error says what was being opened (`what`).
 */
export async function migratePool(pool: pg.Pool, log: Logger | undefined, what: string): Promise<void> {
  try {
    const client = await pool.connect();
    let broken: Error | undefined;
    try {
      await migrate(client, { log });
    } catch (error) {
      broken = error instanceof Error ? error : new Error(String(error));
      throw error;
    } finally {
      client.release(broken);
    }
  } catch (error) {
    await pool.end().catch(() => {});
    throw wrapStoreError(error, what);
  }
}
