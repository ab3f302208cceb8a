/**
 * `llamem prompt [text]`: one-shot generation, streamed to stdout.
 *
 * stdout carries the generated text and nothing else (or, with --json, exactly one JSON
 * object); everything for humans (progress, notes, stats, errors) goes to stderr.
 */
import { Command } from "commander";
import { LlamemError } from "../errors.js";
import { loadModel, type Model } from "../model.js";
import type { Context, ContextMemory, GenerationResult, StopReason } from "../context.js";
import { setLogLevel } from "../log.js";
import { samplingOf } from "../options.js";
import { readWholeFile } from "../files.js";
import type { JsonSchema } from "../grammar/json-schema.js";
import { CliExit, ProgressBar, formatBytes, outputGuard, styleFor, trapSignals, usageError } from "./output.js";
import {
  DEMO_MODEL_NOTE,
  addContextOptions,
  addLoadOptions,
  addDraftOptions,
  addLoraOption,
  applyLoras,
  draftOptionsOf,
  addModelOption,
  addSamplingOptions,
  addVerbosityOptions,
  collect,
  intArg,
  contextOptionsOf,
  loadOptionsOf,
  resolveModel,
  type ModelCliOptions,
} from "./options.js";

/** The options of `llamem prompt`, as commander hands them over. */
interface PromptOptions extends ModelCliOptions {
  stop?: string[];
  chat?: boolean;
  json?: boolean;
  jsonSchema?: string;
  grammar?: string;
  logprobs?: number;
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
  /** With --logprobs N: each generated token, its text, its log-probability and the top N alternatives. */
  logprobs?: { token: number; text: string; logprob: number; top: { token: number; text: string; logprob: number }[] }[];
  /** With --draft: the tokens the draft model proposed and those the model accepted. */
  draft?: { drafted: number; accepted: number };
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

/** The --json-schema or --grammar file's constraint; a schema that is not JSON is a usage error. */
async function constraintOf(o: PromptOptions): Promise<{ jsonSchema?: JsonSchema; grammar?: string }> {
  if (o.grammar !== undefined) return { grammar: (await readWholeFile(o.grammar)).toString("utf8") };
  if (o.jsonSchema === undefined) return {};
  const text = (await readWholeFile(o.jsonSchema)).toString("utf8");
  try {
    return { jsonSchema: JSON.parse(text) as JsonSchema };
  } catch (err) {
    return usageError(`--json-schema ${o.jsonSchema}: not JSON (${(err as Error).message})`);
  }
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
    .argument("[text]", "the prompt (default: read stdin)");
  addModelOption(cmd);
  cmd
    .option("--chat", "format the prompt with the model's chat template (default: raw completion)")
    .option("--system <text>", "system message for --chat");
  addSamplingOptions(cmd, { maxTokens: "most tokens to generate", seed: "random seed (same seed and prompt give the same text)" });
  cmd.option("--stop <s>", "stop when the output contains this string (repeatable; \\n and \\t are unescaped)", collect);
  cmd
    .option("--json-schema <file>", "constrain the output to JSON valid under this JSON Schema file")
    .option("--grammar <file>", "constrain the output to this GBNF grammar file (llama.cpp's format, rule `root`)")
    .option("--logprobs <n>", "with --json: each token's log-probability and the n most likely alternatives (0-100)", intArg(0, 100));
  addContextOptions(cmd);
  addLoadOptions(cmd);
  addLoraOption(cmd);
  addDraftOptions(cmd);
  cmd.option("--json", "print one JSON object with the text, timings and memory at the end (no streaming)");
  addVerbosityOptions(cmd, "show llama.cpp's log and the timings on stderr");
  return cmd
    .addHelpText(
      "after",
      `
Examples:
  $ llamem prompt "Once upon a time"
  $ llamem prompt -m model.gguf --chat --system "Answer briefly." "What is a GGUF file?"
  $ echo "The meaning of life is" | llamem prompt -m model.gguf --temperature 0 --max-tokens 32
  $ llamem prompt -m model.gguf --json --stop '\\n' "Q: 2+2? A:" | jq .text
  $ llamem prompt -m model.gguf --chat --json-schema person.schema.json "Describe a person as JSON."`,
    )
    .action(async (text: string | undefined, options: PromptOptions) => {
      await runPrompt(text, options);
    });
}

async function runPrompt(arg: string | undefined, o: PromptOptions): Promise<void> {
  const stderrStyle = styleFor(process.stderr);
  // Argument and model checks first, so a mistake is reported before waiting on stdin.
  if (o.system !== undefined && !o.chat) usageError("--system needs --chat (a raw completion has no system message)");
  if (o.jsonSchema !== undefined && o.grammar !== undefined) usageError("--json-schema and --grammar cannot be combined");
  if (o.logprobs !== undefined && !o.json) usageError("--logprobs needs --json (the values are in the JSON object)");
  const { path, demo } = resolveModel(o.model);
  const constraint = await constraintOf(o);
  const text = await promptText(arg);
  if (demo && !o.quiet) {
    process.stderr.write(stderrStyle.yellow(DEMO_MODEL_NOTE) + "\n");
  }
  if (o.verbose) setLogLevel("info");

  const trap = trapSignals();
  const interrupted = () => trap.exitCode !== undefined;
  const out = process.stdout;
  // A failed write (a reader that went away, a full disk) ends generation; runToExit reports it.
  const output = outputGuard(out);
  const signal = AbortSignal.any([trap.signal, output.signal]);

  const bar = new ProgressBar("loading", { enabled: !o.quiet && !o.json });
  let model: Model | undefined;
  let context: Context | undefined;
  let draft: Model | undefined;
  try {
    const t0 = performance.now();
    model = await loadModel(path, { ...loadOptionsOf(o), onProgress: (p) => bar.update(p), signal });
    bar.update(1);
    if (o.draft !== undefined) draft = await loadModel(o.draft, { ...loadOptionsOf(o), signal });
    context = await model.createContext({ ...contextOptionsOf(o), ...draftOptionsOf(draft, o) });
    await applyLoras(model, context, o.lora);
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
      input = await model.applyChatTemplate(messages, { addAssistant: true });
      parseSpecial = true;
      addSpecial = !(await startsWithBos(model, input));
    }

    let last = "";
    try {
      for await (const piece of context.generate(input, {
        ...samplingOf(o),
        maxTokens: o.maxTokens,
        stop: o.stop?.map(unescape),
        parseSpecial,
        addSpecial,
        signal,
        ...constraint,
        ...(o.logprobs === undefined ? {} : { logprobs: o.logprobs }),
      })) {
        if (!o.json && !output.failed) out.write(piece);
        last = piece;
      }
    } catch (err) {
      // An interrupt or a failed output is an ending: keep what was printed (runToExit reports
      // the output's failure).
      const aborted = err instanceof LlamemError && err.code === "ERR_ABORTED";
      if (!aborted || !(interrupted() || output.failed)) throw err;
    }
    if (output.failed) return;

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
        ...(result.draft ? { draft: result.draft } : {}),
      };
      if (result.logprobs) {
        const text = (token: number) => model?.tokenToPiece(token, { special: true }).toString("utf8") ?? "";
        json.logprobs = result.logprobs.map((l) => ({ token: l.token, text: text(l.token), logprob: l.logprob, top: l.top.map((t) => ({ token: t.token, text: text(t.token), logprob: t.logprob })) }));
      }
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
    await draft?.dispose();
    await model?.dispose();
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
