/**
 * Throwaway certificates for peer-link tests: a CA, and leaf certificates that are self-signed
 * or signed by a CA (EC keys: a few milliseconds each). Nothing runs at import.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { generate } from "selfsigned";
import { certificateSha256 } from "../../src/cluster/peer/peer-tls.ts";

/** A PEM certificate, its key and its SHA-256 fingerprint. */
export interface TestCertificate {
  cert: string;
  key: string;
  certSha256: string;
}

function certificate(pems: { cert: string; private: string }): TestCertificate {
  return { cert: pems.cert, key: pems.private, certSha256: certificateSha256(pems.cert) };
}

/** A CA certificate that can sign {@link makeCertificate}'s. */
export async function makeCa(name = "Starling test cluster CA"): Promise<TestCertificate> {
  return certificate(
    await generate([{ name: "commonName", value: name }], {
      keyType: "ec",
      algorithm: "sha256",
      extensions: [
        { name: "basicConstraints", cA: true, critical: true },
        { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
      ],
    }),
  );
}

/** A server certificate for `name`: signed by `ca`, or self-signed without it. */
export async function makeCertificate(name: string, ca?: TestCertificate): Promise<TestCertificate> {
  return certificate(
    await generate([{ name: "commonName", value: name }], {
      keyType: "ec",
      algorithm: "sha256",
      extensions: [
        { name: "basicConstraints", cA: false, critical: true },
        { name: "keyUsage", digitalSignature: true, critical: true },
        { name: "extKeyUsage", serverAuth: true },
        { name: "subjectAltName", altNames: [{ type: 7, ip: "127.0.0.1" }] },
      ],
      ...(ca === undefined ? {} : { ca: { key: ca.key, cert: ca.cert } }),
    }),
  );
}

/** Writes `certificate` as `<name>.pem` and `<name>.key` in `dir`; returns both paths. */
export async function writeCertificate(
  dir: string,
  name: string,
  certificate: TestCertificate,
): Promise<{ certFile: string; keyFile: string }> {
  const certFile = join(dir, `${name}.pem`);
  const keyFile = join(dir, `${name}.key`);
  await writeFile(certFile, certificate.cert);
  await writeFile(keyFile, certificate.key, { mode: 0o600 });
  return { certFile, keyFile };
}
