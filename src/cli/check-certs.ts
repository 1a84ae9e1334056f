/**
 * `starling check certs`: the certificate the node would serve to clients (`tls.certFile`, or
 * the self-signed one generated in `<dataDir>/tls/`): whether it names the XMPP domain
 * (RFC 6125, RFC 7590), when it expires, whether the key belongs to it, who signed it, and
 * whether its chain is in order.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { isIP } from "node:net";
import { rootCertificates } from "node:tls";
import type { Config } from "../config/defaults.ts";
import { selfSignedPaths } from "../tls/certificate.ts";
import { type Finding, finding } from "./check-finding.ts";

/** A certificate expiring sooner than this is a warning. */
export const EXPIRY_WARNING_DAYS = 14;

const DAY_MS = 24 * 3600 * 1000;

/** The findings of the certs section; `now` is for tests of expiry. */
export async function certificateFindings(config: Readonly<Config>, now = new Date()): Promise<Finding[]> {
  const found: Finding[] = [];
  const add = (level: Finding["level"], message: string, fix?: string) =>
    found.push(finding(level, "certs", message, fix));

  const configured = config.tls.certFile !== null && config.tls.keyFile !== null;
  const generated = selfSignedPaths(config.dataDir);
  const certFile = config.tls.certFile ?? generated.certFile;
  const keyFile = config.tls.keyFile ?? generated.keyFile;
  const label = configured ? `tls.certFile ${certFile}` : `the generated certificate ${certFile}`;

  let text: string;
  try {
    text = await readFile(certFile, "utf8");
  } catch (error) {
    if (!configured && (error as NodeJS.ErrnoException).code === "ENOENT") {
      add(
        "warn",
        `no certificate yet: a self-signed one for ${config.domain} will be generated at start in ${generated.dir}, and clients must be told to trust it`,
        "set tls.certFile and tls.keyFile to a certificate from a CA (Let's Encrypt) for the domain",
      );
      return found;
    }
    add(
      "error",
      `cannot read ${label}: ${(error as Error).message}`,
      "check the path and the file's permissions",
    );
    return found;
  }
  let chain: X509Certificate[];
  try {
    chain = (text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
      (pem) => new X509Certificate(pem),
    );
  } catch (error) {
    add(
      "error",
      `${label} holds a malformed certificate: ${(error as Error).message}`,
      "replace the file with the PEM certificate chain as the CA issued it",
    );
    return found;
  }
  if (chain.length === 0) {
    add(
      "error",
      `${label} holds no PEM certificate`,
      "point tls.certFile at a PEM file (-----BEGIN CERTIFICATE-----)",
    );
    return found;
  }
  // The server's own certificate comes first, then each issuer in turn (RFC 8446 §4.4.2: "The
  // sender's certificate MUST come in the first CertificateEntry in the list. Each following
  // certificate SHOULD directly certify the one immediately preceding it."). Out of order, the
  // rest is checked on the file's first non-CA certificate, so the findings name the real problem.
  const outOfOrder = chain.findIndex(
    (cert, i) =>
      i + 1 < chain.length && !(cert.checkIssued(chain[i + 1]!) && cert.verify(chain[i + 1]!.publicKey)),
  );
  if (outOfOrder >= 0) {
    const [cert, issuer] = [chain[outOfOrder]!, chain[outOfOrder + 1]!];
    add(
      "error",
      `certificate ${outOfOrder + 1} of ${certFile} (${commonNameOf(cert) ?? cert.subject}) was not issued by certificate ${outOfOrder + 2} (${commonNameOf(issuer) ?? issuer.subject}): the chain is out of order`,
      "put the server's certificate first, then each issuer in turn (Let's Encrypt's fullchain.pem is in order)",
    );
  }
  const leaf = outOfOrder >= 0 ? (chain.find((cert) => !cert.ca) ?? chain[0]!) : chain[0]!;

  // RFC 7590 §3.2 and RFC 6125 §6.2.1: the reference identifier a client checks is the XMPP
  // domain it asked for (its DNS-ID), not the host an SRV record led it to.
  const names = dnsNamesOf(leaf);
  if (isIP(config.domain) !== 0) {
    if (leaf.checkIP(config.domain) === undefined) {
      add(
        "error",
        `${label} does not name the address ${config.domain} (its names: ${describeNames(leaf, names)})`,
        `get a certificate whose subjectAltName lists the IP address ${config.domain}`,
      );
    } else add("ok", `${label} names ${config.domain}`);
  } else if (names.some((name) => coversDomain(name, config.domain))) {
    const name = names.find((n) => coversDomain(n, config.domain));
    add(
      "ok",
      `${label} names ${config.domain}${name === config.domain.toLowerCase() ? "" : ` (as ${name})`}`,
    );
  } else if (
    names.length === 0 &&
    commonNameOf(leaf) !== undefined &&
    coversDomain(commonNameOf(leaf)!, config.domain)
  ) {
    // RFC 6125 §6.4.4: matching the CN is only a fallback, which many clients no longer do.
    add(
      "warn",
      `${label} names ${config.domain} only in its subject's common name, which many clients ignore (RFC 6125 §6.4.4)`,
      `get a certificate whose subjectAltName lists ${config.domain}`,
    );
  } else if (!configured) {
    // ensureCertificate (src/tls/certificate.ts) replaces it at start for the new domain.
    add(
      "warn",
      `${label} is for ${describeNames(leaf, names)}, not for the domain ${config.domain}: the node makes a new one when it next starts`,
      "restart the node after changing the domain",
    );
  } else {
    add(
      "error",
      `${label} is for ${describeNames(leaf, names)}, not for the domain ${config.domain}: clients will refuse it`,
      `get a certificate whose subjectAltName lists ${config.domain}`,
    );
  }

  for (const [index, cert] of chain.entries()) {
    const what =
      cert === leaf
        ? label
        : `certificate ${index + 1} of ${certFile} (${commonNameOf(cert) ?? cert.subject})`;
    const daysLeft = Math.floor((cert.validToDate.getTime() - now.getTime()) / DAY_MS);
    const renew = configured
      ? "renew it, then run starling reload"
      : "restart the node: a generated certificate within 7 days of expiry is replaced at start";
    if (cert.validFromDate > now) {
      add(
        "error",
        `${what} is not valid before ${isoDate(cert.validFromDate)}`,
        "check this machine's clock, or use the previous certificate until then",
      );
    } else if (cert.validToDate <= now) {
      add("error", `${what} expired on ${isoDate(cert.validToDate)}`, renew);
    } else if (daysLeft < EXPIRY_WARNING_DAYS) {
      add("warn", `${what} expires on ${isoDate(cert.validToDate)}, in ${daysLeft} days`, renew);
    } else if (cert === leaf) {
      add("info", `${what} is valid until ${isoDate(cert.validToDate)} (${daysLeft} days)`);
    }
  }

  found.push(...(await keyFindings(leaf, keyFile, label)));

  if (isSelfSigned(leaf)) {
    add(
      "warn",
      `${label} is self-signed: clients refuse it unless each user is told to trust it`,
      `get a certificate from a CA (Let's Encrypt) for ${config.domain} and set tls.certFile and tls.keyFile`,
    );
    return found;
  }
  if (outOfOrder >= 0) return found;
  const last = chain.at(-1)!;
  const roots = knownRoots();
  if (
    roots.some(
      (root) =>
        root.fingerprint256 === last.fingerprint256 ||
        (last.checkIssued(root) && last.verify(root.publicKey)),
    )
  ) {
    add(
      "ok",
      `${label} chains to a public root CA (${chain.length} certificate${chain.length === 1 ? "" : "s"} in the file)`,
    );
  } else if (isSelfSigned(last)) {
    add(
      "warn",
      `${label} chains to ${commonNameOf(last) ?? last.subject}, a CA that is not a public root: clients must be told to trust it`,
      "fine for a private CA your clients trust; otherwise get a certificate from a public CA",
    );
  } else {
    add(
      "warn",
      `${label} ends with ${commonNameOf(last) ?? last.subject}, issued by ${commonNameOf(last, "issuer") ?? last.issuer}, which the file does not hold and which is not a public root: clients that lack it will refuse the certificate`,
      "append the intermediate certificate(s) to tls.certFile (Let's Encrypt: use fullchain.pem, not cert.pem)",
    );
  }
  return found;
}

/** Whether the private key exists, parses, is private enough and belongs to `leaf`. */
async function keyFindings(leaf: X509Certificate, keyFile: string, label: string): Promise<Finding[]> {
  let key: KeyObject;
  try {
    key = createPrivateKey(await readFile(keyFile, "utf8"));
  } catch (error) {
    return [
      finding(
        "error",
        "certs",
        `cannot use the key ${keyFile}: ${(error as Error).message}`,
        "point tls.keyFile at the certificate's unencrypted PEM private key",
      ),
    ];
  }
  if (!leaf.checkPrivateKey(key)) {
    return [
      finding(
        "error",
        "certs",
        `the key ${keyFile} does not belong to ${label}: TLS handshakes will fail`,
        "use the key the certificate was issued for (a renewal may bring a new key: copy both files)",
      ),
    ];
  }
  const found = [finding("ok", "certs", `the key ${keyFile} matches the certificate`)];
  const { mode } = await stat(keyFile);
  if (process.platform !== "win32" && (mode & 0o077) !== 0) {
    found.push(
      finding(
        "warn",
        "certs",
        `the key ${keyFile} can be read by other users (mode ${(mode & 0o777).toString(8)})`,
        `chmod 600 ${keyFile}`,
      ),
    );
  }
  return found;
}

/**
 * Whether a certificate's DNS name covers `domain`, by RFC 6125 §6.4.3: "The client SHOULD NOT
 * attempt to match a presented identifier in which the wildcard character comprises a label
 * other than the left-most label", and "*.example.com would match foo.example.com but not
 * bar.foo.example.com or example.com". Partial-label wildcards (`f*.example.com`), which the
 * RFC leaves to the client and most clients refuse, do not match; nor does a wildcard over a
 * bare top-level domain (`*.org`).
 */
export function coversDomain(presented: string, domain: string): boolean {
  const name = presented.toLowerCase().replace(/\.$/, "");
  const reference = domain.toLowerCase().replace(/\.$/, "");
  if (!name.startsWith("*.")) return !name.includes("*") && name === reference;
  const rest = name.slice(2);
  if (rest.includes("*") || !rest.includes(".")) return false;
  const dot = reference.indexOf(".");
  return dot > 0 && reference.slice(dot + 1) === rest;
}

/**
 * The dNSName entries of a certificate's subjectAltName. Node lists it as
 * `DNS:a.example, IP Address:127.0.0.1, ...`, quoting a value (as a JSON string) when it holds a
 * comma or a quote.
 */
export function dnsNamesOf(cert: X509Certificate): string[] {
  const names: string[] = [];
  for (const match of (cert.subjectAltName ?? "").matchAll(
    /(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g,
  )) {
    if (match[1] !== "DNS") continue;
    const value = match[2]!;
    names.push(value.startsWith('"') ? (JSON.parse(value) as string) : value);
  }
  return names;
}

/** The CN of the subject (or issuer), if any. */
function commonNameOf(cert: X509Certificate, which: "subject" | "issuer" = "subject"): string | undefined {
  return /^CN=(.*)$/m.exec(cert[which])?.[1];
}

function describeNames(cert: X509Certificate, names: readonly string[]): string {
  if (names.length > 0) return names.join(", ");
  if (cert.subjectAltName !== undefined) return cert.subjectAltName;
  return `CN ${commonNameOf(cert) ?? "(none)"}`;
}

function isSelfSigned(cert: X509Certificate): boolean {
  // Not checkIssued(cert): OpenSSL also wants keyCertSign there, which a self-signed server
  // certificate rarely has.
  return cert.subject === cert.issuer && cert.verify(cert.publicKey);
}

let roots: X509Certificate[] | undefined;
/** The root CAs bundled with Node (Mozilla's list), parsed once. */
function knownRoots(): X509Certificate[] {
  roots ??= rootCertificates.map((pem) => new X509Certificate(pem));
  return roots;
}

function isoDate(date: Date): string {
  return date.toISOString().slice(0, 10);
}
