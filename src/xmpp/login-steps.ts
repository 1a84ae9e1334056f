/**
 * How many login steps (a SASL element, a bind, a resumption) one worker works on at once;
 * the others wait their turn in arrival order, their streams unread meanwhile.
 *
 * Why: a burst of logins (an attacker's 200 accounts, every client of a restarted node) made
 * every event-loop turn long: each step is a little synchronous work between round trips (the
 * throttle's actors, the store, HMACs, the session's creation), and with 100 logins in progress
 * a turn ran the ready part of all of them. Ordinary users' messages, which need a few turns
 * to cross a worker, waited for each (bench/abuse.ts, "clients that stop reading", whose 200
 * logins held the canaries' p99 at 24–90 ms). Bounding the steps in progress bounds a turn's
 * share of login work; logins are bound by CPU, so a storm takes about as long as before.
 *
 * Only the server's own work is counted: a step holds a place from when the server starts on
 * it until it has answered, never while waiting for the client, so slow or idle connections
 * cannot take the places of others (nothing one client does can lock another out).
 */
export class LoginSteps {
  readonly #limit: number;
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.#limit = Math.max(1, limit);
  }

  /** Steps being worked on now. */
  get running(): number {
    return this.#running;
  }

  /** Steps waiting for a place. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Runs `step` now if a place is free, else once one is (`onWait` runs at once in that case,
   * `onStart` when the wait ends); the place is given back when its promise settles.
   */
  run(step: () => Promise<void>, onWait?: () => void, onStart?: () => void): Promise<void> {
    if (this.#running < this.#limit) return this.#start(step);
    onWait?.();
    return new Promise<void>((resolve, reject) => {
      this.#waiting.push(() => {
        onStart?.();
        this.#start(step).then(resolve, reject);
      });
    });
  }

  #start(step: () => Promise<void>): Promise<void> {
    this.#running++;
    let result: Promise<void>;
    try {
      result = step();
    } catch (error) {
      result = Promise.reject(error);
    }
    return result.finally(() => {
      this.#running--;
      this.#waiting.shift()?.();
    });
  }
}
