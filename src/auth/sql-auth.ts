/**
 * The `sql` AuthProvider: the web site's own database holds its users, and Starling reads the
 * stored password hash with a query the operator writes, then checks the password against it
 * (password-hash.ts: bcrypt, argon2, PBKDF2, scrypt, phpass). Nothing is written to the site's
 * database and nothing of it is copied.
 *
 *   auth.sql.url            postgres://… (driver `pg`) or mysql://… / mariadb://… (driver `mysql2`)
 *   auth.sql.passwordQuery  SELECT user_pass FROM wp_users WHERE user_login = :user
 *   auth.sql.existsQuery    SELECT 1 FROM wp_users WHERE user_login = :user   (optional)
 *
 * `:user`, `:domain` and `:jid` are bound as parameters of a prepared statement (sql-query.ts),
 * never spliced into the text. The first column of the one row returned is the hash; no row (or
 * a NULL hash) is an unknown user, more than one row is refused as ambiguous.
 *
 * A database that is down, answers an error or takes longer than `timeoutMs` (connecting and
 * querying together) rejects with XSRV_AUTH_UNAVAILABLE: the client gets
 * `<temporary-auth-failure/>` at once and its password is not judged wrong. Each worker thread
 * holds at most `poolSize` connections. Only PLAIN is offered (no SCRAM keys exist for these
 * users), and only over TLS (docs/auth.md). Accounts are the site's: in-band registration and
 * password changes are refused.
 */
import { XmppServerError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { BareJid } from "../xmpp/jid.ts";
import type { ScramCredential } from "../xmpp/sasl/scram-credential.ts";
import { AnswerCache } from "./answer-cache.ts";
import type { AuthProvider } from "./auth-provider.ts";
import { verifyPasswordHash } from "./password-hash.ts";
import { type CompiledQuery, compileQuery, type SqlDialect, type SqlParameter } from "./sql-query.ts";

/** The `auth.sql` settings. */
export interface SqlAuthOptions {
  /** `postgres://` / `postgresql://`, or `mysql://` / `mariadb://`: the scheme picks the driver. */
  url: string;
  /** Returns the stored password hash in its first column; uses `:user` (or `:jid`), maybe `:domain`. */
  passwordQuery: string;
  /** Returns a row when the user exists; null: a row from `passwordQuery` means it does. */
  existsQuery: string | null;
  /** Connecting and querying together; past it the login fails with temporary-auth-failure. */
  timeoutMs: number;
  /** Connections this provider (one per worker thread) keeps at most. */
  poolSize: number;
  /** How long a confirmed password or user is remembered (0: ask every time). */
  cacheTtlMs: number;
  log: Logger;
  /** The clock, for the cache. */
  now?: () => number;
}

/** Runs one query and gives its rows as arrays of column values. */
interface SqlDriver {
  /** `signal` aborts at the deadline: a connection still busy then is not reused. */
  query(text: string, values: string[], signal: AbortSignal): Promise<unknown[][]>;
  close(): Promise<void>;
}

/**
 * A bcrypt hash of a random string, checked when the user is unknown, so that a login's
 * response time does not tell whether the account exists (as internal-auth.ts does).
 */
const UNKNOWN_USER_HASH = "$2b$10$hjTL3e075FqCDEZ6wk2ltOuClZHaPxfAQDKIhlfOGBJuLseeklP/S";

/** The dialect a URL's scheme selects, or undefined for any other scheme. */
export function sqlDialectOf(url: string): SqlDialect | undefined {
  if (/^postgres(ql)?:\/\//.test(url)) return "postgres";
  if (/^(mysql|mariadb):\/\//.test(url)) return "mysql";
  return undefined;
}

/** The URL without its user, password and options, for messages and logs. */
export function redactedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  } catch {
    return "(an unparseable URL)";
  }
}

/** Authenticates against the web site's user table. */
export class SqlAuthProvider implements AuthProvider {
  readonly scram = false;
  readonly managesAccounts = false;
  readonly #options: SqlAuthOptions;
  readonly #where: string;
  readonly #passwordQuery: CompiledQuery;
  readonly #existsQuery: CompiledQuery | undefined;
  readonly #cache: AnswerCache;
  #driver: Promise<SqlDriver> | undefined;

  /** Checks the queries' placeholders (TypeError when wrong); connects on first use. */
  constructor(options: SqlAuthOptions) {
    const dialect = sqlDialectOf(options.url);
    if (dialect === undefined) {
      throw new TypeError(
        `auth.sql.url must be a postgres:// or mysql:// URL, not ${redactedUrl(options.url)}`,
      );
    }
    this.#options = options;
    this.#where = redactedUrl(options.url);
    this.#passwordQuery = compileQuery(options.passwordQuery, dialect);
    this.#existsQuery = options.existsQuery === null ? undefined : compileQuery(options.existsQuery, dialect);
    this.#cache = new AnswerCache(options.cacheTtlMs, options.now);
  }

  /** The site's hashes cannot give SCRAM keys. */
  async getScramCredential(): Promise<ScramCredential | undefined> {
    return undefined;
  }

  /** Reads the user's stored hash and checks `password` against it. */
  async verifyPassword(jid: BareJid, password: string): Promise<boolean> {
    if (this.#cache.hasPassword(jid, password)) return true;
    const rows = await this.#run(this.#passwordQuery, jid);
    const stored = this.#hashIn(rows);
    if (stored === undefined) {
      await verifyPasswordHash(password, UNKNOWN_USER_HASH, this.#options.log);
      this.#cache.forgetPassword(jid);
      return false;
    }
    const ok = await verifyPasswordHash(password, stored, this.#options.log);
    if (ok) this.#cache.rememberPassword(jid, password);
    else this.#cache.forgetPassword(jid);
    return ok;
  }

  /** Whether the site has the user: a row from `existsQuery`, or a hash from `passwordQuery`. */
  async userExists(jid: BareJid): Promise<boolean> {
    if (this.#cache.hasUser(jid)) return true;
    const rows = await this.#run(this.#existsQuery ?? this.#passwordQuery, jid);
    const exists = this.#existsQuery === undefined ? this.#hashIn(rows) !== undefined : rows.length > 0;
    if (exists) this.#cache.rememberUser(jid);
    return exists;
  }

  /** Closes the connections (a graceful stop). */
  async close(): Promise<void> {
    const driver = this.#driver;
    this.#driver = undefined;
    await (await driver?.catch(() => undefined))?.close();
  }

  /** The hash in the first column of the only row, or undefined for no row or a NULL. */
  #hashIn(rows: unknown[][]): string | undefined {
    if (rows.length > 1) {
      this.#options.log.warn(
        { rows: rows.length },
        "auth.sql.passwordQuery returned more than one row for a user: taken as no such user (ambiguous)",
      );
      return undefined;
    }
    const value = rows[0]?.[0];
    if (value === undefined || value === null) return undefined;
    return Buffer.isBuffer(value) ? value.toString("utf8") : String(value);
  }

  /** Runs `query` for `jid` within `timeoutMs`; any failure is XSRV_AUTH_UNAVAILABLE. */
  async #run(query: CompiledQuery, jid: BareJid): Promise<unknown[][]> {
    const { timeoutMs } = this.#options;
    const at = jid.indexOf("@");
    const values: Record<SqlParameter, string> = { user: jid.slice(0, at), domain: jid.slice(at + 1), jid };
    const signal = AbortSignal.timeout(timeoutMs);
    // The drivers have their own connect and query timeouts (set to the same value); this one
    // bounds the whole, waiting for a pooled connection included, whatever the driver does.
    const deadline = new Promise<never>((_, reject) => {
      signal.addEventListener("abort", () => reject(new Error(`no answer within ${timeoutMs} ms`)), {
        once: true,
      });
    });
    try {
      const driver = await Promise.race([this.#connect(), deadline]);
      return await Promise.race([
        driver.query(
          query.text,
          query.parameters.map((name) => values[name]),
          signal,
        ),
        deadline,
      ]);
    } catch (error) {
      throw new XmppServerError(
        "XSRV_AUTH_UNAVAILABLE",
        `auth.sql.url ${this.#where}: ${(error as Error).message}`,
        { cause: error },
      );
    } finally {
      // Settle the deadline's listener so nothing waits on it (it rejects into the void otherwise).
      deadline.catch(() => {});
    }
  }

  #connect(): Promise<SqlDriver> {
    if (this.#driver === undefined) {
      this.#driver = openDriver(this.#options).catch((error: unknown) => {
        this.#driver = undefined;
        throw error;
      });
    }
    return this.#driver;
  }
}

/** Creates the pool for the URL's scheme (the driver module loads only when it is used). */
async function openDriver(options: SqlAuthOptions): Promise<SqlDriver> {
  const { url, timeoutMs, poolSize, log } = options;
  if (sqlDialectOf(url) === "postgres") {
    const { default: pg } = await import("pg");
    const pool = new pg.Pool({
      connectionString: url,
      max: poolSize,
      connectionTimeoutMillis: timeoutMs,
      // query_timeout ends the client's wait; statement_timeout makes the server stop the query.
      query_timeout: timeoutMs,
      statement_timeout: timeoutMs,
      idleTimeoutMillis: 30_000,
      application_name: "starling-auth",
    });
    // An idle connection that breaks (the server restarted) is dropped by the pool; without a
    // listener the 'error' event would end the process.
    pool.on("error", (error) =>
      log.warn({ code: (error as { code?: unknown }).code }, "auth.sql: an idle connection was lost"),
    );
    return {
      async query(text, values) {
        const result = await pool.query({ text, values, rowMode: "array" });
        return result.rows as unknown[][];
      },
      close: () => pool.end(),
    };
  }
  const { default: mysql } = await import("mysql2/promise");
  const pool = mysql.createPool({
    uri: url.replace(/^mariadb:/, "mysql:"),
    connectionLimit: poolSize,
    maxIdle: poolSize,
    idleTimeout: 30_000,
    // Requests waiting for a connection beyond this fail at once rather than pile up.
    queueLimit: poolSize * 64,
    connectTimeout: timeoutMs,
    enableKeepAlive: true,
    charset: "utf8mb4",
  });
  return {
    async query(text, values, signal) {
      const connection = await pool.getConnection();
      if (signal.aborted) {
        connection.release();
        throw new Error("no connection in time");
      }
      // A query that times out still runs, and its reply would come to whoever used the
      // connection next: such a connection is closed, never handed back to the pool.
      const drop = () => connection.destroy();
      signal.addEventListener("abort", drop, { once: true });
      try {
        // execute() is a server-side prepared statement: the values never enter the SQL text.
        const [rows] = await connection.execute({ sql: text, timeout: timeoutMs, rowsAsArray: true }, values);
        connection.release();
        return rows as unknown[][];
      } catch (error) {
        connection.destroy();
        throw error;
      } finally {
        signal.removeEventListener("abort", drop);
      }
    },
    close: () => pool.end(),
  };
}
