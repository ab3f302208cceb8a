/**
 * `llamem quantize <in.gguf> <out.gguf> <type>`: llama.cpp's quantizer. The output appears only
 * when it is complete (the addon writes `<out>.tmp-<pid>` and renames it into place).
 *
 * llama.cpp's quantizer reports no progress, so a terminal gets a spinner with the elapsed time;
 * a pipe or file gets nothing but the summary line (stdout) or the error (stderr).
 */
import { rm, stat } from "node:fs/promises";
import { Argument, type Command } from "commander";
import { LlamemError } from "../errors.js";
import { QUANT_TYPES, quantize, type QuantType } from "../quantize.js";
import { EXIT, formatBytes, trapSignals, type OutStream } from "./output.js";
import { intArg } from "./options.js";

interface QuantizeCliOptions {
  threads?: number;
  allowRequantize?: boolean;
  pure?: boolean;
  quiet?: boolean;
}

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"] as const;

/**
 * A one-line spinner with elapsed seconds, redrawn with `\r` ten times a second. It draws only
 * on a terminal, so piped stderr never receives control characters.
 */
export class Spinner {
  readonly #stream: OutStream;
  readonly #label: string;
  readonly #start = performance.now();
  #timer: NodeJS.Timeout | undefined;
  #frame = 0;

  constructor(label: string, options: { stream?: OutStream; enabled?: boolean } = {}) {
    this.#stream = options.stream ?? process.stderr;
    this.#label = label;
    if ((options.enabled ?? true) && this.#stream.isTTY === true) {
      this.#draw();
      this.#timer = setInterval(() => this.#draw(), 100);
      // The spinner must never be what keeps the process alive.
      this.#timer.unref();
    }
  }

  #draw(): void {
    const seconds = ((performance.now() - this.#start) / 1000).toFixed(1);
    this.#stream.write(`\r${FRAMES[this.#frame % FRAMES.length] ?? ""} ${this.#label} ${seconds} s`);
    this.#frame++;
  }

  /** Stops and erases the spinner. */
  done(): void {
    if (this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#stream.write("\r\x1b[2K");
  }
}

/** Registers `llamem quantize`. */
export function registerQuantize(program: Command): Command {
  return program
    .command("quantize")
    .summary("quantize a GGUF model to a smaller type")
    .description(
      "Quantize a GGUF model with llama.cpp's quantizer. The output file appears only when it is complete.\n\n" +
        "Exit codes: 2 bad type or option, 3 input (or output folder) not found, 4 input not a GGUF, 1 llama.cpp refused, " +
        "130/143 interrupted (the partial output is removed).",
    )
    .argument("<in>", "input GGUF (usually f32, f16 or bf16)")
    .argument("<out>", "output GGUF (replaced if it exists)")
    .addArgument(new Argument("<type>", "target type").choices(Object.keys(QUANT_TYPES)))
    .option("-t, --threads <n>", "threads (default: all cores)", intArg(1, 1024))
    .option("--allow-requantize", "allow quantizing tensors that are already quantized (quality suffers)")
    .option("--pure", "quantize every tensor to <type>, without llama.cpp's per-tensor mixture")
    .option("-q, --quiet", "no spinner and no summary")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem quantize model-f16.gguf model-q4_k_m.gguf q4_k_m
  $ llamem quantize model-f16.gguf model-q8_0.gguf q8_0 --threads 8`,
    )
    .action(async (input: string, output: string, type: QuantType, o: QuantizeCliOptions) => {
      await runQuantize(input, output, type, o);
    });
}

async function runQuantize(input: string, output: string, type: QuantType, o: QuantizeCliOptions): Promise<void> {
  const trap = trapSignals();
  const spinner = new Spinner(`quantizing to ${type}`, { enabled: !o.quiet });
  const t0 = performance.now();
  // The native quantizer cannot be cancelled, and process.exit() would wait for its thread to
  // finish. So an interrupt removes the temp file the addon is writing (no half-written model is
  // left behind) and ends the process by the same signal, at once (exit status 130 or 143).
  const onInterrupt = () => {
    spinner.done();
    const signal = trap.exitCode === EXIT.SIGTERM ? "SIGTERM" : "SIGINT";
    void rm(`${output}.tmp-${process.pid}`, { force: true })
      .catch(() => undefined)
      .finally(() => {
        trap.release(); // back to the default action, which ends the process
        process.kill(process.pid, signal);
      });
  };
  trap.signal.addEventListener("abort", onInterrupt, { once: true });
  try {
    await quantize(input, output, type, { threads: o.threads, allowRequantize: o.allowRequantize, pure: o.pure });
    spinner.done();
    if (!o.quiet) {
      const [before, after] = await Promise.all([stat(input), stat(output)]);
      const seconds = ((performance.now() - t0) / 1000).toFixed(1);
      process.stdout.write(`wrote ${output}: ${type}, ${formatBytes(after.size)} (from ${formatBytes(before.size)}) in ${seconds} s\n`);
    }
  } catch (err) {
    if (err instanceof LlamemError && err.code === "ERR_QUANTIZE" && /requantiz/i.test(err.message) && !o.allowRequantize) {
      throw new LlamemError(err.code, `${err.message} (pass --allow-requantize to quantize an already quantized model)`);
    }
    throw err;
  } finally {
    trap.signal.removeEventListener("abort", onInterrupt);
    spinner.done();
    trap.release();
  }
}
