/**
 * The CLI's side of the admin endpoint (`src/http/admin-server.ts`): one JSON request to the
 * node's admin API, found from the configuration (`adminTargetOf`): its port, its address, its
 * Bearer key, and over HTTPS when it listens beyond loopback (trusting the node's own
 * certificate, read from its files). A refused connection is an answer too, meaning "no node
 * here", which is how `starling user …` decides to open the store directly.
 */
import { readFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { isIP } from "node:net";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import type { Config } from "../config/defaults.ts";
import { XmppServerError } from "../errors.ts";
import { DOMAIN_HEADER, isErrorCode } from "../http/admin-server.ts";
import { isLoopbackHost } from "../loopback.ts";
import { selfSignedPaths } from "../tls/certificate.ts";

/** How long one admin request may take (listing a very large store included). */
const ADMIN_TIMEOUT_MS = 60_000;
/** Largest reply read; a listing of a million accounts stays well below it. */
const MAX_REPLY_BYTES = 256 * 1_048_576;

/** What the admin endpoint answered. */
export type AdminReply =
  /** Nothing listens on the port. */
  | { kind: "refused" }
  /** Something answered; `domain` is unset when it is not a Starling admin endpoint. */
  | { kind: "reply"; status: number; domain: string | undefined; body: unknown };

/** Where a node's admin API listens, and how to be let in. */
export interface AdminTarget {
  host: string;
  port: number;
  /** The Bearer key (`admin.key`); null: none (a loopback node without a key). */
  key: string | null;
  /**
   * HTTPS: the name the node's certificate must carry (its domain), and the certificate itself
   * to trust when it is the generated self-signed one; undefined: plain HTTP.
   */
  tls?: { servername: string; ca?: string };
}

/** The admin API of the node configured by `config`, on `port` when given. */
export function adminTargetOf(config: Readonly<Config>, port = config.ports.http): AdminTarget {
  const bound = config.admin.host;
  // A wildcard bind answers on loopback too; any other address is where the node listens.
  const wildcard = bound === "0.0.0.0" || bound === "::";
  const host = wildcard ? "127.0.0.1" : bound;
  const target: AdminTarget = { host, port, key: config.admin.key };
  if (isLoopbackHost(bound)) return target;
  target.tls = { servername: config.domain };
  // A certificate from tls.certFile chains to a CA the system trusts; the generated one is
  // trusted as itself, read from the node's data directory.
  if (config.tls.certFile === null) {
    const certFile = selfSignedPaths(config.dataDir).certFile;
    try {
      target.tls.ca = readFileSync(certFile, "utf8");
    } catch (error) {
      throw new XmppServerError(
        "XSRV_ADMIN",
        `the admin API listens on ${bound} over HTTPS, but the node's certificate ${certFile} cannot be read: ${(error as Error).message}`,
      );
    }
  }
  return target;
}

/** Sends one request to the admin endpoint (a bare port: 127.0.0.1, no key). */
export function adminRequest(
  to: AdminTarget | number,
  method: string,
  path: string,
  body?: unknown,
): Promise<AdminReply> {
  const target = typeof to === "number" ? { host: "127.0.0.1", port: to, key: null } : to;
  const { host, port, key, tls } = target;
  const url = `${tls === undefined ? "http" : "https"}://${isIP(host) === 6 ? `[${host}]` : host}:${port}${path}`;
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | number> = {
    ...(payload === undefined
      ? {}
      : { "content-type": "application/json", "content-length": payload.length }),
    ...(key === null ? {} : { authorization: `Bearer ${key}` }),
  };
  return new Promise((resolve, reject) => {
    const options = {
      host,
      port,
      method,
      path,
      agent: false as const,
      signal: AbortSignal.timeout(ADMIN_TIMEOUT_MS),
      headers,
    };
    const req = (tls === undefined ? httpRequest : httpsRequest)(
      // The node's certificate names its domain, not the address dialled.
      tls === undefined
        ? options
        : {
            ...options,
            ...(tls.ca === undefined ? {} : { ca: tls.ca }),
            servername: tls.servername,
            checkServerIdentity: (_: string, cert: PeerCertificate) =>
              checkServerIdentity(tls.servername, cert),
          },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_REPLY_BYTES) {
            res.destroy(new Error(`reply larger than ${MAX_REPLY_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on("error", (error) => fail(error));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown;
          try {
            parsed = text === "" ? undefined : JSON.parse(text);
          } catch {
            parsed = text;
          }
          const domain = res.headers[DOMAIN_HEADER];
          resolve({
            kind: "reply",
            status: res.statusCode ?? 0,
            domain: typeof domain === "string" ? domain : undefined,
            body: parsed,
          });
        });
      },
    );
    const fail = (error: Error) =>
      reject(
        new XmppServerError("XSRV_ADMIN", `cannot talk to the admin endpoint ${url}: ${error.message}`, {
          cause: error,
        }),
      );
    req.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED") resolve({ kind: "refused" });
      else fail(error);
    });
    req.end(payload);
  });
}

/** The error a failed reply carries, rebuilt with its `XSRV_*` code. */
export function replyError(reply: { status: number; body: unknown }): XmppServerError {
  const error = (reply.body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  const message =
    typeof error?.message === "string" ? error.message : `the admin endpoint answered ${reply.status}`;
  return new XmppServerError(isErrorCode(error?.code) ? error.code : "XSRV_ADMIN", message);
}
