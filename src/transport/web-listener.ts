/**
 * The client web listener of one worker: HTTPS with the node's certificate (and, if configured,
 * plain HTTP for a reverse proxy in front), apart from the loopback admin listener. Every worker
 * listens on the same ports with SO_REUSEPORT, as for TCP clients.
 *
 * - `GET /xmpp-websocket` with the `xmpp` subprotocol: XMPP over WebSocket (RFC 7395), a
 *   {@link WebSocketTransport} under an {@link XmppStream}, so every rule of the TCP streams holds.
 * - `GET /.well-known/host-meta` and `/.well-known/host-meta.json`: where to connect (XEP-0156),
 *   built from the request's Host (and `X-Forwarded-Proto: https` from a proxy that terminates
 *   TLS), readable from any origin (it is public).
 * Anything else is a 404 with a JSON body.
 */
import { readFileSync } from "node:fs";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { Duplex } from "node:stream";
import { escapeXML } from "@xmpp/xml";
import { WebSocketServer } from "ws";
import type { Config } from "../config/defaults.ts";
import type { Logger } from "../log.ts";
import { isLoopbackHost } from "../loopback.ts";
import type { StreamHost } from "../xmpp/stream-host.ts";
import { XmppStream } from "../xmpp/xmpp-stream.ts";
import { BoshSessions, boshSidOf, terminateBody } from "./bosh.ts";
import { clientAddressOf } from "./client-address.ts";
import { listenShared } from "./listen.ts";
import { BOSH_PATH, boshUrlOf, WEBSOCKET_PATH, webSocketUrlOf } from "./web-paths.ts";
import { WebSocketTransport } from "./websocket-transport.ts";

/** The chat page (src/web/chat/), read once: path → its type and text. */
const CHAT_FILES = new Map(
  [
    ["/chat", "index.html", "text/html; charset=utf-8"],
    ["/chat/chat.js", "chat.js", "text/javascript; charset=utf-8"],
  ].map(([path, file, type]) => [
    path!,
    { type: type!, body: readFileSync(new URL(`../web/chat/${file}`, import.meta.url), "utf8") },
  ]),
);

/** Options for {@link startWebListener}. */
export interface WebListenerOptions {
  host: StreamHost;
  config: Readonly<Config>;
  log: Logger;
  tlsCredentials: { cert: string; key: string };
  /** Streams are added here while open (the worker's fence, drain and stop reach them). */
  connections: Set<XmppStream>;
  /** This worker's number: the BOSH sessions it holds have ids that start with it. */
  shard: number;
  /**
   * Hands a BOSH request for a session another worker of the node holds to that worker;
   * resolves with its answer (up to `wait` seconds later).
   */
  forwardBosh(shard: number, body: string, secure: boolean, remoteAddress: string): Promise<string>;
}

/** The web listeners of one worker. */
export interface WebListener {
  readonly ports: { web: number; webPlain: number | null };
  /** The BOSH sessions this worker holds (requests forwarded by other workers go here too). */
  readonly bosh: BoshSessions;
  /** A new certificate (a reload), for new connections to the TLS port. */
  setCredentials(credentials: { cert: string; key: string }): void;
  close(): Promise<void>;
}

let nextConnectionId = 1;

/** Starts the web listeners on `ports` (0 lets the OS choose, for the first worker). */
export async function startWebListener(
  options: WebListenerOptions,
  ports: { web: number; webPlain: number | null },
): Promise<WebListener> {
  const { config, log } = options;
  // The parser enforces maxStanzaBytes in characters; a frame far beyond it is cut by ws itself.
  // ws fixes its frame ceiling when the server is made: a reload that raises maxStanzaBytes
  // reaches WebSocket frames after a restart (runtime-config.ts says so).
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: config.limits.maxStanzaBytes * 4 + 1024,
    clientTracking: false,
    // RFC 7395 §3.1: the server agrees to `xmpp` or the client gets no XMPP stream.
    handleProtocols: (protocols) => (protocols.has("xmpp") ? "xmpp" : false),
  });
  const serve = (secure: boolean) => {
    const server = secure ? createHttpsServer({ ...options.tlsCredentials }) : createHttpServer();
    server.on("request", (request, response) => answer(request, response, secure));
    server.on("upgrade", (request, socket, head) => upgrade(request, socket, head, secure));
    server.on("tlsClientError", (error) => log.debug({ err: error }, "TLS handshake failed"));
    return server;
  };

  const upgrade = (request: IncomingMessage, socket: Duplex, head: Buffer, secure: boolean) => {
    const refuse = (status: number, reason: string) => {
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (pathOf(request) !== WEBSOCKET_PATH) return refuse(404, "Not Found");
    const offered = (request.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim());
    if (!offered.includes("xmpp")) return refuse(400, "Bad Request");
    const origin = request.headers.origin;
    if (
      config.web.origins.length > 0 &&
      origin !== undefined &&
      !config.web.origins.includes(origin) &&
      !isSameOrigin(origin, request.headers.host)
    ) {
      log.info({ origin }, "websocket from an origin not in web.origins refused");
      return refuse(403, "Forbidden");
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      const remoteAddress = clientAddressOf(
        request.socket.remoteAddress,
        request.headers["x-forwarded-for"],
        config.web.trustedProxies,
      );
      const connectionLog = log.child({ conn: `ws${nextConnectionId++}`, remote: remoteAddress });
      const transport = new WebSocketTransport(ws, {
        remoteAddress,
        secure: secure || isLoopbackHost(config.host),
        limits: config.limits,
        log: connectionLog,
      });
      const stream = new XmppStream(transport, options.host, connectionLog);
      options.connections.add(stream);
      ws.once("close", () => options.connections.delete(stream));
    });
  };

  const bosh = new BoshSessions({
    host: options.host,
    config,
    log,
    shard: options.shard,
    connections: options.connections,
  });

  /** XEP-0124 §6 over HTTP: POST bodies, CORS for the configured origins (§20.1 of the spec's notes). */
  const answerBosh = (request: IncomingMessage, response: ServerResponse, secure: boolean) => {
    const origin = request.headers.origin;
    const cors: Record<string, string> =
      origin !== undefined && config.web.origins.includes(origin)
        ? { "access-control-allow-origin": origin, vary: "Origin" }
        : {};
    if (request.method === "OPTIONS") {
      response.writeHead(204, {
        ...cors,
        "access-control-allow-methods": "POST, OPTIONS",
        "access-control-allow-headers": "Content-Type",
        "access-control-max-age": "86400",
      });
      return response.end();
    }
    if (request.method !== "POST") {
      return reply(
        response,
        405,
        "application/json",
        JSON.stringify({ error: "method-not-allowed", message: "BOSH takes POST" }),
        cors,
      );
    }
    const chunks: Buffer[] = [];
    let size = 0;
    // Read per request: a reload may change the limit.
    const maxBoshBytes = config.limits.maxStanzaBytes * 2 + 8192;
    request.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBoshBytes) chunks.push(chunk);
    });
    request.on("end", () => {
      const xmlReply = (body: string) => reply(response, 200, "text/xml; charset=utf-8", body, cors);
      if (size > maxBoshBytes) return xmlReply(terminateBody("policy-violation"));
      const text = Buffer.concat(chunks).toString("utf8");
      const remoteAddress = clientAddressOf(
        request.socket.remoteAddress,
        request.headers["x-forwarded-for"],
        config.web.trustedProxies,
      );
      const connectionSecure = secure || isLoopbackHost(config.host);
      const sid = boshSidOf(text);
      const shard = sid === undefined ? options.shard : BoshSessions.shardOf(sid);
      if (shard === undefined) return xmlReply(terminateBody("item-not-found"));
      const answered =
        shard === options.shard
          ? bosh.handle(text, { secure: connectionSecure, remoteAddress })
          : options.forwardBosh(shard, text, connectionSecure, remoteAddress);
      answered.then(xmlReply, (error: unknown) => {
        log.warn({ err: error, shard }, "BOSH request failed");
        xmlReply(terminateBody("item-not-found"));
      });
    });
  };

  const answer = (request: IncomingMessage, response: ServerResponse, secure: boolean) => {
    const path = pathOf(request);
    if (path === BOSH_PATH) return answerBosh(request, response, secure);
    const page = CHAT_FILES.get(path === "/chat/" ? "/chat" : path);
    if (page !== undefined && request.method === "GET") {
      // The page talks to this server, and to the site's origins only (its credentials URL); a
      // site may frame it.
      const connect = ["'self'", "ws:", "wss:", ...config.web.origins].join(" ");
      return reply(response, 200, page.type, page.body, {
        "content-security-policy": `default-src 'self'; connect-src ${connect}; style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'`,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
      });
    }
    const host = request.headers.host ?? `${config.host}`;
    // Behind a proxy that terminates TLS (docs/web-chat.md) the browser's scheme is the proxy's;
    // naming ws:// to an https page would be mixed content. The header only shapes these URLs,
    // which the client could build itself from its own Host anyway.
    const external = secure || request.headers["x-forwarded-proto"] === "https";
    const base = `${external ? "https" : "http"}://${host}`;
    const wsUrl = webSocketUrlOf(base);
    const boshUrl = boshUrlOf(base);
    if (request.method === "GET" && path === "/.well-known/host-meta") {
      return reply(
        response,
        200,
        "application/xrd+xml",
        `<?xml version="1.0" encoding="UTF-8"?>\n<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n  <Link rel="urn:xmpp:alt-connections:websocket" href="${escapeXML(wsUrl)}"/>\n  <Link rel="urn:xmpp:alt-connections:xbosh" href="${escapeXML(boshUrl)}"/>\n</XRD>\n`,
      );
    }
    if (request.method === "GET" && path === "/.well-known/host-meta.json") {
      return reply(
        response,
        200,
        "application/json",
        JSON.stringify({
          links: [
            { rel: "urn:xmpp:alt-connections:websocket", href: wsUrl },
            { rel: "urn:xmpp:alt-connections:xbosh", href: boshUrl },
          ],
        }),
      );
    }
    reply(
      response,
      404,
      "application/json",
      JSON.stringify({ error: "not-found", message: `no such resource: ${path}` }),
    );
  };

  const secureServer = serve(true) as HttpsServer;
  const servers: Server[] = [secureServer];
  const web = await listenShared(secureServer, config.host, ports.web);
  let webPlain: number | null = null;
  if (ports.webPlain !== null) {
    servers.push(serve(false));
    webPlain = await listenShared(servers[1]!, config.host, ports.webPlain);
  }
  return {
    ports: { web, webPlain },
    bosh,
    setCredentials(credentials) {
      secureServer.setSecureContext(credentials);
    },
    async close() {
      await Promise.all(
        servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
      );
    },
  };
}

/** Whether a page's Origin is this server itself (the chat page it serves), by the Host asked for. */
function isSameOrigin(origin: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    const page = new URL(origin);
    // Parsed with the page's scheme, so that a default port written out (":443") compares equal.
    return new URL(`${page.protocol}//${host}`).host === page.host;
  } catch {
    return false;
  }
}

function pathOf(request: IncomingMessage): string {
  const url = request.url ?? "/";
  const query = url.indexOf("?");
  return query < 0 ? url : url.slice(0, query);
}

/**
 * Writes a whole answer. Without `headers`, readable from any origin: XEP-0156 §3.3 host-meta is
 * public, and a web client on another origin must be able to read it.
 */
function reply(
  response: ServerResponse,
  status: number,
  type: string,
  body: string,
  headers: Record<string, string> = { "access-control-allow-origin": "*" },
): void {
  response.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body), ...headers });
  response.end(body);
}
