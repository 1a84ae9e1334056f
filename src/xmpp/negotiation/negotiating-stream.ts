/**
 * The stream as its negotiation steps see it (RFC 6120 §4.3: STARTTLS, SASL, then binding or
 * XEP-0198 resumption; XEP-0077 registration before authentication). One step per file in this
 * folder; the stream (xmpp-stream.ts) dispatches to them and keeps the state they share.
 */
import type { StreamErrorCondition } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import type { BareJid } from "../jid.ts";
import type { ClientLink, StreamHost, StreamSession } from "../stream-host.ts";

export interface NegotiatingStream extends ClientLink {
  readonly host: StreamHost;
  readonly log: Logger;
  /** Encrypted now. */
  readonly secure: boolean;
  /** The stream is closing or closed: a step that awaited something sends nothing more. */
  readonly closing: boolean;
  /** The authenticated account, once SASL succeeded. */
  readonly jid: BareJid | undefined;
  /** A bind or resume is in progress or done: one per stream (XEP-0198 §5). */
  binding: boolean;
  closeWithError(condition: StreamErrorCondition, text?: string, appCondition?: string): void;
  /** Writes what is queued now (before a TLS upgrade). */
  flush(): void;
  /**
   * SASL succeeded for `jid`: the auth timeout stops and the stream restarts (RFC 6120 §6.4.6),
   * unless `restart` is false (XEP-0388: no restart after SASL2).
   */
  authenticated(jid: BareJid, restart?: boolean): void;
  /** The `<stream:features/>` of the stream as it stands (after SASL2's `<success/>`). */
  featuresXml(): string;
  /** Upgrades the transport to TLS (after `<proceed/>`). */
  startTls(): void;
  /** From now on stanzas go to `session`. */
  attach(session: StreamSession): void;
}
