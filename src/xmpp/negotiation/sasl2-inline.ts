/**
 * What an XEP-0388 `<authenticate/>` asks beside authentication, done once SASL succeeded and
 * before `<success/>` goes out, so that one round trip logs a client in:
 *
 * - XEP-0198 `<resume/>` first: taken over, the session answers with `<success/>` carrying
 *   `<resumed/>`, then re-sends what the client had not acknowledged. Failed, `<success/>`
 *   carries the `<failed/>` and a `<bind/>` beside it still binds (XEP-0386 §3.2, the note).
 * - XEP-0386 Bind 2 `<bind/>`: a resource made of the client's `<tag/>` and an identifier
 *   derived from its `<user-agent id/>` (stable per device, so a device that logs in again
 *   replaces its old session; the id itself is not shown), with the features it enables at
 *   once: XEP-0198 `<enable/>` (its `<enabled/>` goes in `<bound/>`) and XEP-0280 `<enable/>`.
 *
 * Offline messages are delivered as after a legacy bind, not dropped: the XEP drops them for a
 * client to fetch from its archive, and this server keeps no XEP-0313 archive.
 */
import { createHash, randomBytes } from "node:crypto";
import type { Element } from "@xmpp/xml";
import { type BareJid, fullJid, normalizeResource } from "../jid.ts";
import { NS_BIND2, NS_CARBONS, NS_SM } from "../ns.ts";
import { bindResource } from "./bind.ts";
import type { NegotiatingStream } from "./negotiating-stream.ts";
import { attemptResume } from "./resume.ts";

/** The longest client tag kept in a resource; a longer one is cut. */
export const MAX_BIND2_TAG_LENGTH = 32;

/** The inline features advertised inside SASL2's `<inline/>` (XEP-0388 §2.1, XEP-0386 §3.1). */
export function sasl2InlineFeatures(): string {
  return (
    `<bind xmlns="${NS_BIND2}"><inline>` +
    `<feature var="${NS_SM}"/><feature var="${NS_CARBONS}"/>` +
    `</inline></bind><sm xmlns="${NS_SM}"/>`
  );
}

/**
 * Completes a successful SASL2 exchange for `jid`: resumes or binds as `request` asks, sends
 * `<success/>` (made by `success` from the authorization identifier and what goes inside it)
 * and the stream's features, then lets the session speak.
 */
export async function completeSasl2(
  stream: NegotiatingStream,
  jid: BareJid,
  request: Element,
  success: (identifier: string, inner: string) => string,
): Promise<void> {
  let inner = "";
  const resume = request.getChild("resume", NS_SM);
  if (resume !== undefined) {
    const attempt = await attemptResume(stream, resume);
    if (attempt === undefined) return;
    if ("session" in attempt) {
      // <success/> with <resumed/>, the features, then the stanzas the client had not
      // acknowledged. Each element on its own: over WebSocket every send is one message, which
      // holds one element (RFC 7395 §3.3.3).
      attempt.session.resumeOn(attempt.previd, (resumed) => {
        stream.send(success(attempt.session.full, resumed));
        stream.send(stream.featuresXml());
      });
      return;
    }
    inner = attempt.failed;
  }
  const bind = request.getChild("bind", NS_BIND2);
  if (bind !== undefined && !stream.binding) {
    stream.binding = true;
    const full = fullJid(jid, bind2Resource(jid, bind, request));
    const session = await bindResource(stream, full);
    if (session === undefined) return;
    if (session !== "busy") {
      const features = bind.getChildElements().filter((feature) => feature.name === "enable");
      if (features.some((feature) => feature.attrs.xmlns === NS_CARBONS)) {
        // XEP-0386 §3.2: carbons "MUST succeed"; should the user's actor not answer in time, the
        // login goes on without them (the client may enable them the XEP-0280 way).
        await session.setCarbons(true).catch((error: unknown) => {
          stream.log.warn(
            { err: error, user: jid },
            "carbons not enabled inline; the client may enable them",
          );
        });
      }
      if (stream.closing || stream.closed) {
        // Gone before it heard of its session (as a legacy bind whose stream closed).
        session.end();
        return;
      }
      // Last, once nothing can fail: the resumption id goes out in this very <success/>.
      const sm = features.find((feature) => feature.attrs.xmlns === NS_SM);
      const enabled =
        sm === undefined ? "" : session.enableSm(sm.attrs.resume === "true" || sm.attrs.resume === "1");
      stream.send(success(full, `${inner}<bound xmlns="${NS_BIND2}">${enabled}</bound>`));
      stream.send(stream.featuresXml());
      session.release();
      return;
    }
    // The cluster could not bind now: authenticated without a resource; the client may bind
    // the RFC 6120 way (the features offer it), as after any SASL success.
    stream.log.warn({ user: jid }, "Bind 2 not done: the server is busy; the client may bind again");
  }
  stream.send(success(jid, inner));
  stream.send(stream.featuresXml());
}

/**
 * The resource for a Bind 2 request: `<tag>/<id>` (XEP-0386 §3.2.1), the id derived from the
 * account and the client's `<user-agent id/>`, or random without one.
 */
export function bind2Resource(jid: BareJid, bind: Element, request: Element): string {
  // Cut by code points, not UTF-16 units: half a surrogate pair is no character.
  const tagText = Array.from(bind.getChildText("tag")?.trim() ?? "")
    .slice(0, MAX_BIND2_TAG_LENGTH)
    .join("");
  const tag = tagText === "" ? undefined : normalizeResource(tagText.replaceAll("/", "-"));
  const agent = request.getChild("user-agent")?.attrs.id;
  const id =
    agent === undefined || agent === ""
      ? randomBytes(6).toString("hex")
      : createHash("sha256").update(`${jid}\n${agent}`).digest("base64url").slice(0, 12);
  return tag === undefined ? id : `${tag}/${id}`;
}
