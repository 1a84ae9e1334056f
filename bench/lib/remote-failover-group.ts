/**
 * The orchestrator's handle on a failover load child: a FailoverGroup in a forked process,
 * driven through the same {@link FailoverLoad} interface over child-rpc.ts.
 */
import { ChildRpc } from "./child-rpc.ts";
import type {
  ConnectReport,
  FailoverGroupConfig,
  FailoverLoad,
  FailoverTrafficRequest,
  GroupResult,
  LiveCounters,
} from "./failover-group.ts";

/** A FailoverGroup running in a forked child process. */
export class RemoteFailoverGroup implements FailoverLoad {
  #rpc: ChildRpc;

  private constructor(rpc: ChildRpc) {
    this.#rpc = rpc;
  }

  static async start(config: FailoverGroupConfig): Promise<RemoteFailoverGroup> {
    return new RemoteFailoverGroup(await ChildRpc.start("failover", config));
  }

  connect(request: { concurrency: number; deadlineMs: number }): Promise<ConnectReport> {
    return this.#rpc.call("connect", request);
  }
  setActive(active: boolean[]): Promise<void> {
    return this.#rpc.call("setActive", active);
  }
  setupRosters(request: { timeoutMs: number }): Promise<{ incomplete: number }> {
    return this.#rpc.call("setupRosters", request);
  }
  startTraffic(request: FailoverTrafficRequest): Promise<void> {
    return this.#rpc.call("startTraffic", request);
  }
  stopTraffic(): Promise<{ sent: number }> {
    return this.#rpc.call("stopTraffic");
  }
  requestAcks(): Promise<void> {
    return this.#rpc.call("requestAcks");
  }
  cutConnections(): Promise<{ cut: number }> {
    return this.#rpc.call("cutConnections");
  }
  live(): Promise<LiveCounters> {
    return this.#rpc.call("live");
  }
  collect(): Promise<GroupResult> {
    return this.#rpc.call("collect");
  }
  cpuSeconds(): Promise<number> {
    return this.#rpc.call("cpuSeconds");
  }
  closeAll(): Promise<void> {
    return this.#rpc.call("closeAll");
  }
  shutdown(): Promise<void> {
    return this.#rpc.shutdown();
  }

  /** Kills the child at once (exit paths that cannot wait). */
  kill(): void {
    this.#rpc.kill();
  }
}
