/**
 * The admin API's routes (`/api/…`), each with what it does and the OpenAPI description of its
 * request and answers (openapi.ts builds the document from this table, so the document cannot
 * drift from the code). admin-server.ts authorises a request, finds its route and sends what
 * the handler returns.
 *
 * Every error is a 4xx/5xx with `{ "error": { "code", "message" } }`, `code` being an `XSRV_*`
 * code from `errors.ts`.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { escapeXML } from "@xmpp/xml";
import type { Accounts } from "../auth/accounts.ts";
import { DEFAULT_TOKEN_TTL_S, issueLoginToken, MAX_TOKEN_TTL_S } from "../auth/login-tokens.ts";
import { type ErrorCode, XmppServerError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../storage/store.ts";
import {
  type BareJid,
  bareOf,
  type FullJid,
  formatJid,
  parseJid,
  parseUserJid,
  splitFullJid,
} from "../xmpp/jid.ts";

/** Most accounts one `POST /api/users/bulk` may create. */
export const MAX_BULK_USERS = 10_000;
/** Longest password accepted, in UTF-8 bytes. */
export const MAX_PASSWORD_BYTES = 4096;
/** Longest message body `POST /api/messages` and `/api/announcements` accept, in UTF-8 bytes. */
export const MAX_MESSAGE_BYTES = 65_536;

/** One session as `GET /api/sessions` lists it. */
export interface SessionSummary {
  /** The full JID. */
  jid: string;
  /** The node holding it (its name, "local" for a single node) and the worker. */
  node: string;
  worker: number;
  /** The client's address; absent while the session waits for resumption. */
  address?: string;
  /** Whether a client is connected to it now (false: waiting for XEP-0198 resumption). */
  connected: boolean;
  /** Whether it may be resumed (XEP-0198 enabled). */
  resumable: boolean;
  /** Whether it sent available presence, and its priority. */
  available: boolean;
  priority: number;
}

/** A message the server sends (the stanza is already serialised, `from` the server or a user). */
export interface OutgoingMessage {
  /** The recipient's bare JID (its user actor delivers it). */
  user: BareJid;
  from: string;
  to: string;
  id: string;
  xml: string;
  type: string;
  /** Kept offline for a user with no session (RFC 6121 §8.5.2.1.1, XEP-0160). */
  storable: boolean;
}

/** What the node offers the API; routes whose service is absent answer 409 or 404. */
export interface AdminServices {
  store: Store;
  /** Account changes, refused (409) when the accounts belong to the web site. */
  accounts: Accounts;
  /** The XMPP domain; accounts of other domains are refused. */
  domain: string;
  log: Logger;
  /** The body of `GET /api/status`. */
  status: () => Promise<unknown>;
  /** Every session in the cluster, or only `user`'s. */
  sessions?: (user?: BareJid) => Promise<SessionSummary[]>;
  /** Ends every session of the user; resolves how many. */
  kick?: (jid: BareJid, reason: string) => Promise<number>;
  /** Routes messages to their users; resolves how many were accepted (delivered or stored). */
  send?: (messages: OutgoingMessage[]) => Promise<number>;
  /** Re-reads the configuration and applies what can change at runtime. */
  reload?: () => Promise<unknown>;
  /** Restarts worker `index` abruptly, as a crash would; resolves false when there is no such worker. */
  restartWorker?: (index: number) => Promise<boolean>;
  /** Cluster operations, when the node is a cluster member. */
  cluster?:
    | {
        status(): Promise<unknown>;
        /** Starts leaving the cluster; the node exits when done. */
        leave(): void;
        /** Checks the seed is a member of our cluster. */
        join(seed: string): Promise<unknown>;
      }
    | undefined;
}

/** A JSON Schema, as much of it as the document needs. */
export type JsonSchema = Record<string, unknown>;

/** One request being answered. */
export interface AdminCall {
  req: IncomingMessage;
  res: ServerResponse;
  /** The path's `{…}` parameters, decoded, in order. */
  params: string[];
  /** The JSON body (an object; anything else is a 400). */
  body(): Promise<Record<string, unknown>>;
}

/** What a handler answers: a status and a JSON body (none for 204). */
export interface AdminResult {
  status: number;
  body?: unknown;
}

/** A route of the API. */
export interface AdminRoute {
  method: "GET" | "POST" | "PUT" | "DELETE";
  /** OpenAPI path template: `/api/users/{jid}`. */
  path: string;
  summary: string;
  /** The JSON body's schema, when the route takes one. */
  requestBody?: JsonSchema;
  /** The answers besides the common errors (400, 401, 403, 404, 405, 413, 415). */
  responses: Record<number, { description: string; schema?: JsonSchema }>;
  handle(call: AdminCall): Promise<AdminResult>;
}

/** An error that maps to one HTTP status; admin-server.ts turns it into the JSON answer. */
export class AdminHttpError extends XmppServerError {
  readonly status: number;
  readonly headers: Record<string, string>;
  constructor(status: number, code: ErrorCode, message: string, headers: Record<string, string> = {}) {
    super(code, message);
    this.status = status;
    this.headers = headers;
  }
}

export const badRequest = (message: string) => new AdminHttpError(400, "XSRV_ADMIN", message);

const str = { type: "string" } as const;
const int = { type: "integer" } as const;
const bool = { type: "boolean" } as const;
const obj = (properties: Record<string, unknown>, required: string[] = []): JsonSchema => ({
  type: "object",
  properties,
  ...(required.length === 0 ? {} : { required }),
});
const SESSION_SCHEMA = obj({
  jid: str,
  node: str,
  worker: int,
  address: str,
  connected: bool,
  resumable: bool,
  available: bool,
  priority: int,
});

/** The routes of a node offering `services`. */
export function adminRoutes(services: AdminServices): AdminRoute[] {
  const { store, accounts, log, domain } = services;

  const requireJid = (value: unknown, what: string): BareJid => {
    if (typeof value !== "string") throw badRequest(`${what} must be a string`);
    const jid = parseUserJid(value);
    if (jid === undefined) throw badRequest(`${what}: ${JSON.stringify(value)} is not a valid user JID`);
    if (jid.slice(jid.lastIndexOf("@") + 1) !== domain) {
      throw badRequest(`${what}: ${jid} is not on this server's domain ${domain}`);
    }
    return jid;
  };
  const clusterOf = () => {
    if (services.cluster === undefined) {
      throw new AdminHttpError(
        409,
        "XSRV_ADMIN",
        "this node is not a cluster member (start it with --secret and --store postgres://...)",
      );
    }
    return services.cluster;
  };
  const needs = <T>(service: T | undefined, what: string): T => {
    if (service === undefined) throw new AdminHttpError(404, "XSRV_ADMIN", `this node offers no ${what}`);
    return service;
  };

  return [
    {
      method: "GET",
      path: "/api/status",
      summary:
        "This node: version, uptime, workers (and those restarting), connections, sessions, accounts, memory",
      responses: { 200: { description: "The node's figures", schema: { type: "object" } } },
      handle: async () => ({ status: 200, body: (await services.status()) ?? null }),
    },
    {
      method: "GET",
      path: "/api/users",
      summary: "Every account in Starling's store",
      responses: {
        200: { description: "The accounts", schema: obj({ users: { type: "array", items: str } }) },
      },
      handle: async () => ({ status: 200, body: { users: await accounts.list() } }),
    },
    {
      method: "POST",
      path: "/api/users",
      summary: "Create an account",
      requestBody: obj({ jid: str, password: str }, ["jid", "password"]),
      responses: {
        201: { description: "Created", schema: obj({ jid: str }) },
        409: {
          description:
            "The account exists (XSRV_USER_EXISTS), or the accounts belong to the web site (XSRV_ACCOUNTS_EXTERNAL)",
        },
      },
      async handle(call) {
        const body = await call.body();
        const jid = requireJid(body.jid, "jid");
        const password = requirePassword(body.password, "password");
        if (!(await accounts.create(jid, password))) {
          throw new AdminHttpError(409, "XSRV_USER_EXISTS", `${jid} already exists`);
        }
        log.info({ jid }, "account created");
        return { status: 201, body: { jid } };
      },
    },
    {
      method: "POST",
      path: "/api/users/bulk",
      summary: `Create up to ${MAX_BULK_USERS} accounts; existing ones are left as they are`,
      requestBody: obj({ users: { type: "array", items: obj({ jid: str, password: str }) } }, ["users"]),
      responses: {
        200: { description: "Counts", schema: obj({ created: int, existing: int }) },
        409: { description: "The accounts belong to the web site (XSRV_ACCOUNTS_EXTERNAL)" },
      },
      handle: async (call) => ({ status: 200, body: await createBulk(call, requireJid) }),
    },
    {
      method: "PUT",
      path: "/api/users/{jid}/password",
      summary: "Change an account's password",
      requestBody: obj({ password: str }, ["password"]),
      responses: {
        204: { description: "Changed" },
        404: { description: "No such account" },
        409: { description: "The accounts belong to the web site (XSRV_ACCOUNTS_EXTERNAL)" },
      },
      async handle(call) {
        const jid = requireJid(call.params[0], "the JID in the path");
        const password = requirePassword((await call.body()).password, "password");
        if (!(await accounts.setPassword(jid, password))) throw notFound(jid);
        log.info({ jid }, "password changed");
        return { status: 204 };
      },
    },
    {
      method: "DELETE",
      path: "/api/users/{jid}",
      summary: "Delete an account",
      responses: {
        204: { description: "Deleted" },
        404: { description: "No such account" },
        409: { description: "The accounts belong to the web site (XSRV_ACCOUNTS_EXTERNAL)" },
      },
      async handle(call) {
        const jid = requireJid(call.params[0], "the JID in the path");
        if (!(await accounts.remove(jid))) throw notFound(jid);
        log.info({ jid }, "account deleted");
        return { status: 204 };
      },
    },
    {
      method: "GET",
      path: "/api/sessions",
      summary: "Every session on every node of the cluster",
      responses: {
        200: {
          description: "The sessions",
          schema: obj({ sessions: { type: "array", items: SESSION_SCHEMA } }),
        },
      },
      handle: async () => ({ status: 200, body: { sessions: await needs(services.sessions, "sessions")() } }),
    },
    {
      method: "GET",
      path: "/api/sessions/{jid}",
      summary: "The sessions of one user",
      responses: {
        200: {
          description: "The sessions",
          schema: obj({ sessions: { type: "array", items: SESSION_SCHEMA } }),
        },
      },
      async handle(call) {
        const jid = requireJid(call.params[0], "the JID in the path");
        return { status: 200, body: { sessions: await needs(services.sessions, "sessions")(jid) } };
      },
    },
    {
      method: "DELETE",
      path: "/api/sessions/{jid}",
      summary:
        'End every session of a user (a site\'s logout): each stream gets <policy-violation/> ("signed out"), none stays resumable',
      responses: { 200: { description: "How many ended", schema: obj({ jid: str, ended: int }) } },
      async handle(call) {
        const jid = requireJid(call.params[0], "the JID in the path");
        const ended = await needs(services.kick, "sessions")(jid, "signed out");
        log.info({ jid, ended }, "sessions ended by the admin API");
        return { status: 200, body: { jid, ended } };
      },
    },
    {
      method: "POST",
      path: "/api/tokens",
      summary: "Issue a one-time login token (a PLAIN password) for a user the site has signed in",
      requestBody: obj({ jid: str, ttlSeconds: { ...int, minimum: 1, maximum: MAX_TOKEN_TTL_S } }, ["jid"]),
      responses: {
        201: { description: "The token", schema: obj({ jid: str, token: str, expiresAt: str }) },
      },
      async handle(call) {
        const body = await call.body();
        const jid = requireJid(body.jid, "jid");
        const ttl = body.ttlSeconds ?? DEFAULT_TOKEN_TTL_S;
        if (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TOKEN_TTL_S) {
          throw badRequest(`ttlSeconds must be an integer from 1 to ${MAX_TOKEN_TTL_S}`);
        }
        const { token, expiresAt } = await issueLoginToken(store, jid, ttl);
        // The token is a password: it is answered to the caller and never logged.
        log.info({ jid, expiresAt }, "login token issued");
        return { status: 201, body: { jid, token, expiresAt: new Date(expiresAt).toISOString() } };
      },
    },
    {
      method: "POST",
      path: "/api/messages",
      summary:
        "Send a message as the server (or as a user of the domain); kept offline for a user who is not online, as any chat message",
      requestBody: obj(
        {
          to: str,
          body: str,
          subject: str,
          from: str,
          type: { type: "string", enum: ["chat", "normal", "headline"] },
        },
        ["to", "body"],
      ),
      responses: { 202: { description: "Accepted: delivered or stored", schema: obj({ to: str, id: str }) } },
      async handle(call) {
        const body = await call.body();
        const to = parseJid(typeof body.to === "string" ? body.to : "");
        if (to === undefined || to.local === "" || to.domain !== domain) {
          throw badRequest(`to: ${JSON.stringify(body.to)} is not a JID of a user of ${domain}`);
        }
        const from = body.from === undefined ? domain : body.from;
        if (from !== domain) requireJid(from, "from");
        const type = body.type ?? "chat";
        if (type !== "chat" && type !== "normal" && type !== "headline") {
          throw badRequest('type must be "chat", "normal" or "headline"');
        }
        const recipient = formatJid(to);
        const message = messageXml(
          messageContent(body),
          { from: from as string, to: recipient, type },
          bareOf(to),
        );
        const accepted = await needs(services.send, "messages")([message]);
        if (accepted !== 1)
          throw new AdminHttpError(503, "XSRV_ADMIN", "the message was not accepted in time");
        log.info({ to: recipient, type }, "message sent by the admin API");
        return { status: 202, body: { to: recipient, id: message.id } };
      },
    },
    {
      method: "POST",
      path: "/api/announcements",
      summary:
        "Send a message from the server to every user: online ones only (a headline, not kept), or every account (kept offline for those not online)",
      requestBody: obj({ body: str, subject: str, online: { ...bool, default: true } }, ["body"]),
      responses: { 202: { description: "How many users it went to", schema: obj({ recipients: int }) } },
      async handle(call) {
        const body = await call.body();
        const content = messageContent(body);
        const online = body.online ?? true;
        if (typeof online !== "boolean") throw badRequest("online must be true or false");
        const users = online
          ? [
              ...new Set(
                (await needs(services.sessions, "sessions")()).map(
                  (s) => splitFullJid(s.jid as FullJid).bare,
                ),
              ),
            ]
          : await accounts.list();
        // RFC 6121 §5.2.2 / XEP-0160: a headline is delivered to whoever is online and never
        // stored; an announcement to every account is a normal message, stored for the absent.
        const type = online ? "headline" : "normal";
        const messages = users.map((user) =>
          messageXml(content, { from: domain, to: user, type }, user as BareJid),
        );
        const recipients = await needs(services.send, "messages")(messages);
        log.info({ recipients, online }, "announcement sent by the admin API");
        return { status: 202, body: { recipients } };
      },
    },
    {
      method: "POST",
      path: "/api/reload",
      summary:
        "Re-read the configuration file and apply certificates, log level, limits, registration and authentication without a restart (as SIGHUP does)",
      responses: {
        200: {
          description: "What was applied, and what needs a restart (left as it was)",
          schema: obj({ changed: { type: "array", items: str }, needRestart: { type: "array", items: str } }),
        },
        409: { description: "The configuration file is invalid; nothing was applied" },
      },
      handle: async () => ({ status: 200, body: await needs(services.reload, "reload")() }),
    },
    {
      method: "POST",
      path: "/api/workers/{index}/restart",
      summary: "Restart a worker thread abruptly, as a crash would (for tests and drills)",
      responses: { 202: { description: "Restarting", schema: obj({ worker: int, restarting: bool }) } },
      async handle(call) {
        const index = Number(call.params[0]);
        if (!Number.isInteger(index) || index < 0)
          throw badRequest("the worker index must be an integer >= 0");
        if (!(await needs(services.restartWorker, "worker restarts")(index))) {
          throw new AdminHttpError(404, "XSRV_ADMIN", `there is no worker ${index}`);
        }
        return { status: 202, body: { worker: index, restarting: true } };
      },
    },
    {
      method: "GET",
      path: "/api/cluster",
      summary: "The cluster: members, their states and counts, the owner table's epoch",
      responses: { 200: { description: "The cluster's view", schema: { type: "object" } } },
      handle: async () => ({ status: 200, body: await clusterOf().status() }),
    },
    {
      method: "POST",
      path: "/api/cluster/join",
      summary: "Check that a seed (a member's peer address) belongs to this node's cluster",
      requestBody: obj({ seed: str }, ["seed"]),
      responses: {
        200: {
          description: "The seed's members",
          schema: obj({ seed: str, members: { type: "array", items: str } }),
        },
        409: { description: "The seed belongs to another cluster, refused us, or is incompatible" },
        502: { description: "The seed cannot be reached" },
      },
      async handle(call) {
        const cluster = clusterOf();
        const { seed } = await call.body();
        if (typeof seed !== "string" || !/^[^\s:]+:\d{1,5}$/.test(seed)) {
          throw badRequest('"seed" must be a peer address "host:port"');
        }
        try {
          return { status: 200, body: await cluster.join(seed) };
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
      },
    },
    {
      method: "POST",
      path: "/api/cluster/leave",
      summary: "Leave the cluster: the node hands its partitions over, moves its clients, and exits",
      responses: { 202: { description: "Leaving", schema: obj({ leaving: bool }) } },
      async handle() {
        clusterOf().leave();
        return { status: 202, body: { leaving: true } };
      },
    },
  ];

  /** Validates the whole request first, so a bad entry creates nothing. */
  async function createBulk(call: AdminCall, requireJid: (value: unknown, what: string) => BareJid) {
    const users = (await call.body()).users;
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
    let stopped = false;
    call.res.once("close", () => {
      stopped = true;
    });
    const counts = await accounts.createMany(entries, {
      concurrency: Math.max(1, Number(process.env.UV_THREADPOOL_SIZE) || 4),
      stopped: () => stopped,
    });
    stopped = true;
    const { created, existing } = counts;
    log.info({ created, existing }, "bulk accounts created");
    return { created, existing };
  }
}

/** The checked text of a message from the API: its body, and its subject when given. */
interface MessageContent {
  text: string;
  subject: string | undefined;
}

/** Checks a request's `body` and `subject`; a 400 names what is wrong. */
function messageContent(body: Record<string, unknown>): MessageContent {
  const text = body.body;
  if (typeof text !== "string" || text === "") throw badRequest("body must be a non-empty string");
  if (Buffer.byteLength(text) > MAX_MESSAGE_BYTES)
    throw badRequest(`body is longer than ${MAX_MESSAGE_BYTES} bytes`);
  const subject = body.subject;
  if (subject !== undefined && (typeof subject !== "string" || Buffer.byteLength(subject) > 1024)) {
    throw badRequest("subject must be a string of at most 1024 bytes");
  }
  return { text, subject };
}

let nextMessageId = 1;

/** A `<message/>` from the API, escaped. */
function messageXml(
  content: MessageContent,
  address: { from: string; to: string; type: string },
  /** The recipient's bare JID, whose actor delivers it. */
  user: BareJid,
): OutgoingMessage {
  const id = `api-${Date.now().toString(36)}-${nextMessageId++}`;
  const xml =
    `<message xmlns='jabber:client' from='${escapeXML(address.from)}' to='${escapeXML(address.to)}'` +
    ` type='${address.type}' id='${id}'>` +
    (content.subject === undefined ? "" : `<subject>${escapeXML(content.subject)}</subject>`) +
    `<body>${escapeXML(content.text)}</body></message>`;
  return {
    id,
    user,
    from: address.from,
    to: address.to,
    xml,
    type: address.type,
    storable: address.type !== "headline",
  };
}

function notFound(jid: BareJid): AdminHttpError {
  return new AdminHttpError(404, "XSRV_USER_NOT_FOUND", `${jid} does not exist`);
}

export function asObject(value: unknown, what: string): Record<string, unknown> {
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
