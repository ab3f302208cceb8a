/**
 * The saved-state format of a sequence: a small header that names the model and lists the
 * tokens, then llama.cpp's own sequence state. The header lets a restore into another model
 * fail with ERR_STATE_MISMATCH instead of loading garbage cells.
 *
 * Layout: "LLMEMST1" (8 bytes) | u32 LE header length | UTF-8 JSON header | llama.cpp state.
 */
import { LlamemError } from "./errors.js";

const MAGIC = Buffer.from("LLMEMST1", "latin1");
const VERSION = 1;

interface Header {
  version: number;
  model: string;
  tokens: number[];
}

/** Builds a state buffer. */
export function encodeState(fingerprint: string, tokens: readonly number[], data: Buffer): Buffer {
  const header = Buffer.from(JSON.stringify({ version: VERSION, model: fingerprint, tokens: [...tokens] } satisfies Header), "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  return Buffer.concat([MAGIC, len, header, data]);
}

/** Parses a state buffer; ERR_STATE_MISMATCH when it is not one. */
export function decodeState(buf: Buffer): { fingerprint: string; tokens: number[]; data: Buffer } {
  const bad = (why: string) => new LlamemError("ERR_STATE_MISMATCH", `not a llamem sequence state: ${why}`);
  if (!Buffer.isBuffer(buf) || buf.length < 12 || !buf.subarray(0, 8).equals(MAGIC)) throw bad("wrong magic");
  const len = buf.readUInt32LE(8);
  if (12 + len > buf.length) throw bad("truncated header");
  let header: Header;
  try {
    header = JSON.parse(buf.subarray(12, 12 + len).toString("utf8")) as Header;
  } catch {
    throw bad("unreadable header");
  }
  if (header.version !== VERSION) throw bad(`version ${String(header.version)} (this llamem reads ${VERSION})`);
  if (typeof header.model !== "string" || !Array.isArray(header.tokens) || !header.tokens.every((t) => Number.isInteger(t) && t >= 0)) {
    throw bad("malformed header");
  }
  return { fingerprint: header.model, tokens: header.tokens, data: buf.subarray(12 + len) };
}
