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
  return { embed: o.embed, k, minScore, maxTokens };
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

interface Entry {
  readonly turn: Turn;
  readonly text: string;
  readonly vector: Float32Array;
}

/** A session's archived turns with their vectors, searched by cosine similarity (exact). @internal */
export class RecallIndex {
  readonly #entries: Entry[] = [];
  #context: Context | undefined;
  #disposed = false;

  constructor(readonly options: ResolvedRecall) {}

  /** Archived turns kept for recall. */
  get size(): number {
    return this.#entries.length;
  }

  /** Embeds and keeps `turns` (the ones just archived). */
  async add(turns: readonly Turn[], signal?: AbortSignal): Promise<void> {
    const items = turns.map((turn) => ({ turn, text: turnText(turn) })).filter((t) => t.text.length > 0);
    if (items.length === 0) return;
    const vectors = await this.#embed(items.map((t) => t.text), signal);
    items.forEach((t, i) => this.#entries.push({ ...t, vector: vectors[i] as Float32Array }));
  }

  /**
   * The archived turns most similar to `text`: at most k, with scores of at least minScore, best
   * first, leaving out those `skip` says are in the prompt already.
   */
  async search(text: string, skip: (turn: Turn) => boolean, signal?: AbortSignal): Promise<RecalledTurn[]> {
    if (this.#entries.length === 0 || text.length === 0) return [];
    const [query] = await this.#embed([text], signal);
    const q = query as Float32Array;
    const scored: RecalledTurn[] = [];
    for (const e of this.#entries) {
      if (skip(e.turn)) continue;
      const score = dot(q, e.vector);
      if (score >= this.options.minScore) scored.push({ turn: e.turn, score });
    }
    scored.sort((a, b) => b.score - a.score);
    return scored.slice(0, this.options.k);
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
    return this.#context.embed(texts, signal === undefined ? {} : { signal });
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
