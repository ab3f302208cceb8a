/**
 * An inference context: the KV cache and compute buffers for one model, split into sequences.
 */
import { availableParallelism } from "node:os";
import { readFileSync } from "node:fs";
import { fromNative, invalidArgument } from "./errors.js";
import { Lifetime } from "./lifetime.js";
import { native, type NativeContext, type NativeContextInfo, type NativeContextOptions, type NativeMemoryRow } from "./native.js";
import type { Model } from "./model.js";
import { Sequence, type GenerateOptions, type GenerationResult, type SequenceHost } from "./sequence.js";
import { fitContextSize, type FitResult } from "./memory/fit.js";

export type { GenerateOptions, GenerationResult, StopReason } from "./sequence.js";

/** Element types the KV cache can be stored in. */
export type KvCacheType = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_1" | "iq4_nl" | "q5_0" | "q5_1";

/** ggml type ids of the KV cache types. */
export const KV_TYPES: Readonly<Record<KvCacheType, number>> = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q5_0: 6, q5_1: 7, q8_0: 8, iq4_nl: 20, bf16: 30,
};

/** Options of {@link Model.createContext}. */
export interface ContextOptions {
  /**
   * Tokens the KV cache holds (all sequences together). Default: min(4096, the trained context).
   * "auto" picks the largest size that fits the free memory (or `maxRam`/`maxVram`).
   */
  contextSize?: number | "auto";
  /** Most tokens submitted to one decode (default 512). */
  batchSize?: number;
  /** Physical micro-batch size (default min(batchSize, 512)). */
  ubatchSize?: number;
  /** Parallel sequences (default 1). */
  sequences?: number;
  /** One KV pool shared by all sequences instead of a fixed slice each (default false). */
  kvUnified?: boolean;
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
  /** Keep the KV cache on the GPU with the offloaded layers (default true); false keeps it in host RAM. */
  offloadKv?: boolean;
  /** Full-size cache for sliding-window-attention layers (default false). */
  swaFull?: boolean;
  /** Host memory budget in bytes for `contextSize: "auto"` (default: available RAM minus a margin). */
  maxRam?: number;
  /** GPU memory budget in bytes for `contextSize: "auto"`. */
  maxVram?: number;
}

/** Bytes one buffer type holds, from llama.cpp's memory breakdown. */
export type MemoryRow = NativeMemoryRow;

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
}

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

function kvName(id: number): string {
  return Object.entries(KV_TYPES).find(([, v]) => v === id)?.[0] ?? String(id);
}

function kvType(name: KvCacheType | undefined, option: string): number {
  if (name === undefined) return KV_TYPES.f16;
  const id = KV_TYPES[name];
  if (id === undefined) invalidArgument(`${option} must be one of ${Object.keys(KV_TYPES).join(", ")}`);
  return id;
}

/** Turns user options into the native options object (contextSize must be resolved already). @internal */
export function nativeContextOptions(o: ContextOptions, contextSize: number): NativeContextOptions {
  const threads = o.threads ?? defaultThreads();
  const fa = o.flashAttention ?? "auto";
  if (fa !== "auto" && fa !== "on" && fa !== "off") invalidArgument('flashAttention must be "auto", "on" or "off"');
  if (!Number.isInteger(contextSize) || contextSize < 1) invalidArgument('contextSize must be a positive integer or "auto"');
  const batchSize = o.batchSize ?? 512;
  return {
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
    swaFull: o.swaFull ?? false,
    kvUnified: o.kvUnified ?? false,
    embeddings: false,
  };
}

/** The default context size for a model: min(4096, its trained context). @internal */
export function defaultContextSize(model: Model): number {
  return Math.min(4096, model.info.trainedContextSize || 4096);
}

/**
 * A context on a model. Its sequences share the KV cache; `ctx.generate()` runs on sequence 0.
 * Dispose it (or `await using`) to free the cache.
 */
export class Context {
  readonly #native: NativeContext;
  readonly #lifetime = new Lifetime("context");
  readonly #sequences: Sequence[] = [];
  readonly #info: NativeContextInfo;
  #queue: Promise<unknown> = Promise.resolve();
  #running: number | undefined;
  /** The model this context runs. */
  readonly model: Model;
  /** What `contextSize: "auto"` or a memory budget decided, and why; undefined without either. */
  readonly fit: FitResult | undefined;

  private constructor(model: Model, handle: NativeContext, opts: NativeContextOptions, fit: FitResult | undefined) {
    this.model = model;
    this.#native = handle;
    this.fit = fit;
    this.#info = handle.info();
    const layout = `${opts.sequences} sequences${opts.kvUnified ? " (unified KV)" : ""}, K ${kvName(opts.typeK)}, V ${kvName(opts.typeV)}`;
    const host: SequenceHost = {
      model,
      native: handle,
      check: () => this.#lifetime.check(),
      enqueue: (op, owner) => this.#enqueue(op, owner),
      abort: (owner) => {
        if (this.#running === owner) handle.abort();
      },
      sequenceContextSize: this.#info.sequenceContextSize,
      canShift: this.#info.canShift,
      layout,
    };
    for (let i = 0; i < this.#info.sequences; i++) this.#sequences.push(new Sequence(host, i));
  }

  /** @internal Use {@link Model.createContext}. */
  static async create(model: Model, o: ContextOptions): Promise<Context> {
    // "auto" is fitted; a fixed size with a budget is checked against it before allocating.
    const budgeted = o.contextSize === "auto" || o.maxRam !== undefined || o.maxVram !== undefined;
    const fit = budgeted ? await fitContextSize(model, o) : undefined;
    const contextSize = fit?.contextSize ?? (o.contextSize === "auto" ? defaultContextSize(model) : (o.contextSize ?? defaultContextSize(model)));
    const opts = nativeContextOptions(o, contextSize);
    try {
      return new Context(model, await native().Context.create(model.native, opts), opts, fit);
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
  get info(): NativeContextInfo {
    this.#lifetime.check();
    return this.#info;
  }

  /** Sequence `id` (0 ≤ id < sequences). */
  sequence(id = 0): Sequence {
    this.#lifetime.check();
    const s = this.#sequences[id];
    if (!s) invalidArgument(`sequence(id): id must be an integer in [0, ${this.#sequences.length})`);
    return s;
  }

  /** All sequences of the context. */
  get sequences(): readonly Sequence[] {
    return this.#sequences;
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

  /** Empties the KV cache of every sequence. */
  async clear(): Promise<void> {
    for (const s of this.#sequences) await s.clear();
  }

  /** Bytes for weights, this context's KV cache and compute buffers, and KV cells in use. */
  async memory(): Promise<ContextMemory> {
    const m = await this.#enqueue(() => this.#native.memory());
    const sum = (k: "model" | "context" | "compute") => m.rows.reduce((s, r) => s + r[k], 0);
    return { rows: m.rows, weights: sum("model"), kv: sum("context"), compute: sum("compute"), cellsUsed: m.cellsUsed, cells: m.cells };
  }

  /** Aborts and frees the context; waits for a decode in flight. Calling it again is a no-op. */
  async dispose(): Promise<void> {
    await this.#lifetime.dispose(() => this.#native.dispose(), () => this.#native.abort());
  }

  /** `await using ctx = await model.createContext()` disposes it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  /** @internal The native handle, for the session pool's batched decodes. */
  get native(): NativeContext {
    this.#lifetime.check();
    return this.#native;
  }

  /** @internal Runs native work after everything queued before it (one at a time per context). */
  enqueue<T>(op: () => T | Promise<T>, owner?: number): Promise<T> {
    return this.#enqueue(op, owner);
  }

  #enqueue<T>(op: () => T | Promise<T>, owner?: number): Promise<T> {
    const run = this.#queue.then(() =>
      this.#lifetime.run(async () => {
        this.#running = owner;
        try {
          return await op();
        } finally {
          this.#running = undefined;
        }
      }),
    );
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
