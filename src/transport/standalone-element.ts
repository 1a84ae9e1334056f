/** Elements sent without an enclosing stream element (WebSocket messages, BOSH bodies). */
import { NS_CLIENT, NS_STREAM } from "../xmpp/ns.ts";

/**
 * One element of the stream, made readable on its own (RFC 7395 §3.3.3, XEP-0206 §8): a stanza
 * without a namespace gets the client namespace, a stream element the `stream` prefix's
 * declaration, which the enclosing `<stream:stream>` gives them on TCP.
 */
export function standaloneElement(text: string): string {
  const match = /^<([A-Za-z:]+)([\s/>])/.exec(text);
  if (match === null) return text;
  const name = match[1]!;
  const at = 1 + name.length;
  if (name.startsWith("stream:")) {
    if (text.slice(0, text.indexOf(">")).includes("xmlns:stream=")) return text;
    return `${text.slice(0, at)} xmlns:stream="${NS_STREAM}"${text.slice(at)}`;
  }
  if ((name === "message" || name === "presence" || name === "iq") && !hasXmlns(text)) {
    return `${text.slice(0, at)} xmlns="${NS_CLIENT}"${text.slice(at)}`;
  }
  return text;
}

/** Whether the first tag of `text` declares a default namespace. */
function hasXmlns(text: string): boolean {
  const end = text.indexOf(">");
  return /\sxmlns=["']/.test(end < 0 ? text : text.slice(0, end));
}
