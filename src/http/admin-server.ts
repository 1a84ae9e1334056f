/**
 * The node's admin endpoint over `node:http`: the JSON API under `/api` (admin-routes.ts, with
 * its OpenAPI document at `/api/openapi.json`), `/metrics` in the Prometheus text format and
 * `/health` for load balancers. Used by the `starling` CLI, a web site's back end and
 * benchmarks.
 *
 * Who may call: with `admin.key` set, every request but `/health` and the OpenAPI document
 * carries `Authorization: Bearer <key>` (401 otherwise), from anywhere it can reach; the
 * endpoint then may bind beyond loopback, and does so with TLS (the node's certificate) so the
 * key never crosses the network in clear. Without a key it binds to loopback only and answers
 * only loopback clients whose Host header is a loopback name (a web page that points its own
 * name at 127.0.0.1 cannot read the answers: DNS rebinding).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { type ErrorCode, ErrorCodes, XmppServerError } from "../errors.ts";
import { isLoopbackAddress, isLoopbackHost } from "../loopback.ts";
import { normalizeDomain } from "../xmpp/jid.ts";
import {
  type AdminCall,
  AdminHttpError,
  type AdminRoute,
  type AdminServices,
  adminRoutes,
  asObject,
  badRequest,
} from "./admin-routes.ts";
import { METRICS_CONTENT_TYPE, type MetricFamily, renderMetrics } from "./metrics.ts";
import { openApiDocument } from "./openapi.ts";

export { MAX_BULK_USERS, MAX_PASSWORD_BYTES } from "./admin-routes.ts";

/** Largest request body accepted; a larger one gets 413. */
export const MAX_ADMIN_BODY_BYTES = 1_048_576;
/** Response header naming the domain the node serves; the CLI checks it to know it reached the right node. */
export const DOMAIN_HEADER = "x-starling-domain";
/**
 * Errors that say the node's state forbids the call (409), not that it failed: the accounts
 * belong to the web site; the configuration file on disk is invalid (a reload changed nothing).
 */
const CONFLICTS = new Set<ErrorCode>(["XSRV_ACCOUNTS_EXTERNAL", "XSRV_CONFIG_INVALID"]);
/** How long `close()` lets in-flight requests finish before cutting their connections. */
const CLOSE_GRACE_MS = 10_000;

/** Options for {@link startAdminServer}. */
export interface AdminServerOptions extends AdminServices {
  /** The bind address; beyond loopback only with `key` (and then with `tls`). */
  host: string;
  /** 0 lets the OS choose. */
  port: number;
  /** The Bearer key callers must present; null or absent: none, loopback only. */
  key?: string | null;
  /** The certificate served over HTTPS. */
  tls?: { cert: string; key: string };
  /** Serve HTTPS (with `tls`); default: when `host` is beyond loopback, where it is required. */
  https?: boolean;
  /** The families of `GET /metrics`. */
  metrics?: () => Promise<MetricFamily[]>;
  /** `GET /health`: whether the node serves clients now, and its state. */
  health?: () => { serving: boolean; state: string };
}

/** A running admin endpoint. */
export interface AdminServer {
  /** The port actually bound. */
  readonly port: number;
  /** A new certificate (a reload), for new HTTPS connections; nothing over plain HTTP. */
  setCredentials(credentials: { cert: string; key: string }): void;
  /** Stops accepting connections and resolves when in-flight requests have finished. */
  close(): Promise<void>;
}

/** A route with its path template compiled. */
interface CompiledRoute {
  route: AdminRoute;
  pattern: RegExp;
}

/**
 * Starts the admin endpoint. Throws `TypeError` for a host beyond loopback without a key, or
 * without a certificate to serve.
 */
export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const { log } = options;
  const domain = normalizeDomain(options.domain) ?? options.domain;
  const local = isLoopbackHost(options.host);
  const key = options.key ?? null;
  if (!local && key === null) {
    throw new TypeError(`The admin endpoint binds beyond loopback (${options.host}) only with a key`);
  }
  const https = options.https ?? !local;
  if (!local && !https) {
    throw new TypeError(`The admin endpoint binds beyond loopback (${options.host}) only with TLS`);
  }
  if (https && options.tls === undefined) throw new TypeError("HTTPS needs a certificate (tls)");
  const keyDigest = key === null ? undefined : digest(key);
  const routes: CompiledRoute[] = adminRoutes({ ...options, domain }).map((route) => ({
    route,
    pattern: new RegExp(`^${route.path.replace(/\{[^}]+\}/g, "([^/]+)")}$`),
  }));
  const document = JSON.stringify(
    openApiDocument(
      routes.map((r) => r.route),
      { tls: https },
    ),
  );
  let closing = false;
  let closed: Promise<void> | undefined;

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((error: unknown) => {
      log.error({ err: error }, "admin response failed");
      res.destroy();
    });
  };
  const serverOptions = { requestTimeout: 120_000, headersTimeout: 10_000 };
  const server: Server = !https
    ? createServer(serverOptions, listener)
    : createHttpsServer(
        { ...serverOptions, handshakeTimeout: 10_000, cert: options.tls!.cert, key: options.tls!.key },
        listener,
      );
  server.maxConnections = 128;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    try {
      if (path !== "/health" && path !== "/api/openapi.json") authorize(req);
      await route(req, res, path);
    } catch (error) {
      if (error instanceof AdminHttpError) {
        log.debug(
          { method: req.method, path, status: error.status, code: error.code },
          "admin request refused",
        );
        sendError(req, res, error.status, error.code, error.message, error.headers);
      } else if (error instanceof XmppServerError && CONFLICTS.has(error.code)) {
        sendError(req, res, 409, error.code, error.message);
      } else {
        log.error({ err: error, method: req.method, path }, "admin request failed");
        const code = error instanceof XmppServerError ? error.code : "XSRV_ADMIN";
        const message = error instanceof Error ? error.message : String(error);
        sendError(req, res, 500, code, message);
      }
    }
  }

  function authorize(req: IncomingMessage): void {
    if (keyDigest !== undefined) {
      const given = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "")?.[1];
      // Compared as digests, so the comparison takes the same time whatever the given length.
      if (given === undefined || !timingSafeEqual(digest(given), keyDigest)) {
        throw new AdminHttpError(
          401,
          "XSRV_ADMIN_UNAUTHORIZED",
          given === undefined
            ? "this endpoint needs Authorization: Bearer <admin.key>"
            : "the Bearer key is not this node's admin.key",
          { "www-authenticate": 'Bearer realm="starling"' },
        );
      }
      return;
    }
    // Bound to loopback, so this holds already; checked anyway in case the socket was handed
    // over from elsewhere, because nothing here asks for credentials.
    if (!isLoopbackAddress(req.socket.remoteAddress)) {
      throw new AdminHttpError(403, "XSRV_ADMIN", "the admin endpoint only answers loopback clients");
    }
    // HTTP/1.0 clients may omit Host; browsers (the rebinding vector) always send it.
    const host = req.headers.host;
    const name =
      host === undefined
        ? "localhost"
        : host.startsWith("[")
          ? host.slice(1, host.indexOf("]"))
          : host.replace(/:\d*$/, "");
    if (!isLoopbackHost(name)) {
      throw new AdminHttpError(403, "XSRV_ADMIN", `Host "${host}" is not a loopback name`);
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
    if (path === "/api/openapi.json") {
      allow("GET");
      res.statusCode = 200;
      res.setHeader("content-type", "application/json; charset=utf-8");
      res.setHeader("content-length", Buffer.byteLength(document));
      res.end(document);
      return;
    }
    let matching = routes
      .map(({ route, pattern }) => ({ route, match: pattern.exec(path) }))
      .filter((m) => m.match !== null);
    // A literal path (/api/users/bulk) wins over a template that also matches (/api/users/{jid}).
    const fewest = Math.min(...matching.map((m) => m.match!.length));
    matching = matching.filter((m) => m.match!.length === fewest);
    if (matching.length === 0) throw new AdminHttpError(404, "XSRV_ADMIN", `no route ${path}`);
    allow(...matching.map((m) => m.route.method));
    const { route: chosen, match } = matching.find((m) => m.route.method === method)!;
    const params = match!.slice(1).map((raw) => {
      try {
        return decodeURIComponent(raw);
      } catch {
        throw badRequest(`${JSON.stringify(raw)} is not validly percent-encoded`);
      }
    });
    const call: AdminCall = { req, res, params, body: async () => asObject(await readJson(req), "the body") };
    const result = await chosen.handle(call);
    send(res, result.status, result.body);
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
  log.info({ host: options.host, port, https, key: keyDigest !== undefined }, "admin endpoint listening");

  return {
    port,
    setCredentials(credentials) {
      if (https) (server as ReturnType<typeof createHttpsServer>).setSecureContext(credentials);
    },
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

/** SHA-256 of a key, for a comparison in constant time. */
function digest(key: string): Buffer {
  return createHash("sha256").update(key).digest();
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
