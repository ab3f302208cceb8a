/**
 * LoRA adapters: low-rank weight deltas loaded for a model (`model.loadAdapter(path)`) and
 * applied by a context with a scale each (`context.setAdapters([{ adapter, scale }])`). The
 * file's header is read and checked here first (a regular file, GGUF, `general.type` "adapter",
 * `adapter.type` "lora", the model's architecture); llama.cpp then checks every tensor against
 * the model's.
 */
import { LlamemError, invalidArgument } from "./errors.js";
import { metadataNumber, metadataString, type GgufFile } from "./gguf/format.js";
import { readGguf } from "./gguf/read.js";
import type { NativeAdapter } from "./internal/native.js";
import { Lifetime } from "./lifetime.js";

/** A LoRA adapter of a model. Load it with `model.loadAdapter(path)`. */
export class LoraAdapter {
  /** The file it was loaded from. */
  readonly path: string;
  /** Bytes of its tensors (host memory, or the device of the weights they modify). */
  readonly bytes: number;
  /** Its rank (the inner size of its low-rank pairs) and `adapter.lora.alpha` (0 when the file has none). */
  readonly rank: number;
  readonly alpha: number;
  readonly #native: NativeAdapter;
  readonly #free: (adapter: NativeAdapter) => void;
  readonly #lifetime = new Lifetime("LoRA adapter");

  /** @internal Use `model.loadAdapter(path)`. */
  constructor(path: string, file: GgufFile, handle: NativeAdapter, free: (adapter: NativeAdapter) => void) {
    this.path = path;
    this.bytes = adapterBytes(file);
    this.rank = adapterRank(file);
    this.alpha = metadataNumber(file, "adapter.lora.alpha") ?? 0;
    this.#native = handle;
    this.#free = free;
  }

  /** @internal The native handle, for `context.setAdapters`. */
  handle(): NativeAdapter {
    this.#lifetime.check();
    return this.#native;
  }

  get disposed(): boolean {
    return this.#lifetime.disposed;
  }

  /**
   * Lets the adapter go. Contexts it is set on keep applying it until they are given other
   * adapters or disposed; its memory is freed after that.
   */
  async dispose(): Promise<void> {
    await this.#lifetime.dispose(async () => this.#free(this.#native));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** Bytes of an adapter file's tensors (what llama.cpp allocates for them, before alignment). */
export function adapterBytes(file: GgufFile): number {
  return file.tensors.reduce((s, t) => s + t.size, 0);
}

function adapterRank(file: GgufFile): number {
  const a = file.tensors.find((t) => t.name.endsWith(".lora_a"));
  return a?.dims[1] ?? 0;
}

/**
 * Reads an adapter's header and checks it is a LoRA for `architecture`: ERR_ADAPTER if not (the
 * file errors of readGguf otherwise), before llama.cpp reads it.
 */
export async function readAdapterHeader(path: string, architecture: string | undefined): Promise<GgufFile> {
  if (typeof path !== "string" || path.length === 0) invalidArgument("loadAdapter(path): path must be a non-empty string");
  const file = await readGguf(path, { checkModel: false });
  const type = metadataString(file, "general.type");
  if (type !== "adapter") throw new LlamemError("ERR_ADAPTER", `${path} is not an adapter (general.type is ${type === undefined ? "missing" : `"${type}"`})`);
  const kind = metadataString(file, "adapter.type");
  if (kind !== "lora") throw new LlamemError("ERR_ADAPTER", `${path} is not a LoRA adapter (adapter.type is ${kind === undefined ? "missing" : `"${kind}"`})`);
  const arch = metadataString(file, "general.architecture");
  if (architecture !== undefined && arch !== architecture) {
    throw new LlamemError("ERR_ADAPTER", `${path} is a LoRA for ${arch ?? "an unnamed architecture"}; the model is ${architecture}`);
  }
  if (file.tensors.length === 0) throw new LlamemError("ERR_ADAPTER", `${path} has no tensors`);
  return file;
}
