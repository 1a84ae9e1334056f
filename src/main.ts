/**
 * The `starling` process entry, and the only file that exits the process. It parses the command
 * name, hands the rest of argv to `src/cli/<command>.ts`, and turns failures into one line on
 * stderr: usage and configuration errors exit 2, a fenced node exits 3, every other failure exits 1.
 */
import { availableParallelism, constants } from "node:os";
import type { Command, CommandContext } from "./cli/args.ts";
import { XmppServerError } from "./errors.ts";

// PBKDF2 for account creation and LevelDB I/O share libuv's threadpool (4 threads by default);
// give it one thread per core. libuv reads this once, when the pool first starts, which is
// after this line: commands are imported lazily below.
process.env.UV_THREADPOOL_SIZE ??= String(Math.min(Math.max(4, availableParallelism()), 64));

const COMMANDS: Record<string, () => Promise<Command>> = {
  start: () => import("./cli/start.ts"),
  user: () => import("./cli/user.ts"),
  migrate: () => import("./cli/migrate.ts"),
  status: () => import("./cli/status.ts"),
  leave: () => import("./cli/leave.ts"),
  join: () => import("./cli/join.ts"),
  kick: () => import("./cli/kick.ts"),
  token: () => import("./cli/token.ts"),
  sessions: () => import("./cli/sessions.ts"),
  send: () => import("./cli/send.ts"),
  announce: () => import("./cli/announce.ts"),
  reload: () => import("./cli/reload.ts"),
  check: () => import("./cli/check.ts"),
};

const HELP = `Usage: starling <command> [options]

Starling, a clustered XMPP server.

Commands:
  start                       run a node in the foreground
  user add JID                create an account
  user remove JID             delete an account and its data
  user passwd JID             set an account's password
  user list                   print every account
  migrate                     copy a store into another (LevelDB to PostgreSQL)
  status [--json]             show the node, and the cluster: members, epoch, partition shares
  leave                       drain this node out of the cluster and stop it
  join HOST:PORT              check this node's membership with the member at HOST:PORT
  kick JID                    end every session of a user (a web site's logout)
  token JID [--ttl S]         print a one-time login token for a user
  sessions [JID]              list the sessions of every node (or of one user)
  send JID MESSAGE            send a message from the server to a user
  announce MESSAGE [--all]    send a message from the server to everyone online (or every account)
  reload                      apply the configuration file again, without a restart (as SIGHUP)
  check [config|certs|dns]    check the configuration, the certificate and the DNS records;
                              exits 1 on an error, 2 for an invalid configuration

Run starling <command> --help for the options of each.
Options:
  -h, --help                  show this help
  --version                   print the version
`;

// biome-ignore lint/suspicious/noConsole: command output is the CLI's job.
const out = (line: string) => console.log(line);

/**
 * Exit codes: 0 success, 1 failure, 2 usage or configuration error, 3 fenced (the cluster
 * moved this node's partitions to others; a supervisor should start it again, as a new member).
 */
async function main(argv: readonly string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === "--help" || name === "-h" || name === "help") {
    out(HELP.trimEnd());
    return 0;
  }
  if (name === "--version") {
    const { default: pkg } = await import("../package.json", { with: { type: "json" } });
    out(pkg.version);
    return 0;
  }
  if (name === undefined)
    throw new XmppServerError("XSRV_CLI_USAGE", "missing command (see starling --help)");
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (load === undefined) {
    throw new XmppServerError("XSRV_CLI_USAGE", `unknown command "${name}" (see starling --help)`);
  }
  const command = await load();
  const controller = new AbortController();
  if (name === "start") {
    // The first signal stops the node gracefully; a second one means "now".
    const onSignal = (signal: NodeJS.Signals) => {
      if (controller.signal.aborted) process.exit(128 + (constants.signals[signal] ?? 0));
      controller.abort(signal);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  }
  const context: CommandContext = { signal: controller.signal, out };
  await command.run(args, context);
  return 0;
}

function exitCodeOf(error: unknown): number {
  const code = error instanceof XmppServerError ? error.code : undefined;
  if (code === "XSRV_FENCED") return 3;
  return code === "XSRV_CLI_USAGE" || code === "XSRV_CONFIG_INVALID" ? 2 : 1;
}

try {
  process.exit(await main(process.argv.slice(2)));
} catch (error) {
  const message = error instanceof Error ? error.message : String(error);
  // Coded errors (ours, or Node's such as EADDRINUSE) say it all in their message; an error
  // without a code is a bug, whose stack the operator needs to report it.
  const coded = typeof (error as { code?: unknown } | null)?.code === "string";
  const detail = coded || !(error instanceof Error) ? "" : `\n${error.stack}`;
  process.stderr.write(`starling: ${message.replaceAll("\n", " ")}${detail}\n`);
  process.exit(exitCodeOf(error));
}
