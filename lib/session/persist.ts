/**
 * The saved-session file: "LLMEMSS1" (8 bytes) | u32 LE header length | UTF-8 JSON header |
 * the sequence state (lib/state.ts format, which names the model and lists the cached tokens).
 * @internal
 */
import { LlamemError } from "../errors.js";
import { decodeContainer, encodeContainer, readWholeFile } from "../container.js";
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
  const body = encodeContainer(MAGIC, { version: VERSION, ...header }, state);
  return writeFileAtomic(path, (write) => write(body), { fsync: true });
}

/** Reads a saved session; ERR_FILE_NOT_FOUND, ERR_IO, or ERR_STATE_MISMATCH when it is not one. */
export async function readSession(path: string): Promise<{ header: SavedHeader; state: Buffer }> {
  const buf = await readWholeFile(path);
  const { header: raw, payload } = decodeContainer(buf, MAGIC, VERSION, `a saved llamem session (${path})`);
  const header = raw as unknown as SavedHeader;
  if (typeof header.model !== "string" || !Array.isArray(header.history)) {
    throw new LlamemError("ERR_STATE_MISMATCH", `not a saved llamem session (${path}): malformed header`);
  }
  return { header, state: payload };
}
