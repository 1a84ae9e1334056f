/**
 * Entry point of a load-generator child process (`--loadgen-procs K`): hosts one ClientGroup
 * and serves the LoadGroup calls that remote-group.ts sends over the IPC channel. It exits when
 * the channel closes, so a crashed or killed orchestrator never leaves load clients behind.
 */
import { ClientGroup, type GroupConfig, type LoadGroup } from "./client-group.ts";

/** A call from the orchestrator. */
export interface ChildCall {
  id: number;
  method: keyof LoadGroup | "init";
  arg: unknown;
}

/** The child's answer to one {@link ChildCall}. */
export type ChildReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

let group: ClientGroup | undefined;

function reply(message: ChildReply): void {
  process.send?.(message);
}

process.on("message", (message: ChildCall) => {
  void (async () => {
    try {
      if (message.method === "init") {
        group = new ClientGroup(message.arg as GroupConfig);
        return reply({ id: message.id, ok: true, value: undefined });
      }
      if (group === undefined) throw new Error("Load child used before init");
      // biome-ignore lint/suspicious/noExplicitAny: dynamic dispatch of the LoadGroup method named by the parent.
      const value: unknown = await (group[message.method] as (arg: any) => Promise<unknown>).call(
        group,
        message.arg,
      );
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
