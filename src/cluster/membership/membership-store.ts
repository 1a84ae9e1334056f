/**
 * Cluster membership with PostgreSQL as the arbiter (CLUSTER.md, "Membership"; Orleans'
 * membership table): a one-row `cluster` table holds the view version, the assignment epoch,
 * the ring spec and the partition assignment; `members` holds one row per node name.
 *
 * Every change is one transaction that first locks the `cluster` row (`SELECT … FOR UPDATE`),
 * so changes from all nodes are serialised; it then modifies, bumps `version` and sends
 * `pg_notify('starling_cluster', version)`, which PostgreSQL delivers on commit. A change that
 * loses a race therefore sees the winner's result, and {@link MembershipStore.commitAssignment}
 * is a compare-and-set on `version`. There is no consensus code here: correctness rests on
 * PostgreSQL's row lock and transactions.
 *
 * Time: leases and suspicions are stamped and compared with the *calling* node's `Date.now()`.
 * This assumes the nodes' clocks agree (NTP) to well within the takeover margin given to
 * {@link MembershipStore.expireLeases}: a node whose clock runs ahead by more than that margin
 * would declare its peers down early. The epoch fencing (CLUSTER.md) keeps such a mistake safe;
 * it only costs an unneeded takeover.
 *
 * @module
 */
import pg from "pg";
import { XmppServerError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { ManagedPool } from "../../storage/postgres/managed-pool.ts";
import { wrapStoreError } from "../../storage/store-error.ts";
import type { Assignment } from "./assignment.ts";

/** A member's lifecycle: joining → up → leaving → down; "down" is final for an incarnation. */
export type MemberStatus = "joining" | "up" | "leaving" | "down";

/** One node's row. */
export interface Member {
  node: string;
  /** Small and stable per node name (1, 2, 3…), given at its first registration. */
  nodeNo: number;
  /** Which process holds the name (its start time); a restart registers a new one. */
  incarnation: number;
  peerAddr: string;
  workers: number;
  status: MemberStatus;
  /** ms since the epoch, on the renewing node's clock. */
  leaseUntil: number;
  /** reporter node → ms of its latest suspicion of this incarnation. */
  suspicions: Record<string, number>;
  /** reporter node → ms of its latest report that its link to this incarnation went silent. */
  silencedBy: Record<string, number>;
  /** "host:port" where clients reach this node (absent until it serves, or when not known). */
  clientAddr?: string;
  /** `https://host:port` of its client web listener (absent until it serves, or when not known). */
  clientWeb?: string;
  /**
   * SHA-256 fingerprint (`AB:CD:…`) of the certificate its peer server presents: dialling
   * members accept no other (absent with plain links, or from an older release).
   */
  peerCertSha256?: string;
  /**
   * The latest epoch this incarnation has applied with every partition it gained received
   * (see {@link MembershipStore.reportSettled}); 0 before its first report.
   */
  settledEpoch: number;
}

/** One consistent snapshot of the cluster (read in one statement). */
export interface ClusterView {
  /** Bumped by every change, assignments included. 0 on a new database. */
  version: number;
  /** Bumped by every assignment change. 0 until the first assignment. */
  epoch: number;
  /** The ring spec; 0 and "" until the first node registers. */
  partitions: number;
  hash: string;
  /** Sorted by node name (JavaScript's default order). */
  members: Member[];
  /** null until the first {@link MembershipStore.commitAssignment}. */
  assignment: Assignment | null;
}

/** What every node of one cluster must agree on: a key's partition depends on both. */
export interface RingSpec {
  partitions: number;
  hash: string;
}

/** Options for {@link MembershipStore}. */
export interface MembershipStoreOptions {
  /** The PostgreSQL URL (the same database as the store's). */
  url: string;
  log: Logger;
  /** Connections in the pool, besides one per {@link MembershipStore.onChange} listener. Default 3. */
  poolSize?: number;
  /**
   * A call not answered this long fails (default 2000). A paused or unreachable PostgreSQL
   * holds its TCP connections open without answering: without this bound a lease renewal would
   * hang instead of telling the member that the arbiter is away.
   */
  queryTimeoutMs?: number;
}

/** The NOTIFY channel; the payload is the new `cluster.version` in decimal. */
export const CLUSTER_CHANNEL = "starling_cluster";

/** Suspicions older than this no longer count towards declaring a node down. */
export const SUSPICION_WINDOW_MS = 60_000;

/** Reconnection delays of an {@link MembershipStore.onChange} listener: doubling, capped. */
const LISTEN_RETRY_FIRST_MS = 100;
const LISTEN_RETRY_MAX_MS = 5_000;

const STATUSES: ReadonlySet<string> = new Set<MemberStatus>(["joining", "up", "leaving", "down"]);

/** The cluster row as locked at the start of a change. */
interface ClusterRow {
  version: number;
  epoch: number;
  partitions: number | null;
  hash: string | null;
}

interface MemberRow {
  node: string;
  node_no: number;
  incarnation: string;
  status: MemberStatus;
  lease_until: string;
  suspicions: Record<string, number>;
}

/**
 * The whole view in one statement, so it is one snapshot even outside a transaction. Inside a
 * change it also sees the change's own writes.
 */
const VIEW_SQL = `
  SELECT c.version, c.epoch, c.partitions, c.hash, c.owner_nodes, c.owners,
    COALESCE((SELECT json_agg(json_build_object(
        'node', m.node, 'nodeNo', m.node_no, 'incarnation', m.incarnation,
        'peerAddr', m.peer_addr, 'workers', m.workers, 'status', m.status,
        'leaseUntil', m.lease_until, 'suspicions', m.suspicions, 'settledEpoch', m.settled_epoch,
        'silencedBy', m.silenced_by, 'clientAddr', m.client_addr, 'clientWeb', m.client_web,
        'peerCertSha256', m.peer_cert_sha256))
      FROM members m), '[]'::json) AS members
  FROM cluster c WHERE c.id = 1`;

interface ViewRow {
  version: string;
  epoch: string;
  partitions: number | null;
  hash: string | null;
  owner_nodes: string[] | null;
  owners: Buffer | null;
  members: Member[];
}

function viewFromRow(row: ViewRow | undefined): ClusterView {
  if (row === undefined) {
    // The migration inserts the row and nothing deletes it: someone edited the database.
    throw new XmppServerError("XSRV_STORE", "The cluster row (cluster.id = 1) is missing");
  }
  const members = row.members.map(({ clientAddr, clientWeb, peerCertSha256, ...m }) => ({
    ...m,
    suspicions: { ...m.suspicions },
    silencedBy: { ...m.silencedBy },
    // NULL in the table is an absent field here.
    ...(clientAddr === null || clientAddr === undefined ? {} : { clientAddr }),
    ...(clientWeb === null || clientWeb === undefined ? {} : { clientWeb }),
    ...(peerCertSha256 === null || peerCertSha256 === undefined ? {} : { peerCertSha256 }),
  }));
  members.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  return {
    version: Number(row.version),
    epoch: Number(row.epoch),
    partitions: row.partitions ?? 0,
    hash: row.hash ?? "",
    members,
    assignment:
      row.owner_nodes === null || row.owners === null
        ? null
        : { nodes: row.owner_nodes, owners: decodeOwners(row.owners) },
  };
}

/** Uint16 little-endian per partition, whatever the machine's byte order. */
function encodeOwners(owners: Uint16Array): Buffer {
  const bytes = Buffer.alloc(owners.length * 2);
  for (const [p, owner] of owners.entries()) bytes.writeUInt16LE(owner, p * 2);
  return bytes;
}

function decodeOwners(bytes: Buffer): Uint16Array {
  const owners = new Uint16Array(bytes.length >> 1);
  for (let p = 0; p < owners.length; p++) owners[p] = bytes.readUInt16LE(p * 2);
  return owners;
}

function checkName(what: string, value: string): void {
  // PostgreSQL text cannot hold NUL.
  if (typeof value !== "string" || value.length === 0 || value.includes("\u0000")) {
    throw new TypeError(`Invalid ${what} ${JSON.stringify(value)}`);
  }
}

function checkInteger(what: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RangeError(`${what} must be an integer ≥ ${min}, got ${value}`);
  }
}

function checkStatus(status: MemberStatus): void {
  if (!STATUSES.has(status)) throw new TypeError(`Invalid member status ${JSON.stringify(status)}`);
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

/** What a change hands to its body. */
interface Change {
  client: pg.PoolClient;
  /** The cluster row, locked until the transaction ends. */
  cluster: ClusterRow;
  /** One timestamp for the whole change. */
  now: number;
  /** Bumps the version and queues the notification (sent on commit); returns the view after. */
  bump(): Promise<ClusterView>;
  /** The view as this transaction sees it (for a body that changes nothing). */
  view(): Promise<ClusterView>;
}

/**
 * The membership table of one cluster, shared by all its nodes through PostgreSQL. Failures of
 * the database are XSRV_STORE errors with the pg error as `cause`; bad arguments are TypeError
 * or RangeError.
 *
 * @example
 * const membership = new MembershipStore({ url, log });
 * await membership.open();
 * const unsubscribe = await membership.onChange((version) => refresh(version));
 * await membership.register({ node: "n1", incarnation: Date.now(), peerAddr, workers: 2 },
 *   { partitions: 4096, hash: "sha1-64" }, 10_000);
 */
export class MembershipStore {
  /** The server and database, without credentials. */
  readonly location: string;
  #url: string;
  #log: Logger;
  readonly #db: ManagedPool;
  #listeners = new Set<() => Promise<void>>();

  constructor(options: MembershipStoreOptions) {
    if (typeof options.url !== "string" || options.url.length === 0) {
      throw new TypeError("The PostgreSQL URL must be a non-empty string");
    }
    const poolSize = options.poolSize ?? 3;
    checkInteger("poolSize", poolSize, 1);
    const queryTimeoutMs = options.queryTimeoutMs ?? 2_000;
    checkInteger("queryTimeoutMs", queryTimeoutMs, 1);
    this.#url = options.url;
    this.location = describeUrl(options.url);
    this.#log = options.log;
    this.#db = new ManagedPool({
      config: {
        connectionString: options.url,
        max: poolSize,
        connectionTimeoutMillis: 10_000,
        // Client-side: a query past it is failed and its connection discarded by the pool.
        query_timeout: queryTimeoutMs,
        idleTimeoutMillis: 30_000,
        application_name: "starling-membership",
      },
      name: "membership store",
      location: this.location,
      log: options.log,
    });
  }

  /** Connects and runs the schema migrations (so the tables exist); idempotent. */
  open(): Promise<void> {
    return this.#db.open();
  }

  /** Stops every {@link onChange} listener, waits for the calls in progress, disconnects. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#listeners].map((unsubscribe) => unsubscribe()));
    await this.#db.close();
  }

  /** Runs one call: checks the store is open, tracks it for close(), wraps pg's errors. */
  #run<T>(what: string, fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
    return this.#db.run(what, fn);
  }

  /**
   * One membership change: locks the cluster row, then runs `body`, which calls `bump()` after
   * changing something. A throw rolls everything back.
   */
  #change<T>(what: string, body: (change: Change) => Promise<T>): Promise<T> {
    return this.#run(what, async (pool) => {
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        await client.query("BEGIN");
        const { rows } = await client.query<{
          version: string;
          epoch: string;
          partitions: number | null;
          hash: string | null;
        }>("SELECT version, epoch, partitions, hash FROM cluster WHERE id = 1 FOR UPDATE");
        const row = rows[0];
        if (row === undefined) throw new XmppServerError("XSRV_STORE", "The cluster row is missing");
        const cluster = { ...row, version: Number(row.version), epoch: Number(row.epoch) };
        const bump = async () => {
          // In RETURNING, `version` is the new value.
          await client.query(
            "UPDATE cluster SET version = version + 1 WHERE id = 1 RETURNING pg_notify($1, version::text)",
            [CLUSTER_CHANNEL],
          );
          return this.#view(client);
        };
        const view = () => this.#view(client);
        const value = await body({ client, cluster, now: Date.now(), bump, view });
        await client.query("COMMIT");
        return value;
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

  async #view(client: pg.ClientBase | pg.Pool): Promise<ClusterView> {
    const { rows } = await (client as pg.ClientBase).query<ViewRow>(VIEW_SQL);
    return viewFromRow(rows[0]);
  }

  /**
   * After an UPDATE of one member's row: bumps the version when it changed the row (true), else
   * tells whether (node, incarnation) is still a live member (true) or not (false).
   */
  async #changedOrLive(
    client: pg.ClientBase,
    bump: () => Promise<ClusterView>,
    node: string,
    incarnation: number,
    rowCount: number | null,
  ): Promise<boolean> {
    if (rowCount === 1) {
      await bump();
      return true;
    }
    const existing = await this.#member(client, node);
    return (
      existing !== undefined && Number(existing.incarnation) === incarnation && existing.status !== "down"
    );
  }

  async #member(client: pg.ClientBase, node: string): Promise<MemberRow | undefined> {
    const { rows } = await client.query<MemberRow>(
      "SELECT node, node_no, incarnation, status, lease_until, suspicions FROM members WHERE node = $1",
      [node],
    );
    return rows[0];
  }

  /** The current view. */
  read(): Promise<ClusterView> {
    return this.#run("read the cluster view", (pool) => this.#view(pool));
  }

  /**
   * Adds the node as "joining" with a lease of `leaseMs`, or replaces its previous incarnation
   * (keeping its node number). The first node ever sets the cluster's ring spec; another spec
   * fails with XSRV_CLUSTER_INCOMPATIBLE. The name held by another incarnation that is not
   * "down" and whose lease is still valid fails with XSRV_CLUSTER_NAME_TAKEN; a row already
   * holding a newer incarnation, or this very incarnation marked "down", fails with
   * XSRV_CLUSTER_STALE. Registering the same live incarnation again (a retry) refreshes its
   * address, workers, certificate fingerprint and lease and keeps its status.
   */
  register(
    member: {
      node: string;
      incarnation: number;
      peerAddr: string;
      workers: number;
      /** The fingerprint its peer certificate has (omitted: plain links). */
      peerCertSha256?: string | undefined;
    },
    ring: RingSpec,
    leaseMs: number,
  ): Promise<ClusterView> {
    const { node, incarnation, peerAddr, workers } = member;
    const certSha256 = member.peerCertSha256 ?? null;
    checkName("node name", node);
    checkName("peer address", peerAddr);
    checkInteger("incarnation", incarnation, 0);
    checkInteger("workers", workers, 1);
    checkInteger("partitions", ring.partitions, 1);
    checkName("ring hash", ring.hash);
    checkInteger("leaseMs", leaseMs, 1);
    return this.#change(`register node "${node}"`, async ({ client, cluster, now, bump }) => {
      if (cluster.partitions === null) {
        await client.query("UPDATE cluster SET partitions = $1, hash = $2 WHERE id = 1", [
          ring.partitions,
          ring.hash,
        ]);
      } else if (cluster.partitions !== ring.partitions || cluster.hash !== ring.hash) {
        throw new XmppServerError(
          "XSRV_CLUSTER_INCOMPATIBLE",
          `Cannot register node "${node}": its ring is ${ring.partitions} partitions hashed with "${ring.hash}", the cluster's is ${cluster.partitions} partitions hashed with "${cluster.hash}"`,
        );
      }
      const leaseUntil = now + leaseMs;
      const existing = await this.#member(client, node);
      if (existing === undefined) {
        // The smallest number no row holds: numbers stay small, and none is reused while its
        // row exists (the cluster row lock serialises concurrent registrations).
        await client.query(
          `INSERT INTO members (node, node_no, incarnation, peer_addr, workers, status, lease_until, suspicions, updated_at, peer_cert_sha256)
           SELECT $1, n, $2, $3, $4, 'joining', $5, '{}', $6, $7
           FROM generate_series(1, (SELECT count(*)::integer + 1 FROM members)) AS n
           WHERE NOT EXISTS (SELECT 1 FROM members WHERE node_no = n)
           ORDER BY n LIMIT 1`,
          [node, incarnation, peerAddr, workers, leaseUntil, now, certSha256],
        );
        return bump();
      }
      const held = Number(existing.incarnation);
      if (held === incarnation) {
        if (existing.status === "down") {
          throw new XmppServerError(
            "XSRV_CLUSTER_STALE",
            `Cannot register node "${node}": incarnation ${incarnation} was declared down`,
          );
        }
        await client.query(
          "UPDATE members SET peer_addr = $2, workers = $3, lease_until = GREATEST(lease_until, $4), updated_at = $5, peer_cert_sha256 = $6 WHERE node = $1",
          [node, peerAddr, workers, leaseUntil, now, certSha256],
        );
        return bump();
      }
      if (existing.status !== "down" && Number(existing.lease_until) >= now) {
        throw new XmppServerError(
          "XSRV_CLUSTER_NAME_TAKEN",
          `Cannot register node "${node}": incarnation ${held} holds the name (${existing.status}, leased until ${new Date(Number(existing.lease_until)).toISOString()})`,
        );
      }
      if (held > incarnation) {
        throw new XmppServerError(
          "XSRV_CLUSTER_STALE",
          `Cannot register node "${node}" as incarnation ${incarnation}: a newer one (${held}) registered`,
        );
      }
      await client.query(
        `UPDATE members SET incarnation = $2, peer_addr = $3, workers = $4, status = 'joining',
           lease_until = $5, suspicions = '{}', settled_epoch = 0, silenced_by = '{}', updated_at = $6,
           peer_cert_sha256 = $7 WHERE node = $1`,
        [node, incarnation, peerAddr, workers, leaseUntil, now, certSha256],
      );
      this.#log.info(
        { node, incarnation, previous: held, previousStatus: existing.status },
        "membership: node name taken over by a new incarnation",
      );
      return bump();
    });
  }

  /**
   * Sets the status of (node, incarnation). Fails with XSRV_CLUSTER_STALE when the row holds
   * another incarnation, is gone, or is already "down": a node never revives itself. Setting
   * the status it already has changes nothing (no version bump).
   */
  setStatus(node: string, incarnation: number, status: MemberStatus): Promise<ClusterView> {
    checkName("node name", node);
    checkInteger("incarnation", incarnation, 0);
    checkStatus(status);
    return this.#change(`set node "${node}" ${status}`, async ({ client, now, bump, view }) => {
      const existing = await this.#member(client, node);
      if (
        existing === undefined ||
        Number(existing.incarnation) !== incarnation ||
        existing.status === "down"
      ) {
        const holder =
          existing === undefined ? "no row" : `incarnation ${existing.incarnation} (${existing.status})`;
        throw new XmppServerError(
          "XSRV_CLUSTER_STALE",
          `Cannot set node "${node}" incarnation ${incarnation} ${status}: the table holds ${holder}`,
        );
      }
      if (existing.status === status) return view();
      await client.query("UPDATE members SET status = $2, updated_at = $3 WHERE node = $1", [
        node,
        status,
        now,
      ]);
      return bump();
    });
  }

  /**
   * Extends the lease to now + `leaseMs` (never shortens it). `ok` is false, and nothing
   * changes, when the row is "down", gone or holds another incarnation: the caller must then
   * fence itself. Frequent, so it does not bump the version nor lock the cluster row: the
   * member row's own lock orders it against {@link expireLeases} and {@link suspect}, which
   * re-check the row after waiting for it.
   */
  renewLease(
    node: string,
    incarnation: number,
    leaseMs: number,
  ): Promise<{ ok: boolean; view: ClusterView }> {
    checkName("node name", node);
    checkInteger("incarnation", incarnation, 0);
    checkInteger("leaseMs", leaseMs, 1);
    return this.#run(`renew the lease of node "${node}"`, async (pool) => {
      const now = Date.now();
      const { rowCount } = await pool.query(
        `UPDATE members SET lease_until = GREATEST(lease_until, $3), updated_at = $4
         WHERE node = $1 AND incarnation = $2 AND status <> 'down'`,
        [node, incarnation, now + leaseMs, now],
      );
      return { ok: rowCount === 1, view: await this.#view(pool) };
    });
  }

  /**
   * Records where clients reach (node, incarnation): "host:port", and `https://host:port` of its
   * web listener when known. Bumps the version when it changes. Returns false, changing nothing,
   * for another incarnation or a member that is down.
   */
  advertise(node: string, incarnation: number, clientAddr: string, clientWeb?: string): Promise<boolean> {
    checkName("node name", node);
    checkInteger("incarnation", incarnation, 0);
    checkName("client address", clientAddr);
    if (clientWeb !== undefined) checkName("client web address", clientWeb);
    const web = clientWeb ?? null;
    return this.#change(`record where clients reach node "${node}"`, async ({ client, now, bump }) => {
      const { rowCount } = await client.query(
        `UPDATE members SET client_addr = $3, client_web = $5, updated_at = $4
         WHERE node = $1 AND incarnation = $2 AND status <> 'down'
           AND (client_addr IS DISTINCT FROM $3 OR client_web IS DISTINCT FROM $5)`,
        [node, incarnation, clientAddr, now, web],
      );
      return this.#changedOrLive(client, bump, node, incarnation, rowCount);
    });
  }

  /**
   * Records that (node, incarnation) has applied assignment `epoch` and received every partition
   * it gained with it (or given up waiting). Only ever raises the recorded epoch; bumps the
   * version (and notifies) when it does, so the coordinator can commit the next assignment.
   * Returns false, changing nothing, when the row holds another incarnation or is "down".
   */
  reportSettled(node: string, incarnation: number, epoch: number): Promise<boolean> {
    checkName("node name", node);
    checkInteger("incarnation", incarnation, 0);
    checkInteger("epoch", epoch, 0);
    return this.#change(`record node "${node}" settled at epoch ${epoch}`, async ({ client, now, bump }) => {
      const { rowCount } = await client.query(
        `UPDATE members SET settled_epoch = $3, updated_at = $4
         WHERE node = $1 AND incarnation = $2 AND status <> 'down' AND settled_epoch < $3`,
        [node, incarnation, epoch, now],
      );
      return this.#changedOrLive(client, bump, node, incarnation, rowCount);
    });
  }

  /**
   * Records that `reporter` suspects (node, incarnation). When the suspicions of the last
   * {@link SUSPICION_WINDOW_MS} (older ones are dropped) reach `votesNeeded`, the member is
   * marked "down". A stale incarnation, a missing row or a member already "down" is ignored
   * (the view is returned unchanged).
   */
  suspect(reporter: string, node: string, incarnation: number, votesNeeded: number): Promise<ClusterView> {
    checkName("reporter", reporter);
    checkName("node name", node);
    checkInteger("incarnation", incarnation, 0);
    checkInteger("votesNeeded", votesNeeded, 1);
    return this.#change(`record "${reporter}" suspecting "${node}"`, async ({ client, now, bump, view }) => {
      const existing = await this.#member(client, node);
      if (
        existing === undefined ||
        Number(existing.incarnation) !== incarnation ||
        existing.status === "down"
      ) {
        return view();
      }
      const suspicions: Record<string, number> = {};
      for (const [who, at] of Object.entries(existing.suspicions)) {
        if (at >= now - SUSPICION_WINDOW_MS) suspicions[who] = at;
      }
      suspicions[reporter] = now;
      const votes = Object.keys(suspicions).length;
      const down = votes >= votesNeeded;
      await client.query(
        `UPDATE members SET suspicions = $2::jsonb, updated_at = $3,
           status = CASE WHEN $4 THEN 'down' ELSE status END WHERE node = $1`,
        [node, JSON.stringify(suspicions), now, down],
      );
      if (down) {
        this.#log.info(
          { node, incarnation, reporters: Object.keys(suspicions) },
          "membership: node voted down",
        );
      }
      return bump();
    });
  }

  /**
   * Records that `reporter`'s peer link to (node, incarnation) went silent (pings unanswered),
   * and decides whether that silence is a cut network. A silent peer may be paused, and a paused
   * process could still wake and write: silence alone is left to its lease (see
   * {@link expireLeases}). But a member that itself reports silent links is alive: when the
   * live members reporting it within {@link SUSPICION_WINDOW_MS} reach `votesNeeded`, it is on
   * the side of the cut that cannot reach enough peers, and is marked "down" (it fences itself
   * when it learns so). In one change at most one member goes down (the reported one first,
   * else the reporter), and a member that is down reports nothing and counts for nothing: of
   * two nodes cut from each other, exactly one survives. Returns the members marked down.
   */
  reportSilence(reporter: string, node: string, incarnation: number, votesNeeded: number): Promise<string[]> {
    checkName("reporter", reporter);
    checkName("node name", node);
    checkInteger("incarnation", incarnation, 0);
    checkInteger("votesNeeded", votesNeeded, 1);
    return this.#change(
      `record "${reporter}" losing its link to "${node}"`,
      async ({ client, now, bump }) => {
        const { rows } = await client.query<{
          node: string;
          incarnation: string;
          status: MemberStatus;
          silenced_by: Record<string, number>;
        }>("SELECT node, incarnation, status, silenced_by FROM members");
        const byName = new Map(rows.map((r) => [r.node, r]));
        const live = (name: string) => {
          const row = byName.get(name);
          return row !== undefined && row.status !== "down";
        };
        const target = byName.get(node);
        if (
          !live(reporter) ||
          target === undefined ||
          !live(node) ||
          Number(target.incarnation) !== incarnation
        ) {
          return [];
        }
        const since = now - SUSPICION_WINDOW_MS;
        const silencedBy: Record<string, number> = {};
        for (const [who, at] of Object.entries(target.silenced_by)) if (at >= since) silencedBy[who] = at;
        silencedBy[reporter] = now;
        target.silenced_by = silencedBy;
        await client.query("UPDATE members SET silenced_by = $2::jsonb, updated_at = $3 WHERE node = $1", [
          node,
          JSON.stringify(silencedBy),
          now,
        ]);
        const votes = (name: string) =>
          Object.entries(byName.get(name)!.silenced_by).filter(([who, at]) => at >= since && live(who))
            .length;
        /** Alive: it reported a silent link of its own within the window. */
        const reports = (name: string) =>
          rows.some((r) => r.node !== name && (r.silenced_by[name] ?? 0) >= since);
        const down = [node, reporter].find((name) => votes(name) >= votesNeeded && reports(name));
        if (down !== undefined) {
          await client.query("UPDATE members SET status = 'down', updated_at = $2 WHERE node = $1", [
            down,
            now,
          ]);
          this.#log.info({ node: down, reporter }, "membership: node cut off from the others; marked down");
        }
        await bump();
        return down === undefined ? [] : [down];
      },
    );
  }

  /**
   * Marks "down" every member not yet "down" whose lease ended more than `marginMs` ago (on
   * this node's clock; see the module comment), except the members named in `spare` (the
   * caller itself, and those it has live evidence of). Returns the names marked, sorted.
   */
  expireLeases(marginMs: number, spare: readonly string[] = []): Promise<string[]> {
    checkInteger("marginMs", marginMs, 0);
    for (const node of spare) checkName("node name", node);
    return this.#change("expire membership leases", async ({ client, now, bump }) => {
      const { rows } = await client.query<{ node: string }>(
        `UPDATE members SET status = 'down', updated_at = $1
         WHERE status <> 'down' AND lease_until < $2 AND NOT (node = ANY($3::text[])) RETURNING node`,
        [now, now - marginMs, [...spare]],
      );
      const nodes = rows.map((row) => row.node).sort();
      if (nodes.length > 0) {
        await bump();
        this.#log.info({ nodes }, "membership: leases expired, nodes marked down");
      }
      return nodes;
    });
  }

  /**
   * Writes `assignment` as epoch + 1 when `cluster.version` still equals `expectedVersion`
   * (compare-and-set; it bumps the version too). Returns the new view, or null when the view
   * moved on. Throws RangeError when the assignment does not fit the cluster's ring.
   */
  commitAssignment(expectedVersion: number, assignment: Assignment): Promise<ClusterView | null> {
    checkInteger("expectedVersion", expectedVersion, 0);
    const { nodes, owners } = assignment;
    for (const node of nodes) checkName("node name", node);
    if (new Set(nodes).size !== nodes.length) throw new RangeError("The assignment lists a node twice");
    for (const owner of owners) {
      if (owner >= nodes.length) {
        throw new RangeError(`The assignment names node #${owner} of ${nodes.length}`);
      }
    }
    return this.#change("commit a partition assignment", async ({ client, cluster, bump }) => {
      if (cluster.version !== expectedVersion) return null;
      if (cluster.partitions !== owners.length) {
        throw new RangeError(
          `The assignment has ${owners.length} partitions, the cluster ${cluster.partitions ?? "none yet"}`,
        );
      }
      await client.query("UPDATE cluster SET epoch = epoch + 1, owner_nodes = $1, owners = $2 WHERE id = 1", [
        nodes,
        encodeOwners(owners),
      ]);
      return bump();
    });
  }

  /** Deletes the rows of "down" members (housekeeping); returns how many. */
  forgetDown(): Promise<number> {
    return this.#change("forget down members", async ({ client, bump }) => {
      const { rowCount } = await client.query("DELETE FROM members WHERE status = 'down'");
      const count = rowCount ?? 0;
      if (count > 0) await bump();
      return count;
    });
  }

  /**
   * Calls `listener` with the new version after each committed change, in commit order, from a
   * dedicated connection that LISTENs on {@link CLUSTER_CHANNEL}. When that connection drops,
   * it reconnects (100 ms doubling to 5 s) and then calls `listener` once with the current
   * version, since changes in the gap were not heard. Rejects when the first connection fails.
   * Returns the unsubscribe function; {@link close} unsubscribes every listener.
   */
  async onChange(listener: (version: number) => void): Promise<() => Promise<void>> {
    if (!this.#db.isOpen) {
      throw new XmppServerError("XSRV_STORE", "Cannot listen for membership changes: the store is not open");
    }
    let client: pg.Client | undefined;
    let stopped = false;
    let retryMs = LISTEN_RETRY_FIRST_MS;
    let timer: NodeJS.Timeout | undefined;

    const deliver = (version: number) => {
      try {
        listener(version);
      } catch (error) {
        this.#log.error({ err: error }, "membership change listener threw");
      }
    };
    const connect = async (): Promise<void> => {
      const next = new pg.Client({
        connectionString: this.#url,
        application_name: "starling-membership-listen",
      });
      next.on("notification", (message) => {
        if (message.channel === CLUSTER_CHANNEL && message.payload !== undefined)
          deliver(Number(message.payload));
      });
      // A dropped connection emits "error" (then "end"), or only "end": handle it once.
      // Only a connection that was fully set up (it is `client`) is reconnected here; a failure
      // while setting up is the caller's to handle.
      let lost = false;
      const onLost = (error?: Error) => {
        if (lost || stopped || client !== next) return;
        lost = true;
        client = undefined;
        this.#log.warn({ err: error, location: this.location }, "membership listener lost its connection");
        next.end().catch(() => {});
        scheduleReconnect();
      };
      next.on("error", onLost);
      next.on("end", () => onLost());
      try {
        await next.connect();
        await next.query(`LISTEN ${CLUSTER_CHANNEL}`);
      } catch (error) {
        lost = true;
        await next.end().catch(() => {});
        throw error;
      }
      client = next;
    };
    const scheduleReconnect = () => {
      timer = setTimeout(async () => {
        timer = undefined;
        if (stopped) return;
        try {
          await connect();
        } catch (error) {
          this.#log.warn({ err: error, retryMs }, "membership listener could not reconnect");
          retryMs = Math.min(retryMs * 2, LISTEN_RETRY_MAX_MS);
          if (!stopped) scheduleReconnect();
          return;
        }
        if (stopped) {
          await client?.end().catch(() => {});
          return;
        }
        retryMs = LISTEN_RETRY_FIRST_MS;
        this.#log.info({ location: this.location }, "membership listener reconnected");
        try {
          const { rows } = await client!.query<{ version: string }>(
            "SELECT version FROM cluster WHERE id = 1",
          );
          if (rows[0] !== undefined) deliver(Number(rows[0].version));
        } catch (error) {
          // The new connection died already: its loss handler reconnects again.
          this.#log.warn({ err: error }, "membership listener could not read the version after reconnecting");
        }
      }, retryMs);
    };

    try {
      await connect();
    } catch (error) {
      throw wrapStoreError(error, `listen for membership changes at "${this.location}"`);
    }
    const unsubscribe = async () => {
      if (stopped) return;
      stopped = true;
      this.#listeners.delete(unsubscribe);
      clearTimeout(timer);
      const current = client;
      client = undefined;
      await current?.end().catch(() => {});
    };
    this.#listeners.add(unsubscribe);
    return unsubscribe;
  }
}
