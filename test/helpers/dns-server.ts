/**
 * A small authoritative DNS server on 127.0.0.1 (UDP, a free port) serving a fixed list of
 * records, for `starling check dns` tests: answers are encoded by `dns-packet`, the encoder
 * multicast-dns and bonjour use. Nothing runs at import.
 */
import { createSocket } from "node:dgram";
import { once } from "node:events";
import { type Answer, AUTHORITATIVE_ANSWER, decode, encode } from "dns-packet";

/** DNS RCODE 3, NXDOMAIN (RFC 1035 §4.1.1): the name does not exist at all. */
const NXDOMAIN = 3;

/** A running test DNS server. */
export interface TestDnsServer {
  /** `127.0.0.1:PORT`, for `--dns-server`. */
  address: string;
  close(): Promise<void>;
}

/**
 * Serves `records`. A query for a name with records of other types gets an empty answer
 * (NODATA), a query for an unknown name NXDOMAIN; an alias is answered with its CNAME, followed
 * to the records of the asked type, as a recursive server would.
 */
export async function startDnsServer(records: readonly Answer[]): Promise<TestDnsServer> {
  const socket = createSocket("udp4");
  const named = (name: string) => records.filter((r) => r.name.toLowerCase() === name.toLowerCase());
  socket.on("message", (message, peer) => {
    const query = decode(message);
    const question = query.questions?.[0];
    if (question === undefined) return;
    const answers: Answer[] = [];
    let name = question.name;
    for (let hops = 0; hops < 8; hops++) {
      const here = named(name);
      answers.push(...here.filter((r) => r.type === question.type));
      const alias = here.find((r) => r.type === "CNAME");
      if (question.type === "CNAME" || alias === undefined || alias.type !== "CNAME") break;
      answers.push(alias);
      name = alias.data;
    }
    const exists = named(question.name).length > 0;
    const reply = encode({
      type: "response",
      id: query.id ?? 0,
      flags: AUTHORITATIVE_ANSWER | (exists ? 0 : NXDOMAIN),
      questions: [question],
      answers,
    });
    socket.send(reply, peer.port, peer.address);
  });
  socket.bind(0, "127.0.0.1");
  await once(socket, "listening");
  return {
    address: `127.0.0.1:${socket.address().port}`,
    close: async () => {
      socket.close();
      await once(socket, "close");
    },
  };
}
