/**
 * Returning an undeliverable stanza to its sender as a stanza error (RFC 6120 §8.3), routed
 * like any other stanza to the sender's UserActor.
 */
import type { StanzaErrorCondition } from "../src/errors.ts";
import { bareOf, parseJid } from "../src/xmpp/jid.ts";
import { errorReplyXml } from "../src/xmpp/stanza.ts";
import type { ActorRouter, RoutedStanza } from "./messages.ts";

/** Sends `condition` back to the sender of `stanza`; errors and results are never answered. */
export function bounceStanza(
  router: Pick<ActorRouter, "toUser">,
  stanza: RoutedStanza,
  condition: StanzaErrorCondition,
): void {
  // RFC 6120 §8.3.1: an entity MUST NOT respond to an error stanza with another error.
  if (stanza.type === "error" || stanza.type === "result") return;
  const from = parseJid(stanza.from);
  if (from === undefined) return;
  router.toUser({
    kind: "stanza",
    user: bareOf(from),
    stanza: {
      name: stanza.name,
      type: "error",
      from: stanza.to,
      to: stanza.from,
      id: stanza.id,
      xml: errorReplyXml(stanza, condition),
    },
  });
}
