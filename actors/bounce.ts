/**
 * Returning an undeliverable stanza to its sender as a stanza error (RFC 6120 §8.3), routed
 * like any other stanza to the sender's UserActor.
 */
import { type Element, Parser } from "@xmpp/xml";
import type { StanzaErrorCondition } from "../src/errors.ts";
import { bareOf, parseJid } from "../src/xmpp/jid.ts";
import { errorReplyXml } from "../src/xmpp/stanza.ts";
import type { ActorRouter, RoutedStanza } from "./messages.ts";

/**
 * The routing view of a stanza this server serialised (a session's XEP-0198 log keeps only the
 * text): what {@link bounceStanza} needs. Undefined for anything that is not one stanza.
 */
export function routedOf(xmlText: string): RoutedStanza | undefined {
  let stanza: Element | undefined;
  const parser = new Parser();
  parser.on("element", (el: Element) => {
    stanza ??= el;
  });
  parser.on("error", () => {
    stanza = undefined;
  });
  // The parser reads a stream: a wrapper element stands for it.
  parser.write(`<stanzas>${xmlText}</stanzas>`);
  const name = stanza?.name;
  if (stanza === undefined || (name !== "message" && name !== "presence" && name !== "iq")) return undefined;
  return {
    name,
    type: stanza.attrs.type ?? "",
    from: stanza.attrs.from ?? "",
    to: stanza.attrs.to ?? "",
    id: stanza.attrs.id ?? "",
    xml: xmlText,
  };
}

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
