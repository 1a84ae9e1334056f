/**
 * XEP-0198 resumption (§5): `<resume previd h/>` instead of binding takes over a detached
 * session, wherever in the cluster it (or its replica) is: StreamHost.resume finds it. When it
 * cannot be resumed the client gets `<failed/>`, with `h` when the server knows how many of the
 * client's stanzas it handled (XEP-0198 1.6), so that it re-sends only the others. The same
 * `<resume/>` may come inside XEP-0388's `<authenticate/>` (sasl2-inline.ts).
 */
import type { Element } from "@xmpp/xml";
import { handledCountTooHighXml, smFailedXml } from "../stanza.ts";
import type { ResumedSession } from "../stream-host.ts";
import type { NegotiatingStream } from "./negotiating-stream.ts";

const UNEXPECTED = smFailedXml("unexpected-request");

/** `<enable/>` before binding: XEP-0198 §3 allows it only after. */
export function onEnableBeforeBind(stream: NegotiatingStream): void {
  stream.send(UNEXPECTED);
}

/**
 * What a `<resume/>` came to: the session, attached to the stream (the caller answers with
 * `resumeOn`), or the `<failed/>` to send; nothing when the stream closed meanwhile (the session
 * stays resumable).
 */
export type ResumeAttempt =
  | { session: ResumedSession; previd: string }
  /** `tooHigh`: the client's `h` was above what the session sent (XEP-0198 §6). */
  | { failed: string; tooHigh?: { h: number; sent: number } }
  | undefined;

/** Takes over the session `el` names, for this stream's account. */
export async function attemptResume(stream: NegotiatingStream, el: Element): Promise<ResumeAttempt> {
  // One bind or resume per stream (XEP-0198 §5: resume instead of binding).
  if (stream.binding) return { failed: UNEXPECTED };
  stream.binding = true;
  const previd = el.attrs.previd ?? "";
  const h = Number(el.attrs.h);
  const outcome =
    // XEP-0198 §5: h is an unsigned 32-bit count; anything else names no state of any session.
    Number.isInteger(h) && h >= 0 && h < 2 ** 32
      ? await stream.host.resume(stream.jid!, previd, h, stream)
      : ({ failed: "unknown" } as const);
  if ("failed" in outcome) {
    stream.binding = false;
    if (outcome.failed === "too-high" || outcome.failed === "stale") {
      // The session ended (its stanzas stored offline); the client binds afresh.
      stream.log.info(
        { user: stream.jid, h: outcome.h, sent: outcome.sent, handled: outcome.handled },
        outcome.failed === "too-high"
          ? "resumption acknowledging more stanzas than were sent; the session ended"
          : "resumption below an earlier acknowledgement; the session ended",
      );
      const failed = smFailedXml("undefined-condition", outcome.handled);
      return outcome.failed === "too-high"
        ? { failed, tooHigh: { h: outcome.h, sent: outcome.sent } }
        : { failed };
    }
    // XEP-0198 §5: an unknown or expired session is <item-not-found/>.
    let handled: number | undefined;
    if (outcome.failed === "expired") {
      handled = outcome.handled;
      stream.log.info(
        { user: stream.jid, handled: outcome.handled },
        "resumption after its window; told the client what was handled",
      );
    } else {
      // Its holder and every replica died with it (or the id was never this user's): nobody
      // alive knows how many of the client's stanzas were handled, so `h` is left out.
      stream.log.info({ user: stream.jid }, "resumption of a session no live node holds; failed without h");
    }
    return { failed: smFailedXml("item-not-found", handled) };
  }
  const { session } = outcome;
  if (stream.closing || stream.closed) {
    // The new stream ended while the session moved: keep it resumable rather than lose it.
    session.onLinkClosed(false);
    return undefined;
  }
  stream.attach(session);
  return { session, previd };
}

/** Answers `<resume/>`. */
export async function onResume(stream: NegotiatingStream, el: Element): Promise<void> {
  const attempt = await attemptResume(stream, el);
  if (attempt === undefined) return;
  if ("failed" in attempt) {
    // XEP-0198 §6: an h above what was sent is a stream error, with the counts.
    if (attempt.tooHigh !== undefined) {
      const { h, sent } = attempt.tooHigh;
      return stream.closeWithError(
        "undefined-condition",
        "acknowledged more stanzas than were sent",
        handledCountTooHighXml(h, sent),
      );
    }
    return stream.send(attempt.failed);
  }
  attempt.session.resumeOn(attempt.previd);
}
