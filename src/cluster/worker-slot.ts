/**
 * One worker thread as its node's pool sees it: the thread, its comlink control channel, its
 * uplink, and whether it runs. Calls through {@link WorkerSlot.call} settle when the thread
 * exits: comlink's promise for a call to a thread that died never settles, and whoever awaited
 * one waited for ever (the node applies owner tables one after another, so one such wait stopped
 * them all; the status API hung while a worker waited out its restart).
 */
import type { MessagePort, Worker } from "node:worker_threads";
import type { Remote } from "../comlink-setup.ts";
import { XmppServerError } from "../errors.ts";
import type { WorkerControl } from "./worker-main.ts";

/** What a call resolves to when its worker exited before answering. */
export const EXITED: unique symbol = Symbol("worker exited");
export type Exited = typeof EXITED;

export class WorkerSlot {
  readonly worker: Worker;
  readonly control: Remote<WorkerControl>;
  /** The main thread's end of the worker's uplink (batches to and from other nodes). */
  readonly uplink: MessagePort;
  /** Listening and caught up: calls are answered, copies and notices may be handed to it. */
  ready = false;
  #exited = false;
  /** One per call in flight, removed when the call settles (no reaction piles up per call). */
  readonly #onExit = new Set<() => void>();

  constructor(worker: Worker, control: Remote<WorkerControl>, uplink: MessagePort) {
    this.worker = worker;
    this.control = control;
    this.uplink = uplink;
  }

  get exited(): boolean {
    return this.#exited;
  }

  /** The thread exited: every call still waiting on it resolves {@link EXITED}. */
  markExited(): void {
    this.ready = false;
    this.#exited = true;
    for (const settle of this.#onExit) settle();
    this.#onExit.clear();
  }

  /** `call` on the worker; {@link EXITED} if the worker exits first, or had. */
  call<T>(call: (control: Remote<WorkerControl>) => Promise<T>): Promise<T | Exited> {
    if (this.#exited) return Promise.resolve(EXITED);
    return new Promise((resolve, reject) => {
      const gone = () => resolve(EXITED);
      this.#onExit.add(gone);
      call(this.control).then(
        (value) => {
          this.#onExit.delete(gone);
          resolve(value);
        },
        (error: unknown) => {
          this.#onExit.delete(gone);
          reject(error);
        },
      );
    });
  }

  /** {@link call}, for an answer someone waits on: a worker that exits first is an error. */
  async ask<T>(call: (control: Remote<WorkerControl>) => Promise<T>): Promise<T> {
    const answer = await this.call(call);
    if (answer === EXITED) throw new XmppServerError("XSRV_WORKER", "the worker exited during the call");
    return answer;
  }
}
