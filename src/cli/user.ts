/**
 * `starling user add|remove|passwd|list`: account administration that works whether the node
 * runs or not. It first asks the running node's admin endpoint on 127.0.0.1 (the node holds the
 * LevelDB lock, so it must do the write); when nothing listens there it opens the store itself.
 */
import { Accounts, providerManagesAccounts } from "../auth/accounts.ts";
import type { Config } from "../config/defaults.ts";
import { loadConfig } from "../config/load-config.ts";
import { XmppServerError } from "../errors.ts";
import { isStoreLocked } from "../storage/level-store.ts";
import { createStore } from "../storage/open-store.ts";
import { type BareJid, normalizeDomain, parseUserJid } from "../xmpp/jid.ts";
import { adminRequest, adminTargetOf, replyError } from "./admin-client.ts";
import { type CommandContext, parseCommandArgs, parsePortFlag, stringFlag, usageError } from "./args.ts";
import { readPassword } from "./password.ts";

const COMMON_OPTIONS = `  --config FILE     configuration file (default: ./cluster.config.json if present)
  --http-port N     admin port of the running node (default: from the configuration, 5280)
  --data DIR        data directory, used when no node answers (default: from the configuration)
  -h, --help        show this help`;

const PASSWORD_NOTE = `Without --password, the password is prompted for twice on a terminal, or read as
one line from stdin otherwise (e.g. printf '%s\\n' "$PW" | starling user add JID).`;

const RUNNING_NOTE = `Works with the node running (through its admin endpoint on 127.0.0.1) or stopped
(the store is opened directly).`;

/** `--help` text of each subcommand. */
const SUBCOMMAND_HELP = {
  add: `Usage: starling user add JID [--password P] [options]

Creates the account JID (user@domain, domain being the server's). ${RUNNING_NOTE}
${PASSWORD_NOTE}

Options:
  --password P      the password (visible to other local users in the process list)
${COMMON_OPTIONS}
`,
  remove: `Usage: starling user remove JID [options]

Deletes the account JID and everything stored for it (roster, offline messages, ...).
${RUNNING_NOTE}

Options:
${COMMON_OPTIONS}
`,
  passwd: `Usage: starling user passwd JID [--password P] [options]

Sets a new password for the account JID. ${RUNNING_NOTE}
${PASSWORD_NOTE}

Options:
  --password P      the new password (visible to other local users in the process list)
${COMMON_OPTIONS}
`,
  list: `Usage: starling user list [options]

Prints every account, one JID per line, sorted. ${RUNNING_NOTE}

Options:
${COMMON_OPTIONS}
`,
} as const;

type Subcommand = keyof typeof SUBCOMMAND_HELP;

/** `--help` text of `starling user`. */
export const help = `Usage: starling user <command> [options]

Account administration, with the node running or stopped.

Commands:
  add JID [--password P]      create an account
  remove JID                  delete an account and its data
  passwd JID [--password P]   set a new password
  list                        print every account, one per line

Run starling user <command> --help for the options of each.
`;

const OPTIONS = {
  config: { type: "string" },
  "http-port": { type: "string" },
  data: { type: "string" },
  password: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** One account operation, done through the admin endpoint or on the store. */
interface UserOperation<T> {
  request: { method: string; path: string; body?: unknown };
  /** The status that means success. */
  expect: number;
  fromReply(body: unknown): T;
  /** The same on the store directly, through the accounts layer (no node runs). */
  viaStore(accounts: Accounts): Promise<T>;
}

/** Runs `starling user <subcommand> …`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h") {
    if (name === undefined) throw usageError("missing user command", "starling user --help");
    context.out(help.trimEnd());
    return;
  }
  if (!Object.hasOwn(SUBCOMMAND_HELP, name)) {
    throw usageError(`unknown user command "${name}"`, "starling user --help");
  }
  const subcommand = name as Subcommand;
  const hint = `starling user ${subcommand} --help`;
  const { values, positionals } = parseCommandArgs(rest, OPTIONS, hint, true);
  if (values.help === true) {
    context.out(SUBCOMMAND_HELP[subcommand].trimEnd());
    return;
  }
  const takesJid = subcommand !== "list";
  if (takesJid && positionals.length === 0) throw usageError("missing JID", hint);
  if (positionals.length > (takesJid ? 1 : 0)) {
    throw usageError(`unexpected argument "${positionals[takesJid ? 1 : 0]}"`, hint);
  }
  const takesPassword = subcommand === "add" || subcommand === "passwd";
  if (!takesPassword && values.password !== undefined) {
    throw usageError("unknown option --password", hint);
  }

  const overrides: Record<string, unknown> = {};
  const httpPort = parsePortFlag("http-port", values["http-port"]);
  if (httpPort !== undefined) overrides["ports.http"] = httpPort;
  const data = stringFlag(values.data);
  if (data !== undefined) overrides.dataDir = data;
  const configFile = stringFlag(values.config);
  const config = loadConfig(configFile === undefined ? { overrides } : { configFile, overrides });

  const jid = takesJid ? requireUserJid(positionals[0] ?? "", config.domain) : undefined;
  let password: string | undefined;
  if (takesPassword) {
    password = stringFlag(values.password) ?? (await readPassword());
    if (password === "") throw usageError("the password must not be empty");
  }

  switch (subcommand) {
    case "add":
      await perform(config, addUser(jid!, password!));
      context.out(`created ${jid}`);
      return;
    case "remove":
      await perform(config, removeUser(jid!));
      context.out(`removed ${jid}`);
      return;
    case "passwd":
      await perform(config, setPassword(jid!, password!));
      context.out(`changed the password of ${jid}`);
      return;
    case "list":
      for (const user of await perform(config, listUsers())) context.out(user);
      return;
    default: {
      const unreachable: never = subcommand;
      throw new TypeError(`unhandled user command ${unreachable}`);
    }
  }
}

/** Parses the JID argument; it must be `local@domain` on the configured domain. */
function requireUserJid(input: string, domain: string): BareJid {
  const jid = parseUserJid(input);
  if (jid === undefined) {
    throw usageError(`"${input}" is not a valid user JID (expected user@${domain})`);
  }
  const jidDomain = jid.slice(jid.lastIndexOf("@") + 1);
  if (jidDomain !== (normalizeDomain(domain) ?? domain)) {
    throw usageError(`${jid} is not on this server's domain ${domain} (expected user@${domain})`);
  }
  return jid;
}

const userPath = (jid: BareJid) => `/api/users/${encodeURIComponent(jid)}`;

function addUser(jid: BareJid, password: string): UserOperation<void> {
  return {
    request: { method: "POST", path: "/api/users", body: { jid, password } },
    expect: 201,
    fromReply: () => undefined,
    async viaStore(accounts) {
      if (!(await accounts.create(jid, password))) {
        throw new XmppServerError("XSRV_USER_EXISTS", `${jid} already exists`);
      }
    },
  };
}

function removeUser(jid: BareJid): UserOperation<void> {
  return {
    request: { method: "DELETE", path: userPath(jid) },
    expect: 204,
    fromReply: () => undefined,
    async viaStore(accounts) {
      if (!(await accounts.remove(jid))) throw notFound(jid);
    },
  };
}

function setPassword(jid: BareJid, password: string): UserOperation<void> {
  return {
    request: { method: "PUT", path: `${userPath(jid)}/password`, body: { password } },
    expect: 204,
    fromReply: () => undefined,
    async viaStore(accounts) {
      if (!(await accounts.setPassword(jid, password))) throw notFound(jid);
    },
  };
}

function listUsers(): UserOperation<readonly string[]> {
  return {
    request: { method: "GET", path: "/api/users" },
    expect: 200,
    fromReply(body) {
      const users = (body as { users?: unknown } | undefined)?.users;
      if (!Array.isArray(users) || !users.every((u) => typeof u === "string")) {
        throw new XmppServerError("XSRV_ADMIN", "the admin endpoint sent a malformed user list");
      }
      return users;
    },
    viaStore: (accounts) => accounts.list(),
  };
}

function notFound(jid: BareJid): XmppServerError {
  return new XmppServerError("XSRV_USER_NOT_FOUND", `${jid} does not exist`);
}

/** Does `operation` through the running node if one answers, on the store otherwise. */
async function perform<T>(config: Readonly<Config>, operation: UserOperation<T>): Promise<T> {
  const target = adminTargetOf(config);
  const url = `${target.tls === undefined ? "http" : "https"}://${target.host}:${target.port}`;
  const { method, path, body } = operation.request;
  const reply = await adminRequest(target, method, path, body);
  if (reply.kind === "reply" && reply.domain !== undefined) {
    if (reply.domain !== (normalizeDomain(config.domain) ?? config.domain)) {
      throw new XmppServerError(
        "XSRV_ADMIN",
        `the node answering on ${url} serves ${reply.domain}, not ${config.domain}; pass the --http-port or --config of the right node`,
      );
    }
    if (reply.status === operation.expect) return operation.fromReply(reply.body);
    throw replyError(reply);
  }

  // Nothing (or something that is not Starling) answered: no node of ours on that port.
  const store = createStore(config);
  const location = store.location;
  try {
    await store.open();
  } catch (error) {
    if (!isStoreLocked(error)) throw error;
    const answer =
      reply.kind === "refused" ? "no node answered on" : "the server answering is not a Starling node at";
    throw new XmppServerError(
      "XSRV_STORE",
      `the store ${location} is in use by another process, and ${answer} ${url}; if a node is running on this data directory, pass its --http-port`,
      { cause: error },
    );
  }
  try {
    return await operation.viaStore(new Accounts(store, () => providerManagesAccounts(config)));
  } finally {
    await store.close();
  }
}
