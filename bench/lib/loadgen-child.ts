/**
 * Entry point of a load-generator child process: hosts one group of clients — a ClientGroup
 * (c2s-throughput, `--loadgen-procs K`), a FailoverGroup (failover scenarios) or an AttackGroup
 * (abuse.ts) — and serves the method calls that child-rpc.ts sends over the IPC channel. It
 * exits when the channel closes, so a crashed or killed orchestrator never leaves load clients
 * behind.
 */
import { AttackGroup, type AttackGroupConfig } from "./attack-group.ts";
import { ClientGroup, type GroupConfig } from "./client-group.ts";
import { FailoverGroup, type FailoverGroupConfig } from "./failover-group.ts";

/** The group kinds a child can host. */
export type GroupKind = "throughput" | "failover" | "attack";

/** A call from the orchestrator; the first is always `init` with `{ kind, config }`. */
export interface ChildCall {
  id: number;
  method: string;
  arg: unknown;
}

/** The child's answer to one {@link ChildCall}. */
export type ChildReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

let group: ClientGroup | FailoverGroup | AttackGroup | undefined;

function reply(message: ChildReply): void {
  // A call can outlive the orchestrator's interest: it stops waiting for a slow closeAll (100,000
  // clients) and shuts the child down, and the late answer then meets a closed channel. With a
  // callback, send reports that there instead of crashing the child with an 'error' event.
  if (process.connected) process.send?.(message, undefined, undefined, () => {});
}

function createGroup(arg: unknown): ClientGroup | FailoverGroup | AttackGroup {
  const { kind, config } = arg as { kind: GroupKind; config: unknown };
  switch (kind) {
    case "throughput":
      return new ClientGroup(config as GroupConfig);
    case "failover":
      return new FailoverGroup(config as FailoverGroupConfig);
    case "attack":
      return new AttackGroup(config as AttackGroupConfig);
    default: {
      const never: never = kind;
      throw new TypeError(`Unknown group kind ${JSON.stringify(never)}`);
    }
  }
}

process.on("message", (message: ChildCall) => {
  void (async () => {
    try {
      if (message.method === "init") {
        group = createGroup(message.arg);
        return reply({ id: message.id, ok: true, value: undefined });
      }
      if (group === undefined) throw new Error("Load child used before init");
      const method = (group as unknown as Record<string, unknown>)[message.method];
      if (typeof method !== "function") throw new TypeError(`The group has no method "${message.method}"`);
      const value: unknown = await (method as (arg: unknown) => Promise<unknown>).call(group, message.arg);
      reply({ id: message.id, ok: true, value });
      if (message.method === "shutdown") process.disconnect();
    } catch (error) {
      reply({
        id: message.id,
        ok: false,
        error: error instanceof Error ? (error.stack ?? error.message) : String(error),
      });
    }
  })();
});

process.on("disconnect", () => {
  void group?.shutdown();
  // Sockets are destroyed; let pending close events run, then leave.
  setTimeout(() => process.exit(0), 200).unref();
});
