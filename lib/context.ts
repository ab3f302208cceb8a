/**
 * An inference context: the KV cache and compute buffers for one model, split into sequences,
 * and the one generation engine that decodes for all of them.
 */
import { LlamemError, fromNative, invalidArgument } from "./errors.js";
import { LoraAdapter } from "./adapter.js";
import { Lifetime } from "./lifetime.js";
import { native, type NativeContext } from "./internal/native.js";
import { bindContext, nativeModel } from "./internal/handles.js";
import type { Model } from "./model.js";
import { Sequence, type GenerateOptions, type GenerationResult } from "./sequence.js";
import { Engine } from "./generation.js";
import { contextBaton, defaultContextSize, kvTypeName, POOLING_TYPES, type ContextShapeOptions, type PoolingType } from "./options.js";
import { embedTexts, rerankTexts, type EmbedOptions } from "./embedding.js";
import { fitContextSize, type FitResult } from "./memory/fit.js";
import { checkDraftOptions, Drafter, type DraftOptions, type DraftStats } from "./speculative.js";

export type { GenerateOptions, GenerationResult, StopReason } from "./generation.js";
export type { KvCacheType } from "./options.js";
export type { DraftOptions, DraftStats } from "./speculative.js";

/** Options of {@link Model.createContext}. */
export interface ContextOptions extends ContextShapeOptions {
  /**
   * Tokens the KV cache holds (all sequences together). Default: min(4096, the trained context).
   * "auto" picks the largest size that fits the free memory (or `maxRam`/`maxVram`).
   */
  contextSize?: number | "auto";
  /** Host memory budget in bytes for `contextSize: "auto"` (default: available RAM minus a margin). */
  maxRam?: number;
  /** GPU memory budget in bytes for `contextSize: "auto"`. */
  maxVram?: number;
  /**
   * Speculative decoding: a smaller model of the same vocabulary drafts tokens that this model
   * verifies several at a time. Its context has this one's shape and counts in the budgets and
   * in {@link Context.memory}. Not for recurrent or hybrid models, nor embedding contexts.
   */
  draft?: DraftOptions;
}

/** Bytes one buffer type holds, from llama.cpp's memory breakdown. */
export interface MemoryRow {
  /** The buffer type's name: CPU, CPU_Mapped, CPU_REPACK, AMX, CUDA0, … */
  bufferType: string;
  /** The device it lives on, or null for host buffers without one. */
  device: string | null;
  /** True for host (CPU-side) memory. */
  host: boolean;
  /** Bytes of weights, of this context's KV cache, and of compute buffers. */
  model: number;
  context: number;
  compute: number;
}

/** Where a context's memory went. */
export interface ContextMemory {
  /** Per buffer type (CPU, CPU_Mapped, CPU_REPACK, CUDA0, …). */
  rows: MemoryRow[];
  /** Totals over the rows, in bytes. */
  weights: number;
  kv: number;
  compute: number;
  /** KV cells in use (over all sequences) and the cells the cache has. */
  cellsUsed: number;
  cells: number;
  /**
   * With a draft model: its context's breakdown (its `weights` are the draft model's). The
   * totals above are this context's own; the two together are what the context costs.
   */
  draft?: ContextMemory;
}

/** A context's shape as llama.cpp applied it. */
export interface ContextInfo {
  /** KV cells over all sequences. */
  contextSize: number;
  /** Tokens one sequence can hold. */
  sequenceContextSize: number;
  batchSize: number;
  ubatchSize: number;
  sequences: number;
  threads: number;
  threadsBatch: number;
  /** Whether cached positions can be shifted in place (removeTokens without re-evaluating the tail). */
  canShift: boolean;
  /** An embedding context (see {@link ContextShapeOptions.embeddings}). */
  embeddings: boolean;
  /** How it pools, as llama.cpp resolved "model" ("none" for a generating context). */
  pooling: PoolingType;
  /** Floats of one embedding (the model's output width), or scores of a reranker. */
  embeddingSize: number;
}

/**
 * A context on a model. Its sequences share the KV cache; `ctx.generate()` runs on sequence 0.
 * Dispose it (or `await using`) to free the cache.
 */
export class Context {
  readonly #native: NativeContext;
  readonly #lifetime = new Lifetime("context");
  readonly #sequences: Sequence[] = [];
  readonly #info: ContextInfo;
  readonly #drafter: Drafter | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #engine: Engine;
  /** The model this context runs. */
  readonly model: Model;
  /** What `contextSize: "auto"` or a memory budget decided, and why; undefined without either. */
  readonly fit: FitResult | undefined;

  private constructor(model: Model, handle: NativeContext, stateLayout: string, fit: FitResult | undefined, drafter: Drafter | undefined) {
    this.model = model;
    this.#native = handle;
    this.#drafter = drafter;
    this.fit = fit;
    const raw = handle.info();
    const pooling = (Object.keys(POOLING_TYPES) as PoolingType[]).find((k) => POOLING_TYPES[k] === raw.pooling && k !== "model") ?? "none";
    const info: ContextInfo = { ...raw, pooling: raw.embeddings ? pooling : "none" };
    this.#info = Object.freeze(info);
    const check = () => this.#lifetime.check();
    // The engine's own work (and the draft's, which runs inside the engine's steps) goes straight
    // to the queue; everything else first halts a native generation loop in flight, so it waits
    // one step, not the whole loop.
    const engineQueue = <T>(op: () => T | Promise<T>) => this.#run(op);
    drafter?.runIn(engineQueue);
    const engine = new Engine({
      native: handle, enqueue: engineQueue, batchSize: info.batchSize, sequenceContextSize: info.sequenceContextSize, drafter,
      loops: !model.info.recurrent,
    });
    this.#engine = engine;
    const enqueue = <T>(op: () => T | Promise<T>) => this.#enqueue(op);
    bindContext(this, { native: handle, engine, check, enqueue });
    const inner = { context: this, native: handle, engine, enqueue, check, stateLayout };
    for (let i = 0; i < info.sequences; i++) this.#sequences.push(new Sequence(inner, i));
  }

  /** @internal Use {@link Model.createContext}. */
  static async create(model: Model, o: ContextOptions): Promise<Context> {
    if (o === null || typeof o !== "object") invalidArgument("createContext(options): options must be an object");
    const draft = o.draft === undefined ? undefined : checkDraftOptions(model, o.draft);
    if (draft && o.embeddings === true) invalidArgument("draft: an embedding context does not generate");
    // "auto" is fitted; a fixed size with a budget is checked against it before allocating.
    const budgeted = o.contextSize === "auto" || o.maxRam !== undefined || o.maxVram !== undefined;
    const fit = budgeted ? await fitContextSize(model, o) : undefined;
    const contextSize = fit?.contextSize ?? (o.contextSize === undefined || o.contextSize === "auto" ? defaultContextSize(model.info.trainedContextSize) : o.contextSize);
    const baton = contextBaton(o, contextSize, draft?.maxDraftTokens ?? 0);
    const layout = `${baton.sequences} sequences${baton.kvUnified ? " (unified KV)" : ""}, K ${kvTypeName(baton.typeK)}, V ${kvTypeName(baton.typeV)}`;
    let handle: NativeContext;
    try {
      handle = await native().Context.create(nativeModel(model), baton, null);
    } catch (err) {
      throw fromNative(err);
    }
    let drafter: Drafter | undefined;
    try {
      // The draft's context mirrors this one (sequences, size, cache types).
      if (draft) drafter = await Drafter.create(draft, contextBaton(o, contextSize), handle);
    } catch (err) {
      await handle.dispose();
      throw fromNative(err);
    }
    return new Context(model, handle, layout, fit, drafter);
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
  get info(): ContextInfo {
    this.#lifetime.check();
    return this.#info;
  }

  /** Sequence `id` (0 ≤ id < sequences). */
  sequence(id = 0): Sequence {
    this.#lifetime.check();
    const s = Number.isInteger(id) ? this.#sequences[id] : undefined;
    if (!s) invalidArgument(`sequence(id): id must be an integer in [0, ${this.#sequences.length})`);
    return s;
  }

  /** All sequences of the context. */
  get sequences(): readonly Sequence[] {
    return this.#sequences;
  }

  /**
   * One vector per text, from an embedding context (`embeddings: true`): the texts are tokenized
   * (with the model's special tokens), packed into batches over the context's sequences, and
   * pooled as the context says; normalized to unit length unless `normalize: false`.
   */
  async embed(texts: readonly string[], options: EmbedOptions = {}): Promise<Float32Array[]> {
    this.#lifetime.check();
    return embedTexts(this.#embedder(), texts, options);
  }

  /**
   * Scores how well each document answers `query`, from a reranker's embedding context
   * (`pooling: "rank"`): one score per document, higher is better.
   */
  async rerank(query: string, documents: readonly string[], options: Omit<EmbedOptions, "normalize"> = {}): Promise<number[]> {
    this.#lifetime.check();
    return rerankTexts(this.#embedder(), query, documents, options);
  }

  #embedder() {
    return { model: this.model, info: this.#info, run: (entries: { seq: number; tokens: Int32Array }[]) => this.#enqueue(() => this.#native.embedBatch(entries)) };
  }

  /** Generates on sequence 0; see {@link Sequence.generate}. */
  async *generate(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): AsyncGenerator<string, void, void> {
    yield* this.sequence(0).generate(prompt, options);
  }

  /** Generates on sequence 0 and collects the whole text. */
  async complete(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Promise<GenerationResult> {
    return this.sequence(0).complete(prompt, options);
  }

  /** Evaluates tokens on sequence 0 without sampling; returns the decode time in µs. */
  async evaluate(tokens: ArrayLike<number>): Promise<number> {
    return this.sequence(0).evaluate(tokens);
  }

  /** The figures of sequence 0's last generation. */
  get lastGeneration(): GenerationResult | undefined {
    return this.#sequences[0]?.lastGeneration;
  }

  /** Token ids in sequence 0's KV cache. */
  get tokens(): readonly number[] {
    return this.#sequences[0]?.tokens ?? [];
  }

  /**
   * Sets the LoRA adapters later generations apply, each with its scale (0 leaves it out; [] for
   * none), replacing those set before. Call it between generations: ERR_BUSY while a sequence
   * generates. The KV cache of every sequence is emptied, since it was computed with the old
   * weights. An adapter stays in use here until it is replaced, even after its dispose().
   */
  async setAdapters(adapters: readonly { adapter: LoraAdapter; scale: number }[]): Promise<void> {
    this.#lifetime.check();
    if (!Array.isArray(adapters)) invalidArgument("setAdapters(adapters): adapters must be an array of { adapter, scale }");
    const entries = adapters.map((e, i) => {
      if (e === null || typeof e !== "object" || !(e.adapter instanceof LoraAdapter)) invalidArgument(`adapters[${i}].adapter must be a LoraAdapter from model.loadAdapter()`);
      if (typeof e.scale !== "number" || !Number.isFinite(e.scale) || Math.abs(e.scale) > 1e6) invalidArgument(`adapters[${i}].scale must be a finite number in [-1e6, 1e6]`);
      return { adapter: e.adapter.handle(), scale: e.scale };
    });
    for (const s of this.#sequences) {
      if (s.busy) throw new LlamemError("ERR_BUSY", `sequence ${s.id} is generating; set the adapters between generations`);
    }
    await this.#enqueue(() => this.#native.setAdapters(entries));
    await this.clear();
  }

  /** Tokens drafted and accepted since the context was created (undefined without a draft model). */
  get draftStats(): DraftStats | undefined {
    this.#lifetime.check();
    return this.#drafter ? { ...this.#drafter.stats } : undefined;
  }

  /** Empties the KV cache of every sequence. */
  async clear(): Promise<void> {
    for (const s of this.#sequences) await s.clear();
  }

  /** Bytes for weights, this context's KV cache and compute buffers, and KV cells in use. */
  async memory(): Promise<ContextMemory> {
    const m = await this.#enqueue(() => this.#native.memory());
    const sum = (k: "model" | "context" | "compute") => m.rows.reduce((s, r) => s + r[k], 0);
    const draft = this.#drafter ? await this.#drafter.memory() : undefined;
    return { rows: m.rows, weights: sum("model"), kv: sum("context"), compute: sum("compute"), cellsUsed: m.cellsUsed, cells: m.cells, ...(draft ? { draft } : {}) };
  }

  /** Aborts and frees the context; waits for a decode in flight. Calling it again is a no-op. */
  async dispose(): Promise<void> {
    const drafter = this.#drafter;
    await this.#lifetime.dispose(
      async () => {
        // The draft first: it runs on this context's thread pools.
        await drafter?.dispose();
        await this.#native.dispose();
      },
      () => {
        this.#native.abort();
        drafter?.abort();
      },
    );
  }

  /** `await using ctx = await model.createContext()` disposes it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  /** Runs native work after everything queued before it (one at a time per context), halting a generation loop in flight. */
  #enqueue<T>(op: () => T | Promise<T>): Promise<T> {
    this.#engine.interrupt();
    return this.#run(op);
  }

  /** Runs native work after everything queued before it (one at a time per context). */
  #run<T>(op: () => T | Promise<T>): Promise<T> {
    const run = this.#queue.then(() => this.#lifetime.run(async () => op()));
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
