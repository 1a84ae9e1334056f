import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Level } from "level";
import { Unpackr } from "msgpackr";
import { isStoreLocked, LevelStore } from "../../src/storage/level-store.ts";
import type { Account } from "../../src/storage/store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import { runStoreSuite } from "../conformance/store-suite.ts";

const root = await mkdtemp(join(tmpdir(), "starling-level-store-"));
after(() => rm(root, { recursive: true, force: true }));

let dirs = 0;
const freshDir = () => join(root, `db-${dirs++}`);

runStoreSuite(
  "LevelStore",
  async () => {
    const dir = freshDir();
    const store = new LevelStore(dir);
    await store.open();
    const reopen = async () => {
      const again = new LevelStore(dir);
      await again.open();
      return again;
    };
    return { store, cleanup: () => store.close(), reopen };
  },
  { durable: true },
);

const alice = "alice@example.com" as BareJid;
const bob = "bob@example.com" as BareJid;

function account(jid: BareJid): Account {
  const credential = { salt: "c2FsdA==", iterations: 4096, storedKey: "a2V5", serverKey: "c2s=" };
  return { jid, scramSha1: credential, scramSha256: credential, createdAt: 1 };
}

const levelStoreUrl = pathToFileURL(
  fileURLToPath(new URL("../../src/storage/level-store.ts", import.meta.url)),
).href;

/** Starts a separate process that opens a LevelStore on `dir` and holds it until its stdin ends. */
async function holdInAnotherProcess(dir: string) {
  const code = `
    import { LevelStore } from ${JSON.stringify(levelStoreUrl)};
    const store = new LevelStore(process.env.STORE_DIR);
    await store.open();
    process.stdout.write("ready\\n");
    process.stdin.on("data", () => {});
    process.stdin.on("end", async () => { await store.close(); process.exit(0); });
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", code], {
    env: { ...process.env, STORE_DIR: dir },
    stdio: ["pipe", "pipe", "inherit"],
  });
  const exited = once(child, "exit");
  const [chunk] = (await Promise.race([
    once(child.stdout, "data", { signal: AbortSignal.timeout(20_000) }),
    exited.then(([status]) => {
      throw new Error(`lock holder exited early with ${status}`);
    }),
  ])) as [Buffer];
  assert.equal(chunk.toString(), "ready\n");
  return {
    async release() {
      child.stdin.end();
      const [status] = await exited;
      assert.equal(status, 0);
    },
    kill() {
      if (child.exitCode === null) child.kill();
    },
  };
}

describe("LevelStore on disk", () => {
  it("LevelStore open fails with XSRV_STORE when another process holds the directory", async (t) => {
    const dir = freshDir();
    const holder = await holdInAnotherProcess(dir);
    t.after(() => holder.kill());

    const store = new LevelStore(dir);
    t.after(() => store.close());
    await assert.rejects(store.open(), (error: unknown) => {
      assert.equal((error as { code?: unknown }).code, "XSRV_STORE");
      assert.match((error as Error).message, /in use by another process/);
      assert.equal(isStoreLocked(error), true);
      return true;
    });

    // Once the other process lets go, the same instance opens.
    await holder.release();
    await store.open();
    assert.equal(await store.countAccounts(), 0);
  });

  it("LevelStore open fails with XSRV_STORE while another LevelStore in this process has it", async (t) => {
    const dir = freshDir();
    const first = new LevelStore(dir);
    t.after(() => first.close());
    await first.open();
    const second = new LevelStore(dir);
    await assert.rejects(second.open(), { code: "XSRV_STORE" });
  });

  it("LevelStore touches no file and rejects calls with XSRV_STORE before open", async () => {
    const dir = freshDir();
    const store = new LevelStore(dir);
    await assert.rejects(store.getAccount(alice), { code: "XSRV_STORE" });
    await assert.rejects(store.pushOffline(alice, { stanza: "<message/>", storedAt: 1 }, 10), {
      code: "XSRV_STORE",
    });
    assert.equal(existsSync(dir), false);
    await store.close();
  });

  it("LevelStore close waits for the operations in progress", async (t) => {
    const dir = freshDir();
    const store = new LevelStore(dir);
    t.after(() => store.close());
    await store.open();
    const pushes = Array.from({ length: 50 }, (_, i) =>
      store.pushOffline(alice, { stanza: `<message id='${i}'/>`, storedAt: i }, 100),
    );
    await store.close();
    assert.deepEqual(await Promise.all(pushes), Array(50).fill(true));
    await store.open();
    assert.equal(await store.countOffline(alice), 50);
  });

  it("LevelStore rejects a JID with a control character with TypeError", async (t) => {
    const store = new LevelStore(freshDir());
    t.after(() => store.close());
    await store.open();
    await assert.rejects(store.getAccount("a\u0000b@example.com" as BareJid), TypeError);
    await assert.rejects(store.createAccount(account("a\u0001b" as BareJid)), TypeError);
  });

  it("LevelStore values are plain msgpack maps that a fresh decoder reads (no records)", async (t) => {
    const dir = freshDir();
    const store = new LevelStore(dir);
    await store.open();
    // Two values of the same shape: with records on, the second would only reference the first.
    await store.createAccount(account(alice));
    await store.createAccount(account(bob));
    await store.close();

    const raw = new Level<string, Buffer>(dir, { valueEncoding: "buffer" });
    t.after(() => raw.close());
    const accounts = raw.sublevel<string, Buffer>("accounts", { valueEncoding: "buffer" });
    for (const jid of [alice, bob]) {
      const buffer = await accounts.get(jid);
      assert.ok(buffer !== undefined);
      // A plain msgpack map (fixmap, map16 or map32), readable by any msgpack implementation.
      const first = buffer[0] ?? 0;
      assert.ok((first >= 0x80 && first <= 0x8f) || first === 0xde || first === 0xdf, `type byte ${first}`);
      assert.deepEqual(new Unpackr({ useRecords: false }).unpack(buffer), account(jid));
    }
  });
});
