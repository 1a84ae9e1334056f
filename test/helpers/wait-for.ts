/**
 * Waiting without sleeping: every wait here ends on an event, with a deadline that turns a hang
 * into a failure that says what was awaited.
 */

import type { ChildProcess } from "node:child_process";
import type { EventEmitter } from "node:events";
import { once } from "node:events";
import { createInterface } from "node:readline";

/** Default deadline for one awaited protocol step. */
export const DEFAULT_TIMEOUT_MS = 5_000;

/** Thrown when a wait reaches its deadline. */
export class WaitTimeoutError extends Error {
  readonly code = "TEST_WAIT_TIMEOUT";
  constructor(what: string, timeoutMs: number) {
    super(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    this.name = "WaitTimeoutError";
  }
}

/**
 * Resolves with `promise`, or rejects with a {@link WaitTimeoutError} naming `what` after
 * `timeoutMs`. The timer is cleared either way, so it never keeps the test process alive.
 */
export async function withTimeout<T>(
  promise: Promise<T>,
  what: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitTimeoutError(what, timeoutMs)), timeoutMs);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for `event` on `emitter` (its first argument), failing after `timeoutMs`. */
export async function waitForEvent<T = unknown>(
  emitter: EventEmitter,
  event: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<T> {
  const [value] = await once(emitter, event, { signal: AbortSignal.timeout(timeoutMs) }).catch(
    (error: unknown) => {
      if (error instanceof Error && error.name === "AbortError")
        throw new WaitTimeoutError(`"${event}"`, timeoutMs);
      throw error;
    },
  );
  return value as T;
}

/**
 * Waits until `emitter` emits `event` with arguments that satisfy `predicate`, failing after
 * `timeoutMs`. The listener is removed on every outcome.
 */
export function waitForMatchingEvent<A extends unknown[]>(
  emitter: EventEmitter,
  event: string,
  predicate: (...args: A) => boolean,
  what: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<A> {
  let listener: ((...args: unknown[]) => void) | undefined;
  const matched = new Promise<A>((resolve) => {
    listener = (...args: unknown[]) => {
      if (predicate(...(args as A))) resolve(args as A);
    };
    emitter.on(event, listener);
  });
  return withTimeout(matched, what, timeoutMs).finally(() => {
    if (listener) emitter.off(event, listener);
  });
}

/**
 * Polls `check` until it returns a value other than `undefined`/`false`, for state that emits no
 * event (a file appearing on disk). Prefer an event; this is the last resort, and it is bounded.
 */
export async function waitUntil<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = DEFAULT_TIMEOUT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let delayMs = 5; ; delayMs = Math.min(delayMs * 2, 100)) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() >= deadline) throw new WaitTimeoutError(what, timeoutMs);
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }
}

/**
 * Collects the stderr lines of a server started as `child` until one includes `marker` (its
 * "ready" line); resolves with every line so far, which keeps growing. Kills the child and
 * rejects with them when it exits first or `timeoutMs` passes: `what` names it in the message.
 */
export async function waitForReadyLine(
  child: ChildProcess,
  marker: string,
  what: string,
  timeoutMs: number,
): Promise<string[]> {
  const output: string[] = [];
  const exited = once(child, "exit");
  const ready = new Promise<void>((resolve) => {
    createInterface({ input: child.stderr! }).on("line", (line) => {
      output.push(line);
      if (line.includes(marker)) resolve();
    });
  });
  const timeout = AbortSignal.timeout(timeoutMs);
  const outcome = await Promise.race([
    ready.then(() => "ready" as const),
    exited.then(() => "exited" as const),
    once(timeout, "abort").then(() => "timeout" as const),
  ]);
  if (outcome !== "ready") {
    child.kill("SIGKILL");
    throw new Error(`${what} did not start (${outcome}):\n${output.join("\n")}`);
  }
  return output;
}
