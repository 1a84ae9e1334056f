/**
 * In-band registration (XEP-0077) before authentication, when the configuration allows it:
 * the form, then the account, throttled per address (the allow-listed addresses excepted).
 */
import { type Element, xml } from "@xmpp/xml";
import type { BareJid } from "../jid.ts";
import { normalizeLocal } from "../jid.ts";
import { NS_REGISTER, NS_REGISTER_FEATURE } from "../ns.ts";
import { errorReply, iqResult } from "../stanza.ts";
import type { NegotiatingStream } from "./negotiating-stream.ts";

/** The stream feature (XEP-0077 §9). */
export function registerFeature(): string {
  return `<register xmlns="${NS_REGISTER_FEATURE}"/>`;
}

/** Whether `el` is a registration request. */
export function isRegisterRequest(el: Element): boolean {
  return el.name === "iq" && el.getChild("query", NS_REGISTER) !== undefined;
}

/** Answers a registration request. */
export async function onRegister(stream: NegotiatingStream, iq: Element): Promise<void> {
  const { host } = stream;
  const query = iq.getChild("query", NS_REGISTER)!;
  const domain = host.config.domain;
  if (!stream.secure && host.config.tls.requireBeforeAuth) {
    return stream.send(
      errorReply(iq, "not-authorized", { from: domain, text: "TLS is required" }).toString(),
    );
  }
  if (iq.attrs.type === "get") {
    const form = xml(
      "query",
      { xmlns: NS_REGISTER },
      xml("instructions", {}, "Choose a username and password."),
      xml("username"),
      xml("password"),
    );
    return stream.send(iqResult(iq, domain, form).toString());
  }
  if (iq.attrs.type !== "set") return stream.send(errorReply(iq, "bad-request", { from: domain }).toString());
  const username = query.getChildText("username");
  const password = query.getChildText("password");
  const local = username === null ? undefined : normalizeLocal(username);
  if (local === undefined || password === null || password === "") {
    return stream.send(errorReply(iq, "not-acceptable", { from: domain }).toString());
  }
  const allowListed = host.config.registration.allowList.includes(stream.remoteAddress);
  if (!allowListed) {
    const decision = await host.registrationThrottle.check(stream.remoteAddress);
    if (!decision.allowed) {
      return stream.send(
        errorReply(iq, "resource-constraint", { from: domain, text: "too many registrations" }).toString(),
      );
    }
  }
  const jid = `${local}@${domain}` as BareJid;
  if (!(await host.register(jid, password)))
    return stream.send(errorReply(iq, "conflict", { from: domain }).toString());
  if (!allowListed) await host.registrationThrottle.recordFailure(stream.remoteAddress);
  stream.log.info({ jid }, "account registered in-band");
  stream.send(iqResult(iq, domain).toString());
}
