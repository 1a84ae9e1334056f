/** STARTTLS (RFC 6120 §5): `<starttls/>` before authentication upgrades the connection to TLS. */
import { NS_TLS } from "../ns.ts";
import type { NegotiatingStream } from "./negotiating-stream.ts";

/** The feature offered while the stream is not encrypted (`<required/>` when the config says so). */
export function startTlsFeature(required: boolean): string {
  return `<starttls xmlns="${NS_TLS}">${required ? "<required/>" : ""}</starttls>`;
}

/** Answers `<starttls/>`: `<proceed/>`, then the TLS handshake and a new stream (§5.4.3.3). */
export function onStartTls(stream: NegotiatingStream): void {
  if (stream.secure) return stream.closeWithError("policy-violation", "TLS is already established");
  stream.send(`<proceed xmlns="${NS_TLS}"/>`);
  // <proceed/> must leave in the clear, before the handshake starts on the same socket.
  stream.flush();
  stream.startTls();
}
