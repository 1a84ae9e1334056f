/**
 * SASL identities to JIDs. RFC 6120 §6.3.8: "the simple user name ... is the localpart"; some
 * clients send the whole bare JID instead, which is accepted when its domain is ours.
 */
import { type BareJid, normalizeDomain, normalizeLocal, parseUserJid } from "../jid.ts";

/**
 * The account an authentication identity (PLAIN authcid, SCRAM username) names: a localpart of
 * `domain`, or a bare JID whose domain is `domain`. Undefined when it names no account here.
 */
export function resolveAuthcid(authcid: string, domain: string): BareJid | undefined {
  const ourDomain = normalizeDomain(domain);
  if (ourDomain === undefined) return undefined;
  if (authcid.includes("@")) {
    const jid = parseUserJid(authcid);
    return jid !== undefined && jid.slice(jid.lastIndexOf("@") + 1) === ourDomain ? jid : undefined;
  }
  // normalizeLocal applies NFKC, which also stands in for SASLprep (RFC 4013) here.
  const local = normalizeLocal(authcid);
  return local === undefined ? undefined : (`${local}@${ourDomain}` as BareJid);
}

/**
 * Whether an authorization identity is acceptable for `jid`. RFC 6120 §6.3.8: the server
 * "MUST verify that the authorization identity ... is one that the entity is allowed to
 * act on behalf of"; a user may act only as itself, so the authzid must be empty or its JID.
 */
export function isAuthzidAllowed(authzid: string, jid: BareJid | undefined): boolean {
  if (authzid === "") return true;
  return jid !== undefined && parseUserJid(authzid) === jid;
}
