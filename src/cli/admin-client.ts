/**
 * The CLI's side of the admin endpoint (`src/http/admin-server.ts`): one JSON request to
 * http://127.0.0.1:<port>. A refused connection is an answer too, meaning "no node here",
 * which is how `starling user …` decides to open the store directly.
 */
import { request } from "node:http";
import { XmppServerError } from "../errors.ts";
import { DOMAIN_HEADER, isErrorCode } from "../http/admin-server.ts";

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

/** Sends one request to the admin endpoint on 127.0.0.1:`port`. */
export function adminRequest(
  port: number,
  method: string,
  path: string,
  body?: unknown,
): Promise<AdminReply> {
  const url = `http://127.0.0.1:${port}${path}`;
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        agent: false,
        signal: AbortSignal.timeout(ADMIN_TIMEOUT_MS),
        headers:
          payload === undefined
            ? {}
            : { "content-type": "application/json", "content-length": payload.length },
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
