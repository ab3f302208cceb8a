/**
 * Quantizing a GGUF model with llama.cpp's quantizer, off the JS thread. The output appears
 * only when complete (written to a temporary file, then renamed).
 */
import { stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { LlamemError, fromNative, invalidArgument } from "./errors.js";
import { readGguf } from "./gguf/read.js";
import { native } from "./internal/native.js";
import { defaultThreads } from "./system.js";

/** llama.cpp's `llama_ftype` ids of the types one can quantize to. */
export const QUANT_TYPES = {
  f32: 0, f16: 1, q4_0: 2, q4_1: 3, q8_0: 7, q5_0: 8, q5_1: 9, q2_k: 10, q3_k_s: 11, q3_k_m: 12, q3_k_l: 13,
  q4_k_s: 14, q4_k_m: 15, q5_k_s: 16, q5_k_m: 17, q6_k: 18, iq4_nl: 25, iq4_xs: 30, bf16: 32, tq1_0: 36, tq2_0: 37,
} as const;

/** A target type of {@link quantize}. */
export type QuantType = keyof typeof QUANT_TYPES;

/** Options of {@link quantize}. */
export interface QuantizeOptions {
  /** Threads (default: the physical cores). */
  threads?: number;
  /** Allow re-quantizing tensors that are already quantized (quality suffers). */
  allowRequantize?: boolean;
  /** Quantize every tensor to the type, without llama.cpp's per-tensor mixture. */
  pure?: boolean;
}

/** Quantizes `input` into `output` as `type` (e.g. "q4_0", "q4_k_m", "q8_0"). */
export async function quantize(input: string, output: string, type: QuantType, options: QuantizeOptions = {}): Promise<void> {
  // Own keys only: "toString" or "constructor" must not pass as a type.
  const ftype = typeof type === "string" && Object.hasOwn(QUANT_TYPES, type) ? QUANT_TYPES[type] : undefined;
  if (ftype === undefined) invalidArgument(`type must be one of ${Object.keys(QUANT_TYPES).join(", ")}`);
  const st = await stat(input).catch(() => undefined);
  if (!st) throw new LlamemError("ERR_FILE_NOT_FOUND", `model file not found: ${input}`);
  if (!st.isFile()) throw new LlamemError("ERR_NOT_A_FILE", `not a regular file: ${input}`);
  if (resolve(input) === resolve(output)) invalidArgument("quantize: the output must be another file than the input");
  // llama.cpp only reports "iostream error" when it cannot create the output: check the folder first.
  const dir = await stat(dirname(resolve(output))).catch(() => undefined);
  if (!dir) throw new LlamemError("ERR_FILE_NOT_FOUND", `the output folder does not exist: ${dirname(resolve(output))}`);
  if (!dir.isDirectory()) throw new LlamemError("ERR_NOT_A_FILE", `the output folder is not a folder: ${dirname(resolve(output))}`);
  await readGguf(input);
  try {
    await native().quantize(input, output, { ftype, threads: options.threads ?? defaultThreads(), allowRequantize: options.allowRequantize ?? false, pure: options.pure ?? false });
  } catch (err) {
    throw fromNative(err);
  }
}
