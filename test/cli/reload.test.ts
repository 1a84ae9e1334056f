/**
 * Reloading the configuration without a restart (issue 11, item 6): `starling reload` and SIGHUP
 * apply the file's certificate, log level, limits, registration and auth settings to new
 * connections; what needs a restart is named and left alone; a broken file changes nothing.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { makeCertificate } from "../helpers/certificates.ts";
import { newUser } from "../helpers/fixtures.ts";
import { RawClient } from "../helpers/raw-client.ts";
import { type StartedNode, startNode } from "../helpers/start-node.ts";
import { runStarling } from "./run-starling.ts";

/** The stream features a new connection is offered, after STARTTLS. */
async function featuresAfterTls(node: StartedNode, t: { after(fn: () => void): void }) {
  const client = await RawClient.connectTo(node);
  t.after(() => client.destroy());
  await client.openStream();
  return client.startTls();
}

/** The SHA-256 fingerprint of the certificate the direct-TLS port presents now. */
function presentedCertificate(node: StartedNode): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port: node.ports.tls, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerX509Certificate()!.fingerprint256);
      socket.destroy();
    });
    socket.on("error", reject);
  });
}

describe("starling reload and SIGHUP", () => {
  it("apply the file's limits, registration, log level and certificate to new connections", async (t) => {
    const first = await makeCertificate("localhost");
    const node = await startNode(t, { workers: 2 });
    const configFile = join(node.dataDir, "test-config.json");
    const files = { certFile: join(node.dataDir, "site.crt"), keyFile: join(node.dataDir, "site.key") };
    await writeFile(files.certFile, first.cert);
    await writeFile(files.keyFile, first.key);
    const reload = () =>
      runStarling(["reload", "--http-port", String(node.ports.http)], { cwd: node.dataDir });
    const rewrite = async (config: Record<string, unknown>) => writeFile(configFile, JSON.stringify(config));

    assert.equal(
      (await featuresAfterTls(node, t)).getChild("register"),
      undefined,
      "no registration at first",
    );
    const before = await presentedCertificate(node);

    await rewrite({
      registration: { allow: true },
      limits: { maxStanzaBytes: 4096 },
      log: { level: "debug" },
      tls: files,
    });
    const applied = await reload();
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal(
      applied.stdout,
      "reloaded: tls.certFile, tls.keyFile, limits.maxStanzaBytes, registration.allow, log.level, certificate\n",
    );
    assert.notEqual(
      (await featuresAfterTls(node, t)).getChild("register"),
      undefined,
      "registration offered",
    );
    assert.equal(await presentedCertificate(node), new X509Certificate(first.cert).fingerprint256);
    assert.notEqual(before, new X509Certificate(first.cert).fingerprint256);
    // The smaller stanza limit holds on a new stream.
    const user = await newUser(node, "rl");
    const client = await RawClient.connectTo(node);
    t.after(() => client.destroy());
    await client.login(user.username, user.password);
    client.send(`<message to='${user.jid}'><body>${"x".repeat(5000)}</body></message>`);
    assert.equal(await client.waitForStreamError(), "policy-violation");
    // debug is on: the node now logs at debug level.
    await node.waitForLog((line) => line.level === "debug", "a debug line after the reload");

    // A renewed certificate under the same file names (certbot's way) is picked up too.
    const renewed = await makeCertificate("localhost");
    await writeFile(files.certFile, renewed.cert);
    await writeFile(files.keyFile, renewed.key);
    const again = await reload();
    assert.equal(again.stdout, "reloaded: certificate\n", again.stderr);
    assert.equal(await presentedCertificate(node), new X509Certificate(renewed.cert).fingerprint256);

    // What needs a restart is said, and left as it was.
    await rewrite({
      registration: { allow: true },
      limits: { maxStanzaBytes: 4096 },
      tls: files,
      partitions: 1024,
    });
    const restart = await reload();
    assert.equal(restart.code, 0, restart.stderr);
    assert.match(restart.stdout, /^reloaded: log\.level\nnot applied until a restart: partitions\n$/);

    // A broken file: a clear error (exit 2, as for any configuration error), and the node runs
    // on as it was.
    await writeFile(configFile, "{ not json");
    const broken = await reload();
    assert.equal(broken.code, 2);
    assert.match(broken.stderr, /^starling: config file .* is not valid JSON/m);
    assert.notEqual((await featuresAfterTls(node, t)).getChild("register"), undefined, "still as before");

    // SIGHUP does the same as starling reload.
    await writeFile(configFile, "{}");
    // Only a line logged after the signal: the first reload logged the same message and key.
    const seen = node.logs.length;
    node.process.kill("SIGHUP");
    await node.waitForLog(
      (line) =>
        node.logs.indexOf(line) >= seen &&
        line.msg === "configuration reloaded" &&
        JSON.stringify(line.changed).includes("registration.allow"),
      "the reload SIGHUP asked for",
    );
    assert.equal(
      (await featuresAfterTls(node, t)).getChild("register"),
      undefined,
      "registration closed again",
    );
  });
});
