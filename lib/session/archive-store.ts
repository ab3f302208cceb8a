/**
 * A persistent store for recall: archived turns and their vectors in an embedded database
 * (SQLite through better-sqlite3), one namespace per session, several sessions in one file. A
 * write is one transaction in SQLite's write-ahead log: a process killed mid-write loses at most
 * that write and never damages what was committed. Each namespace keeps at most `maxTurns` turns
 * and `maxBytes` bytes (the oldest go first) for at most `maxAge` ms. Searches are exact, over the
 * namespace's vectors held in memory.
 *
 * Why SQLite (measured on this project's machines, 2026-11, against LMDB through the `lmdb`
 * package): LMDB installs without a compiler (prebuilt per-platform packages, 21 MB against
 * 30 MB) but trusts its file, and opening a damaged one killed the process with SIGSEGV; SQLite
 * reports a damaged or foreign file as an error ("file is not a database"). better-sqlite3
 * downloads a prebuilt binary at install, or compiles SQLite (70 s here, offline); it is loaded
 * only when a store is opened, so the rest of llamem works without it.
 */
import { LlamemError, invalidArgument } from "../errors.js";
import { DEFAULTS } from "../options.js";
import type { Turn } from "./memory.js";
import { copyMessage, isSessionMessage } from "./memory.js";
import { MemoryRecallStore, RecallIndex, resolveRecall, recallEntryBytes, type RecallEmbedder, type RecallEntry, type RecallStore, type RecalledTurn } from "./recall.js";
import { Archive } from "./archive.js";
import type { Database } from "better-sqlite3";

/** Options of {@link openArchiveStore}. */
export interface ArchiveStoreOptions {
  /** Most turns a namespace keeps; the oldest are deleted first (default 10,000). */
  maxTurns?: number;
  /**
   * Most bytes of turns a namespace keeps, counted as {@link recallEntryBytes} counts them (each
   * turn's text in UTF-8 plus its vector, not SQLite's own overhead or the messages' JSON, so the
   * file is larger); the oldest are deleted first (default: no byte limit).
   */
  maxBytes?: number;
  /** ms after which a turn is deleted (default: never). */
  maxAge?: number;
}

/** The schema's version, in `PRAGMA user_version`. */
const SCHEMA_VERSION = 1;

/** A SQLite failure as llamem's error: a damaged or foreign file, or I/O (a full disk, a lock). */
function storeError(path: string, what: string, err: unknown): LlamemError {
  const code = (err as { code?: string }).code ?? "";
  if (code === "SQLITE_NOTADB" || code === "SQLITE_CORRUPT" || code.startsWith("SQLITE_CORRUPT")) {
    return new LlamemError("ERR_ARCHIVE_INVALID", `${path} is not an archive store, or is damaged (${(err as Error).message})`, { cause: err });
  }
  return new LlamemError("ERR_IO", `${what} ${path}: ${(err as Error).message}`, { cause: err });
}

/**
 * Opens (or creates) the archive store at `path`. ERR_ARCHIVE_INVALID for a file that is not
 * one (damaged, or another kind of file); ERR_IO when it cannot be opened (a missing folder, a
 * lock held past the busy timeout); ERR_NATIVE_LOAD when better-sqlite3 is not installed.
 */
export async function openArchiveStore(path: string, options: ArchiveStoreOptions = {}): Promise<ArchiveStore> {
  if (typeof path !== "string" || path.length === 0) invalidArgument("openArchiveStore(path): path must be a file path");
  const maxTurns = options.maxTurns ?? DEFAULTS.recall.maxTurns;
  if (!Number.isInteger(maxTurns) || maxTurns < 1) invalidArgument("maxTurns must be a positive integer");
  if (options.maxBytes !== undefined && !(Number.isInteger(options.maxBytes) && options.maxBytes >= 1)) invalidArgument("maxBytes must be a positive integer");
  if (options.maxAge !== undefined && !(Number.isFinite(options.maxAge) && options.maxAge > 0)) invalidArgument("maxAge must be a positive number of ms");
  // Loaded on first use: apps that never persist recall do not need the database's binary.
  let Sqlite: typeof import("better-sqlite3");
  try {
    Sqlite = (await import("better-sqlite3")).default;
  } catch (err) {
    throw new LlamemError("ERR_NATIVE_LOAD", `the archive store needs better-sqlite3, which could not be loaded: ${(err as Error).message}`, { cause: err });
  }
  let db: Database | undefined;
  try {
    db = new Sqlite(path, { fileMustExist: false, timeout: 5000 });
    // Committed transactions survive a killed process (the log is in the OS's hands).
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    const version = db.pragma("user_version", { simple: true }) as number;
    if (version > SCHEMA_VERSION) throw new LlamemError("ERR_ARCHIVE_INVALID", `${path} was written by a newer llamem (schema ${version})`);
    db.exec(`CREATE TABLE IF NOT EXISTS turns (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      ns TEXT NOT NULL,
      archived_at REAL NOT NULL,
      messages TEXT NOT NULL,
      text TEXT NOT NULL,
      vector BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS turns_ns ON turns (ns, id);`);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
    db.prepare("SELECT count(*) FROM turns").get();
  } catch (err) {
    db?.close();
    if (err instanceof LlamemError) throw err;
    throw storeError(path, "cannot open the archive store", err);
  }
  return new ArchiveStore(path, db, maxTurns, options.maxAge, options.maxBytes);
}

/** Rows read per page when a namespace is opened. */
const LOAD_PAGE = 512;

/** An open archive store; {@link ArchiveStore.namespace} gives one session's {@link RecallStore}. */
export class ArchiveStore {
  #closed = false;
  readonly #open = new Map<string, Promise<RecallStore>>();

  /** @internal Use {@link openArchiveStore}. */
  constructor(
    readonly path: string,
    readonly db: Database,
    readonly maxTurns: number,
    readonly maxAge: number | undefined,
    readonly maxBytes: number | undefined,
  ) {}

  /** The namespaces with turns in the store. */
  namespaces(): string[] {
    this.#check();
    return (this.db.prepare("SELECT DISTINCT ns FROM turns ORDER BY ns").all() as { ns: string }[]).map((r) => r.ns);
  }

  /**
   * The recall store of namespace `name` (one per session): its turns are loaded into memory for
   * exact search, and every add is written through in one transaction.
   */
  async namespace(name: string): Promise<RecallStore> {
    this.#check();
    if (typeof name !== "string" || name.length === 0) invalidArgument("namespace(name): name must be a non-empty string");
    let store = this.#open.get(name);
    if (!store) {
      store = this.#load(name);
      this.#open.set(name, store);
      // A failed load is not kept: the next call tries again.
      store.catch(() => this.#open.delete(name));
    }
    return store;
  }

  /**
   * Reads a namespace's rows a page at a time (by id, so a write between pages neither skips nor
   * repeats one), yielding to the event loop between pages: 100,000 turns take about a second to
   * read and parse, never in one piece.
   */
  async #load(name: string): Promise<RecallStore> {
    const memory = new MemoryRecallStore(this.maxTurns, this.maxAge, this.maxBytes);
    const ids = new Map<object, number>();
    let forgotten = 0;
    type Row = { id: number; archived_at: number; messages: string; text: string; vector: Buffer };
    const page = this.db.prepare("SELECT id, archived_at, messages, text, vector FROM turns WHERE ns = ? AND id > ? ORDER BY id LIMIT ?");
    for (let after = -1; ; ) {
      let got: Row[];
      try {
        this.#check();
        got = page.all(name, after, LOAD_PAGE) as Row[];
      } catch (err) {
        if (err instanceof LlamemError) throw err;
        throw storeError(this.path, "cannot read the archive store", err);
      }
      // Added page by page, so the caps apply as rows come and no step takes long.
      forgotten += memory.add(got.map((r) => this.#entryOf(name, r, ids)));
      if (got.length < LOAD_PAGE) break;
      after = (got[got.length - 1] as Row).id;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    // Rows over the limits (a store opened with smaller ones, or aged out) are deleted now.
    if (forgotten > 0) this.#deleteForgotten(ids, memory);
    return this.#storeOf(name, memory, ids);
  }

  /** A row as a recall entry (its turn's id kept in `ids`); ERR_ARCHIVE_INVALID for a damaged one. */
  #entryOf(name: string, r: { id: number; archived_at: number; messages: string; text: string; vector: Buffer }, ids: Map<object, number>): RecallEntry {
    let messages: unknown;
    try {
      messages = JSON.parse(r.messages);
    } catch {
      messages = undefined;
    }
    if (!Array.isArray(messages) || !messages.every(isSessionMessage) || !Buffer.isBuffer(r.vector) || r.vector.byteLength % 4 !== 0) {
      throw new LlamemError("ERR_ARCHIVE_INVALID", `${this.path}: namespace ${name} holds a damaged turn (row ${r.id})`);
    }
    const turn: Turn = messages.map(copyMessage);
    const vector = new Float32Array(r.vector.buffer.slice(r.vector.byteOffset, r.vector.byteOffset + r.vector.byteLength));
    ids.set(turn, r.id);
    return { turn, text: r.text, vector, archivedAt: r.archived_at };
  }

  /** The namespace's recall store over the rows read: searched in memory, every add written through. */
  #storeOf(name: string, memory: MemoryRecallStore, ids: Map<object, number>): RecallStore {
    let dims = memory.dims();
    const checkDims = (v: Float32Array) => {
      dims ??= v.length;
      if (v.length !== dims) {
        throw new LlamemError("ERR_STATE_MISMATCH", `${this.path}: namespace ${name} holds vectors of ${dims} dimensions, not ${v.length}: it was written with another embedding model`);
      }
    };
    const insert = this.db.prepare("INSERT INTO turns (ns, archived_at, messages, text, vector) VALUES (?, ?, ?, ?, ?)");
    const write = this.db.transaction((entries: readonly RecallEntry[]) => {
      for (const e of entries) {
        const vector = Buffer.from(e.vector.buffer, e.vector.byteOffset, e.vector.byteLength);
        const info = insert.run(name, e.archivedAt, JSON.stringify(e.turn.map(copyMessage)), e.text, vector);
        ids.set(e.turn, Number(info.lastInsertRowid));
      }
    });
    return {
      add: (entries) => {
        this.#check();
        entries.forEach((e) => checkDims(e.vector));
        try {
          write(entries);
        } catch (err) {
          throw storeError(this.path, "cannot write to the archive store", err);
        }
        const forgotten = memory.add(entries);
        if (forgotten > 0) this.#deleteForgotten(ids, memory);
        return forgotten;
      },
      search: (vector, k, minScore, skip): Promise<RecalledTurn[]> => {
        this.#check();
        checkDims(vector);
        return memory.search(vector, k, minScore, skip);
      },
      size: () => memory.size(),
    };
  }

  /** Deletes the rows of turns the in-memory store forgot (caps or age), in one transaction. */
  #deleteForgotten(ids: Map<object, number>, memory: MemoryRecallStore): void {
    const kept = new Set<object>(memory.turns());
    const gone = [...ids].filter(([turn]) => !kept.has(turn));
    if (gone.length === 0) return;
    const remove = this.db.prepare("DELETE FROM turns WHERE id = ?");
    try {
      this.db.transaction(() => {
        for (const [, id] of gone) remove.run(id);
      })();
    } catch (err) {
      throw storeError(this.path, "cannot write to the archive store", err);
    }
    for (const [turn] of gone) ids.delete(turn);
  }

  /**
   * Imports a JSONL archive (a session's `memory.archive.path`) into namespace `name`, embedding
   * its turns with `embed` (in batches of 64), keeping their archive times. Returns the turns
   * imported. ERR_ARCHIVE_INVALID for a line that is not an archived turn, naming it.
   */
  async importArchive(jsonlPath: string, name: string, embed: RecallEmbedder): Promise<number> {
    this.#check();
    const archived = await new Archive(jsonlPath).read();
    const recall = resolveRecall({ embed, store: await this.namespace(name) });
    const index = new RecallIndex(recall as NonNullable<typeof recall>);
    try {
      for (let i = 0; i < archived.length; i += 64) {
        const batch = archived.slice(i, i + 64);
        await index.add(batch.map((a) => a.messages), undefined, batch.map((a) => a.archivedAt));
      }
    } finally {
      await index.dispose();
    }
    return archived.length;
  }

  #check(): void {
    if (this.#closed) throw new LlamemError("ERR_DISPOSED", `the archive store ${this.path} was closed`);
  }

  /** Closes the database; its namespaces' stores can no longer be used. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.db.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
