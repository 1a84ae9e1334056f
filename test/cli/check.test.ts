/**
 * `starling check` run as the real CLI: certificates made for each case, configurations in a
 * temporary directory, and a DNS server of the test's own on 127.0.0.1 (no query leaves the
 * machine: the dns section only ever asks --dns-server, and the other tests leave it out).
 */
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { makeCa, makeDomainCertificate } from "../helpers/certificates.ts";
import { startDnsServer, type TestDnsServer } from "../helpers/dns-server.ts";
import { closedPort, type RunResult, runStarling } from "./run-starling.ts";

const DOMAIN = "chat.example.org";
const DAY_MS = 24 * 3600 * 1000;

let dir: string;
let cases = 0;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "starling-check-"));
});
after(() => rm(dir, { recursive: true, force: true }));

/** Writes a configuration (and the certificate files given) in a directory of its own; returns its path. */
async function deployment(
  config: Record<string, unknown>,
  files: { cert?: string; key?: string; generated?: boolean } = {},
): Promise<string> {
  const home = join(dir, `case-${++cases}`);
  await mkdir(home);
  const full: Record<string, unknown> = { domain: DOMAIN, dataDir: join(home, "data"), ...config };
  if (files.cert !== undefined && files.key !== undefined) {
    const tlsDir = files.generated === true ? join(home, "data", "tls") : home;
    await mkdir(tlsDir, { recursive: true });
    const certFile = join(tlsDir, "cert.pem");
    const keyFile = join(tlsDir, "key.pem");
    await writeFile(certFile, files.cert);
    await writeFile(keyFile, files.key, { mode: 0o600 });
    if (files.generated !== true) full.tls = { certFile, keyFile };
  }
  const file = join(home, "starling.json");
  await writeFile(file, JSON.stringify(full));
  return file;
}

const check = (...args: string[]) => runStarling(["check", ...args], { cwd: dir });

/** The stdout lines of one level and section. */
function linesOf(result: RunResult, level: string, section: string): string[] {
  return result.stdout.split("\n").filter((line) => line.startsWith(`${level.padEnd(5)} ${section}: `));
}

/** Exit 1, and stderr's one line counting the errors. */
function assertFailed(result: RunResult): void {
  assert.equal(result.code, 1, result.stdout + result.stderr);
  assert.match(result.stderr, /^starling: check found \d+ errors?, \d+ warnings?\n$/);
}

describe("starling check certs", { concurrency: 4 }, () => {
  it("accepts a self-signed certificate for the domain, warning that clients must trust it", async () => {
    const cert = await makeDomainCertificate(DOMAIN);
    const result = await check("certs", "--config", await deployment({}, cert));
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^ok {4}certs: tls\.certFile .*cert\.pem names chat\.example\.org$/m);
    assert.match(result.stdout, /^info {2}certs: .* is valid until \d{4}-\d\d-\d\d \(\d+ days\)$/m);
    assert.match(result.stdout, /^ok {4}certs: the key .*key\.pem matches the certificate$/m);
    assert.match(result.stdout, /^warn {2}certs: .* is self-signed: clients refuse it unless .*\(fix: /m);
    assert.deepEqual(linesOf(result, "error", "certs"), []);
    assert.match(result.stdout, /^check passed: 0 errors, 1 warning$/m);
  });

  it("checks the certificate generated in the data directory when none is configured", async () => {
    const cert = await makeDomainCertificate(DOMAIN);
    const result = await check("certs", "--config", await deployment({}, { ...cert, generated: true }));
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^ok {4}certs: the generated certificate .*data\/tls\/cert\.pem names chat\.example\.org$/m,
    );
  });

  it("says a certificate will be generated at start when there is none", async () => {
    const result = await check("certs", "--config", await deployment({}));
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /^warn {2}certs: no certificate yet: .* will be generated at start in .*data\/tls/m,
    );
  });

  it("fails naming both names when the certificate is for another domain", async () => {
    const cert = await makeDomainCertificate("other.example.net");
    const result = await check("certs", "--config", await deployment({}, cert));
    assertFailed(result);
    const [line, ...more] = linesOf(result, "error", "certs");
    assert.deepEqual(more, []);
    assert.match(line ?? "", /is for other\.example\.net, not for the domain chat\.example\.org/);
  });

  it("accepts a wildcard for one label, and refuses it for the domain itself", async () => {
    const wildcard = await makeDomainCertificate("*.example.org");
    const covered = await check("certs", "--config", await deployment({}, wildcard));
    assert.equal(covered.code, 0, covered.stdout);
    assert.match(covered.stdout, /names chat\.example\.org \(as \*\.example\.org\)$/m);
    const apex = await check("certs", "--config", await deployment({ domain: "example.org" }, wildcard));
    assertFailed(apex);
    assert.match(
      linesOf(apex, "error", "certs")[0] ?? "",
      /is for \*\.example\.org, not for the domain example\.org/,
    );
  });

  it("fails on an expired certificate", async () => {
    const now = Date.now();
    const cert = await makeDomainCertificate(DOMAIN, {
      notBefore: new Date(now - 90 * DAY_MS),
      notAfter: new Date(now - DAY_MS),
    });
    const result = await check("certs", "--config", await deployment({}, cert));
    assertFailed(result);
    assert.match(linesOf(result, "error", "certs").join("\n"), /expired on \d{4}-\d\d-\d\d \(fix: renew it/);
  });

  it("warns about a certificate that expires within 14 days", async () => {
    const now = Date.now();
    const cert = await makeDomainCertificate(DOMAIN, {
      notBefore: new Date(now - DAY_MS),
      notAfter: new Date(now + 5 * DAY_MS),
    });
    const result = await check("certs", "--config", await deployment({}, cert));
    assert.equal(result.code, 0, result.stderr);
    assert.match(linesOf(result, "warn", "certs").join("\n"), /expires on \d{4}-\d\d-\d\d, in [45] days/);
  });

  it("fails when the key does not belong to the certificate", async () => {
    const cert = await makeDomainCertificate(DOMAIN);
    const stranger = await makeDomainCertificate(DOMAIN);
    const result = await check(
      "certs",
      "--config",
      await deployment({}, { cert: cert.cert, key: stranger.key }),
    );
    assertFailed(result);
    assert.match(
      linesOf(result, "error", "certs").join("\n"),
      /the key .*key\.pem does not belong to tls\.certFile/,
    );
  });

  it("warns when other users can read the key", async () => {
    const cert = await makeDomainCertificate(DOMAIN);
    const config = await deployment({}, cert);
    await chmod(join(dirname(config), "key.pem"), 0o644);
    const result = await check("certs", "--config", config);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      linesOf(result, "warn", "certs").join("\n"),
      /can be read by other users \(mode 644\) \(fix: chmod 600 /,
    );
  });

  it("accepts a chain in order, and fails one out of order", async () => {
    const ca = await makeCa("Starling check test CA");
    const leaf = await makeDomainCertificate(DOMAIN, { ca });
    const inOrder = await check(
      "certs",
      "--config",
      await deployment({}, { cert: leaf.cert + ca.cert, key: leaf.key }),
    );
    assert.equal(inOrder.code, 0, inOrder.stdout);
    assert.match(
      inOrder.stdout,
      /^warn {2}certs: .* chains to Starling check test CA, a CA that is not a public root/m,
    );
    const reversed = await check(
      "certs",
      "--config",
      await deployment({}, { cert: ca.cert + leaf.cert, key: leaf.key }),
    );
    assertFailed(reversed);
    assert.match(
      linesOf(reversed, "error", "certs").join("\n"),
      /certificate 1 of .* was not issued by certificate 2 .*out of order/,
    );
  });

  it("warns when the file holds the certificate without its issuer", async () => {
    const ca = await makeCa("Starling check test CA");
    const leaf = await makeDomainCertificate(DOMAIN, { ca });
    const result = await check("certs", "--config", await deployment({}, leaf));
    assert.equal(result.code, 0, result.stdout);
    assert.match(
      linesOf(result, "warn", "certs").join("\n"),
      /issued by Starling check test CA, which the file does not hold .*fullchain\.pem/,
    );
  });
});

describe("starling check config", { concurrency: 4 }, () => {
  it("exits 2 with the loader's message for an invalid configuration, as starling start does", async () => {
    // Every section is asked for; a closed loopback port as the DNS server keeps any query here.
    const config = await deployment({ ports: { c2s: "abc" }, domian: "x" });
    const result = await check("--config", config, "--dns-server", `127.0.0.1:${await closedPort()}`);
    assert.equal(result.code, 2, result.stdout + result.stderr);
    assert.match(
      result.stdout,
      /^error config: invalid configuration: domian: unknown key; ports\.c2s must be a port number/m,
    );
    assert.equal(linesOf(result, "ok", "certs").length + linesOf(result, "info", "dns").length, 0);
    assert.match(result.stderr, /^starling: invalid configuration: domian: unknown key.*\n$/);
  });

  it("warns about risky settings, each with a reason and a fix, and still passes", async () => {
    const config = await deployment({
      host: "0.0.0.0",
      registration: { allow: true },
      tls: { requireBeforeAuth: false },
      auth: { provider: "http", http: { url: "http://auth.example.net/xmpp" } },
    });
    const result = await check("config", "--config", config);
    assert.equal(result.code, 0, result.stderr);
    const warnings = linesOf(result, "warn", "config").join("\n");
    assert.match(
      warnings,
      /registration\.allow is true: anyone who can reach the server can create accounts .*\(fix: /,
    );
    assert.match(
      warnings,
      /tls\.requireBeforeAuth is false: .*plain TCP \(fix: set tls\.requireBeforeAuth to true\)/,
    );
    assert.match(
      warnings,
      /auth\.http\.url is http:\/\/ to auth\.example\.net: every user's password crosses the network to it in clear/,
    );
    assert.equal(linesOf(result, "warn", "config").length, 3, result.stdout);
    assert.match(result.stdout, /^ok {4}config: .*starling\.json is valid; domain chat\.example\.org$/m);
  });

  it("finds nothing to say about a careful configuration", async () => {
    const result = await check("config", "--config", await deployment({ host: "0.0.0.0" }));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^ok {4}config: no risky settings found$/m);
  });
});

describe("starling check dns", { concurrency: 4 }, () => {
  let dns: TestDnsServer;
  const srv = (name: string, port: number, target: string) =>
    ({ type: "SRV", name, ttl: 60, data: { priority: 0, weight: 5, port, target } }) as const;
  const a = (name: string, address: string) => ({ type: "A", name, ttl: 60, data: address }) as const;
  before(async () => {
    dns = await startDnsServer([
      srv("_xmpp-client._tcp.good.example", 5222, "xmpp.good.example"),
      srv("_xmpps-client._tcp.good.example", 5223, "xmpp.good.example"),
      a("xmpp.good.example", "192.0.2.10"),
      { type: "AAAA", name: "xmpp.good.example", ttl: 60, data: "2001:db8::10" },
      a("bare.example", "192.0.2.20"),
      srv("_xmpp-client._tcp.ports.example", 5999, "xmpp.ports.example"),
      srv("_xmpps-client._tcp.ports.example", 5223, "xmpp.ports.example"),
      a("xmpp.ports.example", "192.0.2.30"),
      srv("_xmpp-client._tcp.alias.example", 5222, "xmpp.alias.example"),
      srv("_xmpps-client._tcp.alias.example", 5223, "host.alias.example"),
      { type: "CNAME", name: "xmpp.alias.example", ttl: 60, data: "host.alias.example" },
      a("host.alias.example", "192.0.2.40"),
      srv("_xmpp-client._tcp.lost.example", 5222, "nowhere.lost.example"),
      srv("_xmpps-client._tcp.lost.example", 5223, "nowhere.lost.example"),
      srv("_xmpp-client._tcp.off.example", 0, "."),
    ]);
  });
  after(() => dns.close());
  const checkDns = async (domain: string) =>
    check("dns", "--config", await deployment({ domain }), "--dns-server", dns.address);

  it("passes when both SRV records point at a host with addresses, on the configured ports", async () => {
    const result = await checkDns("good.example");
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const ok = linesOf(result, "ok", "dns").join("\n");
    assert.match(
      ok,
      /_xmpp-client\._tcp\.good\.example -> xmpp\.good\.example:5222 \(priority 0, weight 5\) resolves to 192\.0\.2\.10, 2001:db8::10/,
    );
    assert.match(ok, /_xmpps-client\._tcp\.good\.example -> xmpp\.good\.example:5223 /);
    assert.deepEqual(linesOf(result, "warn", "dns"), []);
  });

  it("warns when the SRV records are absent, and checks the domain clients fall back to", async () => {
    const result = await checkDns("bare.example");
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const warnings = linesOf(result, "warn", "dns").join("\n");
    assert.match(
      warnings,
      /no _xmpp-client\._tcp\.bare\.example SRV record \(RFC 6120 §3\.2\.1\): clients fall back to bare\.example port 5222/,
    );
    assert.match(warnings, /no _xmpps-client\._tcp\.bare\.example SRV record \(XEP-0368\)/);
    assert.match(linesOf(result, "ok", "dns").join("\n"), /bare\.example resolves to 192\.0\.2\.20/);
  });

  it("warns when an SRV port is not the configured one", async () => {
    const result = await checkDns("ports.example");
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const [line, ...more] = linesOf(result, "warn", "dns");
    assert.deepEqual(more, []);
    assert.match(
      line ?? "",
      /_xmpp-client\._tcp\.ports\.example -> xmpp\.ports\.example:5999: the port is not ports\.c2s \(5222\)/,
    );
  });

  it("fails when an SRV target is a CNAME (RFC 2782)", async () => {
    const result = await checkDns("alias.example");
    assertFailed(result);
    const [line, ...more] = linesOf(result, "error", "dns");
    assert.deepEqual(more, []);
    assert.match(
      line ?? "",
      /xmpp\.alias\.example:5222: the target is an alias \(CNAME to host\.alias\.example\), which RFC 2782 forbids/,
    );
    assert.match(
      linesOf(result, "ok", "dns").join("\n"),
      /_xmpps-client\._tcp\.alias\.example -> host\.alias\.example:5223/,
    );
  });

  it("fails when an SRV target has no address", async () => {
    const result = await checkDns("lost.example");
    assertFailed(result);
    assert.equal(linesOf(result, "error", "dns").length, 2, result.stdout);
    assert.match(result.stdout, /nowhere\.lost\.example:5222: the target has no A or AAAA record/);
  });

  it('fails when the client SRV record says "no service here" (RFC 2782 target ".")', async () => {
    const result = await checkDns("off.example");
    assertFailed(result);
    assert.match(
      linesOf(result, "error", "dns").join("\n"),
      /_xmpp-client\._tcp\.off\.example SRV says the service is not available here \(target "\."\)/,
    );
  });

  it("runs every section by default", async () => {
    const cert = await makeDomainCertificate("good.example");
    const config = await deployment({ domain: "good.example", host: "0.0.0.0" }, cert);
    const result = await check("--config", config, "--dns-server", dns.address);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    for (const section of ["config", "certs", "dns"])
      assert.notEqual(linesOf(result, "ok", section).length, 0, section);
    assert.match(result.stdout, /^check passed: 0 errors, 1 warning$/m);
  });
});
