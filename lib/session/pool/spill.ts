/**
 * Where a pool keeps the KV states of idle sessions it moved out of their sequences: in RAM up
 * to a byte budget, the least recently used beyond it in files. Each file is written under a
 * name of its own, so a state is never read before it is whole nor after it is deleted.
 */
import { mkdtemp, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LlamemError, invalidArgument } from "../../errors.js";

/** A spilled state: in RAM, or in a file. */
type Spilled = { readonly memory: Buffer; readonly tokens: number } | { readonly path: string; readonly bytes: number; readonly tokens: number };

/** What a spilled state weighs and where it is. */
export interface SpilledInfo {
  tokens: number;
  bytes: number;
  where: "memory" | "disk";
}

/** What the store knows of its owners: an id for file names and the recency that orders spills to disk. */
export interface SpillOwner {
  readonly id: number;
  readonly lastUsed: number;
}

function bytesOf(s: Spilled): number {
  return "memory" in s ? s.memory.length : s.bytes;
}

export class SpillStore {
  readonly #states = new Map<SpillOwner, Spilled>();
  readonly #memoryBytes: number;
  readonly #dir: string | undefined;
  #tempDir: Promise<string> | undefined;
  #files = 0;

  /** Keeps states in RAM up to `memoryBytes` (default 1 GiB), the rest in files in `dir` (default: a new temp directory). */
  constructor(options: { memoryBytes?: number; dir?: string } | undefined) {
    if (options !== undefined && (options === null || typeof options !== "object")) invalidArgument("spill must be an object");
    const memoryBytes = options?.memoryBytes ?? 1024 ** 3;
    if (typeof memoryBytes !== "number" || !(memoryBytes >= 0)) invalidArgument("spill.memoryBytes must be a non-negative number");
    if (options?.dir !== undefined && typeof options.dir !== "string") invalidArgument("spill.dir must be a string");
    this.#memoryBytes = memoryBytes;
    this.#dir = options?.dir;
  }

  has(owner: SpillOwner): boolean {
    return this.#states.has(owner);
  }

  info(owner: SpillOwner): SpilledInfo | undefined {
    const s = this.#states.get(owner);
    return s && { tokens: s.tokens, bytes: bytesOf(s), where: "memory" in s ? "memory" : "disk" };
  }

  /** Every state's place and weight. */
  all(): SpilledInfo[] {
    return [...this.#states.keys()].map((o) => this.info(o) as SpilledInfo);
  }

  /** Keeps `state` for `owner` (replacing what it had), then moves the least recently used to disk past the budget. */
  async put(owner: SpillOwner, state: Buffer, tokens: number): Promise<void> {
    await this.drop(owner);
    this.#states.set(owner, { memory: state, tokens });
    await this.#enforceBudget();
  }

  /** The state of `owner`, left in the store. */
  async peek(owner: SpillOwner): Promise<Buffer | undefined> {
    const s = this.#states.get(owner);
    if (!s) return undefined;
    return "memory" in s ? s.memory : this.#read(s.path);
  }

  /** Removes and returns the state of `owner`. */
  async take(owner: SpillOwner): Promise<Buffer | undefined> {
    const s = this.#states.get(owner);
    if (!s) return undefined;
    this.#states.delete(owner);
    if ("memory" in s) return s.memory;
    try {
      return await this.#read(s.path);
    } finally {
      await unlink(s.path).catch(() => undefined);
    }
  }

  /** Forgets the state of `owner`, deleting its file. */
  async drop(owner: SpillOwner): Promise<void> {
    const s = this.#states.get(owner);
    this.#states.delete(owner);
    if (s && "path" in s) await unlink(s.path).catch(() => undefined);
  }

  /** Removes every state and the temp directory the store made. */
  async dispose(): Promise<void> {
    for (const owner of [...this.#states.keys()]) await this.drop(owner);
    if (this.#tempDir) await rm(await this.#tempDir, { recursive: true, force: true });
  }

  async #read(path: string): Promise<Buffer> {
    try {
      return await readFile(path);
    } catch (err) {
      throw new LlamemError("ERR_IO", `cannot read a spilled session from ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Writes the least recently used in-RAM states to disk until the rest fit the budget. */
  async #enforceBudget(): Promise<void> {
    const inMemory = [...this.#states].filter(([, s]) => "memory" in s).sort(([a], [b]) => a.lastUsed - b.lastUsed);
    let total = inMemory.reduce((n, [, s]) => n + bytesOf(s), 0);
    for (const [owner, spilled] of inMemory) {
      if (total <= this.#memoryBytes) break;
      if (!("memory" in spilled)) continue;
      const path = join(await this.#spillDir(), `session-${owner.id}-${this.#files++}.state`);
      try {
        await writeFile(path, spilled.memory);
      } catch (err) {
        await unlink(path).catch(() => undefined);
        throw new LlamemError("ERR_IO", `cannot spill a session to ${path}: ${(err as Error).message}`, { cause: err });
      }
      total -= spilled.memory.length;
      // The state may have been taken or replaced while the file was written: then the file is not needed.
      if (this.#states.get(owner) === spilled) this.#states.set(owner, { path, bytes: spilled.memory.length, tokens: spilled.tokens });
      else await unlink(path).catch(() => undefined);
    }
  }

  #spillDir(): Promise<string> {
    if (this.#dir !== undefined) return Promise.resolve(this.#dir);
    this.#tempDir ??= mkdtemp(join(tmpdir(), "llamem-spill-"));
    return this.#tempDir;
  }
}
