/**
 * The server side of a SASL mechanism (RFC 4422, RFC 6120 §6). The c2s connection owns the
 * XML: it base64-decodes `<auth/>` and `<response/>` payloads, calls {@link SaslServerMechanism}
 * and turns each {@link SaslStep} into `<challenge/>`, `<success/>` or `<failure/>`. A mechanism
 * only sees bytes, so it can be tested without a socket.
 */
import type { AuthProvider } from "../../auth/auth-provider.ts";
import type { BareJid } from "../jid.ts";
import { PlainServerMechanism } from "./plain.ts";
import { ScramServerMechanism } from "./scram.ts";

/** RFC 6120 §6.5 SASL failure conditions. */
export type SaslFailureCondition =
  | "aborted"
  | "account-disabled"
  | "credentials-expired"
  | "encryption-required"
  | "incorrect-encoding"
  | "invalid-authzid"
  | "invalid-mechanism"
  | "malformed-request"
  | "mechanism-too-weak"
  | "not-authorized"
  | "temporary-auth-failure";

/** What the server answers to one client message. */
export type SaslStep =
  /** Send `<challenge/>` with `data` (empty data is sent as `=`) and wait for a `<response/>`. */
  | { kind: "challenge"; data: Buffer }
  /**
   * Send `<success/>`; `data` is the mechanism's additional data with success (the SCRAM
   * server-final-message, RFC 6120 §6.3.10), absent when there is none.
   */
  | { kind: "success"; jid: BareJid; data?: Buffer }
  /**
   * Send `<failure><condition/><text/></failure>`. `jid` is the account that was tried, when
   * the mechanism got that far; it is for per-account throttling and logs, never for the client.
   */
  | { kind: "failure"; condition: SaslFailureCondition; text?: string; jid?: BareJid };

/**
 * One authentication exchange. A mechanism object is used for a single exchange: `start` once,
 * then `next` for every `<response/>` until a step of kind `success` or `failure`. Both
 * methods reject only when the {@link AuthProvider} rejects (e.g. the store failed); the caller
 * answers that with `temporary-auth-failure`.
 */
export interface SaslServerMechanism {
  /** The mechanism name as advertised, e.g. `SCRAM-SHA-256`. */
  readonly name: string;
  /**
   * Handles `<auth/>`. `initialResponse` is undefined when the element had no text, and an
   * empty buffer when it carried `=` (RFC 6120 §6.4.2: an empty initial response).
   */
  start(initialResponse: Buffer | undefined): Promise<SaslStep>;
  /** Handles a `<response/>`. */
  next(response: Buffer): Promise<SaslStep>;
}

/** What a mechanism needs from the server. */
export interface SaslContext {
  /** The domain the stream is addressed to; usernames are localparts of this domain. */
  domain: string;
  auth: AuthProvider;
  /**
   * Called once the account is known and before its credentials are checked (the login
   * throttle); false ends the exchange with `temporary-auth-failure` (RFC 6120 §6.5.12) without
   * checking them, whether they were right or not, so a refusal tells a guesser nothing.
   * `token`: the PLAIN password has the shape of a one-time login token.
   */
  admit?(jid: BareJid, token: boolean): Promise<boolean>;
  /** Whether a PLAIN password has the shape of a one-time login token. */
  isToken?(password: string): boolean;
}

/** The text of a failure the login throttle caused. */
export const THROTTLED_TEXT = "too many failed attempts; try later";

/**
 * Mechanisms the server implements, strongest first: advertise them in this order, since
 * clients commonly take the first one they support.
 */
export const SASL_MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] as const;

/** A name from {@link SASL_MECHANISMS}. */
export type SaslMechanismName = (typeof SASL_MECHANISMS)[number];

/** The mechanisms a provider supports: SCRAM only with its keys, PLAIN always. */
export function offeredMechanisms(auth: Pick<AuthProvider, "scram">): readonly SaslMechanismName[] {
  return auth.scram ? SASL_MECHANISMS : ["PLAIN"];
}

/** Whether `name` is a mechanism this server implements. */
export function isSaslMechanismName(name: string): name is SaslMechanismName {
  return (SASL_MECHANISMS as readonly string[]).includes(name);
}

/**
 * Creates the server side of the mechanism the client chose, or undefined when the server does
 * not implement it (the caller answers `invalid-mechanism`, RFC 6120 §6.5.6).
 */
export function createSaslMechanism(name: string, context: SaslContext): SaslServerMechanism | undefined {
  if (!isSaslMechanismName(name) || !offeredMechanisms(context.auth).includes(name)) return undefined;
  switch (name) {
    case "SCRAM-SHA-256":
      return new ScramServerMechanism("sha256", context);
    case "SCRAM-SHA-1":
      return new ScramServerMechanism("sha1", context);
    case "PLAIN":
      return new PlainServerMechanism(context);
    default: {
      const unreachable: never = name;
      throw new TypeError(`Unknown SASL mechanism "${String(unreachable)}"`);
    }
  }
}
