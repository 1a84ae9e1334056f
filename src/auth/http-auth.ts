/**
 * The `http` AuthProvider: the web site checks its own users' passwords. Starling POSTs JSON to
 * `auth.http.url` and the site answers; nothing of the site's user table is copied here.
 *
 *   POST auth.http.url   Authorization: Bearer <auth.http.token>   (when a token is set)
 *   {"action": "auth",   "user": "alice", "domain": "example.org", "jid": "alice@example.org", "password": "…"}
 *   {"action": "exists", "user": "alice", "domain": "example.org", "jid": "alice@example.org"}
 *   → 200 {"ok": true} or {"ok": false}   (401, 403 and 404 also mean "no")
 *
 * Any other status, a network error or no answer within `timeoutMs` rejects with
 * XSRV_AUTH_UNAVAILABLE: the client gets `<temporary-auth-failure/>` at once, never a hang, and
 * its password is not judged wrong. A positive answer is remembered for `cacheTtlMs` (as a
 * salted hash of the password, never the password) so a reconnecting client does not cost the
 * site a request; a negative one is not. The site can only check plaintext passwords, so only
 * PLAIN is offered, and only over TLS (docs/auth.md). Accounts are the site's: in-band
 * registration and password changes are refused.
 */
import { XmppServerError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { BareJid } from "../xmpp/jid.ts";
import type { ScramCredential } from "../xmpp/sasl/scram-credential.ts";
import { AnswerCache } from "./answer-cache.ts";
import type { AuthProvider } from "./auth-provider.ts";

/** The `auth.http` settings. */
export interface HttpAuthOptions {
  url: string;
  /** Sent as `Authorization: Bearer …` so the site knows the caller; null: none. */
  token: string | null;
  timeoutMs: number;
  cacheTtlMs: number;
  log: Logger;
  /** The clock, for the cache. */
  now?: () => number;
}

/** Authenticates against the web site over HTTP. */
export class HttpAuthProvider implements AuthProvider {
  readonly scram = false;
  readonly managesAccounts = false;
  readonly #options: HttpAuthOptions;
  readonly #cache: AnswerCache;

  constructor(options: HttpAuthOptions) {
    this.#options = options;
    this.#cache = new AnswerCache(options.cacheTtlMs, options.now);
  }

  /** The site holds no SCRAM keys for us. */
  async getScramCredential(): Promise<ScramCredential | undefined> {
    return undefined;
  }

  async verifyPassword(jid: BareJid, password: string): Promise<boolean> {
    if (this.#cache.hasPassword(jid, password)) return true;
    const ok = await this.#ask("auth", jid, password);
    if (ok) this.#cache.rememberPassword(jid, password);
    else this.#cache.forgetPassword(jid);
    return ok;
  }

  async userExists(jid: BareJid): Promise<boolean> {
    if (this.#cache.hasUser(jid)) return true;
    const ok = await this.#ask("exists", jid);
    if (ok) this.#cache.rememberUser(jid);
    return ok;
  }

  async #ask(action: "auth" | "exists", jid: BareJid, password?: string): Promise<boolean> {
    const { url, token, timeoutMs, log } = this.#options;
    const at = jid.indexOf("@");
    const body = JSON.stringify({
      action,
      user: jid.slice(0, at),
      domain: jid.slice(at + 1),
      jid,
      ...(password === undefined ? {} : { password }),
    });
    let response: Response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(token === null ? {} : { authorization: `Bearer ${token}` }),
        },
        body,
        signal: AbortSignal.timeout(timeoutMs),
        redirect: "error",
      });
    } catch (error) {
      const reason =
        (error as Error).name === "TimeoutError"
          ? `no answer within ${timeoutMs} ms`
          : (error as Error).message;
      throw new XmppServerError("XSRV_AUTH_UNAVAILABLE", `auth.http.url ${url}: ${reason}`, { cause: error });
    }
    if (response.status === 401 || response.status === 403 || response.status === 404) {
      await response.body?.cancel();
      return false;
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new XmppServerError(
        "XSRV_AUTH_UNAVAILABLE",
        `auth.http.url ${url} answered HTTP ${response.status}`,
      );
    }
    let answer: unknown;
    try {
      answer = await response.json();
    } catch (error) {
      throw new XmppServerError(
        "XSRV_AUTH_UNAVAILABLE",
        `auth.http.url ${url} answered something that is not JSON`,
        {
          cause: error,
        },
      );
    }
    const ok = (answer as { ok?: unknown } | null)?.ok;
    if (typeof ok !== "boolean") {
      log.warn({ url, action }, 'the auth endpoint answered without a boolean "ok"; taken as no');
      return false;
    }
    return ok;
  }
}
