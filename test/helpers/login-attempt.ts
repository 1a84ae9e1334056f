/**
 * One login attempt on a fresh connection from a chosen source address, for the throttle tests:
 * on Linux all of 127/8 is the loopback interface, so 127.0.0.2 is another client address.
 */
import { NS_SASL, NS_TLS, RawClient } from "./raw-client.ts";
import type { AfterHook, StartedNode } from "./start-node.ts";

/** The outcome of one attempt: "success", the SASL failure condition, or "closed: ...". */
export async function loginAttempt(
  t: AfterHook,
  node: StartedNode,
  from: string,
  username: string,
  password: string,
  mechanism: "PLAIN" | "SCRAM-SHA-1" = "PLAIN",
): Promise<string> {
  let client: RawClient | undefined;
  try {
    client = await connectFrom(t, node, from, username);
    const outcome =
      mechanism === "PLAIN"
        ? await client.authPlain(username, password)
        : await client.authScram(mechanism, username, password);
    if (outcome.is("success", NS_SASL)) return "success";
    return outcome.getChildElements()[0]?.getName() ?? outcome.toString();
  } catch (error) {
    return `closed: ${(error as Error).message}`;
  } finally {
    client?.destroy();
  }
}

/**
 * A connection from `from` with its stream open, after STARTTLS when the server offers it, ready
 * for SASL; destroyed when the test ends.
 */
export async function connectFrom(
  t: AfterHook,
  node: StartedNode,
  from: string,
  username: string,
): Promise<RawClient> {
  const client = await RawClient.connect({
    port: node.ports.c2s,
    host: node.host,
    domain: node.domain,
    localAddress: from,
    label: `${username} from ${from}`,
  });
  t.after(() => client.destroy());
  const features = await client.openStream();
  if (features.getChild("starttls", NS_TLS) !== undefined) await client.startTls();
  return client;
}
