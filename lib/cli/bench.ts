/**
 * `llamem bench -m model.gguf`: prompt processing and generation speed, measured the way
 * llama.cpp's llama-bench measures them, so the figures can be compared:
 *
 * - ppN: N token ids evaluated into an empty KV cache, in batches of --batch-size, with the
 *   logits of the last one computed (llama-bench: one `llama_decode` per batch);
 * - tgN: N single-token evaluations after a first token, each computing its logits
 *   (llama-bench: N `llama_decode`s of one token). The next id is the greedy pick, where
 *   llama-bench feeds a pseudo-random one: the decodes cost the same.
 *
 * Each test runs --reps times after a warm-up; the table shows the median and the spread.
 * Prompt token ids come from a seeded generator, the first one BOS when the model adds one.
 */
import { existsSync } from "node:fs";
import type { Command } from "commander";
import { LlamemError } from "../errors.js";
import { loadModel, type Model } from "../model.js";
import type { Context } from "../context.js";
import { DEFAULTS, type KvCacheType } from "../options.js";
import { defaultThreads } from "../system.js";
import { CliExit, formatBytes, formatCount, formatTable, styleFor, trapSignals, usageError } from "./output.js";
import { addFlashAttentionOption, addKvTypeOption, addThreadsOption, gpuLayersArg, intArg, type FlashAttentionMode } from "./options.js";

/** llama-bench's batch sizes (its -b and -ub defaults), so that the figures compare. */
const BENCH_BATCH_SIZE = 2048;
const BENCH_UBATCH_SIZE = 512;

interface BenchOptions {
  model?: string;
  reps: number;
  pp: number;
  tg: number;
  threads?: number;
  batchSize: number;
  ubatchSize: number;
  gpuLayers: number;
  kvType?: KvCacheType;
  flashAttn: FlashAttentionMode;
  warmup: boolean;
  json?: boolean;
  quiet?: boolean;
}

/** One test's figures. */
export interface BenchTestResult {
  /** "pp512", "tg128". */
  name: string;
  kind: "pp" | "tg";
  tokens: number;
  /** Tokens per second of each repetition, in run order. */
  samples: number[];
  median: number;
  mean: number;
  /** Sample standard deviation (0 for one repetition). */
  stddev: number;
  min: number;
  max: number;
}

/** What `llamem bench --json` prints. */
export interface BenchJsonResult {
  model: { path: string; description: string; size: number; parameters: number };
  threads: number;
  batchSize: number;
  ubatchSize: number;
  contextSize: number;
  gpuLayers: number;
  kvType: KvCacheType;
  flashAttention: FlashAttentionMode;
  reps: number;
  tests: BenchTestResult[];
}

/** mulberry32: small, seeded, good enough to pick token ids. */
function tokenSource(seed: number, vocabSize: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * vocabSize);
  };
}

/** Median, mean, sample standard deviation, min and max of tokens-per-second samples. */
export function sampleStats(samples: readonly number[]): Pick<BenchTestResult, "median" | "mean" | "stddev" | "min" | "max"> {
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  const mid = n >> 1;
  const median = n === 0 ? 0 : n % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
  const mean = n === 0 ? 0 : s.reduce((x, y) => x + y, 0) / n;
  const stddev = n < 2 ? 0 : Math.sqrt(s.reduce((x, y) => x + (y - mean) ** 2, 0) / (n - 1));
  return { median, mean, stddev, min: s[0] ?? 0, max: s[n - 1] ?? 0 };
}

/** Registers `llamem bench`. */
export function registerBench(program: Command): Command {
  const cmd = program
    .command("bench")
    .summary("measure prompt and generation speed (tokens/s), like llama-bench")
    .description(
      "Measure prompt processing (ppN: N tokens into an empty cache) and generation (tgN: N single-token steps) " +
        "in tokens per second, the way llama.cpp's llama-bench does: logits are computed as in real use, prompt " +
        "token ids are pseudo-random. Each test runs --reps times after a warm-up; the table shows the median.\n\n" +
        "Without -m the model is $LLAMEM_MODEL. Use --threads and a quiet machine: a busy core slows generation many times over.",
    )
    .option("-m, --model <path>", "GGUF model file (default: $LLAMEM_MODEL)")
    .option("-r, --reps <n>", "repetitions of each test", intArg(1, 1000), 5)
    .option("--pp <n>", "prompt tokens of the pp test (0 skips it)", intArg(0, 1 << 20), 512)
    .option("--tg <n>", "generated tokens of the tg test (0 skips it)", intArg(0, 1 << 20), 128);
  addThreadsOption(cmd);
  cmd
    .option("-b, --batch-size <n>", "most tokens per decode, as in llama-bench", intArg(1), BENCH_BATCH_SIZE)
    .option("--ubatch-size <n>", "physical micro-batch size, as in llama-bench", intArg(1), BENCH_UBATCH_SIZE)
    .option("--gpu-layers <n>", 'layers on the GPU; -1 or "all" for all', gpuLayersArg, DEFAULTS.gpuLayers);
  addKvTypeOption(cmd);
  addFlashAttentionOption(cmd);
  return cmd
    .option("--no-warmup", "skip the warm-up run")
    .option("--json", "print one JSON object with every sample instead of the table")
    .option("-q, --quiet", "no progress on stderr")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem bench -m model.gguf
  $ llamem bench -m model.gguf --reps 3 --pp 512 --tg 128 --threads 8
  $ llamem bench -m model.gguf --pp 0 --tg 64 --json | jq '.tests[0].median'`,
    )
    .action(async (o: BenchOptions) => {
      await runBench(o);
    });
}

async function runBench(o: BenchOptions): Promise<void> {
  const path = o.model ?? process.env["LLAMEM_MODEL"];
  if (!path) usageError("no model: pass -m <model.gguf> (or set LLAMEM_MODEL)");
  if (!existsSync(path)) throw new LlamemError("ERR_FILE_NOT_FOUND", `model file not found: ${path}`);
  if (o.pp === 0 && o.tg === 0) usageError("nothing to measure: --pp and --tg are both 0");
  const threads = o.threads ?? defaultThreads();
  const kvType = o.kvType ?? DEFAULTS.kvType;
  // As llama-bench sizes it: room for the prompt and the generation (each test starts empty),
  // plus the tg test's first token and the room a generation keeps free.
  const contextSize = Math.max(o.pp + o.tg + 2, 16);
  const trap = trapSignals();
  const progress = !o.quiet && !o.json && process.stderr.isTTY === true;
  const say = (s: string) => {
    if (progress) process.stderr.write(`\r\x1b[2K${s}`);
  };
  let model: Model | undefined;
  let ctx: Context | undefined;
  try {
    say("loading");
    model = await loadModel(path, { gpuLayers: o.gpuLayers, signal: trap.signal });
    ctx = await model.createContext({
      contextSize, batchSize: o.batchSize, ubatchSize: Math.min(o.ubatchSize, o.batchSize), threads, threadsBatch: threads,
      kvType, flashAttention: o.flashAttn,
    });
    const info = model.info;
    const next = tokenSource(0x5eed, info.vocabSize);
    const first = () => (info.addBos && info.bos >= 0 ? info.bos : next());
    const c = ctx;
    // A greedy pick at each step makes every decode compute the last token's logits, as
    // llama_decode does for llama-bench; a bare evaluation skips the output layer and would
    // make tg look faster than it is.
    const greedy = { temperature: 0, addSpecial: false, signal: trap.signal } as const;
    const runPp = async (n: number): Promise<number> => {
      await c.clear();
      const tokens = new Int32Array(n);
      tokens[0] = first();
      for (let i = 1; i < n; i++) tokens[i] = next();
      return (await c.complete(tokens, { ...greedy, maxTokens: 1 })).promptTokensPerSecond;
    };
    const runTg = async (n: number): Promise<number> => {
      await c.clear();
      // The first token is the prompt; each of the n steps after it evaluates one token.
      return (await c.complete(Int32Array.of(first()), { ...greedy, maxTokens: n + 1 })).generatedTokensPerSecond;
    };
    if (o.warmup) {
      say("warming up");
      if (o.pp > 0) await runPp(Math.min(o.pp, o.batchSize));
      if (o.tg > 0) await runTg(1);
    }
    const tests: BenchTestResult[] = [];
    for (const [kind, n] of [["pp", o.pp], ["tg", o.tg]] as const) {
      if (n === 0) continue;
      const samples: number[] = [];
      for (let rep = 0; rep < o.reps; rep++) {
        if (trap.signal.aborted) throw new CliExit(trap.exitCode ?? 130);
        say(`${kind}${n}: repetition ${rep + 1} of ${o.reps}`);
        const tokensPerSecond = kind === "pp" ? await runPp(n) : await runTg(n);
        if (trap.signal.aborted) throw new CliExit(trap.exitCode ?? 130);
        samples.push(tokensPerSecond);
      }
      tests.push({ name: `${kind}${n}`, kind, tokens: n, samples, ...sampleStats(samples) });
    }
    say("");
    const result: BenchJsonResult = {
      model: { path, description: info.description, size: info.size, parameters: info.parameters },
      threads,
      batchSize: o.batchSize,
      ubatchSize: Math.min(o.ubatchSize, o.batchSize),
      contextSize: ctx.info.contextSize,
      gpuLayers: model.gpuLayers,
      kvType,
      flashAttention: o.flashAttn,
      reps: o.reps,
      tests,
    };
    if (o.json) {
      process.stdout.write(JSON.stringify(result) + "\n");
      return;
    }
    const style = styleFor(process.stdout);
    const fmt = (x: number) => x.toFixed(2);
    const rows = [["model", "size", "params", "threads", "test", "t/s (median)", "± stddev", "min", "max"].map((h) => style.bold(h))];
    for (const t of tests) {
      rows.push([info.description, formatBytes(info.size), formatCount(info.parameters), String(threads), t.name, fmt(t.median), fmt(t.stddev), fmt(t.min), fmt(t.max)]);
    }
    process.stdout.write(formatTable(rows) + "\n");
  } catch (err) {
    if (trap.exitCode !== undefined && err instanceof LlamemError && err.code === "ERR_ABORTED") throw new CliExit(trap.exitCode);
    throw err;
  } finally {
    say("");
    await ctx?.dispose();
    await model?.dispose();
    trap.release();
  }
}
