/**
 * The options several `llamem` commands share, declared once: each `add…Options` function adds
 * one group to a commander {@link Command}, and the `…Of` functions turn what commander parsed
 * into the library's option objects. Also the commander argument parsers every command uses.
 *
 * Defaults shown in help come from {@link DEFAULTS} (lib/options.ts), the one place they are
 * defined; the choices of --kv-type are {@link KV_CACHE_TYPE_NAMES}.
 *
 * @packageDocumentation
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { InvalidArgumentError, Option, type Command } from "commander";
import { LlamemError } from "../errors.js";
import { DEFAULTS, FLASH_ATTENTION, KV_CACHE_TYPE_NAMES, type KvCacheType } from "../options.js";
import { packageRoot } from "../system.js";
import type { Context, ContextOptions } from "../context.js";
import type { LoadModelOptions, Model } from "../model.js";

// ---------------------------------------------------------------------------------------------
// Argument parsers for commander (they throw InvalidArgumentError, which commander reports as a
// usage error naming the option).

/** A commander argument parser for an integer in [min, max]. */
export function intArg(min: number, max: number = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    const n = /^[+-]?\d+$/.test(value.trim()) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
      throw new InvalidArgumentError(`expected an integer ${range}.`);
    }
    return n;
  };
}

/**
 * A commander argument parser for a finite number in [min, max], or in (min, max] when
 * `exclusiveMin` is set (for factors where 0 makes no sense).
 */
export function numberArg(min: number, max: number = Infinity, exclusiveMin = false): (value: string) => number {
  return (value: string) => {
    const n = value.trim() === "" ? NaN : Number(value);
    if (!Number.isFinite(n) || (exclusiveMin ? n <= min : n < min) || n > max) {
      const low = exclusiveMin ? `> ${min}` : `>= ${min}`;
      const range = max === Infinity ? low : exclusiveMin ? `in (${min}, ${max}]` : `in [${min}, ${max}]`;
      throw new InvalidArgumentError(`expected a number ${range}.`);
    }
    return n;
  };
}

/** A commander reducer for a repeatable option: each use appends its value. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Parses --gpu-layers: an integer >= -1, or "all" (-1). */
export function gpuLayersArg(value: string): number {
  return value === "all" ? -1 : intArg(-1)(value);
}

/** Most CPU threads a context accepts (lib/options.ts checks the same range). */
export const MAX_THREADS = 1024;

/** The --flash-attn modes. */
export type FlashAttentionMode = keyof typeof FLASH_ATTENTION;

const FLASH_ATTENTION_MODES = Object.keys(FLASH_ATTENTION) as FlashAttentionMode[];

// ---------------------------------------------------------------------------------------------
// The model file.

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

/** The note printed (unless --quiet) when the demo model runs. */
export const DEMO_MODEL_NOTE = "llamem: using the demo model, whose weights are random: its text is noise (pass -m <model.gguf>)";

/** Adds `-m, --model <path>`; `fallback` says what runs without it. */
export function addModelOption(cmd: Command, fallback = "$LLAMEM_MODEL, else the demo model"): Command {
  return cmd.option("-m, --model <path>", `GGUF model file (default: ${fallback})`);
}

// ---------------------------------------------------------------------------------------------
// Option groups.

/** What {@link addSamplingOptions} parses (`samplingOf` in lib/options.ts picks the sampler's part). */
export interface SamplingCliOptions {
  maxTokens: number;
  temperature: number;
  seed?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
}

/**
 * Adds the generation length and the sampler: -n/--max-tokens, --temperature, --seed, --top-k,
 * --top-p, --min-p, --repeat-penalty. `maxTokens` and `seed` describe those two for the command.
 */
export function addSamplingOptions(cmd: Command, help: { maxTokens: string; seed: string }): Command {
  const d = DEFAULTS.sampling;
  return cmd
    .option("-n, --max-tokens <n>", help.maxTokens, intArg(0), DEFAULTS.maxTokens)
    .option("--temperature <t>", "sampling temperature; 0 is greedy and deterministic", numberArg(0), d.temperature)
    .option("--seed <n>", help.seed, intArg(0, 0xffffffff))
    .option("--top-k <k>", `keep only the k most likely tokens (0 = off; default ${d.topK})`, intArg(0))
    .option("--top-p <p>", `nucleus sampling threshold (1 = off; default ${d.topP})`, numberArg(0, 1))
    .option("--min-p <p>", `drop tokens below p times the top probability (0 = off; default ${d.minP})`, numberArg(0, 1))
    .option(
      "--repeat-penalty <f>",
      `penalty for repeating the last ${d.repeatLastN} tokens (1 = off; default ${d.repeatPenalty})`,
      numberArg(0, Infinity, true),
    );
}

/** A `--lora FILE[:scale]` value: the adapter file and its scale (default 1). */
export interface LoraSpec {
  path: string;
  scale: number;
}

/** Parses `--lora FILE[:scale]` (the scale after the last colon, when it is a number), repeatable. */
export function loraArg(value: string, previous: LoraSpec[] | undefined): LoraSpec[] {
  const m = /^(.*):([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)$/i.exec(value);
  const spec = m && (m[1] as string).length > 0 ? { path: m[1] as string, scale: Number(m[2]) } : { path: value, scale: 1 };
  if (spec.path.length === 0) throw new InvalidArgumentError("expected FILE or FILE:scale.");
  return [...(previous ?? []), spec];
}

/** Adds `--lora <file[:scale]>`, repeatable. */
export function addLoraOption(cmd: Command): Command {
  return cmd.option("--lora <file[:scale]>", "apply a LoRA adapter made for the model, at this scale (default 1); repeatable", loraArg);
}

/** Loads the `--lora` adapters and sets them on the context. */
export async function applyLoras(model: Model, context: Context, specs: readonly LoraSpec[] | undefined): Promise<void> {
  if (!specs || specs.length === 0) return;
  const adapters = [];
  for (const s of specs) adapters.push({ adapter: await model.loadAdapter(s.path), scale: s.scale });
  await context.setAdapters(adapters);
}

/** What {@link addDraftOptions} parses. */
export interface DraftCliOptions {
  draft?: string;
  draftMax?: number;
  draftMinP?: number;
}

/** Adds speculative decoding's `--draft <file>`, `--draft-max <n>` and `--draft-min-p <p>`. */
export function addDraftOptions(cmd: Command): Command {
  const d = DEFAULTS.draft;
  return cmd
    .option("--draft <file>", "speculative decoding: a smaller GGUF with the same vocabulary drafts tokens the model verifies several at a time")
    .option("--draft-max <n>", `most tokens drafted per step (default ${d.maxDraftTokens})`, intArg(1, 64))
    .option("--draft-min-p <p>", `stop drafting below this draft probability (default ${d.minProbability})`, numberArg(0, 1));
}

/** The context's `draft` option for a loaded `--draft` model. */
export function draftOptionsOf(model: Model | undefined, o: DraftCliOptions): Pick<ContextOptions, "draft"> {
  if (!model) return {};
  return { draft: { model, ...(o.draftMax === undefined ? {} : { maxDraftTokens: o.draftMax }), ...(o.draftMinP === undefined ? {} : { minProbability: o.draftMinP }) } };
}

/** Adds `--kv-type <type>`, choices {@link KV_CACHE_TYPE_NAMES}. */
export function addKvTypeOption(cmd: Command): Command {
  return cmd.addOption(new Option("--kv-type <type>", `KV cache element type (default ${DEFAULTS.kvType})`).choices(KV_CACHE_TYPE_NAMES));
}

/** Adds `--flash-attn <mode>` (auto, on, off), defaulting to {@link DEFAULTS}.flashAttention. */
export function addFlashAttentionOption(cmd: Command): Command {
  return cmd.addOption(new Option("--flash-attn <mode>", "flash attention").choices(FLASH_ATTENTION_MODES).default(DEFAULTS.flashAttention));
}

/** Adds `-t, --threads <n>`. */
export function addThreadsOption(cmd: Command): Command {
  return cmd.option("-t, --threads <n>", "CPU threads (default: physical cores)", intArg(1, MAX_THREADS));
}

/** What {@link addContextOptions} parses. */
export interface ContextCliOptions {
  ctx?: number;
  threads?: number;
  kvType?: KvCacheType;
  flashAttn: FlashAttentionMode;
}

/** Adds the context's options: -c/--ctx, -t/--threads, --kv-type, --flash-attn. */
export function addContextOptions(cmd: Command): Command {
  cmd.option("-c, --ctx <n>", `context size in tokens (default: min(${DEFAULTS.contextSizeCap}, trained length))`, intArg(1));
  addThreadsOption(cmd);
  addKvTypeOption(cmd);
  return addFlashAttentionOption(cmd);
}

/** The context options of {@link ContextCliOptions}. */
export function contextOptionsOf(o: ContextCliOptions): ContextOptions {
  return { contextSize: o.ctx, threads: o.threads, kvType: o.kvType, flashAttention: o.flashAttn };
}

/** What {@link addLoadOptions} parses. */
export interface LoadCliOptions {
  gpuLayers?: number;
  /** False with --no-mmap; commander's default (true) means "not given". */
  mmap: boolean;
  mlock?: boolean;
}

/** Adds the model load's options: --gpu-layers, --no-mmap, --mlock. */
export function addLoadOptions(cmd: Command): Command {
  return cmd
    .option("--gpu-layers <n>", `layers to offload to the GPU; -1 or "all" for all (default ${DEFAULTS.gpuLayers})`, gpuLayersArg)
    .option("--no-mmap", "read the weights into memory instead of mapping the file (default: mapped, unless the CPU repacks most of them)")
    .option("--mlock", "lock the weights in RAM");
}

/** The load options of {@link LoadCliOptions}: without --no-mmap or --mlock the library picks the load mode. */
export function loadOptionsOf(o: LoadCliOptions): LoadModelOptions {
  return { gpuLayers: o.gpuLayers, mmap: o.mmap ? undefined : false, mlock: o.mlock };
}

/** What {@link addVerbosityOptions} parses. */
export interface VerbosityCliOptions {
  quiet?: boolean;
  verbose?: boolean;
}

/** Adds -q/--quiet and -v/--verbose (which conflict); `verbose` says what --verbose shows. */
export function addVerbosityOptions(cmd: Command, verbose: string): Command {
  return cmd
    .addOption(new Option("-q, --quiet", "no progress bar or notes on stderr").conflicts("verbose"))
    .option("-v, --verbose", verbose);
}

/** The model, context, load and sampling options `prompt` and `chat` share. */
export interface ModelCliOptions extends SamplingCliOptions, ContextCliOptions, LoadCliOptions, VerbosityCliOptions, DraftCliOptions {
  model?: string;
  lora?: LoraSpec[];
  system?: string;
}
