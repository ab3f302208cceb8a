/**
 * A loaded GGUF model: metadata, tokenizer, chat template, and the factory of contexts.
 */
import { createHash } from "node:crypto";
import { open, stat } from "node:fs/promises";
import { toTokenIds } from "./tokens.js";
import { LlamemError, fromNative, invalidArgument } from "./errors.js";
import type { GgufFile } from "./gguf/format.js";
import { readGguf } from "./gguf/read.js";
import { fitFile } from "./memory/fit.js";
import { hostCopiedWeights } from "./memory/estimate.js";
import { addRpcServers } from "./rpc.js";
import { native, type NativeBinding, type NativeModel, type NativeModelInfo } from "./internal/native.js";
import { bindModel } from "./internal/handles.js";
import { Context, type ContextOptions, type MemoryRow } from "./context.js";
import { Lifetime } from "./lifetime.js";
import { LoraAdapter, readAdapterHeader } from "./adapter.js";
import { contextBaton, DEFAULTS, defaultContextSize, LOAD_MODES, loadBaton, VOCAB_TYPES, type PlacementOptions, type PoolingType } from "./options.js";
import type { EmbedOptions } from "./embedding.js";
import { checkMessages, checkTemplateOptions, isJinja, renderChat, renderChats, type ChatMessage, type ChatTemplateOptions, type TemplateContext } from "./chat/template.js";

export type { ChatMessage, ChatTemplateOptions, ChatTool, ChatToolCall } from "./chat/template.js";

/**
 * How the weights are brought into memory. "auto" (the default) maps the file unless the CPU
 * backend would repack most of the weights into its own layout: then the mapped pages would be
 * resident beside the repacked copy, so the file is read instead ("none"), halving RAM.
 */
export type LoadMode = "auto" | "mmap" | "none" | "mlock" | "mmap+mlock" | "directIo";

/** The load modes llama.cpp knows (llama_load_mode). */
type ResolvedLoadMode = keyof typeof LOAD_MODES;

/** Options of {@link loadModel}. */
export interface LoadModelOptions extends PlacementOptions {
  /**
   * Layers to offload to the GPU; -1 or "max" for all. "auto" offloads as many as fit the free
   * GPU memory (or `maxVram`) with a context of `contextSize`. Default 0 (CPU only).
   */
  gpuLayers?: number | "auto" | "max";
  /** The context size `gpuLayers: "auto"` plans for (default: min(4096, the trained context)). */
  contextSize?: number;
  /** GPU memory budget in bytes for `gpuLayers: "auto" | "max"`. */
  maxVram?: number;
  /** Host memory budget in bytes for `gpuLayers: "auto" | "max"`. */
  maxRam?: number;
  /**
   * llama.cpp RPC servers ("host:port") whose devices take part in the load, spreading layers
   * over several machines. No authentication: loopback or a private network only. A server that
   * cannot be reached, or is not an RPC server, is ERR_IO naming it; see {@link addRpcServers}.
   */
  rpcServers?: string[];
  /** Map the file (true) or read it (false). Shorthand for `loadMode: "mmap"` / `"none"`; default "auto". */
  mmap?: boolean;
  /** Lock the weights in RAM so the OS cannot page them out (default false). */
  mlock?: boolean;
  /** Full control over the load mode; overrides `mmap` and `mlock`. */
  loadMode?: LoadMode;
  /**
   * Let the CPU backend repack weights into faster layouts (AMX, Q4_0 x8). Default true, except
   * for recurrent and hybrid models (ggml's AMX kernel misreads their batched inputs).
   */
  repack?: boolean;
  /** Load only the vocabulary: tokenize and detokenize work, contexts cannot be created. */
  vocabOnly?: boolean;
  /**
   * Called with the load progress in [0, 1]. If it throws, the load is cancelled, whatever was
   * loaded is freed, and `loadModel` rejects with that error.
   */
  onProgress?: (progress: number) => void;
  /** Cancels the load; the promise rejects with ERR_ABORTED. */
  signal?: AbortSignal;
}

/** What a model is, from its GGUF metadata and llama.cpp. */
export interface ModelInfo {
  /** The GGUF `general.architecture`, e.g. "llama". */
  architecture: string;
  /** The GGUF `general.name`, if present. */
  name: string | undefined;
  /** llama.cpp's one-line description (architecture, size, type). */
  description: string;
  /** Size of the file on disk in bytes. */
  fileSize: number;
  /** Bytes of tensor data. */
  size: number;
  /** Number of parameters. */
  parameters: number;
  /** The context length the model was trained with. */
  trainedContextSize: number;
  embeddingSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocabSize: number;
  /** The tokenizer's kind: "spm", "bpe", "wpm", "ugm", "rwkv", "plamo2" (or "none"). */
  vocabType: string;
  /** Tokens a sliding-window attention layer sees; 0 when the model has none. */
  slidingWindow: number;
  /** True for recurrent and hybrid models (their cache cannot shift positions). */
  recurrent: boolean;
  /**
   * The device that holds the output layer ("CPU", "CUDA0", …; "" without one, as for a
   * vocabulary-only load): where logits are made, and where backend sampling runs.
   */
  outputDevice: string;
  /** True for encoder-decoder models; `hasDecoder` false for encoder-only ones. */
  hasEncoder: boolean;
  hasDecoder: boolean;
  /** Token ids of BOS/EOS/EOT, or -1. */
  bos: number;
  eos: number;
  eot: number;
  /** Whether tokenizing with `addSpecial` prepends BOS, and appends EOS. */
  addBos: boolean;
  addEos: boolean;
  /** The separator token (BERT's [SEP]), or -1, and whether `addSpecial` appends it. */
  sep: number;
  addSep: boolean;
  /** The model's Jinja chat template, if it has one. */
  chatTemplate: string | undefined;
  /** Every GGUF metadata entry as llama.cpp renders it (long arrays are abbreviated). */
  metadata: Record<string, string>;
}

/** Options of {@link Model.tokenize}. */
export interface TokenizeOptions {
  /** Add BOS/EOS as the model is configured to (default true). */
  addSpecial?: boolean;
  /** Parse special-token text such as `<s>` into their ids (default false: treat as text). */
  parseSpecial?: boolean;
}

/** Loads a GGUF model off the JS thread. */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
  if (typeof path !== "string" || path.length === 0) invalidArgument("loadModel(path): path must be a non-empty string");
  if (options === null || typeof options !== "object") invalidArgument("loadModel(path, options): options must be an object");
  const { signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) invalidArgument("signal must be an AbortSignal");
  if (options.onProgress !== undefined && typeof options.onProgress !== "function") invalidArgument("onProgress must be a function");
  if (signal?.aborted) throw new LlamemError("ERR_ABORTED", "model load was aborted before it started");
  const requestedMode = requestedLoadMode(options);
  const g = options.gpuLayers ?? DEFAULTS.gpuLayers;
  if (g !== "auto" && g !== "max" && (!Number.isInteger(g) || g < -1)) invalidArgument('gpuLayers must be an integer >= -1, "auto" or "max"');

  // Validate the file ourselves first: llama.cpp aborts the process on some malformed files.
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new LlamemError("ERR_FILE_NOT_FOUND", `model file not found: ${path}`);
  if (!st.isFile()) throw new LlamemError("ERR_NOT_A_FILE", `not a regular file: ${path}`);
  const gguf = await readGguf(path);
  if (options.rpcServers !== undefined) await addRpcServers(options.rpcServers);
  // Recurrent and hybrid models decode several sequences as one 3-D batch, which ggml's AMX
  // matmul reads past the end of a repacked weight with (wrong tokens, or a crash): so their
  // weights stay unrepacked unless the caller asks otherwise.
  const repack = options.repack ?? (hasRecurrentLayers(gguf) ? false : DEFAULTS.repack);
  // "auto"/"max" are decided from llama.cpp's dry run before anything is allocated.
  const gpuLayers =
    typeof g === "number"
      ? g
      : (await fitFile(path, trainedContextOf(gguf), { ...options, gpuLayers: g, repack }, true)).gpuLayers;
  const vocabOnly = options.vocabOnly ?? false;
  // Checked before the dry run, so a bad placement option fails fast.
  loadBaton(options, { gpuLayers, loadMode: "mmap", repack, vocabOnly });
  const loadMode = requestedMode !== "auto" ? requestedMode : vocabOnly ? "mmap" : await autoLoadMode(path, options, gpuLayers, repack);
  const baton = loadBaton(options, { gpuLayers, loadMode, repack, vocabOnly });
  if (signal?.aborted) throw new LlamemError("ERR_ABORTED", "model load was aborted");

  // Native progress arrives through the event loop and can trail the load's completion: report
  // only increasing values, and 1 before the promise resolves, never after. A callback that
  // throws cancels the load, which then rejects with its error (the rule for every callback).
  let last = -1;
  let settled = false;
  let thrown: { error: unknown } | undefined;
  const report = (p: number) => {
    if (settled || thrown || p <= last) return;
    last = p;
    try {
      options.onProgress?.(p);
    } catch (error) {
      thrown = { error };
      started?.cancel();
    }
  };
  let started: ReturnType<NativeBinding["Model"]["load"]> | undefined;
  try {
    started = native().Model.load(path, baton, options.onProgress ? report : null);
  } catch (err) {
    throw fromNative(err);
  }
  const { promise, cancel } = started;
  const onAbort = () => cancel();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    let handle: NativeModel;
    try {
      handle = await promise;
    } catch (err) {
      if (thrown) throw thrown.error;
      throw err;
    }
    report(1);
    settled = true;
    if (thrown || signal?.aborted) {
      await handle.dispose();
      if (thrown) throw thrown.error;
      throw new LlamemError("ERR_ABORTED", "model load was aborted");
    }
    return new Model(handle, gguf, { gpuLayers, repack, loadMode, vocabOnly });
  } catch (err) {
    if (thrown && err === thrown.error) throw err;
    throw fromNative(err);
  } finally {
    settled = true;
    signal?.removeEventListener("abort", onAbort);
  }
}

function requestedLoadMode(o: LoadModelOptions): LoadMode {
  if (o.loadMode !== undefined) {
    if (typeof o.loadMode !== "string" || (o.loadMode !== "auto" && !Object.hasOwn(LOAD_MODES, o.loadMode))) {
      invalidArgument(`loadMode must be one of auto, ${Object.keys(LOAD_MODES).join(", ")}`);
    }
    return o.loadMode;
  }
  if (o.mmap === undefined && !o.mlock) return "auto";
  const mmap = o.mmap ?? true;
  return mmap ? (o.mlock ? "mmap+mlock" : "mmap") : o.mlock ? "mlock" : "none";
}

/**
 * Reads the file instead of mapping it when llama.cpp's dry run puts any host weights in a buffer
 * of their own (CPU_REPACK, AMX, a GPU's pinned host buffer: see {@link hostCopiedWeights}):
 * mapped, their pages would stay resident beside the copy, so those weights would take RAM
 * twice. Maps it otherwise, so plain weights stay shared, lazily paged file cache. Either way
 * every weight is resident once, as the estimate counts it.
 */
async function autoLoadMode(path: string, placement: PlacementOptions, gpuLayers: number, repack: boolean): Promise<ResolvedLoadMode> {
  // Asked even without repacking: a GPU backend's pinned host buffer holds CPU layers' weights.
  let rows;
  try {
    // The context's size does not change where weights go: the smallest one llama.cpp pads to.
    const load = loadBaton(placement, { gpuLayers, loadMode: "mmap", repack, vocabOnly: false });
    rows = (await native().Model.estimate(path, load, contextBaton({}, 256))).rows;
  } catch (err) {
    throw fromNative(err);
  }
  return hostCopiedWeights(rows) > 0 ? "none" : "mmap";
}

/** A loaded model. Dispose it (or use `await using`) to free its memory. */
export class Model {
  readonly #native: NativeModel;
  readonly #lifetime = new Lifetime("model");
  readonly #contexts = new Set<Context>();
  readonly #adapters = new Set<LoraAdapter>();
  readonly #info: ModelInfo;
  readonly #gguf: GgufFile;
  #fingerprint: Promise<string> | undefined;
  #disposing: Promise<void> | undefined;
  /** The path the model was loaded from. */
  readonly path: string;
  /** True when only the vocabulary was loaded. */
  readonly vocabOnly: boolean;
  /** Layers offloaded to the GPU (as resolved from "auto"/"max"). */
  readonly gpuLayers: number;
  /** Whether CPU weight repacking was allowed. */
  readonly repack: boolean;
  /** How the weights were loaded ("auto" resolved to "mmap" or "none"). */
  readonly loadMode: LoadMode;

  /** @internal Use {@link loadModel}. */
  constructor(handle: NativeModel, gguf: GgufFile, o: { gpuLayers: number; repack: boolean; loadMode: LoadMode; vocabOnly: boolean }) {
    this.#native = handle;
    this.#gguf = gguf;
    this.path = gguf.path;
    this.vocabOnly = o.vocabOnly;
    this.gpuLayers = o.gpuLayers;
    this.repack = o.repack;
    this.loadMode = o.loadMode;
    this.#info = toInfo(handle.info(), gguf.fileSize);
    bindModel(this, { native: handle, check: () => this.#lifetime.check() });
  }

  /** The parsed GGUF header (metadata and tensor table). */
  get gguf(): GgufFile {
    return this.#gguf;
  }

  /**
   * A hash that names this exact model: its GGUF header (metadata, tensor table) and the first
   * 64 KiB of tensor data. Saved states carry it so a restore into another model is refused.
   */
  fingerprint(): Promise<string> {
    this.#fingerprint ??= (async () => {
      const h = createHash("sha256");
      const fh = await open(this.path, "r");
      try {
        const len = Math.min(this.#gguf.fileSize, this.#gguf.dataOffset + 64 * 1024);
        const buf = Buffer.alloc(len);
        await fh.read(buf, 0, len, 0);
        h.update(buf);
      } finally {
        await fh.close();
      }
      return h.update(String(this.#gguf.fileSize)).digest("hex");
    })();
    return this.#fingerprint;
  }

  /** Model facts and metadata. */
  get info(): ModelInfo {
    this.#lifetime.check();
    return this.#info;
  }

  /** True once {@link dispose} was called. */
  get disposed(): boolean {
    return this.#lifetime.disposed;
  }

  /** Converts text to token ids. */
  async tokenize(text: string, options: TokenizeOptions = {}): Promise<number[]> {
    return Array.from(await this.tokenizeRaw(text, options));
  }

  /** @internal tokenize into an Int32Array. */
  tokenizeRaw(text: string, options: TokenizeOptions = {}): Promise<Int32Array> {
    if (typeof text !== "string") invalidArgument("tokenize(text): text must be a string");
    checkOptions(options, "tokenize(text, options)");
    return this.#lifetime.run(() =>
      this.#native.tokenize(text, options.addSpecial ?? true, options.parseSpecial ?? false),
    );
  }

  /** Converts token ids back to text (special tokens rendered when `special` is true). */
  async detokenize(tokens: ArrayLike<number>, options: { special?: boolean } = {}): Promise<string> {
    checkOptions(options, "detokenize(tokens, options)");
    const arr = toTokenIds(tokens);
    const bytes = await this.#lifetime.run(() => this.#native.detokenize(arr, false, options.special ?? false));
    return bytes.toString("utf8");
  }

  /** The bytes of one token's text (a token may hold part of a UTF-8 character). */
  tokenToPiece(token: number, options: { special?: boolean } = {}): Buffer {
    this.#lifetime.check();
    checkOptions(options, "tokenToPiece(token, options)");
    try {
      return this.#native.tokenToPiece(token, options.special ?? false);
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * Formats messages with the model's chat template (or `options.template`), ready to tokenize
   * with `parseSpecial: true`. A Jinja template (the model's own, or source given) renders in a
   * sandbox off the JS thread, with tools, `thinking` and the date; a built-in format's name
   * ("chatml", "llama3", ...) and models without a template use llama.cpp's built-in formats.
   * ERR_TEMPLATE when the template fails to render or breaks the sandbox's limits.
   */
  async applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): Promise<string> {
    this.#lifetime.check();
    checkOptions(options, "applyChatTemplate(messages, options)");
    const source = options.template ?? this.info.chatTemplate;
    const jinja = source !== undefined && isJinja(source);
    checkTemplateOptions(options, jinja);
    checkMessages(messages);
    if (jinja) return renderChat(source, messages, this.#templateContext(), options);
    try {
      const plain = messages.map((m) => ({ role: m.role, content: m.content }));
      return this.#native.applyChatTemplate(plain, options.addAssistant ?? true, options.template ?? null);
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * @internal Formats several conversations with the same options, in one trip to the template
   * sandbox (a session's many small windows); each result is the text or its error.
   */
  async applyChatTemplates(conversations: ChatMessage[][], options: ChatTemplateOptions = {}): Promise<(string | LlamemError)[]> {
    this.#lifetime.check();
    const source = options.template ?? this.info.chatTemplate;
    if (source !== undefined && isJinja(source)) {
      checkTemplateOptions(options, true);
      conversations.forEach((m) => checkMessages(m));
      return renderChats(source, conversations, this.#templateContext(), options);
    }
    const out: (string | LlamemError)[] = [];
    for (const m of conversations) out.push(await this.applyChatTemplate(m, options).catch((err: LlamemError) => err));
    return out;
  }

  #templateText: TemplateContext | undefined;

  /** The BOS and EOS strings templates write (`bos_token`, `eos_token`), from the vocabulary. */
  #templateContext(): TemplateContext {
    if (!this.#templateText) {
      const text = (id: number) => (id >= 0 ? this.tokenToPiece(id, { special: true }).toString("utf8") : "");
      this.#templateText = { bosText: text(this.info.bos), eosText: text(this.info.eos) };
    }
    return this.#templateText;
  }

  /**
   * One vector per text, on a context created for the call and freed after it (for many calls,
   * create an embedding context once: `createContext({ embeddings: true })` and `ctx.embed()`).
   * `pooling` defaults to the model's own; vectors are unit length unless `normalize: false`.
   */
  async embed(texts: readonly string[], options: EmbedOptions & { pooling?: PoolingType; threads?: number } = {}): Promise<Float32Array[]> {
    this.#lifetime.check();
    checkOptions(options, "embed(texts, options)");
    const { pooling, threads, ...rest } = options;
    await using ctx = await this.createContext(this.embeddingShape(Array.isArray(texts) ? texts.length : 1, pooling, threads));
    return await ctx.embed(texts, rest);
  }

  /** Scores each document against `query` with a reranker model, on a context created for the call. */
  async rerank(query: string, documents: readonly string[], options: Omit<EmbedOptions, "normalize"> & { threads?: number } = {}): Promise<number[]> {
    this.#lifetime.check();
    checkOptions(options, "rerank(query, documents, options)");
    const { threads, ...rest } = options;
    await using ctx = await this.createContext(this.embeddingShape(Array.isArray(documents) ? documents.length : 1, "rank", threads));
    return await ctx.rerank(query, documents, rest);
  }

  /**
   * @internal A context for embedding `n` texts at a time: the trained context (up to the default
   * cap) as one batch, shared by up to 16 sequences.
   */
  embeddingShape(n: number, pooling: PoolingType | undefined, threads: number | undefined): ContextOptions {
    const size = defaultContextSize(this.info.trainedContextSize);
    return {
      embeddings: true,
      ...(pooling === undefined ? {} : { pooling }),
      contextSize: size,
      batchSize: size,
      // A power of two: the sequences must divide the batch (see binding/context.cc).
      sequences: 2 ** Math.floor(Math.log2(Math.max(1, Math.min(n, 16)))),
      ...(threads === undefined ? {} : { threads }),
    };
  }

  /**
   * Creates an inference context (KV cache and compute buffers) on this model. ERR_DISPOSED if
   * the model is disposed before the context is ready (the context is then freed, not returned).
   */
  async createContext(options: ContextOptions = {}): Promise<Context> {
    this.#lifetime.check();
    if (this.vocabOnly) invalidArgument("this model was loaded with vocabOnly: it has no weights to run");
    if (!this.info.hasDecoder && options?.embeddings !== true) invalidArgument("this model is an encoder: it makes embeddings, not text (createContext({ embeddings: true }))");
    let ctx: Context | undefined;
    try {
      // Tracked, so a dispose() meanwhile waits for it (and the context it frees) before freeing the model.
      ctx = await this.#lifetime.run(async () => {
        const created = await Context.create(this, options);
        if (!this.#lifetime.disposed) return created;
        await created.dispose();
        return undefined;
      });
    } catch (err) {
      if (!this.#lifetime.disposed) throw err;
    }
    if (!ctx) {
      // Rejected only after dispose() has resolved and a turn of the event loop, so that
      // `await model.dispose(); await p` has its handler on `p` by then.
      await this.#disposing;
      await new Promise((resolve) => setImmediate(resolve));
      throw new LlamemError("ERR_DISPOSED", "the model was disposed while the context was being created");
    }
    const created = ctx;
    this.#contexts.add(created);
    created.onDispose(() => this.#contexts.delete(created));
    return created;
  }

  /**
   * Bytes of the weights per buffer type (CPU, CPU_Mapped, CPU_REPACK, CUDA0, …) and in total,
   * and of the LoRA adapters loaded for the model and not disposed.
   */
  memory(): { rows: MemoryRow[]; weights: number; adapters: number } {
    this.#lifetime.check();
    try {
      const rows = this.#native.memory();
      let adapters = 0;
      for (const a of this.#adapters) adapters += a.bytes;
      return { rows, weights: rows.reduce((s, r) => s + r.model, 0), adapters };
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * Loads a LoRA adapter made for this model, for `context.setAdapters`. ERR_ADAPTER when the
   * file is not a LoRA adapter, is another architecture's, or its tensors do not fit the
   * model's; the file errors of {@link readGguf} when it is not a readable GGUF.
   */
  async loadAdapter(path: string): Promise<LoraAdapter> {
    this.#lifetime.check();
    const file = await readAdapterHeader(path, this.#info.architecture);
    const handle = await this.#lifetime.run(() => this.#native.loadAdapter(path));
    // A disposed adapter stops counting in memory(); one still set on a context is freed with it.
    const adapter: LoraAdapter = new LoraAdapter(path, file, handle, (a) => {
      this.#adapters.delete(adapter);
      native().Model.disposeAdapter(a);
    });
    this.#adapters.add(adapter);
    return adapter;
  }

  /**
   * Frees the model. Contexts created from it are disposed first; work in flight is aborted
   * and awaited. Calling it again is a no-op.
   */
  dispose(): Promise<void> {
    // Marked disposed first, so a context still being created sees it and frees itself; every
    // call resolves once the model is freed.
    this.#disposing ??= this.#lifetime.dispose(async () => {
      await Promise.all([...this.#contexts].map((c) => c.dispose()));
      // Adapters hold the native model: they go first, or it would outlive dispose().
      await Promise.all([...this.#adapters].map((a) => a.dispose()));
      await this.#native.dispose();
    });
    return this.#disposing;
  }

  /** `await using model = await loadModel(...)` disposes it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** ERR_INVALID_ARGUMENT unless `options` is an object. */
function checkOptions(options: unknown, call: string): void {
  if (options === null || typeof options !== "object") invalidArgument(`${call}: options must be an object`);
}

/** Whether the header describes state-space or RWKV layers (recurrent and hybrid architectures). */
function hasRecurrentLayers(gguf: GgufFile): boolean {
  const arch = String(gguf.metadata.get("general.architecture")?.value);
  for (const key of gguf.metadata.keys()) {
    if (key.startsWith(`${arch}.ssm.`) || key.startsWith(`${arch}.wkv.`) || key.startsWith(`${arch}.shortconv.`)) return true;
  }
  return false;
}

/** The trained context a GGUF header states (0 when it states none). */
function trainedContextOf(gguf: GgufFile): number {
  const arch = gguf.metadata.get("general.architecture")?.value;
  const n = gguf.metadata.get(`${String(arch)}.context_length`)?.value;
  return typeof n === "number" ? n : 0;
}

function toInfo(n: NativeModelInfo, fileSize: number): ModelInfo {
  return {
    ...n,
    architecture: n.metadata["general.architecture"] ?? "unknown",
    name: n.metadata["general.name"],
    fileSize,
    vocabType: VOCAB_TYPES[n.vocabType] ?? String(n.vocabType),
    chatTemplate: n.chatTemplate ?? undefined,
  };
}
