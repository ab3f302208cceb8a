/**
 * The saved-session file: "LLMEMSS1" (8 bytes) | u32 LE header length | UTF-8 JSON header |
 * the sequence state (lib/state.ts format, which names the model and lists the cached tokens).
 * A header is checked field by field when read: a damaged or hand-made file is
 * ERR_STATE_MISMATCH, never a TypeError later.
 * @internal
 */
import { LlamemError } from "../errors.js";
import { decodeContainer, encodeContainer } from "../container.js";
import { readWholeFile, writeFileAtomic } from "../files.js";
import { archivedTurnProblem } from "./archive.js";
import { isSessionMessage, type ArchivedTurn, type SessionMessage } from "./memory.js";

const MAGIC = Buffer.from("LLMEMSS1", "latin1");
const VERSION = 1;

/** Which message a saved layout entry names: a history index, the system prompt or the summary. */
export type SavedRef = number | "system" | "summary";

/** The counters of a session, saved with it. */
export interface SavedCounters {
  summaries: number;
  turnsEvicted: number;
  evaluatedTokens: number;
  generatedTokens: number;
}

/** The JSON header of a saved session. */
export interface SavedHeader {
  version: number;
  /** The model fingerprint, checked before anything is restored. */
  model: string;
  system: string | null;
  summary: string | null;
  history: SessionMessage[];
  /**
   * The in-memory archive's entries, or the path of the archive file the session appended to.
   * A loaded session writes to that path only if its caller asks (see LoadSessionOptions).
   */
  archive: { path: string | null; entries: ArchivedTurn[] };
  /** Token spans of the cached messages, so the first prompt after loading can still cut turns out in place. */
  layout: { ref: SavedRef; start: number; end: number; prompt: boolean }[] | null;
  counters: SavedCounters;
}

const COUNTERS: readonly (keyof SavedCounters)[] = ["summaries", "turnsEvicted", "evaluatedTokens", "generatedTokens"];

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);
const isCount = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
const stringOrNull = (x: unknown) => x === null || typeof x === "string";

/** Why `h` is not a saved-session header, or undefined when it is one. */
function headerProblem(h: Record<string, unknown>): string | undefined {
  if (typeof h["model"] !== "string") return "model is not a string";
  if (!stringOrNull(h["system"])) return "system is not a string or null";
  if (!stringOrNull(h["summary"])) return "summary is not a string or null";
  const history = h["history"];
  if (!Array.isArray(history)) return "history is not an array";
  for (let i = 0; i < history.length; i++) {
    if (!isSessionMessage(history[i])) return `history[${i}] is not a message (a string role and content, a finite timestamp)`;
  }
  const archive = h["archive"];
  if (!isObject(archive)) return "archive is not an object";
  if (!stringOrNull(archive["path"]) || archive["path"] === "") return "archive.path is not a path or null";
  const entries = archive["entries"];
  if (!Array.isArray(entries)) return "archive.entries is not an array";
  for (let i = 0; i < entries.length; i++) {
    const why = archivedTurnProblem(entries[i]);
    if (why !== undefined) return `archive.entries[${i}]: ${why}`;
  }
  const layout = h["layout"];
  if (layout !== null) {
    if (!Array.isArray(layout)) return "layout is not an array or null";
    for (let i = 0; i < layout.length; i++) {
      const it: unknown = layout[i];
      if (!isObject(it)) return `layout[${i}] is not an object`;
      const ref = it["ref"];
      if (ref !== "system" && ref !== "summary" && !(isCount(ref) && ref < history.length)) return `layout[${i}].ref names no message`;
      if (!isCount(it["start"]) || !isCount(it["end"]) || it["end"] < it["start"]) return `layout[${i}] is not a span of cells`;
      if (typeof it["prompt"] !== "boolean") return `layout[${i}].prompt is not a boolean`;
    }
  }
  const counters = h["counters"];
  if (!isObject(counters)) return "counters is not an object";
  for (const k of COUNTERS) if (!isCount(counters[k])) return `counters.${k} is not a count`;
  return undefined;
}

/** Writes a saved session atomically (fsynced before it replaces `path`). */
export async function writeSession(path: string, header: Omit<SavedHeader, "version">, state: Buffer): Promise<number> {
  const body = encodeContainer(MAGIC, { version: VERSION, ...header }, state);
  return writeFileAtomic(path, (write) => write(body), { fsync: true });
}

/** Reads a saved session; ERR_FILE_NOT_FOUND, ERR_IO, or ERR_STATE_MISMATCH when it is not one. */
export async function readSession(path: string): Promise<{ header: SavedHeader; state: Buffer }> {
  const buf = await readWholeFile(path);
  const { header, payload } = decodeContainer(buf, MAGIC, VERSION, `a saved llamem session (${path})`);
  const problem = headerProblem(header);
  if (problem !== undefined) throw new LlamemError("ERR_STATE_MISMATCH", `not a saved llamem session (${path}): malformed header: ${problem}`);
  return { header: header as unknown as SavedHeader, state: payload };
}
