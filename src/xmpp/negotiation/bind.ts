/**
 * Resource binding (RFC 6120 §7): the client asks for a resource (or gets a random one), the
 * server binds the full JID and answers with it. The session is the server's (StreamHost.bind);
 * it holds what it would send until the result has gone out, so nothing precedes the result.
 */
import { randomBytes } from "node:crypto";
import { type Element, xml } from "@xmpp/xml";
import { type FullJid, fullJid, normalizeResource } from "../jid.ts";
import { NS_BIND, NS_PRE_APPROVAL, NS_ROSTER_VER, NS_SESSION, NS_SM } from "../ns.ts";
import { errorReply, iqResult } from "../stanza.ts";
import type { BoundSession } from "../stream-host.ts";
import type { NegotiatingStream } from "./negotiating-stream.ts";

/**
 * What an authenticated stream offers: binding, the RFC 3921 session marked optional (RFC 6121
 * Appendix E) for clients that still send it, XEP-0198, roster versioning and pre-approval.
 */
export function bindFeatures(): string {
  return (
    `<bind xmlns="${NS_BIND}"/>` +
    `<session xmlns="${NS_SESSION}"><optional/></session>` +
    `<sm xmlns="${NS_SM}"/>` +
    `<ver xmlns="${NS_ROSTER_VER}"/>` +
    `<sub xmlns="${NS_PRE_APPROVAL}"/>`
  );
}

/**
 * What a stream bound through XEP-0386 (or resumed inline) still offers after SASL2's
 * `<success/>`: not binding, but XEP-0198 while it is not enabled (a client may enable it the
 * §3 way after a Bind 2 that did not), roster versioning and pre-approval.
 */
export function boundFeatures(smEnabled: boolean): string {
  return `${smEnabled ? "" : `<sm xmlns="${NS_SM}"/>`}<ver xmlns="${NS_ROSTER_VER}"/><sub xmlns="${NS_PRE_APPROVAL}"/>`;
}

/** Whether `el` is a bind request. */
export function isBindRequest(el: Element): boolean {
  return el.name === "iq" && el.getChild("bind", NS_BIND) !== undefined && el.attrs.type === "set";
}

/**
 * Binds `full` to the stream: the session, attached and holding its output until `release()`;
 * "busy" when the cluster could not take it now; nothing when the stream closed meanwhile.
 */
export async function bindResource(
  stream: NegotiatingStream,
  full: FullJid,
): Promise<BoundSession | "busy" | undefined> {
  const session = await stream.host.bind(full, stream);
  if (session === undefined) {
    stream.binding = false;
    return "busy";
  }
  if (stream.closing || stream.closed) {
    session.end();
    return undefined;
  }
  stream.attach(session);
  return session;
}

/** Answers a bind request. */
export async function onBind(stream: NegotiatingStream, iq: Element): Promise<void> {
  if (stream.binding) return stream.send(errorReply(iq, "not-allowed").toString());
  stream.binding = true;
  const requested = iq.getChild("bind", NS_BIND)?.getChildText("resource");
  let resource: string | undefined;
  if (requested === null || requested === undefined || requested.trim() === "") {
    resource = randomBytes(8).toString("hex");
  } else {
    resource = normalizeResource(requested);
    if (resource === undefined) {
      stream.binding = false;
      return stream.send(errorReply(iq, "bad-request", { text: "invalid resource" }).toString());
    }
  }
  const full = fullJid(stream.jid!, resource);
  const session = await bindResource(stream, full);
  if (session === "busy") {
    // RFC 6120 §7.6.2 / §8.3.3.18: the server is busy (partitions moving); retry later.
    return stream.send(
      errorReply(iq, "resource-constraint", { text: "the server is busy; try binding again" }).toString(),
    );
  }
  if (session === undefined) return;
  stream.send(iqResult(iq, undefined, xml("bind", { xmlns: NS_BIND }, xml("jid", {}, full))).toString());
  session.release();
}
