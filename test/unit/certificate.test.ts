import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { copyFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect, createServer } from "node:tls";
import { generate } from "selfsigned";
import type { Config } from "../../src/config/defaults.ts";
import { loadConfig } from "../../src/config/load-config.ts";
import { createLogger } from "../../src/log.ts";
import { ensureCertificate, selfSignedPaths } from "../../src/tls/certificate.ts";

let root: string;
let dirs = 0;
before(async () => {
  root = await mkdtemp(join(tmpdir(), "starling-cert-"));
});
after(() => rm(root, { recursive: true, force: true }));

function configFor(overrides: Record<string, unknown> = {}): Readonly<Config> {
  return loadConfig({
    cwd: root,
    env: {},
    overrides: { dataDir: join(root, `data-${dirs++}`), ...overrides },
  });
}

/** A logger that keeps its lines. */
function recordingLogger() {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ level: "info", write: (line) => lines.push(JSON.parse(line)) });
  return { log, lines };
}

/** Completes a TLS handshake against `pair` as a client that trusts only `ca`, checking `servername`. */
async function handshake(pair: { cert: string; key: string }, ca: string, servername: string): Promise<void> {
  const server = createServer({ cert: pair.cert, key: pair.key }, (socket) => socket.end()).listen(
    0,
    "127.0.0.1",
  );
  await once(server, "listening");
  try {
    const port = (server.address() as { port: number }).port;
    const socket = connect({ host: "127.0.0.1", port, ca, servername });
    try {
      await once(socket, "secureConnect");
      assert.equal(socket.authorized, true);
    } finally {
      socket.destroy();
    }
  } finally {
    server.close();
  }
}

describe("ensureCertificate", () => {
  it("ensureCertificate makes a self-signed certificate for localhost on first start", async () => {
    const config = configFor();
    const { log, lines } = recordingLogger();
    const pair = await ensureCertificate(config, log);
    assert.equal(pair.selfSigned, true);
    const x509 = new X509Certificate(pair.cert);
    assert.equal(x509.subjectAltName, "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
    assert.equal(x509.checkIP("127.0.0.1"), "127.0.0.1");
    assert.ok(Date.parse(x509.validTo) > Date.now() + 365 * 24 * 3600 * 1000);
    assert.equal(x509.publicKey.asymmetricKeyType, "ec");
    assert.equal(x509.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");

    const paths = selfSignedPaths(config.dataDir);
    assert.equal(await readFile(paths.certFile, "utf8"), pair.cert);
    assert.equal(await readFile(paths.keyFile, "utf8"), pair.key);
    assert.equal((await stat(paths.keyFile)).mode & 0o777, 0o600);
    assert.equal(lines.filter((line) => line.level === "info").length, 1);
    assert.match(String(lines[0]?.msg), /self-signed certificate/);

    await handshake(pair, pair.cert, "localhost");
  });

  it("ensureCertificate reuses the generated certificate on later starts without logging", async () => {
    const config = configFor();
    const first = await ensureCertificate(config, createLogger({ level: "silent" }));
    const { log, lines } = recordingLogger();
    const second = await ensureCertificate(config, log);
    assert.deepEqual(second, first);
    assert.equal(lines.length, 0);
  });

  it("ensureCertificate names only the domain when it is not localhost", async () => {
    const config = configFor({ domain: "chat.example.org" });
    const pair = await ensureCertificate(config, createLogger({ level: "silent" }));
    const x509 = new X509Certificate(pair.cert);
    assert.equal(x509.subjectAltName, "DNS:chat.example.org");
    await handshake(pair, pair.cert, "chat.example.org");
  });

  it("ensureCertificate replaces a generated certificate made for another domain", async () => {
    const config = configFor({ domain: "old.example.org" });
    await ensureCertificate(config, createLogger({ level: "silent" }));
    const moved = loadConfig({
      cwd: root,
      env: {},
      overrides: { dataDir: config.dataDir, domain: "new.example.org" },
    });
    const { log, lines } = recordingLogger();
    const pair = await ensureCertificate(moved, log);
    assert.equal(new X509Certificate(pair.cert).subjectAltName, "DNS:new.example.org");
    assert.ok(lines.some((line) => /replacing/.test(String(line.msg))));
    assert.equal(await readFile(selfSignedPaths(config.dataDir).certFile, "utf8"), pair.cert);
  });

  it("ensureCertificate replaces an expired generated certificate", async () => {
    const config = configFor();
    const paths = selfSignedPaths(config.dataDir);
    await ensureCertificate(config, createLogger({ level: "silent" }));
    const day = 24 * 3600 * 1000;
    const expired = await generate([{ name: "commonName", value: "localhost" }], {
      notBeforeDate: new Date(Date.now() - 30 * day),
      notAfterDate: new Date(Date.now() - day),
    });
    await writeFile(paths.certFile, expired.cert);
    await writeFile(paths.keyFile, expired.private);
    const { log, lines } = recordingLogger();
    const pair = await ensureCertificate(config, log);
    assert.notEqual(pair.cert, expired.cert);
    assert.ok(Date.parse(new X509Certificate(pair.cert).validTo) > Date.now());
    assert.ok(
      lines.some((line) => /replacing/.test(String(line.msg)) && /expires/.test(String(line.reason))),
    );
  });

  it("ensureCertificate reads the configured files", async () => {
    const made = configFor();
    const generated = await ensureCertificate(made, createLogger({ level: "silent" }));
    const certFile = join(root, `own-${dirs}.crt`);
    const keyFile = join(root, `own-${dirs}.key`);
    await copyFile(selfSignedPaths(made.dataDir).certFile, certFile);
    await copyFile(selfSignedPaths(made.dataDir).keyFile, keyFile);
    const config = configFor({ "tls.certFile": certFile, "tls.keyFile": keyFile });
    const pair = await ensureCertificate(config, createLogger({ level: "silent" }));
    assert.deepEqual(pair, { cert: generated.cert, key: generated.key, selfSigned: false });
    await assert.rejects(stat(selfSignedPaths(config.dataDir).dir), { code: "ENOENT" });
  });

  it("ensureCertificate throws XSRV_CONFIG_INVALID for an unreadable, malformed or mismatched configured file", async () => {
    const a = await ensureCertificate(configFor(), createLogger({ level: "silent" }));
    const b = await ensureCertificate(configFor(), createLogger({ level: "silent" }));
    const write = async (name: string, text: string) => {
      const path = join(root, `${name}-${dirs}.pem`);
      await writeFile(path, text);
      return path;
    };
    const certA = await write("cert-a", a.cert);
    const keyB = await write("key-b", b.key);
    const garbage = await write("garbage", "not a pem");
    const cases: [string, string, RegExp][] = [
      [join(root, "missing.crt"), keyB, /tls\.certFile: cannot read .*missing\.crt/],
      [certA, garbage, /not a PEM private key/],
      [garbage, keyB, /not a PEM certificate/],
      [certA, keyB, /private key does not match/],
    ];
    for (const [certFile, keyFile, message] of cases) {
      const config = configFor({ "tls.certFile": certFile, "tls.keyFile": keyFile });
      await assert.rejects(ensureCertificate(config, createLogger({ level: "silent" })), (error: Error) => {
        assert.equal((error as { code?: string }).code, "XSRV_CONFIG_INVALID");
        assert.match(error.message, message);
        return true;
      });
    }
  });
});
