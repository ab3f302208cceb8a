/**
 * Memory estimates from llama.cpp's own dry run (the model and context are sized with
 * no_alloc, so every buffer is what a real load would allocate), grouped per device.
 */
import { fromNative, invalidArgument } from "../errors.js";
import { readGguf } from "../gguf/read.js";
import { readAdapterHeader } from "../adapter.js";
import { native, type NativeContextOptions, type NativeEstimate } from "../internal/native.js";
import type { MemoryRow } from "../context.js";
import { contextBaton, defaultContextSize, DEFAULTS, loadBaton, type ContextShapeOptions, type PlacementOptions } from "../options.js";
import { availableRam } from "../system.js";

/** Options of {@link estimateMemory}: the load and context options that decide memory. */
export interface EstimateOptions extends Omit<ContextShapeOptions, "threads" | "threadsBatch">, PlacementOptions {
  /** Layers on the GPU; -1 for all (default 0). */
  gpuLayers?: number;
  /** Context size (default: min(4096, the trained context)). */
  contextSize?: number;
  /** CPU weight repacking (default true). */
  repack?: boolean;
  /** LoRA adapter files to count (their tensors sit beside the weights they modify). */
  adapters?: readonly string[];
  /**
   * A draft model for speculative decoding: its weights (with `gpuLayers` of its own, default
   * 0) and its context, which has this context's shape, count too.
   */
  draft?: { path: string; gpuLayers?: number };
}

/** Bytes on one device. */
export interface DeviceEstimate {
  /** "CPU" for host memory, else the GPU's name (e.g. "CUDA0"). */
  device: string;
  host: boolean;
  weights: number;
  kv: number;
  compute: number;
  total: number;
  /** The device's free and total memory now (host: available RAM). */
  free: number;
  capacity: number;
}

/** The result of {@link estimateMemory}. */
export interface MemoryEstimate {
  contextSize: number;
  trainedContextSize: number;
  layers: number;
  devices: DeviceEstimate[];
  /** Weights, LoRA adapters' tensors included. */
  weights: number;
  /** Of which LoRA adapters (`adapters`). */
  adapters: number;
  /** Bytes of the draft model and its context (`draft`), included in the totals. */
  draft: number;
  kv: number;
  compute: number;
  total: number;
}

/**
 * Bytes of host weights that sit in a buffer of their own instead of the file's pages: every
 * host buffer type but the plain "CPU" one and the mapped "*_Mapped" ones, so CPU_REPACK, AMX
 * and any other layout the CPU backend converts weights into, and a GPU backend's pinned host
 * buffer. Loaded with mmap, each of these tensors is read through the mapping and its pages stay
 * resident beside the copy (the mapped range spans the tensors in between), so the same weights
 * would count twice; the auto load mode reads such a file instead. @internal
 */
export function hostCopiedWeights(rows: readonly Pick<MemoryRow, "bufferType" | "host" | "model">[]): number {
  return rows.filter((r) => r.host && r.bufferType !== "CPU" && !r.bufferType.endsWith("_Mapped")).reduce((s, r) => s + r.model, 0);
}

/** Groups llama.cpp's per-buffer-type rows by device. @internal */
export function groupByDevice(rows: MemoryRow[], devices: NativeEstimate["devices"]): DeviceEstimate[] {
  const out = new Map<string, DeviceEstimate>();
  for (const r of rows) {
    const name = r.host ? "CPU" : (r.device ?? r.bufferType);
    let d = out.get(name);
    if (!d) {
      const dev = r.host ? undefined : devices.find((x) => x.name === name);
      d = {
        device: name, host: r.host, weights: 0, kv: 0, compute: 0, total: 0,
        free: r.host ? availableRam() : (dev?.free ?? 0),
        capacity: r.host ? (devices.find((x) => x.type === "cpu")?.total ?? 0) : (dev?.total ?? 0),
      };
      out.set(name, d);
    }
    d.weights += r.model;
    d.kv += r.context;
    d.compute += r.compute;
    d.total += r.model + r.context + r.compute;
  }
  return [...out.values()];
}

/**
 * Adds LoRA adapters' tensors to the weights of the device their layer is on (llama.cpp puts an
 * adapter's tensor beside the weight it modifies: the last `gpuLayers` layers, and the output
 * layer with all of them, are on the first GPU; with several GPUs the split is not modelled).
 * Returns their bytes.
 */
async function addAdapters(devices: DeviceEstimate[], paths: readonly string[] | undefined, layers: number, gpuLayers: number): Promise<number> {
  if (paths === undefined) return 0;
  if (!Array.isArray(paths)) invalidArgument("adapters must be an array of LoRA file paths");
  const host = devices.find((d) => d.host);
  const gpu = devices.find((d) => !d.host);
  const offloaded = gpuLayers === -1 ? layers + 1 : gpuLayers;
  let total = 0;
  for (const path of paths) {
    const file = await readAdapterHeader(path, undefined);
    for (const t of file.tensors) {
      const m = /^blk\.(\d+)\./.exec(t.name);
      const layer = m ? Number(m[1]) : layers;
      const d = gpu && layer >= layers + 1 - offloaded ? gpu : host;
      if (d) {
        d.weights += t.size;
        d.total += t.size;
      }
      total += t.size;
    }
  }
  return total;
}

/** Adds a draft model's weights and context (shaped as `ctx`) to the devices; returns their bytes. */
async function addDraft(devices: DeviceEstimate[], o: EstimateOptions, ctx: NativeContextOptions): Promise<number> {
  const d = o.draft;
  if (d === undefined) return 0;
  if (d === null || typeof d !== "object" || typeof d.path !== "string") invalidArgument("draft must be { path, gpuLayers }");
  const gpuLayers = d.gpuLayers ?? 0;
  if (!Number.isInteger(gpuLayers) || gpuLayers < -1) invalidArgument("draft.gpuLayers must be an integer >= -1");
  await readGguf(d.path);
  const load = loadBaton(o, { gpuLayers, loadMode: "mmap", repack: o.repack ?? DEFAULTS.repack, vocabOnly: false });
  const draftCtx = contextBaton(o, ctx.contextSize);
  let est: NativeEstimate;
  try {
    est = await native().Model.estimate(d.path, load, { ...draftCtx, embeddings: false });
  } catch (err) {
    throw fromNative(err);
  }
  let total = 0;
  for (const add of groupByDevice(est.rows, est.devices)) {
    const into = devices.find((x) => x.device === add.device);
    if (into) {
      into.weights += add.weights;
      into.kv += add.kv;
      into.compute += add.compute;
      into.total += add.total;
    } else {
      devices.push(add);
    }
    total += add.total;
  }
  return total;
}

/**
 * Estimates the bytes per device (each GPU and the host) for weights, KV cache and compute
 * buffers, reading only the GGUF header. Nothing is allocated.
 */
export async function estimateMemory(path: string, options: EstimateOptions = {}): Promise<MemoryEstimate> {
  if (options === null || typeof options !== "object") invalidArgument("estimateMemory(path, options): options must be an object");
  const gguf = await readGguf(path);
  const arch = gguf.metadata.get("general.architecture")?.value;
  const trained = gguf.metadata.get(`${String(arch)}.context_length`)?.value;
  return estimateFile(path, typeof trained === "number" ? trained : 0, options);
}

/**
 * {@link estimateMemory} of a file whose header was already read and checked (its trained
 * context known), so a fit that runs many dry runs parses the header once. @internal
 */
export async function estimateFile(path: string, trainedContextSize: number, options: EstimateOptions): Promise<MemoryEstimate> {
  const gpuLayers = options.gpuLayers ?? DEFAULTS.gpuLayers;
  if (!Number.isInteger(gpuLayers) || gpuLayers < -1) invalidArgument("gpuLayers must be an integer >= -1");
  const contextSize = options.contextSize ?? defaultContextSize(trainedContextSize);
  // A draft's verification asks for more outputs per batch: the default number of draft tokens.
  const ctx = contextBaton(options, contextSize, options.draft !== undefined ? DEFAULTS.draft.maxDraftTokens : 0);
  const load = loadBaton(options, { gpuLayers, loadMode: "mmap", repack: options.repack ?? DEFAULTS.repack, vocabOnly: false });
  let est: NativeEstimate;
  try {
    est = await native().Model.estimate(path, load, ctx);
  } catch (err) {
    throw fromNative(err);
  }
  const devices = groupByDevice(est.rows, est.devices);
  const adapters = await addAdapters(devices, options.adapters, est.layers, gpuLayers);
  const draft = await addDraft(devices, options, ctx);
  const sum = (k: "weights" | "kv" | "compute" | "total") => devices.reduce((s, d) => s + d[k], 0);
  return {
    contextSize: est.contextSize,
    trainedContextSize: est.trainedContextSize,
    layers: est.layers,
    devices,
    weights: sum("weights"),
    adapters,
    draft,
    kv: sum("kv"),
    compute: sum("compute"),
    total: sum("total"),
  };
}
