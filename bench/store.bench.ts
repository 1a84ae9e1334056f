/**
 * Store micro benchmark: ops/s of getAccount, putRosterItem and a pushOffline+takeOffline pair
 * on a LevelStore in a temporary directory, called directly and from a worker thread through
 * the remote store (one comlink round trip per call). Calls are sequential, one in flight, so
 * the figures are 1 / latency rather than peak throughput.
 *
 * Run: `npx node bench/store.bench.ts`. Prints one JSON line on stdout.
 * Env: STORE_BENCH_MS, time per case in ms (default 500); STORE_BENCH_MAX_OPS, a cap on the
 * calls per case (default 200000). Every case stops at whichever comes first.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  isMainThread,
  MessageChannel,
  type MessagePort,
  parentPort,
  Worker,
  workerData,
} from "node:worker_threads";
import { LevelStore } from "../src/storage/level-store.ts";
import { connectStore, exposeStore } from "../src/storage/remote-store.ts";
import type { Account, Store } from "../src/storage/store.ts";
import type { BareJid } from "../src/xmpp/jid.ts";

const CASE_MS = positiveInt(process.env.STORE_BENCH_MS, 500);
const MAX_OPS = positiveInt(process.env.STORE_BENCH_MAX_OPS, 200_000);
const ACCOUNTS = 1000;
const CONTACTS = 100;

type Results = Record<"getAccount" | "putRosterItem" | "pushOffline+takeOffline", number>;

function positiveInt(raw: string | undefined, fallback: number): number {
  const value = raw === undefined ? Number.NaN : Number(raw);
  return Number.isInteger(value) && value > 0 ? value : fallback;
}

function account(jid: BareJid): Account {
  const credential = {
    salt: "c2FsdHNhbHRzYWx0",
    iterations: 4096,
    storedKey: "a2V5a2V5a2V5",
    serverKey: "c2s=",
  };
  return { jid, scramSha1: credential, scramSha256: credential, createdAt: Date.now() };
}

/** Calls `op` one at a time until CASE_MS have passed or MAX_OPS calls were made; returns ops/s. */
async function measure(op: (i: number) => Promise<unknown>): Promise<number> {
  // A short warm-up, so the JIT and LevelDB's caches are in their steady state.
  const warmUntil = performance.now() + CASE_MS / 10;
  for (let i = 0; i < MAX_OPS && performance.now() < warmUntil; i++) await op(i);
  const start = performance.now();
  const deadline = start + CASE_MS;
  let ops = 0;
  while (ops < MAX_OPS && performance.now() < deadline) await op(ops++);
  return Math.round((ops * 1000) / (performance.now() - start));
}

async function runCases(store: Store, prefix: string): Promise<Results> {
  const users = Array.from({ length: ACCOUNTS }, (_, i) => `${prefix}-user${i}@bench.example` as BareJid);
  const contacts = Array.from({ length: CONTACTS }, (_, i) => `contact${i}@bench.example` as BareJid);
  const owner = users[0] as BareJid;
  return {
    getAccount: await measure((i) => store.getAccount(users[i % ACCOUNTS] as BareJid)),
    putRosterItem: await measure((i) =>
      store.putRosterItem(owner, {
        jid: contacts[i % CONTACTS] as BareJid,
        name: `Contact ${i % CONTACTS}`,
        subscription: "both",
        groups: ["Bench"],
      }),
    ),
    "pushOffline+takeOffline": await measure(async (i) => {
      const stanza = `<message xmlns='jabber:client' to='${owner}' id='m${i}'><body>hello ${i}</body></message>`;
      await store.pushOffline(owner, { stanza, storedAt: Date.now() }, 1000);
      await store.takeOffline(owner);
    }),
  };
}

async function populate(store: Store, prefix: string): Promise<void> {
  for (let i = 0; i < ACCOUNTS; i++)
    await store.createAccount(account(`${prefix}-user${i}@bench.example` as BareJid));
}

if (isMainThread) {
  const dir = await mkdtemp(join(tmpdir(), "starling-store-bench-"));
  const store = new LevelStore(join(dir, "store"));
  try {
    await store.open();
    await populate(store, "direct");
    await populate(store, "remote");
    const direct = await runCases(store, "direct");

    const { port1, port2 } = new MessageChannel();
    exposeStore(store, port1);
    const worker = new Worker(new URL(import.meta.url), {
      workerData: { port: port2 },
      transferList: [port2],
    });
    const remote = await new Promise<Results>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
      worker.once("exit", (status) => reject(new Error(`bench worker exited with ${status}`)));
    });
    await worker.terminate();
    port1.close();

    // biome-ignore lint/suspicious/noConsole: a bench script's output is its one JSON line
    console.log(
      JSON.stringify({
        bench: "store",
        node: process.version,
        caseMs: CASE_MS,
        maxOps: MAX_OPS,
        unit: "ops/s, sequential calls",
        direct,
        remote,
      }),
    );
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
} else {
  const store = connectStore((workerData as { port: MessagePort }).port);
  parentPort?.postMessage(await runCases(store, "remote"));
  await store.close();
}
