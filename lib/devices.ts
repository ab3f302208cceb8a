/**
 * The backend devices llama.cpp can use (the CPU, GPUs, RPC servers), with their memory.
 */
import { native, type NativeDevice } from "./native.js";

/** A compute device and its memory in bytes. */
export type Device = NativeDevice;

/** Lists the devices of this build (CPU always; GPUs with a GPU build; RPC servers once added). */
export function listDevices(): Device[] {
  return native().devices();
}
