/**
 * Loads the native addon (a prebuild from prebuilds/, else the local build) and declares its
 * typed interface. Nothing outside lib/ should touch these objects directly.
 * @internal
 */
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { LlamemError } from "./errors.js";
import { packageRoot } from "./paths.js";

/** Bytes of one buffer type from llama_get_memory_breakdown. */
export interface NativeMemoryRow {
  bufferType: string;
  device: string | null;
  host: boolean;
  model: number;
  context: number;
  compute: number;
}

export interface NativeModelInfo {
  description: string;
  size: number;
  parameters: number;
  trainedContextSize: number;
  embeddingSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  slidingWindow: number;
  vocabSize: number;
  vocabType: number;
  bos: number;
  eos: number;
  eot: number;
  addBos: boolean;
  addEos: boolean;
  hasEncoder: boolean;
  hasDecoder: boolean;
  recurrent: boolean;
  chatTemplate: string | null;
  metadata: Record<string, string>;
}

export interface NativeModel {
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Promise<Int32Array>;
  detokenize(tokens: Int32Array, removeSpecial: boolean, unparseSpecial: boolean): Promise<Buffer>;
  tokenToPiece(token: number, special: boolean): Buffer;
  applyChatTemplate(messages: { role: string; content: string }[], addAssistant: boolean, template?: string): string;
  memory(): NativeMemoryRow[];
  /** Frees the model off the JS thread once its contexts and workers let go. */
  dispose(): Promise<void>;
}

export interface NativeLoadOptions {
  gpuLayers: number;
  loadMode: number;
  repack: boolean;
  vocabOnly: boolean;
  checkTensors: boolean;
  devices?: string[];
  splitMode?: number;
  mainGpu?: number;
  tensorSplit?: number[];
  overridePatterns?: string[];
  overrideDevices?: string[];
}

export interface NativeContextOptions {
  contextSize: number;
  batchSize: number;
  ubatchSize: number;
  sequences: number;
  threads: number;
  threadsBatch: number;
  flashAttention: number;
  typeK: number;
  typeV: number;
  offloadKv: boolean;
  swaFull: boolean;
  kvUnified: boolean;
  embeddings: boolean;
}

export interface NativeContextInfo {
  contextSize: number;
  sequenceContextSize: number;
  batchSize: number;
  ubatchSize: number;
  sequences: number;
  threads: number;
  threadsBatch: number;
  canShift: boolean;
}

export interface NativeEvalResult {
  evaluated: number;
  decodeUs: number;
  token?: number;
  eog?: boolean;
  piece?: Buffer;
  sampleUs?: number;
}

export interface NativeBatchEntry {
  seq: number;
  tokens: Int32Array;
  sampler?: NativeSampler;
  /** Feed the tokens to the sampler's history first (repetition penalties see the prompt). */
  accept?: boolean;
  /** Sample one token after the decode (default true when a sampler is given). */
  sample?: boolean;
}

export interface NativeBatchResult {
  seq: number;
  evaluated: number;
  decodeUs: number;
  token?: number;
  eog?: boolean;
  piece?: Buffer;
}

export interface NativeContext {
  info(): NativeContextInfo;
  eval(seq: number, tokens: Int32Array, sampler: NativeSampler | null, acceptInput: boolean): Promise<NativeEvalResult>;
  evalBatch(entries: NativeBatchEntry[]): Promise<NativeBatchResult[]>;
  abort(): void;
  seqPosRange(seq: number): [number, number];
  seqRemove(seq: number, p0: number, p1: number): boolean;
  seqShift(seq: number, p0: number, p1: number, delta: number): void;
  seqCopy(src: number, dst: number, p0: number, p1: number): void;
  seqKeep(seq: number): void;
  stateSeqGet(seq: number): Promise<Buffer>;
  stateSeqSet(seq: number, data: Buffer): Promise<number>;
  clear(): void;
  memory(): { rows: NativeMemoryRow[]; cellsUsed: number; cells: number };
  /** Aborts work in flight and frees the context off the JS thread. */
  dispose(): Promise<void>;
}

export interface NativeDevice {
  name: string;
  description: string;
  type: "cpu" | "gpu" | "igpu" | "accel" | "other";
  backend: string;
  free: number;
  total: number;
}

export interface NativeEstimate {
  rows: NativeMemoryRow[];
  contextSize: number;
  trainedContextSize: number;
  layers: number;
  devices: { name: string; type: "cpu" | "gpu"; free: number; total: number }[];
}

export interface NativeSamplerOptions {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  repeatLastN: number;
  frequencyPenalty: number;
  presencePenalty: number;
  seed: number;
}

export interface NativeSampler {
  reset(): void;
  dispose(): void;
}

export interface NativeSystemInfo {
  llamaSystemInfo: string;
  gpuBackend: string;
  supportsMmap: boolean;
  supportsMlock: boolean;
  supportsGpuOffload: boolean;
  maxDevices: number;
  maxParallelSequences: number;
}

export interface NativeBinding {
  Model: {
    load(path: string, options: NativeLoadOptions, onProgress?: (p: number) => void): {
      promise: Promise<NativeModel>;
      cancel(): void;
    };
    estimate(path: string, load: Partial<NativeLoadOptions>, context: Partial<NativeContextOptions>): Promise<NativeEstimate>;
  };
  Context: { create(model: NativeModel, options: NativeContextOptions): Promise<NativeContext> };
  Sampler: new (model: NativeModel, options: NativeSamplerOptions) => NativeSampler;
  setLogLevel(level: number): void;
  systemInfo(): NativeSystemInfo;
  devices(): NativeDevice[];
  quantize(input: string, output: string, options: { ftype: number; threads?: number; allowRequantize?: boolean; pure?: boolean }): Promise<void>;
  rpcAddServer(endpoint: string): void;
  rpcServe(endpoint: string, threads: number): void;
}

export { packageRoot };

let cached: NativeBinding | undefined;

/** The native binding, loaded on first use; a clear ERR_NATIVE_LOAD if it cannot be. */
export function native(): NativeBinding {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const override = process.env.LLAMEM_BINARY;
  try {
    const path: string = override ?? (require("node-gyp-build") as { resolve(dir: string): string }).resolve(packageRoot);
    cached = require(path) as NativeBinding;
  } catch (err) {
    const built = existsSync(join(packageRoot, "build", "Release", "llamem.node"));
    const hint = built
      ? "the built binary exists but failed to load; rebuild it with `npm run build:addon`"
      : "no prebuilt binary for " + `${process.platform}-${process.arch}` +
        " and no local build; run `npm install` (needs cmake and a C++ compiler) or `npm run build:addon`";
    throw new LlamemError("ERR_NATIVE_LOAD", `cannot load the llamem native addon: ${hint} (${(err as Error).message})`, {
      cause: err,
    });
  }
  const level = process.env.LLAMEM_LOG;
  if (level) cached.setLogLevel(logLevelNumber(level));
  return cached;
}

/** llama.cpp log verbosity. */
export type LogLevel = "none" | "debug" | "info" | "warn" | "error";

function logLevelNumber(level: string): number {
  // ggml_log_level: DEBUG 1, INFO 2, WARN 3, ERROR 4.
  const map: Record<string, number> = { none: -1, debug: 1, info: 2, warn: 3, error: 4 };
  return map[level] ?? -1;
}

/** Sets how much of llama.cpp's own log reaches stderr (default: none). Process-wide. */
export function setLogLevel(level: LogLevel): void {
  native().setLogLevel(logLevelNumber(level));
}
