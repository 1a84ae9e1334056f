/**
 * A SCRAM client (RFC 5802, RFC 7677) written from the RFC for the tests, independent of the
 * server's implementation: SCRAM-SHA-1 and SCRAM-SHA-256, without channel binding ("n,,").
 * It also checks the server signature, so a server that does not know the password fails here.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto";

/** The SCRAM mechanisms the tests use. */
export type ScramMechanism = "SCRAM-SHA-1" | "SCRAM-SHA-256";

const HASHES: Record<ScramMechanism, { name: "sha1" | "sha256"; bytes: number }> = {
  "SCRAM-SHA-1": { name: "sha1", bytes: 20 },
  "SCRAM-SHA-256": { name: "sha256", bytes: 32 },
};

/** RFC 5802 §5.1: "," and "=" in a username are escaped as "=2C" and "=3D". */
function saslName(name: string): string {
  return name.replaceAll("=", "=3D").replaceAll(",", "=2C");
}

function parseAttributes(message: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of message.split(",")) {
    const eq = part.indexOf("=");
    if (eq > 0) out.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return out;
}

/** One SCRAM exchange, client side. */
export class ScramClient {
  readonly mechanism: ScramMechanism;
  readonly #username: string;
  readonly #password: string;
  readonly #clientNonce: string;
  #clientFirstBare = "";
  #expectedServerSignature: Buffer | undefined;

  constructor(mechanism: ScramMechanism, username: string, password: string, clientNonce?: string) {
    this.mechanism = mechanism;
    this.#username = username;
    this.#password = password;
    this.#clientNonce = clientNonce ?? randomBytes(18).toString("base64");
  }

  /** The client-first-message ("n,,n=user,r=nonce"). */
  clientFirst(): string {
    this.#clientFirstBare = `n=${saslName(this.#username)},r=${this.#clientNonce}`;
    return `n,,${this.#clientFirstBare}`;
  }

  /** Computes the client-final-message from the server-first-message. */
  clientFinal(serverFirst: string): string {
    const attrs = parseAttributes(serverFirst);
    const nonce = attrs.get("r");
    const salt = attrs.get("s");
    const iterations = Number(attrs.get("i"));
    if (!nonce || !salt || !Number.isInteger(iterations) || iterations < 1) {
      throw new Error(`Malformed SCRAM server-first-message: ${serverFirst}`);
    }
    // RFC 5802 §5.1: the server's nonce MUST start with the client's.
    if (!nonce.startsWith(this.#clientNonce))
      throw new Error("SCRAM server nonce does not extend the client nonce");
    const { name, bytes } = HASHES[this.mechanism];
    const hmac = (key: Buffer, text: string) => createHmac(name, key).update(text).digest();
    const salted = pbkdf2Sync(
      this.#password.normalize("NFKC"),
      Buffer.from(salt, "base64"),
      iterations,
      bytes,
      name,
    );
    const clientKey = hmac(salted, "Client Key");
    const storedKey = createHash(name).update(clientKey).digest();
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.#clientFirstBare},${serverFirst},${withoutProof}`;
    const clientSignature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(clientKey.length);
    for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i]! ^ clientSignature[i]!;
    this.#expectedServerSignature = hmac(hmac(salted, "Server Key"), authMessage);
    return `${withoutProof},p=${proof.toString("base64")}`;
  }

  /** Checks the server-final-message ("v=..."); throws when the server's signature is wrong. */
  verifyServerFinal(serverFinal: string): void {
    const verifier = parseAttributes(serverFinal).get("v");
    if (!verifier || !this.#expectedServerSignature)
      throw new Error(`No SCRAM server signature in "${serverFinal}"`);
    const got = Buffer.from(verifier, "base64");
    if (
      got.length !== this.#expectedServerSignature.length ||
      !timingSafeEqual(got, this.#expectedServerSignature)
    ) {
      throw new Error(
        "SCRAM server signature does not verify: the server does not hold this password's keys",
      );
    }
  }
}

/**
 * A `saslmechanisms`-compatible SCRAM-SHA-256 mechanism, so that xmpp.js' own SASL negotiation can
 * log in with it (xmpp.js 0.14 brings SCRAM-SHA-1 and PLAIN only).
 */
export class ScramSha256Mechanism {
  readonly name = "SCRAM-SHA-256";
  readonly clientFirst = true;
  #scram: ScramClient | undefined;
  #stage: "first" | "final" | "done" = "first";
  #serverFirst = "";

  response(credentials: { username: string; password: string }): string {
    if (this.#stage === "first") {
      this.#scram = new ScramClient("SCRAM-SHA-256", credentials.username, credentials.password);
      this.#stage = "final";
      return this.#scram.clientFirst();
    }
    if (this.#stage === "final") {
      this.#stage = "done";
      return this.#scram!.clientFinal(this.#serverFirst);
    }
    return "";
  }

  challenge(challenge: string): this {
    if (this.#stage === "final") this.#serverFirst = challenge;
    else this.#scram?.verifyServerFinal(challenge);
    return this;
  }
}
// saslmechanisms reads the name from the prototype (`Factory.use(mech)` → `mech.prototype.name`).
Object.defineProperty(ScramSha256Mechanism.prototype, "name", { value: "SCRAM-SHA-256" });
