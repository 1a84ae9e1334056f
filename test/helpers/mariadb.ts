/**
 * A real MariaDB for tests, from Debian's `mariadb-server` package (the `mariadbd` binary): a
 * fresh data directory made with `mariadb-install-db`, listening on 127.0.0.1 only on a free
 * port, no binary log, no durability, stopped and deleted in the caller's `after`. Under root
 * (CI) it runs as the package's `mysql` user. Nothing runs at import; {@link mariadbMissing}
 * says why the tests must skip when the package is not installed.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { access, chown, constants, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";
import mysql from "mysql2/promise";
import { freePort } from "./postgres.ts";
import { waitForReadyLine } from "./wait-for.ts";

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

/** The first executable `name` on PATH or in the sbin folders Debian puts servers in. */
export async function findBinary(name: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin", "/sbin"];
  for (const dir of dirs) {
    if (dir === "") continue;
    try {
      await access(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // Not in this folder.
    }
  }
  return undefined;
}

/** The uid and gid of the `mysql` user the package creates (for running as root). */
async function mysqlUser(): Promise<{ uid: number; gid: number } | undefined> {
  try {
    const [uid, gid] = await Promise.all([run("id", ["-u", "mysql"]), run("id", ["-g", "mysql"])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    return undefined;
  }
}

/**
 * Why a test MariaDB cannot be started here (`t.skip` prints it), or undefined when it can:
 * `apt-get install mariadb-server` gives what is needed.
 */
export async function mariadbMissing(): Promise<string | undefined> {
  if ((await findBinary("mariadbd")) === undefined)
    return "mariadb-server is not installed: no mariadbd (apt-get install mariadb-server)";
  if ((await findBinary("mariadb-install-db")) === undefined)
    return "mariadb-server is not installed: no mariadb-install-db (apt-get install mariadb-server)";
  if (isRoot && (await mysqlUser()) === undefined)
    return "mariadb-server is not installed properly: no mysql user to run mariadbd as under root";
  return undefined;
}

/** A running test MariaDB with one database and one user for the site. */
export interface TestMariaDb {
  readonly port: number;
  /** The site's database and the user that may read it. */
  readonly database: string;
  readonly user: string;
  readonly password: string;
  /** `mysql://user:password@127.0.0.1:port/database` (`scheme` `mariadb` gives the other spelling). */
  url(scheme?: "mysql" | "mariadb"): string;
  /** A root connection (over TCP, no password), in the site's database. */
  readonly admin: mysql.Connection;
  /** Freezes (SIGSTOP) or thaws (SIGCONT) the server: it keeps its port but answers nothing. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void;
  /** Stops the server (SIGTERM) and waits for it; its port refuses connections afterwards. */
  halt(): Promise<void>;
  /** Starts it again on the same data and port after {@link halt}. */
  restart(): Promise<void>;
  /** Stops the server and deletes its directory. */
  stop(): Promise<void>;
}

/** Starts mariadbd on `dataDir` and `port`; resolves once it says it is ready for connections. */
async function launch(
  binary: string,
  dataDir: string,
  port: number,
): Promise<{ child: ChildProcess; output: string[] }> {
  const child = spawn(
    binary,
    [
      "--no-defaults",
      `--datadir=${join(dataDir, "data")}`,
      ...(isRoot ? ["--user=mysql"] : []),
      `--port=${port}`,
      "--bind-address=127.0.0.1",
      `--socket=${join(dataDir, "mariadbd.sock")}`,
      `--pid-file=${join(dataDir, "mariadbd.pid")}`,
      "--skip-name-resolve",
      "--skip-log-bin",
      // A throwaway server: small, and no durability to pay for.
      "--innodb-buffer-pool-size=16M",
      "--innodb-flush-log-at-trx-commit=0",
      "--innodb-doublewrite=0",
      "--performance-schema=OFF",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  const output = await waitForReadyLine(
    child,
    "ready for connections",
    `The test MariaDB on port ${port}`,
    30_000,
  );
  return { child, output };
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGCONT");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts a MariaDB for the tests of one file, with a database `site` and a user who may read
 * and write it; the caller registers `stop` in its `after`. Call {@link mariadbMissing} first.
 */
export async function startMariaDb(prefix: string): Promise<TestMariaDb> {
  const binary = (await findBinary("mariadbd"))!;
  const installDb = (await findBinary("mariadb-install-db"))!;
  const owner = isRoot ? await mysqlUser() : undefined;
  const root = await mkdtemp(join(tmpdir(), prefix));
  if (owner !== undefined) await chown(root, owner.uid, owner.gid);
  await mkdir(join(root, "data"));
  if (owner !== undefined) await chown(join(root, "data"), owner.uid, owner.gid);
  try {
    await run(installDb, [
      "--no-defaults",
      `--datadir=${join(root, "data")}`,
      ...(isRoot ? ["--user=mysql"] : []),
      "--auth-root-authentication-method=normal",
      "--skip-test-db",
      "--skip-name-resolve",
    ]);
  } catch (error) {
    await rm(root, { recursive: true, force: true });
    throw new Error("mariadb-install-db failed", { cause: error });
  }

  let server: { child: ChildProcess; output: string[] } | undefined;
  let port = 0;
  let lastError: unknown;
  for (let attempt = 0; attempt < 3 && server === undefined; attempt++) {
    port = await freePort();
    try {
      server = await launch(binary, root, port);
    } catch (error) {
      lastError = error;
    }
  }
  if (server === undefined) {
    await rm(root, { recursive: true, force: true });
    throw lastError;
  }

  const database = "site";
  const user = "site_reader";
  const password = randomBytes(12).toString("hex");
  // mariadb-install-db makes root@127.0.0.1 without a password (authentication "normal").
  const admin = await mysql.createConnection({
    host: "127.0.0.1",
    port,
    user: "root",
    multipleStatements: false,
  });
  await admin.query(`CREATE DATABASE ${database} CHARACTER SET utf8mb4`);
  await admin.query(`CREATE USER '${user}'@'127.0.0.1' IDENTIFIED BY '${password}'`);
  await admin.query(
    `GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP ON ${database}.* TO '${user}'@'127.0.0.1'`,
  );
  await admin.query(`USE ${database}`);

  let current = server;
  return {
    port,
    database,
    user,
    password,
    url: (scheme = "mysql") => `${scheme}://${user}:${password}@127.0.0.1:${port}/${database}`,
    admin,
    signal: (signal) => {
      current.child.kill(signal);
    },
    halt: () => terminate(current.child),
    async restart() {
      current = await launch(binary, root, port);
    },
    async stop() {
      await admin.end().catch(() => {});
      await terminate(current.child);
      await rm(root, { recursive: true, force: true });
    },
  };
}
