/**
 * Shared plumbing of the `llamem` commands: byte formatting, colour, the stderr progress bar,
 * signal handling, and turning errors into messages and exit codes.
 *
 * Exit codes (stable; scripts may branch on them):
 *
 * | code | meaning                                                                            |
 * |------|------------------------------------------------------------------------------------|
 * | 0    | success (also when the reader of stdout went away: `llamem ... \| head`)           |
 * | 1    | anything else (an internal error, an unexpected exception)                         |
 * | 2    | usage: unknown command or option, missing or invalid argument (ERR_INVALID_ARGUMENT) |
 * | 3    | file not found, or not a regular file (ERR_FILE_NOT_FOUND, ERR_NOT_A_FILE)         |
 * | 4    | not a GGUF file, truncated or invalid GGUF, a chat template that fails (ERR_TEMPLATE), a file that is not a LoRA adapter for the model (ERR_ADAPTER), or a saved state/session that does not fit (ERR_STATE_MISMATCH) |
 * | 5    | llama.cpp failed: model load, context creation, decode, quantize, out of memory, context full |
 * | 6    | aborted by something other than a signal (ERR_ABORTED)                             |
 * | 7    | the native addon cannot be loaded (ERR_NATIVE_LOAD)                                |
 * | 8    | does not fit the memory or the budget (ERR_INSUFFICIENT_MEMORY)                     |
 * | 9    | I/O failure: cannot write the output (disk full, ...), or read or write a file, or reach a server (ERR_IO) |
 * | 130  | interrupted by SIGINT (Ctrl-C); 143 for SIGTERM (128 + signal number)              |
 *
 * @packageDocumentation
 */
import { getSystemErrorMap } from "node:util";
import { CommanderError, type Command } from "commander";
import { LlamemError, type LlamemErrorCode } from "../errors.js";

/**
 * What each command module exports: it adds its subcommand (options, help, action) to the
 * program and returns it.
 */
export type CommandRegistrar = (program: Command) => Command;

/** The exit codes of the CLI; see the table at the top of this file. */
export const EXIT = Object.freeze({
  OK: 0,
  ERROR: 1,
  USAGE: 2,
  FILE: 3,
  GGUF: 4,
  LLAMA: 5,
  ABORTED: 6,
  NATIVE: 7,
  MEMORY: 8,
  IO: 9,
  SIGINT: 130,
  SIGTERM: 143,
});

const CODE_EXIT: Partial<Record<LlamemErrorCode, number>> = {
  ERR_INVALID_ARGUMENT: EXIT.USAGE,
  ERR_FILE_NOT_FOUND: EXIT.FILE,
  ERR_NOT_A_FILE: EXIT.FILE,
  ERR_NOT_GGUF: EXIT.GGUF,
  ERR_GGUF_TRUNCATED: EXIT.GGUF,
  ERR_GGUF_INVALID: EXIT.GGUF,
  ERR_STATE_MISMATCH: EXIT.GGUF,
  ERR_ARCHIVE_INVALID: EXIT.GGUF,
  ERR_TEMPLATE: EXIT.GGUF,
  ERR_ADAPTER: EXIT.GGUF,
  ERR_MODEL_LOAD: EXIT.LLAMA,
  ERR_CONTEXT_CREATE: EXIT.LLAMA,
  ERR_DECODE: EXIT.LLAMA,
  ERR_OUT_OF_MEMORY: EXIT.LLAMA,
  ERR_CONTEXT_FULL: EXIT.LLAMA,
  ERR_ABORTED: EXIT.ABORTED,
  ERR_NATIVE_LOAD: EXIT.NATIVE,
  ERR_INSUFFICIENT_MEMORY: EXIT.MEMORY,
  ERR_QUANTIZE: EXIT.LLAMA,
  ERR_IO: EXIT.IO,
};

/** The exit code for a {@link LlamemError} code. */
export function exitCodeFor(code: LlamemErrorCode): number {
  return CODE_EXIT[code] ?? EXIT.ERROR;
}

/**
 * Thrown by a command to end the process with `code` after it has already said what it had to
 * (or had nothing to say, like an interrupted generation).
 */
export class CliExit extends Error {
  /** The process exit code. */
  readonly exitCode: number;

  constructor(exitCode: number) {
    super(`exit ${exitCode}`);
    this.name = "CliExit";
    this.exitCode = exitCode;
  }
}

/** A usage error found by a command itself (exit code 2), reported like commander's own. */
export function usageError(message: string): never {
  throw new LlamemError("ERR_INVALID_ARGUMENT", message);
}

// ---------------------------------------------------------------------------------------------
// Colour.

/** A writable stream that may be a terminal. */
export interface OutStream {
  write(chunk: string): boolean;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/**
 * Whether to colour what goes to `stream`: only on a terminal, and never when NO_COLOR is set to
 * a non-empty value (https://no-color.org) or TERM is "dumb".
 */
export function useColor(stream: OutStream): boolean {
  if (!stream.isTTY) return false;
  const noColor = process.env["NO_COLOR"];
  if (noColor !== undefined && noColor !== "") return false;
  return process.env["TERM"] !== "dumb";
}

/** ANSI styling that turns into plain text when colour is off. */
export interface Style {
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  yellow(s: string): string;
  green(s: string): string;
}

/** A {@link Style} for `stream` (plain when {@link useColor} says no). */
export function styleFor(stream: OutStream): Style {
  const on = useColor(stream);
  const wrap = (open: number, close: number) => (s: string) => (on ? `\x1b[${open}m${s}\x1b[${close}m` : s);
  return { bold: wrap(1, 22), dim: wrap(2, 22), red: wrap(31, 39), yellow: wrap(33, 39), green: wrap(32, 39) };
}

// ---------------------------------------------------------------------------------------------
// Numbers.

export { formatBytes } from "../memory/format.js";

/** Formats a large count compactly: 950, 12.3 K, 4.21 M, 8.03 B. */
export function formatCount(n: number): string {
  const abs = Math.abs(n);
  const scaled = (d: number, s: string) => {
    const v = n / d;
    const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    return `${v.toFixed(digits)} ${s}`;
  };
  if (abs >= 1e9) return scaled(1e9, "B");
  if (abs >= 1e6) return scaled(1e6, "M");
  if (abs >= 1e3) return scaled(1e3, "K");
  return String(n);
}

/** Lays out rows as left-aligned columns separated by two spaces (no trailing blanks). */
export function formatTable(rows: readonly (readonly string[])[], indent = ""): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, visibleLength(cell));
    });
  }
  return rows
    .map((row) => indent + row.map((cell, i) => (i === row.length - 1 ? cell : pad(cell, widths[i] ?? 0))).join("  "))
    .join("\n");
}

function visibleLength(s: string): number {
  return s.replace(/\x1b\[[0-9;]*m/g, "").length;
}

function pad(s: string, width: number): string {
  return s + " ".repeat(Math.max(0, width - visibleLength(s)));
}

// ---------------------------------------------------------------------------------------------
// Progress bar.

/** The characters the bar is drawn with (tests look for them). */
export const BAR_FILLED = "█";
/** See {@link BAR_FILLED}. */
export const BAR_EMPTY = "░";

/** Options of {@link ProgressBar}. */
export interface ProgressBarOptions {
  /** Where to draw (default process.stderr). */
  stream?: OutStream;
  /** False turns the bar off entirely, e.g. for --quiet or --json. */
  enabled?: boolean;
}

/**
 * A one-line progress bar redrawn in place with `\r`. It draws only on a terminal, so piped or
 * redirected stderr never receives control characters, and it redraws only when the visible
 * percentage changes, so a fast stream of updates costs nothing.
 */
export class ProgressBar {
  readonly #stream: OutStream;
  readonly #label: string;
  readonly #enabled: boolean;
  #lastPercent = -1;
  #drawn = false;

  constructor(label: string, options: ProgressBarOptions = {}) {
    this.#stream = options.stream ?? process.stderr;
    this.#label = label;
    this.#enabled = (options.enabled ?? true) && this.#stream.isTTY === true;
  }

  /** Whether the bar draws anything. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Shows `fraction` (clamped to [0, 1]) done. */
  update(fraction: number): void {
    if (!this.#enabled) return;
    const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
    const percent = Math.floor(f * 100);
    if (percent === this.#lastPercent) return;
    this.#lastPercent = percent;
    const columns = this.#stream.columns || 80; // 0 under some pseudo-terminals
    const width = Math.max(10, Math.min(40, columns - this.#label.length - 8));
    const filled = Math.round(f * width);
    const bar = BAR_FILLED.repeat(filled) + BAR_EMPTY.repeat(width - filled);
    this.#stream.write(`\r${this.#label} ${bar} ${String(percent).padStart(3)}%`);
    this.#drawn = true;
  }

  /** Erases the bar so that what follows starts on a clean line. */
  done(): void {
    if (!this.#enabled || !this.#drawn) return;
    this.#stream.write("\r\x1b[2K");
    this.#drawn = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/**
 * Prints `llamem: <message>` for an error and returns the exit code it maps to. Messages of
 * {@link LlamemError}s are meant for users and are printed as they are; anything else is a bug,
 * so its stack is printed too when LLAMEM_DEBUG is set.
 */
export function reportError(err: unknown, stream: OutStream = process.stderr): number {
  if (err instanceof CliExit) return err.exitCode;
  const style = styleFor(stream);
  const prefix = style.red("llamem:");
  if (err instanceof CommanderError) {
    // Commander already printed its message (through configureOutput); help and --version exit 0.
    return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  }
  if (err instanceof LlamemError) {
    stream.write(`${prefix} ${err.message}\n`);
    return exitCodeFor(err.code);
  }
  const message = err instanceof Error ? err.message : String(err);
  stream.write(`${prefix} ${message}\n`);
  if (process.env["LLAMEM_DEBUG"] && err instanceof Error && err.stack) stream.write(`${err.stack}\n`);
  return EXIT.ERROR;
}

/** Waits until everything written to `stream` has been handed to the OS. */
export function flush(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) {
      resolve();
      return;
    }
    stream.write("", () => resolve());
  });
}

// ---------------------------------------------------------------------------------------------
// stdout failures.

/** What became of stdout (see {@link outputGuard}). */
export interface OutputGuard {
  /** Aborted at the first failed write, so that a command producing output stops. */
  readonly signal: AbortSignal;
  /** The first failed write's error, or undefined while every write has succeeded. */
  readonly failure: NodeJS.ErrnoException | undefined;
  /** True once a write has failed: nothing more can be printed. */
  readonly failed: boolean;
}

const guards = new WeakMap<NodeJS.WritableStream, OutputGuard>();

/**
 * The one place a failed write to stdout is noticed: the stream's 'error' event, which Node
 * emits a tick after the write (a closed pipe, a full disk, a terminal gone). Without a
 * listener that event would crash the process with a stack trace. The guard records the
 * failure and aborts its signal; {@link runToExit} then reports it. Installed once per stream.
 */
export function outputGuard(stream: NodeJS.WritableStream = process.stdout): OutputGuard {
  let guard = guards.get(stream);
  if (guard) return guard;
  const controller = new AbortController();
  let failure: NodeJS.ErrnoException | undefined;
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (failure) return;
    failure = err;
    controller.abort(new LlamemError("ERR_ABORTED", "the output cannot be written", { cause: err }));
  });
  guard = {
    signal: controller.signal,
    get failure() {
      // `errored` is set when the write fails, before the 'error' event is emitted.
      return failure ?? ((stream as { errored?: NodeJS.ErrnoException | null }).errored ?? undefined);
    },
    get failed() {
      return this.failure !== undefined;
    },
  };
  guards.set(stream, guard);
  return guard;
}

/** True when `err` says the reader of the output went away (`| head`), which is no failure. */
export function isClosedPipe(err: NodeJS.ErrnoException): boolean {
  return err.code === "EPIPE";
}

/** The ERR_IO error for a failed write to stdout: "cannot write output: no space left on device". */
export function outputError(err: NodeJS.ErrnoException): LlamemError {
  const known = typeof err.errno === "number" ? getSystemErrorMap().get(err.errno)?.[1] : undefined;
  // Node's own messages read "ENOSPC: no space left on device, write".
  const why = known ?? err.message.replace(/^[A-Z0-9_]+: /, "").replace(/, write$/, "");
  return new LlamemError("ERR_IO", `cannot write output: ${why}`, { cause: err });
}

/**
 * Runs the CLI and returns its exit code: reports what `run` threw, waits for stdout to take
 * what was written, and reports a failed stdout. A reader that went away (EPIPE) ends the run
 * quietly, as CLIs do; any other failed write prints `llamem: cannot write output: <why>` and
 * exits {@link EXIT.IO}. An abort that only followed from the failed output is not reported.
 */
export async function runToExit(run: () => Promise<unknown>): Promise<number> {
  const output = outputGuard(process.stdout);
  // A stderr that cannot be written leaves nobody to tell: carry on without it.
  process.stderr.on("error", () => undefined);
  let thrown: { error: unknown } | undefined;
  try {
    await run();
  } catch (error) {
    thrown = { error };
  }
  await flush(process.stdout);
  // The 'error' event of a write that failed just now comes a tick later.
  await new Promise((resolve) => setImmediate(resolve));
  const failure = output.failure;
  let code: number = EXIT.OK;
  if (thrown) {
    const consequence = failure !== undefined && thrown.error instanceof LlamemError && thrown.error.code === "ERR_ABORTED";
    if (!consequence) code = reportError(thrown.error);
  }
  if (failure && !isClosedPipe(failure)) {
    const ioCode = reportError(outputError(failure));
    if (code === EXIT.OK) code = ioCode;
  }
  return code;
}

// ---------------------------------------------------------------------------------------------
// Signals.

const SIGNAL_EXIT: Record<"SIGINT" | "SIGTERM", number> = { SIGINT: EXIT.SIGINT, SIGTERM: EXIT.SIGTERM };

/** What {@link trapSignals} gives a command. */
export interface SignalTrap {
  /** Aborted on the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** The exit code for the signal received (130 or 143), or undefined when none came. */
  readonly exitCode: number | undefined;
  /** Removes the handlers. */
  release(): void;
}

/**
 * Turns the first SIGINT/SIGTERM into an abort that the command can wind down from (keeping
 * what it printed, freeing native memory); a second one exits at once, for when the wind-down
 * hangs.
 */
export function trapSignals(): SignalTrap {
  const controller = new AbortController();
  let exitCode: number | undefined;
  const handler = (sig: NodeJS.Signals) => {
    const code = SIGNAL_EXIT[sig as "SIGINT" | "SIGTERM"] ?? EXIT.SIGINT;
    if (exitCode !== undefined) process.exit(exitCode);
    exitCode = code;
    controller.abort(new LlamemError("ERR_ABORTED", `interrupted by ${sig}`));
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return {
    signal: controller.signal,
    get exitCode() {
      return exitCode;
    },
    release() {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
    },
  };
}
