/**
 * The backend devices llama.cpp can use (the CPU, GPUs, RPC servers), with their memory.
 */
import { fromNative } from "./errors.js";
import { native } from "./internal/native.js";

/** A compute device and its memory in bytes. */
export interface Device {
  /** The name to pass in `devices` (e.g. "CPU", "CUDA0", "RPC0"). */
  name: string;
  description: string;
  type: "cpu" | "gpu" | "igpu" | "accel" | "other";
  /** The ggml backend that drives it (CPU, CUDA, RPC, …). */
  backend: string;
  free: number;
  total: number;
}

/** Lists the devices of this build (CPU always; GPUs with a GPU build; RPC servers once added). */
export function listDevices(): Device[] {
  try {
    return native().devices();
  } catch (err) {
    throw fromNative(err);
  }
}

/** Whether layers on `d` are offloaded from the CPU: a GPU, an integrated GPU or an RPC server. @internal */
export function isAccelerator(d: Device): boolean {
  return d.type === "gpu" || d.type === "igpu" || d.backend === "RPC";
}

/** The CPU backend this process runs, as `llamem devices` names it. @internal */
export interface CpuBackend {
  /** "native" (a source build for this machine), "portable", or the CPU variant a prebuild chose ("haswell", "sapphirerapids", …). */
  variant: string;
  /** The backend module the variant was loaded from; null for a source build (linked in). */
  path: string | null;
  /** The CPU features the backend uses (AVX2, AVX512, AMX_INT8, …). */
  features: string[];
}

/** The CPU backend in use. @internal */
export function cpuBackend(): CpuBackend {
  try {
    const info = native().systemInfo().cpuBackend as CpuBackend | undefined;
    // A binary built before the backend was reported.
    return info ?? { variant: "unknown", path: null, features: [] };
  } catch (err) {
    throw fromNative(err);
  }
}
