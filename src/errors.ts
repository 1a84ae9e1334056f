/**
 * The one catalogue of Starling's error codes. Codes are the contract: callers and tests branch
 * on `code` (and, for XMPP errors, on `condition`), never on the message. Codes are append-only;
 * a code once published is never reused for another meaning.
 */

/** Every error code Starling raises, with the meaning it carries. */
export const ErrorCodes = {
  XSRV_CONFIG_INVALID: "a configuration file, flag or environment variable has a bad value",
  XSRV_CLI_USAGE: "a command-line argument is missing or malformed",
  XSRV_XML_NOT_WELL_FORMED: "the peer sent XML that is not well-formed",
  XSRV_XML_RESTRICTED: "the peer sent XML that XMPP forbids (DTD, entity, PI, comment)",
  XSRV_STANZA_TOO_LARGE: "a stanza is larger than maxStanzaBytes",
  XSRV_STANZA_TOO_DEEP: "a stanza nests deeper than maxStanzaDepth",
  XSRV_STANZA_TOO_WIDE: "a stanza has more elements than maxStanzaElements",
  XSRV_STREAM: "a stream-level protocol violation",
  XSRV_STANZA: "a stanza-level error to be returned to the sender",
  XSRV_STORE: "the store failed",
  XSRV_USER_EXISTS: "the account already exists",
  XSRV_USER_NOT_FOUND: "the account does not exist",
  XSRV_ACCOUNTS_EXTERNAL:
    "accounts belong to the web site (auth.provider http or sql): Starling cannot create or change them",
  XSRV_AUTH: "authentication failed",
  XSRV_AUTH_UNAVAILABLE: "the authentication backend (the web site, its database) did not answer",
  XSRV_WORKER: "a worker thread failed",
  XSRV_ADMIN: "the admin endpoint refused a request",
  XSRV_ADMIN_UNAUTHORIZED: "an admin API call without the right Bearer key (admin.key)",
  XSRV_CLUSTER_UNREACHABLE: "a cluster peer could not be reached",
  XSRV_PEER_REFUSED: "a cluster peer refused the link (wrong secret or not a member)",
  XSRV_CLUSTER_INCOMPATIBLE: "a node's ring (partitions, hash) or peer protocol differs from the cluster's",
  XSRV_CLUSTER_NAME_TAKEN: "another live node already uses this node name",
  XSRV_CLUSTER_STALE: "a membership change lost a race with another one (the view moved on)",
  XSRV_FENCED: "this node lost its lease or was declared down, and stopped serving",
  XSRV_PEER_UNTRUSTED:
    "a cluster peer's TLS certificate is not the one its member row pins, or not signed by cluster.tls.caFile",
  XSRV_CHECK_FAILED:
    "starling check found at least one error in the deployment (configuration, certificate, DNS)",
} as const;

/** A Starling error code. */
export type ErrorCode = keyof typeof ErrorCodes;

/** RFC 6120 §4.9.3 stream error conditions. */
export type StreamErrorCondition =
  | "bad-format"
  | "bad-namespace-prefix"
  | "conflict"
  | "connection-timeout"
  | "host-gone"
  | "host-unknown"
  | "improper-addressing"
  | "internal-server-error"
  | "invalid-from"
  | "invalid-namespace"
  | "invalid-xml"
  | "not-authorized"
  | "not-well-formed"
  | "policy-violation"
  | "remote-connection-failed"
  | "reset"
  | "resource-constraint"
  | "restricted-xml"
  | "see-other-host"
  | "system-shutdown"
  | "undefined-condition"
  | "unsupported-encoding"
  | "unsupported-feature"
  | "unsupported-stanza-type"
  | "unsupported-version";

/** RFC 6120 §8.3.3 stanza error conditions. */
export type StanzaErrorCondition =
  | "bad-request"
  | "conflict"
  | "feature-not-implemented"
  | "forbidden"
  | "gone"
  | "internal-server-error"
  | "item-not-found"
  | "jid-malformed"
  | "not-acceptable"
  | "not-allowed"
  | "not-authorized"
  | "policy-violation"
  | "recipient-unavailable"
  | "redirect"
  | "registration-required"
  | "remote-server-not-found"
  | "remote-server-timeout"
  | "resource-constraint"
  | "service-unavailable"
  | "subscription-required"
  | "undefined-condition"
  | "unexpected-request";

/** RFC 6120 §8.3.2 error types. */
export type StanzaErrorType = "auth" | "cancel" | "continue" | "modify" | "wait";

/** The default error type for each condition, from RFC 6120 §8.3.3. */
export const STANZA_ERROR_TYPES: Readonly<Record<StanzaErrorCondition, StanzaErrorType>> = {
  "bad-request": "modify",
  conflict: "cancel",
  "feature-not-implemented": "cancel",
  forbidden: "auth",
  gone: "cancel",
  "internal-server-error": "cancel",
  "item-not-found": "cancel",
  "jid-malformed": "modify",
  "not-acceptable": "modify",
  "not-allowed": "cancel",
  "not-authorized": "auth",
  "policy-violation": "modify",
  "recipient-unavailable": "wait",
  redirect: "modify",
  "registration-required": "auth",
  "remote-server-not-found": "cancel",
  "remote-server-timeout": "wait",
  "resource-constraint": "wait",
  "service-unavailable": "cancel",
  "subscription-required": "auth",
  "undefined-condition": "cancel",
  "unexpected-request": "wait",
};

/** Options shared by every Starling error. */
export interface XmppServerErrorOptions {
  cause?: unknown;
}

/** Base class of every error Starling raises on purpose. */
export class XmppServerError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options: XmppServerErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = "XmppServerError";
  }
}

/** A stream-level error: always followed by closing the stream (RFC 6120 §4.9). */
export class StreamError extends XmppServerError {
  readonly condition: StreamErrorCondition;
  constructor(
    code: ErrorCode,
    condition: StreamErrorCondition,
    message: string,
    options: XmppServerErrorOptions = {},
  ) {
    super(code, message, options);
    this.condition = condition;
    this.name = "StreamError";
  }
}

/** A stanza-level error: returned to the sender in an error stanza (RFC 6120 §8.3). */
export class StanzaError extends XmppServerError {
  readonly condition: StanzaErrorCondition;
  readonly type: StanzaErrorType;
  constructor(
    condition: StanzaErrorCondition,
    message: string,
    options: XmppServerErrorOptions & { type?: StanzaErrorType } = {},
  ) {
    super("XSRV_STANZA", message, options);
    this.condition = condition;
    this.type = options.type ?? STANZA_ERROR_TYPES[condition];
    this.name = "StanzaError";
  }
}

/** A plain record that survives structured clone and msgpack, for errors crossing threads or nodes. */
export interface ErrorRecord {
  code: ErrorCode;
  message: string;
  condition?: string;
}

/** Turns an error into a record that can cross a thread or a node. */
export function toErrorRecord(error: unknown): ErrorRecord {
  if (error instanceof StreamError || error instanceof StanzaError) {
    return { code: error.code, message: error.message, condition: error.condition };
  }
  if (error instanceof XmppServerError) return { code: error.code, message: error.message };
  return { code: "XSRV_WORKER", message: error instanceof Error ? error.message : String(error) };
}

/** Rebuilds the error class from a record made by {@link toErrorRecord}. */
export function fromErrorRecord(record: ErrorRecord): XmppServerError {
  if (record.code === "XSRV_STANZA" && record.condition !== undefined) {
    return new StanzaError(record.condition as StanzaErrorCondition, record.message);
  }
  return new XmppServerError(record.code, record.message);
}
