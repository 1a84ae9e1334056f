/**
 * What an idle connection costs a Node.js server in resident memory, over plain TCP and over
 * TLS, with nothing of Starling in between: the floor under any Node.js XMPP server's memory
 * per session. The server is a child process that accepts connections the way Starling's
 * STARTTLS does (a `TLSSocket` wrapped around the accepted socket, ECDSA P-256, TLS 1.3) and
 * echoes what it reads; the bench opens N connections to it, each sends one small stanza and
 * reads it back, then the child reads its VmRSS (after a full garbage collection) and the
 * figure is the growth per connection.
 *
 *   npx node bench/tls-session-memory.ts [--connections 3000] [--groups X25519:X25519MLKEM768]
 *
 * `--groups` is the key exchange groups the clients offer (OpenSSL's names, colon-separated);
 * by default Node's own list, whose ClientHello carries an ML-KEM key share and an X25519 one.
 *
 * Prints one JSON line: KiB per plain connection, per TLS connection, and their difference.
 */
import { fork } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, connect as netConnect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { createSecureContext, TLSSocket, connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { selfSignedP256 } from "./lib/ejabberd-server.ts";
import { readRssKib } from "./lib/proc-stats.ts";

/** This process's resident memory in KiB (NaN if procfs cannot tell). */
const rssKib = (): number => readRssKib(process.pid) ?? Number.NaN;

type Mode = "plain" | "tls";

/** The child: a server that keeps every connection, and reports its memory when asked. */
async function serve(mode: Mode, pemDir: string): Promise<void> {
  const pem = readFileSync(`${pemDir}/server.pem`, "utf8");
  const context = createSecureContext({ cert: pem, key: pem });
  const kept: Socket[] = [];
  const server = createServer((raw) => {
    const socket = mode === "tls" ? new TLSSocket(raw, { isServer: true, secureContext: context }) : raw;
    kept.push(socket);
    socket.on("data", (chunk) => socket.write(chunk));
    socket.on("error", () => {});
  });
  const gc = (globalThis as { gc?: () => void }).gc;
  let before = 0;
  process.on("message", (message: string) => {
    gc?.();
    if (message === "before") {
      before = rssKib();
      process.send?.({ ok: true });
    } else if (message === "after") {
      process.send?.({ perConnectionKib: (rssKib() - before) / kept.length, connections: kept.length });
    }
  });
  server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    process.send?.({ port: typeof address === "object" && address !== null ? address.port : 0 });
  });
}

/** Opens `count` connections to a fresh child server and returns its memory per connection. */
async function measure(
  mode: Mode,
  count: number,
  pemDir: string,
  groups: string | undefined,
): Promise<number> {
  const child = fork(fileURLToPath(import.meta.url), ["--serve", mode, pemDir], {
    execArgv: ["--expose-gc"],
  });
  const exited = new Promise<never>((_, reject) =>
    child.once("exit", (code) => reject(new Error(`the server process exited (${code})`))),
  );
  exited.catch(() => {});
  const next = () =>
    Promise.race([new Promise<Record<string, number>>((resolve) => child.once("message", resolve)), exited]);
  try {
    const port = (await next()).port!;
    child.send("before");
    await next();
    const sockets: Socket[] = [];
    for (let i = 0; i < count; i += 50) {
      await Promise.all(
        Array.from(
          { length: Math.min(50, count - i) },
          () =>
            new Promise<void>((resolve, reject) => {
              const socket =
                mode === "tls"
                  ? tlsConnect({
                      port,
                      host: "127.0.0.1",
                      rejectUnauthorized: false,
                      ...(groups === undefined ? {} : { ecdhCurve: groups }),
                    })
                  : netConnect({ port, host: "127.0.0.1" });
              sockets.push(socket);
              socket.once("error", reject);
              socket.once(mode === "tls" ? "secureConnect" : "connect", () => {
                socket.write("<presence/>");
                socket.once("data", () => resolve());
              });
            }),
        ),
      );
    }
    child.send("after");
    const { perConnectionKib } = await next();
    for (const socket of sockets) socket.destroy();
    return perConnectionKib!;
  } finally {
    child.kill();
  }
}

if (process.argv[2] === "--serve") {
  await serve(process.argv[3] as Mode, process.argv[4]!);
} else {
  const { values } = parseArgs({
    options: { connections: { type: "string", default: "3000" }, groups: { type: "string" } },
  });
  const count = Number(values.connections);
  if (!Number.isInteger(count) || count < 100) {
    process.stderr.write("--connections must be an integer of at least 100\n");
    process.exit(2);
  }
  const dir = mkdtempSync(`${tmpdir()}/tls-memory-`);
  try {
    await selfSignedP256(dir, "localhost");
    const plain = await measure("plain", count, dir, undefined);
    const tls = await measure("tls", count, dir, values.groups);
    const round = (n: number) => Math.round(n * 10) / 10;
    process.stdout.write(
      `${JSON.stringify({
        bench: "tls-session-memory",
        node: process.version,
        connections: count,
        groups: values.groups ?? "node's default",
        plain_kib_per_connection: round(plain),
        tls_kib_per_connection: round(tls),
        tls_extra_kib: round(tls - plain),
      })}\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
