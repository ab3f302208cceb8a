/**
 * One sequence of a context's KV cache: the tokens it holds, generation on it, and the cache
 * operations (remove and shift a range, copy to another sequence, save and restore its state).
 */
import { toTokenIds } from "./tokens.js";
import { LlamemError, fromNative, invalidArgument } from "./errors.js";
import type { NativeContext, NativeEvalResult, NativeSampler } from "./native.js";
import type { Model } from "./model.js";
import { Sampler, type SamplingOptions } from "./sampler.js";
import { decodeState, encodeState } from "./state.js";
import { writeFileAtomic } from "./gguf-writer.js";
import { readWholeFile } from "./container.js";

/** Options of {@link Sequence.generate}. */
export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 256). */
  maxTokens?: number;
  /** Stop when the output contains one of these strings; the stop string is not emitted. */
  stop?: string[];
  /** Cancels generation; the iterator throws ERR_ABORTED. */
  signal?: AbortSignal;
  /** Parse special-token text in the prompt (default false; true for chat-formatted prompts). */
  parseSpecial?: boolean;
  /** Add BOS as the model is configured to (default true). */
  addSpecial?: boolean;
  /** Called with each generated token id, before its text is emitted. */
  onToken?: (token: number) => void;
}

/** Why a generation ended. */
export type StopReason = "eog" | "maxTokens" | "stop" | "contextFull" | "aborted";

/** Figures of the last generation. */
export interface GenerationResult {
  text: string;
  stopReason: StopReason;
  /** Tokens of the prompt (including those reused from the KV cache). */
  promptTokens: number;
  /** Prompt tokens actually evaluated (the rest were reused from the KV cache). */
  evaluatedPromptTokens: number;
  generatedTokens: number;
  /** Wall time from the call to the first piece, in ms. */
  timeToFirstTokenMs: number;
  promptTokensPerSecond: number;
  generatedTokensPerSecond: number;
}

/** What a sequence needs of its context. @internal */
export interface SequenceHost {
  readonly model: Model;
  readonly native: NativeContext;
  /** Throws ERR_DISPOSED once the context is disposed. */
  check(): void;
  /** Runs native work in order with every other operation on the context, on behalf of `owner`. */
  enqueue<T>(op: () => T | Promise<T>, owner?: number): Promise<T>;
  /** Aborts the decode in flight if it belongs to sequence `owner`. */
  abort(owner: number): void;
  /** Tokens one sequence can hold. */
  readonly sequenceContextSize: number;
  readonly canShift: boolean;
  /** Sequences, KV types and pooling: saved states restore only into the same layout. */
  readonly layout: string;
}

/** One sequence of a context. Get it with `context.sequence(id)`. */
export class Sequence {
  /** Tokens in the KV cache, in order: positions 0..n-1. */
  #tokens: number[] = [];
  #busy = false;
  #last: GenerationResult | undefined;

  /** @internal */
  constructor(
    /** @internal The context side of this sequence (sessions and pools use it). */
    readonly host: SequenceHost,
    /** The sequence id in the context. */
    readonly id: number,
  ) {}

  /** Token ids currently held in the KV cache for this sequence. */
  get tokens(): readonly number[] {
    return this.#tokens;
  }

  /** The figures of the last finished generation. */
  get lastGeneration(): GenerationResult | undefined {
    return this.#last;
  }

  /** Empties this sequence's part of the KV cache. */
  async clear(): Promise<void> {
    this.#ensureIdle();
    await this.host.enqueue(() => this.host.native.seqRemove(this.id, -1, -1));
    this.#tokens = [];
  }

  /**
   * Evaluates tokens at the end of the sequence without sampling (prompt processing).
   * Returns the time llama.cpp spent decoding, in microseconds.
   */
  async evaluate(tokens: ArrayLike<number>): Promise<number> {
    this.#ensureIdle();
    this.#busy = true;
    try {
      return (await this.#eval(toTokenIds(tokens), null, false)).decodeUs;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Removes the tokens at positions [start, end) and moves the later ones back, so the cache
   * holds exactly the remaining tokens in order. Where the model cannot shift positions
   * (recurrent or some sliding-window caches), the tail is evaluated again instead.
   * @returns whether the cache was shifted in place (false: the tail was re-evaluated).
   */
  async removeTokens(start: number, end: number): Promise<boolean> {
    this.#ensureIdle();
    const n = this.#tokens.length;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > n) {
      invalidArgument(`removeTokens(start, end): need 0 <= start <= end <= ${n}`);
    }
    if (start === end) return true;
    const tail = this.#tokens.slice(end);
    const { native } = this.host;
    if (this.host.canShift) {
      await this.host.enqueue(() => {
        native.seqRemove(this.id, start, end);
        if (tail.length > 0) native.seqShift(this.id, end, -1, start - end);
      });
      this.#tokens.splice(start, end - start);
      return true;
    }
    await this.host.enqueue(() => native.seqRemove(this.id, start, -1));
    this.#tokens.length = start;
    if (tail.length > 0) await this.evaluate(tail);
    return false;
  }

  /**
   * Makes `target` hold the same cache as this sequence (prefix sharing: the cells are shared,
   * not evaluated again). Whatever `target` held is dropped.
   */
  async copyTo(target: Sequence): Promise<void> {
    this.#ensureIdle();
    target.#ensureIdle();
    if (target === this) invalidArgument("copyTo: the target is this sequence");
    await this.host.enqueue(() => {
      this.host.native.seqRemove(target.id, -1, -1);
      this.host.native.seqCopy(this.id, target.id, -1, -1);
    });
    target.#tokens = [...this.#tokens];
  }

  /**
   * The sequence's state (its KV cells and tokens) as a Buffer that names the model, for
   * {@link restoreState} on this or another context of the same model.
   */
  async saveState(): Promise<Buffer> {
    this.#ensureIdle();
    const data = await this.host.enqueue(() => this.host.native.stateSeqGet(this.id));
    return encodeState(await this.host.model.fingerprint(), this.host.layout, this.#tokens, data);
  }

  /** Replaces this sequence's cache with a saved state; ERR_STATE_MISMATCH if it is another model's. */
  async restoreState(state: Buffer): Promise<void> {
    this.#ensureIdle();
    const { fingerprint, layout, tokens, data } = decodeState(state);
    const mine = await this.host.model.fingerprint();
    if (fingerprint !== mine) {
      throw new LlamemError("ERR_STATE_MISMATCH", "this state was saved from a different model; load that model to restore it");
    }
    if (layout !== this.host.layout) {
      throw new LlamemError("ERR_STATE_MISMATCH",
        `this state was saved from a context with ${layout}; this one has ${this.host.layout}: create the context with the same sequences, kvUnified and KV types`);
    }
    if (tokens.length > this.host.sequenceContextSize) {
      throw new LlamemError("ERR_CONTEXT_FULL", `the state holds ${tokens.length} tokens; this context holds ${this.host.sequenceContextSize} per sequence`);
    }
    // Whatever happens next, the old cells are gone (the native side empties the sequence on failure).
    this.#tokens = [];
    const restored = await this.host.enqueue(() => this.host.native.stateSeqSet(this.id, data));
    if (restored !== tokens.length) {
      await this.host.enqueue(() => this.host.native.seqRemove(this.id, -1, -1));
      throw new LlamemError("ERR_STATE_MISMATCH", `the state restored ${restored} positions but lists ${tokens.length} tokens`);
    }
    this.#tokens = tokens;
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
  async *generate(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): AsyncGenerator<string, void, void> {
    this.#ensureIdle();
    const maxTokens = options.maxTokens ?? 256;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) invalidArgument("maxTokens must be a non-negative integer");
    const stops = (options.stop ?? []).filter((s) => s.length > 0);
    const { signal } = options;
    if (signal?.aborted) throw new LlamemError("ERR_ABORTED", "generation was aborted before it started");
    const sampler = new Sampler(this.host.model, options);
    this.#busy = true;
    const t0 = performance.now();
    const onAbort = () => this.host.abort(this.id);
    signal?.addEventListener("abort", onAbort, { once: true });
    const decoder = new TextDecoder("utf-8");
    const holdback = stops.reduce((m, s) => Math.max(m, s.length - 1), 0);
    const capacity = this.host.sequenceContextSize;
    let pending = "";
    let text = "";
    let stopReason: StopReason = "maxTokens";
    let generated = 0;
    let evaluatedPrompt = 0;
    let promptMs = 0;
    let firstMs = 0;
    let genStart = 0;
    let promptLength = 0;
    try {
      const promptTokens =
        typeof prompt === "string"
          ? await this.host.model.tokenizeRaw(prompt, { addSpecial: options.addSpecial ?? true, parseSpecial: options.parseSpecial ?? false })
          : toTokenIds(prompt, "prompt");
      promptLength = promptTokens.length;
      if (promptTokens.length === 0) invalidArgument("the prompt is empty");
      if (promptTokens.length >= capacity) {
        throw new LlamemError("ERR_CONTEXT_FULL",
          `the prompt has ${promptTokens.length} tokens but the context holds ${capacity} per sequence; use a larger contextSize`);
      }
      const fresh = await this.#reusePrefix(promptTokens);
      evaluatedPrompt = fresh.length;
      if (maxTokens === 0) {
        await this.#eval(fresh, null, false);
        return;
      }
      const tp = performance.now();
      let step = await this.#eval(fresh, sampler.native, true);
      promptMs = performance.now() - tp;
      genStart = performance.now();
      for (;;) {
        if (signal?.aborted) throw new LlamemError("ERR_ABORTED", "generation was aborted");
        if (step.eog) {
          stopReason = "eog";
          break;
        }
        generated++;
        options.onToken?.(step.token ?? -1);
        pending += decoder.decode(step.piece, { stream: true });
        const hit = stops.length > 0 ? firstStop(pending, stops) : -1;
        if (hit >= 0) {
          pending = pending.slice(0, hit);
          stopReason = "stop";
        }
        const emitUpTo = stopReason === "stop" ? pending.length : Math.max(0, pending.length - holdback);
        if (emitUpTo > 0) {
          const out = pending.slice(0, emitUpTo);
          pending = pending.slice(emitUpTo);
          text += out;
          if (firstMs === 0) firstMs = performance.now() - t0;
          yield out;
        }
        if (stopReason === "stop") {
          pending = "";
          break;
        }
        if (generated >= maxTokens) break;
        if (this.#tokens.length + 1 >= capacity) {
          stopReason = "contextFull";
          break;
        }
        step = await this.#eval(Int32Array.of(step.token ?? 0), sampler.native, false);
      }
      pending += decoder.decode();
      if (pending.length > 0) {
        text += pending;
        if (firstMs === 0) firstMs = performance.now() - t0;
        yield pending;
      }
    } catch (err) {
      const e = fromNative(err);
      if (e.code === "ERR_ABORTED") stopReason = "aborted";
      throw e;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      sampler.dispose();
      const genMs = genStart > 0 ? performance.now() - genStart : 0;
      this.#last = {
        text,
        stopReason,
        promptTokens: promptLength,
        evaluatedPromptTokens: evaluatedPrompt,
        generatedTokens: generated,
        timeToFirstTokenMs: firstMs,
        promptTokensPerSecond: promptMs > 0 ? (evaluatedPrompt / promptMs) * 1000 : 0,
        // The first token came with the prompt step, so the rate counts the ones after it.
        generatedTokensPerSecond: genMs > 0 && generated > 1 ? ((generated - 1) / genMs) * 1000 : 0,
      };
      this.#busy = false;
    }
  }

  /** Generates and collects the whole text. */
  async complete(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Promise<GenerationResult> {
    for await (const _piece of this.generate(prompt, options)) {
      // pieces are collected into lastGeneration.text
    }
    return this.#last as GenerationResult;
  }

  /** @internal Whether a generation or evaluation is running on this sequence. */
  get busy(): boolean {
    return this.#busy;
  }

  /** @internal Bookkeeping for the pool's batched decodes: tokens it evaluated on this sequence. */
  appendEvaluated(tokens: ArrayLike<number>): void {
    for (let i = 0; i < tokens.length; i++) this.#tokens.push(tokens[i] as number);
  }

  /** @internal Marks the sequence busy for work driven from outside (a pool); returns the release. */
  claim(): () => void {
    this.#ensureIdle();
    this.#busy = true;
    return () => {
      this.#busy = false;
    };
  }

  #ensureIdle(): void {
    this.host.check();
    if (this.#busy) {
      throw new LlamemError("ERR_BUSY", `sequence ${this.id} is already generating; await it or abort it first`);
    }
  }

  /** Keeps the cached tokens shared with `prompt` and returns the rest to evaluate (at least one). */
  async #reusePrefix(prompt: Int32Array): Promise<Int32Array> {
    let common = 0;
    const max = Math.min(this.#tokens.length, prompt.length - 1);
    while (common < max && this.#tokens[common] === prompt[common]) common++;
    if (common < this.#tokens.length) {
      await this.host.enqueue(() => this.host.native.seqRemove(this.id, common, -1));
      this.#tokens.length = common;
    }
    return prompt.subarray(common);
  }

  async #eval(tokens: Int32Array, sampler: NativeSampler | null, acceptInput: boolean): Promise<NativeEvalResult> {
    const base = this.#tokens.length;
    try {
      const r = await this.host.enqueue(() => this.host.native.eval(this.id, tokens, sampler, acceptInput), this.id);
      this.appendEvaluated(tokens);
      return r;
    } catch (err) {
      // An aborted or failed decode may have kept part of the batch: resync from the cache.
      const e = fromNative(err);
      if (e.code !== "ERR_DISPOSED") {
        const max = await this.host.enqueue(() => this.host.native.seqPosRange(this.id)[1]).catch(() => base - 1);
        this.appendEvaluated(tokens.subarray(0, Math.max(0, Math.min(tokens.length, max + 1 - base))));
      }
      throw e;
    }
  }
}

function firstStop(text: string, stops: string[]): number {
  let best = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}
