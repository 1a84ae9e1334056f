/**
 * A throwaway ejabberd (the Debian package, 23.01 on this machine) for side-by-side benchmarks:
 * its own configuration, spool and logs in a temporary directory, c2s on 127.0.0.1 only with
 * STARTTLS offered but not required, SCRAM-stored passwords (so SCRAM-SHA-1 is offered), in-band
 * registration open to the bench (XEP-0077, no registration timeout), XEP-0198, no shaper, and a
 * listen backlog of 4,096 as Starling's (ejabberd's default of 5 drops the SYNs of a login storm,
 * and each dropped client waits 1 s or more for its retransmission); the Erlang distribution and
 * epmd bound to loopback too. Everything else is ejabberd's default.
 * ejabberdctl runs the node as the `ejabberd` user, so the directory is handed to that user.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A running ejabberd: its c2s port and the pid of its Erlang VM (all of the server). */
export interface StartedEjabberd {
  port: number;
  /** The Erlang VM's pid; a restart changes it. */
  readonly pid: number;
  /** Stops and starts the node on the same data (a fresh VM, for memory figures). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface EjabberdOptions {
  port: number;
  domain: string;
  /** The ejabberdctl script (default /usr/sbin/ejabberdctl). */
  ejabberdctl?: string;
  /**
   * A PEM with certificate and key. Default: a self-signed ECDSA P-256 certificate for `domain`
   * made for the run, the key type Starling generates, so both servers sign handshakes alike
   * (the package's /etc/ejabberd/ejabberd.pem is RSA-2048).
   */
  certificate?: string;
  /**
   * Limit each client's input like the package's own ejabberd.yml does (`c2s_shaper: normal`,
   * 3,000 B/s with a 20,000 B burst). Default false: no shaper, for throughput figures.
   */
  stockShaper?: boolean;
}

function configYaml(dir: string, options: EjabberdOptions): string {
  return `loglevel: warning
hosts:
  - ${JSON.stringify(options.domain)}
certfiles:
  - ${JSON.stringify(join(dir, "server.pem"))}
listen:
  -
    port: ${options.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    backlog: 4096
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    starttls: true
    starttls_required: false
auth_method: internal
auth_password_format: scram
registration_timeout: infinity
access_rules:
  c2s:
    allow: all
  register:
    allow: all
shaper:
  normal:
    rate: 3000
    burst_size: 20000
shaper_rules:
  max_user_sessions: 10
  c2s_shaper: ${options.stockShaper === true ? "normal" : "none"}
modules:
  mod_disco: {}
  mod_ping: {}
  mod_register:
    ip_access: all
    access: register
  mod_roster: {}
  mod_stream_mgmt: {}
  mod_offline: {}
`;
}

/** Whether something accepts connections on 127.0.0.1:`port`. */
function portTaken(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * Writes `server.pem` in `dir`: a self-signed ECDSA P-256 certificate for `domain` and its key.
 * Made by openssl, not by the `selfsigned` generator the tests use (test/helpers/certificates.ts):
 * ejabberd 23.01 refuses that pair ("no matching private key found for this certificate"), with
 * its PKCS#8 key and as SEC 1 alike.
 */
export async function selfSignedP256(dir: string, domain: string): Promise<void> {
  const key = join(dir, "key.pem");
  const cert = join(dir, "cert.pem");
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${domain}`,
    "-addext",
    `subjectAltName=DNS:${domain}`,
    "-keyout",
    key,
    "-out",
    cert,
  ]);
  writeFileSync(join(dir, "server.pem"), readFileSync(cert, "utf8") + readFileSync(key, "utf8"));
  rmSync(key);
  rmSync(cert);
}

/** Starts ejabberd and resolves once `ejabberdctl started` says it is up. */
export async function startEjabberd(options: EjabberdOptions): Promise<StartedEjabberd> {
  const ctl = options.ejabberdctl ?? "/usr/sbin/ejabberdctl";
  if (!existsSync(ctl)) throw new Error(`${ctl} not found: apt-get install ejabberd`);
  // ejabberdctl reports a node started even when its listener could not bind: the bench would
  // then measure whatever holds the port (an ejabberd left over from an interrupted run).
  if (await portTaken(options.port))
    throw new Error(`127.0.0.1:${options.port} is taken; pass another --port`);
  const dir = mkdtempSync(join(tmpdir(), "ejabberd-bench-"));
  const node = `bench${process.pid}@localhost`;
  if (options.certificate !== undefined)
    writeFileSync(join(dir, "server.pem"), readFileSync(options.certificate));
  else await selfSignedP256(dir, options.domain);
  writeFileSync(join(dir, "ejabberd.yml"), configYaml(dir, options));
  // Sourced by ejabberdctl: its own file, so the package's (which names /etc's config) is not read.
  writeFileSync(
    join(dir, "ejabberdctl.cfg"),
    [
      `ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {127,0,0,1}"`,
      `EJABBERD_PID_PATH=${join(dir, "ejabberd.pid")}`,
      "export ERL_EPMD_ADDRESS=127.0.0.1",
      `ERL=${join(dir, "erl")}`,
      "",
    ].join("\n"),
  );
  // The VM runs as the ejabberd user through su, which resets its descriptor limit to the soft
  // one (often 1,024: the listener then dies at about a thousand connections); this wrapper
  // raises it to the hard limit before starting erl.
  writeFileSync(join(dir, "erl"), '#!/bin/sh\nulimit -n "$(ulimit -Hn)"\nexec /usr/bin/erl "$@"\n', {
    mode: 0o755,
  });
  await run("chown", ["-R", "ejabberd:ejabberd", dir]);
  const args = [
    "--config",
    join(dir, "ejabberd.yml"),
    "--ctl-config",
    join(dir, "ejabberdctl.cfg"),
    "--logs",
    dir,
    "--spool",
    join(dir, "spool"),
    "--node",
    node,
  ];
  const env = { ...process.env, ERL_EPMD_ADDRESS: "127.0.0.1" };
  const start = async (): Promise<number> => {
    await run(ctl, [...args, "start"], { env });
    await run(ctl, [...args, "started"], { env, timeout: 60_000 });
    const pid = Number(readFileSync(join(dir, "ejabberd.pid"), "utf8").trim());
    if (!Number.isInteger(pid) || pid <= 0) throw new Error(`ejabberd wrote no pid to ${dir}`);
    return pid;
  };
  const halt = async (): Promise<void> => {
    await run(ctl, [...args, "stop"], { env }).catch(() => {});
    await run(ctl, [...args, "stopped"], { env, timeout: 30_000 }).catch(() => {});
  };
  let pid = await start();
  return {
    port: options.port,
    get pid() {
      return pid;
    },
    async restart() {
      await halt();
      pid = await start();
    },
    async stop() {
      await halt();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
