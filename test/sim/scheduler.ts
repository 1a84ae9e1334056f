/**
 * The deterministic core of the cluster simulation: a seeded PRNG, a virtual clock, one event
 * queue, and the transport between simulated nodes.
 *
 * How the transport is modelled, and why (it must be as honest as the product's, no more
 * hostile and no kinder):
 * - Between two shards, envelopes travel over a FIFO, reliable channel: a MessagePort inside a
 *   node, a peer link with sequence numbers and resend-after-reconnect between nodes
 *   (src/cluster/peer/). So within one live link there is no loss, no duplicate, no reordering;
 *   each envelope gets a random delay, but never overtakes the one before it on its link.
 * - Across links, anything goes: delays are drawn per envelope, so A→C may be slower than
 *   A→B→C, and duplicates arise only where the product itself re-sends (retained stanzas,
 *   re-initialised replicas), never in the transport.
 * - A link between two nodes may be cut and later healed. While cut it holds what was sent, and
 *   on healing replays it in order; or, when it overflowed, it drops its whole queue and the
 *   sender is told ("overflow"), as outbound-link.ts does.
 * - Loss happens when a node dies: everything in flight to or from it is gone.
 * - A paused node (SIGSTOP) keeps its state and its queues; nothing reaches it and it sends
 *   nothing until it is resumed, when it runs what waited, as a zombie would.
 *
 * Nothing here reads the real clock or Math.random: one seed gives one run.
 */

/** A small, fast, seeded PRNG (mulberry32). */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("Cannot pick from an empty list");
    return items[Math.floor(this.next() * items.length)]!;
  }
}

interface SimEvent {
  at: number;
  seq: number;
  /** The node whose process runs it: held while that node is paused, dropped once it is killed. */
  node: number | undefined;
  incarnation: number;
  label: string;
  run: () => void;
}

/** What a node looks like to the scheduler. */
export interface ProcessState {
  /** Bumped when the node is killed: its pending events and links die with that incarnation. */
  incarnation: number;
  alive: boolean;
  paused: boolean;
  /** When the node was last paused. */
  pausedAt?: number;
}

/** Seeded clock and event queue; `trace` records every step when asked to. */
export class Scheduler {
  readonly rng: Rng;
  now = 0;
  steps = 0;
  readonly trace: string[] | undefined;
  #seq = 0;
  /** A binary heap by (at, seq). */
  readonly #heap: SimEvent[] = [];
  readonly #processes: Map<number, ProcessState>;
  /** Events of paused nodes, run in order once resumed. */
  readonly #held = new Map<number, SimEvent[]>();

  constructor(seed: number, processes: Map<number, ProcessState>, trace: boolean) {
    this.rng = new Rng(seed);
    this.#processes = processes;
    this.trace = trace ? [] : undefined;
  }

  /** Runs `run` after `delayMs` on `node`'s process (undefined: the outside world). */
  at(delayMs: number, node: number | undefined, label: string, run: () => void): void {
    const incarnation = node === undefined ? 0 : (this.#processes.get(node)?.incarnation ?? 0);
    this.#push({ at: this.now + Math.max(0, delayMs), seq: this.#seq++, node, incarnation, label, run });
  }

  log(line: string): void {
    this.trace?.push(`${(this.now / 1000).toFixed(3).padStart(8)}s  ${line}`);
  }

  /** Runs the next event; false when none is left before `until`. */
  step(until: number): boolean {
    for (;;) {
      const event = this.#heap[0];
      if (event === undefined || event.at > until) return false;
      this.#pop();
      this.now = event.at;
      if (event.node !== undefined) {
        const proc = this.#processes.get(event.node);
        if (proc === undefined || !proc.alive || proc.incarnation !== event.incarnation) continue;
        if (proc.paused) {
          const held = this.#held.get(event.node) ?? [];
          this.#held.set(event.node, held);
          held.push(event);
          continue;
        }
      }
      this.steps++;
      if (this.trace !== undefined && event.label !== "") this.log(event.label);
      event.run();
      return true;
    }
  }

  /** A resumed node runs what waited while it was paused, in order, now. */
  release(node: number): void {
    const held = this.#held.get(node) ?? [];
    this.#held.delete(node);
    // Ahead of anything else due now: what reached the node while it was paused (a socket's
    // bytes, say) was queued before, and a FIFO link must not be overtaken by later input.
    for (const event of held) this.#push({ ...event, at: this.now, seq: this.#seq++ - HELD_FIRST });
  }

  #push(event: SimEvent): void {
    const heap = this.#heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && before(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && before(heap[r]!, heap[m]!)) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m]!, heap[i]!];
      i = m;
    }
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

interface Link {
  queue: { readyAt: number; sentAt: number; label: string; deliver: () => void }[];
  lastReadyAt: number;
  cut: boolean;
  pumping: boolean;
  /** Bumped by a cut, so a delivery scheduled before it does not run after the heal. */
  gen: number;
  /** The incarnations of both ends when the link was opened: a death closes it for good. */
  fromInc: number;
  toInc: number;
}

/**
 * FIFO links between node processes (a node's link to itself stands for its MessagePorts).
 * `send` gives each envelope a random delay but keeps the order of its link.
 */
export class Network {
  readonly #sched: Scheduler;
  readonly #processes: Map<number, ProcessState>;
  readonly #links = new Map<string, Link>();
  /** How long an envelope takes at most on a healthy link. */
  maxDelayMs = 40;
  /** Called when a cut link is healed with its queue dropped (overflow): the sender re-drives. */
  onOverflow: (from: number, to: number) => void = () => {};

  constructor(sched: Scheduler, processes: Map<number, ProcessState>) {
    this.#sched = sched;
    this.#processes = processes;
  }

  #link(from: number, to: number): Link | undefined {
    const a = this.#processes.get(from);
    const b = this.#processes.get(to);
    if (a === undefined || b === undefined || !a.alive || !b.alive) return undefined;
    const key = `${from}>${to}`;
    let link = this.#links.get(key);
    if (link === undefined || link.fromInc !== a.incarnation || link.toInc !== b.incarnation) {
      link = {
        queue: [],
        lastReadyAt: 0,
        cut: false,
        pumping: false,
        gen: 0,
        fromInc: a.incarnation,
        toInc: b.incarnation,
      };
      this.#links.set(key, link);
    }
    return link;
  }

  /** Sends from node `from` to node `to`; `deliver` runs on `to` (lost if either end dies first). */
  send(from: number, to: number, label: string, deliver: () => void): void {
    const link = this.#link(from, to);
    if (link === undefined) return;
    const delay = from === to ? this.#sched.rng.int(0, 2) : this.#sched.rng.int(1, this.maxDelayMs);
    const readyAt = Math.max(this.#sched.now + delay, link.lastReadyAt);
    link.lastReadyAt = readyAt;
    link.queue.push({ readyAt, sentAt: this.#sched.now, label, deliver });
    this.#pump(from, to, link);
  }

  #pump(from: number, to: number, link: Link): void {
    if (link.pumping || link.cut || link.queue.length === 0) return;
    link.pumping = true;
    const head = link.queue[0]!;
    const gen = link.gen;
    // Runs as the receiving process: held while it is paused, gone if it dies.
    this.#sched.at(head.readyAt - this.#sched.now, to, "", () => {
      if (gen !== link.gen) return;
      link.pumping = false;
      const sender = this.#processes.get(from);
      if (sender === undefined || sender.incarnation !== link.fromInc || !sender.alive) return;
      if (link.cut) return;
      // What a process wrote before it was stopped is the kernel's to deliver (sim seed 98258:
      // an init written 0.4 s before its sender's pause never reached the replica, which had
      // been paused too); what it had not written yet stays with it: what it sent in the last
      // few milliseconds may still wait in its own buffers (a turn's batch, a busy socket).
      if (sender.paused && head.sentAt > (sender.pausedAt ?? 0) - UNWRITTEN_MS) {
        link.pumping = true;
        this.#sched.at(50, from, "", () => {
          if (gen !== link.gen) return;
          link.pumping = false;
          this.#pump(from, to, link);
        });
        return;
      }
      const next = link.queue.shift();
      if (next === undefined) return;
      if (next.label !== "") this.#sched.log(next.label);
      next.deliver();
      this.#pump(from, to, link);
    });
  }

  /** Cuts both directions between two nodes; what is sent meanwhile waits. */
  cut(a: number, b: number): void {
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      const link = this.#link(x, y);
      if (link === undefined) continue;
      link.cut = true;
      link.gen++;
    }
  }

  /** Heals a cut: replays the queue in order, or drops it (overflow) and tells the sender. */
  heal(a: number, b: number, overflow: boolean): void {
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      const link = this.#link(x, y);
      if (link === undefined || !link.cut) continue;
      link.cut = false;
      link.pumping = false;
      if (overflow && link.queue.length > 0) {
        link.queue = [];
        link.lastReadyAt = this.#sched.now;
        this.onOverflow(x, y);
      }
      for (const entry of link.queue) entry.readyAt = Math.max(entry.readyAt, this.#sched.now);
      this.#pump(x, y, link);
    }
  }

  /** Whether the link is cut now. */
  isCut(a: number, b: number): boolean {
    return this.#links.get(`${a}>${b}`)?.cut ?? false;
  }
}

/** What a node sent this close to its pause is taken as still in its own buffers. */
const UNWRITTEN_MS = 5;

/** Subtracted from a released event's sequence number so that it sorts before events due at the same time. */
const HELD_FIRST = 2 ** 40;
