import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startNode } from "../helpers/start-node.ts";
import { closedPort, type RunResult, runStarling } from "./run-starling.ts";

function assertOk(result: RunResult, stdout: string): void {
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, stdout);
}

describe("starling user with the node running", () => {
  it("starling user add, passwd, remove and list work through a running node, and persist after it stops", async (t) => {
    const node = await startNode(t, { workers: 1 });
    const run = (args: string[], port = node.ports.http, input?: string) =>
      runStarling([...args, "--data", node.dataDir, "--http-port", String(port)], {
        cwd: node.dataDir,
        ...(input === undefined ? {} : { input }),
      });

    assertOk(await run(["user", "add", "alice@localhost", "--password", "a"]), "created alice@localhost\n");
    assertOk(await run(["user", "add", "bob@localhost"], undefined, "b\n"), "created bob@localhost\n");
    const again = await run(["user", "add", "alice@localhost", "--password", "x"]);
    assert.equal(again.code, 1);
    assert.equal(again.stderr, "starling: alice@localhost already exists\n");
    assertOk(
      await run(["user", "passwd", "alice@localhost", "--password", "a2"]),
      "changed the password of alice@localhost\n",
    );
    assertOk(await run(["user", "remove", "bob@localhost"]), "removed bob@localhost\n");
    assertOk(await run(["user", "list"]), "alice@localhost\n");
    // The node holds the store's lock, so these could only have gone through its admin endpoint.
    const direct = await run(["user", "list"], await closedPort());
    assert.equal(direct.code, 1);
    assert.match(direct.stderr, /in use by another process, and no node answered/);

    const { code, signal } = await node.stop();
    assert.equal(signal, null);
    assert.equal(code, 0, node.logText());
    assertOk(await run(["user", "list"], await closedPort()), "alice@localhost\n");
  });

  it("starling start exits 0 after SIGINT", async (t) => {
    const node = await startNode(t, { workers: 1 });
    node.kill("SIGINT");
    const { code, signal } = await node.exited;
    assert.equal(signal, null);
    assert.equal(code, 0, node.logText());
    assert.ok(node.logs.some((line) => line.msg === "stopping node" && line.reason === "SIGINT"));
  });

  it("starling start exits 1 with one line when another node holds the data directory", async (t) => {
    const node = await startNode(t, { workers: 1 });
    const second = await runStarling(
      [
        "start",
        "--data",
        node.dataDir,
        "--c2s-port",
        "0",
        "--tls-port",
        "0",
        "--http-port",
        "0",
        "--workers",
        "1",
        "--log-level",
        "silent",
      ],
      { cwd: node.dataDir },
    );
    assert.equal(second.code, 1, second.stderr);
    assert.equal(second.stdout, "");
    assert.match(second.stderr, /^starling: .*in use by another process.*\n$/);
  });
});
