/**
 * `starling migrate --from level:DIR --to postgres://...`: copies every account and what it
 * owns (roster with subscription states, pending subscription requests, offline messages,
 * vCard, private XML, blocklist) from one store into another, then counts both sides and fails
 * if anything differs. The node must be stopped: LevelDB allows one opener.
 */
import { join } from "node:path";
import { XmppServerError } from "../errors.ts";
import { LevelStore } from "../storage/level-store.ts";
import { PostgresStore } from "../storage/postgres/postgres-store.ts";
import type { Store } from "../storage/store.ts";
import type { BareJid } from "../xmpp/jid.ts";
import { type CommandContext, parseCommandArgs, stringFlag, usageError } from "./args.ts";

const HINT = "starling migrate --help";

/** `--help` text of `starling migrate`. */
export const help = `Usage: starling migrate --from STORE --to STORE

Copies every account and its data (roster, pending subscriptions, offline messages, vCard,
private XML, blocklist) from one store to another, then verifies the counts on both sides.
Stop the node first. Accounts that already exist in the target are left as they are and
reported.

STORE is one of:
  level:DIR             a LevelDB store: a node's data directory (its store/ inside) or the store itself
  postgres://...        a PostgreSQL database (postgresql:// also works)

Example:
  starling migrate --from level:./data --to postgres://starling:secret@db.example.org/starling

Options:
  --from STORE           where the data is now
  --to STORE             where it should go
  -h, --help             show this help
`;

const OPTIONS = {
  from: { type: "string" },
  to: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Opens the store a `--from`/`--to` value names. */
function storeFor(flag: string, value: string | undefined): Store & { readonly location: string } {
  if (value === undefined || value === "") throw usageError(`--${flag} is required`, HINT);
  if (/^postgres(ql)?:\/\/./.test(value)) return new PostgresStore(value);
  if (value.startsWith("level:") && value.length > "level:".length) {
    const dir = value.slice("level:".length);
    // A node's data directory holds the store in store/; a path ending in store is the store.
    return new LevelStore(/(^|\/)store\/?$/.test(dir) ? dir : join(dir, "store"));
  }
  throw usageError(`--${flag} must be level:DIR or a postgres:// URL (got ${JSON.stringify(value)})`, HINT);
}

/** What one account holds, counted the same way on both sides. */
interface Counts {
  rosterItems: number;
  pending: number;
  offline: number;
  vcards: number;
  privateItems: number;
  blocked: number;
}

async function countsOf(store: Store, jid: BareJid): Promise<Counts> {
  const [roster, pending, offline, vcard, privateItems, blocked] = await Promise.all([
    store.getRoster(jid),
    store.getPendingSubscriptions(jid),
    store.listOffline(jid),
    store.getVCard(jid),
    store.listPrivate(jid),
    store.getBlocklist(jid),
  ]);
  return {
    rosterItems: roster.items.length,
    pending: pending.length,
    offline: offline.length,
    vcards: vcard === undefined ? 0 : 1,
    privateItems: privateItems.length,
    blocked: blocked.length,
  };
}

/** Copies one account and everything it owns. */
async function copyAccount(from: Store, to: Store, jid: BareJid): Promise<boolean> {
  const account = await from.getAccount(jid);
  if (account === undefined) return false;
  if (!(await to.createAccount(account))) return false;
  const [roster, pending, offline, vcard, privateItems, blocked] = await Promise.all([
    from.getRoster(jid),
    from.getPendingSubscriptions(jid),
    from.listOffline(jid),
    from.getVCard(jid),
    from.listPrivate(jid),
    from.getBlocklist(jid),
  ]);
  for (const item of roster.items) await to.putRosterItem(jid, item);
  for (const request of pending) await to.putPendingSubscription(jid, request);
  // No limit here: what was stored under an older limit is kept.
  for (const message of offline) await to.pushOffline(jid, message, Number.MAX_SAFE_INTEGER);
  if (vcard !== undefined) await to.putVCard(jid, vcard);
  for (const item of privateItems) await to.putPrivate(jid, item.key, item.xml);
  if (blocked.length > 0) await to.addBlocked(jid, blocked);
  return true;
}

/** Runs `starling migrate`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values } = parseCommandArgs(args, OPTIONS, HINT);
  if (values.help === true) {
    context.out(help.trimEnd());
    return;
  }
  const from = storeFor("from", stringFlag(values.from));
  const to = storeFor("to", stringFlag(values.to));
  if (from.location === to.location) throw usageError("--from and --to name the same store", HINT);
  await from.open();
  try {
    await to.open();
    try {
      const accounts = await from.listAccounts();
      let copied = 0;
      const skipped: BareJid[] = [];
      const mismatched: string[] = [];
      const totals: Counts = {
        rosterItems: 0,
        pending: 0,
        offline: 0,
        vcards: 0,
        privateItems: 0,
        blocked: 0,
      };
      for (const jid of accounts) {
        if (!(await copyAccount(from, to, jid))) {
          skipped.push(jid);
          continue;
        }
        copied++;
        const [source, target] = await Promise.all([countsOf(from, jid), countsOf(to, jid)]);
        for (const key of Object.keys(totals) as (keyof Counts)[]) {
          totals[key] += source[key];
          if (source[key] !== target[key]) {
            mismatched.push(`${jid}: ${key} ${source[key]} in the source, ${target[key]} in the target`);
          }
        }
      }
      context.out(
        `copied ${copied} of ${accounts.length} accounts from ${from.location} to ${to.location}: ` +
          `${totals.rosterItems} roster items, ${totals.pending} pending subscriptions, ` +
          `${totals.offline} offline messages, ${totals.vcards} vCards, ${totals.privateItems} private XML items, ` +
          `${totals.blocked} blocked JIDs`,
      );
      for (const jid of skipped) context.out(`skipped ${jid}: it already exists in the target`);
      if (mismatched.length > 0) {
        throw new XmppServerError("XSRV_STORE", `verification failed: ${mismatched.join("; ")}`);
      }
      context.out("verified: every count matches");
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}
