/** `starling status`: the running node, and the cluster as it sees it. */
import type { ClusterStatus } from "../cluster/cluster-member.ts";
import { XmppServerError } from "../errors.ts";
import { type CommandContext, parseCommandArgs } from "./args.ts";
import { ADMIN_FLAGS, adminTarget, clusterRequest } from "./cluster-admin.ts";

const HINT = "starling status --help";

/** `--help` text. */
export const help = `Usage: starling status [--json] [--http-port N | --config FILE]

Prints the node (version, uptime, connections, sessions, accounts, memory) and, when it is a
cluster member, the cluster's members with their state, the epoch, each node's share of the
partitions, the latest epoch each member has settled (applied, with every partition it
gained received; the cluster moves partitions again only once all have), and this node's
connection and actor counts.

Options:
  --json              print the whole view as JSON: {"node": ..., "cluster": ... or null}
  --http-port N       admin port of the running node (default: from the configuration)
  --config FILE       configuration file to read the admin port from
  -h, --help          show this help
`;

type StatusBody = ClusterStatus & {
  nodes: Record<
    string,
    { connections: number; sessions: number; actors: number; retained: number; waitingPartitions: number }
  >;
};

/** What `GET /api/status` answers (src/cluster/node.ts). */
interface NodeBody {
  node: string;
  version: string;
  domain: string;
  uptimeS: number;
  workers: unknown[];
  connections: number;
  sessions: number;
  users: number;
  memory: { rss: number };
}

/** Runs `starling status`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values } = parseCommandArgs(args, { ...ADMIN_FLAGS, json: { type: "boolean" } }, HINT);
  if (values.help === true) return context.out(help.trimEnd());
  const target = adminTarget(values);
  const node = (await clusterRequest(target, "GET", "/api/status")) as NodeBody;
  const body = (await clusterRequest(target, "GET", "/api/cluster").catch((error: unknown) => {
    // 409: the node is alone, not a cluster member.
    if (error instanceof XmppServerError && /not a cluster member/.test(error.message)) return null;
    throw error;
  })) as StatusBody | null;
  if (values.json === true) return context.out(JSON.stringify({ node, cluster: body }, null, 2));
  context.out(
    `node ${node.node}: Starling ${node.version} for ${node.domain}, up ${formatUptime(node.uptimeS)}, ${node.workers.length} workers, ${node.connections} connections, ${node.sessions} sessions, ${node.users} accounts, ${Math.round(node.memory.rss / 1_048_576)} MiB resident`,
  );
  if (body === null) return context.out("not clustered: a single node");
  context.out(
    `cluster: ${body.members.length} members, epoch ${body.epoch}, view ${body.version}, ${body.partitions} partitions (asked ${body.node}, ${body.state})`,
  );
  context.out(
    `${"NODE".padEnd(16)} ${"STATUS".padEnd(8)} ${"PEER".padEnd(22)} ${"PARTS".padStart(6)} ${"SHARE".padStart(6)} ${"LINK".padEnd(4)} ${"SETTLED".padStart(7)} CONNS  ACTORS`,
  );
  for (const m of body.members) {
    const counts = body.nodes[m.node];
    const share = body.partitions > 0 ? `${((100 * m.partitions) / body.partitions).toFixed(1)}%` : "-";
    context.out(
      `${m.node.padEnd(16)} ${m.status.padEnd(8)} ${m.peerAddr.padEnd(22)} ${String(m.partitions).padStart(6)} ${share.padStart(6)} ${(m.linkUp ? "up" : "down").padEnd(4)} ${String(m.settledEpoch).padStart(7)} ${String(counts?.connections ?? "-").padEnd(6)} ${counts?.actors ?? "-"}`,
    );
  }
}

/** `3d 4h`, `2h 5m`, `7m 12s`. */
function formatUptime(seconds: number): string {
  const d = Math.floor(seconds / 86_400);
  const h = Math.floor((seconds % 86_400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  return `${m}m ${seconds % 60}s`;
}
