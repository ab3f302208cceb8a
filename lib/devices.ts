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

/** True when layers can be offloaded from the CPU: a GPU, an integrated GPU or an RPC server. @internal */
export function hasAccelerator(): boolean {
  return listDevices().some((d) => d.type === "gpu" || d.type === "igpu" || d.backend === "RPC");
}
