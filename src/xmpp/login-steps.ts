/**
 * How many login steps (a SASL element, a bind, a resumption) one worker starts per event-loop
 * turn; the others wait their turn in arrival order, their streams unread meanwhile.
 *
 * Why: a burst of logins (an attacker's 200 accounts, every client of a restarted node) made
 * every event-loop turn long: each step is a little synchronous work between round trips (the
 * throttle's actors, the store, HMACs, the session's creation), and with 100 logins starting at
 * once a turn ran the ready part of all of them. Ordinary users' messages, which need a few
 * turns to cross a worker, waited for each (bench/abuse.ts, "clients that stop reading", whose
 * 200 logins held the canaries' p99 at 24–90 ms). Spreading the starts over turns spreads the
 * work; logins are bound by CPU, so a storm takes about as long as before.
 *
 * Starts per turn, not steps in progress: a step may wait seconds on the network (a resumption
 * asking a dead node's shards, an HTTP authentication backend), and places held that long would
 * let a few streams (sixteen bogus `<resume/>`s) keep everyone else from logging in. A start is
 * nothing a client can hoard.
 */
export class LoginSteps {
  readonly #perTurn: number;
  #startedThisTurn = 0;
  #turnScheduled = false;
  readonly #waiting: (() => void)[] = [];

  constructor(perTurn: number) {
    this.#perTurn = Math.max(1, perTurn);
  }

  /** Steps waiting for a later turn. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Runs `step` now if this turn may start another, else in a later turn after those waiting
   * before it (`onWait` runs at once in that case, `onStart` when its turn comes).
   */
  run(step: () => Promise<void>, onWait?: () => void, onStart?: () => void): Promise<void> {
    if (this.#waiting.length === 0 && this.#startedThisTurn < this.#perTurn) {
      this.#started();
      return settled(step);
    }
    onWait?.();
    return new Promise<void>((resolve, reject) => {
      this.#waiting.push(() => {
        this.#started();
        try {
          onStart?.();
        } catch (error) {
          reject(error);
          return;
        }
        settled(step).then(resolve, reject);
      });
      this.#scheduleTurn();
    });
  }

  #started(): void {
    this.#startedThisTurn++;
    this.#scheduleTurn();
  }

  /** The next turn starts afresh, with the waiting steps first. */
  #scheduleTurn(): void {
    if (this.#turnScheduled) return;
    this.#turnScheduled = true;
    setImmediate(() => {
      this.#turnScheduled = false;
      this.#startedThisTurn = 0;
      while (this.#waiting.length > 0 && this.#startedThisTurn < this.#perTurn) this.#waiting.shift()!();
    });
  }
}

/** The step's promise; a step that throws before returning one rejects it instead. */
function settled(step: () => Promise<void>): Promise<void> {
  try {
    return step();
  } catch (error) {
    return Promise.reject(error);
  }
}
