/**
 * The orchestrator's end of a load-generator child process (loadgen-child.ts): forks it, asks
 * it to host one group of clients, and carries method calls and their results over Node's IPC
 * channel. The group kinds share this plumbing; remote-group.ts and remote-failover-group.ts
 * give it their typed faces.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { ChildCall, ChildReply, GroupKind } from "./loadgen-child.ts";

const CHILD_ENTRY = fileURLToPath(new URL("./loadgen-child.ts", import.meta.url));

/** A forked load process hosting one group. */
export class ChildRpc {
  #child: ChildProcess;
  #nextId = 1;
  #pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  #exited = false;

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.on("message", (message: ChildReply) => {
      const pending = this.#pending.get(message.id);
      if (pending === undefined) return;
      this.#pending.delete(message.id);
      if (message.ok) pending.resolve(message.value);
      else pending.reject(new Error(`Load child failed: ${message.error}`));
    });
    child.on("exit", (code, signal) => {
      this.#exited = true;
      for (const { reject } of this.#pending.values()) {
        reject(new Error(`Load child exited (code ${code}, signal ${signal})`));
      }
      this.#pending.clear();
    });
  }

  /** Forks a child with the same Node.js binary and creates its group of `kind` from `config`. */
  static async start(kind: GroupKind, config: unknown): Promise<ChildRpc> {
    const child = fork(CHILD_ENTRY, [], {
      execPath: process.execPath,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const rpc = new ChildRpc(child);
    try {
      await rpc.call("init", { kind, config });
    } catch (error) {
      rpc.kill();
      throw error;
    }
    return rpc;
  }

  /** The child's pid. */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** Calls `method` of the child's group with one argument. */
  call<T>(method: string, arg?: unknown): Promise<T> {
    if (this.#exited) return Promise.reject(new Error("Load child has exited"));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.#child.send({ id, method, arg } satisfies ChildCall);
    });
  }

  /** Calls the group's `shutdown`, then waits for the child to exit (SIGKILL after 3 s). */
  async shutdown(): Promise<void> {
    if (this.#exited) return;
    const exited = new Promise<void>((resolve) => this.#child.once("exit", () => resolve()));
    await this.call("shutdown").catch(() => undefined);
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  }

  /** Kills the child at once (exit paths that cannot wait). */
  kill(): void {
    if (!this.#exited) this.#child.kill("SIGKILL");
  }
}
