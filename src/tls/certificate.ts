/**
 * The node's TLS certificate: the operator's files when `tls.certFile`/`tls.keyFile` are set,
 * otherwise a self-signed certificate for the domain, made on first start in
 * `<dataDir>/tls/` and reused afterwards, so a fresh install offers STARTTLS at once
 * (RFC 6120 §5.1: "Support for STARTTLS is REQUIRED in XMPP client and server
 * implementations").
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { generate } from "selfsigned";
import type { PeerTlsOptions } from "../cluster/peer/peer-tls.ts";
import type { Config } from "../config/defaults.ts";
import { XmppServerError } from "../errors.ts";
import type { Logger } from "../log.ts";

/** A PEM certificate chain and its private key. */
export interface CertificatePair {
  cert: string;
  key: string;
  /** True when Starling made it (clients will not trust it without being told to). */
  selfSigned: boolean;
}

/** Validity of a generated certificate. */
const SELF_SIGNED_VALIDITY_DAYS = 825;
/** A generated certificate this close to expiry is replaced at start. */
const RENEW_BEFORE_MS = 7 * 24 * 3600 * 1000;

/** Where the generated certificate and key live. */
export function selfSignedPaths(dataDir: string): { dir: string; certFile: string; keyFile: string } {
  const dir = join(dataDir, "tls");
  return { dir, certFile: join(dir, "cert.pem"), keyFile: join(dir, "key.pem") };
}

/**
 * Returns the certificate the node serves. Configured files that cannot be read, are not PEM,
 * or do not belong together throw `XSRV_CONFIG_INVALID`. Without configured files, the
 * generated pair in `<dataDir>/tls/` is reused while it is valid for `config.domain`, and made
 * (once, logged at info) when it is missing, expired or for another domain.
 */
export async function ensureCertificate(config: Readonly<Config>, log: Logger): Promise<CertificatePair> {
  const { certFile, keyFile } = config.tls;
  if (certFile !== null && keyFile !== null) {
    return { ...(await readPair("tls", certFile, keyFile)), selfSigned: false };
  }

  const paths = selfSignedPaths(config.dataDir);
  const existing = await readExisting(paths.certFile, paths.keyFile);
  if (existing !== undefined) {
    const problem = checkPair(existing.cert, existing.key) ?? checkSelfSigned(existing.cert, config.domain);
    if (problem === undefined) return { ...existing, selfSigned: true };
    log.info({ certFile: paths.certFile, reason: problem }, "replacing the self-signed certificate");
  }

  const made = await makeSelfSigned(config.domain);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  // Written beside and renamed into place, so a crash never leaves half a PEM behind.
  await writeAtomically(paths.keyFile, made.key, 0o600);
  await writeAtomically(paths.certFile, made.cert, 0o644);
  log.info(
    { certFile: paths.certFile, keyFile: paths.keyFile, domain: config.domain },
    "made a self-signed certificate; clients must be told to trust it, or set tls.certFile and tls.keyFile",
  );
  return { ...made, selfSigned: true };
}

/**
 * The TLS settings of the node's peer links (docs/cluster.md, "Encrypted peer links"): null with
 * `cluster.plainLinks`; else `cluster.tls.certFile`/`keyFile`, or the node's client certificate
 * `client`, and the CA of `cluster.tls.caFile` if set. Unreadable or mismatched files throw
 * `XSRV_CONFIG_INVALID`.
 */
export async function peerTlsOf(
  config: Readonly<Config>,
  client: CertificatePair,
): Promise<PeerTlsOptions | null> {
  const { plainLinks, tls } = config.cluster;
  if (plainLinks) return null;
  const pair =
    tls.certFile !== null && tls.keyFile !== null
      ? await readPair("cluster.tls", tls.certFile, tls.keyFile)
      : { cert: client.cert, key: client.key };
  if (tls.caFile === null) return pair;
  const ca = await readConfigured(tls.caFile, "cluster.tls.caFile");
  try {
    new X509Certificate(ca);
  } catch (error) {
    throw new XmppServerError(
      "XSRV_CONFIG_INVALID",
      `cluster.tls.caFile ${tls.caFile}: not a PEM certificate (${(error as Error).message})`,
    );
  }
  return { ...pair, ca };
}

/** Reads `<prefix>.certFile` and `<prefix>.keyFile` and checks that they belong together. */
async function readPair(
  prefix: string,
  certFile: string,
  keyFile: string,
): Promise<{ cert: string; key: string }> {
  const cert = await readConfigured(certFile, `${prefix}.certFile`);
  const key = await readConfigured(keyFile, `${prefix}.keyFile`);
  const problem = checkPair(cert, key);
  if (problem !== undefined) {
    throw new XmppServerError(
      "XSRV_CONFIG_INVALID",
      `${prefix}.certFile ${certFile} / ${prefix}.keyFile ${keyFile}: ${problem}`,
    );
  }
  return { cert, key };
}

async function readConfigured(path: string, key: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new XmppServerError(
      "XSRV_CONFIG_INVALID",
      `${key}: cannot read ${path}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}

async function readExisting(
  certFile: string,
  keyFile: string,
): Promise<{ cert: string; key: string } | undefined> {
  try {
    return { cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8") };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new XmppServerError(
      "XSRV_CONFIG_INVALID",
      `cannot read the generated certificate: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}

/** Why a certificate and key cannot be served together, or undefined when they can. */
function checkPair(cert: string, key: string): string | undefined {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (error) {
    return `the certificate is not a PEM certificate (${(error as Error).message})`;
  }
  try {
    if (!x509.checkPrivateKey(createPrivateKey(key))) return "the private key does not match the certificate";
  } catch (error) {
    return `the key is not a PEM private key (${(error as Error).message})`;
  }
  return undefined;
}

/** Why a generated certificate must be replaced, or undefined when it can be reused. */
function checkSelfSigned(cert: string, domain: string): string | undefined {
  const x509 = new X509Certificate(cert);
  if (Date.parse(x509.validTo) - Date.now() < RENEW_BEFORE_MS) return `it expires on ${x509.validTo}`;
  const names = isIP(domain) === 0 ? x509.checkHost(domain) : x509.checkIP(domain);
  if (names === undefined) return `it is not valid for ${domain}`;
  return undefined;
}

async function makeSelfSigned(domain: string): Promise<{ cert: string; key: string }> {
  // SAN type 2 is dNSName, 7 is iPAddress (RFC 5280 §4.2.1.6). RFC 6125 §6.4.4: clients match
  // the domain against the subjectAltName, so the common name alone would not do.
  const altNames: { type: 2 | 7; value?: string; ip?: string }[] =
    isIP(domain) === 0 ? [{ type: 2, value: domain }] : [{ type: 7, ip: domain }];
  if (domain === "localhost") altNames.push({ type: 7, ip: "127.0.0.1" }, { type: 7, ip: "::1" });
  const notBeforeDate = new Date();
  const notAfterDate = new Date(notBeforeDate.getTime() + SELF_SIGNED_VALIDITY_DAYS * 24 * 3600 * 1000);
  // ECDSA P-256, as certbot issues by default: its signature in every full handshake costs the
  // server a fraction of an RSA-2048 one (bench: 1.6 against 2.0-2.5 ms of server CPU per STARTTLS
  // login over a plain one), and every client since TLS 1.2 accepts it.
  const pems = await generate([{ name: "commonName", value: domain }], {
    keyType: "ec",
    curve: "P-256",
    algorithm: "sha256",
    notBeforeDate,
    notAfterDate,
    extensions: [
      { name: "basicConstraints", cA: false, critical: true },
      // RFC 8813 §3: keyEncipherment is for RSA key transport, not for an EC key.
      { name: "keyUsage", digitalSignature: true, critical: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

async function writeAtomically(path: string, text: string, mode: number): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  // A leftover from a crash would keep its old mode through writeFile.
  await rm(temporary, { force: true });
  await writeFile(temporary, text, { mode });
  await rename(temporary, path);
}
