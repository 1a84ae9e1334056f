/**
 * Building stanzas and errors. Stanza errors follow RFC 6120 §8.3; stream errors §4.9.
 */
import { type Element, escapeXML, xml } from "@xmpp/xml";
import type { StanzaError, StanzaErrorCondition, StreamErrorCondition } from "../errors.ts";
import { STANZA_ERROR_TYPES } from "../errors.ts";
import { NS_CLIENT, NS_SM, NS_STANZAS_ERROR, NS_STREAMS_ERROR } from "./ns.ts";

/** Serialises a stanza for routing: with xmlns='jabber:client', so it can be forwarded or wrapped as is. */
export function serializeStanza(stanza: Element): string {
  if (stanza.attrs.xmlns === undefined) stanza.attrs.xmlns = NS_CLIENT;
  return stanza.toString();
}

/**
 * RFC 6120 §8.3.1: the error reply swaps `to` and `from`, keeps `id`, sets type='error', and
 * carries an `<error/>` child with the defined condition.
 */
export function errorReply(
  stanza: Element,
  condition: StanzaErrorCondition,
  options: { text?: string; from?: string; extra?: Element } = {},
): Element {
  const reply = xml(stanza.name, {
    xmlns: NS_CLIENT,
    type: "error",
    id: stanza.attrs.id,
    to: stanza.attrs.from,
    from: options.from ?? stanza.attrs.to,
  });
  // RFC 6120 §8.3.1: the error MAY include the original payload, which lets a client match
  // the error to what it sent even when the stanza had no id.
  for (const child of stanza.children) {
    if (typeof child === "string" || child.name !== "error") reply.append(child);
  }
  const error = reply.c("error", { type: STANZA_ERROR_TYPES[condition] });
  error.c(condition, { xmlns: NS_STANZAS_ERROR });
  if (options.text !== undefined) error.c("text", { xmlns: NS_STANZAS_ERROR }).t(options.text);
  if (options.extra !== undefined) error.cnode(options.extra);
  return reply;
}

/** An error reply for a thrown {@link StanzaError}. */
export function errorReplyFor(stanza: Element, error: StanzaError, from?: string): Element {
  const reply = errorReply(stanza, error.condition, from === undefined ? {} : { from });
  reply.getChild("error")!.attrs.type = error.type;
  return reply;
}

/** An error reply built from routing data only, for stanzas that travel as strings. */
export function errorReplyXml(
  stanza: { name: string; id: string; from: string; to: string; xml: string },
  condition: StanzaErrorCondition,
): string {
  const id = stanza.id === "" ? "" : ` id="${escapeXML(stanza.id)}"`;
  // The original payload, as in errorReply: everything between the root's tags.
  const open = stanza.xml.indexOf(">");
  const payload =
    stanza.xml[open - 1] === "/" ? "" : stanza.xml.slice(open + 1, stanza.xml.lastIndexOf("</"));
  return (
    `<${stanza.name} xmlns="${NS_CLIENT}" type="error"${id} to="${escapeXML(stanza.from)}" from="${escapeXML(stanza.to)}">` +
    `${payload}<error type="${STANZA_ERROR_TYPES[condition]}"><${condition} xmlns="${NS_STANZAS_ERROR}"/></error></${stanza.name}>`
  );
}

/** An iq result for a request. */
export function iqResult(iq: Element, from?: string, child?: Element): Element {
  const result = xml("iq", { xmlns: NS_CLIENT, type: "result", id: iq.attrs.id, to: iq.attrs.from, from });
  if (child !== undefined) result.cnode(child);
  return result;
}

/** A stream error element (RFC 6120 §4.9). */
export function streamErrorXml(condition: StreamErrorCondition, text?: string, appCondition = ""): string {
  const textXml = text === undefined ? "" : `<text xmlns="${NS_STREAMS_ERROR}">${escapeXML(text)}</text>`;
  // RFC 6120 §4.9.4: an application-specific condition follows the defined one (and the text).
  return `<stream:error><${condition} xmlns="${NS_STREAMS_ERROR}"/>${textXml}${appCondition}</stream:error>`;
}

/**
 * XEP-0198 §6: a `<failed/>` answering `<enable/>` or `<resume/>`, with its stanza error
 * condition and, when known, how many of the client's stanzas were handled (XEP-0198 1.6).
 */
export function smFailedXml(condition: StanzaErrorCondition, handled?: number): string {
  const h = handled === undefined ? "" : ` h="${handled}"`;
  return `<failed xmlns="${NS_SM}"${h}><${condition} xmlns="${NS_STANZAS_ERROR}"/></failed>`;
}

/**
 * XEP-0198 §6: the application-specific condition of the stream error for an `h` above the
 * number of stanzas sent (`send-count`).
 */
export function handledCountTooHighXml(h: number, sendCount: number): string {
  return `<handled-count-too-high xmlns="${NS_SM}" h="${h}" send-count="${sendCount}"/>`;
}

/**
 * RFC 6120 §4.9.3.19: `<see-other-host/>` carries the address to connect to instead
 * ("host:port", an IPv6 address in brackets).
 */
export function seeOtherHostXml(address: string, text?: string): string {
  const textXml = text === undefined ? "" : `<text xmlns="${NS_STREAMS_ERROR}">${escapeXML(text)}</text>`;
  return `<stream:error><see-other-host xmlns="${NS_STREAMS_ERROR}">${escapeXML(address)}</see-other-host>${textXml}</stream:error>`;
}

/** Sets the `to`/`from` attributes on a serialised stanza's root without parsing it. */
export function readdress(stanzaXml: string, to: string): string {
  // Routed stanzas were serialised by ltx: every attribute is name="value" with quotes escaped
  // inside values, so the start tag can be walked attribute by attribute. A value is never
  // searched for ` to=` (a client could hide one inside its id).
  let end = stanzaXml.indexOf(">");
  if (stanzaXml[end - 1] === "/") end -= 1;
  const head = stanzaXml.slice(0, end);
  const nameEnd = head.search(/\s|$/);
  let attributes = "";
  for (const match of head.slice(nameEnd).matchAll(/\s*([^\s=]+)="([^"]*)"/g)) {
    if (match[1] !== "to") attributes += ` ${match[1]}="${match[2]}"`;
  }
  return `${head.slice(0, nameEnd)} to="${escapeXML(to)}"${attributes}${stanzaXml.slice(end)}`;
}
