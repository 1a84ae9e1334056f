/**
 * The orchestrator's handle on a load-generator child process: the same LoadGroup interface
 * as an in-process ClientGroup, carried over Node's IPC channel.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type {
  Counters,
  GroupConfig,
  LoadGroup,
  LoginReport,
  LoginRequest,
  PhaseStats,
  RegisterReport,
  TrafficReport,
  TrafficRequest,
} from "./client-group.ts";
import type { ChildCall, ChildReply } from "./loadgen-child.ts";

const CHILD_ENTRY = fileURLToPath(new URL("./loadgen-child.ts", import.meta.url));

/** A ClientGroup running in a forked child process. */
export class RemoteGroup implements LoadGroup {
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

  /** Forks a child with the same Node.js binary and gives it its share of users. */
  static async start(config: GroupConfig): Promise<RemoteGroup> {
    const child = fork(CHILD_ENTRY, [], {
      execPath: process.execPath,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const group = new RemoteGroup(child);
    await group.#call("init", config);
    return group;
  }

  /** The child's pid, for killing it if the orchestrator must exit abruptly. */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  #call<T>(method: ChildCall["method"], arg?: unknown): Promise<T> {
    if (this.#exited) return Promise.reject(new Error("Load child has exited"));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.#child.send({ id, method, arg } satisfies ChildCall);
    });
  }

  register(request: LoginRequest): Promise<RegisterReport> {
    return this.#call("register", request);
  }
  login(request: LoginRequest): Promise<LoginReport> {
    return this.#call("login", request);
  }
  closeAll(): Promise<number> {
    return this.#call("closeAll");
  }
  traffic(request: TrafficRequest): Promise<TrafficReport> {
    return this.#call("traffic", request);
  }
  counters(phase: number): Promise<Counters> {
    return this.#call("counters", phase);
  }
  phaseStats(phase: number): Promise<PhaseStats> {
    return this.#call("phaseStats", phase);
  }
  cpuSeconds(): Promise<number> {
    return this.#call("cpuSeconds");
  }
  async shutdown(): Promise<void> {
    if (this.#exited) return;
    const exited = new Promise<void>((resolve) => this.#child.once("exit", () => resolve()));
    await this.#call("shutdown").catch(() => undefined);
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(timer);
  }

  /** Kills the child at once (exit paths that cannot wait). */
  kill(): void {
    if (!this.#exited) this.#child.kill("SIGKILL");
  }
}
