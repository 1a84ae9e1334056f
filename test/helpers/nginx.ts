/**
 * A real nginx for tests, from Debian's `nginx-light` (or `nginx`) package: a configuration
 * written to a fresh temporary directory (pid file, logs and temporary files inside it),
 * listening on 127.0.0.1 only, with TLS from the caller's certificate, run in the foreground as
 * a child process and stopped in the caller's `after`. Nothing runs at import;
 * {@link nginxMissing} says why the tests must skip when nginx is not installed.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findBinary } from "./mariadb.ts";
import { freePort } from "./postgres.ts";
import { REPO_ROOT } from "./start-node.ts";
import { waitForReadyLine } from "./wait-for.ts";

const isRoot = process.getuid?.() === 0;

const DOC = `${REPO_ROOT}/docs/web-chat.md`;

/**
 * What docs/web-chat.md shows between its `# --- begin starling <what> ---` and `# --- end
 * starling <what> ---` markers, as an operator copies it: read from the page, so the page and
 * the tests cannot drift apart.
 */
async function docBlock(what: string): Promise<string> {
  const text = await readFile(DOC, "utf8");
  const [beginMarker, endMarker] = [`# --- begin starling ${what} ---`, `# --- end starling ${what} ---`];
  const begin = text.indexOf(beginMarker);
  const end = text.indexOf(endMarker);
  assert.ok(begin >= 0 && end > begin, `${DOC} has the "${beginMarker}" … "${endMarker}" markers`);
  return text.slice(begin + beginMarker.length, end);
}

/** The location blocks of docs/web-chat.md. */
export function docLocations(): Promise<string> {
  return docBlock("locations");
}

/**
 * The directives of docs/web-chat.md's upstream for a cluster, its `server` lines replaced by
 * one for each of `servers` (the page names example hosts).
 */
export async function docClusterUpstream(servers: readonly string[]): Promise<string[]> {
  const block = await docBlock("cluster upstream");
  const inside = block.slice(block.indexOf("{") + 1, block.lastIndexOf("}"));
  const directives = inside
    .split(";")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
  const examples = directives.filter((line) => line.startsWith("server "));
  assert.ok(examples.length >= 2, `the page's upstream lists several servers: ${block}`);
  return [
    ...directives.filter((line) => !line.startsWith("server ")),
    ...servers.map((server) => `server ${server}`),
  ];
}

/** Why nginx cannot be started here (`skip` prints it), or undefined when it can. */
export async function nginxMissing(): Promise<string | undefined> {
  if ((await findBinary("nginx")) === undefined)
    return "nginx is not installed (apt-get install nginx-light; .ci/run installs it)";
  return undefined;
}

/** What {@link startNginx} needs: the server block's inside, and where it proxies to. */
export interface NginxOptions {
  /**
   * The upstreams, by name: `{ starling_web: "127.0.0.1:5281" }` (one server), or the
   * upstream block's directives (`["ip_hash", "server 127.0.0.1:5443", "server 127.0.0.1:6443"]`).
   */
  upstreams: Record<string, string | readonly string[]>;
  /** Directives (locations) placed in the TLS server block as they are. */
  serverDirectives: string;
  /** The site's certificate chain and key (PEM). */
  cert: string;
  key: string;
}

/** A running nginx. */
export interface TestNginx {
  /** The TLS port on 127.0.0.1. */
  readonly port: number;
  /** Its directory: `nginx.conf`, `access.log` (a line per request once it has ended). */
  readonly dir: string;
  /** The configuration file as written, for failure messages. */
  readonly config: string;
  /** Everything nginx wrote to stderr (its error log). */
  readonly output: string[];
  /** Stops nginx (SIGTERM, then SIGKILL) and deletes its directory. */
  stop(): Promise<void>;
}

/** Writes the configuration and starts nginx on it; resolves once its workers have started. */
export async function startNginx(options: NginxOptions): Promise<TestNginx> {
  const binary = await findBinary("nginx");
  if (binary === undefined) throw new Error("nginx is not installed: call nginxMissing() first");
  const dir = await mkdtemp(join(tmpdir(), "starling-nginx-"));
  await writeFile(join(dir, "site.crt"), options.cert);
  await writeFile(join(dir, "site.key"), options.key, { mode: 0o600 });
  const upstreams = Object.entries(options.upstreams)
    .map(
      ([name, servers]) =>
        `  upstream ${name} { ${(typeof servers === "string" ? [`server ${servers}`] : servers).map((line) => `${line};`).join(" ")} }`,
    )
    .join("\n");
  let lastError: unknown;
  // The free port may be taken between freePort() and nginx's bind: try again then.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const config = `# Written by test/helpers/nginx.ts
${isRoot ? "user root;\n" : ""}worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr notice;
events { worker_connections 256; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${upstreams}
  server {
    listen 127.0.0.1:${port} ssl;
    server_name localhost;
    ssl_certificate ${dir}/site.crt;
    ssl_certificate_key ${dir}/site.key;
${options.serverDirectives}
  }
}
`;
    await writeFile(join(dir, "nginx.conf"), config);
    try {
      const { child, output } = await launch(binary, dir);
      return {
        port,
        dir,
        config,
        output,
        async stop() {
          await terminate(child);
          await rm(dir, { recursive: true, force: true });
        },
      };
    } catch (error) {
      lastError = error;
    }
  }
  await rm(dir, { recursive: true, force: true });
  throw lastError;
}

/** Runs nginx in the foreground; resolves once it says it started its worker process. */
async function launch(binary: string, dir: string): Promise<{ child: ChildProcess; output: string[] }> {
  const child = spawn(
    binary,
    ["-p", dir, "-e", "stderr", "-c", join(dir, "nginx.conf"), "-g", "daemon off;"],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  // The master binds the listening sockets before it starts a worker.
  const output = await waitForReadyLine(child, "start worker process", "nginx", 10_000);
  return { child, output };
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  // SIGTERM is nginx's fast shutdown: open connections (a held BOSH request) are closed.
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
  await exited;
  clearTimeout(timer);
}
