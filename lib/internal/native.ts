/**
 * Loads the native addon (a prebuild from prebuilds/, else the local build) and declares its
 * typed interface: the batons lib/ passes down, every field explicit (the binding holds no
 * defaults). Private to lib/: nothing here is re-exported, and only the modules that own a
 * native object (model, context, speculative, sampler, estimate, devices, quantize, rpc, log) import it.
 * @internal
 */
import { createRequire } from "node:module";
import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
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
  /** llama_adapter_lora_init off the JS thread: the adapter's handle (ERR_ADAPTER when it cannot). */
  loadAdapter(path: string): Promise<NativeAdapter>;
}

/** @internal A loaded LoRA adapter's handle (a tagged External). */
export type NativeAdapter = { readonly __nativeAdapter: never };

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
  embeddings: boolean;
  pooling: number;
  /** Logits rows one batch may ask for (llama_context_params.n_outputs_max). */
  outputs: number;
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
  /** With `sample`: -1, or the log-probability of the sampled token and of the top n tokens. */
  logprobs: number;
  /**
   * The last `draft` tokens are a draft to verify (0: none): sampled at each, kept up to the
   * first disagreement, the rejected ones' cells removed. Needs `sample`, no `accept` or logprobs.
   */
  draft: number;
  /**
   * In a loop: the most decodes this entry may take in the call, the first included (1 in a
   * single step). After the first, an entry goes on with the token it sampled.
   */
  steps: number;
}

/** @internal A native generation loop: several decodes in one call, each step's results streamed. */
export interface NativeLoop {
  /** Most decodes in the call. */
  steps: number;
  /** No further step starts after this many milliseconds (0: no limit). */
  maxMs: number;
  /** Each step reaches onStep as it ends; false: all of them together before the promise settles. */
  stream: boolean;
  /** Each step's results, in order, all before the call's promise settles. */
  onStep(results: NativeBatchResult[]): void;
}

/** @internal */
export interface NativeBatchResult {
  seq: number;
  evaluated: number;
  decodeUs: number;
  /** When the step's decode and sampling ended (llama_time_us, a monotonic clock in µs). */
  doneUs: number;
  token?: number;
  eog?: boolean;
  /** The token came from the backend sampler in the decode's graph (not sampled on the CPU). */
  backend?: boolean;
  piece?: Buffer;
  logprob?: number;
  topTokens?: Int32Array;
  topLogprobs?: Float32Array;
  /** With a draft: every token sampled (all but the last equal the accepted drafts). */
  sampled?: Int32Array;
  /** With a draft: the pieces of the sampled tokens that are not end-of-generation. */
  pieces?: Buffer[];
}

/** @internal */
export interface NativeContext {
  info(): Omit<ContextInfo, "pooling"> & { pooling: number };
  /** One batched decode and each entry's sampling; with a loop, more steps on the sampled tokens (resolves undefined). */
  evalBatch(entries: NativeBatchEntry[], loop: null): Promise<NativeBatchResult[]>;
  evalBatch(entries: NativeBatchEntry[], loop: NativeLoop): Promise<undefined>;
  /** A loop in flight stops after its current step. */
  haltLoop(): void;
  /** Each entry's pooled vector (an embedding context). */
  embedBatch(entries: { seq: number; tokens: Int32Array }[]): Promise<Float32Array[]>;
  abort(): void;
  seqPosRange(seq: number): [number, number];
  seqRemove(seq: number, p0: number, p1: number): boolean;
  seqShift(seq: number, p0: number, p1: number, delta: number): void;
  seqCopy(src: number, dst: number, p0: number, p1: number): void;
  stateSeqGet(seq: number): Promise<Buffer>;
  stateSeqSet(seq: number, data: Buffer): Promise<number>;
  clear(): void;
  /** llama_set_adapters_lora: the adapters later decodes apply. */
  setAdapters(entries: { adapter: NativeAdapter; scale: number }[]): void;
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
  | { type: "grammar"; grammar: string; root: string }
  | { type: "logitBias"; entries: { token: number; bias: number }[] }
  | { type: "dry"; multiplier: number; base: number; allowedLength: number; lastN: number; breakers: string[] }
  | { type: "topNSigma"; n: number }
  | { type: "typicalP"; p: number; minKeep: number }
  | { type: "xtc"; p: number; t: number; minKeep: number; seed: number }
  | { type: "mirostatV2"; seed: number; tau: number; eta: number }
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
  /** Sample in the decode's graph (llama_set_sampler); every stage must have a backend version. */
  backend: boolean;
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
  /** The CPU backend in use: "native" (a source build), "portable", or the variant a prebuild chose. */
  cpuBackend: { variant: string; path: string | null; features: string[] };
}

/**
 * The contract version this lib/ expects of the binary (kApiVersion in binding/addon.h): a
 * binary built for another one is refused at load. @internal
 */
export const NATIVE_API_VERSION = 4;

/** @internal */
export interface NativeBinding {
  /** The contract version the binary implements (see NATIVE_API_VERSION). */
  readonly apiVersion?: number;
  Model: {
    load(path: string, options: NativeLoadOptions, onProgress: ((p: number) => void) | null): {
      promise: Promise<NativeModel>;
      cancel(): void;
    };
    estimate(path: string, load: NativeLoadOptions, context: NativeContextOptions): Promise<NativeEstimate>;
    /** Drops the handle's hold on the adapter (contexts it is set on keep it until they let go). */
    disposeAdapter(adapter: NativeAdapter): void;
  };
  /** `threadsOf`: null, or a context whose thread pools the new one shares (lib/ never computes on both at once). */
  Context: { create(model: NativeModel, options: NativeContextOptions, threadsOf: NativeContext | null): Promise<NativeContext> };
  Sampler: new (model: NativeModel, options: NativeSamplerOptions) => NativeSampler;
  setLogLevel(level: number): void;
  systemInfo(): NativeSystemInfo;
  devices(): Device[];
  quantize(input: string, output: string, options: { ftype: number; threads: number; allowRequantize: boolean; pure: boolean }): Promise<void>;
  /** Registers a server's devices off the JS thread, after a handshake of its own (ERR_IO when it fails). */
  rpcAddServer(endpoint: string): Promise<void>;
  /** Serves on a thread of its own; rejects with ERR_IO if the server stops (it cannot listen). */
  rpcServe(endpoint: string, threads: number): Promise<never>;
  /** The endpoints registered in this process. */
  rpcServers(): string[];
}

let cached: NativeBinding | undefined;

/** Where a binary came from: it decides what a failure to load it means. @internal */
export type BinarySource = "LLAMEM_BINARY" | "local build" | "prebuild";

/** What the loader tried, for the error it reports. @internal */
export interface LoadAttempt {
  /** null: no binary was found at all. */
  source: BinarySource | null;
  path: string | null;
  /** The error of node-gyp-build's lookup or of require(). */
  error: string;
  /** The platform-arch folders under prebuilds/ in this package. */
  prebuilds: string[];
  /** e.g. "linux-x64", "linux-x64 (musl)". */
  platform: string;
}

const BUILD_FROM_SOURCE =
  "build it from source: `npm rebuild llamem --foreground-scripts` (runs the install script: needs CMake 3.18+ and a C++17 compiler; " +
  "LLAMEM_BUILD_FROM_SOURCE=1 forces it), or `npm run build:addon` in a checkout";

/**
 * The message of ERR_NATIVE_LOAD: which binary failed, why, and what to do. Pure, for tests.
 * @internal
 */
export function explainLoadFailure(a: LoadAttempt): string {
  const head = "cannot load the llamem native addon";
  const err = a.error.trim().split("\n")[0] ?? "";
  if (a.source === null) {
    const have = a.prebuilds.length > 0 ? `this package carries prebuilds for ${a.prebuilds.join(", ")} only` : "this package carries no prebuilds";
    return `${head}: no prebuilt binary fits ${a.platform} (${have}) and there is no local build; ${BUILD_FROM_SOURCE}`;
  }
  if (a.source === "LLAMEM_BINARY") {
    return `${head}: LLAMEM_BINARY=${a.path} failed to load (${err}); point it at a built llamem.node or unset it`;
  }
  if (a.source === "local build") {
    return `${head}: the local build ${a.path} failed to load (${err}); rebuild it with \`npm run build:addon\`, or delete build/ to use a prebuild`;
  }
  // A prebuild that does not load on this machine.
  let why = err;
  const glibc = /(GLIBC(?:XX)?_[\d.]+)' not found/.exec(err);
  const missing = /^([^:]+\.so[^:]*): cannot open shared object file/.exec(err);
  if (glibc) why = `this system's C/C++ runtime is older than the prebuild needs (${glibc[1]} not found)`;
  else if (missing) why = `the prebuild is incomplete: ${missing[1]} is missing beside it (${err})`;
  else if (/invalid ELF header|wrong ELF class|Exec format error|not a valid Win32/.test(err)) why = `it is not a binary for ${a.platform} (${err})`;
  return `${head}: the prebuilt binary ${a.path} does not load on this machine: ${why}; ${BUILD_FROM_SOURCE}`;
}

function platformName(): string {
  let libc = "";
  if (process.platform === "linux") {
    const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    libc = header?.glibcVersionRuntime ? "" : " (musl)";
  }
  return `${process.platform}-${process.arch}${libc}`;
}

function prebuildFolders(): string[] {
  try {
    return readdirSync(join(packageRoot, "prebuilds")).filter((d) => !d.startsWith(".")).sort();
  } catch {
    return [];
  }
}

/** The native binding, loaded on first use; a clear ERR_NATIVE_LOAD if it cannot be. @internal */
export function native(): NativeBinding {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const override = process.env.LLAMEM_BINARY;
  let source: BinarySource | null = override ? "LLAMEM_BINARY" : null;
  let path: string | null = override ? resolve(override) : null;
  try {
    if (path === null) {
      // A local build (build/Release) first, then prebuilds/<platform>-<arch>/ (node-gyp-build's order).
      path = (require("node-gyp-build") as { resolve(dir: string): string }).resolve(packageRoot);
      source = /[\\/]prebuilds[\\/]/.test(path) ? "prebuild" : "local build";
    }
    const binding = require(path) as NativeBinding;
    if (binding.apiVersion !== NATIVE_API_VERSION) {
      throw new Error(`the binary was built for another version of llamem (native API ${binding.apiVersion ?? 1}, this one needs ${NATIVE_API_VERSION}): a stale build or prebuild; rebuild it (npm run build:addon) or reinstall llamem`);
    }
    cached = binding;
  } catch (err) {
    const attempt: LoadAttempt = {
      source,
      path,
      error: (err as Error).message,
      prebuilds: prebuildFolders(),
      platform: platformName(),
    };
    throw new LlamemError("ERR_NATIVE_LOAD", explainLoadFailure(attempt), { cause: err });
  }
  // LLAMEM_LOG=info shows llama.cpp's log from the first call on (setLogLevel() changes it later).
  const level = process.env.LLAMEM_LOG;
  if (level && Object.hasOwn(LOG_LEVELS, level)) cached.setLogLevel(LOG_LEVELS[level as keyof typeof LOG_LEVELS]);
  return cached;
}
