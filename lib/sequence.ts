/**
 * One sequence of a context's KV cache: the tokens it holds, generation on it (through the
 * context's one generation engine), and the cache operations (remove and shift a range, copy to
 * another sequence, save and restore its state).
 */
import { toTokenIds } from "./tokens.js";
import { LlamemError, invalidArgument } from "./errors.js";
import type { NativeContext } from "./internal/native.js";
import type { Context } from "./context.js";
import { Sampler, resolveTextBias } from "./sampler.js";
import { hasTextBias } from "./options.js";
import { decodeState, encodeState } from "./state.js";
import { readWholeFile, writeFileAtomic } from "./files.js";
import { checkGenerateOptions, GenerationJob, SequenceTokens, type Engine, type GenerateOptions, type GenerationResult } from "./generation.js";

export type { GenerateOptions, GenerationResult, StopReason } from "./generation.js";

/** The parts of its context a sequence works with, beyond the public Context. @internal */
export interface ContextInternals {
  readonly context: Context;
  readonly native: NativeContext;
  readonly engine: Engine;
  /** Runs native work in order with every other operation on the context. */
  enqueue<T>(op: () => T | Promise<T>): Promise<T>;
  /** Throws ERR_DISPOSED once the context is disposed. */
  check(): void;
  /** Sequences, KV types and pooling: saved states restore only into the same layout. */
  readonly stateLayout: string;
}

/** One sequence of a context. Get it with `context.sequence(id)`. */
export class Sequence {
  readonly #inner: ContextInternals;
  /** Tokens in the KV cache, in order: positions 0..n-1. */
  readonly #tokens: SequenceTokens;
  #busy = false;
  #last: GenerationResult | undefined;

  /** @internal Created by its context. */
  constructor(inner: ContextInternals, id: number) {
    this.#inner = inner;
    this.#tokens = new SequenceTokens(id);
  }

  /** The sequence id in the context. */
  get id(): number {
    return this.#tokens.id;
  }

  /** The context this sequence belongs to. */
  get context(): Context {
    return this.#inner.context;
  }

  /** Token ids currently held in the KV cache for this sequence. */
  get tokens(): readonly number[] {
    return this.#tokens.list;
  }

  /** The figures of the last finished generation. */
  get lastGeneration(): GenerationResult | undefined {
    return this.#last;
  }

  /** @internal Whether a generation or cache operation is running on this sequence. */
  get busy(): boolean {
    return this.#busy;
  }

  /** Empties this sequence's part of the KV cache. */
  async clear(): Promise<void> {
    this.#ensureIdle();
    // The bookkeeping changes in the same queued step as the cache, so later operations see both.
    await this.#inner.enqueue(() => {
      this.#inner.native.seqRemove(this.id, -1, -1);
      this.#tokens.truncate(0);
    });
  }

  /**
   * Evaluates tokens at the end of the sequence without sampling (prompt processing).
   * Returns the time llama.cpp spent decoding, in microseconds.
   */
  async evaluate(tokens: ArrayLike<number>): Promise<number> {
    this.#ensureGenerative();
    const ids = toTokenIds(tokens);
    return this.#exclusive(async () => {
      // A cache that lost what the new tokens attend to is evaluated again from the start.
      const redo = await this.#inner.enqueue(() => {
        const cached = this.#tokens.list.slice();
        return cached.slice(this.#cutTo(cached.length, true));
      });
      return this.#evaluate(redo.length > 0 ? Int32Array.from([...redo, ...ids]) : ids);
    });
  }

  /**
   * Removes the tokens at positions [start, end) and moves the later ones back, so the cache
   * holds exactly the remaining tokens in order. Where the model cannot shift positions
   * (recurrent or some sliding-window caches), the tail is evaluated again instead, and where
   * the cache no longer holds what the tail attends to (a sliding-window layer dropped those
   * positions, a recurrent state cannot be cut), everything is evaluated again from the start.
   * @returns whether the cache was shifted in place (false: tokens were evaluated again).
   */
  async removeTokens(start: number, end: number): Promise<boolean> {
    this.#ensureIdle();
    const n = this.#tokens.length;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > n) {
      invalidArgument(`removeTokens(start, end): need 0 <= start <= end <= ${n}`);
    }
    if (start === end) return true;
    const { native } = this.#inner;
    if (this.#inner.context.info.canShift) {
      await this.#inner.enqueue(() => {
        native.seqRemove(this.id, start, end);
        if (end < this.#tokens.length) native.seqShift(this.id, end, -1, start - end);
        this.#tokens.list.splice(start, end - start);
      });
      return true;
    }
    return this.#exclusive(async () => {
      const redo = await this.#inner.enqueue(() => {
        const cached = this.#tokens.list.slice();
        // Cutting the end off needs nothing more from the cache; re-evaluating a tail does.
        const kept = this.#cutTo(start, end < cached.length);
        return [...cached.slice(kept, start), ...cached.slice(end)];
      });
      if (redo.length > 0) await this.#evaluate(Int32Array.from(redo));
      return false;
    });
  }

  /**
   * @internal Inserts `tokens` at position `at`, moving the cells from `at` on forward, without
   * evaluating those again. llama.cpp evaluates a sequence's tokens only after its last position,
   * so the new tokens are evaluated at the end (attending to the whole sequence, the cells after
   * `at` included) and then moved into place with the rest shifted after them: the same kind of
   * approximation as {@link removeTokens}' shift, for `kvReuse: "shift"`. Returns false, changing
   * nothing, where the cache cannot shift positions or the tokens do not fit.
   *
   * `prepared`, a sequence of the same unified-KV context that holds exactly this sequence's
   * first `at` tokens and then `tokens` (evaluated there beforehand, say while the user was
   * reading), gives its cells instead: nothing is evaluated, and the inserted cells are exact
   * (they attend to the prefix only, as in a fresh prompt).
   */
  async insertTokens(at: number, tokens: ArrayLike<number>, prepared?: Sequence): Promise<boolean> {
    this.#ensureGenerative();
    const ids = toTokenIds(tokens);
    const n = this.#tokens.length;
    if (!Number.isInteger(at) || at < 0 || at > n) invalidArgument(`insertTokens(at, tokens): need 0 <= at <= ${n}`);
    const s = ids.length;
    const { info } = this.#inner.context;
    if (s === 0) return true;
    if (!info.canShift || n + s >= info.sequenceContextSize) return false;
    if (prepared && this.#holdsPrepared(at, ids, prepared)) {
      return this.#exclusive(async () => {
        await this.#inner.enqueue(() => {
          const { native } = this.#inner;
          // The tail moves forward out of the gap, then this sequence shares the prepared cells.
          if (at < n) native.seqShift(this.id, at, n, s);
          native.seqCopy(prepared.id, this.id, at, at + s);
          this.#tokens.list.splice(at, 0, ...ids);
        });
        return true;
      });
    }
    return this.#exclusive(async () => {
      await this.#evaluate(ids);
      await this.#inner.enqueue(() => {
        const { native } = this.#inner;
        // Three moves, so no two ranges ever share a position: the new cells out of the way,
        // the tail forward, the new cells into the gap.
        native.seqShift(this.id, n, n + s, s);
        native.seqShift(this.id, at, n, s);
        native.seqShift(this.id, n + s, n + 2 * s, at - n - s);
        const list = this.#tokens.list;
        const tail = list.splice(at, n - at);
        for (const t of tail) list.push(t);
      });
      return true;
    });
  }

  /** Whether `prepared` can lend its cells for inserting `ids` at `at` (see {@link insertTokens}). */
  #holdsPrepared(at: number, ids: Int32Array, prepared: Sequence): boolean {
    const { info } = this.#inner.context;
    // A partial copy between sequences needs them in one KV stream (a unified cache).
    if (prepared === this || prepared.#inner !== this.#inner || prepared.busy || (info.sequences > 1 && info.sequenceContextSize !== info.contextSize)) return false;
    const theirs = prepared.#tokens.list;
    const mine = this.#tokens.list;
    if (theirs.length !== at + ids.length) return false;
    for (let i = 0; i < at; i++) if (theirs[i] !== mine[i]) return false;
    for (let i = 0; i < ids.length; i++) if (theirs[at + i] !== ids[i]) return false;
    return true;
  }

  /**
   * Makes `target` hold the same cache as this sequence (prefix sharing: the cells are shared,
   * not evaluated again). Whatever `target` held is dropped. Both sequences must belong to
   * the same context.
   */
  async copyTo(target: Sequence): Promise<void> {
    if (!(target instanceof Sequence)) invalidArgument("copyTo(target): target must be a Sequence");
    if (target === this) invalidArgument("copyTo: the target is this sequence");
    if (target.#inner !== this.#inner) invalidArgument("copyTo: the target belongs to another context; cells cannot move between contexts (use saveState/restoreState)");
    this.#ensureIdle();
    target.#ensureIdle();
    await this.#inner.enqueue(() => {
      this.#inner.native.seqRemove(target.id, -1, -1);
      this.#inner.native.seqCopy(this.id, target.id, -1, -1);
      target.#tokens.replace(this.#tokens.list);
    });
  }

  /**
   * The sequence's state (its KV cells and tokens) as a Buffer that names the model, for
   * {@link restoreState} on this or another context of the same model.
   */
  async saveState(): Promise<Buffer> {
    this.#ensureIdle();
    const fingerprint = await this.#inner.context.model.fingerprint();
    // The tokens are read in the same queued step as the cells, so the two always agree.
    const { data, tokens } = await this.#inner.enqueue(async () => ({ tokens: [...this.#tokens.list], data: await this.#inner.native.stateSeqGet(this.id) }));
    return encodeState(fingerprint, this.#inner.stateLayout, tokens, data);
  }

  /** Replaces this sequence's cache with a saved state; ERR_STATE_MISMATCH if it is another model's. */
  async restoreState(state: Buffer): Promise<void> {
    this.#ensureIdle();
    const { fingerprint, layout, tokens, data } = decodeState(state);
    const mine = await this.#inner.context.model.fingerprint();
    if (fingerprint !== mine) {
      throw new LlamemError("ERR_STATE_MISMATCH", "this state was saved from a different model; load that model to restore it");
    }
    const here = this.#inner.stateLayout;
    if (layout !== here) {
      throw new LlamemError("ERR_STATE_MISMATCH",
        `this state was saved from a context with ${layout}; this one has ${here}: create the context with the same sequences, kvUnified and KV types`);
    }
    const capacity = this.#inner.context.info.sequenceContextSize;
    if (tokens.length > capacity) {
      throw new LlamemError("ERR_CONTEXT_FULL", `the state holds ${tokens.length} tokens; this context holds ${capacity} per sequence`);
    }
    await this.#exclusive(async () => {
      // Whatever happens next, the old cells are gone (the native side empties the sequence on failure).
      this.#tokens.truncate(0);
      const restored = await this.#inner.enqueue(() => this.#inner.native.stateSeqSet(this.id, data));
      if (restored !== tokens.length) {
        await this.#inner.enqueue(() => this.#inner.native.seqRemove(this.id, -1, -1));
        throw new LlamemError("ERR_STATE_MISMATCH", `the state restored ${restored} positions but lists ${tokens.length} tokens`);
      }
      this.#tokens.replace(tokens);
    });
  }

  /** Writes {@link saveState} to a file atomically: the old file stays intact until the new one is whole. */
  async saveStateFile(path: string): Promise<number> {
    const state = await this.saveState();
    return writeFileAtomic(path, async (write) => write(state), { fsync: true });
  }

  /** Restores a state written by {@link saveStateFile}. */
  async loadStateFile(path: string): Promise<void> {
    await this.restoreState(await readWholeFile(path));
  }

  /**
   * Generates text after `prompt` (text or token ids), streaming pieces as they are decoded.
   * A prompt that starts with the tokens already in the KV cache reuses them.
   * UTF-8 characters split across tokens are emitted whole.
   */
  generate(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): AsyncGenerator<string, void, void> {
    return this.#generate(prompt, options, true);
  }

  /**
   * {@link generate} for a caller that collects the pieces rather than taking each as it comes
   * (complete(), a session's respond()): a native loop's steps reach JS together. @internal
   */
  collect(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): AsyncGenerator<string, void, void> {
    return this.#generate(prompt, options, false);
  }

  /** {@link generate}; `consumer`: whether the caller takes the pieces as they come (see GenerationJob.streams). */
  async *#generate(prompt: string | ArrayLike<number>, options: GenerateOptions, consumer: boolean): AsyncGenerator<string, void, void> {
    const t0 = performance.now();
    this.#ensureIdle();
    this.#ensureGenerative();
    const checked = checkGenerateOptions(options);
    if (checked.signal?.aborted) throw new LlamemError("ERR_ABORTED", "generation was aborted before it started");
    const ids = typeof prompt === "string" ? undefined : toTokenIds(prompt, "prompt");
    const { model } = this.#inner.context;
    // Built before anything changes, so bad sampling options leave the cache as it was (a bias
    // given by text is tokenized first, so that sampler is built once the sequence is marked busy).
    const textBias = checked.maxTokens > 0 && hasTextBias(options.logitBias);
    const window = this.#inner.context.info.sequenceContextSize;
    // Log-probabilities and drafts are sampled on the CPU: the chain is built for it then.
    const cpu = checked.logprobs >= 0 || this.#inner.engine.drafts;
    let sampler = checked.maxTokens > 0 ? new Sampler(model, options, { grammar: checked.grammar, contextSize: window, cpu }) : undefined;
    this.#busy = true;
    try {
      if (textBias && sampler) {
        sampler.dispose();
        sampler = undefined;
        sampler = new Sampler(model, options, { grammar: checked.grammar, textBias: await resolveTextBias(model, options), contextSize: window, cpu });
      }
      const tokens = ids ?? (await model.tokenizeRaw(prompt as string, { addSpecial: options.addSpecial ?? true, parseSpecial: options.parseSpecial ?? false }));
      if (tokens.length === 0) invalidArgument("the prompt is empty");
      const capacity = this.#inner.context.info.sequenceContextSize;
      if (tokens.length >= capacity) {
        throw new LlamemError("ERR_CONTEXT_FULL",
          `the prompt has ${tokens.length} tokens but the context holds ${capacity} per sequence; use a larger contextSize`);
      }
      const fresh = await this.#reusePrefix(tokens);
      const job = new GenerationJob(this.#tokens, fresh, tokens.length, checked, sampler, t0, consumer);
      sampler = undefined; // the job owns it now
      try {
        yield* this.#inner.engine.run(job);
      } finally {
        this.#last = job.result;
      }
    } finally {
      sampler?.dispose();
      this.#busy = false;
    }
  }

  /** Generates and collects the whole text. */
  async complete(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Promise<GenerationResult> {
    for await (const _piece of this.collect(prompt, options)) {
      // pieces are collected into lastGeneration.text
    }
    return this.#last as GenerationResult;
  }

  /** Embedding contexts pool; they have no generation (their cache is cleared on every call). */
  #ensureGenerative(): void {
    if (this.#inner.context.info.embeddings) invalidArgument("this is an embedding context (embeddings: true): use embed(), or create another context to generate");
  }

  #ensureIdle(): void {
    this.#inner.check();
    if (this.#busy) {
      throw new LlamemError("ERR_BUSY", `sequence ${this.id} is already generating; await it or abort it first`);
    }
  }

  /** Runs `op` with the sequence marked busy; a failure never leaves it busy. */
  async #exclusive<T>(op: () => Promise<T>): Promise<T> {
    this.#ensureIdle();
    this.#busy = true;
    try {
      return await op();
    } finally {
      this.#busy = false;
    }
  }

  /** Evaluates `tokens` through the engine, without sampling; the decode time in µs. */
  async #evaluate(tokens: Int32Array): Promise<number> {
    if (tokens.length === 0) return 0;
    const job = new GenerationJob(this.#tokens, tokens, tokens.length, checkGenerateOptions({ maxTokens: 0 }), undefined, performance.now());
    for await (const _ of this.#inner.engine.run(job)) {
      // evaluation emits no text
    }
    return job.decodeUs;
  }

  /**
   * Keeps the cached tokens shared with `prompt` that generation can continue from (see
   * {@link Sequence.holds}) and returns the rest to evaluate (at least one).
   */
  async #reusePrefix(prompt: Int32Array): Promise<Int32Array> {
    return this.#inner.enqueue(() => {
      const cached = this.#tokens.list;
      let common = 0;
      const max = Math.min(cached.length, prompt.length - 1);
      while (common < max && cached[common] === prompt[common]) common++;
      return prompt.subarray(this.#cutTo(common, true));
    });
  }

  /**
   * @internal Keeps the longest cached prefix of `prompt` (all but its last token at most) that
   * generation can continue from, exactly as {@link generate} would, and returns its length: the
   * prompt tokens that will not be evaluated again.
   */
  async keepPrefix(prompt: ArrayLike<number>): Promise<number> {
    const ids = toTokenIds(prompt, "prompt");
    return this.#exclusive(async () => ids.length - (await this.#reusePrefix(ids)).length);
  }

  /**
   * @internal Whether evaluation can continue after this sequence's first `n` cached tokens, with
   * the cache as it is now (see the rule at {@link cacheHolds}).
   */
  async holds(n: number): Promise<boolean> {
    this.#inner.check();
    return this.#inner.enqueue(() => this.#holds(n));
  }

  /** {@link cacheHolds} for this sequence, read from the native cache. Runs in the context's queue. */
  #holds(n: number): boolean {
    const { slidingWindow, recurrent } = this.#inner.context.model.info;
    const [min, max] = this.#inner.native.seqPosRange(this.id);
    return cacheHolds({ n, length: this.#tokens.length, min, max, slidingWindow, recurrent });
  }

  /**
   * Cuts the cache to its first `keep` tokens and returns how many it kept. With `next` (tokens
   * are evaluated after them), they are kept only if the cache still holds what those tokens
   * attend to; where it does not, or where the cache cannot be cut there (a recurrent state), the
   * sequence is emptied and 0 returned. Runs in the context's queue, so the bookkeeping changes in
   * the same step as the cells.
   */
  #cutTo(keep: number, next: boolean): number {
    const { native } = this.#inner;
    let kept = keep;
    if (kept > 0 && next && !this.#holds(kept)) kept = 0;
    if (kept < this.#tokens.length && !native.seqRemove(this.id, kept, -1)) {
      native.seqRemove(this.id, -1, -1);
      kept = 0;
    }
    this.#tokens.truncate(Math.min(kept, this.#tokens.length));
    return kept;
  }
}

/** What {@link cacheHolds} decides from. @internal */
export interface CacheSpan {
  /** Cached tokens kept; evaluation continues at position `n`. */
  readonly n: number;
  /** Tokens the sequence holds (positions 0..length-1). */
  readonly length: number;
  /** llama_memory_seq_pos_min / _max of the sequence (-1 when it holds nothing). */
  readonly min: number;
  readonly max: number;
  /** The model's sliding window (0: none) and whether its state is recurrent. */
  readonly slidingWindow: number;
  readonly recurrent: boolean;
}

/**
 * Whether a token evaluated at position `n`, after the first `n` cached tokens, sees everything a
 * fresh evaluation would (llama-server's rule before it reuses a cached prompt):
 *
 * - a recurrent (or hybrid) state summarises every token up to the last one and cannot be cut
 *   back: only `n` = all of them can be continued;
 * - a sliding-window layer attends to the positions [n - window + 1, n - 1], and llama.cpp's
 *   sliding-window cache overwrites positions older than the window once it runs out of cells,
 *   and saves only the window in a state: the oldest position the sequence still holds
 *   (llama_memory_seq_pos_min, which for such a cache is the sliding layers') must be at most
 *   n - window + 1 (0 when n is smaller than the window);
 * - every other layer attends to all positions [0, n - 1]: the sequence must hold position 0.
 *
 * The cache is also checked to hold position n - 1 at all. @internal
 */
export function cacheHolds(s: CacheSpan): boolean {
  if (s.n === 0) return true;
  if (s.n > s.length || s.min < 0 || s.max < s.n - 1) return false;
  if (s.recurrent) return s.n === s.length;
  const oldestNeeded = s.slidingWindow > 0 ? Math.max(0, s.n - s.slidingWindow + 1) : 0;
  return s.min <= oldestNeeded;
}
