/**
 * `llamem prompt [text]`: one-shot generation, streamed to stdout.
 *
 * stdout carries the generated text and nothing else (or, with --json, exactly one JSON
 * object); everything for humans (progress, notes, stats, errors) goes to stderr.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Command, Option } from "commander";
import { LlamemError } from "../errors.js";
import { loadModel, type Model } from "../model.js";
import type { Context, ContextMemory, GenerationResult, KvCacheType, StopReason } from "../context.js";
import { packageRoot, setLogLevel } from "../native.js";
import {
  CliExit,
  ProgressBar,
  collect,
  formatBytes,
  intArg,
  numberArg,
  styleFor,
  trapSignals,
  usageError,
} from "./output.js";

/** KV cache element types accepted by --kv-type (those llama.cpp's context accepts). */
export const KV_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"] as const satisfies readonly KvCacheType[];

/** The options of `llamem prompt`, as commander hands them over. */
/** The model, context and sampling options `prompt` and `chat` share. */
export interface ModelCliOptions {
  model?: string;
  system?: string;
  maxTokens: number;
  temperature: number;
  seed?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  ctx?: number;
  gpuLayers?: number;
  threads?: number;
  kvType?: KvCacheType;
  flashAttn: "auto" | "on" | "off";
  mmap: boolean;
  mlock?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

interface PromptOptions extends ModelCliOptions {
  stop?: string[];
  chat?: boolean;
  json?: boolean;
}

/** What `--json` prints: one object, at the end. */
export interface PromptJsonResult {
  /** The generated text (without the prompt). */
  text: string;
  /** Path of the model that ran. */
  model: string;
  stopReason: StopReason;
  promptTokens: number;
  generatedTokens: number;
  timings: {
    timeToFirstTokenMs: number;
    promptTokensPerSecond: number;
    generatedTokensPerSecond: number;
    /** Model load plus context creation, in ms. */
    loadMs: number;
  };
  /** llama.cpp's memory breakdown of the context: rows per buffer type, totals, KV cells used. */
  memory: ContextMemory;
}

/** Path of the demo model written by `npm install` (scripts/demo-model.mjs). */
export function demoModelPath(): string {
  return join(packageRoot, "models", "demo.gguf");
}

/** -m, else $LLAMEM_MODEL, else the demo model (which must exist). */
export function resolveModel(option: string | undefined): { path: string; demo: boolean } {
  if (option !== undefined) return { path: option, demo: false };
  const env = process.env["LLAMEM_MODEL"];
  if (env) return { path: env, demo: false };
  const demo = demoModelPath();
  if (!existsSync(demo)) {
    throw new LlamemError(
      "ERR_FILE_NOT_FOUND",
      `no model given and the demo model ${demo} is missing; run \`npm install\` in ${packageRoot} to write it, ` +
        "or pass -m <model.gguf> (or set LLAMEM_MODEL)",
    );
  }
  return { path: demo, demo: true };
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

/** The prompt text: the argument, else stdin when it is not a terminal. */
async function promptText(arg: string | undefined): Promise<string> {
  if (arg !== undefined) return arg;
  if (process.stdin.isTTY) usageError("no prompt: pass it as an argument or pipe it on stdin (echo hi | llamem prompt)");
  // `echo text |` adds a newline the user did not mean as part of the prompt.
  return (await readStdin()).replace(/\r?\n$/, "");
}

/** Backslash escapes in --stop values, so `--stop '\n'` works without shell quoting tricks. */
function unescape(s: string): string {
  return s.replace(/\\(n|r|t|\\)/g, (_m, c: string) => (c === "n" ? "\n" : c === "r" ? "\r" : c === "t" ? "\t" : "\\"));
}

/** Parses --gpu-layers: an integer >= -1, or "all" (-1). */
export function gpuLayersArg(value: string): number {
  return value === "all" ? -1 : intArg(-1)(value);
}

/** True when the formatted chat already starts with BOS, so tokenizing must not add another. */
async function startsWithBos(model: Model, text: string): Promise<boolean> {
  const { bos, addBos } = model.info;
  if (bos < 0 || !addBos) return false;
  const bosText = await model.detokenize([bos], { special: true });
  return bosText.length > 0 && text.startsWith(bosText);
}

/** Registers `llamem prompt`. */
export function registerPrompt(program: Command): Command {
  const cmd = program
    .command("prompt")
    .summary("generate text from a prompt")
    .description(
      "Generate text from a prompt and stream it to stdout. The prompt is the argument, or stdin when it is piped.\n" +
        "Without -m the model is $LLAMEM_MODEL, else the bundled demo model (random weights: its text is noise).",
    )
    .argument("[text]", "the prompt (default: read stdin)")
    .option("-m, --model <path>", "GGUF model file (default: $LLAMEM_MODEL, else the demo model)")
    .option("--chat", "format the prompt with the model's chat template (default: raw completion)")
    .option("--system <text>", "system message for --chat")
    .option("-n, --max-tokens <n>", "most tokens to generate", intArg(0), 256)
    .option("--temperature <t>", "sampling temperature; 0 is greedy and deterministic", numberArg(0), 0.8)
    .option("--seed <n>", "random seed (same seed and prompt give the same text)", intArg(0, 0xffffffff))
    .option("--stop <s>", "stop when the output contains this string (repeatable; \\n and \\t are unescaped)", collect)
    .option("--top-k <k>", "keep only the k most likely tokens (0 = off; default 40)", intArg(0))
    .option("--top-p <p>", "nucleus sampling threshold (1 = off; default 0.95)", numberArg(0, 1))
    .option("--min-p <p>", "drop tokens below p times the top probability (0 = off; default 0.05)", numberArg(0, 1))
    .option("--repeat-penalty <f>", "penalty for repeating recent tokens (1 = off)", numberArg(0, Infinity, true))
    .option("-c, --ctx <n>", "context size in tokens (default: min(4096, trained length))", intArg(1))
    .option("--gpu-layers <n>", 'layers to offload to the GPU; -1 or "all" for all (default 0)', gpuLayersArg)
    .option("-t, --threads <n>", "CPU threads (default: physical cores)", intArg(1))
    .addOption(new Option("--kv-type <type>", "KV cache element type (default f16)").choices(KV_TYPES))
    .addOption(new Option("--flash-attn <mode>", "flash attention").choices(["auto", "on", "off"]).default("auto"))
    .option("--no-mmap", "read the weights into memory instead of mapping the file")
    .option("--mlock", "lock the weights in RAM")
    .option("--json", "print one JSON object with the text, timings and memory at the end (no streaming)")
    .addOption(new Option("-q, --quiet", "no progress bar or notes on stderr").conflicts("verbose"))
    .option("-v, --verbose", "show llama.cpp's log and the timings on stderr")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem prompt "Once upon a time"
  $ llamem prompt -m model.gguf --chat --system "Answer briefly." "What is a GGUF file?"
  $ echo "The meaning of life is" | llamem prompt -m model.gguf --temperature 0 --max-tokens 32
  $ llamem prompt -m model.gguf --json --stop '\\n' "Q: 2+2? A:" | jq .text`,
    )
    .action(async (text: string | undefined, options: PromptOptions) => {
      await runPrompt(text, options);
    });
  return cmd;
}

async function runPrompt(arg: string | undefined, o: PromptOptions): Promise<void> {
  const stderrStyle = styleFor(process.stderr);
  // Argument and model checks first, so a mistake is reported before waiting on stdin.
  if (o.system !== undefined && !o.chat) usageError("--system needs --chat (a raw completion has no system message)");
  const { path, demo } = resolveModel(o.model);
  const text = await promptText(arg);
  if (demo && !o.quiet) {
    process.stderr.write(
      stderrStyle.yellow("llamem: using the demo model, whose weights are random: its text is noise (pass -m <model.gguf>)") + "\n",
    );
  }
  if (o.verbose) setLogLevel("info");

  const trap = trapSignals();
  const interrupted = () => trap.exitCode !== undefined;
  const out = process.stdout;
  // A reader that went away (`| head`) ends generation quietly, like a well-behaved Unix tool.
  let pipeClosed = false;
  const generation = new AbortController();
  const onStdoutError = () => {
    pipeClosed = true;
    generation.abort();
  };
  out.on("error", onStdoutError);
  const signal = AbortSignal.any([trap.signal, generation.signal]);

  const bar = new ProgressBar("loading", { enabled: !o.quiet && !o.json });
  let model: Model | undefined;
  let context: Context | undefined;
  try {
    const t0 = performance.now();
    model = await loadModel(path, {
      gpuLayers: o.gpuLayers,
      mmap: o.mmap,
      mlock: o.mlock,
      onProgress: (p) => bar.update(p),
      signal,
    });
    bar.update(1);
    context = await model.createContext({
      contextSize: o.ctx,
      threads: o.threads,
      kvType: o.kvType,
      flashAttention: o.flashAttn,
    });
    const loadMs = performance.now() - t0;
    bar.done();

    let input = text;
    let parseSpecial = false;
    let addSpecial = true;
    if (o.chat) {
      const messages = [
        ...(o.system !== undefined ? [{ role: "system", content: o.system }] : []),
        { role: "user", content: text },
      ];
      input = model.applyChatTemplate(messages, { addAssistant: true });
      parseSpecial = true;
      addSpecial = !(await startsWithBos(model, input));
    }

    let last = "";
    try {
      for await (const piece of context.generate(input, {
        maxTokens: o.maxTokens,
        temperature: o.temperature,
        seed: o.seed,
        stop: o.stop?.map(unescape),
        topK: o.topK,
        topP: o.topP,
        minP: o.minP,
        repeatPenalty: o.repeatPenalty,
        parseSpecial,
        addSpecial,
        signal,
      })) {
        if (!o.json && !pipeClosed) out.write(piece);
        last = piece;
      }
    } catch (err) {
      // An interrupt or a closed pipe is an ending, not a failure: keep what was printed.
      const aborted = err instanceof LlamemError && err.code === "ERR_ABORTED";
      if (!aborted || !(interrupted() || pipeClosed)) throw err;
    }
    if (pipeClosed) return;

    const result = context.lastGeneration;
    if (o.json && result) {
      const json: PromptJsonResult = {
        text: result.text,
        model: path,
        stopReason: result.stopReason,
        promptTokens: result.promptTokens,
        generatedTokens: result.generatedTokens,
        timings: {
          timeToFirstTokenMs: result.timeToFirstTokenMs,
          promptTokensPerSecond: result.promptTokensPerSecond,
          generatedTokensPerSecond: result.generatedTokensPerSecond,
          loadMs,
        },
        memory: await context.memory(),
      };
      out.write(JSON.stringify(json) + "\n");
    } else if (!o.json && (interrupted() || (out.isTTY && !last.endsWith("\n")))) {
      // After Ctrl-C the shell prompt should start on its own line; a terminal always gets one.
      out.write("\n");
    }
    if (o.verbose && result) writeStats(result, loadMs, await context.memory());
    if (interrupted()) throw new CliExit(trap.exitCode ?? 130);
  } catch (err) {
    if (interrupted() && err instanceof LlamemError && err.code === "ERR_ABORTED") throw new CliExit(trap.exitCode ?? 130);
    throw err;
  } finally {
    bar.done();
    await context?.dispose();
    await model?.dispose();
    out.off("error", onStdoutError);
    trap.release();
  }
}

function writeStats(r: GenerationResult, loadMs: number, memory: ContextMemory): void {
  const total = memory.weights + memory.kv + memory.compute;
  process.stderr.write(
    `llamem: ${r.promptTokens} prompt tokens (${r.promptTokensPerSecond.toFixed(1)} tok/s), ` +
      `${r.generatedTokens} generated (${r.generatedTokensPerSecond.toFixed(1)} tok/s), ` +
      `first token ${r.timeToFirstTokenMs.toFixed(0)} ms, load ${loadMs.toFixed(0)} ms, ` +
      `memory ${formatBytes(total)}, stop: ${r.stopReason}\n`,
  );
}
