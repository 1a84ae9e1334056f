/**
 * Failover scenarios against servers this bench does not start (another Starling deployment,
 * ejabberd, Prosody): node i is the i-th `--target` address, and faults are the operator's own
 * shell commands with `{i}` replaced by the node index (`--kill-cmd`, `--start-cmd`,
 * `--drain-cmd`). A node counts as back once its address accepts TCP connections again.
 */
import net from "node:net";
import type { Address } from "../lib/sim-user.ts";
import {
  type ActionResult,
  type ClusterDriver,
  type FaultAction,
  type NodeSummary,
  since,
} from "./cluster-driver.ts";
import { runCommand } from "./starling-cluster.ts";

/** Options for {@link ExternalTarget}. */
export interface ExternalTargetOptions {
  /** The server's process ids (index = address), when known, for CPU and RSS figures. */
  pids?: number[];
  addresses: Address[];
  /** Nodes running at the start (the first ones); the rest are started by --start-cmd. */
  initialNodes: number;
  killCmd: string | undefined;
  startCmd: string | undefined;
  drainCmd: string | undefined;
  /** 'CMD {fault} {i}': causes or heals a fault (see FaultAction). */
  faultCmd: string | undefined;
  cwd: string;
}

const COMMAND_TIMEOUT_MS = 120_000;
const LISTEN_TIMEOUT_MS = 60_000;

function accepts(address: Address): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: address.host, port: address.port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** See the file comment. */
export class ExternalTarget implements ClusterDriver {
  readonly addresses: Address[];
  readonly names: string[];
  #options: ExternalTargetOptions;
  #running: boolean[];

  constructor(options: ExternalTargetOptions) {
    this.#options = options;
    this.addresses = options.addresses;
    this.names = options.addresses.map((a) => `${a.host}:${a.port}`);
    this.#running = options.addresses.map((_, i) => i < options.initialNodes);
  }

  async start(): Promise<void> {
    // The users must already exist on the target (--users/--password describe them).
  }

  async #run(
    which: "kill" | "start" | "drain" | "fault",
    template: string | undefined,
    i: number,
    fault = "",
  ): Promise<ActionResult> {
    if (template === undefined) return { ok: false, detail: `no --${which}-cmd given`, steps: [] };
    const started = performance.now();
    const command = template.replaceAll("{i}", String(i)).replaceAll("{fault}", fault);
    const result = await runCommand(command, [], this.#options.cwd, COMMAND_TIMEOUT_MS, true);
    const steps = [{ step: `${which}-cmd`, ms: since(started) }];
    if (result.code !== 0)
      return { ok: false, detail: `"${command}" exited ${result.code}: ${result.output}`, steps };
    return { ok: true, steps };
  }

  fault(action: FaultAction, i: number): Promise<ActionResult> {
    return this.#run("fault", this.#options.faultCmd, i, action);
  }

  async kill(i: number): Promise<ActionResult> {
    const result = await this.#run("kill", this.#options.killCmd, i);
    if (result.ok) this.#running[i] = false;
    return result;
  }

  async drain(i: number): Promise<ActionResult> {
    const result = await this.#run("drain", this.#options.drainCmd, i);
    if (result.ok) this.#running[i] = false;
    return result;
  }

  async join(i: number): Promise<ActionResult> {
    const result = await this.#run("start", this.#options.startCmd, i);
    if (!result.ok) return result;
    const started = performance.now();
    const deadline = Date.now() + LISTEN_TIMEOUT_MS;
    let up = false;
    while (!up && Date.now() < deadline) {
      up = await accepts(this.addresses[i]!);
      if (!up) await new Promise((resolve) => setTimeout(resolve, 200));
    }
    result.steps.push({ step: "start to accepting connections", ms: since(started) });
    if (!up) return { ...result, ok: false, detail: "the address did not accept connections in time" };
    this.#running[i] = true;
    return result;
  }

  async restart(i: number): Promise<ActionResult> {
    const down = this.#options.drainCmd !== undefined ? await this.drain(i) : await this.kill(i);
    if (!down.ok) return down;
    const up = await this.join(i);
    return { ...up, steps: [...down.steps, ...up.steps] };
  }

  isRunning(i: number): boolean {
    return this.#running[i] === true;
  }

  pids(): (number | undefined)[] {
    return this.addresses.map((_, i) => this.#options.pids?.[i]);
  }

  async clusterView(): Promise<unknown> {
    return undefined;
  }

  nodeSummaries(): NodeSummary[] {
    return this.addresses.map((address, i) => ({
      node: i,
      name: this.names[i]!,
      address,
      starts: 0,
      warnings: null,
      replicationFactor: null,
    }));
  }

  async stop(): Promise<void> {}

  killNow(): void {}
}
