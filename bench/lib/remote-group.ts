/**
 * The orchestrator's handle on a c2s-throughput load child: the same LoadGroup interface as an
 * in-process ClientGroup, carried over Node's IPC channel by child-rpc.ts.
 */
import { ChildRpc } from "./child-rpc.ts";
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

/** A ClientGroup running in a forked child process. */
export class RemoteGroup implements LoadGroup {
  #rpc: ChildRpc;

  private constructor(rpc: ChildRpc) {
    this.#rpc = rpc;
  }

  /** Forks a child with the same Node.js binary and gives it its share of users. */
  static async start(config: GroupConfig): Promise<RemoteGroup> {
    return new RemoteGroup(await ChildRpc.start("throughput", config));
  }

  /** The child's pid, for killing it if the orchestrator must exit abruptly. */
  get pid(): number | undefined {
    return this.#rpc.pid;
  }

  register(request: LoginRequest): Promise<RegisterReport> {
    return this.#rpc.call("register", request);
  }
  login(request: LoginRequest): Promise<LoginReport> {
    return this.#rpc.call("login", request);
  }
  closeAll(): Promise<number> {
    return this.#rpc.call("closeAll");
  }
  traffic(request: TrafficRequest): Promise<TrafficReport> {
    return this.#rpc.call("traffic", request);
  }
  counters(phase: number): Promise<Counters> {
    return this.#rpc.call("counters", phase);
  }
  phaseStats(phase: number): Promise<PhaseStats> {
    return this.#rpc.call("phaseStats", phase);
  }
  cpuSeconds(): Promise<number> {
    return this.#rpc.call("cpuSeconds");
  }
  shutdown(): Promise<void> {
    return this.#rpc.shutdown();
  }

  /** Kills the child at once (exit paths that cannot wait). */
  kill(): void {
    this.#rpc.kill();
  }
}
