/**
 * Reading a password for `starling user add|passwd` when `--password` is not given: prompted
 * twice without echo on a terminal, or one line read from stdin when a script pipes it in.
 */
import { XmppServerError } from "../errors.ts";
import { usageError } from "./args.ts";

/** A password longer than this is refused rather than buffered without end. */
const MAX_PASSWORD_BYTES = 4096;

/**
 * Returns the password from stdin: two silent prompts on a TTY (they must match), otherwise
 * the first line of stdin. An empty password is a usage error.
 */
export async function readPassword(stdin: NodeJS.ReadStream = process.stdin): Promise<string> {
  let password: string;
  if (stdin.isTTY) {
    password = await promptHidden(stdin, "Password: ");
    const again = await promptHidden(stdin, "Repeat password: ");
    if (again !== password) throw usageError("the passwords do not match");
  } else {
    password = await readLine(stdin);
  }
  if (password === "") throw usageError("the password must not be empty");
  return password;
}

/** Reads the first line of a non-TTY stdin (without its line ending). */
async function readLine(stdin: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stdin) {
    const buffer = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    const newline = buffer.indexOf(0x0a);
    chunks.push(newline === -1 ? buffer : buffer.subarray(0, newline));
    size += buffer.length;
    if (newline !== -1) break;
    if (size > MAX_PASSWORD_BYTES) break;
  }
  const line = Buffer.concat(chunks).toString("utf8").replace(/\r$/, "");
  if (Buffer.byteLength(line) > MAX_PASSWORD_BYTES) {
    throw usageError(`the password read from stdin is longer than ${MAX_PASSWORD_BYTES} bytes`);
  }
  if (size === 0) throw usageError("no password: pass --password or write it on stdin");
  return line;
}

/** Prompts on stderr and reads one line from a TTY in raw mode, echoing nothing. */
function promptHidden(stdin: NodeJS.ReadStream, prompt: string): Promise<string> {
  // Echo goes off before the prompt appears, so nothing typed after seeing it is echoed.
  stdin.setRawMode(true);
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let value = "";
    const finish = (error?: Error) => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
      if (error === undefined) resolve(value);
      else reject(error);
    };
    const onData = (data: string) => {
      for (const char of data) {
        switch (char) {
          case "\r":
          case "\n":
            finish();
            return;
          case "\u0003": // Ctrl-C: raw mode swallows SIGINT, so cancel here.
          case "\u0004": // Ctrl-D
            finish(new XmppServerError("XSRV_CLI_USAGE", "cancelled"));
            return;
          case "\u007f":
          case "\b":
            value = [...value].slice(0, -1).join("");
            break;
          default:
            if (char >= " ") value += char;
        }
        if (Buffer.byteLength(value) > MAX_PASSWORD_BYTES) {
          finish(usageError(`the password is longer than ${MAX_PASSWORD_BYTES} bytes`));
          return;
        }
      }
    };
    stdin.setEncoding("utf8");
    stdin.resume();
    stdin.on("data", onData);
  });
}
