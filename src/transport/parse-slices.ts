/**
 * Input parsed per event-loop turn, for every transport: a 64 KB read of tiny elements took
 * 50–100 ms to parse in one go (bench/abuse.ts, a stanza of 100,000 children: canaries' p99
 * 490 ms). In slices, with the connection's reading held meanwhile, every other connection on
 * the worker gets its turn between them (issue 12: no single connection's input may hold a
 * worker's event loop for more than a few milliseconds). A WebSocket message and a BOSH body
 * may be a megabyte, so they are sliced like a TCP read.
 *
 * 2 KB of `<x/>` is about 500 elements, 1–3 ms of parsing. The slices that wait for a later turn,
 * every connection's, wait in one queue ({@link afterParseTurn}), and a turn parses about
 * {@link PARSE_TURN_BUDGET_MS} of them: with one slice per connection per turn instead, ten
 * attackers made every turn 10–15 ms long, and a message that needs a few turns to cross the
 * worker (parse, route, deliver) waited 60–120 ms (bench/abuse.ts, the web phase).
 */
export const PARSE_SLICE_SIZE = 2_048;

/** About how long one event-loop turn spends on slices that waited (at least one slice). */
export const PARSE_TURN_BUDGET_MS = 1;

const waitingSlices: (() => void)[] = [];

/**
 * A number that changes from one event-loop turn to the next (once asked for in a turn, it is
 * different in every later one): one immediate per turn for the whole thread, rather than one
 * per connection, tells a SlicedInput that its budget is whole again.
 */
let turnNumber = 0;
let turnTickScheduled = false;
function currentTurn(): number {
  if (!turnTickScheduled) {
    turnTickScheduled = true;
    setImmediate(() => {
      turnTickScheduled = false;
      turnNumber++;
    });
  }
  return turnNumber;
}
let turnScheduled = false;

/**
 * Runs `next` (a connection's next slice) in a later turn, after every slice queued before it:
 * connections with more to parse take turns, and each turn leaves the event loop after about
 * {@link PARSE_TURN_BUDGET_MS}.
 */
export function afterParseTurn(next: () => void): void {
  waitingSlices.push(next);
  if (!turnScheduled) {
    turnScheduled = true;
    setImmediate(runWaitingSlices);
  }
}

function runWaitingSlices(): void {
  turnScheduled = false;
  const until = performance.now() + PARSE_TURN_BUDGET_MS;
  // Slices queued by this turn's own slices (a connection's next one) wait for the next turn.
  let count = waitingSlices.length;
  try {
    do {
      const next = waitingSlices.shift()!;
      count--;
      next();
    } while (count > 0 && performance.now() < until);
  } finally {
    if (waitingSlices.length > 0 && !turnScheduled) {
      turnScheduled = true;
      setImmediate(runWaitingSlices);
    }
  }
}

/**
 * Writes `text` to `write` a slice ({@link PARSE_SLICE_SIZE} characters) at a time: the first
 * now, each next one in the waiting queue's turn ({@link afterParseTurn}), so it counts against
 * that turn's budget. Rejects with what a write threw. Saxes keeps a surrogate pair cut between
 * two slices whole.
 */
export function writeInSlices(text: string, write: (slice: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let at = 0;
    const next = (): void => {
      try {
        write(text.length <= PARSE_SLICE_SIZE ? text : text.slice(at, at + PARSE_SLICE_SIZE));
      } catch (error) {
        reject(error);
        return;
      }
      at += PARSE_SLICE_SIZE;
      if (at < text.length) afterParseTurn(next);
      else resolve();
    };
    if (text.length === 0) resolve();
    else next();
  });
}

/** What a {@link SlicedInput} tells its transport. */
export interface SlicedInputHooks {
  /** Parsing fell behind what was read: stop reading until {@link release}. */
  hold(): void;
  release(): void;
  /** A write (or a message's end) threw: the input stops; the transport fails the stream. */
  failed(error: unknown): void;
}

interface PendingText {
  text: string;
  at: number;
  write: (slice: string) => void;
  /** Runs once the last slice is written (may throw, like a write). */
  done: (() => void) | undefined;
}

/**
 * Texts parsed in order, at most {@link PARSE_SLICE_SIZE} characters per turn in all: what does
 * not fit waits for the next turn, with reading held. For a transport whose library hands over
 * whole messages (ws emits every message of a chunk it has read, paused or not).
 */
export class SlicedInput {
  readonly #hooks: SlicedInputHooks;
  #queue: PendingText[] = [];
  /** What turn {@link #budgetTurn} may still parse: ws emits every message of a read in one turn. */
  #budget = PARSE_SLICE_SIZE;
  #budgetTurn = -1;
  #waiting = false;
  /** Inside {@link #run}: a push from a write's own events only queues. */
  #running = false;
  #stopped = false;

  constructor(hooks: SlicedInputHooks) {
    this.#hooks = hooks;
  }

  /** Parses `text` through `write` after everything queued before it, then runs `done`. */
  push(text: string, write: (slice: string) => void, done?: () => void): void {
    if (this.#stopped) return;
    this.#queue.push({ text, at: 0, write, done });
    if (!this.#waiting && !this.#running) this.#run();
  }

  /** Drops what is queued and parses nothing more (the stream failed or closed). */
  stop(): void {
    this.#stopped = true;
    this.#queue = [];
    if (this.#waiting) {
      this.#waiting = false;
      this.#hooks.release();
    }
  }

  #run(): void {
    this.#running = true;
    try {
      this.#runSlices();
    } finally {
      this.#running = false;
    }
  }

  #runSlices(): void {
    const turn = currentTurn();
    if (turn !== this.#budgetTurn) {
      this.#budgetTurn = turn;
      this.#budget = PARSE_SLICE_SIZE;
    }
    while (this.#queue.length > 0 && this.#budget > 0) {
      const pending = this.#queue[0]!;
      const size = Math.min(this.#budget, pending.text.length - pending.at);
      try {
        const whole = pending.at === 0 && size === pending.text.length;
        this.#budget -= size;
        pending.write(whole ? pending.text : pending.text.slice(pending.at, pending.at + size));
        pending.at += size;
        if (pending.at === pending.text.length) {
          this.#queue.shift();
          pending.done?.();
        }
      } catch (error) {
        this.stop();
        this.#hooks.failed(error);
        return;
      }
      if (this.#stopped) return;
    }
    if (this.#queue.length === 0) {
      if (this.#waiting) {
        this.#waiting = false;
        this.#hooks.release();
      }
      return;
    }
    if (!this.#waiting) {
      this.#waiting = true;
      this.#hooks.hold();
    }
    // The queue's turn is a later one, whose budget is whole (see currentTurn).
    afterParseTurn(() => {
      if (this.#stopped) return;
      this.#budgetTurn = -1;
      this.#run();
    });
  }
}
