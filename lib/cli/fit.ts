/**
 * `llamem fit <model.gguf>`: what `gpuLayers: "auto"` and `contextSize: "auto"` would choose for
 * a model file under a memory budget, and why, with the bytes per device. Nothing is loaded:
 * every figure comes from llama.cpp's dry run (see lib/memory/estimate.ts).
 *
 * stdout carries the report (or, with --json, exactly one JSON object); errors go to stderr.
 */
import { InvalidArgumentError, type Command } from "commander";
import { LlamemError } from "../errors.js";
import { DEFAULTS, type KvCacheType } from "../options.js";
import { FIT_MARGIN, fitModel, type FitOptions, type FitResult } from "../memory/fit.js";
import type { DeviceEstimate } from "../memory/estimate.js";
import { CliExit, exitCodeFor, formatBytes, formatTable, styleFor, type Style } from "./output.js";
import { addFlashAttentionOption, addKvTypeOption, collect, gpuLayersArg, intArg, type FlashAttentionMode } from "./options.js";

const BINARY: Readonly<Record<string, number>> = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };
const DECIMAL: Readonly<Record<string, number>> = { k: 1e3, m: 1e6, g: 1e9, t: 1e12 };

/**
 * Parses a byte count: a plain number of bytes, or a number with a unit. `K`, `M`, `G`, `T` and
 * `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024 (so `512M` and `512MiB` are the same); `KB`, `MB`,
 * `GB`, `TB` are powers of 1000, as their SI names say. Case does not matter; `B` alone is bytes.
 *
 * @returns whole bytes (rounded down)
 * @throws {InvalidArgumentError} for anything else, including 0 and negative sizes
 */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(ib|b)?|(b))?\s*$/i.exec(text);
  if (!m) throw new InvalidArgumentError("expected a byte count such as 536870912, 512M, 8G or 1.5GiB.");
  const value = Number(m[1]);
  const prefix = (m[2] ?? "").toLowerCase();
  const suffix = (m[3] ?? "").toLowerCase();
  // "KB"-style names are SI (1000); a bare prefix or "KiB" is binary, as memory sizes usually are.
  const scale = suffix === "b" ? DECIMAL[prefix] : BINARY[prefix];
  const bytes = Math.floor(value * (scale ?? 1));
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new InvalidArgumentError("expected a positive byte count.");
  return bytes;
}

/** `--ctx`: a positive integer or "auto". */
function ctxArg(value: string): number | "auto" {
  return value === "auto" ? "auto" : intArg(1)(value);
}

/** `--gpu-layers`: an integer >= -1, "auto", "max", or "all" (the same as -1). */
function gpuLayersOrAutoArg(value: string): number | "auto" | "max" {
  return value === "auto" || value === "max" ? value : gpuLayersArg(value);
}

interface FitCliOptions {
  maxVram?: number;
  maxRam?: number;
  ctx: number | "auto";
  gpuLayers: number | "auto" | "max";
  kvType?: KvCacheType;
  flashAttn: FlashAttentionMode;
  sequences: number;
  batchSize: number;
  lora?: string[];
  draft?: string;
  json?: boolean;
}

/** What `llamem fit --json` prints. */
export interface FitJsonResult {
  /** False when nothing fits; `error` then says why and what would. */
  fits: boolean;
  model: string;
  gpuLayers?: number;
  /** Layers of the model (the GPU can take one more: the output layer). */
  layers?: number;
  contextSize?: number;
  trainedContextSize?: number;
  /** One line per decision. */
  reasons?: string[];
  /** The budgets given, in bytes (null: free memory minus a margin). */
  budget: { maxRam: number | null; maxVram: number | null };
  devices?: DeviceEstimate[];
  weights?: number;
  kv?: number;
  compute?: number;
  total?: number;
  /** Of the totals, LoRA adapters (--lora) and the draft model with its context (--draft). */
  adapters?: number;
  draft?: number;
  error?: { code: string; message: string };
}

/** Registers `llamem fit`. */
export function registerFit(program: Command): Command {
  const margin = formatBytes(FIT_MARGIN);
  const cmd = program
    .command("fit")
    .summary("show what fits in memory: GPU layers and context size, per device")
    .description(
      // Paragraphs only: commander wraps the lines to the terminal itself.
      "Show what gpuLayers and contextSize \"auto\" would choose for a model under a memory budget, why, and the " +
        "bytes for weights, KV cache and compute buffers on each device. Nothing is loaded: the figures come from " +
        `llama.cpp's own dry run of the load. Without a budget, the limit is the memory free now minus ${margin}.\n\n` +
        "Byte sizes: 536870912, 512M, 8G, 1.5GiB (K/M/G/T and KiB/MiB/GiB/TiB are 1024-based; KB/MB/GB/TB 1000-based).",
    )
    .argument("<model>", "GGUF model file")
    .option("--max-vram <bytes>", "GPU memory budget per GPU, for weights + KV + compute", parseBytes)
    .option("--max-ram <bytes>", "host memory budget, for weights + KV + compute", parseBytes)
    .option("-c, --ctx <n|auto>", "context size in tokens, or auto: the largest that fits, up to the trained length", ctxArg, "auto")
    .option("--gpu-layers <n|auto|max>", 'layers on the GPU: a number, -1 or "all", "auto" (as many as fit), "max"', gpuLayersOrAutoArg, "auto");
  addKvTypeOption(cmd);
  addFlashAttentionOption(cmd);
  return cmd
    .option("--sequences <n>", "parallel sequences", intArg(1), DEFAULTS.sequences)
    .option("--batch-size <n>", "most tokens per decode (sizes the compute buffers)", intArg(1), DEFAULTS.batchSize)
    .option("--lora <file>", "count this LoRA adapter's tensors with the weights; repeatable", collect)
    .option("--draft <file>", "count a draft model for speculative decoding: its weights (on the CPU) and its context, shaped as the model's")
    .option("--json", "print one JSON object instead of the report")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem fit model.gguf
  $ llamem fit model.gguf --max-ram 8G --max-vram 6GiB
  $ llamem fit model.gguf --ctx 32768 --kv-type q8_0 --gpu-layers max
  $ llamem fit model.gguf --max-ram 512M --json | jq .contextSize`,
    )
    .action(async (model: string, o: FitCliOptions) => {
      await runFit(model, o);
    });
}

async function runFit(path: string, o: FitCliOptions): Promise<void> {
  const options: FitOptions = {
    gpuLayers: o.gpuLayers,
    contextSize: o.ctx,
    maxRam: o.maxRam,
    maxVram: o.maxVram,
    kvType: o.kvType,
    flashAttention: o.flashAttn,
    sequences: o.sequences,
    batchSize: o.batchSize,
    ...(o.lora === undefined ? {} : { adapters: o.lora }),
    ...(o.draft === undefined ? {} : { draft: { path: o.draft } }),
  };
  const budget = { maxRam: o.maxRam ?? null, maxVram: o.maxVram ?? null };
  let fit: FitResult;
  try {
    fit = await fitModel(path, options);
  } catch (err) {
    // Not fitting is an answer, not a crash: --json still gets its one object.
    if (o.json && err instanceof LlamemError && err.code === "ERR_INSUFFICIENT_MEMORY") {
      const json: FitJsonResult = { fits: false, model: path, budget, error: { code: err.code, message: err.message } };
      process.stdout.write(JSON.stringify(json) + "\n");
      process.stderr.write(`llamem: ${err.message}\n`);
      throw new CliExit(exitCodeFor(err.code));
    }
    throw err;
  }
  const e = fit.estimate;
  // fitModel explains only what it decided; a value the user fixed is explained here.
  const reasons = [...fit.reasons];
  if (typeof o.gpuLayers === "number") reasons.unshift(`${fit.gpuLayers} GPU layers: as requested`);
  if (typeof o.ctx === "number") reasons.push(`contextSize ${fit.contextSize}: as requested (the model was trained for ${e.trainedContextSize})`);

  if (o.json) {
    const json: FitJsonResult = {
      fits: true,
      model: path,
      gpuLayers: fit.gpuLayers,
      layers: e.layers,
      contextSize: fit.contextSize,
      trainedContextSize: e.trainedContextSize,
      reasons,
      budget,
      devices: e.devices,
      weights: e.weights,
      kv: e.kv,
      compute: e.compute,
      total: e.total,
      adapters: e.adapters,
      draft: e.draft,
    };
    process.stdout.write(JSON.stringify(json) + "\n");
    return;
  }

  process.stdout.write(fitReport(path, fit, reasons, o, styleFor(process.stdout)));
}

/** The human report of a fit: the model, the choice and why, and the bytes per device against the budget. */
export function fitReport(path: string, fit: FitResult, reasons: readonly string[], budget: { maxRam?: number; maxVram?: number }, style: Style): string {
  const e = fit.estimate;
  const limit = (d: DeviceEstimate) => {
    const given = d.host ? budget.maxRam : budget.maxVram;
    return given !== undefined ? formatBytes(given) : `${formatBytes(Math.max(0, d.free - FIT_MARGIN))} (free - ${formatBytes(FIT_MARGIN)})`;
  };
  const rows: string[][] = [["device", "weights", "KV", "compute", "total", "budget"].map((h) => style.bold(h))];
  for (const d of e.devices) {
    rows.push([d.device, formatBytes(d.weights), formatBytes(d.kv), formatBytes(d.compute), formatBytes(d.total), limit(d)]);
  }
  if (e.devices.length > 1) rows.push(["total", formatBytes(e.weights), formatBytes(e.kv), formatBytes(e.compute), formatBytes(e.total), ""]);
  const allLayers = e.layers + 1;
  return (
    `${style.bold("model")}    ${path}\n` +
    `         ${e.layers} layers, trained context ${e.trainedContextSize} tokens\n` +
    `${style.bold("choice")}   context ${fit.contextSize} tokens, ${Math.min(fit.gpuLayers, allLayers)} of ${allLayers} layers on the GPU\n` +
    (e.adapters > 0 ? `         LoRA adapters ${formatBytes(e.adapters)} (in the weights column)\n` : "") +
    (e.draft > 0 ? `         draft model and its context ${formatBytes(e.draft)} (in the columns)\n` : "") +
    reasons.map((r) => `         - ${r}\n`).join("") +
    "\n" +
    formatTable(rows) +
    "\n"
  );
}
