/**
 * A token bucket over one client connection's input, like ejabberd's c2s shaper and Prosody's
 * mod_limits: a client may send `burstBytes` at once, and `bytesPerSecond` after that. A client
 * that sends faster is not disconnected and loses nothing: its transport stops reading for as
 * long as the excess takes to drain, so TCP (or the WebSocket's socket) pushes back on it while
 * every other connection on the worker keeps its share of the event loop (issue 12: a flood of
 * four clients had held ordinary users' messages for seconds).
 */
export class InputShaper {
  readonly #bytesPerMs: number;
  readonly #burstBytes: number;
  readonly #clock: () => number;
  #tokens: number;
  #at: number;

  /** `clock` in milliseconds (a test passes its own). */
  constructor(
    bytesPerSecond: number,
    burstBytes: number,
    clock: () => number = performance.now.bind(performance),
  ) {
    this.#bytesPerMs = bytesPerSecond / 1000;
    this.#burstBytes = burstBytes;
    this.#clock = clock;
    this.#tokens = burstBytes;
    this.#at = clock();
  }

  /**
   * Counts `bytes` just read. Returns how long, in milliseconds, the reader should wait before
   * reading more: 0 while the client stays within its budget.
   */
  take(bytes: number): number {
    const now = this.#clock();
    this.#tokens = Math.min(this.#burstBytes, this.#tokens + (now - this.#at) * this.#bytesPerMs);
    this.#at = now;
    this.#tokens -= bytes;
    return this.#tokens >= 0 ? 0 : Math.ceil(-this.#tokens / this.#bytesPerMs);
  }
}

/** What a transport reads from: a socket, or a WebSocket. */
export interface PausableInput {
  pause(): void;
  resume(): void;
}

/** Why a connection is not being read (each holds it independently). */
export type InputHold = "stream" | "shaper" | "parse" | "login";

/**
 * A connection's reading, stopped for independent reasons: the stream's own flow control
 * ({@link pause}, e.g. too many IQs in flight), the shaper's wait after a client sent more than
 * its budget, and a transport still parsing the rest of a large read ({@link hold}). It reads
 * again only when nothing holds it.
 */
export class PacedInput {
  readonly #input: PausableInput;
  readonly #shaper: InputShaper;
  readonly #holds = new Set<InputHold>();
  #timer: NodeJS.Timeout | undefined;
  /** The stream is over (see {@link finish}): only the input budget holds reading any more. */
  #finished = false;

  constructor(input: PausableInput, shaper: InputShaper) {
    this.#input = input;
    this.#shaper = shaper;
  }

  /**
   * `bytes` were read: past the budget, reading stops for as long as the excess takes. Input
   * read before the pause took hold (the rest of a WebSocket read: ws emits every message of a
   * chunk already received) adds to the debt, and the wait is taken again when it ends.
   */
  received(bytes: number): void {
    const waitMs = this.#shaper.take(bytes);
    if (waitMs === 0 || this.#timer !== undefined) return;
    this.hold("shaper");
    this.#wait(waitMs);
  }

  #wait(ms: number): void {
    this.#timer = setTimeout(() => {
      const more = this.#shaper.take(0);
      if (more > 0) return this.#wait(more);
      this.#timer = undefined;
      this.release("shaper");
    }, ms);
  }

  /** Whether anything holds reading now. */
  get held(): boolean {
    return this.#holds.size > 0;
  }

  /** Stops reading for `reason` until {@link release} of the same reason. */
  hold(reason: InputHold): void {
    if (this.#finished && reason !== "shaper") return;
    if (this.#holds.size === 0) this.#input.pause();
    this.#holds.add(reason);
  }

  release(reason: InputHold): void {
    if (this.#holds.delete(reason) && this.#holds.size === 0) this.#input.resume();
  }

  /** The stream's flow control. */
  pause(): void {
    this.hold("stream");
  }

  resume(): void {
    this.release("stream");
  }

  /**
   * The stream is over but the connection is still closing: nothing but the input budget holds
   * reading from now on, since the client's part of the closing handshake (a WebSocket close
   * frame) waits behind whatever is unread. The transport parses nothing more; what it reads is
   * dropped, and still counted against the budget.
   */
  finish(): void {
    this.#finished = true;
    for (const reason of this.#holds) if (reason !== "shaper") this.release(reason);
  }

  /** The connection is gone: no timer outlives it. */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
