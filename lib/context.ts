/**
 * An inference context: the KV cache and compute buffers for one model, with generation.
 */
import { availableParallelism } from "node:os";
import { readFileSync } from "node:fs";
import { LlamemError, fromNative, invalidArgument } from "./errors.js";
import { Lifetime } from "./lifetime.js";
import { native, type NativeContext, type NativeEvalResult, type NativeMemoryRow } from "./native.js";
import type { Model } from "./model.js";
import { Sampler, type SamplingOptions } from "./sampler.js";

/** Element types the KV cache can be stored in. */
export type KvCacheType = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_1" | "iq4_nl" | "q5_0" | "q5_1";

const KV_TYPES: Record<KvCacheType, number> = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q5_0: 6, q5_1: 7, q8_0: 8, iq4_nl: 20, bf16: 30,
};

/** Options of {@link Model.createContext}. */
export interface ContextOptions {
  /** Tokens the KV cache holds (all sequences together). Default: min(4096, the trained context). */
  contextSize?: number;
  /** Most tokens submitted to one decode (default 512). */
  batchSize?: number;
  /** Physical micro-batch size (default min(batchSize, 512)). */
  ubatchSize?: number;
  /** Parallel sequences (default 1). */
  sequences?: number;
  /** Threads for generation (default: the number of physical cores). */
  threads?: number;
  /** Threads for prompt processing (default: `threads`). */
  threadsBatch?: number;
  /** Flash attention: "auto" (default) lets llama.cpp decide. */
  flashAttention?: "auto" | "on" | "off";
  /** Element type of both K and V caches (default f16). */
  kvType?: KvCacheType;
  /** K cache type; overrides kvType. */
  kvTypeK?: KvCacheType;
  /** V cache type; overrides kvType. A quantized V cache needs flash attention. */
  kvTypeV?: KvCacheType;
  /** Keep the KV cache on the GPU with the offloaded layers (default true). */
  offloadKv?: boolean;
}

/** Options of {@link Context.generate}. */
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

/** Bytes one buffer type holds, from llama.cpp's memory breakdown. */
export type MemoryRow = NativeMemoryRow;

let physicalCores: number | undefined;

/** Physical cores (llama.cpp gains nothing from SMT siblings), else the logical CPU count. */
export function defaultThreads(): number {
  if (physicalCores !== undefined) return physicalCores;
  let n = 0;
  try {
    const cores = new Set<string>();
    let physical = "";
    for (const line of readFileSync("/proc/cpuinfo", "utf8").split("\n")) {
      const [k, v] = line.split(":").map((s) => s.trim());
      if (k === "physical id") physical = v ?? "";
      if (k === "core id") cores.add(`${physical}/${v}`);
    }
    n = cores.size;
  } catch {
    n = 0;
  }
  physicalCores = n > 0 ? Math.min(n, availableParallelism()) : availableParallelism();
  return physicalCores;
}

function kvType(name: KvCacheType | undefined, option: string): number {
  if (name === undefined) return KV_TYPES.f16;
  const id = KV_TYPES[name];
  if (id === undefined) invalidArgument(`${option} must be one of ${Object.keys(KV_TYPES).join(", ")}`);
  return id;
}

/** A context on a model. Dispose it (or `await using`) to free the KV cache. */
export class Context {
  readonly #native: NativeContext;
  readonly #lifetime = new Lifetime("context");
  /** Tokens in the KV cache of sequence 0, in order (positions 0..n-1). */
  #tokens: number[] = [];
  #busy = false;
  #last: GenerationResult | undefined;
  /** The model this context runs. */
  readonly model: Model;

  private constructor(model: Model, handle: NativeContext) {
    this.model = model;
    this.#native = handle;
  }

  /** @internal Use {@link Model.createContext}. */
  static async create(model: Model, o: ContextOptions): Promise<Context> {
    const threads = o.threads ?? defaultThreads();
    const fa = o.flashAttention ?? "auto";
    if (fa !== "auto" && fa !== "on" && fa !== "off") invalidArgument('flashAttention must be "auto", "on" or "off"');
    const contextSize = o.contextSize ?? Math.min(4096, model.info.trainedContextSize || 4096);
    if (!Number.isInteger(contextSize) || contextSize < 1) invalidArgument("contextSize must be a positive integer");
    const batchSize = o.batchSize ?? 512;
    try {
      const handle = await native().Context.create(model.native, {
        contextSize,
        batchSize,
        ubatchSize: o.ubatchSize ?? Math.min(batchSize, 512),
        sequences: o.sequences ?? 1,
        threads,
        threadsBatch: o.threadsBatch ?? threads,
        flashAttention: fa === "auto" ? -1 : fa === "on" ? 1 : 0,
        typeK: kvType(o.kvTypeK ?? o.kvType, "kvTypeK"),
        typeV: kvType(o.kvTypeV ?? o.kvType, "kvTypeV"),
        offloadKv: o.offloadKv ?? true,
        swaFull: false,
        kvUnified: false,
        embeddings: false,
      });
      return new Context(model, handle);
    } catch (err) {
      throw fromNative(err);
    }
  }

  /** @internal */
  onDispose(fn: () => void): void {
    this.#lifetime.onDispose(fn);
  }

  /** True once {@link dispose} was called. */
  get disposed(): boolean {
    return this.#lifetime.disposed;
  }

  /** Context size, batch sizes, sequences and threads as llama.cpp applied them. */
  get info() {
    this.#lifetime.check();
    return this.#native.info();
  }

  /** The figures of the last finished generation. */
  get lastGeneration(): GenerationResult | undefined {
    return this.#last;
  }

  /** Token ids currently held in the KV cache (sequence 0). */
  get tokens(): readonly number[] {
    return this.#tokens;
  }

  /** Bytes per buffer type for weights, this context's KV cache and compute buffers. */
  memory(): MemoryRow[] {
    this.#lifetime.check();
    return this.#native.memory();
  }

  /** Empties the KV cache. */
  clear(): void {
    this.#lifetime.check();
    this.#ensureIdle();
    this.#native.clear();
    this.#tokens = [];
  }

  /**
   * Evaluates tokens at the end of the KV cache without sampling (prompt processing).
   * Returns the time llama.cpp spent decoding, in microseconds.
   */
  async evaluate(tokens: ArrayLike<number>): Promise<number> {
    this.#ensureIdle();
    this.#busy = true;
    try {
      const r = await this.#eval(Int32Array.from(tokens), null, false);
      return r.decodeUs;
    } finally {
      this.#busy = false;
    }
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
    const sampler = new Sampler(this.model, options);
    this.#busy = true;
    const t0 = performance.now();
    const onAbort = () => this.#native.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    const decoder = new TextDecoder("utf-8");
    const holdback = stops.reduce((m, s) => Math.max(m, s.length - 1), 0);
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
          ? await this.model.tokenizeRaw(prompt, { addSpecial: options.addSpecial ?? true, parseSpecial: options.parseSpecial ?? false })
          : Int32Array.from(prompt);
      promptLength = promptTokens.length;
      if (promptTokens.length === 0) invalidArgument("the prompt is empty");
      const fresh = this.#reusePrefix(promptTokens);
      evaluatedPrompt = fresh.length;
      const info = this.#native.info();
      if (promptTokens.length >= info.sequenceContextSize) {
        throw new LlamemError("ERR_CONTEXT_FULL",
          `the prompt has ${promptTokens.length} tokens but the context holds ${info.sequenceContextSize}; use a larger contextSize`);
      }
      if (maxTokens === 0) {
        await this.#eval(fresh, null, false);
        stopReason = "maxTokens";
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
        if (this.#tokens.length + 1 >= info.sequenceContextSize) {
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

  /** Aborts and frees the context; waits for a decode in flight. Calling it again is a no-op. */
  async dispose(): Promise<void> {
    await this.#lifetime.dispose(() => this.#native.dispose(), () => this.#native.abort());
  }

  /** `await using ctx = await model.createContext()` disposes it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  #ensureIdle(): void {
    this.#lifetime.check();
    if (this.#busy) throw new LlamemError("ERR_BUSY", "a generation is already running on this context; await it or abort it first");
  }

  /** Keeps the cached tokens shared with `prompt` and returns the rest to evaluate (at least one). */
  #reusePrefix(prompt: Int32Array): Int32Array {
    let common = 0;
    const max = Math.min(this.#tokens.length, prompt.length - 1);
    while (common < max && this.#tokens[common] === prompt[common]) common++;
    if (common < this.#tokens.length) {
      this.#native.seqRemove(0, common, -1);
      this.#tokens.length = common;
    }
    return prompt.subarray(common);
  }

  async #eval(tokens: Int32Array, sampler: Sampler["native"] | null, acceptInput: boolean): Promise<NativeEvalResult> {
    const base = this.#tokens.length;
    try {
      const r = await this.#lifetime.run(() => this.#native.eval(0, tokens, sampler, acceptInput));
      for (const t of tokens) this.#tokens.push(t);
      return r;
    } catch (err) {
      // An aborted or failed decode may have kept part of the batch: resync from the cache.
      if (!this.#lifetime.disposed) {
        const kept = Math.max(0, Math.min(tokens.length, this.#native.seqPosRange(0)[1] + 1 - base));
        for (const t of tokens.subarray(0, kept)) this.#tokens.push(t);
      }
      throw err;
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
