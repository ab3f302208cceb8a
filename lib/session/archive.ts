/**
 * Where a session's evicted turns go: an in-memory list of at most `maxTurns` (the oldest
 * forgotten first, so a long chat's heap stays bounded), or a JSONL file (one
 * {@link ArchivedTurn} a line) that the session appends to and reads back, every turn kept.
 * @internal
 */
import { appendFile, readFile } from "node:fs/promises";
import { LlamemError } from "../errors.js";
import { DEFAULTS } from "../options.js";
import { MEMORY_EVENT_KINDS, copyMessage, isSessionMessage, type ArchivedTurn, type MemoryEventKind, type Turn } from "./memory.js";
import { yieldToLoop } from "./render.js";

/** Turns the in-memory archive takes between turns of the event loop. */
const ARCHIVE_SLICE = 1024;

/** Why `x` is not an {@link ArchivedTurn}, or undefined when it is one. */
export function archivedTurnProblem(x: unknown): string | undefined {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return "not an object";
  const o = x as Record<string, unknown>;
  const messages = o["messages"];
  if (!Array.isArray(messages)) return "messages is not an array";
  for (let i = 0; i < messages.length; i++) {
    if (!isSessionMessage(messages[i])) return `messages[${i}] is not a message (a string role and content, a finite timestamp)`;
  }
  const at = o["archivedAt"];
  if (typeof at !== "number" || !Number.isFinite(at)) return "archivedAt is not a finite number";
  if (!MEMORY_EVENT_KINDS.includes(o["reason"] as MemoryEventKind)) return `reason is not one of ${MEMORY_EVENT_KINDS.join(", ")}`;
  return undefined;
}

/** A plain copy of a checked archived turn. */
function copyArchived(a: ArchivedTurn): ArchivedTurn {
  return { messages: a.messages.map(copyMessage), archivedAt: a.archivedAt, reason: a.reason };
}

/** Where evicted turns are kept: in memory (at most `maxTurns`), or appended to a JSONL file. */
export class Archive {
  readonly #memory: ArchivedTurn[] = [];

  constructor(
    readonly path: string | undefined,
    readonly maxTurns: number = DEFAULTS.recall.maxTurns,
  ) {}

  /** Archives `turns`; returns how many older in-memory entries were forgotten to stay within `maxTurns` (0 for a file). */
  async add(turns: readonly Turn[], reason: MemoryEventKind, at: number): Promise<number> {
    if (this.path === undefined) {
      for (let i = 0; i < turns.length; i++) {
        this.#memory.push({ messages: turns[i] as Turn, archivedAt: at, reason });
        // Thousands of turns at once (a long history's first prompt) take milliseconds.
        if (i % ARCHIVE_SLICE === ARCHIVE_SLICE - 1) await yieldToLoop();
      }
      return this.#trim();
    }
    let text = "";
    for (const messages of turns) text += `${JSON.stringify({ messages, archivedAt: at, reason })}\n`;
    try {
      await appendFile(this.path, text);
    } catch (err) {
      throw new LlamemError("ERR_IO", `cannot append to the archive ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    return 0;
  }

  /** Forgets the oldest in-memory entries past `maxTurns`; returns how many. */
  #trim(): number {
    const over = this.#memory.length - this.maxTurns;
    if (over <= 0) return 0;
    this.#memory.splice(0, over);
    return over;
  }

  /** The in-memory entries (empty when archiving to a file). */
  get entries(): readonly ArchivedTurn[] {
    return this.#memory;
  }

  /** Restores in-memory entries from a saved session (already checked), the newest `maxTurns` of them. */
  restore(entries: readonly ArchivedTurn[]): void {
    for (const e of entries.slice(-this.maxTurns)) this.#memory.push(copyArchived(e));
    this.#trim();
  }

  /**
   * Every archived turn, oldest first. ERR_ARCHIVE_INVALID, naming the file and the line, for a
   * line of the file that is not an archived turn; ERR_IO if it cannot be read.
   */
  async read(): Promise<ArchivedTurn[]> {
    if (this.path === undefined) return this.#memory.slice();
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw new LlamemError("ERR_IO", `cannot read the archive ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    const out: ArchivedTurn[] = [];
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i] as string;
      if (line.trim().length === 0) continue;
      const bad = (why: string) => new LlamemError("ERR_ARCHIVE_INVALID", `${this.path} line ${i + 1}: not an archived turn (${why})`);
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (err) {
        throw bad(`invalid JSON: ${(err as Error).message}`);
      }
      const problem = archivedTurnProblem(value);
      if (problem !== undefined) throw bad(problem);
      out.push(copyArchived(value as ArchivedTurn));
    }
    return out;
  }
}
