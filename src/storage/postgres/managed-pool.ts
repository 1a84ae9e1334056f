/**
 * A `pg.Pool` with the lifecycle both PostgreSQL users share (the store and the membership
 * store): open creates the pool and migrates the schema; every call is tracked so close() waits
 * for the calls in progress; a call after close, or before open, is a clear XSRV_STORE error;
 * pg's errors are wrapped with what was being done.
 */
import pg from "pg";
import { XmppServerError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { wrapStoreError } from "../store-error.ts";
import { migratePool } from "./migrations.ts";

/** Options for {@link ManagedPool}. */
export interface ManagedPoolOptions {
  /** Passed to every new `pg.Pool` (one per open: a pool is not reusable after end()). */
  config: pg.PoolConfig;
  /** Names the pool in errors and logs, e.g. `store at "db:5432/x"`. */
  name: string;
  location: string;
  log?: Logger | undefined;
}

export class ManagedPool {
  readonly #options: ManagedPoolOptions;
  #pool: pg.Pool | undefined;
  #opening: Promise<void> | undefined;
  #closingPromise: Promise<void> | undefined;
  #closing = false;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(options: ManagedPoolOptions) {
    this.#options = options;
  }

  /** Open and not closing: calls are accepted. */
  get isOpen(): boolean {
    return this.#pool !== undefined && !this.#closing;
  }

  /** Connects and migrates the schema (or reopens after {@link close}); idempotent. */
  async open(): Promise<void> {
    if (this.#closingPromise !== undefined) await this.#closingPromise.catch(() => {});
    if (this.#pool !== undefined) return;
    this.#opening ??= this.#open().finally(() => {
      this.#opening = undefined;
    });
    return this.#opening;
  }

  async #open(): Promise<void> {
    const { config, name, location, log } = this.#options;
    const pool = new pg.Pool(config);
    // An idle connection that dies (server restart, network) is dropped by the pool and
    // replaced on the next query; without a listener the error would crash the process.
    pool.on("error", (error) => {
      log?.warn({ err: error, location }, `idle connection of the ${name} failed`);
    });
    await migratePool(pool, log, `open the ${name}`);
    this.#pool = pool;
  }

  /** Waits for the calls in progress, then closes every connection. */
  async close(): Promise<void> {
    if (this.#opening !== undefined) await this.#opening.catch(() => {});
    this.#closingPromise ??= this.#close().finally(() => {
      this.#closingPromise = undefined;
    });
    return this.#closingPromise;
  }

  async #close(): Promise<void> {
    const pool = this.#pool;
    if (pool === undefined) return;
    this.#closing = true;
    try {
      await Promise.allSettled([...this.#inFlight]);
      await pool.end();
    } catch (error) {
      throw wrapStoreError(error, `close the ${this.#options.name}`);
    } finally {
      this.#pool = undefined;
      this.#closing = false;
    }
  }

  /** Runs one call: checks the pool is open, tracks it for close(), wraps pg's errors. */
  run<T>(what: string, fn: (pool: pg.Pool) => Promise<T>): Promise<T> {
    const pool = this.#pool;
    if (pool === undefined || this.#closing) {
      return Promise.reject(
        new XmppServerError("XSRV_STORE", `Cannot ${what}: the ${this.#options.name} is not open`),
      );
    }
    const promise = (async () => {
      try {
        return await fn(pool);
      } catch (error) {
        throw wrapStoreError(error, what);
      }
    })();
    this.#inFlight.add(promise);
    const forget = () => this.#inFlight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }
}
