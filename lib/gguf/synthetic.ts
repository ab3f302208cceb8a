/**
 * Synthetic models: real tokenizer, seeded random weights. They load and run in llama.cpp like a
 * real model of the same shape (the output is noise), which is all tests, demos and memory
 * benchmarks need, without downloading gigabytes. Llama models come in three sizes (presets);
 * the other architectures (qwen2, qwen3, gemma3, phi3, qwen3moe, a Mistral-Nemo-shaped llama,
 * mamba) in one tiny shape each, described in ./synthetic/archs.ts.
 *
 * @packageDocumentation
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { LlamemError } from "../errors.js";
import { packageRoot } from "../system.js";
import { GGML_TYPE, GGUF_VALUE_TYPE } from "./format.js";
import type { GgufMetadataEntry } from "./format.js";
import { readGguf } from "./read.js";
import { gguf, writeGguf } from "./write.js";
import type { GgufTensorSource } from "./write.js";
import { archPlan, isSyntheticArch, SYNTHETIC_ARCHS, type SyntheticArch, type SyntheticTensor } from "./synthetic/archs.js";

export { SYNTHETIC_ARCHS, archPlan, isSyntheticArch } from "./synthetic/archs.js";
export type { SyntheticArch, SyntheticArchInfo, SyntheticTensor, ArchPlan } from "./synthetic/archs.js";

/**
 * Bumped whenever the bytes written for a given (preset or architecture plan, type, seed, vocab)
 * change without the plan changing (e.g. how a role's values are generated).
 */
export const SYNTHETIC_FORMAT_VERSION = 2;

/** The vocabulary file used when none is given. */
export const DEFAULT_VOCAB_FILE = "ggml-vocab-llama-spm.gguf";

/** Model shapes to choose from. */
export type SyntheticPreset = "tiny" | "1b" | "2b" | "8b";
/** Weight formats to choose from (norm weights are always f32). */
export type SyntheticType = "f32" | "f16" | "q8_0" | "q4_0";

/** Hyperparameters of a synthetic model. */
export interface SyntheticShape {
  /** Embedding width. */
  readonly nEmbd: number;
  /** Transformer blocks. */
  readonly nLayer: number;
  /** Attention heads. */
  readonly nHead: number;
  /** Key/value heads (grouped-query attention when fewer than nHead). */
  readonly nHeadKv: number;
  /** Feed-forward width. */
  readonly nFf: number;
  /** Training context length. */
  readonly contextLength: number;
  /** RoPE base frequency. */
  readonly ropeFreqBase: number;
  /** RMS norm epsilon. */
  readonly rmsEps: number;
}

/**
 * The presets: tiny (a few MB; 32-wide heads so quantized KV caches work), TinyLlama-1.1B's shape,
 * H2O-Danube2-1.8B's shape (a llama with 80-wide heads, which are not a whole number of SIMD steps),
 * Llama-3-8B's shape.
 */
export const SYNTHETIC_PRESETS: Readonly<Record<SyntheticPreset, SyntheticShape>> = Object.freeze({
  tiny: Object.freeze({ nEmbd: 64, nLayer: 2, nHead: 2, nHeadKv: 1, nFf: 192, contextLength: 4096, ropeFreqBase: 10000, rmsEps: 1e-5 }),
  "1b": Object.freeze({ nEmbd: 2048, nLayer: 22, nHead: 32, nHeadKv: 4, nFf: 5632, contextLength: 2048, ropeFreqBase: 10000, rmsEps: 1e-5 }),
  "2b": Object.freeze({ nEmbd: 2560, nLayer: 24, nHead: 32, nHeadKv: 8, nFf: 6912, contextLength: 8192, ropeFreqBase: 10000, rmsEps: 1e-5 }),
  "8b": Object.freeze({ nEmbd: 4096, nLayer: 32, nHead: 32, nHeadKv: 8, nFf: 14336, contextLength: 8192, ropeFreqBase: 500000, rmsEps: 1e-5 }),
});

const TYPE_ID: Readonly<Record<SyntheticType, number>> = { f32: GGML_TYPE.F32, f16: GGML_TYPE.F16, q8_0: GGML_TYPE.Q8_0, q4_0: GGML_TYPE.Q4_0 };
/** llama.cpp's `llama_ftype` for each format (general.file_type). */
const FILE_TYPE: Readonly<Record<SyntheticType, number>> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7 };

/** A ChatML template; llama.cpp recognises it by "<|im_start|>". */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Standard deviation of the random weights. */
export const WEIGHT_STD = 0.02;

// ---------------------------------------------------------------------------------------------
// Paths.

/**
 * Path of a vocabulary GGUF from the llama.cpp source: `$LLAMA_CPP_DIR/models/<file>` first, then
 * `<package root>/vendor/llama.cpp/models/<file>`.
 *
 * @throws {LlamemError} ERR_FILE_NOT_FOUND, telling the user to run `node scripts/fetch-llama.mjs`.
 */
export function defaultVocabPath(file: string = DEFAULT_VOCAB_FILE): string {
  const candidates: string[] = [];
  const env = process.env["LLAMA_CPP_DIR"];
  if (env) {
    const c = join(resolve(env), "models", file);
    if (existsSync(c)) return c;
    candidates.push(c);
  }
  const vendored = join(packageRoot, "vendor", "llama.cpp", "models", file);
  if (existsSync(vendored)) return vendored;
  candidates.push(vendored);
  throw new LlamemError(
    "ERR_FILE_NOT_FOUND",
    `cannot find the tokenizer vocabulary ${file} (looked at ${candidates.join(", ")}); ` +
      "run `node scripts/fetch-llama.mjs` to fetch the llama.cpp source, or set LLAMA_CPP_DIR to a llama.cpp checkout",
  );
}

// ---------------------------------------------------------------------------------------------
// Seeded PRNG: xoshiro128** seeded through a 32-bit mixer; every tensor gets its own stream, so
// a tensor's values do not depend on the others and the 2^128 period is never a concern.

function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Standard deviation of the sum of four uniform bytes: sqrt(4 * (256² - 1) / 12). */
const IRWIN_HALL_STD = Math.sqrt((4 * (256 * 256 - 1)) / 12);

/** A small, fast, seeded PRNG (xoshiro128**). */
export class SeededRng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /**
   * @param seed any non-negative safe integer
   * @param stream selects an independent sequence for the same seed
   */
  constructor(seed: number, stream = 0) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new LlamemError("ERR_INVALID_ARGUMENT", `seed must be a non-negative integer, got ${seed}`);
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 4294967296) >>> 0;
    let x = mix32(lo ^ 0x9e3779b9);
    x = mix32(x ^ hi ^ 0x85ebca6b);
    x = mix32(x ^ (stream >>> 0) ^ 0xc2b2ae35);
    this.s0 = mix32(x + 0x9e3779b9);
    this.s1 = mix32(x + 0x3c6ef372);
    this.s2 = mix32(x + 0xdaa66d2b);
    this.s3 = mix32(x + 0x78dde6e4);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** The next uniform 32-bit unsigned integer. */
  nextU32(): number {
    const s1 = this.s1;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r;
  }

  /**
   * Fills `out` with roughly normal values of mean 0 and standard deviation `std` (the sum of
   * the four bytes of one 32-bit draw: cheap, bounded at ±3.45 std).
   */
  fillNormal(out: Float32Array, std: number): void {
    const k = std / IRWIN_HALL_STD;
    // State in locals: this loop is the hottest in model generation.
    let s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3;
    for (let i = 0; i < out.length; i++) {
      const m = Math.imul(s1, 5);
      const r = Math.imul((m << 7) | (m >>> 25), 9);
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      out[i] = ((r & 255) + ((r >>> 8) & 255) + ((r >>> 16) & 255) + (r >>> 24) - 510) * k;
    }
    this.s0 = s0;
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

// ---------------------------------------------------------------------------------------------
// Number formats. These follow ggml's reference code bit for bit (float32 arithmetic emulated
// with Math.fround), so files match what llama-quantize's reference path would produce.

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** IEEE binary32 bits to binary16 bits, rounding to nearest even (as ggml does). */
function fp32BitsToFp16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 14 - e;
    let h = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) !== 0)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to infinity).
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
  return sign | h;
}

/** Converts a number to IEEE half-precision bits (via float32, round to nearest even). */
export function fp32ToFp16(value: number): number {
  F32[0] = value;
  return fp32BitsToFp16(U32[0] as number);
}

/** Converts IEEE half-precision bits to a number. */
export function fp16ToFp32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Encodes float32 values as f16 (little-endian). `dst` must hold `2 * src.length` bytes. */
export function encodeF16(src: Float32Array, dst: Uint8Array = new Uint8Array(src.length * 2)): Uint8Array {
  if (dst.length < src.length * 2) throw new LlamemError("ERR_INVALID_ARGUMENT", "f16 output buffer too small");
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0, o = 0; i < bits.length; i++, o += 2) {
    const h = fp32BitsToFp16(bits[i] as number);
    dst[o] = h & 255;
    dst[o + 1] = h >>> 8;
  }
  return dst.subarray(0, src.length * 2);
}

/** Bytes per 32-value block: f16 scale + 32 int8. */
export const Q8_0_BLOCK_BYTES = 34;
/** Bytes per 32-value block: f16 scale + 16 bytes of nibbles. */
export const Q4_0_BLOCK_BYTES = 18;

function checkBlocks(src: Float32Array, dst: Uint8Array, blockBytes: number, name: string): number {
  if (src.length % 32 !== 0) throw new LlamemError("ERR_INVALID_ARGUMENT", `${name}: length ${src.length} is not a multiple of 32`);
  const nb = src.length / 32;
  if (dst.length < nb * blockBytes) throw new LlamemError("ERR_INVALID_ARGUMENT", `${name}: output buffer too small`);
  return nb;
}

/**
 * Quantizes to q8_0 exactly as ggml's `quantize_row_q8_0_ref`: per block of 32, d = amax / 127
 * stored as f16, q = round(x / d) as int8.
 */
export function quantizeQ8_0(src: Float32Array, dst?: Uint8Array): Uint8Array {
  const out = dst ?? new Uint8Array((src.length / 32) * Q8_0_BLOCK_BYTES);
  const nb = checkBlocks(src, out, Q8_0_BLOCK_BYTES, "quantizeQ8_0");
  const fround = Math.fround;
  for (let b = 0; b < nb; b++) {
    const base = b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) {
      const a = Math.abs(src[base + j] as number);
      if (a > amax) amax = a;
    }
    const d = fround(amax / 127);
    const id = d !== 0 ? fround(1 / d) : 0;
    F32[0] = d;
    const h = fp32BitsToFp16(U32[0] as number);
    let o = b * Q8_0_BLOCK_BYTES;
    out[o++] = h & 255;
    out[o++] = h >>> 8;
    for (let j = 0; j < 32; j++) {
      const x0 = fround((src[base + j] as number) * id);
      // roundf: halves away from zero.
      const q = x0 >= 0 ? Math.floor(x0 + 0.5) : -Math.floor(0.5 - x0);
      out[o++] = q & 255;
    }
  }
  return out.subarray(0, nb * Q8_0_BLOCK_BYTES);
}

/**
 * Quantizes to q4_0 exactly as ggml's `quantize_row_q4_0_ref`: per block of 32, d = max / -8
 * (max = the value of largest magnitude) stored as f16, q = min(15, trunc(x / d + 8.5)); byte j
 * holds value j in its low nibble and value j + 16 in its high nibble.
 */
export function quantizeQ4_0(src: Float32Array, dst?: Uint8Array): Uint8Array {
  const out = dst ?? new Uint8Array((src.length / 32) * Q4_0_BLOCK_BYTES);
  const nb = checkBlocks(src, out, Q4_0_BLOCK_BYTES, "quantizeQ4_0");
  const fround = Math.fround;
  for (let b = 0; b < nb; b++) {
    const base = b * 32;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = src[base + j] as number;
      const a = Math.abs(v);
      if (amax < a) {
        amax = a;
        max = v;
      }
    }
    const d = fround(max / -8);
    const id = d !== 0 ? fround(1 / d) : 0;
    F32[0] = d;
    const h = fp32BitsToFp16(U32[0] as number);
    let o = b * Q4_0_BLOCK_BYTES;
    out[o++] = h & 255;
    out[o++] = h >>> 8;
    for (let j = 0; j < 16; j++) {
      const x0 = fround((src[base + j] as number) * id);
      const x1 = fround((src[base + 16 + j] as number) * id);
      // (int8_t) truncates toward zero; both sums are >= 0 here.
      const q0 = Math.min(15, fround(x0 + 8.5) | 0);
      const q1 = Math.min(15, fround(x1 + 8.5) | 0);
      out[o++] = q0 | (q1 << 4);
    }
  }
  return out.subarray(0, nb * Q4_0_BLOCK_BYTES);
}

// ---------------------------------------------------------------------------------------------
// The model.

function checkPreset(preset: unknown): SyntheticShape {
  if (typeof preset !== "string" || !Object.hasOwn(SYNTHETIC_PRESETS, preset)) {
    throw new LlamemError("ERR_INVALID_ARGUMENT", `unknown preset ${String(preset)} (expected ${Object.keys(SYNTHETIC_PRESETS).join(", ")})`);
  }
  return SYNTHETIC_PRESETS[preset as SyntheticPreset];
}

function checkType(type: unknown): number {
  if (typeof type !== "string" || !Object.hasOwn(TYPE_ID, type)) {
    throw new LlamemError("ERR_INVALID_ARGUMENT", `unknown type ${String(type)} (expected ${Object.keys(TYPE_ID).join(", ")})`);
  }
  return TYPE_ID[type as SyntheticType];
}

/**
 * The tensors of a synthetic llama model, with the names and shapes llama.cpp's llama
 * architecture loads (ggml dims: ne0 first, so a {n_embd, n_vocab} matrix has rows of n_embd).
 */
export function syntheticTensors(preset: SyntheticPreset, type: SyntheticType, nVocab: number): SyntheticTensor[] {
  const s = checkPreset(preset);
  const w = checkType(type);
  if (!Number.isSafeInteger(nVocab) || nVocab <= 0) throw new LlamemError("ERR_INVALID_ARGUMENT", `invalid vocabulary size ${nVocab}`);
  const headDim = s.nEmbd / s.nHead;
  const nEmbdKv = headDim * s.nHeadKv;
  const norm = (name: string): SyntheticTensor => ({ name, dims: [s.nEmbd], type: GGML_TYPE.F32, role: "norm" });
  const weight = (name: string, ne0: number, ne1: number): SyntheticTensor => ({ name, dims: [ne0, ne1], type: w, role: "weight" });
  const out: SyntheticTensor[] = [weight("token_embd.weight", s.nEmbd, nVocab)];
  for (let i = 0; i < s.nLayer; i++) {
    const p = `blk.${i}.`;
    out.push(
      norm(`${p}attn_norm.weight`),
      weight(`${p}attn_q.weight`, s.nEmbd, s.nEmbd),
      weight(`${p}attn_k.weight`, s.nEmbd, nEmbdKv),
      weight(`${p}attn_v.weight`, s.nEmbd, nEmbdKv),
      weight(`${p}attn_output.weight`, s.nEmbd, s.nEmbd),
      norm(`${p}ffn_norm.weight`),
      weight(`${p}ffn_gate.weight`, s.nEmbd, s.nFf),
      weight(`${p}ffn_up.weight`, s.nEmbd, s.nFf),
      weight(`${p}ffn_down.weight`, s.nFf, s.nEmbd),
    );
  }
  out.push(norm("output_norm.weight"), weight("output.weight", s.nEmbd, nVocab));
  return out;
}

/** The `general.name` of a synthetic model, e.g. "llamem synthetic tiny q4_0" or "llamem synthetic gemma3 q8_0". */
export function syntheticModelName(preset: SyntheticPreset | SyntheticArch, type: SyntheticType): string {
  return `llamem synthetic ${preset} ${type}`;
}

/** Options of {@link writeSyntheticModel}. */
export interface SyntheticModelOptions {
  /**
   * The architecture: "llama" (default; sized by `preset`) or one of {@link SYNTHETIC_ARCHS}
   * (one tiny shape each).
   */
  readonly arch?: "llama" | SyntheticArch;
  /** Llama model shape (default "tiny"); other architectures take only "tiny" or nothing. */
  readonly preset?: SyntheticPreset;
  /** Weight format of the matrices (rows that are not whole 32-value blocks stay f32). */
  readonly type: SyntheticType;
  /** PRNG seed (non-negative integer, default 0); the same seed gives byte-identical files. */
  readonly seed?: number;
  /**
   * GGUF to copy the `tokenizer.*` keys from (default: {@link defaultVocabPath} of the
   * architecture's vocabulary: llama-spm for llama, `SYNTHETIC_ARCHS[arch].vocab` otherwise).
   */
  readonly vocabPath?: string;
  /** Called with the fraction written, 0..1. */
  readonly onProgress?: (fraction: number) => void;
  /** Aborts the write (rejects with ERR_ABORTED; nothing is left behind). */
  readonly signal?: AbortSignal;
}

/** What {@link writeSyntheticModel} wrote. */
export interface SyntheticModelResult {
  /** The output path. */
  readonly path: string;
  /** File size in bytes. */
  readonly size: number;
  /** Number of tensors. */
  readonly tensorCount: number;
  /** Number of weights (elements over all tensors). */
  readonly parameterCount: number;
  /** Vocabulary size (from the tokenizer). */
  readonly nVocab: number;
}

/** Elements generated per chunk: 4 MiB of float32, enough to amortise calls, small enough to stay in cache-friendly bounds. */
const CHUNK_ELEMENTS = 1 << 20;

/** The vocabulary file an architecture's model takes its tokenizer from by default. */
export function syntheticVocabFile(arch: "llama" | SyntheticArch = "llama"): string {
  if (arch === "llama") return DEFAULT_VOCAB_FILE;
  if (!isSyntheticArch(arch)) checkArch(arch);
  return SYNTHETIC_ARCHS[arch].vocab;
}

function checkArch(arch: unknown): "llama" | SyntheticArch {
  if (arch === undefined || arch === "llama" || isSyntheticArch(arch)) return arch ?? "llama";
  throw new LlamemError("ERR_INVALID_ARGUMENT", `unknown architecture ${String(arch)} (expected llama, ${Object.keys(SYNTHETIC_ARCHS).join(", ")})`);
}

/**
 * Writes a GGUF of the architecture `opts.arch` (llama by default) with the tokenizer of a
 * vocabulary GGUF and seeded random weights (std {@link WEIGHT_STD} unless a tensor sets its
 * own; norm weights 1.0). Streams tensor by tensor in bounded chunks and writes atomically.
 *
 * @throws {LlamemError} ERR_INVALID_ARGUMENT, ERR_FILE_NOT_FOUND (vocabulary), errors of
 *   {@link readGguf} for a bad vocabulary, ERR_IO, ERR_ABORTED.
 */
export async function writeSyntheticModel(outPath: string, opts: SyntheticModelOptions): Promise<SyntheticModelResult> {
  const arch = checkArch(opts.arch);
  const preset = opts.preset ?? "tiny";
  const shape = checkPreset(preset);
  if (arch !== "llama" && preset !== "tiny") {
    throw new LlamemError("ERR_INVALID_ARGUMENT", `preset ${preset} is for llama models; ${arch} comes in one tiny shape`);
  }
  const weightType = checkType(opts.type);
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new LlamemError("ERR_INVALID_ARGUMENT", `seed must be a non-negative integer, got ${seed}`);

  const vocab = await readGguf(opts.vocabPath ?? defaultVocabPath(syntheticVocabFile(arch)));
  const tokens = vocab.metadata.get("tokenizer.ggml.tokens");
  if (!tokens || tokens.type !== GGUF_VALUE_TYPE.ARRAY || tokens.itemType !== GGUF_VALUE_TYPE.STRING || tokens.value.length === 0) {
    throw new LlamemError("ERR_INVALID_ARGUMENT", `${vocab.path} has no tokenizer.ggml.tokens string array`);
  }
  const nVocab = tokens.value.length;

  const name = arch === "llama" ? preset : arch;
  const metadata = new Map<string, GgufMetadataEntry>([
    ["general.architecture", gguf.str(arch === "llama" ? "llama" : SYNTHETIC_ARCHS[arch].architecture)],
    ["general.name", gguf.str(syntheticModelName(name, opts.type))],
    ["general.file_type", gguf.u32(FILE_TYPE[opts.type])],
    ["general.quantization_version", gguf.u32(2)],
  ]);
  let plan: SyntheticTensor[];
  if (arch === "llama") {
    for (const [k, v] of [
      ["llama.context_length", gguf.u32(shape.contextLength)],
      ["llama.embedding_length", gguf.u32(shape.nEmbd)],
      ["llama.block_count", gguf.u32(shape.nLayer)],
      ["llama.feed_forward_length", gguf.u32(shape.nFf)],
      ["llama.attention.head_count", gguf.u32(shape.nHead)],
      ["llama.attention.head_count_kv", gguf.u32(shape.nHeadKv)],
      ["llama.rope.dimension_count", gguf.u32(shape.nEmbd / shape.nHead)],
      ["llama.rope.freq_base", gguf.f32(shape.ropeFreqBase)],
      ["llama.attention.layer_norm_rms_epsilon", gguf.f32(shape.rmsEps)],
      ["llama.vocab_size", gguf.u32(nVocab)],
    ] as const) {
      metadata.set(k, v);
    }
    plan = syntheticTensors(preset, opts.type, nVocab);
  } else {
    const p = archPlan(arch, weightType, nVocab);
    for (const [k, v] of p.metadata) metadata.set(k, v);
    plan = p.tensors;
  }
  metadata.set("llamem.synthetic.preset", gguf.str(name));
  metadata.set("llamem.synthetic.seed", gguf.u64(seed));
  metadata.set("llamem.synthetic.format_version", gguf.u32(SYNTHETIC_FORMAT_VERSION));
  for (const [key, entry] of vocab.metadata) {
    if (key.startsWith("tokenizer.")) metadata.set(key, entry);
  }
  if (!metadata.has("tokenizer.chat_template")) metadata.set("tokenizer.chat_template", gguf.str(CHATML_TEMPLATE));

  // One scratch pair shared by all tensors: the writer consumes each chunk before asking for the next.
  const maxRow = plan.reduce((m, t) => Math.max(m, t.dims[0] as number), 0);
  const scratchElems = Math.max(CHUNK_ELEMENTS, maxRow);
  const values = new Float32Array(scratchElems);
  const bytes = new Uint8Array(scratchElems * 4);

  let parameterCount = 0;
  const tensors: GgufTensorSource[] = plan.map((t, index) => {
    const elements = t.dims.reduce((a, b) => a * b, 1);
    parameterCount += elements;
    return {
      name: t.name,
      dims: t.dims,
      type: t.type,
      data:
        t.role === "norm" ? () => normChunks(elements)
        : t.role === "ssmA" ? () => ssmAChunks(t)
        : () => weightChunks(t, elements, new SeededRng(seed, index), values, bytes),
    };
  });

  const result = await writeGguf(outPath, { metadata, tensors }, {
    signal: opts.signal,
    onProgress: opts.onProgress ? (written, total) => opts.onProgress?.(written / total) : undefined,
  });
  return { path: result.path, size: result.size, tensorCount: plan.length, parameterCount, nVocab };
}

/** Mamba's A: every row is -(1, 2, …, d_state), the value -exp(A_log) has at initialisation. */
function* ssmAChunks(t: SyntheticTensor): Generator<Uint8Array> {
  const [dState, rows] = t.dims as [number, number];
  const a = new Float32Array(dState * rows);
  for (let r = 0; r < rows; r++) for (let j = 0; j < dState; j++) a[r * dState + j] = -(j + 1);
  yield new Uint8Array(a.buffer);
}

function* normChunks(elements: number): Generator<Uint8Array> {
  const ones = new Float32Array(elements).fill(1);
  yield new Uint8Array(ones.buffer);
}

function* weightChunks(t: SyntheticTensor, elements: number, rng: SeededRng, values: Float32Array, bytes: Uint8Array): Generator<Uint8Array> {
  const rowLen = t.dims[0] as number;
  const rows = elements / rowLen;
  const rowsPerChunk = Math.max(1, Math.floor(values.length / rowLen));
  for (let r = 0; r < rows; r += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, rows - r) * rowLen;
    const chunk = values.subarray(0, n);
    rng.fillNormal(chunk, t.std ?? WEIGHT_STD);
    switch (t.type) {
      case GGML_TYPE.F32:
        yield new Uint8Array(chunk.buffer, chunk.byteOffset, n * 4);
        break;
      case GGML_TYPE.F16:
        yield encodeF16(chunk, bytes);
        break;
      case GGML_TYPE.Q8_0:
        yield quantizeQ8_0(chunk, bytes);
        break;
      case GGML_TYPE.Q4_0:
        yield quantizeQ4_0(chunk, bytes);
        break;
      default:
        throw new LlamemError("ERR_INTERNAL", `no encoder for ggml type ${t.type}`);
    }
  }
}

/** Options of {@link writeSyntheticLora}. */
export interface SyntheticLoraOptions {
  /** The base model the adapter is for: its architecture and the shapes of the weights it modifies. */
  readonly base: string;
  /** The rank of each low-rank pair (default 8). */
  readonly rank?: number;
  /** `adapter.lora.alpha` (default: the rank, so the scale is applied as given). */
  readonly alpha?: number;
  /** Seed of the random values (default 0). */
  readonly seed?: number;
  /** Standard deviation of the values (default 0.05). */
  readonly std?: number;
}

/** Which weights of each layer the synthetic LoRA modifies: attention's, as most fine-tunes do. */
const LORA_TARGETS = /^blk\.\d+\.attn_(q|k|v|output)\.weight$/;

/**
 * Writes a LoRA adapter for the model file `base` with seeded random pairs: for each attention
 * weight W (ne = [in, out]), `W.lora_a` (ne = [in, rank]) and `W.lora_b` (ne = [rank, out]), f32,
 * so llama.cpp applies scale · alpha / rank · B·A. Random values cannot make it a useful
 * fine-tune; they make its effect on the output visible and reproducible.
 */
export async function writeSyntheticLora(outPath: string, opts: SyntheticLoraOptions): Promise<{ path: string; size: number; tensorCount: number }> {
  const rank = opts.rank ?? 8;
  if (!Number.isSafeInteger(rank) || rank < 1 || rank > 4096) throw new LlamemError("ERR_INVALID_ARGUMENT", `rank must be an integer in [1, 4096], got ${rank}`);
  const alpha = opts.alpha ?? rank;
  if (!Number.isFinite(alpha)) throw new LlamemError("ERR_INVALID_ARGUMENT", "alpha must be a finite number");
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new LlamemError("ERR_INVALID_ARGUMENT", `seed must be a non-negative integer, got ${seed}`);
  const std = opts.std ?? 0.05;
  const base = await readGguf(opts.base, { checkModel: false });
  const arch = base.metadata.get("general.architecture");
  if (!arch || arch.type !== GGUF_VALUE_TYPE.STRING) throw new LlamemError("ERR_INVALID_ARGUMENT", `${opts.base} has no general.architecture`);
  const targets = base.tensors.filter((t) => LORA_TARGETS.test(t.name) && t.dims.length === 2);
  if (targets.length === 0) throw new LlamemError("ERR_INVALID_ARGUMENT", `${opts.base} has no attention weights a LoRA could modify`);
  const metadata = new Map<string, GgufMetadataEntry>([
    ["general.architecture", arch],
    ["general.type", gguf.str("adapter")],
    ["general.name", gguf.str(`llamem synthetic LoRA r${rank}`)],
    ["adapter.type", gguf.str("lora")],
    ["adapter.lora.alpha", gguf.f32(alpha)],
    ["llamem.synthetic.seed", gguf.u64(seed)],
  ]);
  const tensors: GgufTensorSource[] = [];
  targets.forEach((t, i) => {
    const [nIn, nOut] = t.dims as [number, number];
    for (const [suffix, dims, k] of [[".lora_a", [nIn, rank], 0], [".lora_b", [rank, nOut], 1]] as const) {
      tensors.push({
        name: t.name + suffix,
        dims,
        type: GGML_TYPE.F32,
        data: function* () {
          const values = new Float32Array(dims[0] * dims[1]);
          new SeededRng(seed, 2 * i + k).fillNormal(values, std);
          yield new Uint8Array(values.buffer);
        },
      });
    }
  });
  const result = await writeGguf(outPath, { metadata, tensors });
  return { path: result.path, size: result.size, tensorCount: tensors.length };
}
