/**
 * `starling start`: loads the configuration (file, environment, then these flags), starts one
 * node, and stops it gracefully on the first SIGTERM or SIGINT (`main.ts` turns a second signal
 * into an immediate exit).
 */
import { once } from "node:events";
import { loadConfig } from "../config/load-config.ts";
import { XmppServerError } from "../errors.ts";
import { createLogger } from "../log.ts";
import {
  type CommandContext,
  parseCommandArgs,
  parseCountFlag,
  parseLogLevelFlag,
  parsePortFlag,
  stringFlag,
} from "./args.ts";

const HINT = "starling start --help";

/** `--help` text of `starling start`. */
export const help = `Usage: starling start [options]

Starts a Starling node in the foreground; logs go to stderr as JSON lines.
SIGTERM or SIGINT stops it gracefully; a second signal exits at once.

Options:
  --config FILE          configuration file (default: ./cluster.config.json if present)
  --domain D             XMPP domain served (default: localhost)
  --host ADDR            address the client listeners bind to (default: 127.0.0.1)
  --c2s-port N           client port with STARTTLS (default: 5222; 0 = any free port)
  --tls-port N           client port with direct TLS (default: 5223; 0 = any free port)
  --http-port N          admin API port, on admin.host (default: 5280; 0 = any free port)
  --web-port N           client web port with TLS: WebSocket, host-meta (default: 5443; 0 = any)
  --web-plain-port N     the same without TLS, for a reverse proxy in front (default: off)
  --data DIR             data directory: store and generated certificate (default: ./data)
  --store URL            postgres:// URL of a shared PostgreSQL store (default: LevelDB in --data)
  --workers N            worker threads, 0 = one per core (default: 0)
  --node NAME            this node's name in the cluster (default: the host name)
  --peer-host ADDR       address other nodes dial to reach this one (default: --host)
  --peer-port N          cluster peer-link port (default: 5290)
  --secret S             cluster secret shared by every node; turns on cluster mode (needs --store)
  --join HOST:PORT       join the cluster of the node whose peer port this is
  --allow-registration   allow XEP-0077 in-band registration
  --log-level L          trace, debug, info, warn, error, fatal or silent (default: info)
  -h, --help             show this help
`;

const OPTIONS = {
  config: { type: "string" },
  domain: { type: "string" },
  host: { type: "string" },
  "c2s-port": { type: "string" },
  "tls-port": { type: "string" },
  "http-port": { type: "string" },
  "web-port": { type: "string" },
  "web-plain-port": { type: "string" },
  data: { type: "string" },
  store: { type: "string" },
  workers: { type: "string" },
  node: { type: "string" },
  "peer-host": { type: "string" },
  "peer-port": { type: "string" },
  secret: { type: "string" },
  join: { type: "string" },
  "allow-registration": { type: "boolean" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Runs `starling start` until `context.signal` aborts, then stops the node. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values } = parseCommandArgs(args, OPTIONS, HINT);
  if (values.help === true) {
    context.out(help.trimEnd());
    return;
  }
  const overrides: Record<string, unknown> = {};
  const set = (key: string, value: unknown) => {
    if (value !== undefined) overrides[key] = value;
  };
  set("domain", stringFlag(values.domain));
  set("host", stringFlag(values.host));
  set("ports.c2s", parsePortFlag("c2s-port", values["c2s-port"]));
  set("ports.tls", parsePortFlag("tls-port", values["tls-port"]));
  set("ports.http", parsePortFlag("http-port", values["http-port"]));
  set("ports.web", parsePortFlag("web-port", values["web-port"]));
  set("ports.webPlain", parsePortFlag("web-plain-port", values["web-plain-port"]));
  set("dataDir", stringFlag(values.data));
  set("store.url", stringFlag(values.store));
  set("workers", parseCountFlag("workers", values.workers));
  set("cluster.node", stringFlag(values.node));
  set("cluster.peerHost", stringFlag(values["peer-host"]));
  set("cluster.peerPort", parsePortFlag("peer-port", values["peer-port"]));
  set("cluster.secret", stringFlag(values.secret));
  set("cluster.join", stringFlag(values.join));
  if (values["allow-registration"] === true) overrides["registration.allow"] = true;
  set("log.level", parseLogLevelFlag("log-level", values["log-level"]));

  const configFile = stringFlag(values.config);
  const config = loadConfig(configFile === undefined ? { overrides } : { configFile, overrides });
  const log = createLogger({ level: config.log.level });
  // Imported here so that --help and usage errors answer without loading the whole server.
  const { startNode } = await import("../cluster/node.ts");
  const node = await startNode(config, log, {
    reloadConfig: () => loadConfig(configFile === undefined ? { overrides } : { configFile, overrides }),
  });
  // SIGHUP: apply the configuration file again (certificates, log level, limits, auth), as
  // `starling reload` does; a bad file is logged and changes nothing.
  const onHangup = () => {
    node
      .reload()
      .catch((error: unknown) =>
        log.error({ err: error }, "reload failed (an invalid file changes nothing; the error says what)"),
      );
  };
  process.on("SIGHUP", onHangup);
  context.signal.addEventListener("abort", () => process.off("SIGHUP", onHangup), { once: true });

  const ended = await Promise.race([
    context.signal.aborted ? Promise.resolve(undefined) : once(context.signal, "abort").then(() => undefined),
    node.finished,
  ]);
  if (ended?.startsWith("fenced") === true) {
    // Nothing graceful is allowed any more: the others own our partitions.
    throw new XmppServerError("XSRV_FENCED", `node stopped: ${ended}`);
  }
  const reason = ended ?? (typeof context.signal.reason === "string" ? context.signal.reason : "shutdown");
  log.info({ reason }, "stopping node");
  await node.stop(reason);
}
