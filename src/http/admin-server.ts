/**
 * The node's local admin endpoint: a small JSON API over `node:http`, bound to loopback only,
 * used by `starling user …` while the node runs and by benchmarks to create accounts in bulk.
 *
 * Routes:
 * - `GET /admin/status` → whatever the node's `status()` returns
 * - `GET /metrics` → the Prometheus text format (metrics.ts), every worker's figures
 * - `GET /health` → 200 `{ "status": "up" }` while the node serves, 503 with its state otherwise
 * - `GET /admin/users` → `{ users: [jid, …] }`
 * - `POST /admin/users` `{ jid, password }` → 201 `{ jid }`; 409 when it exists
 * - `POST /admin/users/bulk` `{ users: [{ jid, password }, …] }` → `{ created, existing }`
 * - `PUT /admin/users/:jid/password` `{ password }` → 204; 404 when absent
 * - `DELETE /admin/users/:jid` → 204; 404 when absent
 * - `DELETE /admin/sessions/:jid` → 200 `{ jid, ended }`: every session of the user ends with
 *   `<policy-violation/>` ("signed out"), none resumable (a site's logout)
 * - `POST /admin/tokens` `{ jid, ttlSeconds? }` → 201 `{ jid, token, expiresAt }`: a one-time
 *   login token (PLAIN password) for the user, valid 60 s by default
 *
 * Every error is a 4xx/5xx with `{ "error": { "code", "message" } }`, `code` being an `XSRV_*`
 * code from `errors.ts`.
 */
import { once } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { isIP } from "node:net";
import { DEFAULT_TOKEN_TTL_S, issueLoginToken, MAX_TOKEN_TTL_S } from "../auth/login-tokens.ts";
import { createAccountRecordAsync } from "../auth/scram.ts";
import { type ErrorCode, ErrorCodes, XmppServerError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../storage/store.ts";
import { type BareJid, normalizeDomain, parseUserJid } from "../xmpp/jid.ts";
import { METRICS_CONTENT_TYPE, type MetricFamily, renderMetrics } from "./metrics.ts";

/** Largest request body accepted; a larger one gets 413. */
export const MAX_ADMIN_BODY_BYTES = 1_048_576;
/** Most accounts one `POST /admin/users/bulk` may create. */
export const MAX_BULK_USERS = 10_000;
/** Longest password accepted, in UTF-8 bytes. */
export const MAX_PASSWORD_BYTES = 4096;
/** Response header naming the domain the node serves; the CLI checks it to know it reached the right node. */
export const DOMAIN_HEADER = "x-starling-domain";
/** How long `close()` lets in-flight requests finish before cutting their connections. */
const CLOSE_GRACE_MS = 10_000;

/** Options for {@link startAdminServer}. */
export interface AdminServerOptions {
  /** A loopback address; always 127.0.0.1 in practice. */
  host: string;
  /** 0 lets the OS choose. */
  port: number;
  store: Store;
  /** The XMPP domain; accounts of other domains are refused. */
  domain: string;
  log: Logger;
  /** The body of `GET /admin/status`. */
  status: () => Promise<unknown>;
  /** `DELETE /admin/sessions/:jid`: ends every session of the user; resolves how many. */
  kick?: (jid: BareJid, reason: string) => Promise<number>;
  /** The families of `GET /metrics`. */
  metrics?: () => Promise<MetricFamily[]>;
  /** `GET /health`: whether the node serves clients now, and its state. */
  health?: () => { serving: boolean; state: string };
  /**
   * Restarts worker `index` abruptly, as a crash would (`POST /admin/workers/:index/restart`);
   * resolves false when there is no such worker.
   */
  restartWorker?: (index: number) => Promise<boolean>;
  /** Cluster operations, when the node is a cluster member. */
  cluster?:
    | {
        /** The body of `GET /admin/cluster`. */
        status(): Promise<unknown>;
        /** Starts leaving the cluster (`POST /admin/cluster/leave`); the node exits when done. */
        leave(): void;
        /** `POST /admin/cluster/join {"seed": "host:port"}`: checks the seed is a member of our cluster. */
        join(seed: string): Promise<unknown>;
      }
    | undefined;
}

/** A running admin endpoint. */
export interface AdminServer {
  /** The port actually bound. */
  readonly port: number;
  /** Stops accepting connections and resolves when in-flight requests have finished. */
  close(): Promise<void>;
}

/** An error that maps to one HTTP status; only thrown and caught inside this module. */
class AdminHttpError extends XmppServerError {
  readonly status: number;
  readonly headers: Record<string, string>;
  constructor(status: number, code: ErrorCode, message: string, headers: Record<string, string> = {}) {
    super(code, message);
    this.status = status;
    this.headers = headers;
  }
}

const badRequest = (message: string) => new AdminHttpError(400, "XSRV_ADMIN", message);

/** Whether an address (as `socket.remoteAddress` gives it) is a loopback address. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.startsWith("::ffff:") ? address.slice(7) : address;
  if (isIP(v4) === 4) return v4.startsWith("127.");
  return address === "::1";
}

/** Whether a Host header names this machine's loopback, so a DNS-rebound name is refused. */
function isLoopbackHost(host: string | undefined): boolean {
  // HTTP/1.0 clients may omit Host; browsers (the rebinding vector) always send it.
  if (host === undefined) return true;
  const name = host.startsWith("[") ? host.slice(1, host.indexOf("]")) : host.replace(/:\d*$/, "");
  return name.toLowerCase() === "localhost" || isLoopbackAddress(name);
}

/**
 * Starts the admin endpoint on a loopback address. Throws `TypeError` for a non-loopback host:
 * the API has no authentication, so only local processes may reach it.
 */
export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const { store, log } = options;
  const domain = normalizeDomain(options.domain) ?? options.domain;
  if (!isLoopbackAddress(options.host)) {
    throw new TypeError(`The admin endpoint must bind to a loopback address, got "${options.host}"`);
  }
  let closing = false;
  let closed: Promise<void> | undefined;

  const server = createServer({ requestTimeout: 120_000, headersTimeout: 10_000 }, (req, res) => {
    handle(req, res).catch((error: unknown) => {
      log.error({ err: error }, "admin response failed");
      res.destroy();
    });
  });
  server.maxConnections = 128;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    try {
      // Bound to loopback, so this holds already; checked anyway in case the socket was
      // handed over from elsewhere, because nothing here asks for credentials.
      if (!isLoopbackAddress(req.socket.remoteAddress)) {
        throw new AdminHttpError(403, "XSRV_ADMIN", "the admin endpoint only answers loopback clients");
      }
      // A web page can point its own name at 127.0.0.1 (DNS rebinding) and read our answers;
      // its requests then carry that name in Host.
      if (!isLoopbackHost(req.headers.host)) {
        throw new AdminHttpError(403, "XSRV_ADMIN", `Host "${req.headers.host}" is not a loopback name`);
      }
      await route(req, res, path);
    } catch (error) {
      if (error instanceof AdminHttpError) {
        log.debug(
          { method: req.method, path, status: error.status, code: error.code },
          "admin request refused",
        );
        sendError(req, res, error.status, error.code, error.message, error.headers);
      } else {
        log.error({ err: error, method: req.method, path }, "admin request failed");
        const code = error instanceof XmppServerError ? error.code : "XSRV_ADMIN";
        const message = error instanceof Error ? error.message : String(error);
        sendError(req, res, 500, code, message);
      }
    }
  }

  async function route(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? "GET";
    const allow = (...methods: string[]) => {
      if (!methods.includes(method)) {
        throw new AdminHttpError(405, "XSRV_ADMIN", `${method} is not allowed on ${path}`, {
          allow: methods.join(", "),
        });
      }
    };
    if (path === "/metrics" && options.metrics !== undefined) {
      allow("GET");
      const text = renderMetrics(await options.metrics());
      res.statusCode = 200;
      res.setHeader("content-type", METRICS_CONTENT_TYPE);
      res.setHeader("cache-control", "no-store");
      res.setHeader("content-length", Buffer.byteLength(text));
      res.end(text);
      return;
    }
    if (path === "/health" && options.health !== undefined) {
      allow("GET");
      const { serving, state } = options.health();
      send(res, serving ? 200 : 503, { status: serving ? "up" : state });
      return;
    }
    if (path === "/admin/status") {
      allow("GET");
      send(res, 200, (await options.status()) ?? null);
      return;
    }
    if (path === "/admin/users") {
      allow("GET", "POST");
      if (method === "GET") {
        send(res, 200, { users: await store.listAccounts() });
        return;
      }
      const body = asObject(await readJson(req), "the body");
      const jid = requireJid(body.jid, "jid");
      const password = requirePassword(body.password, "password");
      const account = await createAccountRecordAsync(jid, password);
      if (!(await store.createAccount(account))) {
        throw new AdminHttpError(409, "XSRV_USER_EXISTS", `${jid} already exists`);
      }
      log.info({ jid }, "account created");
      send(res, 201, { jid });
      return;
    }
    if (path === "/admin/users/bulk") {
      allow("POST");
      send(res, 200, await createBulk(req, res));
      return;
    }
    const match = /^\/admin\/users\/([^/]+)(\/password)?$/.exec(path);
    if (match !== null) {
      let raw: string;
      try {
        raw = decodeURIComponent(match[1] ?? "");
      } catch {
        throw badRequest(`${JSON.stringify(match[1])} is not a valid percent-encoded JID`);
      }
      if (match[2] === undefined) {
        allow("DELETE");
        const jid = requireJid(raw, "the JID in the path");
        if (!(await store.deleteAccount(jid))) throw notFound(jid);
        log.info({ jid }, "account deleted");
      } else {
        allow("PUT");
        const jid = requireJid(raw, "the JID in the path");
        const password = requirePassword(asObject(await readJson(req), "the body").password, "password");
        const existing = await store.getAccount(jid);
        if (existing === undefined) throw notFound(jid);
        const fresh = await createAccountRecordAsync(jid, password);
        if (!(await store.updateAccount({ ...fresh, createdAt: existing.createdAt }))) throw notFound(jid);
        log.info({ jid }, "password changed");
      }
      send(res, 204, undefined);
      return;
    }
    const sessions = /^\/admin\/sessions\/([^/]+)$/.exec(path);
    if (sessions !== null && options.kick !== undefined) {
      // The site's logout: every session of the user ends, none stays resumable.
      allow("DELETE");
      const jid = requireJid(decodeURIComponent(sessions[1]!), "the JID in the path");
      const ended = await options.kick(jid, "signed out");
      log.info({ jid, ended }, "sessions ended by the admin endpoint");
      send(res, 200, { jid, ended });
      return;
    }
    if (path === "/admin/tokens") {
      // A one-time login token for a user the site has signed in (src/auth/login-tokens.ts).
      allow("POST");
      const body = asObject(await readJson(req), "the body");
      const jid = requireJid(body.jid, "jid");
      const ttl = body.ttlSeconds ?? DEFAULT_TOKEN_TTL_S;
      if (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TOKEN_TTL_S) {
        throw new AdminHttpError(
          400,
          "XSRV_ADMIN",
          `ttlSeconds must be an integer from 1 to ${MAX_TOKEN_TTL_S}`,
        );
      }
      const { token, expiresAt } = await issueLoginToken(store, jid, ttl);
      // The token is a password: it is answered to the caller and never logged.
      log.info({ jid, expiresAt }, "login token issued");
      send(res, 201, { jid, token, expiresAt: new Date(expiresAt).toISOString() });
      return;
    }
    const worker = /^\/admin\/workers\/(\d+)\/restart$/.exec(path);
    if (worker !== null && options.restartWorker !== undefined) {
      allow("POST");
      const index = Number(worker[1]);
      if (!(await options.restartWorker(index))) {
        throw new AdminHttpError(404, "XSRV_ADMIN", `there is no worker ${index}`);
      }
      send(res, 202, { worker: index, restarting: true });
      return;
    }
    if (path === "/admin/cluster" || path === "/admin/cluster/leave" || path === "/admin/cluster/join") {
      if (options.cluster === undefined) {
        throw new AdminHttpError(
          409,
          "XSRV_ADMIN",
          "this node is not a cluster member (start it with --secret and --store postgres://...)",
        );
      }
      if (path === "/admin/cluster") {
        allow("GET");
        send(res, 200, await options.cluster.status());
        return;
      }
      allow("POST");
      if (path === "/admin/cluster/join") {
        const body = asObject(await readJson(req), "the body");
        if (typeof body.seed !== "string" || !/^[^\s:]+:\d{1,5}$/.test(body.seed)) {
          throw badRequest('"seed" must be a peer address "host:port"');
        }
        try {
          send(res, 200, await options.cluster.join(body.seed));
        } catch (error) {
          const code = (error as { code?: unknown }).code;
          if (
            code === "XSRV_CLUSTER_STALE" ||
            code === "XSRV_PEER_REFUSED" ||
            code === "XSRV_CLUSTER_INCOMPATIBLE"
          ) {
            throw new AdminHttpError(409, code, (error as Error).message);
          }
          if (code === "XSRV_CLUSTER_UNREACHABLE")
            throw new AdminHttpError(502, code, (error as Error).message);
          throw error;
        }
        return;
      }
      options.cluster.leave();
      send(res, 202, { leaving: true });
      return;
    }
    throw new AdminHttpError(404, "XSRV_ADMIN", `no route ${path}`);
  }

  /** Validates the whole request first, so a bad entry creates nothing. */
  async function createBulk(req: IncomingMessage, res: ServerResponse) {
    const users = asObject(await readJson(req), "the body").users;
    if (!Array.isArray(users)) throw badRequest("users must be an array");
    if (users.length > MAX_BULK_USERS) {
      throw badRequest(`users holds ${users.length} entries; at most ${MAX_BULK_USERS} per request`);
    }
    const entries = users.map((entry: unknown, i) => {
      const user = asObject(entry, `users[${i}]`);
      return {
        jid: requireJid(user.jid, `users[${i}].jid`),
        password: requirePassword(user.password, `users[${i}].password`),
      };
    });
    let created = 0;
    let existing = 0;
    let stopped = false;
    res.once("close", () => {
      stopped = true;
    });
    // PBKDF2 runs on the libuv threadpool, which the store shares; keeping one account per
    // pool thread in flight keeps every thread busy without queueing thousands of jobs in
    // front of the store's reads and writes.
    const concurrency = Math.max(1, Number(process.env.UV_THREADPOOL_SIZE) || 4);
    let next = 0;
    const worker = async () => {
      while (!stopped && next < entries.length) {
        const { jid, password } = entries[next++]!;
        if ((await store.getAccount(jid)) !== undefined) {
          existing++;
          continue;
        }
        if (await store.createAccount(await createAccountRecordAsync(jid, password))) created++;
        else existing++;
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(concurrency, entries.length) }, worker));
    } finally {
      stopped = true;
    }
    log.info({ created, existing }, "bulk accounts created");
    return { created, existing };
  }

  function requireJid(value: unknown, what: string): BareJid {
    if (typeof value !== "string") throw badRequest(`${what} must be a string`);
    const jid = parseUserJid(value);
    if (jid === undefined) throw badRequest(`${what}: ${JSON.stringify(value)} is not a valid user JID`);
    const at = jid.lastIndexOf("@");
    if (jid.slice(at + 1) !== domain) {
      throw badRequest(`${what}: ${jid} is not on this server's domain ${domain}`);
    }
    return jid;
  }

  function send(res: ServerResponse, status: number, body: unknown): void {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    res.statusCode = status;
    res.setHeader("cache-control", "no-store");
    res.setHeader(DOMAIN_HEADER, domain);
    if (closing) res.setHeader("connection", "close");
    if (payload !== undefined) {
      res.setHeader("content-type", "application/json; charset=utf-8");
      res.setHeader("content-length", Buffer.byteLength(payload));
    }
    res.end(payload);
  }

  function sendError(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    code: ErrorCode,
    message: string,
    headers: Record<string, string> = {},
  ): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    // An unread request body would otherwise be parsed as the next request on this connection.
    if (!req.complete) res.setHeader("connection", "close");
    send(res, status, { error: { code, message } });
  }

  server.listen({ host: options.host, port: options.port });
  await Promise.race([
    once(server, "listening"),
    once(server, "error").then(([error]) => {
      throw new XmppServerError(
        "XSRV_ADMIN",
        `cannot listen on ${options.host}:${options.port}: ${(error as Error).message}`,
        { cause: error },
      );
    }),
  ]);
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : options.port;
  log.info({ host: options.host, port }, "admin endpoint listening");

  return {
    port,
    close() {
      if (closed !== undefined) return closed;
      closing = true;
      closed = new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        const timer = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        timer.unref();
      });
      return closed;
    },
  };
}

function notFound(jid: BareJid): AdminHttpError {
  return new AdminHttpError(404, "XSRV_USER_NOT_FOUND", `${jid} does not exist`);
}

function asObject(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw badRequest(`${what} must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

function requirePassword(value: unknown, what: string): string {
  if (typeof value !== "string" || value === "") throw badRequest(`${what} must be a non-empty string`);
  if (Buffer.byteLength(value) > MAX_PASSWORD_BYTES) {
    throw badRequest(`${what} is longer than ${MAX_PASSWORD_BYTES} bytes`);
  }
  return value;
}

/**
 * Reads a JSON body of at most {@link MAX_ADMIN_BODY_BYTES}. Only `application/json` is accepted:
 * a web page can send a cross-origin `text/plain` POST without a CORS preflight, but not JSON.
 */
function readJson(req: IncomingMessage): Promise<unknown> {
  const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
  if (type !== "application/json") {
    return Promise.reject(
      new AdminHttpError(
        415,
        "XSRV_ADMIN",
        "the request body must be sent as Content-Type: application/json",
      ),
    );
  }
  const tooLarge = () =>
    new AdminHttpError(413, "XSRV_ADMIN", `the request body is larger than ${MAX_ADMIN_BODY_BYTES} bytes`);
  if (Number(req.headers["content-length"] ?? 0) > MAX_ADMIN_BODY_BYTES) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_ADMIN_BODY_BYTES) {
        cleanup();
        // Stop reading; the response closes the connection instead of draining the rest.
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch (error) {
        reject(badRequest(`the request body is not valid JSON: ${(error as Error).message}`));
      }
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
  });
}

/** Whether a code is one of the catalogue's; used to relay codes from replies. */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && Object.hasOwn(ErrorCodes, code);
}
