/**
 * MembershipStore against a real PostgreSQL: one embedded server for the file, one fresh
 * database per test. Several stores on one database stand for several nodes.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { after, describe, it, type TestContext } from "node:test";
import { assignPartitions } from "../../src/cluster/membership/assignment.ts";
import {
  type ClusterView,
  MembershipStore,
  type RingSpec,
} from "../../src/cluster/membership/membership-store.ts";
import { createLogger } from "../../src/log.ts";
import { startFilePostgres } from "../helpers/postgres.ts";
import { waitForMatchingEvent, waitUntil } from "../helpers/wait-for.ts";

const pgForFile = await startFilePostgres("starling-membership-");
const { server, admin } = pgForFile;
after(() => pgForFile.stop());

const log = createLogger({ level: "silent" });
const ring: RingSpec = { partitions: 64, hash: "sha1-64" };
const LEASE_MS = 10_000;
let databases = 0;

/** A fresh database and a function that opens stores ("nodes") on it, closed after the test. */
async function cluster(t: TestContext): Promise<{ url: string; node: () => Promise<MembershipStore> }> {
  const name = `membership_test_${databases++}`;
  await admin.query(`CREATE DATABASE ${name} TEMPLATE template0 STRATEGY FILE_COPY`);
  const url = `postgres://postgres:${server.password}@127.0.0.1:${server.port}/${name}`;
  const stores: MembershipStore[] = [];
  t.after(async () => {
    for (const store of stores) await store.close();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
  return {
    url,
    node: async () => {
      const store = new MembershipStore({ url, log });
      stores.push(store);
      await store.open();
      return store;
    },
  };
}

function member(node: string, incarnation = 1) {
  return { node, incarnation, peerAddr: `127.0.0.1:${7000 + incarnation}`, workers: 2 };
}

function find(view: ClusterView, node: string) {
  const found = view.members.find((m) => m.node === node);
  assert.ok(found, `${node} is in the view`);
  return found;
}

/** A lease of 1 ms, then waits for this clock to pass it: an expired lease without editing rows. */
async function registerExpired(store: MembershipStore, node: string, incarnation: number): Promise<void> {
  const view = await store.register(member(node, incarnation), ring, 1);
  const { leaseUntil } = find(view, node);
  await waitUntil(() => Date.now() > leaseUntil + 5, "the 1 ms lease to pass", 1_000);
}

describe("MembershipStore", () => {
  it("MembershipStore reads an empty cluster before any registration", async (t) => {
    const store = await (await cluster(t)).node();
    assert.deepEqual(await store.read(), {
      version: 0,
      epoch: 0,
      partitions: 0,
      hash: "",
      members: [],
      assignment: null,
    });
  });

  it("MembershipStore register sets the ring on first registration and numbers nodes 1, 2", async (t) => {
    const { node } = await cluster(t);
    const [a, b] = [await node(), await node()];
    const before = Date.now();
    const first = await a.register(member("n1", 100), ring, LEASE_MS);
    assert.equal(first.version, 1);
    assert.equal(first.partitions, 64);
    assert.equal(first.hash, "sha1-64");
    const n1 = find(first, "n1");
    assert.deepEqual(
      { ...n1, leaseUntil: 0 },
      {
        node: "n1",
        nodeNo: 1,
        incarnation: 100,
        peerAddr: "127.0.0.1:7100",
        workers: 2,
        status: "joining",
        leaseUntil: 0,
        suspicions: {},
        settledEpoch: 0,
        silencedBy: {},
      },
    );
    assert.ok(n1.leaseUntil >= before + LEASE_MS && n1.leaseUntil <= Date.now() + LEASE_MS);

    const second = await b.register(member("n0", 200), ring, LEASE_MS);
    assert.equal(second.version, 2);
    assert.deepEqual(
      second.members.map((m) => [m.node, m.nodeNo]),
      [
        ["n0", 2],
        ["n1", 1],
      ],
    );
    assert.deepEqual(await a.read(), second);
  });

  it("MembershipStore register refuses an incompatible ring, naming both values", async (t) => {
    const { node } = await cluster(t);
    const store = await node();
    await store.register(member("n1"), ring, LEASE_MS);
    for (const other of [
      { partitions: 128, hash: "sha1-64" },
      { partitions: 64, hash: "xxh64" },
    ]) {
      await assert.rejects(store.register(member("n2"), other, LEASE_MS), (error: Error) => {
        assert.equal((error as { code?: string }).code, "XSRV_CLUSTER_INCOMPATIBLE");
        assert.match(error.message, new RegExp(`${other.partitions} partitions hashed with "${other.hash}"`));
        assert.match(error.message, /64 partitions hashed with "sha1-64"/);
        return true;
      });
    }
    const view = await store.read();
    assert.equal(view.version, 1, "nothing changed");
    assert.deepEqual(
      view.members.map((m) => m.node),
      ["n1"],
    );
  });

  it("MembershipStore register refuses a name held under a valid lease, then allows it after expiry or down", async (t) => {
    const { node } = await cluster(t);
    const [a, b] = [await node(), await node()];
    await a.register(member("n1", 1), ring, LEASE_MS);
    await assert.rejects(b.register(member("n1", 2), ring, LEASE_MS), { code: "XSRV_CLUSTER_NAME_TAKEN" });

    // Down: the name is free again, and the node keeps its number.
    await a.register(member("other", 1), ring, LEASE_MS);
    await a.setStatus("n1", 1, "down");
    const replaced = await b.register(member("n1", 2), ring, LEASE_MS);
    assert.deepEqual(
      { ...find(replaced, "n1"), leaseUntil: 0 },
      {
        ...member("n1", 2),
        nodeNo: 1,
        status: "joining",
        leaseUntil: 0,
        suspicions: {},
        settledEpoch: 0,
        silencedBy: {},
      },
    );

    // Lease expired (not down): free as well.
    await registerExpired(a, "n3", 1);
    const taken = await b.register(member("n3", 2), ring, LEASE_MS);
    assert.equal(find(taken, "n3").incarnation, 2);
    // An older incarnation cannot come back once a newer one holds (or held) the name.
    await registerExpired(a, "n4", 5);
    await assert.rejects(b.register(member("n4", 4), ring, LEASE_MS), { code: "XSRV_CLUSTER_STALE" });
  });

  it("MembershipStore setStatus and renewLease refuse a down or replaced incarnation", async (t) => {
    const { node } = await cluster(t);
    const store = await node();
    await store.register(member("n1", 1), ring, LEASE_MS);
    const up = await store.setStatus("n1", 1, "up");
    assert.equal(find(up, "n1").status, "up");
    assert.equal(up.version, 2);
    // The same status again changes nothing.
    assert.equal((await store.setStatus("n1", 1, "up")).version, 2);
    await assert.rejects(store.setStatus("n1", 2, "leaving"), { code: "XSRV_CLUSTER_STALE" });
    await assert.rejects(store.setStatus("nobody", 1, "up"), { code: "XSRV_CLUSTER_STALE" });

    const renewed = await store.renewLease("n1", 1, 60_000);
    assert.equal(renewed.ok, true);
    assert.equal(renewed.view.version, 2, "a renewal does not bump the version");
    assert.ok(find(renewed.view, "n1").leaseUntil >= Date.now() + 50_000);
    assert.equal((await store.renewLease("n1", 7, LEASE_MS)).ok, false);

    await store.setStatus("n1", 1, "down");
    await assert.rejects(store.setStatus("n1", 1, "up"), { code: "XSRV_CLUSTER_STALE" });
    await assert.rejects(store.register(member("n1", 1), ring, LEASE_MS), { code: "XSRV_CLUSTER_STALE" });
    const refused = await store.renewLease("n1", 1, LEASE_MS);
    assert.equal(refused.ok, false);
    assert.equal(find(refused.view, "n1").status, "down");
    assert.equal(find(refused.view, "n1").leaseUntil, find(renewed.view, "n1").leaseUntil, "unchanged");
  });

  it("MembershipStore suspect marks a node down when the votes reach the threshold", async (t) => {
    const { node } = await cluster(t);
    const store = await node();
    for (const name of ["n1", "n2", "n3"]) await store.register(member(name), ring, LEASE_MS);
    const once = await store.suspect("n1", "n3", 1, 2);
    assert.equal(find(once, "n3").status, "joining", "one vote of two needed");
    assert.deepEqual(Object.keys(find(once, "n3").suspicions), ["n1"]);
    // The same reporter again is still one vote.
    assert.equal(find(await store.suspect("n1", "n3", 1, 2), "n3").status, "joining");
    // A stale incarnation is ignored.
    const stale = await store.suspect("n2", "n3", 99, 2);
    assert.equal(find(stale, "n3").status, "joining");
    assert.equal(stale.version, 5, "ignored: no version bump");

    const twice = await store.suspect("n2", "n3", 1, 2);
    assert.equal(find(twice, "n3").status, "down");
    assert.deepEqual(Object.keys(find(twice, "n3").suspicions).sort(), ["n1", "n2"]);
    assert.equal(find(twice, "n1").status, "joining");
    // With one vote needed, one suffices.
    assert.equal(find(await store.suspect("n1", "n2", 1, 1), "n2").status, "down");
  });

  it("MembershipStore expireLeases marks down only members whose lease ended before now - margin", async (t) => {
    const { node } = await cluster(t);
    const store = await node();
    await store.register(member("live"), ring, LEASE_MS);
    await registerExpired(store, "expired", 1);
    // A margin larger than the time since expiry spares it.
    assert.deepEqual(await store.expireLeases(60_000), []);
    const version = (await store.read()).version;
    assert.deepEqual(await store.expireLeases(0), ["expired"]);
    const view = await store.read();
    assert.equal(view.version, version + 1);
    assert.equal(find(view, "expired").status, "down");
    assert.equal(find(view, "live").status, "joining");
    assert.deepEqual(await store.expireLeases(0), [], "already down");
    assert.equal((await store.read()).version, version + 1);

    assert.equal(await store.forgetDown(), 1);
    assert.deepEqual(
      (await store.read()).members.map((m) => m.node),
      ["live"],
    );
  });

  it("MembershipStore commitAssignment is a compare-and-set: of two concurrent commits one wins", async (t) => {
    const { node } = await cluster(t);
    const [a, b] = [await node(), await node()];
    await a.register(member("n1"), ring, LEASE_MS);
    const view = await b.register(member("n2"), ring, LEASE_MS);
    const first = assignPartitions(null, ["n1", "n2"], ring.partitions);
    const second = assignPartitions(null, ["n1"], ring.partitions);

    const results = await Promise.all([
      a.commitAssignment(view.version, first),
      b.commitAssignment(view.version, second),
    ]);
    const won = results.filter((r) => r !== null);
    assert.equal(won.length, 1);
    const committed = won[0]!;
    assert.equal(committed.epoch, view.epoch + 1);
    assert.equal(committed.version, view.version + 1);
    const expected = results[0] === null ? second : first;
    assert.deepEqual(committed.assignment, { nodes: expected.nodes, owners: expected.owners });
    const read = await a.read();
    assert.deepEqual(read, committed);
    // A commit against the old version fails; against the new one it succeeds.
    assert.equal(await a.commitAssignment(view.version, first), null);
    const next = await a.commitAssignment(read.version, first);
    assert.equal(next?.epoch, view.epoch + 2);
    assert.deepEqual(next?.assignment?.owners, first.owners);
    await assert.rejects(
      a.commitAssignment(next!.version, assignPartitions(null, ["n1"], 32)),
      RangeError,
      "another partition count",
    );
  });

  it("MembershipStore reportSettled only raises a live incarnation's settled epoch, and notifies when it does", async (t) => {
    const { node } = await cluster(t);
    const store = await node();
    await store.register(member("n1", 1), ring, LEASE_MS);
    const versions: number[] = [];
    await store.onChange((version) => versions.push(version));
    const before = await store.read();
    assert.equal(await store.reportSettled("n1", 1, 3), true);
    const after = await store.read();
    assert.equal(find(after, "n1").settledEpoch, 3);
    assert.equal(after.version, before.version + 1, "a raise is a change (the coordinator waits for it)");
    await waitUntil(() => versions.includes(after.version), "the notification of the raise", 2_000);
    // An older or equal epoch changes nothing and bumps nothing.
    assert.equal(await store.reportSettled("n1", 1, 2), true);
    assert.equal(await store.reportSettled("n1", 1, 3), true);
    assert.equal((await store.read()).version, after.version);
    assert.equal(find(await store.read(), "n1").settledEpoch, 3);
    // Another incarnation cannot report for the name; a new incarnation starts from 0.
    assert.equal(await store.reportSettled("n1", 99, 4), false);
    await store.setStatus("n1", 1, "down");
    assert.equal(await store.reportSettled("n1", 1, 4), false, "a down member reports nothing");
    const reborn = await store.register(member("n1", 2), ring, LEASE_MS);
    assert.equal(find(reborn, "n1").settledEpoch, 0);
  });

  it("MembershipStore reportSilence leaves a silent member to its lease, and marks down the one side of a cut that is alive", async (t) => {
    const { node } = await cluster(t);
    const store = await node();
    for (const [name, incarnation] of [
      ["n1", 1],
      ["n2", 2],
      ["n3", 3],
    ] as const) {
      await store.register(member(name, incarnation), ring, LEASE_MS);
      await store.setStatus(name, incarnation, "up");
    }
    // n3 is silent to both others but says nothing itself (a paused process): its lease decides.
    assert.deepEqual(await store.reportSilence("n1", "n3", 3, 2), []);
    assert.deepEqual(await store.reportSilence("n2", "n3", 3, 2), []);
    assert.equal(find(await store.read(), "n3").status, "up");
    assert.deepEqual(Object.keys(find(await store.read(), "n3").silencedBy).sort(), ["n1", "n2"]);
    // n3 reports n1 silent: it is alive, and cut from both others (two votes): it goes down,
    // not n1 (one vote).
    assert.deepEqual(await store.reportSilence("n3", "n1", 1, 2), ["n3"]);
    const view = await store.read();
    assert.deepEqual(
      view.members.map((m) => [m.node, m.status]),
      [
        ["n1", "up"],
        ["n2", "up"],
        ["n3", "down"],
      ],
    );
    // A member that is down reports nothing.
    assert.deepEqual(await store.reportSilence("n3", "n2", 2, 1), []);
    assert.equal(find(await store.read(), "n2").status, "up");
  });

  it("MembershipStore reportSilence: of two members cut from each other, exactly one goes down", async (t) => {
    const { node } = await cluster(t);
    const [a, b] = [await node(), await node()];
    await a.register(member("n1", 1), ring, LEASE_MS);
    await a.setStatus("n1", 1, "up");
    await b.register(member("n2", 2), ring, LEASE_MS);
    await b.setStatus("n2", 2, "up");
    // Both report at once; one vote each is enough in a pair.
    const [fromA, fromB] = await Promise.all([
      a.reportSilence("n1", "n2", 2, 1),
      b.reportSilence("n2", "n1", 1, 1),
    ]);
    const down = [...fromA, ...fromB];
    assert.equal(down.length, 1, `one goes down: ${JSON.stringify({ fromA, fromB })}`);
    const statuses = (await a.read()).members.map((m) => m.status).sort();
    assert.deepEqual(statuses, ["down", "up"]);
  });

  it("MembershipStore onChange reports every change's version, and again after its connection drops", async (t) => {
    const { node } = await cluster(t);
    const [a, b] = [await node(), await node()];
    const events = new EventEmitter();
    const heard: number[] = [];
    const unsubscribe = await a.onChange((version) => {
      heard.push(version);
      events.emit("version", version);
    });
    const reached = (version: number) =>
      waitForMatchingEvent(events, "version", (v: number) => v >= version, `version ${version}`);

    let wait = reached(1);
    await b.register(member("n1"), ring, LEASE_MS);
    await wait;
    wait = reached(3);
    await b.setStatus("n1", 1, "up");
    await b.register(member("n2"), ring, LEASE_MS);
    await wait;
    assert.deepEqual(heard, [1, 2, 3]);

    // Kill the listening connection from the server side: the listener reconnects, reports the
    // current version to catch up, and hears later changes.
    wait = waitForMatchingEvent(
      events,
      "version",
      (_version: number) => true,
      "the catch-up after reconnecting",
    );
    const { rowCount } = await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'starling-membership-listen'",
    );
    assert.equal(rowCount, 1);
    await wait;
    assert.equal(heard.at(-1), 3);
    wait = reached(4);
    await b.setStatus("n2", 1, "up");
    await wait;
    assert.equal(heard.at(-1), 4);

    await unsubscribe();
    await b.setStatus("n2", 1, "leaving");
    // Nothing more arrives once unsubscribed: a second listener that hears version 5 proves
    // the notification was sent.
    const later = await b.onChange((version) => events.emit("later", version));
    const heardLater = waitForMatchingEvent(events, "later", (v: number) => v === 6, "version 6");
    await b.setStatus("n2", 1, "down");
    await heardLater;
    assert.equal(heard.at(-1), 4);
    await later();
  });

  it("MembershipStore serialises 5 concurrent registrations: distinct node numbers, 5 versions", async (t) => {
    const { node } = await cluster(t);
    const stores = await Promise.all(Array.from({ length: 5 }, () => node()));
    // A first node sets the ring, so the five below race on the membership rows alone.
    await stores[0]!.register(member("seed"), ring, LEASE_MS);
    const views = await Promise.all(
      stores.map((store, i) => store.register(member(`n${i}`), ring, LEASE_MS)),
    );
    assert.deepEqual(views.map((v) => v.version).sort(), [2, 3, 4, 5, 6]);
    const final = await stores[0]!.read();
    assert.equal(final.version, 6);
    assert.deepEqual(final.members.map((m) => m.nodeNo).sort(), [1, 2, 3, 4, 5, 6]);
    // Each registration's view saw exactly the members registered before it.
    for (const view of views) assert.equal(view.members.length, view.version);
  });

  it("MembershipStore rejects calls before open with XSRV_STORE and bad arguments with TypeError/RangeError", async (t) => {
    const { url } = await cluster(t);
    const store = new MembershipStore({ url, log });
    await assert.rejects(store.read(), { code: "XSRV_STORE" });
    await assert.rejects(
      store.onChange(() => {}),
      { code: "XSRV_STORE" },
    );
    assert.throws(() => store.register(member(""), ring, LEASE_MS), TypeError);
    assert.throws(() => store.register(member("n1"), { partitions: 0, hash: "x" }, LEASE_MS), RangeError);
    assert.throws(() => store.setStatus("n1", 1, "gone" as "up"), TypeError);
    assert.throws(() => store.suspect("n1", "n2", 1, 0), RangeError);
    await store.close();
  });
});
