/**
 * Every default and every enum of llamem, defined once, and the batons built from user options:
 * the plain structs passed to the binding with every field explicit (it holds no defaults).
 * This module loads nothing but the error list and the machine facts, so memory estimation and
 * the CLI can use it without the inference stack.
 */
import { invalidArgument } from "./errors.js";
import { defaultThreads } from "./system.js";
import type { NativeContextOptions, NativeLoadOptions, NativeSamplerOptions, NativeSamplerStage } from "./internal/native.js";

/** ggml type ids of the element types the KV cache can be stored in. */
export const KV_CACHE_TYPES = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q5_0: 6, q5_1: 7, q8_0: 8, iq4_nl: 20, bf16: 30,
} as const;

/** Element types the KV cache can be stored in. */
export type KvCacheType = keyof typeof KV_CACHE_TYPES;

/** The KV cache type names, for option lists (CLI choices, messages). */
export const KV_CACHE_TYPE_NAMES = Object.keys(KV_CACHE_TYPES) as KvCacheType[];

/**
 * llama_flash_attn_type. `"auto"` is llama.cpp's own choice, on wherever the devices holding the KV
 * cache run flash attention, which includes every CPU. There it is the faster setting since
 * llamem's patches to ggml's kernels: 0001 for short batches, 0003 for a single token from 512
 * positions on. llama-bench on an AMD EPYC (1.1B Q4_0, on against off in one run): a generated
 * token 1.11x at depth 1024 and 1.41x at 4096, where before 0003 it was 0.90x and 0.81x and this
 * default was off; prompts 1.01-1.31x. README's "Benchmarks" has the figures.
 */
export const FLASH_ATTENTION = { auto: -1, off: 0, on: 1 } as const;

/** llama_pooling_type: how an embedding context turns a text's token outputs into one vector. "model" is the model's own (its GGUF `pooling_type`). */
export const POOLING_TYPES = { model: -1, none: 0, mean: 1, cls: 2, last: 3, rank: 4 } as const;
export type PoolingType = keyof typeof POOLING_TYPES;

/** llama_load_mode. */
export const LOAD_MODES = { none: 0, mmap: 1, mlock: 2, "mmap+mlock": 3, directIo: 4 } as const;

/** llama_split_mode. */
export const SPLIT_MODES = { none: 0, layer: 1, row: 2 } as const;

/** llama_vocab_type, by id. */
export const VOCAB_TYPES: readonly string[] = ["none", "spm", "bpe", "wpm", "ugm", "rwkv", "plamo2"];

/** ggml_log_level: DEBUG 1, INFO 2, WARN 3, ERROR 4; -1 silences llama.cpp. */
export const LOG_LEVELS = { none: -1, debug: 1, info: 2, warn: 3, error: 4 } as const;

/** The order of the sampler chain's stages, llama.cpp's own (common/sampling.cpp): penalties first, the draw last. */
export const SAMPLER_ORDER = ["logitBias", "penalties", "dry", "topNSigma", "topK", "typicalP", "topP", "minP", "xtc", "temperature", "dist"] as const;

/** Every default value of llamem's options. */
export const DEFAULTS = {
  /** The default context is the trained context, capped at this many tokens. */
  contextSizeCap: 4096,
  /** Assumed trained context when a model does not state one. */
  trainedContextSize: 4096,
  batchSize: 512,
  /** The micro-batch is min(batchSize, this). */
  ubatchSizeCap: 512,
  sequences: 1,
  flashAttention: "auto",
  kvType: "f16",
  offloadKv: true,
  swaFull: false,
  kvUnified: false,
  gpuLayers: 0,
  loadMode: "auto",
  repack: true,
  splitMode: "layer",
  mainGpu: 0,
  /** Most tokens of a generation or a reply. */
  maxTokens: 256,
  /**
   * Sessions with the "summarize" strategy summarize in the background once a turn leaves the
   * prompt over this fraction of the budget; false: only when a prompt is over the budget. Off by
   * default: whether a background summary finishes before the next prompt depends on timing, so
   * which turns a fold takes does too. 0.75 is a good value for interactive chats.
   */
  summarizeAhead: false as number | false,
  /**
   * Limits of the sandbox that renders chat templates (templates come from model files, which
   * may be hostile): wall time of one render, its output's length in characters, the sandbox's
   * JavaScript heap, and the longest list `range()` may build.
   */
  template: {
    timeoutMs: 5000,
    maxOutputChars: 32 * 1024 * 1024,
    heapMb: 256,
    maxRange: 1_000_000,
  },
  /**
   * Recall of archived turns (`memory.recall`): turns recalled per prompt, the least cosine
   * similarity, the block's share of the prompt budget, the tokens of the embedding context recall
   * creates on a Model (a decoder model computes its logits for every token too: 512 tokens of a
   * 150k vocabulary take 300 MiB of compute buffer), and the archived turns kept in memory (by the
   * default store, an archive store's namespace, and the session's in-memory archive).
   */
  recall: { k: 3, minScore: 0.5, maxTokens: 0.25, contextSize: 512, maxTurns: 10_000 },
  /**
   * Tokens kept out of a session's budget, beside the summary's own, for a summary written on
   * `memory.summarySequence`: the instruction after the conversation and its template's markers.
   */
  summaryInstructionTokens: 128,
  /**
   * A summary written beside the turns starts once the turns it would fold hold this share of
   * the budget (so each fold frees room for several turns, not one).
   */
  summaryMinFold: 0.25,
  /**
   * The engine's native loop: while every job in flight generates, up to this many decodes run
   * in one native call without a round trip through JS per token. No further step starts after
   * `maxMs`, so the libuv thread the call holds is handed back now and then. New jobs and other
   * work on the context halt it at once (after the current step), so the bounds only space out
   * the calls of a generation running alone. Each call costs about 1.4 ms besides its decodes
   * (the steps' turn through JS, and a first decode that finds ggml's workers asleep; 2-core
   * Xeon): on an H200 calls of 256 steps cost 2% of tg against one call for 512 tokens.
   */
  generationLoop: { maxSteps: 1024, maxMs: 1000 },
  /** Rounds of tool calls in one prompt before the session stops calling (the reply then says so). */
  maxToolRounds: 8,
  /** Tool calls with bad arguments the model may retry in one prompt before the session gives up on tools. */
  maxToolRetries: 2,
  /**
   * `llamem serve`: loopback only unless told; requests waiting beyond the sequences before 429;
   * request bodies up to 4 MiB; conversations kept (least recently used dropped past it) and how
   * long an idle one lives; how long shutdown waits for requests in flight before aborting them;
   * texts per embeddings request.
   */
  serve: {
    host: "127.0.0.1",
    port: 8080,
    parallel: 4,
    maxQueue: 64,
    maxBodyBytes: 4 * 1024 * 1024,
    maxConversations: 1024,
    conversationIdleMs: 60 * 60 * 1000,
    shutdownTimeoutMs: 10_000,
    maxEmbeddingInputs: 256,
    retryAfterSeconds: 1,
  },
  /**
   * Speculative decoding (`createContext({ draft })`): tokens the draft model proposes per step,
   * and the draft's own probability below which it stops proposing (an unlikely draft token is
   * likely rejected, and each one costs a draft decode).
   */
  draft: {
    maxDraftTokens: 8,
    minProbability: 0.5,
  },
  sampling: {
    temperature: 0.8,
    topK: 40,
    topP: 0.95,
    minP: 0.05,
    repeatPenalty: 1,
    repeatLastN: 64,
    frequencyPenalty: 0,
    presencePenalty: 0,
    /** DRY (off at multiplier 0): llama.cpp's defaults for the rest. */
    dryMultiplier: 0,
    dryBase: 1.75,
    dryAllowedLength: 2,
    dryLastN: 64,
    drySequenceBreakers: ["\n", ":", "\"", "*"] as readonly string[],
    /** XTC (off at probability 0). */
    xtcProbability: 0,
    xtcThreshold: 0.1,
    /** Typical sampling (1 = off) and top-n-sigma (0 = off). */
    typicalP: 1,
    topNSigma: 0,
    /** Mirostat 2.0's target surprise and learning rate, when `mirostat` is on. */
    mirostatTau: 5,
    mirostatEta: 0.1,
    /** Backend sampling where the output layer is on a GPU (see SamplingOptions.backendSampling). */
    backendSampling: "auto" as boolean | "auto",
  },
} as const;

/** The default context size for a model trained on `trained` tokens: min(4096, trained). */
export function defaultContextSize(trained: number): number {
  return Math.min(DEFAULTS.contextSizeCap, trained > 0 ? trained : DEFAULTS.trainedContextSize);
}

/** How the next token is chosen. */
export interface SamplingOptions {
  /** 0 picks the most likely token (greedy, deterministic). Default 0.8. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = off). Default 40. */
  topK?: number;
  /** Keep the smallest set whose probability reaches p (1 = off). Default 0.95. */
  topP?: number;
  /** Drop tokens below p times the top probability (0 = off). Default 0.05. */
  minP?: number;
  /** Penalize repeating recent tokens (1 = off). Default 1. */
  repeatPenalty?: number;
  /** How many recent tokens the penalties look at. Default 64. */
  repeatLastN?: number;
  /** OpenAI-style frequency penalty (0 = off). */
  frequencyPenalty?: number;
  /** OpenAI-style presence penalty (0 = off). */
  presencePenalty?: number;
  /** Seed of the random draw; the same seed and prompt give the same text. Default random. */
  seed?: number;
  /**
   * Added to the logits of tokens before anything else: by id, or by text (each of the text's
   * tokens). -Infinity bans a token. E.g. `[{ token: 13, bias: -5 }, { text: " Paris", bias: 3 }]`.
   */
  logitBias?: readonly LogitBiasEntry[];
  /** DRY repetition penalty multiplier (0 = off); see llama.cpp's DRY sampler. */
  dryMultiplier?: number;
  /** DRY: the penalty grows as base^(length - allowed length). Default 1.75. */
  dryBase?: number;
  /** DRY: repeated sequences up to this length go unpenalized. Default 2. */
  dryAllowedLength?: number;
  /** DRY: recent tokens scanned for repetitions (0 = off, -1 = the whole context). Default 64. */
  dryLastN?: number;
  /** DRY: strings that end a repeated sequence. Default "\n", ":", "\"", "*". */
  drySequenceBreakers?: readonly string[];
  /** XTC: the chance of excluding the top choices (0 = off). */
  xtcProbability?: number;
  /** XTC: tokens above this probability are candidates for exclusion. Default 0.1. */
  xtcThreshold?: number;
  /** Locally typical sampling (1 = off). */
  typicalP?: number;
  /** Top-n-sigma: keep tokens within n standard deviations of the top logit (0 = off). */
  topNSigma?: number;
  /** Mirostat 2.0 picks the token instead of the plain draw (after temperature; the other filters are skipped, as llama.cpp does). */
  mirostat?: boolean;
  /** Mirostat's target surprise (default 5) and learning rate (default 0.1). */
  mirostatTau?: number;
  mirostatEta?: number;
  /**
   * Sample inside the decode, on the device that holds the output layer (llama.cpp's backend
   * sampling), so that only the chosen token comes back instead of every logit. It applies when
   * every stage in use has a device version: logitBias, topK, topP, minP, temperature and the
   * draw or greedy pick (not penalties, DRY, XTC, typical, top-n-sigma, mirostat or a grammar),
   * and not to a generation that asks for log-probabilities or verifies a draft; otherwise the CPU
   * samples. "auto" (the default) turns it on when the output layer is on a GPU; `true` also on
   * the CPU. A seed repeats its text on the same device; the device's draw is llama.cpp's backend
   * version, so it need not give the CPU's text for the same seed.
   */
  backendSampling?: boolean | "auto";
}

/** One logit bias: a token id, or a text whose tokens all get the bias. */
export type LogitBiasEntry = { readonly token: number; readonly bias: number } | { readonly text: string; readonly bias: number };

/** The keys of {@link SamplingOptions}. */
export const SAMPLING_KEYS = [
  "temperature", "topK", "topP", "minP", "repeatPenalty", "repeatLastN", "frequencyPenalty", "presencePenalty", "seed",
  "logitBias", "dryMultiplier", "dryBase", "dryAllowedLength", "dryLastN", "drySequenceBreakers", "xtcProbability", "xtcThreshold",
  "typicalP", "topNSigma", "mirostat", "mirostatTau", "mirostatEta", "backendSampling",
] as const;

/** The sampling options set in `o`, so that unset ones do not override defaults given elsewhere. */
export function samplingOf(o: SamplingOptions): SamplingOptions {
  const out: Record<string, unknown> = {};
  for (const k of SAMPLING_KEYS) if (o[k] !== undefined) out[k] = o[k];
  return out as SamplingOptions;
}

function numberIn(value: number, name: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) invalidArgument(`${name} must be a number in [${min}, ${max}]`);
  return value;
}

function intIn(value: number, name: string, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) invalidArgument(`${name} must be an integer in [${min}, ${max}]`);
  return value;
}

/** The stages llama.cpp can run inside the decode's graph without a per-sequence output limit. */
const BACKEND_STAGES: ReadonlySet<NativeSamplerStage["type"]> = new Set(["logitBias", "topK", "topP", "minP", "temperature", "dist", "greedy"]);

/**
 * The sampler chain for `o`, in {@link SAMPLER_ORDER}: stages that are off are left out, and
 * temperature 0 is a greedy pick. `contextSize` resolves DRY's -1; `outputOnAccelerator` (the
 * output layer is on a GPU) turns "auto" backend sampling on, and `cpu` (the generation reads
 * log-probabilities or verifies drafts, which need the CPU) keeps it off. @internal
 */
export function samplerBaton(
  o: SamplingOptions,
  vocabSize: number,
  grammar?: string,
  textBias?: readonly { token: number; bias: number }[],
  where: { contextSize?: number; outputOnAccelerator?: boolean; cpu?: boolean } = {},
): NativeSamplerOptions {
  const contextSize = where.contextSize ?? DEFAULTS.contextSizeCap;
  const d = DEFAULTS.sampling;
  const temperature = numberIn(o.temperature ?? d.temperature, "temperature", 0, 100);
  const topK = intIn(o.topK ?? d.topK, "topK", 0, vocabSize);
  const topP = numberIn(o.topP ?? d.topP, "topP", 0, 1);
  const minP = numberIn(o.minP ?? d.minP, "minP", 0, 1);
  const repeat = numberIn(o.repeatPenalty ?? d.repeatPenalty, "repeatPenalty", 1e-6, 100);
  const lastN = intIn(o.repeatLastN ?? d.repeatLastN, "repeatLastN", 0, 1 << 20);
  const frequency = numberIn(o.frequencyPenalty ?? d.frequencyPenalty, "frequencyPenalty", -100, 100);
  const presence = numberIn(o.presencePenalty ?? d.presencePenalty, "presencePenalty", -100, 100);
  const dryMultiplier = numberIn(o.dryMultiplier ?? d.dryMultiplier, "dryMultiplier", 0, 100);
  const dryBase = numberIn(o.dryBase ?? d.dryBase, "dryBase", 1, 100);
  const dryAllowedLength = intIn(o.dryAllowedLength ?? d.dryAllowedLength, "dryAllowedLength", 0, 1 << 16);
  const dryLastN = intIn(o.dryLastN ?? d.dryLastN, "dryLastN", -1, 1 << 20);
  const breakers = o.drySequenceBreakers ?? d.drySequenceBreakers;
  if (!Array.isArray(breakers) || breakers.length > 64 || breakers.some((b) => typeof b !== "string" || b.length === 0 || b.length > 64)) {
    invalidArgument("drySequenceBreakers must be at most 64 non-empty strings of at most 64 characters");
  }
  const xtcProbability = numberIn(o.xtcProbability ?? d.xtcProbability, "xtcProbability", 0, 1);
  const xtcThreshold = numberIn(o.xtcThreshold ?? d.xtcThreshold, "xtcThreshold", 0, 1);
  const typicalP = numberIn(o.typicalP ?? d.typicalP, "typicalP", 0, 1);
  const topNSigma = numberIn(o.topNSigma ?? d.topNSigma, "topNSigma", 0, 100);
  if (o.mirostat !== undefined && typeof o.mirostat !== "boolean") invalidArgument("mirostat must be true or false");
  const mirostatTau = numberIn(o.mirostatTau ?? d.mirostatTau, "mirostatTau", 0, 100);
  const mirostatEta = numberIn(o.mirostatEta ?? d.mirostatEta, "mirostatEta", 0, 1);
  const bias = logitBiasOf(o.logitBias, vocabSize, textBias);
  const seed = o.seed ?? Math.floor(Math.random() * 0xffffffff);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) invalidArgument("seed must be an integer in [0, 2^32)");
  // A grammar first, as llama.cpp's own samplers apply it: the other stages see only tokens it allows.
  const stages: NativeSamplerStage[] = grammar === undefined ? [] : [{ type: "grammar", grammar, root: "root" }];
  const mirostat = o.mirostat === true && temperature > 0;
  for (const stage of SAMPLER_ORDER) {
    if (stage === "logitBias" && bias.length > 0) stages.push({ type: "logitBias", entries: bias });
    if (stage === "penalties" && (repeat !== 1 || frequency !== 0 || presence !== 0)) {
      stages.push({ type: "penalties", lastN, repeat, frequency, presence });
    }
    if (stage === "dry" && dryMultiplier > 0) {
      // llama_sampler_init_dry takes no context size: -1 (the whole context) is resolved here.
      stages.push({ type: "dry", multiplier: dryMultiplier, base: dryBase, allowedLength: dryAllowedLength, lastN: dryLastN === -1 ? contextSize : dryLastN, breakers: [...breakers] });
    }
    if (temperature <= 0) continue;
    // Mirostat sets its own cut-off: llama.cpp runs it on the temperature alone.
    if (mirostat && stage !== "temperature") continue;
    if (stage === "topNSigma" && topNSigma > 0) stages.push({ type: "topNSigma", n: topNSigma });
    if (stage === "topK" && topK > 0) stages.push({ type: "topK", k: topK });
    if (stage === "typicalP" && typicalP < 1) stages.push({ type: "typicalP", p: typicalP, minKeep: 1 });
    if (stage === "topP" && topP < 1) stages.push({ type: "topP", p: topP, minKeep: 1 });
    if (stage === "minP" && minP > 0) stages.push({ type: "minP", p: minP, minKeep: 1 });
    if (stage === "xtc" && xtcProbability > 0) stages.push({ type: "xtc", p: xtcProbability, t: xtcThreshold, minKeep: 1, seed });
    if (stage === "temperature") stages.push({ type: "temperature", t: temperature });
    if (stage === "dist") stages.push({ type: "dist", seed });
  }
  if (mirostat) stages.push({ type: "mirostatV2", seed, tau: mirostatTau, eta: mirostatEta });
  if (temperature <= 0) stages.push({ type: "greedy" });
  const backendSampling = o.backendSampling ?? d.backendSampling;
  if (backendSampling !== true && backendSampling !== false && backendSampling !== "auto") invalidArgument('backendSampling must be true, false or "auto"');
  const wanted = where.cpu !== true && (backendSampling === true || (backendSampling === "auto" && where.outputOnAccelerator === true));
  return { stages, backend: wanted && stages.every((s) => BACKEND_STAGES.has(s.type)) };
}

/** Whether `logitBias` names tokens by text (they must be tokenized first, asynchronously). @internal */
export function hasTextBias(list: SamplingOptions["logitBias"]): boolean {
  return Array.isArray(list) && list.some((e) => e !== null && typeof e === "object" && "text" in e);
}

/** The bias entries by id: the given ones checked, and `textBias` (the text entries, tokenized) added. */
function logitBiasOf(list: SamplingOptions["logitBias"], vocabSize: number, textBias: readonly { token: number; bias: number }[] = []): { token: number; bias: number }[] {
  if (list === undefined) return [...textBias];
  if (!Array.isArray(list) || list.length > 65536) invalidArgument("logitBias must be an array of at most 65536 { token, bias } or { text, bias }");
  const out: { token: number; bias: number }[] = [];
  list.forEach((e: LogitBiasEntry, i) => {
    if (e === null || typeof e !== "object") invalidArgument(`logitBias[${i}] must be { token, bias } or { text, bias }`);
    const b = e.bias;
    if (typeof b !== "number" || Number.isNaN(b) || b === Infinity || (Number.isFinite(b) && Math.abs(b) > 1000)) {
      invalidArgument(`logitBias[${i}].bias must be a number in [-1000, 1000], or -Infinity to ban`);
    }
    if ("token" in e) out.push({ token: intIn(e.token, `logitBias[${i}].token`, 0, vocabSize - 1), bias: b });
    else if (typeof e.text !== "string" || e.text.length === 0) invalidArgument(`logitBias[${i}].text must be a non-empty string`);
  });
  return [...out, ...textBias];
}

/** The options of a context that decide its KV cache and compute buffers. */
export interface ContextShapeOptions {
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
  /**
   * Flash attention. "auto" (default): llama.cpp decides, and turns it on wherever the devices
   * holding the KV cache run it, the CPU included (there llamem's patched kernels make it the
   * faster setting, most of all deep in the context).
   */
  flashAttention?: keyof typeof FLASH_ATTENTION;
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
  /**
   * An embedding context (default false): `ctx.embed()` and `ctx.rerank()` pool each text's
   * outputs into one vector instead of generating. Its micro-batch defaults to the whole batch,
   * since encoders and non-causal attention see a text at once.
   */
  embeddings?: boolean;
  /** How an embedding context pools (default "model": the model's own; "rank" for rerankers). */
  pooling?: PoolingType;
}

function kvTypeId(name: KvCacheType | undefined, option: string): number {
  const n = name ?? DEFAULTS.kvType;
  if (typeof n !== "string" || !Object.hasOwn(KV_CACHE_TYPES, n)) invalidArgument(`${option} must be one of ${KV_CACHE_TYPE_NAMES.join(", ")}`);
  return KV_CACHE_TYPES[n];
}

function boolOpt(value: boolean | undefined, name: string, def: boolean): boolean {
  if (value === undefined) return def;
  if (typeof value !== "boolean") invalidArgument(`${name} must be true or false`);
  return value;
}

/**
 * The context baton for `o` at `contextSize` (already resolved from "auto"); `draftTokens` is the
 * most draft tokens one sequence verifies in a batch (speculative decoding), 0 without. @internal
 */
export function contextBaton(o: ContextShapeOptions, contextSize: number, draftTokens = 0): NativeContextOptions {
  if (!Number.isInteger(contextSize) || contextSize < 1) invalidArgument('contextSize must be a positive integer or "auto"');
  const fa = o.flashAttention ?? DEFAULTS.flashAttention;
  if (typeof fa !== "string" || !Object.hasOwn(FLASH_ATTENTION, fa)) invalidArgument('flashAttention must be "auto", "on" or "off"');
  const threads = o.threads ?? defaultThreads();
  intIn(threads, "threads", 1, 1024);
  const batchSize = intIn(o.batchSize ?? DEFAULTS.batchSize, "batchSize", 1, 1 << 20);
  const embeddings = boolOpt(o.embeddings, "embeddings", false);
  const pooling = o.pooling ?? "model";
  if (typeof pooling !== "string" || !Object.hasOwn(POOLING_TYPES, pooling)) invalidArgument(`pooling must be one of ${Object.keys(POOLING_TYPES).join(", ")}`);
  if (o.pooling !== undefined && !embeddings) invalidArgument("pooling applies to embedding contexts (embeddings: true)");
  const ubatchSize = intIn(o.ubatchSize ?? (embeddings ? batchSize : Math.min(batchSize, DEFAULTS.ubatchSizeCap)), "ubatchSize", 1, batchSize);
  const sequences = intIn(o.sequences ?? DEFAULTS.sequences, "sequences", 1, 1 << 16);
  return {
    contextSize,
    batchSize,
    ubatchSize,
    sequences,
    threads,
    threadsBatch: intIn(o.threadsBatch ?? threads, "threadsBatch", 1, 1024),
    flashAttention: FLASH_ATTENTION[fa],
    typeK: kvTypeId(o.kvTypeK ?? o.kvType, "kvTypeK"),
    typeV: kvTypeId(o.kvTypeV ?? o.kvType, "kvTypeV"),
    offloadKv: boolOpt(o.offloadKv, "offloadKv", DEFAULTS.offloadKv),
    swaFull: boolOpt(o.swaFull, "swaFull", DEFAULTS.swaFull),
    // Embedding contexts share one KV pool, as llama.cpp's embedding example does: with a stream
    // per sequence, the same text pooled to a different vector depending on its batch (measured
    // on a decoder model, November 2026).
    kvUnified: embeddings ? embeddingsUnified(o.kvUnified) : boolOpt(o.kvUnified, "kvUnified", DEFAULTS.kvUnified),
    embeddings,
    pooling: POOLING_TYPES[pooling],
    // A generating batch asks for the logits of each sequence's last token and its draft tokens
    // only, so llama.cpp need not reserve a vocabulary-wide row for every token of a batch (17 MB
    // of compute buffer for a 32k vocabulary at batch 512; 68 MB more with backend sampling). An
    // embedding batch outputs every token. (The native side refuses a batch size below `sequences`.)
    outputs: embeddings ? batchSize : Math.min(batchSize, sequences * (1 + draftTokens)),
  };
}

function embeddingsUnified(value: boolean | undefined): true {
  if (value === false) invalidArgument("an embedding context needs kvUnified (its sequences share one KV pool)");
  boolOpt(value, "kvUnified", true);
  return true;
}

/** The name of a KV cache type id (for layouts and messages). @internal */
export function kvTypeName(id: number): string {
  return KV_CACHE_TYPE_NAMES.find((k) => KV_CACHE_TYPES[k] === id) ?? String(id);
}

/** Where weights go and how they are read: the load options that are not policy of the fit. */
export interface PlacementOptions {
  /** Devices to use, by name (see listDevices()); default all. */
  devices?: string[];
  /** How layers are spread over several GPUs (default "layer"). */
  splitMode?: keyof typeof SPLIT_MODES;
  /** The GPU that holds the whole model with splitMode "none" (an index into the GPUs). */
  mainGpu?: number;
  /** Proportion of the model per device, e.g. [3, 1]. */
  tensorSplit?: number[];
  /**
   * Pins tensors whose names match a pattern (a regular expression) to a device, first match
   * wins: e.g. `{ pattern: "ffn_.*_exps", device: "CPU" }` keeps MoE experts in RAM.
   */
  tensorOverrides?: { pattern: string; device: string }[];
}

/** The load baton: `loadMode` is a resolved llama_load_mode name ("auto" is decided by the caller). @internal */
export function loadBaton(
  o: PlacementOptions,
  resolved: { gpuLayers: number; loadMode: keyof typeof LOAD_MODES; repack: boolean; vocabOnly: boolean },
): NativeLoadOptions {
  const overrides = o.tensorOverrides ?? [];
  if (!Array.isArray(overrides)) invalidArgument("tensorOverrides must be an array of { pattern, device }");
  for (const ov of overrides) {
    if (typeof ov?.pattern !== "string" || typeof ov.device !== "string") invalidArgument("tensorOverrides entries need a pattern and a device");
    try {
      new RegExp(ov.pattern);
    } catch {
      invalidArgument(`tensorOverrides: ${JSON.stringify(ov.pattern)} is not a valid regular expression`);
    }
  }
  const split = o.splitMode ?? DEFAULTS.splitMode;
  if (typeof split !== "string" || !Object.hasOwn(SPLIT_MODES, split)) invalidArgument('splitMode must be "none", "layer" or "row"');
  const devices = o.devices ?? [];
  if (!Array.isArray(devices) || devices.some((d) => typeof d !== "string")) invalidArgument("devices must be an array of device names");
  const tensorSplit = o.tensorSplit ?? [];
  if (!Array.isArray(tensorSplit) || tensorSplit.some((x) => typeof x !== "number" || !Number.isFinite(x) || x < 0)) {
    invalidArgument("tensorSplit must be an array of non-negative numbers");
  }
  return {
    gpuLayers: resolved.gpuLayers,
    loadMode: LOAD_MODES[resolved.loadMode],
    repack: resolved.repack,
    vocabOnly: resolved.vocabOnly,
    devices,
    splitMode: SPLIT_MODES[split],
    mainGpu: intIn(o.mainGpu ?? DEFAULTS.mainGpu, "mainGpu", 0, 1 << 16),
    tensorSplit,
    overridePatterns: overrides.map((x) => x.pattern),
    overrideDevices: overrides.map((x) => x.device),
  };
}
