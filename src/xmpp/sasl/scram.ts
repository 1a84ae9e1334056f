/**
 * SCRAM-SHA-1 and SCRAM-SHA-256, server side (RFC 5802, RFC 7677), without channel binding:
 * the -PLUS variants are not offered, so a client may send the gs2 flag `n` or `y` but not `p`.
 *
 * The exchange (RFC 5802 §5):
 *   C: n,[a=authzid],n=user,r=cnonce
 *   S: r=cnonce+snonce,s=salt,i=iterations
 *   C: c=base64(gs2-header),r=cnonce+snonce,p=ClientProof
 *   S: v=ServerSignature            (sent with <success/>)
 *
 * An unknown user gets a challenge that looks like a real one (a salt derived from the user
 * name, the default iteration count) and fails only at the end, so the exchange does not tell
 * an attacker which accounts exist. A provider that has no SCRAM keys for a user (one that can
 * only check plaintext passwords) makes SCRAM fail the same way; offer only PLAIN with it.
 */
import { createHash, createSecretKey, randomBytes, timingSafeEqual } from "node:crypto";
import type { ScramHash } from "../../auth/auth-provider.ts";
import { DEFAULT_SCRAM_ITERATIONS } from "../../auth/scram.ts";
import type { BareJid } from "../jid.ts";
import { decodeBase64, decodeUtf8 } from "./encoding.ts";
import { hmac } from "./hmac.ts";
import { isAuthzidAllowed, resolveAuthcid } from "./identity.ts";
import {
  type SaslContext,
  type SaslFailureCondition,
  type SaslServerMechanism,
  type SaslStep,
  THROTTLED_TEXT,
} from "./mechanism.ts";
import type { ScramCredential } from "./scram-credential.ts";

/** The longest SCRAM message accepted from a client; real ones are a few hundred bytes. */
export const MAX_SCRAM_MESSAGE_BYTES = 4096;

/** Options for {@link ScramServerMechanism}. */
export interface ScramServerOptions {
  /**
   * Makes the server nonce (RFC 5802 §5.1 `r`: printable characters, no comma). Defaults to 18
   * random bytes in base64. Tests pass a fixed value to replay the RFC examples.
   */
  nonce?: () => string;
}

/**
 * Keys for the salts shown to unknown users. Per process, so a salt cannot be compared across
 * restarts to find out that the account is fake; deterministic within the process, so asking
 * twice for the same unknown user gives the same salt, as a real account would.
 */
const FAKE_SALT_KEY = createSecretKey(randomBytes(32));

/** RFC 5802 §7: printable = %x21-2B / %x2D-7E ;; Printable ASCII except ",". */
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;
/** RFC 5802 §7: attr-val = ALPHA "=" value; value = 1*value-char. */
const ATTRIBUTE = /^[A-Za-z]=./s;

type Failure = SaslStep & { kind: "failure" };

type ScramState =
  | { kind: "initial" }
  | { kind: "awaiting-client-first" }
  | {
      kind: "awaiting-client-final";
      gs2Header: string;
      clientFirstBare: string;
      serverFirst: string;
      nonce: string;
      jid: BareJid | undefined;
      /** Undefined for an unknown user: the exchange continues but can only fail. */
      credential: ScramCredential | undefined;
    }
  | { kind: "done" };

/** The SCRAM mechanism for one exchange. */
export class ScramServerMechanism implements SaslServerMechanism {
  readonly name: string;
  readonly #hash: ScramHash;
  readonly #context: SaslContext;
  readonly #makeNonce: () => string;
  #state: ScramState = { kind: "initial" };

  /** Creates the mechanism for one exchange, with `hash` selecting SCRAM-SHA-1 or SCRAM-SHA-256. */
  constructor(hash: ScramHash, context: SaslContext, options: ScramServerOptions = {}) {
    this.#hash = hash;
    this.name = hash === "sha1" ? "SCRAM-SHA-1" : "SCRAM-SHA-256";
    this.#context = context;
    this.#makeNonce = options.nonce ?? (() => randomBytes(18).toString("base64"));
  }

  /** Handles `<auth/>`: the client-first-message, or nothing (then an empty challenge asks for it). */
  async start(initialResponse: Buffer | undefined): Promise<SaslStep> {
    if (this.#state.kind !== "initial") throw new TypeError(`${this.name} exchange was already started`);
    if (initialResponse === undefined) {
      // RFC 6120 §6.4.2: with no initial response, the receiving entity sends an empty challenge.
      this.#state = { kind: "awaiting-client-first" };
      return { kind: "challenge", data: Buffer.alloc(0) };
    }
    return this.#clientFirst(initialResponse);
  }

  /** Handles a `<response/>`: the client-first-message or the client-final-message. */
  async next(response: Buffer): Promise<SaslStep> {
    const state = this.#state;
    switch (state.kind) {
      case "awaiting-client-first":
        return this.#clientFirst(response);
      case "awaiting-client-final":
        this.#state = { kind: "done" };
        return this.#clientFinal(response, state);
      case "initial":
      case "done":
        this.#state = { kind: "done" };
        return failure("malformed-request", "Unexpected SASL response");
      default: {
        const unreachable: never = state;
        throw new TypeError(`Unknown SCRAM state ${JSON.stringify(unreachable)}`);
      }
    }
  }

  async #clientFirst(message: Buffer): Promise<SaslStep> {
    this.#state = { kind: "done" };
    const text = decodeMessage(message);
    if (typeof text !== "string") return text;

    // RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
    //              gs2-header = gs2-cbind-flag "," [ authzid ] ","
    const parts = text.split(",");
    const [flag = "", authzidPart = ""] = parts;
    if (flag.startsWith("p=")) {
      // RFC 5802 §6: "p" means the client requires channel binding, which only the -PLUS
      // mechanisms (not offered here) carry.
      return failure("malformed-request", "Channel binding is not supported");
    }
    // RFC 5802 §6: "If the flag is set to "y" and the server supports channel binding, the
    // server MUST fail authentication." This server offers no -PLUS mechanism, so "y" is fine.
    if (flag !== "n" && flag !== "y") return failure("malformed-request", "Bad gs2 header");
    let authzid = "";
    if (authzidPart !== "") {
      const value = authzidPart.startsWith("a=") ? unescapeSaslname(authzidPart.slice(2)) : undefined;
      if (value === undefined) return failure("malformed-request", "Bad authzid");
      authzid = value;
    }
    const gs2Header = `${flag},${authzidPart},`;

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    const bareParts = parts.slice(2);
    const clientFirstBare = bareParts.join(",");
    const [userPart = "", noncePart = "", ...extensions] = bareParts;
    if (userPart.startsWith("m=")) {
      // RFC 5802 §5.1 "m": "its presence in a client or a server message MUST cause
      // authentication failure when the attribute is parsed by the other end."
      return failure("malformed-request", "Mandatory extensions are not supported");
    }
    if (!userPart.startsWith("n=") || !noncePart.startsWith("r=") || !extensions.every(isAttribute)) {
      return failure("malformed-request", "Bad client-first-message");
    }
    const username = unescapeSaslname(userPart.slice(2));
    if (username === undefined) return failure("malformed-request", "Bad user name");
    const clientNonce = noncePart.slice(2);
    if (!PRINTABLE.test(clientNonce)) return failure("malformed-request", "Bad nonce");

    const jid = resolveAuthcid(username, this.#context.domain);
    if (!isAuthzidAllowed(authzid, jid)) return failure("invalid-authzid", undefined, jid);
    const admit = this.#context.admit;
    if (jid !== undefined && admit !== undefined && !(await admit(jid, false))) {
      return failure("temporary-auth-failure", THROTTLED_TEXT, jid);
    }

    const credential =
      jid === undefined ? undefined : await this.#context.auth.getScramCredential(jid, this.#hash);
    const serverNonce = this.#makeNonce();
    if (!PRINTABLE.test(serverNonce)) throw new TypeError("The SCRAM server nonce must be printable");
    const nonce = clientNonce + serverNonce;
    const salt = credential?.salt ?? this.#fakeSalt(jid ?? username);
    const iterations = credential?.iterations ?? DEFAULT_SCRAM_ITERATIONS;
    // RFC 5802 §7: server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count
    const serverFirst = `r=${nonce},s=${salt},i=${iterations}`;
    this.#state = {
      kind: "awaiting-client-final",
      gs2Header,
      clientFirstBare,
      serverFirst,
      nonce,
      jid,
      credential,
    };
    return { kind: "challenge", data: Buffer.from(serverFirst, "utf8") };
  }

  #clientFinal(message: Buffer, state: ScramState & { kind: "awaiting-client-final" }): SaslStep {
    const { jid } = state;
    const text = decodeMessage(message, jid);
    if (typeof text !== "string") return text;

    // RFC 5802 §7: client-final-message-without-proof = channel-binding "," nonce ["," extensions]
    //              client-final-message = client-final-message-without-proof "," proof
    const parts = text.split(",");
    const proofPart = parts.at(-1) ?? "";
    const [bindingPart = "", noncePart = "", ...extensions] = parts.slice(0, -1);
    if (parts.length < 3 || !proofPart.startsWith("p=")) {
      return failure("malformed-request", "Bad client-final-message", jid);
    }
    if (!bindingPart.startsWith("c=") || !noncePart.startsWith("r=") || !extensions.every(isAttribute)) {
      return failure("malformed-request", "Bad client-final-message", jid);
    }
    if (extensions.some((extension) => extension.startsWith("m="))) {
      return failure("malformed-request", "Mandatory extensions are not supported", jid);
    }
    const binding = decodeBase64(bindingPart.slice(2));
    const proof = decodeBase64(proofPart.slice(2));
    if (binding === undefined || proof === undefined) {
      return failure("incorrect-encoding", "Bad base64", jid);
    }
    // RFC 5802 §6: without channel binding, c= carries the gs2 header the client sent first
    // ("biws" for "n,,", "eSws" for "y,,"); a different one means the header was tampered with.
    if (!binding.equals(Buffer.from(state.gs2Header, "utf8"))) {
      return failure("malformed-request", "Channel binding does not match the gs2 header", jid);
    }
    // RFC 5802 §5.1 "r": the server "MUST verify that the nonce sent by the client in the
    // second message is the same as the one sent by the server in its first message."
    if (noncePart.slice(2) !== state.nonce) return failure("malformed-request", "Nonce mismatch", jid);

    // RFC 5802 §3: AuthMessage := client-first-message-bare + "," + server-first-message + ","
    //              + client-final-message-without-proof
    const withoutProof = parts.slice(0, -1).join(",");
    const authMessage = `${state.clientFirstBare},${state.serverFirst},${withoutProof}`;
    const { credential } = state;
    // An unknown user is checked against random keys, so both paths do the same work.
    const storedKey = credential ? Buffer.from(credential.storedKey, "base64") : randomBytes(this.#length);
    const serverKey = credential ? Buffer.from(credential.serverKey, "base64") : randomBytes(this.#length);
    const verified = this.#verifyProof(storedKey, authMessage, proof);
    if (credential === undefined || jid === undefined || !verified) {
      return failure("not-authorized", undefined, jid);
    }

    // RFC 5802 §3: ServerSignature := HMAC(ServerKey, AuthMessage); server-final-message "v=".
    const serverSignature = hmac(this.#hash, serverKey, authMessage);
    return { kind: "success", jid, data: Buffer.from(`v=${serverSignature.toString("base64")}`, "utf8") };
  }

  /**
   * RFC 5802 §3: ClientSignature := HMAC(StoredKey, AuthMessage); ClientKey := ClientProof XOR
   * ClientSignature; the proof is good when H(ClientKey) equals StoredKey.
   */
  #verifyProof(storedKey: Buffer, authMessage: string, proof: Buffer): boolean {
    const clientSignature = hmac(this.#hash, storedKey, authMessage);
    // Lengths are public (fixed by the hash), so leaving early on them leaks nothing.
    if (proof.length !== clientSignature.length || storedKey.length !== clientSignature.length) return false;
    const clientKey = Buffer.alloc(proof.length);
    for (let i = 0; i < proof.length; i++) clientKey[i] = proof[i]! ^ clientSignature[i]!;
    return timingSafeEqual(createHash(this.#hash).update(clientKey).digest(), storedKey);
  }

  get #length(): number {
    return this.#hash === "sha1" ? 20 : 32;
  }

  /** A salt for an unknown user, the same length as real ones (16 bytes, see src/auth/scram.ts). */
  #fakeSalt(identity: string): string {
    return hmac("sha256", FAKE_SALT_KEY, `${this.#hash}\0${identity}`).subarray(0, 16).toString("base64");
  }
}

function failure(condition: SaslFailureCondition, text?: string, jid?: BareJid): Failure {
  const step: Failure = { kind: "failure", condition };
  if (text !== undefined) step.text = text;
  if (jid !== undefined) step.jid = jid;
  return step;
}

/** The message as text, or the failure to return: too long, or not UTF-8. */
function decodeMessage(message: Buffer, jid?: BareJid): string | Failure {
  if (message.length > MAX_SCRAM_MESSAGE_BYTES) {
    return failure("malformed-request", "SCRAM message too long", jid);
  }
  const text = decodeUtf8(message);
  return text ?? failure("incorrect-encoding", "SCRAM message is not UTF-8", jid);
}

function isAttribute(part: string): boolean {
  return ATTRIBUTE.test(part);
}

/**
 * RFC 5802 §5.1: in a saslname, "=" is only ever "=2C" (",") or "=3D" ("="); "If the server
 * receives a username that contains '=' not followed by either '2C' or '3D', then the server
 * MUST fail the authentication." Undefined for such a name and for an empty one.
 */
function unescapeSaslname(value: string): string | undefined {
  if (value === "" || /=(?!2C|3D)/.test(value)) return undefined;
  return value.replaceAll("=2C", ",").replaceAll("=3D", "=");
}
