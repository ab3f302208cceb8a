/**
 * How much of llama.cpp's own log reaches stderr. Process-wide; LLAMEM_LOG sets it at load.
 */
import { invalidArgument } from "./errors.js";
import { native } from "./internal/native.js";
import { LOG_LEVELS } from "./options.js";

/** llama.cpp log verbosity. */
export type LogLevel = keyof typeof LOG_LEVELS;

/** Sets how much of llama.cpp's own log reaches stderr (default: none). Process-wide. */
export function setLogLevel(level: LogLevel): void {
  const n = typeof level === "string" && Object.hasOwn(LOG_LEVELS, level) ? LOG_LEVELS[level] : undefined;
  if (n === undefined) invalidArgument(`log level must be one of ${Object.keys(LOG_LEVELS).join(", ")}`);
  native().setLogLevel(n);
}
