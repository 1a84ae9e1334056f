/**
 * The client web listener of one worker: HTTPS with the node's certificate (and, if configured,
 * plain HTTP for a reverse proxy in front), apart from the loopback admin listener. Every worker
 * listens on the same ports with SO_REUSEPORT, as for TCP clients.
 *
 * - `GET /xmpp-websocket` with the `xmpp` subprotocol: XMPP over WebSocket (RFC 7395), a
 *   {@link WebSocketTransport} under an {@link XmppStream}, so every rule of the TCP streams holds.
 * - `GET /.well-known/host-meta` and `/.well-known/host-meta.json`: where to connect (XEP-0156),
 *   built from the request's Host, readable from any origin (it is public).
 * Anything else is a 404 with a JSON body.
 */
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Duplex } from "node:stream";
import { escapeXML } from "@xmpp/xml";
import { WebSocketServer } from "ws";
import type { Config } from "../config/defaults.ts";
import type { Logger } from "../log.ts";
import type { StreamHost } from "../xmpp/stream-host.ts";
import { XmppStream } from "../xmpp/xmpp-stream.ts";
import { listenShared } from "./listen.ts";
import { WebSocketTransport } from "./websocket-transport.ts";

/** Where XMPP over WebSocket is served. */
export const WEBSOCKET_PATH = "/xmpp-websocket";

/** Options for {@link startWebListener}. */
export interface WebListenerOptions {
  host: StreamHost;
  config: Readonly<Config>;
  log: Logger;
  tlsCredentials: { cert: string; key: string };
  /** Streams are added here while open (the worker's fence, drain and stop reach them). */
  connections: Set<XmppStream>;
}

/** The web listeners of one worker. */
export interface WebListener {
  readonly ports: { web: number; webPlain: number | null };
  close(): Promise<void>;
}

let nextConnectionId = 1;

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

/** Starts the web listeners on `ports` (0 lets the OS choose, for the first worker). */
export async function startWebListener(
  options: WebListenerOptions,
  ports: { web: number; webPlain: number | null },
): Promise<WebListener> {
  const { config, log } = options;
  // The parser enforces maxStanzaBytes in characters; a frame far beyond it is cut by ws itself.
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
    if (config.web.origins.length > 0 && origin !== undefined && !config.web.origins.includes(origin)) {
      log.info({ origin }, "websocket from an origin not in web.origins refused");
      return refuse(403, "Forbidden");
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      const remoteAddress = request.socket.remoteAddress ?? "unknown";
      const connectionLog = log.child({ conn: `ws${nextConnectionId++}`, remote: remoteAddress });
      const transport = new WebSocketTransport(ws, {
        remoteAddress,
        secure: secure || isLoopback(config.host),
        limits: config.limits,
        log: connectionLog,
      });
      const stream = new XmppStream(transport, options.host, connectionLog);
      options.connections.add(stream);
      ws.once("close", () => options.connections.delete(stream));
    });
  };

  const answer = (request: IncomingMessage, response: ServerResponse, secure: boolean) => {
    const path = pathOf(request);
    const host = request.headers.host ?? `${config.host}`;
    const wsUrl = `${secure ? "wss" : "ws"}://${host}${WEBSOCKET_PATH}`;
    if (request.method === "GET" && path === "/.well-known/host-meta") {
      return reply(
        response,
        200,
        "application/xrd+xml",
        `<?xml version="1.0" encoding="UTF-8"?>\n<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n  <Link rel="urn:xmpp:alt-connections:websocket" href="${escapeXML(wsUrl)}"/>\n</XRD>\n`,
      );
    }
    if (request.method === "GET" && path === "/.well-known/host-meta.json") {
      return reply(
        response,
        200,
        "application/json",
        JSON.stringify({ links: [{ rel: "urn:xmpp:alt-connections:websocket", href: wsUrl }] }),
      );
    }
    reply(
      response,
      404,
      "application/json",
      JSON.stringify({ error: "not-found", message: `no such resource: ${path}` }),
    );
  };

  const servers: Server[] = [serve(true)];
  const web = await listenShared(servers[0]!, config.host, ports.web);
  let webPlain: number | null = null;
  if (ports.webPlain !== null) {
    servers.push(serve(false));
    webPlain = await listenShared(servers[1]!, config.host, ports.webPlain);
  }
  return {
    ports: { web, webPlain },
    async close() {
      await Promise.all(
        servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
      );
    },
  };
}

function pathOf(request: IncomingMessage): string {
  const url = request.url ?? "/";
  const query = url.indexOf("?");
  return query < 0 ? url : url.slice(0, query);
}

function reply(response: ServerResponse, status: number, type: string, body: string): void {
  response.writeHead(status, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    // XEP-0156 §3.3: host-meta is public; a web client on another origin must be able to read it.
    "access-control-allow-origin": "*",
  });
  response.end(body);
}
