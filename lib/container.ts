/**
 * The small file format llamem's saved states and sessions share: an 8-byte magic, a u32 LE
 * header length, a UTF-8 JSON header with a version, then a binary payload. Only the bytes:
 * reading and writing them on disk is `files.ts`'s.
 * @internal
 */
import { LlamemError } from "./errors.js";

/** Builds a container buffer. */
export function encodeContainer(magic: Buffer, header: { version: number }, payload: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length);
  return Buffer.concat([magic, len, json, payload]);
}

/**
 * Splits a container into its JSON header (version checked) and payload; anything else is
 * ERR_STATE_MISMATCH naming `what` it was expected to be.
 */
export function decodeContainer(buf: Buffer, magic: Buffer, version: number, what: string): { header: Record<string, unknown>; payload: Buffer } {
  const bad = (why: string) => new LlamemError("ERR_STATE_MISMATCH", `not ${what}: ${why}`);
  if (!Buffer.isBuffer(buf) || buf.length < 12 || !buf.subarray(0, 8).equals(magic)) throw bad("wrong magic");
  const len = buf.readUInt32LE(8);
  if (12 + len > buf.length) throw bad("truncated header");
  let header: unknown;
  try {
    header = JSON.parse(buf.subarray(12, 12 + len).toString("utf8"));
  } catch {
    throw bad("unreadable header");
  }
  if (typeof header !== "object" || header === null) throw bad("malformed header");
  const h = header as Record<string, unknown>;
  if (h["version"] !== version) throw bad(`version ${String(h["version"])} (this llamem reads ${version})`);
  return { header: h, payload: buf.subarray(12 + len) };
}

