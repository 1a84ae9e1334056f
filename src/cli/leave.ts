/** `starling leave`: drains the running node out of the cluster, then waits until it has exited. */
import { setTimeout as sleep } from "node:timers/promises";
import { XmppServerError } from "../errors.ts";
import { adminRequest } from "./admin-client.ts";
import { type CommandContext, parseCommandArgs } from "./args.ts";
import { ADMIN_FLAGS, adminTarget, clusterRequest } from "./cluster-admin.ts";

const HINT = "starling leave --help";

/** `--help` text. */
export const help = `Usage: starling leave [--http-port N | --config FILE] [--timeout S]

Hands the running node's partitions to the other members, tells its clients to reconnect
elsewhere (XEP-0198 sessions resume there), marks it down and stops it. Returns when the
node has exited.

Options:
  --http-port N       admin port of the running node (default: from the configuration)
  --config FILE       configuration file to read the admin port from
  --timeout S         give up waiting after S seconds (default: 120)
  -h, --help          show this help
`;

/** Runs `starling leave`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values } = parseCommandArgs(args, { ...ADMIN_FLAGS, timeout: { type: "string" } }, HINT);
  if (values.help === true) return context.out(help.trimEnd());
  const timeoutS = values.timeout === undefined ? 120 : Number(values.timeout);
  if (!Number.isFinite(timeoutS) || timeoutS <= 0) {
    throw new XmppServerError("XSRV_CLI_USAGE", "--timeout must be a positive number of seconds");
  }
  const target = adminTarget(values);
  await clusterRequest(target, "POST", "/api/cluster/leave");
  context.out("leaving: handing off partitions and moving clients");
  const deadline = Date.now() + timeoutS * 1000;
  while (Date.now() < deadline) {
    if (
      (await adminRequest(target, "GET", "/api/status").catch(() => ({ kind: "refused" }))).kind === "refused"
    ) {
      context.out("left the cluster; the node has stopped");
      return;
    }
    await sleep(250);
  }
  throw new XmppServerError("XSRV_CLUSTER_STALE", `the node was still running after ${timeoutS} s`);
}
