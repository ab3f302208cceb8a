/**
 * Memory estimates from llama.cpp's own dry run (the model and context are sized with
 * no_alloc, so every buffer is what a real load would allocate), grouped per device.
 */
import { readFileSync } from "node:fs";
import { freemem } from "node:os";
import { fromNative, invalidArgument } from "../errors.js";
import { readGguf } from "../gguf.js";
import { native, type NativeEstimate, type NativeMemoryRow } from "../native.js";
import { nativeContextOptions, type ContextOptions } from "../context.js";

/** Options of {@link estimateMemory}: the load and context options that decide memory. */
export interface EstimateOptions
  extends Pick<ContextOptions, "sequences" | "kvType" | "kvTypeK" | "kvTypeV" | "flashAttention" | "offloadKv" | "batchSize" | "ubatchSize" | "kvUnified" | "swaFull"> {
  /** Layers on the GPU; -1 for all (default 0). */
  gpuLayers?: number;
  /** Context size (default: min(4096, the trained context)). */
  contextSize?: number;
  /** CPU weight repacking (default true). */
  repack?: boolean;
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
  weights: number;
  kv: number;
  compute: number;
  total: number;
}

/** Available host RAM in bytes (MemAvailable on Linux: free plus reclaimable cache). */
export function availableRam(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"));
    if (m?.[1]) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return freemem();
}

/** Groups llama.cpp's per-buffer-type rows by device. @internal */
export function groupByDevice(rows: NativeMemoryRow[], devices: NativeEstimate["devices"]): DeviceEstimate[] {
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
 * Estimates the bytes per device (each GPU and the host) for weights, KV cache and compute
 * buffers, reading only the GGUF header. Nothing is allocated.
 */
export async function estimateMemory(path: string, options: EstimateOptions = {}): Promise<MemoryEstimate> {
  const gguf = await readGguf(path);
  const gpuLayers = options.gpuLayers ?? 0;
  if (!Number.isInteger(gpuLayers) || gpuLayers < -1) invalidArgument("gpuLayers must be an integer >= -1");
  const arch = gguf.metadata.get("general.architecture")?.value;
  const trainedKey = gguf.metadata.get(`${String(arch)}.context_length`)?.value;
  const trained = typeof trainedKey === "number" ? trainedKey : 4096;
  const contextSize = options.contextSize ?? Math.min(4096, trained);
  const ctx = nativeContextOptions(options, contextSize);
  let est: NativeEstimate;
  try {
    est = await native().Model.estimate(path, { gpuLayers, repack: options.repack ?? true }, ctx);
  } catch (err) {
    throw fromNative(err);
  }
  const devices = groupByDevice(est.rows, est.devices);
  const sum = (k: "weights" | "kv" | "compute" | "total") => devices.reduce((s, d) => s + d[k], 0);
  return {
    contextSize: est.contextSize,
    trainedContextSize: est.trainedContextSize,
    layers: est.layers,
    devices,
    weights: sum("weights"),
    kv: sum("kv"),
    compute: sum("compute"),
    total: sum("total"),
  };
}
