/**
 * IQ requests the server answers itself: addressed to the server (disco, ping, version,
 * registration), to the user's own account (vCard, private storage, disco, ping), or to
 * another user's bare JID (vCard, disco). Routing and the defaults (service-unavailable for
 * anything unknown) live here, so handlers only see requests they understand.
 */
import { type Element, xml } from "@xmpp/xml";
import type { BareJid } from "../src/xmpp/jid.ts";
import {
  NS_BLOCKING,
  NS_CARBONS,
  NS_DISCO_INFO,
  NS_DISCO_ITEMS,
  NS_PING,
  NS_PRIVATE,
  NS_REGISTER,
  NS_SESSION,
  NS_VCARD,
  NS_VERSION,
} from "../src/xmpp/ns.ts";
import { errorReply, iqResult } from "../src/xmpp/stanza.ts";
import { parseElement } from "../src/xmpp/stream-parser.ts";
import type { SessionActor } from "./session-actor.ts";
import type { SessionContext } from "./session-context.ts";

/** Features the server advertises in disco#info (XEP-0030). */
function serverFeatures(ctx: SessionContext): string[] {
  const features = [
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_PING,
    NS_VERSION,
    NS_VCARD,
    NS_PRIVATE,
    NS_BLOCKING,
    NS_CARBONS,
    "msgoffline",
    "urn:xmpp:sm:3",
  ];
  if (ctx.config.registration.allow) features.push(NS_REGISTER);
  return features.sort();
}

function discoInfo(identity: { category: string; type: string; name?: string }, features: string[]): Element {
  const query = xml("query", { xmlns: NS_DISCO_INFO });
  query.c("identity", identity);
  for (const feature of features) query.c("feature", { var: feature });
  return query;
}

/** disco#info of the server (XEP-0030). */
function serverInfo(ctx: SessionContext): Element {
  return discoInfo({ category: "server", type: "im", name: "Starling" }, serverFeatures(ctx));
}

/** disco#info the server answers for an account's bare JID. */
function accountInfo(): Element {
  return discoInfo({ category: "account", type: "registered" }, [NS_DISCO_INFO, NS_DISCO_ITEMS]);
}

/** iq addressed to the server's domain. */
export async function handleServerIq(
  ctx: SessionContext,
  session: SessionActor,
  iq: Element,
): Promise<Element> {
  const payload = iq.getChildElements()[0]!;
  const ns = payload.attrs.xmlns;
  // RFC 6120 §8.2.3: the answer comes from the address asked, a resource of the server included.
  const from = iq.attrs.to ?? ctx.config.domain;
  if (iq.attrs.type === "get") {
    if (ns === NS_DISCO_INFO && payload.name === "query") {
      if (payload.attrs.node !== undefined) return errorReply(iq, "item-not-found");
      return iqResult(iq, from, serverInfo(ctx));
    }
    if (ns === NS_DISCO_ITEMS && payload.name === "query") {
      return iqResult(iq, from, xml("query", { xmlns: NS_DISCO_ITEMS }));
    }
    if (ns === NS_PING && payload.name === "ping") return iqResult(iq, from);
    if (ns === NS_VERSION && payload.name === "query") {
      // XEP-0092: name and version; the OS is optional and withheld.
      return iqResult(
        iq,
        from,
        xml("query", { xmlns: NS_VERSION }, xml("name", {}, "Starling"), xml("version", {}, ctx.version)),
      );
    }
    if (ns === NS_VCARD && payload.name === "vCard")
      return iqResult(iq, from, xml("vCard", { xmlns: NS_VCARD }));
  }
  if (ns === NS_REGISTER && payload.name === "query" && ctx.config.registration.allow) {
    return handleRegistrationChange(ctx, session, iq, payload);
  }
  if (isSessionRequest(iq, payload)) return iqResult(iq, from);
  return errorReply(iq, "service-unavailable", { from });
}

/** XEP-0077 §3.3: an authenticated user changes its password. */
async function handleRegistrationChange(
  ctx: SessionContext,
  session: SessionActor,
  iq: Element,
  query: Element,
) {
  if (iq.attrs.type === "get") {
    return iqResult(
      iq,
      ctx.config.domain,
      xml(
        "query",
        { xmlns: NS_REGISTER },
        xml("registered"),
        xml("username", {}, session.bare.split("@")[0]!),
      ),
    );
  }
  const password = query.getChildText("password");
  if (query.getChild("remove") !== undefined) {
    return errorReply(iq, "not-allowed", { text: "Ask an administrator to remove the account" });
  }
  if (password === null || password === "") return errorReply(iq, "bad-request");
  if (!ctx.accounts.managed) {
    return errorReply(iq, "not-allowed", { text: "Passwords are changed on the web site" });
  }
  if (!(await ctx.accounts.setPassword(session.bare, password))) return errorReply(iq, "item-not-found");
  return iqResult(iq, ctx.config.domain);
}

/** iq with no 'to' or to the user's own bare JID (RFC 6120 §10.3.3). */
export async function handleAccountIq(
  ctx: SessionContext,
  session: SessionActor,
  iq: Element,
): Promise<Element> {
  const payload = iq.getChildElements()[0]!;
  const ns = payload.attrs.xmlns;
  const get = iq.attrs.type === "get";
  if (ns === NS_VCARD && payload.name === "vCard") {
    if (get) return vcardResult(ctx, iq, session.bare);
    await ctx.store.putVCard(session.bare, payload.toString());
    return iqResult(iq);
  }
  if (ns === NS_PRIVATE && payload.name === "query") return handlePrivate(ctx, session.bare, iq, payload);
  if (ns === NS_PING && payload.name === "ping" && get) return iqResult(iq);
  if (ns === NS_DISCO_INFO && payload.name === "query" && get) {
    if (iq.attrs.to === undefined) {
      // A client that omits 'to' asks its server (many clients disco the server this way).
      return iqResult(iq, undefined, serverInfo(ctx));
    }
    return iqResult(iq, session.bare, accountInfo());
  }
  if (ns === NS_DISCO_ITEMS && payload.name === "query" && get) {
    return iqResult(iq, iq.attrs.to, xml("query", { xmlns: NS_DISCO_ITEMS }));
  }
  if (ns === NS_VERSION || ns === NS_REGISTER) return handleServerIq(ctx, session, iq);
  if (isSessionRequest(iq, payload)) return iqResult(iq);
  return errorReply(iq, "service-unavailable");
}

/**
 * RFC 3921 §3 session establishment, a no-op since RFC 6121 (Appendix E; the feature is
 * advertised as <optional/>). RFC 3921's own example addresses it to the domain, others send it
 * without 'to' or to their bare JID; libpurple treats any error as fatal, so every form that
 * reaches the server gets a result, before and after initial presence.
 */
function isSessionRequest(iq: Element, payload: Element): boolean {
  return iq.attrs.type === "set" && payload.name === "session" && payload.attrs.xmlns === NS_SESSION;
}

/** iq to another user's bare JID, answered by the server on that user's behalf. */
export async function handleOtherUserIq(
  ctx: SessionContext,
  _session: SessionActor,
  iq: Element,
  target: BareJid,
): Promise<Element> {
  const payload = iq.getChildElements()[0]!;
  const ns = payload.attrs.xmlns;
  if (iq.attrs.type === "get" && (await ctx.auth.userExists(target))) {
    if (ns === NS_VCARD && payload.name === "vCard") return vcardResult(ctx, iq, target);
    if (ns === NS_DISCO_INFO && payload.name === "query") {
      return iqResult(iq, target, accountInfo());
    }
    if (ns === NS_DISCO_ITEMS && payload.name === "query") {
      return iqResult(iq, target, xml("query", { xmlns: NS_DISCO_ITEMS }));
    }
  }
  if (ns === NS_PRIVATE) return errorReply(iq, "forbidden");
  // RFC 6121 §8.5.1: no such user, or nothing to answer for it.
  return errorReply(iq, "service-unavailable");
}

async function vcardResult(ctx: SessionContext, iq: Element, owner: BareJid): Promise<Element> {
  const stored = await ctx.store.getVCard(owner);
  // XEP-0054 §3.1: no vCard yet is an empty <vCard/>.
  return iqResult(
    iq,
    iq.attrs.to,
    stored === undefined ? xml("vCard", { xmlns: NS_VCARD }) : parseElement(stored),
  );
}

/** XEP-0049: one child element per request, in a namespace of the client's choosing. */
async function handlePrivate(
  ctx: SessionContext,
  owner: BareJid,
  iq: Element,
  query: Element,
): Promise<Element> {
  const children = query.getChildElements();
  if (children.length !== 1) return errorReply(iq, "bad-request");
  const child = children[0]!;
  const ns = child.attrs.xmlns;
  // XEP-0049 §2: "jabber:" namespaces are reserved and refused with not-acceptable.
  if (ns === undefined || ns === "" || ns.startsWith("jabber:")) return errorReply(iq, "not-acceptable");
  const key = `${child.name} ${ns}`;
  if (iq.attrs.type === "get") {
    const stored = await ctx.store.getPrivate(owner, key);
    return iqResult(
      iq,
      undefined,
      xml("query", { xmlns: NS_PRIVATE }, stored === undefined ? child : parseElement(stored)),
    );
  }
  await ctx.store.putPrivate(owner, key, child.toString());
  return iqResult(iq);
}
