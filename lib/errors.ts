/**
 * Every error llamem throws is a {@link LlamemError} with a stable `code`, so callers can
 * branch on `err.code` instead of parsing messages.
 */

/**
 * The stable error codes, each with what it means. The one list: the type, the runtime check
 * and the binding's codes (a test checks binding/ against it) all come from here.
 */
export const ERROR_CODES = {
  ERR_FILE_NOT_FOUND: "The file does not exist.",
  ERR_NOT_A_FILE: "The path exists but is not a regular file (a directory, a device, a FIFO).",
  ERR_NOT_GGUF: "The file does not start with the GGUF magic.",
  ERR_GGUF_TRUNCATED: "The GGUF file ends before its header, metadata or tensor data says it should.",
  ERR_GGUF_INVALID: "The GGUF file is malformed (bad version, absurd counts, bad tensor info, impossible hyperparameters).",
  ERR_INVALID_ARGUMENT: "An option or argument is out of range or of the wrong type.",
  ERR_DISPOSED: "The object was disposed; create a new one.",
  ERR_ABORTED: "The operation was cancelled through an AbortSignal or by dispose().",
  ERR_MODEL_LOAD: "llama.cpp could not load the model.",
  ERR_CONTEXT_CREATE: "llama.cpp could not create the context (usually memory).",
  ERR_DECODE: "llama.cpp failed to evaluate a batch.",
  ERR_CONTEXT_FULL: "The context has no room left for more tokens.",
  ERR_BUSY: "Another operation is running on the same sequence or session.",
  ERR_NATIVE_LOAD: "The native addon could not be loaded.",
  ERR_IO: "An I/O operation failed (reading or writing a file, reaching a server).",
  ERR_OUT_OF_MEMORY: "A native allocation failed.",
  ERR_QUANTIZE: "Quantization failed.",
  ERR_UNSUPPORTED: "The model or backend cannot do this (e.g. shift positions of a recurrent cache).",
  ERR_STATE_MISMATCH: "Saved state does not belong to this model or context, or is damaged.",
  ERR_ARCHIVE_INVALID: "A session archive file holds a line that is not an archived turn.",
  ERR_TEMPLATE: "A chat template failed to render (the engine's message says where), or broke the sandbox's time, memory or output limits.",
  ERR_ADAPTER: "llama.cpp could not load the LoRA adapter: not an adapter, made for another architecture, or tensors that do not match the model.",
  ERR_INSUFFICIENT_MEMORY: "The request does not fit the memory available or the budget given; the message says what would.",
  ERR_INTERNAL: "An unexpected internal failure; please report it.",
} as const;

/** The stable error codes; see {@link ERROR_CODES} for what each means. */
export type LlamemErrorCode = keyof typeof ERROR_CODES;

/** The error class of every failure llamem reports. */
export class LlamemError extends Error {
  /** A stable code describing the failure. */
  readonly code: LlamemErrorCode;

  constructor(code: LlamemErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LlamemError";
    this.code = code;
  }
}

/** True when `code` is one of llamem's error codes. */
export function isLlamemErrorCode(code: unknown): code is LlamemErrorCode {
  return typeof code === "string" && Object.hasOwn(ERROR_CODES, code);
}

/**
 * Turns an error thrown by the native layer (an Error with a `code` property) into a
 * {@link LlamemError}; anything else becomes ERR_INTERNAL.
 */
export function fromNative(err: unknown): LlamemError {
  if (err instanceof LlamemError) return err;
  if (err instanceof Error) {
    const code = (err as Error & { code?: unknown }).code;
    return new LlamemError(isLlamemErrorCode(code) ? code : "ERR_INTERNAL", err.message, { cause: err });
  }
  return new LlamemError("ERR_INTERNAL", String(err));
}

/** A value as error messages show it; never throws (String() does for some objects). @internal */
export function describeValue(value: unknown): string {
  try {
    return typeof value === "string" ? JSON.stringify(value) : String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** Throws ERR_INVALID_ARGUMENT with a message naming the option. */
export function invalidArgument(message: string): never {
  throw new LlamemError("ERR_INVALID_ARGUMENT", message);
}
