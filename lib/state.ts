/**
 * The saved-state format of a sequence: a small header that names the model and lists the
 * tokens, then llama.cpp's own sequence state. The header lets a restore into another model
 * fail with ERR_STATE_MISMATCH instead of loading garbage cells.
 *
 * Layout: "LLMEMST1" (8 bytes) | u32 LE header length | UTF-8 JSON header | llama.cpp state.
 * The header holds a sha256 of the state bytes (a flipped bit in the cache is refused, not
 * restored) and the context layout the cells were saved from.
 */
import { createHash } from "node:crypto";
import { LlamemError } from "./errors.js";
import { decodeContainer, encodeContainer } from "./container.js";

const MAGIC = Buffer.from("LLMEMST1", "latin1");
const VERSION = 2;

interface Header {
  version: number;
  model: string;
  /** Sequences, KV types and pooling of the context: llama.cpp's state is only valid in the same layout. */
  layout: string;
  sha256: string;
  tokens: number[];
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

/** Builds a state buffer. */
export function encodeState(fingerprint: string, layout: string, tokens: readonly number[], data: Buffer): Buffer {
  const h: Header = { version: VERSION, model: fingerprint, layout, sha256: sha256(data), tokens: [...tokens] };
  return encodeContainer(MAGIC, h, data);
}

/** Parses a state buffer; ERR_STATE_MISMATCH when it is not one. */
export function decodeState(buf: Buffer): { fingerprint: string; layout: string; tokens: number[]; data: Buffer } {
  const bad = (why: string) => new LlamemError("ERR_STATE_MISMATCH", `not a llamem sequence state: ${why}`);
  const { header: raw, payload: data } = decodeContainer(buf, MAGIC, VERSION, "a llamem sequence state");
  const header = raw as unknown as Header;
  if (
    typeof header.model !== "string" || typeof header.layout !== "string" || typeof header.sha256 !== "string" ||
    !Array.isArray(header.tokens) || !header.tokens.every((t) => Number.isInteger(t) && t >= 0)
  ) {
    throw bad("malformed header");
  }
  if (sha256(data) !== header.sha256) throw bad("the cache data is damaged (checksum mismatch)");
  return { fingerprint: header.model, layout: header.layout, tokens: header.tokens, data };
}
