/**
 * The saved-session file: "LLMEMSS1" (8 bytes) | u32 LE header length | UTF-8 JSON header |
 * the sequence state (lib/state.ts format, which names the model and lists the cached tokens).
 * @internal
 */
import { readFile } from "node:fs/promises";
import { LlamemError } from "../errors.js";
import { writeFileAtomic } from "../gguf-writer.js";
import type { ArchivedTurn, SessionMessage } from "./memory.js";

const MAGIC = Buffer.from("LLMEMSS1", "latin1");
const VERSION = 1;

/** Which message a saved layout entry names: a history index, the system prompt or the summary. */
export type SavedRef = number | "system" | "summary";

/** The JSON header of a saved session. */
export interface SavedHeader {
  version: number;
  /** The model fingerprint, checked before anything is restored. */
  model: string;
  system: string | null;
  summary: string | null;
  history: SessionMessage[];
  archive: { path: string | null; entries: ArchivedTurn[] };
  /** Token spans of the cached messages, so the first prompt after loading can still cut turns out in place. */
  layout: { ref: SavedRef; start: number; end: number; prompt: boolean }[] | null;
  counters: { summaries: number; turnsEvicted: number; evaluatedTokens: number; generatedTokens: number };
}

/** Writes a saved session atomically (fsynced before it replaces `path`). */
export async function writeSession(path: string, header: Omit<SavedHeader, "version">, state: Buffer): Promise<number> {
  const json = Buffer.from(JSON.stringify({ version: VERSION, ...header }), "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length);
  return writeFileAtomic(
    path,
    async (write) => {
      await write(MAGIC);
      await write(len);
      await write(json);
      await write(state);
    },
    { fsync: true },
  );
}

/** Reads a saved session; ERR_FILE_NOT_FOUND, ERR_IO, or ERR_STATE_MISMATCH when it is not one. */
export async function readSession(path: string): Promise<{ header: SavedHeader; state: Buffer }> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new LlamemError(code === "ENOENT" ? "ERR_FILE_NOT_FOUND" : "ERR_IO", `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  const bad = (why: string) => new LlamemError("ERR_STATE_MISMATCH", `${path} is not a saved llamem session: ${why}`);
  if (buf.length < 12 || !buf.subarray(0, 8).equals(MAGIC)) throw bad("wrong magic");
  const len = buf.readUInt32LE(8);
  if (12 + len > buf.length) throw bad("truncated header");
  let header: SavedHeader;
  try {
    header = JSON.parse(buf.subarray(12, 12 + len).toString("utf8")) as SavedHeader;
  } catch {
    throw bad("unreadable header");
  }
  if (header.version !== VERSION) throw bad(`version ${String(header.version)} (this llamem reads ${VERSION})`);
  if (typeof header.model !== "string" || !Array.isArray(header.history)) throw bad("malformed header");
  return { header, state: buf.subarray(12 + len) };
}
