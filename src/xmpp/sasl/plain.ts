/**
 * SASL PLAIN, server side (RFC 4616). The password crosses the wire, so the c2s connection must
 * only offer it on an encrypted stream (RFC 6120 §13.9.4).
 */
import type { BareJid } from "../jid.ts";
import { decodeUtf8 } from "./encoding.ts";
import { isAuthzidAllowed, resolveAuthcid } from "./identity.ts";
import { type SaslContext, type SaslServerMechanism, type SaslStep, THROTTLED_TEXT } from "./mechanism.ts";

/**
 * The longest message accepted. RFC 4616 §2: the server "MUST be capable of accepting authzid,
 * authcid, and passwd productions up to and including 255 octets"; this allows far more while
 * keeping the work done for one message bounded.
 */
export const MAX_PLAIN_MESSAGE_BYTES = 4096;

type PlainState = "initial" | "awaiting-response" | "done";

/** The PLAIN mechanism for one exchange. */
export class PlainServerMechanism implements SaslServerMechanism {
  readonly name = "PLAIN";
  readonly #context: SaslContext;
  #state: PlainState = "initial";

  /** Creates the mechanism for one exchange. */
  constructor(context: SaslContext) {
    this.#context = context;
  }

  /** Handles `<auth/>`; without an initial response, asks for one with an empty challenge. */
  async start(initialResponse: Buffer | undefined): Promise<SaslStep> {
    if (this.#state !== "initial") throw new TypeError("PLAIN exchange was already started");
    if (initialResponse === undefined) {
      // RFC 6120 §6.4.2: with no initial response, the receiving entity sends an empty challenge.
      this.#state = "awaiting-response";
      return { kind: "challenge", data: Buffer.alloc(0) };
    }
    return this.#finish(initialResponse);
  }

  /** Handles the `<response/>` that answers the empty challenge. */
  async next(response: Buffer): Promise<SaslStep> {
    if (this.#state !== "awaiting-response") {
      this.#state = "done";
      return { kind: "failure", condition: "malformed-request", text: "Unexpected SASL response" };
    }
    return this.#finish(response);
  }

  async #finish(message: Buffer): Promise<SaslStep> {
    this.#state = "done";
    if (message.length > MAX_PLAIN_MESSAGE_BYTES) {
      return { kind: "failure", condition: "malformed-request", text: "PLAIN message too long" };
    }
    const text = decodeUtf8(message);
    if (text === undefined) {
      return { kind: "failure", condition: "incorrect-encoding", text: "PLAIN message is not UTF-8" };
    }
    // RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
    const fields = text.split("\0");
    if (fields.length !== 3) {
      return {
        kind: "failure",
        condition: "malformed-request",
        text: "Expected authzid NUL authcid NUL passwd",
      };
    }
    const [authzid = "", authcid = "", password = ""] = fields;
    // RFC 4616 §2: authcid = 1*SAFE, passwd = 1*SAFE; only the authzid may be empty.
    if (authcid === "" || password === "") {
      return { kind: "failure", condition: "malformed-request", text: "Empty user name or password" };
    }
    const jid = resolveAuthcid(authcid, this.#context.domain);
    if (!isAuthzidAllowed(authzid, jid)) {
      return withJid({ kind: "failure", condition: "invalid-authzid" }, jid);
    }
    if (jid === undefined) return { kind: "failure", condition: "not-authorized" };
    const admit = this.#context.admit;
    if (admit !== undefined && !(await admit(jid, this.#context.isToken?.(password) ?? false))) {
      return { kind: "failure", condition: "temporary-auth-failure", text: THROTTLED_TEXT, jid };
    }
    if (!(await this.#context.auth.verifyPassword(jid, password))) {
      return { kind: "failure", condition: "not-authorized", jid };
    }
    return { kind: "success", jid };
  }
}

function withJid(step: SaslStep & { kind: "failure" }, jid: BareJid | undefined): SaslStep {
  return jid === undefined ? step : { ...step, jid };
}
