/**
 * Fitting a model and its KV cache into memory: `gpuLayers: "auto" | "max"` and
 * `contextSize: "auto"`, within free memory minus a margin or a budget the user sets. Every
 * decision is made from llama.cpp's dry-run estimates, before anything is allocated; a request
 * that cannot fit is an ERR_INSUFFICIENT_MEMORY saying what would.
 */
import { LlamemError, invalidArgument } from "../errors.js";
import { formatBytes } from "./format.js";
import { estimateFile, type DeviceEstimate, type EstimateOptions, type MemoryEstimate } from "./estimate.js";
import { readGguf } from "../gguf/read.js";
import { defaultContextSize, DEFAULTS, type KvCacheType } from "../options.js";
import type { Model } from "../model.js";
import type { ContextOptions } from "../context.js";

/** Memory left free for the OS and other allocations when no budget is given. */
export const FIT_MARGIN = 512 * 1024 * 1024;
/** Context sizes are fitted in steps of this many tokens (llama.cpp pads the cache to 256). */
const CONTEXT_STEP = 256;

/** Options of {@link fitModel}. */
export interface FitOptions extends Omit<EstimateOptions, "gpuLayers" | "contextSize"> {
  gpuLayers?: number | "auto" | "max";
  contextSize?: number | "auto";
  /** Host memory budget in bytes for weights + KV + compute (default: available RAM minus 512 MiB). */
  maxRam?: number;
  /** Per-GPU memory budget in bytes (default: free VRAM minus 512 MiB). */
  maxVram?: number;
}

/** What {@link fitModel} chose, and why. */
export interface FitResult {
  gpuLayers: number;
  contextSize: number;
  estimate: MemoryEstimate;
  /** One line per decision, for humans. */
  reasons: string[];
}

interface Budget {
  host: number;
  gpu: number | undefined;
  /** Whether the weights count against the host / GPU limit (see {@link defaultBudget}). */
  hostWeights: boolean;
  gpuWeights: boolean;
}

function checkBudget(value: number | undefined, name: string): void {
  if (value !== undefined && (!Number.isFinite(value) || value <= 0)) invalidArgument(`${name} must be a positive number of bytes`);
}

/** Bytes a device's share of the estimate counts against its budget. */
function charged(d: DeviceEstimate, budget: Budget): number {
  return d.kv + d.compute + ((d.host ? budget.hostWeights : budget.gpuWeights) ? d.weights : 0);
}

/** The limit of one device under the budget. */
function limitOf(d: DeviceEstimate, budget: Budget): number {
  return d.host ? budget.host : (budget.gpu ?? d.free - FIT_MARGIN);
}

/** Bytes over budget on the worst device (<= 0 when it fits). */
function overBy(est: MemoryEstimate, budget: Budget): number {
  let worst = -Infinity;
  for (const d of est.devices) worst = Math.max(worst, charged(d, budget) - limitOf(d, budget));
  return worst;
}

/**
 * The limits to fit in. A budget the user gives (maxRam, maxVram) covers weights + KV + compute,
 * as documented, also for a model that is already loaded. Without one, the limit is the memory
 * free now minus a margin; a loaded model's weights already take their part of that, so they
 * are not counted again (`countWeights` false).
 */
function defaultBudget(o: FitOptions, countWeights: boolean, est: MemoryEstimate): Budget {
  checkBudget(o.maxRam, "maxRam");
  checkBudget(o.maxVram, "maxVram");
  const host = est.devices.find((d) => d.host);
  return {
    host: o.maxRam ?? (host?.free ?? 0) - FIT_MARGIN,
    gpu: o.maxVram,
    hostWeights: countWeights || o.maxRam !== undefined,
    gpuWeights: countWeights || o.maxVram !== undefined,
  };
}

/** Largest value in [lo, hi] (stepped) for which `fits` holds, or undefined. `fits` must be monotone. */
async function largest(lo: number, hi: number, step: number, fits: (v: number) => Promise<boolean>): Promise<number | undefined> {
  let a = Math.ceil(lo / step);
  let b = Math.floor(hi / step);
  if (b < a) return undefined;
  if (await fits(b * step)) return b * step;
  if (!(await fits(a * step))) return undefined;
  while (b - a > 1) {
    const m = Math.floor((a + b) / 2);
    if (await fits(m * step)) a = m;
    else b = m;
  }
  return a * step;
}

async function largestLayers(hi: number, fits: (v: number) => Promise<boolean>): Promise<number | undefined> {
  return largest(0, hi, 1, fits);
}

/**
 * Chooses GPU layers and context size for a model file so weights, KV cache and compute buffers
 * fit the budget. Numbers in the options are kept as given (and checked); "auto" is fitted.
 */
export async function fitModel(path: string, o: FitOptions = {}): Promise<FitResult> {
  if (o === null || typeof o !== "object") invalidArgument("fitModel(path, options): options must be an object");
  const gguf = await readGguf(path);
  const arch = gguf.metadata.get("general.architecture")?.value;
  const trained = gguf.metadata.get(`${String(arch)}.context_length`)?.value;
  return fitFile(path, typeof trained === "number" ? trained : 0, o, true);
}

/** {@link fitModel} of a file whose header was already read: every dry run skips the header parse. @internal */
export async function fitFile(path: string, trainedContextSize: number, o: FitOptions, countWeights: boolean): Promise<FitResult> {
  const estimateMemory = (e: EstimateOptions) => estimateFile(path, trainedContextSize, e);
  const reasons: string[] = [];
  const base: EstimateOptions = { ...o, gpuLayers: 0, contextSize: 256 };
  const probe = await estimateMemory(base);
  const hasGpu = probe.devices.some((d) => !d.host) || (await estimateMemory({ ...base, gpuLayers: -1 })).devices.some((d) => !d.host);
  const budget = defaultBudget(o, countWeights, probe);
  const allLayers = probe.layers + 1;
  const trained = probe.trainedContextSize || DEFAULTS.trainedContextSize;
  const est = (gpuLayers: number, contextSize: number) => estimateMemory({ ...o, gpuLayers, contextSize });
  const fits = async (gpuLayers: number, contextSize: number) => overBy(await est(gpuLayers, contextSize), budget) <= 0;

  const wantCtx = o.contextSize ?? defaultContextSize(trained);
  if (wantCtx !== "auto" && (!Number.isInteger(wantCtx) || wantCtx < 1)) invalidArgument('contextSize must be a positive integer or "auto"');
  const layerCtx = wantCtx === "auto" ? defaultContextSize(trained) : wantCtx;

  let gpuLayers: number;
  const g = o.gpuLayers ?? DEFAULTS.gpuLayers;
  if (g === "auto" || g === "max") {
    if (!hasGpu) {
      gpuLayers = 0;
      reasons.push("no GPU device: all layers run on the CPU");
    } else if (g === "max") {
      gpuLayers = allLayers;
      reasons.push(`all ${allLayers} layers on the GPU`);
    } else {
      const n = await largestLayers(allLayers, (v) => fits(v, layerCtx));
      gpuLayers = n ?? 0;
      reasons.push(`${gpuLayers} of ${allLayers} layers fit the GPU budget`);
    }
  } else {
    if (!Number.isInteger(g) || g < -1) invalidArgument('gpuLayers must be an integer >= -1, "auto" or "max"');
    gpuLayers = g === -1 ? allLayers : g;
  }

  let contextSize: number;
  if (wantCtx === "auto") {
    const c = await largest(CONTEXT_STEP, trained, CONTEXT_STEP, (v) => fits(gpuLayers, v));
    if (c === undefined) throw await notFit(estimateMemory, o, budget, gpuLayers, CONTEXT_STEP, trained);
    contextSize = c;
    reasons.push(
      c >= trained
        ? `contextSize ${c}: the trained context fits`
        : `contextSize ${c}: the largest that fits the budget (${budgetText(budget)}); the model was trained for ${trained}`,
    );
  } else {
    contextSize = wantCtx;
  }
  const final = await est(gpuLayers, contextSize);
  if (overBy(final, budget) > 0) throw await notFit(estimateMemory, o, budget, gpuLayers, contextSize, trained, final);
  return { gpuLayers, contextSize, estimate: final, reasons };
}

/**
 * Fits or checks the context of an already loaded model: `contextSize: "auto"` is fitted, a
 * fixed size is checked against `maxRam`/`maxVram`. @internal
 */
export async function fitContextSize(model: Model, o: ContextOptions): Promise<FitResult> {
  const trained = model.info.trainedContextSize;
  const contextSize = o.contextSize ?? defaultContextSize(trained);
  const { draft, ...rest } = o;
  // The draft model and its context count as this model and context do (weights only under a given budget).
  const withDraft = draft?.model ? { draft: { path: draft.model.path, gpuLayers: draft.model.gpuLayers } } : {};
  return fitFile(model.path, trained, { ...rest, ...withDraft, gpuLayers: model.gpuLayers, contextSize, repack: model.repack }, false);
}

function budgetText(b: Budget): string {
  return `host ${formatBytes(b.host)}${b.gpu !== undefined ? `, GPU ${formatBytes(b.gpu)}` : ""}`;
}

/** The ERR_INSUFFICIENT_MEMORY for a request, naming what would fit instead. */
async function notFit(
  estimateMemory: (e: EstimateOptions) => Promise<MemoryEstimate>, o: FitOptions, budget: Budget, gpuLayers: number, contextSize: number, trained: number, known?: MemoryEstimate,
): Promise<LlamemError> {
  // A huge context's dry run is slow (llama.cpp sizes its per-cell bookkeeping): reuse the one we have.
  const need = known ?? (await estimateMemory({ ...o, gpuLayers, contextSize }));
  // Name the device that is most over its limit: that is the one the user has to act on.
  const over = (d: DeviceEstimate) => charged(d, budget) - limitOf(d, budget);
  const worst = [...need.devices].sort((a, b) => over(b) - over(a))[0];
  const ideas: string[] = [];
  const fitsWith = async (extra: FitOptions, g: number, c: number) =>
    overBy(await estimateMemory({ ...o, ...extra, gpuLayers: g, contextSize: c }), budget) <= 0;
  const ctxNow = await largest(CONTEXT_STEP, Math.min(contextSize, trained), CONTEXT_STEP, (c) => fitsWith({}, gpuLayers, c));
  if (ctxNow !== undefined) ideas.push(`contextSize ${ctxNow}`);
  const type = o.kvType ?? o.kvTypeK ?? DEFAULTS.kvType;
  const smaller: KvCacheType = type === "q8_0" ? "q4_0" : "q8_0";
  if (type !== "q4_0") {
    try {
      const ctxQ = await largest(CONTEXT_STEP, Math.min(contextSize, trained), CONTEXT_STEP, (c) =>
        fitsWith({ kvType: smaller, kvTypeK: undefined, kvTypeV: undefined, flashAttention: "on" }, gpuLayers, c));
      if (ctxQ !== undefined && ctxQ > (ctxNow ?? 0)) ideas.push(`contextSize ${ctxQ} with ${smaller} KV`);
    } catch {
      // the model cannot use a quantized KV cache (head size); skip that idea
    }
  }
  if (gpuLayers > 0) {
    const l = await largestLayers(gpuLayers - 1, (g) => fitsWith({}, g, contextSize));
    if (l !== undefined) ideas.push(`at most ${l} GPU layers`);
  }
  const parts = (d: DeviceEstimate | undefined) =>
    d
      ? `${formatBytes(charged(d, budget))} on ${d.device} ` +
        `(weights ${formatBytes(d.weights)}, KV ${formatBytes(d.kv)}, compute ${formatBytes(d.compute)})`
      : "more memory";
  let tail: string;
  if (ideas.length > 0) {
    tail = `; would fit: ${ideas.join(", or ")}`;
  } else if (contextSize <= CONTEXT_STEP) {
    tail = "; nothing smaller fits either";
  } else {
    // Nothing fits: say how much the smallest context needs, so the user knows the budget to ask for.
    const least = await estimateMemory({ ...o, gpuLayers, contextSize: CONTEXT_STEP });
    const d = [...least.devices].sort((a, b) => over(b) - over(a))[0];
    tail = `; nothing smaller fits either: even contextSize ${least.contextSize} needs ${parts(d)}`;
  }
  return new LlamemError(
    "ERR_INSUFFICIENT_MEMORY",
    `contextSize ${contextSize} with ${gpuLayers} GPU layers needs ${parts(worst)}, over the budget (${budgetText(budget)})${tail}`,
  );
}
