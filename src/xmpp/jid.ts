/**
 * JIDs (RFC 7622). A bare JID is `local@domain` (or `domain`); a full JID adds `/resource`.
 * Every JID that enters the server is parsed and normalised once; the brands make sure the
 * rest of the code only ever handles normalised forms.
 */

/** A normalised bare JID: `local@domain` or `domain`. */
export type BareJid = string & { readonly __brand: "BareJid" };
/** A normalised full JID: `local@domain/resource`. */
export type FullJid = string & { readonly __brand: "FullJid" };

/** A parsed JID. */
export interface Jid {
  readonly local: string;
  readonly domain: string;
  readonly resource: string;
}

/** RFC 7622 §3.1: "each part ... MUST NOT be more than 1023 octets". */
const MAX_PART_BYTES = 1023;

/**
 * RFC 7622 §3.3.1: the localpart excludes `"&'/:<>@` and, through the PRECIS IdentifierClass,
 * spaces and control characters.
 */
const LOCALPART_FORBIDDEN = /[\s"&'/:<>@\p{Cc}]/u;
const DOMAIN_FORBIDDEN = /[\s"&'/:<>@\\\p{Cc}]/u;
const RESOURCE_FORBIDDEN = /\p{Cc}/u;

function byteLength(value: string): number {
  return Buffer.byteLength(value, "utf8");
}

/** Normalises a localpart: PRECIS UsernameCaseMapped, approximated by NFKC + lower case. */
export function normalizeLocal(local: string): string | undefined {
  const value = local.normalize("NFKC").toLowerCase();
  if (value.length === 0 || byteLength(value) > MAX_PART_BYTES || LOCALPART_FORBIDDEN.test(value)) {
    return undefined;
  }
  return value;
}

/** Normalises a domainpart: lower case, no trailing dot (RFC 7622 §3.2). */
export function normalizeDomain(domain: string): string | undefined {
  let value = domain.normalize("NFKC").toLowerCase();
  if (value.endsWith(".")) value = value.slice(0, -1);
  if (value.length === 0 || byteLength(value) > MAX_PART_BYTES || DOMAIN_FORBIDDEN.test(value)) {
    return undefined;
  }
  if (value.startsWith("[")) return value.endsWith("]") ? value : undefined;
  return value;
}

/** Normalises a resourcepart: PRECIS OpaqueString, approximated by NFC. */
export function normalizeResource(resource: string): string | undefined {
  const value = resource.normalize("NFC");
  if (value.length === 0 || byteLength(value) > MAX_PART_BYTES || RESOURCE_FORBIDDEN.test(value)) {
    return undefined;
  }
  return value;
}

/** Parses and normalises a JID; returns `undefined` when it is malformed. */
export function parseJid(input: string): Jid | undefined {
  const slash = input.indexOf("/");
  const beforeResource = slash === -1 ? input : input.slice(0, slash);
  const rawResource = slash === -1 ? undefined : input.slice(slash + 1);
  const at = beforeResource.lastIndexOf("@");
  const rawLocal = at === -1 ? undefined : beforeResource.slice(0, at);
  const rawDomain = at === -1 ? beforeResource : beforeResource.slice(at + 1);

  const domain = normalizeDomain(rawDomain);
  if (domain === undefined) return undefined;
  let local = "";
  if (rawLocal !== undefined) {
    const normalized = normalizeLocal(rawLocal);
    if (normalized === undefined) return undefined;
    local = normalized;
  }
  let resource = "";
  if (rawResource !== undefined) {
    const normalized = normalizeResource(rawResource);
    if (normalized === undefined) return undefined;
    resource = normalized;
  }
  return { local, domain, resource };
}

/** The bare form of a parsed JID. */
export function bareOf(jid: Jid): BareJid {
  return (jid.local === "" ? jid.domain : `${jid.local}@${jid.domain}`) as BareJid;
}

/** The full form of a parsed JID (bare when it has no resource). */
export function formatJid(jid: Jid): string {
  const bare = bareOf(jid);
  return jid.resource === "" ? bare : `${bare}/${jid.resource}`;
}

/** Builds a full JID from a bare JID and a normalised resource. */
export function fullJid(bare: BareJid, resource: string): FullJid {
  return `${bare}/${resource}` as FullJid;
}

/** Parses a string that must be a bare JID with a localpart, e.g. a user name given to the CLI. */
export function parseUserJid(input: string): BareJid | undefined {
  const jid = parseJid(input);
  if (jid === undefined || jid.local === "" || jid.resource !== "") return undefined;
  return bareOf(jid);
}

/** Splits a full JID string into its bare part and resource. */
export function splitFullJid(full: FullJid): { bare: BareJid; resource: string } {
  const slash = full.indexOf("/");
  return { bare: full.slice(0, slash) as BareJid, resource: full.slice(slash + 1) };
}
