/**
 * Recall: archived turns brought back by meaning. Each turn is embedded when it is archived; before
 * a turn, the archived turns most similar to the new message are placed in the prompt, in a marked
 * block after the summary, within a token allowance. The vectors live with the session (in
 * memory); a turn's text is what the user and the assistant said in it.
 */
import { invalidArgument } from "../errors.js";
import { Model } from "../model.js";
import type { Context } from "../context.js";
import { DEFAULTS } from "../options.js";
import type { Turn } from "./memory.js";

/** Turns texts into vectors: an embedding model, or the app's own function. */
export type RecallEmbedder = Model | ((texts: readonly string[], signal?: AbortSignal) => Promise<readonly ArrayLike<number>[]>);

/** Options of `memory.recall`. */
export interface RecallOptions {
  /**
   * What embeds the turns and the new message: a Model (llamem creates an embedding context of
   * its own on it, so the chat's cache is never disturbed; it may be the chat model itself), or a
   * function returning one vector per text.
   */
  embed: RecallEmbedder;
  /** Most turns recalled per prompt (default 3). */
  k?: number;
  /** Least cosine similarity for a turn to be recalled (default 0.5). */
  minScore?: number;
  /** Most tokens of the recalled block: an integer, or a fraction in (0, 1) of the prompt budget (default 0.25). */
  maxTokens?: number;
  /**
   * Where the vectors are kept and searched. Default: in memory, with exact search, at most
   * `maxTurns` turns and `maxBytes` bytes (the oldest are forgotten first) for at most `maxAge` ms.
   */
  store?: RecallStore;
  /**
   * For the default store: most archived turns kept for recall (default 10,000). Without
   * `memory.archive.maxTurns`, the in-memory archive keeps this many too.
   */
  maxTurns?: number;
  /**
   * For the default store: most bytes of archived turns kept for recall, counted as each turn's
   * text in UTF-8 plus its vector (4 bytes a dimension; see {@link recallEntryBytes}); the oldest
   * are forgotten first, and a turn larger than this on its own is not kept (default: no byte
   * limit).
   */
  maxBytes?: number;
  /** For the default store: ms after which an archived turn is forgotten (default: never). */
  maxAge?: number;
}

/** One archived turn with its vector, as a store keeps it. */
export interface RecallEntry {
  readonly turn: Turn;
  readonly text: string;
  /** Unit length: a dot product is the cosine. */
  readonly vector: Float32Array;
  /** When it was archived, in ms since the epoch. */
  readonly archivedAt: number;
}

/** Where a session's recall vectors live: the default in-memory store, or the app's own (a vector database). */
export interface RecallStore {
  /** Keeps entries; returns how many older ones it forgot to stay within its limits. */
  add(entries: readonly RecallEntry[]): number | Promise<number>;
  /**
   * The `k` entries most similar to `vector` with a score of at least `minScore`, best first,
   * leaving out those `skip` returns true for (given an entry's turn and text).
   */
  search(vector: Float32Array, k: number, minScore: number, skip: (turn: Turn, text: string) => boolean): readonly RecalledTurn[] | Promise<readonly RecalledTurn[]>;
  /** Entries kept. */
  size(): number | Promise<number>;
}

/** One recalled turn and its score. */
export interface RecalledTurn {
  readonly turn: Turn;
  /** Cosine similarity to the new message, in [-1, 1]. */
  readonly score: number;
}

/** The recall options with defaults applied. @internal */
export interface ResolvedRecall {
  readonly embed: RecallEmbedder;
  readonly k: number;
  readonly minScore: number;
  readonly maxTokens: number;
  readonly store: RecallStore;
}

/** Validates `memory.recall`. @internal */
export function resolveRecall(o: RecallOptions | undefined): ResolvedRecall | undefined {
  if (o === undefined) return undefined;
  if (o === null || typeof o !== "object") invalidArgument("memory.recall must be an object { embed, k, minScore, maxTokens }");
  if (!(o.embed instanceof Model) && typeof o.embed !== "function") invalidArgument("memory.recall.embed must be a Model or a function");
  const d = DEFAULTS.recall;
  const k = o.k ?? d.k;
  if (!Number.isInteger(k) || k < 1) invalidArgument("memory.recall.k must be a positive integer");
  const minScore = o.minScore ?? d.minScore;
  if (typeof minScore !== "number" || !(minScore >= -1 && minScore <= 1)) invalidArgument("memory.recall.minScore must be a number in [-1, 1]");
  const maxTokens = o.maxTokens ?? d.maxTokens;
  if (!(Number.isFinite(maxTokens) && ((maxTokens > 0 && maxTokens < 1) || (Number.isInteger(maxTokens) && maxTokens >= 1)))) {
    invalidArgument("memory.recall.maxTokens must be an integer >= 1 or a fraction in (0, 1) of the budget");
  }
  if (o.store !== undefined && (o.store === null || typeof o.store.add !== "function" || typeof o.store.search !== "function" || typeof o.store.size !== "function")) {
    invalidArgument("memory.recall.store must have add, search and size methods");
  }
  const maxTurns = o.maxTurns ?? d.maxTurns;
  if (!Number.isInteger(maxTurns) || maxTurns < 1) invalidArgument("memory.recall.maxTurns must be a positive integer");
  if (o.maxAge !== undefined && !(Number.isFinite(o.maxAge) && o.maxAge > 0)) invalidArgument("memory.recall.maxAge must be a positive number of ms");
  if (o.maxBytes !== undefined && !(Number.isInteger(o.maxBytes) && o.maxBytes >= 1)) invalidArgument("memory.recall.maxBytes must be a positive integer");
  return { embed: o.embed, k, minScore, maxTokens, store: o.store ?? new MemoryRecallStore(maxTurns, o.maxAge, o.maxBytes) };
}

/**
 * The bytes an entry counts for against a store's `maxBytes`: its text in UTF-8 plus its vector
 * (4 bytes a dimension). Object overhead and, in the archive store, the messages' JSON are not
 * counted: the figure is the same in every store and does not depend on the JavaScript engine.
 */
export function recallEntryBytes(entry: RecallEntry): number {
  return Buffer.byteLength(entry.text, "utf8") + entry.vector.byteLength;
}

/** The text a turn is recalled by, and placed in the prompt as. */
export function turnText(turn: Turn): string {
  return turn
    .filter((m) => m.role === "user" || m.role === "assistant")
    .map((m) => `${m.role}: ${m.content}`)
    .join("\n");
}

/** The heading of the recalled block; the model reads it as context, not as the conversation. */
export const RECALL_LABEL = "Earlier in this conversation (recalled from the archive):\n";

/** Entries a search scores between yields to the event loop (about 1 to 3 ms of work at 64 to 384 dimensions). */
const SEARCH_SLICE = 4096;

/**
 * The default store: entries in memory, searched exactly (a dot product each), at most `maxTurns`
 * of them and `maxBytes` bytes ({@link recallEntryBytes}; the oldest forgotten first), none older
 * than `maxAge` ms. A store per session.
 */
export class MemoryRecallStore implements RecallStore {
  #entries: RecallEntry[] = [];
  #bytes = 0;

  /**
   * @param maxTurns most entries kept
   * @param maxAge ms after which an entry is forgotten (undefined: never)
   * @param maxBytes most bytes of entries kept, as {@link recallEntryBytes} counts them (default: no limit)
   * @param now the clock `maxAge` is measured on
   */
  constructor(
    readonly maxTurns: number,
    readonly maxAge: number | undefined,
    readonly maxBytes: number = Infinity,
    readonly now: () => number = Date.now,
  ) {}

  add(entries: readonly RecallEntry[]): number {
    let refused = 0;
    for (const e of entries) {
      const bytes = recallEntryBytes(e);
      // A turn over maxBytes on its own can never be kept: leave it out rather than empty the store for it.
      if (bytes > this.maxBytes) {
        refused++;
        continue;
      }
      this.#entries.push(e);
      this.#bytes += bytes;
    }
    const before = this.#entries.length;
    if (this.maxAge !== undefined) {
      const oldest = this.now() - this.maxAge;
      const kept = this.#entries.filter((e) => e.archivedAt >= oldest);
      if (kept.length < this.#entries.length) {
        this.#entries = kept;
        this.#bytes = kept.reduce((sum, e) => sum + recallEntryBytes(e), 0);
      }
    }
    // Oldest first until both caps hold.
    let drop = 0;
    for (const over = this.#entries.length - this.maxTurns; drop < over; drop++) this.#bytes -= recallEntryBytes(this.#entries[drop] as RecallEntry);
    for (; this.#bytes > this.maxBytes && drop < this.#entries.length; drop++) this.#bytes -= recallEntryBytes(this.#entries[drop] as RecallEntry);
    this.#entries.splice(0, drop);
    return refused + before - this.#entries.length;
  }

  /**
   * Scans every entry (exact search), keeping the best `k` as it goes, and yields to the event
   * loop every {@link SEARCH_SLICE} entries: 100,000 turns of 384 floats take tens of ms in all,
   * none of it in one piece. Ties keep the older entry first.
   */
  async search(vector: Float32Array, k: number, minScore: number, skip: (turn: Turn, text: string) => boolean): Promise<RecalledTurn[]> {
    const oldest = this.maxAge === undefined ? -Infinity : this.now() - this.maxAge;
    // A snapshot: entries added or forgotten while the search yields do not move under it.
    const entries = this.#entries.slice();
    const best: RecalledTurn[] = [];
    for (let i = 0; i < entries.length; i++) {
      if (i > 0 && i % SEARCH_SLICE === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      const e = entries[i] as RecallEntry;
      if (e.archivedAt < oldest) continue;
      const score = dot(vector, e.vector);
      if (score < minScore || (best.length === k && score <= (best[k - 1] as RecalledTurn).score) || skip(e.turn, e.text)) continue;
      let at = best.length;
      while (at > 0 && (best[at - 1] as RecalledTurn).score < score) at--;
      best.splice(at, 0, { turn: e.turn, score });
      if (best.length > k) best.pop();
    }
    return best;
  }

  size(): number {
    return this.#entries.length;
  }

  /** Floats of the entries' vectors (undefined while it holds none). */
  dims(): number | undefined {
    return this.#entries[0]?.vector.length;
  }

  /** Bytes of the entries kept, as `maxBytes` counts them ({@link recallEntryBytes}). */
  bytes(): number {
    return this.#bytes;
  }

  /** The turns kept, oldest first. */
  turns(): Turn[] {
    return this.#entries.map((e) => e.turn);
  }
}

/** A session's recall: embedding archived turns and new messages, and asking the store. @internal */
export class RecallIndex {
  #context: Context | undefined;
  #disposed = false;

  constructor(readonly options: ResolvedRecall) {}

  /** Archived turns kept for recall. */
  async size(): Promise<number> {
    return this.options.store.size();
  }

  /** Embeds and keeps `turns` (the ones just archived); returns how many older ones the store forgot. */
  async add(turns: readonly Turn[], signal?: AbortSignal, archivedAt?: readonly number[]): Promise<number> {
    const now = Date.now();
    const items = turns.map((turn, i) => ({ turn, text: turnText(turn), archivedAt: archivedAt?.[i] ?? now })).filter((t) => t.text.length > 0);
    if (items.length === 0) return 0;
    const vectors = await this.#embed(items.map((t) => t.text), signal);
    return this.options.store.add(items.map((t, i) => ({ ...t, vector: vectors[i] as Float32Array })));
  }

  /** The archived turns most similar to `text` (see {@link RecallStore.search}). */
  async search(text: string, skip: (turn: Turn, text: string) => boolean, signal?: AbortSignal): Promise<readonly RecalledTurn[]> {
    if (text.length === 0 || (await this.size()) === 0) return [];
    const [query] = await this.#embed([text], signal);
    return this.options.store.search(query as Float32Array, this.options.k, this.options.minScore, skip);
  }

  async #embed(texts: readonly string[], signal?: AbortSignal): Promise<Float32Array[]> {
    const e = this.options.embed;
    if (typeof e === "function") {
      const out = await e(texts, signal);
      if (!Array.isArray(out) || out.length !== texts.length) invalidArgument(`memory.recall.embed returned ${Array.isArray(out) ? out.length : "no"} vectors for ${texts.length} texts`);
      return out.map((v) => unit(Float32Array.from(v)));
    }
    if (!this.#context) {
      if (this.#disposed) invalidArgument("the session was disposed");
      // Its own context: the chat's sequences and cache are never touched by recall.
      const size = DEFAULTS.recall.contextSize;
      this.#context = await e.createContext({ embeddings: true, pooling: e.info.hasDecoder ? "mean" : "model", contextSize: size, batchSize: size, sequences: 4 });
    }
    // A long turn is recalled by its beginning rather than not at all.
    return this.#context.embed(texts, signal === undefined ? { truncate: true } : { signal, truncate: true });
  }

  /** Bytes of the recall's own embedding context (0 with an app function), for the session's stats. */
  async contextBytes(): Promise<number> {
    if (!this.#context) return 0;
    const m = await this.#context.memory();
    return m.kv + m.compute;
  }

  async dispose(): Promise<void> {
    this.#disposed = true;
    await this.#context?.dispose();
    this.#context = undefined;
  }
}

function dot(a: Float32Array, b: Float32Array): number {
  const n = Math.min(a.length, b.length);
  let s = 0;
  for (let i = 0; i < n; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}

/** `v` scaled to unit length, so a dot product is the cosine. */
function unit(v: Float32Array): Float32Array {
  const norm = Math.sqrt(dot(v, v));
  if (norm > 0) for (let i = 0; i < v.length; i++) v[i] = (v[i] as number) / norm;
  return v;
}
