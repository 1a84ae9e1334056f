/**
 * Throwaway certificates for peer-link tests: a CA, and leaf certificates that are self-signed
 * or signed by a CA (EC keys: a few milliseconds each). Nothing runs at import.
 */
import { generate } from "selfsigned";
import { certificateSha256 } from "../../src/cluster/peer/peer-tls.ts";

/** A PEM certificate, its key and its SHA-256 fingerprint. */
export interface TestCertificate {
  cert: string;
  key: string;
  certSha256: string;
}

/** Generates an EC certificate for `name` with `extensions`, signed by `ca` or self-signed. */
async function generateCertificate(
  name: string,
  extensions: NonNullable<NonNullable<Parameters<typeof generate>[1]>["extensions"]>,
  ca?: TestCertificate,
  validity: { notBefore?: Date; notAfter?: Date } = {},
): Promise<TestCertificate> {
  const pems = await generate([{ name: "commonName", value: name }], {
    keyType: "ec",
    algorithm: "sha256",
    extensions,
    ...(ca === undefined ? {} : { ca: { key: ca.key, cert: ca.cert } }),
    ...(validity.notBefore === undefined ? {} : { notBeforeDate: validity.notBefore }),
    ...(validity.notAfter === undefined ? {} : { notAfterDate: validity.notAfter }),
  });
  return { cert: pems.cert, key: pems.private, certSha256: certificateSha256(pems.cert) };
}

/** A CA certificate that can sign {@link makeCertificate}'s. */
export function makeCa(name = "Starling test cluster CA"): Promise<TestCertificate> {
  return generateCertificate(name, [
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
  ]);
}

/** A server certificate for `name`: signed by `ca`, or self-signed without it. */
export function makeCertificate(name: string, ca?: TestCertificate): Promise<TestCertificate> {
  return generateCertificate(
    name,
    [
      { name: "basicConstraints", cA: false, critical: true },
      { name: "keyUsage", digitalSignature: true, critical: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames: [{ type: 7, ip: "127.0.0.1" }] },
    ],
    ca,
  );
}

/** Options for {@link makeDomainCertificate}. */
export interface DomainCertificateOptions {
  /** Signed by this CA; self-signed without it. */
  ca?: TestCertificate;
  notBefore?: Date;
  notAfter?: Date;
}

/** A server certificate whose subjectAltName lists `domain` as a DNS name (and its CN is it too). */
export function makeDomainCertificate(
  domain: string,
  options: DomainCertificateOptions = {},
): Promise<TestCertificate> {
  return generateCertificate(
    domain,
    [
      { name: "basicConstraints", cA: false, critical: true },
      { name: "keyUsage", digitalSignature: true, critical: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames: [{ type: 2, value: domain }] },
    ],
    options.ca,
    options,
  );
}
