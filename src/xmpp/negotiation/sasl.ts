/**
 * SASL (RFC 6120 §6): `<auth/>`, challenges and responses, `<success/>` or `<failure/>`; and the
 * same exchange in XEP-0388's profile (SASL2): `<authenticate/>` with an `<initial-response/>`,
 * the same challenges and responses in its namespace, and a `<success/>` that carries the
 * authorization identifier and whatever `<authenticate/>` asked beside (resumption, Bind 2:
 * sasl2-inline.ts), with no stream restart. The mechanisms are socket-free state machines
 * (../sasl/); this step drives one and puts the cluster-wide login throttle (`LoginGuard`)
 * between naming an account and checking its credentials: a refused attempt is answered
 * `<temporary-auth-failure/>` (RFC 6120 §6.5.12) before anything is checked, so a refusal
 * reveals nothing about the password.
 */
import type { Element } from "@xmpp/xml";
import { escapeXML } from "@xmpp/xml";
import type { AuthProvider } from "../../auth/auth-provider.ts";
import { XmppServerError } from "../../errors.ts";
import { NS_SASL, NS_SASL2 } from "../ns.ts";
import {
  createSaslMechanism,
  offeredMechanisms,
  type SaslContext,
  type SaslServerMechanism,
  type SaslStep,
} from "../sasl/mechanism.ts";
import type { LoginTicket } from "../stream-host.ts";
import type { NegotiatingStream } from "./negotiating-stream.ts";
import { completeSasl2, sasl2InlineFeatures } from "./sasl2-inline.ts";

/** What the authentication provider supports, as `<mechanism/>` elements. */
function mechanismElements(auth: Pick<AuthProvider, "scram">): string {
  return offeredMechanisms(auth)
    .map((m) => `<mechanism>${m}</mechanism>`)
    .join("");
}

/** The mechanisms feature (RFC 6120 §6.4.1): what the authentication provider supports. */
export function saslFeature(auth: Pick<AuthProvider, "scram">): string {
  return `<mechanisms xmlns="${NS_SASL}">${mechanismElements(auth)}</mechanisms>`;
}

/**
 * XEP-0388 §2.1: the same mechanisms in SASL2's feature, with what `<authenticate/>` may carry
 * beside them (sasl2-inline.ts).
 */
export function sasl2Feature(auth: Pick<AuthProvider, "scram">): string {
  return `<authentication xmlns="${NS_SASL2}">${mechanismElements(auth)}<inline>${sasl2InlineFeatures()}</inline></authentication>`;
}

/** One stream's SASL negotiation: the mechanism in progress, if any. */
export class SaslNegotiation {
  readonly #stream: NegotiatingStream;
  #mechanism: SaslServerMechanism | undefined;
  /** The exchange in progress speaks XEP-0388 (SASL2): its `<authenticate/>` request. */
  #sasl2: Element | undefined;
  /** The element being answered is SASL2's: so is the answer. */
  #answerSasl2 = false;
  /** The exchange's attempt, charged to the login throttle once its account was named. */
  #admitted: LoginTicket | undefined;
  /** The throttle refused the exchange's attempt: nothing was checked, nothing is counted. */
  #refused = false;
  /** An element is being handled (a provider or the throttle is being asked). */
  #busy = false;

  constructor(stream: NegotiatingStream) {
    this.#stream = stream;
  }

  /** Handles one element of the SASL namespace. */
  async handle(el: Element): Promise<void> {
    // RFC 6120 §6.4: the client waits for the server's answer before it sends the next SASL
    // element. One sent meanwhile would run beside the first, and the throttle's charge of one
    // account could be settled by another account's success: the stream ends instead.
    if (this.#busy) {
      return this.#stream.closeWithError(
        "policy-violation",
        "a SASL element before the answer to the previous one",
      );
    }
    this.#busy = true;
    try {
      await this.#handle(el);
    } catch (error) {
      // RFC 6120 §6.5.12: the backend did not answer; the client may try again later. Its
      // password is not judged wrong and nothing counts against the throttle.
      if (!(error instanceof XmppServerError && error.code === "XSRV_AUTH_UNAVAILABLE")) throw error;
      this.#mechanism = undefined;
      this.#settle(false);
      this.#stream.log.warn(
        { err: error },
        "the authentication backend did not answer; login refused for now",
      );
      if (!this.#stream.closing)
        this.#failure("temporary-auth-failure", "the account service is unavailable; try again later");
    } finally {
      this.#busy = false;
    }
  }

  /** The SASL context of one exchange: the provider, and the throttle between naming an account and checking it. */
  #context(): SaslContext {
    const { host, remoteAddress } = this.#stream;
    return {
      domain: host.config.domain,
      auth: host.auth,
      isToken: (password) => host.loginGuard.isToken(password),
      admit: async (jid, token) => {
        const admission = await host.loginGuard.admit(remoteAddress, jid, token);
        if (admission.allowed) this.#admitted = admission.ticket;
        else this.#refused = true;
        return admission.allowed;
      },
    };
  }

  /** Ends the exchange's admitted attempt that did not fail (see LoginGuard.settle). */
  #settle(succeeded: boolean): void {
    const admitted = this.#admitted;
    this.#admitted = undefined;
    this.#refused = false;
    if (admitted !== undefined) this.#stream.host.loginGuard.settle(admitted, succeeded);
  }

  async #handle(el: Element): Promise<void> {
    const stream = this.#stream;
    const { host } = stream;
    // One that waited for its turn behind the exchange that authenticated the stream.
    if (stream.jid !== undefined) {
      return stream.closeWithError("policy-violation", "a SASL element after authentication");
    }
    const sasl2 = el.attrs.xmlns === NS_SASL2;
    // Each element is answered in its own profile; a response must continue its exchange's.
    this.#answerSasl2 = sasl2;
    if (el.name === "auth" || el.name === "authenticate") this.#sasl2 = sasl2 ? el : undefined;
    if (!stream.secure && host.config.tls.requireBeforeAuth) return this.#failure("encryption-required");
    if (el.name === "abort") {
      this.#mechanism = undefined;
      return this.#failure("aborted");
    }
    let step: SaslStep;
    if ((el.name === "auth" && !sasl2) || (el.name === "authenticate" && sasl2)) {
      // A new exchange: one left unfinished keeps its charge (it counts as a failure).
      this.#admitted = undefined;
      this.#refused = false;
      const mechanism = createSaslMechanism(el.attrs.mechanism ?? "", this.#context());
      if (mechanism === undefined) return this.#failure("invalid-mechanism");
      this.#mechanism = mechanism;
      // XEP-0388 §2.3: the initial response is a child; RFC 6120 §6.4.2: the element's text.
      const text = sasl2 ? (el.getChildText("initial-response") ?? "") : el.text();
      const initial = text === "" ? undefined : decodeBase64(text);
      if (initial === null) return this.#failure("incorrect-encoding");
      step = await mechanism.start(initial);
    } else if (
      el.name === "response" &&
      this.#mechanism !== undefined &&
      sasl2 === (this.#sasl2 !== undefined)
    ) {
      const data = decodeBase64(el.text());
      if (data === null) return this.#failure("incorrect-encoding");
      step = await this.#mechanism.next(data ?? Buffer.alloc(0));
    } else {
      return this.#failure("malformed-request");
    }
    if (stream.closing) return;
    switch (step.kind) {
      case "challenge":
        return stream.send(
          `<challenge xmlns="${this.#answerSasl2 ? NS_SASL2 : NS_SASL}">${step.data.toString("base64") || "="}</challenge>`,
        );
      case "failure": {
        this.#mechanism = undefined;
        host.counters.loginFailures++;
        // One line per failed login, with the address and the account, for fail2ban and the like.
        stream.log.warn(
          {
            event: "login-failed",
            address: stream.remoteAddress,
            user: step.jid ?? null,
            condition: step.condition,
          },
          "login failed",
        );
        // An admitted attempt's failure counts now (the account's counts were charged when it
        // was admitted); a refused one is not counted; a failure before any account was
        // admitted (a malformed exchange) counts against the address.
        if (this.#admitted !== undefined) host.loginGuard.failed(this.#admitted);
        else if (!this.#refused) host.loginGuard.failedWithoutAccount(stream.remoteAddress);
        this.#admitted = undefined;
        this.#refused = false;
        return this.#failure(step.condition, step.text);
      }
      case "success": {
        this.#mechanism = undefined;
        this.#settle(true);
        host.counters.logins++;
        stream.log.info({ event: "login", address: stream.remoteAddress, user: step.jid }, "login succeeded");
        const data = step.data === undefined ? "" : step.data.toString("base64");
        const request = this.#sasl2;
        if (request === undefined) {
          stream.send(`<success xmlns="${NS_SASL}">${data}</success>`);
          // RFC 6120 §6.4.6: the stream restarts after success.
          stream.authenticated(step.jid);
          return;
        }
        this.#sasl2 = undefined;
        // XEP-0388 §2.6.1: no restart; <success/> names the identity (a full JID once bound)
        // and is followed by the authenticated stream's features.
        stream.authenticated(step.jid, false);
        const additional = data === "" ? "" : `<additional-data>${data}</additional-data>`;
        return completeSasl2(
          stream,
          step.jid,
          request,
          (identifier, inner) =>
            `<success xmlns="${NS_SASL2}">${additional}<authorization-identifier>${escapeXML(identifier)}</authorization-identifier>${inner}</success>`,
        );
      }
    }
  }

  #failure(condition: string, text?: string): void {
    // A failure ends the exchange (RFC 6120 §6.4.5, XEP-0388 §2.6.2): no response continues it.
    this.#mechanism = undefined;
    const textXml = text === undefined ? "" : `<text xml:lang="en">${escapeXML(text)}</text>`;
    // XEP-0388 §2.6.2: the RFC 6120 §6.5 condition, in its own namespace, inside SASL2's <failure/>.
    this.#sasl2 = undefined;
    this.#stream.send(
      this.#answerSasl2
        ? `<failure xmlns="${NS_SASL2}"><${condition} xmlns="${NS_SASL}"/>${textXml}</failure>`
        : `<failure xmlns="${NS_SASL}"><${condition}/>${textXml}</failure>`,
    );
  }
}

/** Decodes a SASL payload; "=" is an empty response (RFC 6120 §6.4.2). */
function decodeBase64(text: string): Buffer | null {
  const trimmed = text.trim();
  if (trimmed === "=") return Buffer.alloc(0);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(trimmed) || trimmed.length % 4 !== 0) return null;
  return Buffer.from(trimmed, "base64");
}
