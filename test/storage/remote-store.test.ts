import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it, type TestContext } from "node:test";
import { MessageChannel, Worker } from "node:worker_threads";
import { nodeEndpoint, type Remote, wrap } from "../../src/comlink-setup.ts";
import { StanzaError, XmppServerError } from "../../src/errors.ts";
import { LevelStore } from "../../src/storage/level-store.ts";
import { connectStore, exposeStore } from "../../src/storage/remote-store.ts";
import type { Account } from "../../src/storage/store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import { runStoreSuite } from "../conformance/store-suite.ts";
import type { StoreProbe } from "../fixtures/store-worker.ts";

const WORKER_URL = new URL("../fixtures/store-worker.ts", import.meta.url);
const TIMEOUT_MS = 20_000;

const root = await mkdtemp(join(tmpdir(), "starling-remote-store-"));
after(() => rm(root, { recursive: true, force: true }));

let dirs = 0;
const freshDir = () => join(root, `db-${dirs++}`);

// The whole conformance suite, every call crossing a thread: the LevelStore lives in a worker
// (role "owner") and this thread drives it through connectStore.
runStoreSuite("RemoteStore over a worker thread", async () => {
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(WORKER_URL, {
    workerData: { role: "owner", port: port2, location: freshDir() },
    transferList: [port2],
  });
  const [ready] = await once(worker, "message", { signal: AbortSignal.timeout(TIMEOUT_MS) });
  assert.equal(ready, "ready");
  const store = connectStore(port1);
  return {
    store,
    async cleanup() {
      await store.close();
      worker.postMessage("close");
      const [closed] = await once(worker, "message", { signal: AbortSignal.timeout(TIMEOUT_MS) });
      assert.equal(closed, "closed");
      port1.close();
      await worker.terminate();
    },
  };
});

const alice = "alice@example.com" as BareJid;

function account(jid: BareJid): Account {
  const credential = { salt: "c2FsdA==", iterations: 4096, storedKey: "a2V5", serverKey: "c2s=" };
  return { jid, scramSha1: credential, scramSha256: credential, createdAt: 1 };
}

/**
 * The production direction: `store` stays in this thread (as in the main thread), a worker in
 * role "client" uses it through connectStore, and the test drives that worker through its probe.
 */
async function startClientWorker(t: TestContext, store: LevelStore): Promise<Remote<StoreProbe>> {
  const { port1, port2 } = new MessageChannel();
  exposeStore(store, port1);
  const worker = new Worker(WORKER_URL, {
    workerData: { role: "client", port: port2 },
    transferList: [port2],
  });
  t.after(async () => {
    port1.close();
    await worker.terminate();
  });
  return wrap<StoreProbe>(nodeEndpoint(worker));
}

async function openStore(t: TestContext, store = new LevelStore(freshDir())): Promise<LevelStore> {
  t.after(() => store.close());
  await store.open();
  return store;
}

describe("RemoteStore from a worker to the main thread", () => {
  it("RemoteStore calls from a worker read and write the main thread's store", async (t) => {
    const store = await openStore(t);
    const probe = await startClientWorker(t, store);
    assert.deepEqual(await probe.call("createAccount", [account(alice)]), { kind: "ok", value: true });
    assert.deepEqual(await store.getAccount(alice), account(alice));
    assert.deepEqual(await probe.call("createAccount", [account(alice)]), { kind: "ok", value: false });
    await store.pushOffline(alice, { stanza: "<message/>", storedAt: 7 }, 10);
    assert.deepEqual(await probe.call("takeOffline", [alice]), {
      kind: "ok",
      value: [{ stanza: "<message/>", storedAt: 7 }],
    });
    assert.deepEqual(await probe.call("getVCard", [alice]), { kind: "ok", value: undefined });
    // An omitted optional argument stays omitted: removeBlocked() clears the whole list.
    await store.addBlocked(alice, ["a@example.com", "b@example.com"]);
    assert.deepEqual(await probe.call("removeBlocked", [alice]), { kind: "ok", value: [] });
  });

  it("RemoteStore keeps an error's code and class across the thread boundary", async (t) => {
    /** A store that reports a duplicate as an error, to send a coded error other than XSRV_STORE. */
    class StrictStore extends LevelStore {
      override async createAccount(a: Account): Promise<boolean> {
        if (!(await super.createAccount(a))) {
          throw new XmppServerError("XSRV_USER_EXISTS", `Account "${a.jid}" already exists`);
        }
        return true;
      }
      override async getVCard(): Promise<string | undefined> {
        throw new StanzaError("item-not-found", "No vCard");
      }
    }
    const store = await openStore(t, new StrictStore(freshDir()));
    const probe = await startClientWorker(t, store);

    assert.deepEqual(await probe.call("createAccount", [account(alice)]), { kind: "ok", value: true });
    const exists = await probe.call("createAccount", [account(alice)]);
    assert.equal(exists.kind, "error");
    assert.equal(exists.kind === "error" && exists.code, "XSRV_USER_EXISTS");
    assert.equal(exists.kind === "error" && exists.isXmppServerError, true);
    assert.equal(exists.kind === "error" && exists.message, 'Account "alice@example.com" already exists');

    const stanza = await probe.call("getVCard", [alice]);
    assert.equal(stanza.kind === "error" && stanza.code, "XSRV_STANZA");
    assert.equal(stanza.kind === "error" && stanza.condition, "item-not-found");
    assert.equal(stanza.kind === "error" && stanza.name, "StanzaError");

    // A programmer error is not part of the contract; it arrives as XSRV_WORKER with its message.
    const typeError = await probe.call("getAccount", ["bad\u0000jid"]);
    assert.equal(typeError.kind === "error" && typeError.code, "XSRV_WORKER");
    assert.match(typeError.kind === "error" ? typeError.message : "", /Invalid bare JID/);

    await store.close();
    const closed = await probe.call("getAccount", [alice]);
    assert.equal(closed.kind === "error" && closed.code, "XSRV_STORE");
  });

  it("RemoteStore close in a worker leaves the main thread's store open", async (t) => {
    const store = await openStore(t);
    const probe = await startClientWorker(t, store);
    assert.deepEqual(await probe.call("close", []), { kind: "ok", value: undefined });
    const refused = await probe.call("countAccounts", []);
    assert.equal(refused.kind === "error" && refused.code, "XSRV_STORE");
    assert.equal(await store.createAccount(account(alice)), true);
    assert.deepEqual(await probe.call("open", []), { kind: "ok", value: undefined });
    assert.deepEqual(await probe.call("countAccounts", []), { kind: "ok", value: 1 });
  });

  it("RemoteStore serialises concurrent writes from several workers", async (t) => {
    const store = await openStore(t);
    const probes = await Promise.all([startClientWorker(t, store), startClientWorker(t, store)]);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        probes[i % 2]!.call("pushOffline", [alice, { stanza: `<message id='${i}'/>`, storedAt: i }, 7]),
      ),
    );
    assert.equal(results.filter((r) => r.kind === "ok" && r.value === true).length, 7);
    assert.equal(await store.countOffline(alice), 7);
  });
});
