import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type RunResult, runStarling } from "./run-starling.ts";

let cwd: string;
before(async () => {
  cwd = await mkdtemp(join(tmpdir(), "starling-cli-usage-"));
});
after(() => rm(cwd, { recursive: true, force: true }));

const run = (...args: string[]) => runStarling(args, { cwd });

/** Exit 2 with exactly one stderr line `starling: ...` matching `message`, and nothing on stdout. */
function assertUsage(result: RunResult, message: RegExp): void {
  assert.equal(result.code, 2, result.stderr);
  assert.equal(result.stdout, "");
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  assert.equal(lines.length, 1, result.stderr);
  assert.match(lines[0] ?? "", /^starling: /);
  assert.match(lines[0] ?? "", message);
}

describe("starling --help", { concurrency: 4 }, () => {
  const cases: [string[], RegExp[]][] = [
    [
      ["--help"],
      [/^Usage: starling <command>/, /start/, /user add JID/, /user list/, /check \[config\|certs\|dns\]/],
    ],
    [["-h"], [/^Usage: starling <command>/]],
    [
      ["start", "--help"],
      [
        /^Usage: starling start/,
        /--config FILE/,
        /--domain D/,
        /--host ADDR/,
        /--c2s-port N/,
        /--tls-port N/,
        /--http-port N/,
        /--data DIR/,
        /--workers N/,
        /--allow-registration/,
        /--log-level L/,
      ],
    ],
    [
      ["check", "--help"],
      [
        /^Usage: starling check \[config\|certs\|dns\]/,
        /--config FILE/,
        /--dns-server HOST:PORT/,
        /Exits 0 /,
      ],
    ],
    [
      ["user", "--help"],
      [/^Usage: starling user <command>/, /add JID/, /remove JID/, /passwd JID/, /list/],
    ],
    [
      ["user", "add", "--help"],
      [/^Usage: starling user add JID/, /--password P/, /--config FILE/, /--http-port N/, /--data DIR/],
    ],
    [
      ["user", "remove", "--help"],
      [/^Usage: starling user remove JID/, /--config FILE/, /--http-port N/, /--data DIR/],
    ],
    [
      ["user", "passwd", "--help"],
      [/^Usage: starling user passwd JID/, /--password P/, /--data DIR/],
    ],
    [
      ["user", "list", "--help"],
      [/^Usage: starling user list/, /--config FILE/, /--http-port N/, /--data DIR/],
    ],
  ];
  for (const [args, patterns] of cases) {
    it(`starling ${args.join(" ")} prints its synopsis and flags and exits 0`, async () => {
      const result = await run(...args);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, "");
      for (const pattern of patterns) assert.match(result.stdout, pattern);
    });
  }
});

describe("starling usage errors", { concurrency: 4 }, () => {
  const cases: [string[], RegExp][] = [
    [[], /missing command/],
    [["frobnicate"], /unknown command "frobnicate"/],
    [["start", "--bogus"], /unknown option --bogus/],
    [["start", "--c2s-port", "abc"], /--c2s-port must be a port number.*"abc"/],
    [["start", "--tls-port", "70000"], /--tls-port must be a port number/],
    [["start", "--http-port"], /option --http-port needs a value/],
    [["start", "--workers", "many"], /--workers must be an integer/],
    [["start", "--log-level", "loud"], /--log-level must be one of/],
    [["start", "--allow-registration=yes"], /--allow-registration does not take a value/],
    [["start", "extra"], /unexpected argument "extra"/],
    [["user"], /missing user command/],
    [["user", "rename"], /unknown user command "rename"/],
    [["user", "add"], /missing JID/],
    [["user", "add", "a@localhost", "b@localhost"], /unexpected argument "b@localhost"/],
    [["user", "add", "a@localhost", "--password"], /option --password needs a value/],
    [["user", "list", "--verbose"], /unknown option --verbose/],
    [["user", "list", "--password", "x"], /unknown option --password/],
    [["user", "remove", "a@localhost", "--http-port", "x1"], /--http-port must be a port number/],
    [["user", "add", "not a jid", "--password", "x"], /"not a jid" is not a valid user JID/],
    [["user", "add", "localhost", "--password", "x"], /"localhost" is not a valid user JID/],
    [
      ["user", "add", "a@example.org", "--password", "x"],
      /a@example\.org is not on this server's domain localhost/,
    ],
    [["user", "add", "a@localhost", "--password", ""], /password must not be empty/],
    [["start", "--peer-port", "x"], /--peer-port must be a port number/],
    [["start", "--secret", "short"], /cluster\.secret must be a string of at least 16 characters/],
    [["start", "--secret", "a-long-enough-secret"], /cluster\.secret is set but store\.url is not/],
    [["start", "--join", "db:5290"], /cluster\.join needs cluster\.secret/],
    [["start", "--node", "bad name"], /cluster\.node must be 1-63 letters/],
    [
      ["start", "--join", "nowhere", "--secret", "a-long-enough-secret", "--store", "postgres://x/y"],
      /cluster\.join must be host:port/,
    ],
    [["status", "--bogus"], /unknown option --bogus/],
    [["leave", "--timeout", "soon"], /--timeout must be a positive number/],
    [["join"], /expected one peer address HOST:PORT/],
    [["token"], /expected one user JID/],
    [["token", "a@localhost", "--ttl", "0"], /--ttl must be a whole number of seconds from 1 to 3600/],
    [["kick", "a@localhost", "b@localhost"], /expected one user JID/],
    [["join", "a:1", "b:2"], /expected one peer address HOST:PORT/],
    [["sessions", "a@localhost", "b@localhost"], /expected at most one user JID/],
    [["send", "a@localhost"], /expected a user JID and a message/],
    [["announce"], /expected a message/],
    [["reload", "now"], /unexpected argument "now"/],
    [["check", "everything"], /unknown check "everything" \(expected config, certs or dns\)/],
    [["check", "dns", "--dns-server", "ns.example.org"], /--dns-server must be an address/],
    [["check", "--timeout", "5"], /unknown option --timeout/],
  ];
  for (const [args, message] of cases) {
    it(`starling ${args.join(" ") || "(nothing)"} exits 2 with one line naming the problem`, async () => {
      assertUsage(await run(...args), message);
    });
  }
});

describe("starling configuration errors", () => {
  it("starling start exits 2 naming every bad key of the config file", async () => {
    const file = join(cwd, "bad.json");
    await writeFile(file, JSON.stringify({ domian: "x", ports: { c2s: "abc" } }));
    const result = await run("start", "--config", file, "--data", join(cwd, "data"));
    assertUsage(result, /domian: unknown key.*ports\.c2s must be a port number/);
  });

  it("an admin API beyond loopback without a key, or with a short key, is refused at start", async () => {
    const open = join(cwd, "open-admin.json");
    await writeFile(open, JSON.stringify({ admin: { host: "0.0.0.0" } }));
    assertUsage(
      await run("start", "--config", open, "--data", join(cwd, "data")),
      /admin\.host is 0\.0\.0\.0, beyond loopback, but admin\.key is not set/,
    );
    const short = join(cwd, "short-key.json");
    await writeFile(short, JSON.stringify({ admin: { key: "secret" } }));
    const result = await run("start", "--config", short, "--data", join(cwd, "data"));
    assertUsage(result, /admin\.key must be a string of at least 32 characters/);
    assert.ok(!result.stderr.includes('"secret"'), "the key is not echoed");
  });

  it("starling user list exits 2 naming the bad key of the config file", async () => {
    const file = join(cwd, "bad-level.json");
    await writeFile(file, JSON.stringify({ log: { level: "chatty" } }));
    assertUsage(await run("user", "list", "--config", file), /log\.level must be one of/);
  });

  it("starling start exits 2 naming bad peer-link TLS keys", async () => {
    const file = join(cwd, "bad-peer-tls.json");
    const cluster = { plainLinks: "yes", tls: { certFile: "peer.pem", caFile: "" } };
    await writeFile(file, JSON.stringify({ cluster }));
    assertUsage(
      await run("start", "--config", file, "--data", join(cwd, "data")),
      /cluster\.plainLinks must be true or false.*cluster\.tls\.caFile must be a path or null.*cluster\.tls\.certFile and cluster\.tls\.keyFile must be given together/,
    );
    const contradiction = join(cwd, "plain-with-ca.json");
    await writeFile(
      contradiction,
      JSON.stringify({ cluster: { plainLinks: true, tls: { caFile: "ca.pem" } } }),
    );
    assertUsage(
      await run("start", "--config", contradiction, "--data", join(cwd, "data")),
      /cluster\.tls\.\* is set but cluster\.plainLinks is true/,
    );
  });

  it("starling start exits 2 when a session's log may outgrow a peer link", async () => {
    const file = join(cwd, "big-session-log.json");
    const config = { limits: { smMaxUnackedBytes: 1 << 20 }, cluster: { maxPeerBufferBytes: 2 << 20 } };
    await writeFile(file, JSON.stringify(config));
    assertUsage(
      await run("start", "--config", file, "--data", join(cwd, "data")),
      /limits\.smMaxUnackedBytes \(1048576\) must be at most a quarter of cluster\.maxPeerBufferBytes \(2097152\)/,
    );
  });

  it("starling start exits 2 naming bad auth and web keys", async () => {
    const file = join(cwd, "bad-auth.json");
    await writeFile(
      file,
      JSON.stringify({
        auth: { provider: "ldap", http: { url: "ftp://x", timeoutMs: 0 } },
        web: { origins: ["example.org/"] },
      }),
    );
    assertUsage(
      await run("start", "--config", file, "--data", join(cwd, "data")),
      /web\.origins must be a list of origins.*auth\.provider must be one of internal, http.*auth\.http\.url must be an http:\/\/ or https:\/\/ URL.*auth\.http\.timeoutMs must be a positive integer/,
    );
    const missing = join(cwd, "http-without-url.json");
    await writeFile(missing, JSON.stringify({ auth: { provider: "http" } }));
    assertUsage(
      await run("start", "--config", missing, "--data", join(cwd, "data")),
      /auth\.provider is http but auth\.http\.url is not set/,
    );
  });

  it("starling start exits 2 when the config file is missing", async () => {
    assertUsage(
      await run("start", "--config", join(cwd, "nope.json")),
      /cannot read config file .*nope\.json/,
    );
  });
});
