/**
 * Every error llamem throws is a {@link LlamemError} with a stable `code`, so callers can
 * branch on `err.code` instead of parsing messages.
 */

/** The stable error codes. */
export type LlamemErrorCode =
  /** The model file does not exist. */
  | "ERR_FILE_NOT_FOUND"
  /** The path exists but is not a regular file (a directory, a device). */
  | "ERR_NOT_A_FILE"
  /** The file does not start with the GGUF magic. */
  | "ERR_NOT_GGUF"
  /** The GGUF file ends before its header, metadata or tensor data says it should. */
  | "ERR_GGUF_TRUNCATED"
  /** The GGUF file is malformed (bad version, absurd counts, bad tensor info, ...). */
  | "ERR_GGUF_INVALID"
  /** An option or argument is out of range or of the wrong type. */
  | "ERR_INVALID_ARGUMENT"
  /** The object was disposed; create a new one. */
  | "ERR_DISPOSED"
  /** The operation was cancelled through an AbortSignal or by dispose(). */
  | "ERR_ABORTED"
  /** llama.cpp could not load the model. */
  | "ERR_MODEL_LOAD"
  /** llama.cpp could not create the context (usually memory). */
  | "ERR_CONTEXT_CREATE"
  /** llama.cpp failed to evaluate a batch. */
  | "ERR_DECODE"
  /** The context has no room left for more tokens. */
  | "ERR_CONTEXT_FULL"
  /** Another operation is running on the same sequence. */
  | "ERR_BUSY"
  /** The native addon could not be loaded. */
  | "ERR_NATIVE_LOAD"
  /** An I/O operation failed (reading or writing a file). */
  | "ERR_IO"
  /** A native allocation failed. */
  | "ERR_OUT_OF_MEMORY"
  /** Quantization failed. */
  | "ERR_QUANTIZE"
  /** The model or backend cannot do this (e.g. shift positions of a recurrent cache). */
  | "ERR_UNSUPPORTED"
  /** Saved state does not belong to this model or context. */
  | "ERR_STATE_MISMATCH"
  /** The request does not fit the memory available or the budget given; the message says what would. */
  | "ERR_INSUFFICIENT_MEMORY"
  /** An unexpected internal failure; please report it. */
  | "ERR_INTERNAL";

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

const CODES = new Set<string>([
  "ERR_FILE_NOT_FOUND", "ERR_NOT_A_FILE", "ERR_NOT_GGUF", "ERR_GGUF_TRUNCATED", "ERR_GGUF_INVALID",
  "ERR_INVALID_ARGUMENT", "ERR_DISPOSED", "ERR_ABORTED", "ERR_MODEL_LOAD", "ERR_CONTEXT_CREATE",
  "ERR_DECODE", "ERR_CONTEXT_FULL", "ERR_BUSY", "ERR_NATIVE_LOAD", "ERR_IO", "ERR_OUT_OF_MEMORY", "ERR_QUANTIZE", "ERR_UNSUPPORTED", "ERR_STATE_MISMATCH", "ERR_INSUFFICIENT_MEMORY", "ERR_INTERNAL",
]);

/** True when `code` is one of llamem's error codes. */
export function isLlamemErrorCode(code: unknown): code is LlamemErrorCode {
  return typeof code === "string" && CODES.has(code);
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

/** Throws ERR_INVALID_ARGUMENT with a message naming the option. */
export function invalidArgument(message: string): never {
  throw new LlamemError("ERR_INVALID_ARGUMENT", message);
}
