/**
 * Loads the native addon (a prebuild from prebuilds/, else the local build) and declares its
 * typed interface: the batons lib/ passes down, every field explicit (the binding holds no
 * defaults). Private to lib/: nothing here is re-exported, and only the modules that own a
 * native object (model, context, sampler, estimate, devices, quantize, rpc, log) import it.
 * @internal
 */
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { LlamemError } from "../errors.js";
import { packageRoot } from "../system.js";
import { LOG_LEVELS } from "../options.js";
import type { ContextInfo, MemoryRow } from "../context.js";
import type { Device } from "../devices.js";
import type { ModelInfo } from "../model.js";

/** The model's facts as the binding reads them: the public ModelInfo less what lib/ adds, with raw ids. @internal */
export type NativeModelInfo = Omit<ModelInfo, "architecture" | "name" | "fileSize" | "vocabType" | "chatTemplate"> & {
  /** llama_vocab_type */
  vocabType: number;
  chatTemplate: string | null;
};

/** @internal */
export interface NativeModel {
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Promise<Int32Array>;
  detokenize(tokens: Int32Array, removeSpecial: boolean, unparseSpecial: boolean): Promise<Buffer>;
  tokenToPiece(token: number, special: boolean): Buffer;
  /** template null: the model's own. */
  applyChatTemplate(messages: { role: string; content: string }[], addAssistant: boolean, template: string | null): string;
  memory(): MemoryRow[];
  /** Frees the model off the JS thread once its contexts and workers let go. */
  dispose(): Promise<void>;
}

/** @internal */
export interface NativeLoadOptions {
  gpuLayers: number;
  /** llama_load_mode */
  loadMode: number;
  repack: boolean;
  vocabOnly: boolean;
  /** Device names; empty: every device. */
  devices: string[];
  /** llama_split_mode */
  splitMode: number;
  mainGpu: number;
  /** Proportions per device; empty: llama.cpp's own split. */
  tensorSplit: number[];
  /** Tensor-name patterns and the device each pins to, pairwise. */
  overridePatterns: string[];
  overrideDevices: string[];
}

/** @internal */
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
}

/** One sequence's part of a batched decode. @internal */
export interface NativeBatchEntry {
  seq: number;
  tokens: Int32Array;
  /** The sampler of the sequence's generation, or null to decode only. */
  sampler: NativeSampler | null;
  /** Feed the tokens to the sampler's history first (repetition penalties see the prompt). */
  accept: boolean;
  /** Sample one token from the last token's logits after the decode. */
  sample: boolean;
}

/** @internal */
export interface NativeBatchResult {
  seq: number;
  evaluated: number;
  decodeUs: number;
  token?: number;
  eog?: boolean;
  piece?: Buffer;
}

/** @internal */
export interface NativeContext {
  info(): ContextInfo;
  evalBatch(entries: NativeBatchEntry[]): Promise<NativeBatchResult[]>;
  abort(): void;
  seqPosRange(seq: number): [number, number];
  seqRemove(seq: number, p0: number, p1: number): boolean;
  seqShift(seq: number, p0: number, p1: number, delta: number): void;
  seqCopy(src: number, dst: number, p0: number, p1: number): void;
  stateSeqGet(seq: number): Promise<Buffer>;
  stateSeqSet(seq: number, data: Buffer): Promise<number>;
  clear(): void;
  memory(): { rows: MemoryRow[]; cellsUsed: number; cells: number };
  /** Aborts work in flight and frees the context off the JS thread. */
  dispose(): Promise<void>;
}

/** @internal */
export interface NativeEstimate {
  rows: MemoryRow[];
  contextSize: number;
  trainedContextSize: number;
  layers: number;
  devices: { name: string; type: "cpu" | "gpu"; free: number; total: number }[];
}

/** One stage of a sampler chain; the chain applies them in the order given. @internal */
export type NativeSamplerStage =
  | { type: "penalties"; lastN: number; repeat: number; frequency: number; presence: number }
  | { type: "topK"; k: number }
  | { type: "topP"; p: number; minKeep: number }
  | { type: "minP"; p: number; minKeep: number }
  | { type: "temperature"; t: number }
  | { type: "dist"; seed: number }
  | { type: "greedy" };

/** @internal */
export interface NativeSamplerOptions {
  stages: NativeSamplerStage[];
}

/** @internal */
export interface NativeSampler {
  dispose(): void;
}

/** @internal */
export interface NativeSystemInfo {
  llamaSystemInfo: string;
  gpuBackend: string;
  supportsMmap: boolean;
  supportsMlock: boolean;
  supportsGpuOffload: boolean;
  maxDevices: number;
  maxParallelSequences: number;
}

/** @internal */
export interface NativeBinding {
  Model: {
    load(path: string, options: NativeLoadOptions, onProgress: ((p: number) => void) | null): {
      promise: Promise<NativeModel>;
      cancel(): void;
    };
    estimate(path: string, load: NativeLoadOptions, context: NativeContextOptions): Promise<NativeEstimate>;
  };
  Context: { create(model: NativeModel, options: NativeContextOptions): Promise<NativeContext> };
  Sampler: new (model: NativeModel, options: NativeSamplerOptions) => NativeSampler;
  setLogLevel(level: number): void;
  systemInfo(): NativeSystemInfo;
  devices(): Device[];
  quantize(input: string, output: string, options: { ftype: number; threads: number; allowRequantize: boolean; pure: boolean }): Promise<void>;
  rpcAddServer(endpoint: string): void;
  rpcServe(endpoint: string, threads: number): void;
}

let cached: NativeBinding | undefined;

/** The native binding, loaded on first use; a clear ERR_NATIVE_LOAD if it cannot be. @internal */
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
  // LLAMEM_LOG=info shows llama.cpp's log from the first call on (setLogLevel() changes it later).
  const level = process.env.LLAMEM_LOG;
  if (level && Object.hasOwn(LOG_LEVELS, level)) cached.setLogLevel(LOG_LEVELS[level as keyof typeof LOG_LEVELS]);
  return cached;
}
