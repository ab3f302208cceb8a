#!/usr/bin/env node
// llamem against llama.cpp's own llama-bench (the baseline) and node-llama-cpp, side by side, on
// this machine.
//
//   npm run bench -- [--models 1b:q4_0,1b:q8_0] [--reps 3] [--threads N] [--flash-attn auto]
//                    [--contenders llamem,llama-bench,node-llama-cpp] [--quick] [--out bench/results]
//   node scripts/bench.mjs --render bench/results/<file>.json     (redraw the .md and .svg)
//
// Every repetition of every contender runs in its own child process (so warm-up, peak RSS and
// thread pools are per run), interleaved: rep 1 model A: llamem, llama-bench, node-llama-cpp;
// model B: ...; rep 2 ... The figures are medians over the repetitions; ratios are medians over
// medians: every contender against the baseline (llama-bench), plus the pairs a contender names
// in `compareTo` (llamem / node-llama-cpp). See bench/README.md for how to read the output.
//
// Contenders and figures are plain lists (CONTENDERS, FIGURES) so another runtime or another
// measurement is one entry more. `--child <json>` is the llamem contender's own child mode and
// `--nlc-child <json>` the node-llama-cpp one. node-llama-cpp is never a dependency of llamem:
// it is installed on demand, with npm, into bench/work/node-llama-cpp/ (git-ignored).
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { cmakeCacheFlags } from "./build-llama-tools.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const selfScript = fileURLToPath(import.meta.url);
const distLib = join(root, "dist", "lib");

/** The workload, identical for every contender (llama-bench's defaults, except batch 512). */
const N_PROMPT = 512;
const N_GEN = 128;
const BATCH = 512;
const UBATCH = 512;
const KV_TYPE = "f16";
/** Prompt token ids are fixed pseudo-random ids in [TOKEN_LO, TOKEN_HI) (clamped to the vocabulary). */
const TOKEN_LO = 100;
const TOKEN_HI = 30000;
const TOKEN_SEED = 0x5eed;
/** Synthetic models are written with this seed and cached in bench/work/. */
const MODEL_SEED = 1;

/** The node-llama-cpp contender: this exact version, with its prebuilt CPU binary, in a scratch folder. */
const NLC_VERSION = "3.22.1";
const nlcDir = join(root, "bench", "work", "node-llama-cpp");
const nlcEntry = join(nlcDir, "node_modules", "node-llama-cpp", "dist", "index.js");

const DEFAULT_MODELS = "1b:q4_0,1b:q8_0";
const QUICK_MODELS = "tiny:q4_0,tiny:q8_0";
const DEFAULT_REPS = 3;

// ---------------------------------------------------------------------------------------------
// Figures: what is measured. `better` orients the ratio; a figure is compared (ratio, chart)
// wherever both contenders of a comparison report it.

const FIGURES = [
  { id: `pp${N_PROMPT}`, label: `pp${N_PROMPT}`, unit: "t/s", better: "higher", digits: 1,
    what: `prompt processing: one decode of ${N_PROMPT} tokens into an empty KV cache` },
  { id: `tg${N_GEN}`, label: `tg${N_GEN}`, unit: "t/s", better: "higher", digits: 1,
    what: `generation: ${N_GEN} single-token decodes from an empty KV cache, no sampling` },
  { id: `generate_tg${N_GEN}`, label: `generate() tg${N_GEN}`, unit: "t/s", better: "higher", digits: 1,
    what: `generation through the library's text API after a ${N_PROMPT}-token prompt, greedy sampling and detokenizing included ` +
      "(llamem: ctx.generate(); node-llama-cpp: LlamaCompletion.generateCompletionWithMeta()); tokens after the first over the time after the first" },
  { id: `ttft${N_PROMPT}`, label: `time to first token (${N_PROMPT}-token prompt)`, unit: "ms", better: "lower", digits: 0,
    what: `the same generation: from the call to the first text piece, prompt of ${N_PROMPT} tokens, fresh context` },
  { id: "load", label: "model load", unit: "ms", better: "lower", digits: 0,
    what: "loadModel() (file checks, GGUF parse, llama.cpp load with mmap); page cache warm" },
  { id: "peak_rss", label: "peak RSS", unit: "MiB", better: "lower", digits: 0,
    what: "largest resident set of the contender's whole process over the run (weights are mmapped and count as they are touched)" },
  { id: "runtime_rss", label: "RSS before the model loads", unit: "MiB", better: "lower", digits: 0,
    what: "resident set of the process once the runtime and the library are loaded, before loadModel() " +
      "(node-llama-cpp: after getLlama(), which loads its binary): the part of peak RSS that is not the model" },
];

// ---------------------------------------------------------------------------------------------
// Small helpers.

function log(msg) {
  process.stderr.write(`${msg}\n`);
}

function fail(msg) {
  log(`bench: ${msg}`);
  process.exit(2);
}

/** Fixed pseudo-random token ids (mulberry32), the same in every run. */
function benchTokens(n, vocabSize, seed = TOKEN_SEED) {
  const hi = Math.min(TOKEN_HI, vocabSize);
  const lo = Math.min(TOKEN_LO, Math.max(0, hi - 1));
  let a = seed >>> 0;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const r = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = lo + Math.floor(r * (hi - lo));
  }
  return out;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? null : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmt(x, digits) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  return x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function slug(s) {
  return s.toLowerCase().replace(/\(r\)|\(tm\)|cpu|processor|@.*$/g, " ").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 48);
}

function localDate(d = new Date()) {
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** stdout and stderr of a quick command, trimmed; undefined when it cannot run. */
function commandOutput(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"], timeout: 10000 });
  if (r.error) return undefined;
  return `${r.stdout}${r.stderr}`.trim().replace(/\s*\n\s*/g, "; ");
}

function tryRun(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { stdio: ["ignore", "pipe", "ignore"], ...opts }).toString().trim();
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Child mode: one llamem repetition in this process. Prints one JSON line on stdout.

async function llamemChild(spec) {
  const { loadModel } = await import(pathToFileURL(join(distLib, "index.js")).href);
  const figures = { runtime_rss: process.memoryUsage().rss / 2 ** 20 };
  const detail = {};
  const ctxOptions = { batchSize: spec.batch, ubatchSize: spec.ubatch, threads: spec.threads, flashAttention: spec.flashAttention, kvType: KV_TYPE };

  const tLoad = performance.now();
  const model = await loadModel(spec.model);
  figures.load = performance.now() - tLoad;
  try {
    const ids = benchTokens(Math.max(spec.nPrompt, spec.nGen), model.info.vocabSize);
    const prompt = ids.subarray(0, spec.nPrompt);

    // pp: like llama-bench's pp test: a context of exactly nPrompt, one full warm-up run, clear, time one run.
    {
      const ctx = await model.createContext({ ...ctxOptions, contextSize: spec.nPrompt });
      try {
        if (spec.warmup) {
          await ctx.evaluate(prompt);
          await ctx.clear();
        }
        const t0 = performance.now();
        const decodeUs = await ctx.evaluate(prompt);
        const ms = performance.now() - t0;
        figures[`pp${spec.nPrompt}`] = (spec.nPrompt / ms) * 1000;
        detail.pp = { wallMs: ms, decodeUs, decodeTokensPerSecond: (spec.nPrompt / decodeUs) * 1e6, context: ctx.info };
      } finally {
        await ctx.dispose();
      }
    }

    // tg: like llama-bench's tg test: a context of exactly nGen, warm-up of one token, clear, nGen single-token decodes.
    {
      const ctx = await model.createContext({ ...ctxOptions, contextSize: spec.nGen });
      try {
        if (spec.warmup) {
          await ctx.evaluate(ids.subarray(0, 1));
          await ctx.clear();
        }
        let decodeUs = 0;
        const t0 = performance.now();
        for (let i = 0; i < spec.nGen; i++) decodeUs += await ctx.evaluate(ids.subarray(i, i + 1));
        const ms = performance.now() - t0;
        figures[`tg${spec.nGen}`] = (spec.nGen / ms) * 1000;
        detail.tg = { wallMs: ms, decodeUs, decodeTokensPerSecond: (spec.nGen / decodeUs) * 1e6, context: ctx.info };
      } finally {
        await ctx.dispose();
      }
    }

    // generate(): what an application sees. A fresh context (no warm-up of its own: the process is warm).
    {
      const ctx = await model.createContext({ ...ctxOptions, contextSize: spec.nPrompt + spec.nGen + 8 });
      try {
        const t0 = performance.now();
        for await (const _piece of ctx.generate(prompt, { maxTokens: spec.nGen, temperature: 0 })) {
          // the text is noise on a synthetic model; only the timing matters
        }
        const ms = performance.now() - t0;
        const g = ctx.lastGeneration;
        figures[`generate_tg${spec.nGen}`] = g.generatedTokensPerSecond;
        figures[`ttft${spec.nPrompt}`] = g.timeToFirstTokenMs;
        detail.generate = {
          wallMs: ms,
          generatedTokens: g.generatedTokens,
          stopReason: g.stopReason,
          promptTokensPerSecond: g.promptTokensPerSecond,
          generatedTokensPerSecond: g.generatedTokensPerSecond,
          timeToFirstTokenMs: g.timeToFirstTokenMs,
        };
      } finally {
        await ctx.dispose();
      }
    }
    detail.model = { description: model.info.description, parameters: model.info.parameters, size: model.info.size, vocabSize: model.info.vocabSize };
  } finally {
    await model.dispose();
  }

  try {
    const { native } = await import(pathToFileURL(join(distLib, "native.js")).href);
    detail.systemInfo = native().systemInfo().llamaSystemInfo;
  } catch {
    // internal API; optional
  }
  detail.selfMaxRssKb = process.resourceUsage().maxRSS;
  process.stdout.write(`${JSON.stringify({ figures, detail })}\n`);
}

// ---------------------------------------------------------------------------------------------
// node-llama-cpp child mode: one repetition with node-llama-cpp's own API, measured the way
// llamemChild measures llamem. Prints one JSON line on stdout.

/** getLlama() options: the prebuilt CPU binary only, never a download or a build; threads as asked. */
const NLC_LLAMA_OPTIONS = {
  gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: "error",
  // 0: no thread budget shared between contexts, so a context's `threads` is the number it uses.
  maxThreads: 0,
};

/** The ggml CPU backend variant the prebuilt binary picked at run time (it ships one per CPU generation). */
function loadedCpuBackends() {
  try {
    const names = new Set();
    for (const m of readFileSync("/proc/self/maps", "utf8").matchAll(/\/(libggml-cpu[\w.-]*\.(?:so|dylib|dll))$/gm)) names.add(m[1]);
    return [...names];
  } catch {
    return undefined;
  }
}

async function nlcLoad() {
  if (!existsSync(nlcEntry)) throw new Error(`${relative(root, nlcEntry)} is missing`);
  const t0 = performance.now();
  const nlc = await import(pathToFileURL(nlcEntry).href);
  const importMs = performance.now() - t0;
  const importRss = process.memoryUsage().rss / 2 ** 20;
  const t1 = performance.now();
  const llama = await nlc.getLlama(NLC_LLAMA_OPTIONS);
  return { nlc, llama, importMs, importRss, getLlamaMs: performance.now() - t1 };
}

function nlcBuildFacts(nlc, llama) {
  return {
    gpu: llama.gpu,
    buildType: llama.buildType,
    llamaCppRelease: llama.llamaCppRelease,
    cpuMathCores: llama.cpuMathCores,
    systemInfo: llama.systemInfo?.trim(),
    cpuBackends: loadedCpuBackends(),
  };
}

/** `--nlc-probe`: loads the prebuilt binary once and prints what it is (prepare() runs this). */
async function nlcProbe() {
  const { nlc, llama, getLlamaMs } = await nlcLoad();
  const facts = { ...nlcBuildFacts(nlc, llama), moduleVersion: await nlc.getModuleVersion(), getLlamaMs };
  await llama.dispose();
  process.stdout.write(`${JSON.stringify(facts)}\n`);
}

async function nodeLlamaCppChild(spec) {
  if (spec.batch !== spec.ubatch) throw new Error("node-llama-cpp always runs ubatch = batch");
  const { nlc, llama, importMs, importRss, getLlamaMs } = await nlcLoad();
  const figures = { runtime_rss: process.memoryUsage().rss / 2 ** 20 };
  const detail = { importMs, importRss, getLlamaMs, ...nlcBuildFacts(nlc, llama) };
  const flashAttention = { auto: "auto", on: true, off: false }[spec.flashAttention];
  // ubatch: node-llama-cpp's addon sets n_ubatch = n_batch. KV cache: F16 is its default for keys and values.
  const ctxOptions = { batchSize: spec.batch, threads: spec.threads, flashAttention, failedCreationRemedy: false };
  const contextInfo = (ctx) => ({
    contextSize: ctx.contextSize, batchSize: ctx.batchSize, flashAttention: ctx.flashAttention,
    idealThreads: ctx.idealThreads, currentThreads: ctx.currentThreads,
  });

  const tLoad = performance.now();
  const model = await llama.loadModel({ modelPath: spec.model, useMmap: true });
  figures.load = performance.now() - tLoad;
  try {
    const vocabSize = model.fileInfo?.metadata?.tokenizer?.ggml?.tokens?.length ?? TOKEN_HI;
    const ids = Array.from(benchTokens(Math.max(spec.nPrompt, spec.nGen), vocabSize));
    const prompt = ids.slice(0, spec.nPrompt);
    detail.kvCacheTypes = { key: nlc.GgmlType?.[model.defaultContextKvCacheKeyType], value: nlc.GgmlType?.[model.defaultContextKvCacheValueType] };

    // pp. node-llama-cpp evaluates at most contextSize - 1 tokens before it shifts the context, so
    // the context is asked for nPrompt + 1; llama.cpp pads n_ctx to 256 cells anyway (768 here),
    // and a decode only attends over the used cells padded to 256 (512), as in a context of 512.
    {
      const ctx = await model.createContext({ ...ctxOptions, contextSize: spec.nPrompt + 1 });
      try {
        const seq = ctx.getSequence();
        if (spec.warmup) {
          await seq.evaluateWithoutGeneratingNewTokens(prompt);
          await seq.clearHistory();
        }
        const t0 = performance.now();
        await seq.evaluateWithoutGeneratingNewTokens(prompt);
        const ms = performance.now() - t0;
        if (seq.nextTokenIndex !== spec.nPrompt) throw new Error(`pp: the sequence holds ${seq.nextTokenIndex} tokens, not ${spec.nPrompt}`);
        figures[`pp${spec.nPrompt}`] = (spec.nPrompt / ms) * 1000;
        detail.pp = { wallMs: ms, context: contextInfo(ctx) };
      } finally {
        await ctx.dispose();
      }
    }

    // tg: nGen single-token evaluations from an empty context after a one-token warm-up.
    {
      const ctx = await model.createContext({ ...ctxOptions, contextSize: spec.nGen + 1 });
      try {
        const seq = ctx.getSequence();
        if (spec.warmup) {
          await seq.evaluateWithoutGeneratingNewTokens(ids.slice(0, 1));
          await seq.clearHistory();
        }
        const t0 = performance.now();
        for (let i = 0; i < spec.nGen; i++) await seq.evaluateWithoutGeneratingNewTokens(ids.slice(i, i + 1));
        const ms = performance.now() - t0;
        if (seq.nextTokenIndex !== spec.nGen) throw new Error(`tg: the sequence holds ${seq.nextTokenIndex} tokens, not ${spec.nGen}`);
        figures[`tg${spec.nGen}`] = (spec.nGen / ms) * 1000;
        detail.tg = { wallMs: ms, context: contextInfo(ctx) };
      } finally {
        await ctx.dispose();
      }
    }

    // generate: LlamaCompletion on a fresh sequence, greedy, no repeat penalty (llamem's default is none).
    // LlamaCompletion puts BOS in front of token input when the vocabulary wants one, so it then gets
    // nPrompt - 1 ids and the prompt is nPrompt tokens, as for llamem.
    {
      const ctx = await model.createContext({ ...ctxOptions, contextSize: spec.nPrompt + spec.nGen + 8 });
      const seq = ctx.getSequence();
      const completion = new nlc.LlamaCompletion({ contextSequence: seq });
      try {
        const vt = model.vocabularyType;
        const bos = vt === "rwkv" || vt === "ugm" ? null : vt === "wpm" || model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
        const input = bos == null ? prompt : prompt.slice(0, spec.nPrompt - 1);
        let firstText = 0;
        let firstToken = 0;
        let generated = 0;
        const t0 = performance.now();
        const res = await completion.generateCompletionWithMeta(input, {
          maxTokens: spec.nGen, temperature: 0, repeatPenalty: false,
          onToken: (tokens) => {
            if (firstToken === 0) firstToken = performance.now();
            generated += tokens.length;
          },
          onTextChunk: (text) => {
            if (firstText === 0 && text.length > 0) firstText = performance.now();
          },
        });
        const tEnd = performance.now();
        const genMs = firstToken > 0 ? tEnd - firstToken : 0;
        figures[`generate_tg${spec.nGen}`] = genMs > 0 && generated > 1 ? ((generated - 1) / genMs) * 1000 : 0;
        figures[`ttft${spec.nPrompt}`] = (firstText || firstToken || tEnd) - t0;
        detail.generate = {
          wallMs: tEnd - t0,
          promptTokens: input.length + (bos == null ? 0 : 1),
          generatedTokens: generated,
          stopReason: res.metadata?.stopReason,
          timeToFirstTokenMs: firstToken > 0 ? firstToken - t0 : null,
          timeToFirstTextMs: firstText > 0 ? firstText - t0 : null,
          generatedTokensPerSecond: figures[`generate_tg${spec.nGen}`],
          tokensInContext: seq.nextTokenIndex,
          context: contextInfo(ctx),
        };
      } finally {
        completion.dispose();
        await ctx.dispose();
      }
    }
    detail.model = { description: model.typeDescription, size: model.size, trainContextSize: model.trainContextSize, vocabSize };
  } finally {
    await model.dispose();
    await llama.dispose();
  }
  detail.selfMaxRssKb = process.resourceUsage().maxRSS;
  process.stdout.write(`${JSON.stringify({ figures, detail })}\n`);
}

// ---------------------------------------------------------------------------------------------
// Contenders. prepare(settings) returns build facts (or throws: the contender is skipped);
// command(job) gives the child process to run for one repetition; parse(stdout) returns
// { figures, detail }. Peak RSS is measured around the process by the runner, the same way for all.

const CONTENDERS = [
  {
    id: "llamem",
    label: "llamem",
    description: "this package (dist/ + the built addon), in a Node child process",
    /** Ratios to these contenders too, besides the one to the baseline. */
    compareTo: ["node-llama-cpp"],
    prepare() {
      if (!existsSync(join(distLib, "index.js"))) throw new Error("dist/lib/index.js is missing: run `npx tsc -p tsconfig.json`");
      const stale = staleDist();
      if (stale.length > 0) log(`bench: warning: dist/ is older than ${stale.join(", ")}; run \`npx tsc -p tsconfig.json\` for current results`);
      return addonFacts();
    },
    command(job) {
      return { cmd: process.execPath, args: [selfScript, "--child", JSON.stringify(childSpec(job))] };
    },
    parse(stdout) {
      return lastJsonLine(stdout, "the llamem child");
    },
  },
  {
    id: "llama-bench",
    label: "llama-bench",
    baseline: true,
    description: "llama.cpp's tools/llama-bench built from the vendored source with the addon's CPU flags (scripts/build-llama-tools.mjs)",
    bin: null,
    async prepare() {
      const { buildLlamaBench, toolsBuildFlags, toolsBuildDir } = await import("./build-llama-tools.mjs");
      log("bench: building llama-bench (build-tools/; a no-op when up to date)");
      this.bin = buildLlamaBench();
      return {
        binary: relative(root, this.bin),
        version: commandOutput(this.bin, ["--version"]),
        cmakeCache: toolsBuildFlags(),
        compileFlags: compileFlags(toolsBuildDir),
      };
    },
    command(job) {
      // One process runs both tests, each in its own context as llama-bench always does:
      // `-p 512 -n 128` is exactly the pp512 test of `-p 512 -n 0` and the tg128 test of `-p 0 -n 128`.
      return {
        cmd: this.bin,
        args: [
          "-m", job.modelPath, "-p", String(N_PROMPT), "-n", String(N_GEN), "-o", "json", "-r", "1",
          "-t", String(job.threads), "-b", String(BATCH), "-ub", String(UBATCH), "-fa", job.flashAttention,
          "-ctk", KV_TYPE, "-ctv", KV_TYPE, "-lm", "mmap",
        ],
      };
    },
    parse(stdout) {
      const tests = JSON.parse(stdout);
      const figures = {};
      const detail = { tests: [] };
      for (const t of tests) {
        if (t.n_prompt > 0 && t.n_gen === 0 && t.n_depth === 0) figures[`pp${t.n_prompt}`] = t.avg_ts;
        if (t.n_prompt === 0 && t.n_gen > 0 && t.n_depth === 0) figures[`tg${t.n_gen}`] = t.avg_ts;
        detail.tests.push({ n_prompt: t.n_prompt, n_gen: t.n_gen, avg_ns: t.avg_ns, avg_ts: t.avg_ts, n_threads: t.n_threads, flash_attn: t.flash_attn });
      }
      const first = tests[0] ?? {};
      detail.cpuInfo = first.cpu_info;
      detail.backends = first.backends;
      detail.modelType = first.model_type;
      return { figures, detail };
    },
  },
  {
    id: "node-llama-cpp",
    label: "node-llama-cpp",
    description: `node-llama-cpp ${NLC_VERSION} with its prebuilt CPU binary from the npm registry, installed on demand into ` +
      "bench/work/node-llama-cpp/ (never a dependency of llamem), in a Node child process",
    async prepare() {
      const plat = nlcPlatformPackage();
      if (!plat) throw new Error(`node-llama-cpp ${NLC_VERSION} has no CPU-only prebuilt binary for ${process.platform}-${process.arch}`);
      const pkg = `@node-llama-cpp/${plat}`;
      const pkgDir = join(nlcDir, "node_modules", ...pkg.split("/"));
      const version = (dir) => {
        try {
          return JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).version;
        } catch {
          return null;
        }
      };
      if (version(join(nlcDir, "node_modules", "node-llama-cpp")) !== NLC_VERSION || version(pkgDir) !== NLC_VERSION) {
        nlcInstall(pkg);
        if (version(join(nlcDir, "node_modules", "node-llama-cpp")) !== NLC_VERSION) throw new Error(`npm did not install node-llama-cpp@${NLC_VERSION}`);
        if (version(pkgDir) !== NLC_VERSION) throw new Error(`npm did not install its prebuilt binary package ${pkg}@${NLC_VERSION}`);
      }
      // Load the prebuilt binary once in a child: a binary that cannot run here skips the contender.
      const r = spawnSync(process.execPath, [selfScript, "--nlc-probe"], { cwd: root, encoding: "utf8", timeout: 300000, stdio: ["ignore", "pipe", "pipe"] });
      if (r.error || r.status !== 0) {
        const said = /^nlc-probe-error: (.*)$/m.exec(`${r.stderr}`)?.[1];
        const why = r.error ? r.error.message : said ?? `exit ${r.status ?? r.signal}: ${`${r.stderr}`.trim().split("\n").slice(-4).join(" / ") || "no message"}`;
        throw new Error(`its prebuilt binary (${pkg}@${NLC_VERSION}) does not load on this machine (${why})`);
      }
      const facts = lastJsonLine(r.stdout, "the node-llama-cpp probe");
      // The binaries are in bins/ or bins/<platform>/ (linux-x64: bins/linux-x64/).
      const binsDir = [join(pkgDir, "bins"), join(pkgDir, "bins", plat)].find((d) => existsSync(join(d, "llama-addon.node")));
      let buildMetadata;
      try {
        buildMetadata = JSON.parse(readFileSync(join(binsDir, "_nlcBuildMetadata.json"), "utf8")).buildOptions;
      } catch {
        // another layout; the probe's facts still say what loaded
      }
      return {
        package: `node-llama-cpp@${facts.moduleVersion}`,
        prebuiltPackage: `${pkg}@${version(pkgDir)}`,
        binary: relative(root, binsDir ? join(binsDir, "llama-addon.node") : pkgDir),
        ...facts,
        buildMetadata,
        note: "a prebuilt binary from the npm registry: its compile flags are not on this machine; ggml picks the CPU backend " +
          `variant at run time${facts.cpuBackends?.length ? `: ${facts.cpuBackends.join(", ")}` : ""}`,
      };
    },
    command(job) {
      return { cmd: process.execPath, args: [selfScript, "--nlc-child", JSON.stringify(childSpec(job))] };
    },
    parse(stdout) {
      return lastJsonLine(stdout, "the node-llama-cpp child");
    },
  },
];

/** The workload a Node child (llamem, node-llama-cpp) gets for one repetition. */
function childSpec(job) {
  return {
    model: job.modelPath, threads: job.threads, flashAttention: job.flashAttention,
    nPrompt: N_PROMPT, nGen: N_GEN, batch: BATCH, ubatch: UBATCH, warmup: true,
  };
}

function lastJsonLine(stdout, who) {
  const line = stdout.trim().split("\n").filter((l) => l.startsWith("{")).pop();
  if (!line) throw new Error(`${who} printed no JSON`);
  return JSON.parse(line);
}

/** node-llama-cpp's package of prebuilt CPU binaries for this platform (see its getLlama: gpu false). */
function nlcPlatformPackage() {
  const { platform, arch } = process;
  if (platform === "linux") return { x64: "linux-x64", arm64: "linux-arm64", arm: "linux-armv7l", riscv64: "linux-riscv64" }[arch];
  if (platform === "darwin") return arch === "x64" ? "mac-x64" : undefined; // Apple silicon: only a Metal build is prebuilt
  if (platform === "win32") return { x64: "win-x64", arm64: "win-arm64" }[arch];
  return undefined;
}

/**
 * Installs node-llama-cpp and its prebuilt CPU binary package with npm into the scratch folder.
 * --ignore-scripts: its postinstall would try to download or build llama.cpp. --omit=optional
 * leaves out the other optional binary packages (CUDA, Vulkan: hundreds of MB); the CPU one is
 * named explicitly instead.
 */
function nlcInstall(pkg) {
  mkdirSync(nlcDir, { recursive: true });
  writeFileSync(join(nlcDir, "package.json"), `${JSON.stringify({ private: true, type: "module" })}\n`);
  const args = [
    "install", "--prefix", nlcDir, "--no-save", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=optional",
    `node-llama-cpp@${NLC_VERSION}`, `${pkg}@${NLC_VERSION}`,
  ];
  log(`bench: installing node-llama-cpp@${NLC_VERSION} and ${pkg} into ${relative(root, nlcDir)}/ (npm ${args.join(" ")}; once)`);
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const r = spawnSync(npm, args, { cwd: nlcDir, stdio: ["ignore", 2, 2], shell: process.platform === "win32", timeout: 600000 });
  if (r.error) throw new Error(`cannot run npm: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`npm install failed (exit ${r.status ?? r.signal}); its output is above`);
}

// ---------------------------------------------------------------------------------------------
// Build facts.

function staleDist() {
  const out = [];
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) {
        const js = join(root, "dist", relative(root, p)).replace(/\.ts$/, ".js");
        if (!existsSync(js) || statSync(js).mtimeMs < statSync(p).mtimeMs) out.push(relative(root, p));
      }
    }
  };
  walk(join(root, "lib"));
  return out;
}

/** The addon the llamem child will load, and the flags it was built with. */
function addonFacts() {
  let binary = process.env.LLAMEM_BINARY ?? null;
  if (!binary) {
    try {
      binary = createRequire(join(root, "package.json"))("node-gyp-build").resolve(root);
    } catch (err) {
      throw new Error(`no llamem addon can be loaded (${err.message.split("\n")[0]}); run \`npm run build:addon\``);
    }
  }
  const buildDir = resolve(dirname(binary), "..");
  const facts = { binary: relative(root, binary), builtAt: statSync(binary).mtime.toISOString() };
  if (existsSync(join(buildDir, "CMakeCache.txt"))) {
    facts.cmakeCache = cmakeCacheFlags(join(buildDir, "CMakeCache.txt"));
    facts.compileFlags = compileFlags(buildDir);
  } else {
    facts.note = "a prebuilt binary: its build flags are not on this machine";
  }
  return facts;
}

/** Code-generation flags of a few representative translation units, from compile_commands.json. */
function compileFlags(buildDir) {
  const file = join(buildDir, "compile_commands.json");
  if (!existsSync(file)) return undefined;
  const units = ["ggml-cpu/ggml-cpu.c", "ggml-cpu/ggml-cpu.cpp", "ggml-cpu/repack.cpp", "src/llama-context.cpp"];
  const out = {};
  try {
    const cc = JSON.parse(readFileSync(file, "utf8"));
    for (const u of units) {
      const e = cc.find((x) => x.file.endsWith(`/${u}`));
      if (!e) continue;
      const words = (e.command ?? (e.arguments ?? []).join(" ")).split(/\s+/);
      out[u] = words.filter((w) => /^-(m\S+|O\S*|f\S+|std=\S+|g\d?|DNDEBUG|DGGML_USE_\S+)$/.test(w)).join(" ");
    }
  } catch {
    return undefined;
  }
  return out;
}

function machineInfo() {
  let cpuModel = os.cpus()[0]?.model?.trim() || "unknown CPU";
  let flags = [];
  const cores = new Set();
  try {
    let physical = "";
    for (const line of readFileSync("/proc/cpuinfo", "utf8").split("\n")) {
      const i = line.indexOf(":");
      if (i < 0) continue;
      const k = line.slice(0, i).trim();
      const v = line.slice(i + 1).trim();
      if (k === "model name") cpuModel = v;
      if (k === "physical id") physical = v;
      if (k === "core id") cores.add(`${physical}/${v}`);
      if (k === "flags" && flags.length === 0) flags = v.split(/\s+/);
    }
  } catch {
    // not Linux
  }
  const interesting = ["avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimddp"];
  let llamaCpp = {};
  try {
    const m = JSON.parse(readFileSync(join(root, "vendor", "llama.cpp.json"), "utf8"));
    llamaCpp = { commit: m.commit, date: m.date, source: `${m.package}@${m.version}` };
  } catch {
    // no manifest
  }
  const gitHead = tryRun("git", ["rev-parse", "HEAD"], { cwd: root });
  const dirty = tryRun("git", ["status", "--porcelain", "--untracked-files=no"], { cwd: root });
  return {
    hostname: os.hostname(),
    cpuModel,
    logicalCpus: os.availableParallelism(),
    physicalCores: cores.size || null,
    cpuFlags: flags.filter((f) => interesting.includes(f)),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    llamaCpp,
    llamem: { commit: gitHead, dirty: dirty === null ? null : dirty.length > 0 },
  };
}

// ---------------------------------------------------------------------------------------------
// Running one child process with its peak RSS.

let rssMethod;

/** How peak RSS is measured, the same way for every contender. */
function pickRssMethod() {
  if (rssMethod) return rssMethod;
  const probe = spawnSync("/usr/bin/time", ["-f", "%M", "true"], { stdio: ["ignore", "ignore", "pipe"] });
  if (probe.status === 0 && /^\d+\s*$/m.test(probe.stderr.toString())) rssMethod = "/usr/bin/time (ru_maxrss of the child)";
  else if (existsSync("/proc/self/status")) rssMethod = "/proc/<pid>/status VmHWM, polled";
  else rssMethod = "none";
  return rssMethod;
}

function runMeasured(cmd, args) {
  const method = pickRssMethod();
  let tmp = null;
  let timeFile = null;
  if (method.startsWith("/usr/bin/time")) {
    tmp = mkdtempSync(join(os.tmpdir(), "llamem-bench-"));
    timeFile = join(tmp, "time");
    args = ["-f", "%M", "-o", timeFile, "--", cmd, ...args];
    cmd = "/usr/bin/time";
  }
  return new Promise((resolvePromise) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    const out = [];
    const err = [];
    child.stdout.on("data", (b) => out.push(b));
    child.stderr.on("data", (b) => err.push(b));
    let hwmKb = null;
    let poll = null;
    if (method.startsWith("/proc")) {
      const read = () => {
        try {
          const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
          if (m) hwmKb = Math.max(hwmKb ?? 0, Number(m[1]));
        } catch {
          // exited
        }
      };
      poll = setInterval(read, 20);
    }
    const finish = (code, signal, spawnError) => {
      if (poll) clearInterval(poll);
      let peakRssKb = hwmKb;
      if (timeFile) {
        try {
          const lines = readFileSync(timeFile, "utf8").trim().split("\n");
          const n = Number(lines[lines.length - 1]);
          peakRssKb = Number.isFinite(n) && n > 0 ? n : null;
        } catch {
          peakRssKb = null;
        }
        rmSync(tmp, { recursive: true, force: true });
      }
      resolvePromise({
        code, signal, spawnError,
        wallMs: performance.now() - t0,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        peakRssKb,
      });
    };
    child.on("error", (e) => finish(null, null, e));
    child.on("close", (code, signal) => finish(code, signal, null));
  });
}

// ---------------------------------------------------------------------------------------------
// Models.

async function prepareModels(list, workDir) {
  const synth = await import(pathToFileURL(join(distLib, "gguf", "synthetic.js")).href);
  const models = [];
  for (const item of list) {
    if (item.endsWith(".gguf")) {
      const path = resolve(item);
      if (!existsSync(path)) fail(`model file not found: ${item}`);
      models.push({ id: item, label: item.split("/").pop().replace(/\.gguf$/, ""), path, synthetic: null });
      continue;
    }
    const [preset, type, extra] = item.split(":");
    if (extra !== undefined || !(preset in synth.SYNTHETIC_PRESETS) || !["f32", "f16", "q8_0", "q4_0"].includes(type)) {
      fail(`bad model '${item}': use preset:type with preset ${Object.keys(synth.SYNTHETIC_PRESETS).join("|")} and type f32|f16|q8_0|q4_0, or a .gguf path`);
    }
    const path = join(workDir, `synthetic-${preset}-${type}-seed${MODEL_SEED}-v${synth.SYNTHETIC_FORMAT_VERSION}.gguf`);
    if (!existsSync(path)) {
      log(`bench: writing the synthetic ${preset} ${type} model to ${relative(root, path)} (once; cached)`);
      let shown = -1;
      await synth.writeSyntheticModel(path, {
        preset, type, seed: MODEL_SEED,
        onProgress: (f) => {
          const pct = Math.floor(f * 10) * 10;
          if (pct !== shown) {
            shown = pct;
            process.stderr.write(`  ${pct}%${pct === 100 ? "\n" : ""}`);
          }
        },
      });
    }
    models.push({ id: item, label: `${preset} ${type}`, path, synthetic: { preset, type, seed: MODEL_SEED, formatVersion: synth.SYNTHETIC_FORMAT_VERSION } });
  }
  for (const m of models) m.fileSize = statSync(m.path).size;
  return models;
}

/** Reads a file through once so no contender pays for the first read from disk. */
function warmPageCache(path) {
  const fd = openSync(path, "r");
  const buf = Buffer.allocUnsafe(16 << 20);
  try {
    while (readSync(fd, buf, 0, buf.length, null) > 0) {
      // discard
    }
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Summaries and reports.

/**
 * The ratios to report: every contender against the baseline, then the pairs contenders name in
 * `compareTo`, where both ran. Each is { id: "of/to", of, to, label }; the ratio is of / to.
 */
function comparisonsFor(contenders) {
  const out = [];
  const add = (of, to) => {
    if (!of || !to || of === to || out.some((p) => p.of === of.id && p.to === to.id)) return;
    out.push({ id: `${of.id}/${to.id}`, of: of.id, to: to.id, label: `${of.label} / ${to.label}` });
  };
  const baseline = contenders.find((c) => c.baseline);
  if (baseline) for (const c of contenders) if (c !== baseline) add(c, baseline);
  for (const c of contenders) for (const id of c.compareTo ?? []) add(c, contenders.find((x) => x.id === id));
  return out;
}

/** A report's comparisons; reports before `comparisons` (schema 1) keyed ratios by contender id, against the baseline. */
function reportComparisons(report) {
  if (Array.isArray(report.comparisons)) return report.comparisons;
  const baseline = report.contenders.find((c) => c.baseline);
  if (!baseline) return [];
  return report.contenders.filter((c) => c !== baseline).map((c) => ({ id: c.id, of: c.id, to: baseline.id, label: `${c.label} / ${baseline.label}` }));
}

function summarize(models, contenders, comparisons, samples) {
  return models.map((m) => {
    const figures = {};
    for (const f of FIGURES) {
      const per = {};
      for (const c of contenders) {
        const xs = samples.filter((s) => s.ok && s.model === m.id && s.contender === c.id && Number.isFinite(s.figures[f.id])).map((s) => s.figures[f.id]);
        if (xs.length > 0) per[c.id] = { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length, samples: xs };
      }
      if (Object.keys(per).length === 0) continue;
      const ratios = {};
      for (const p of comparisons) {
        if (per[p.of] && per[p.to] && per[p.to].median !== 0) ratios[p.id] = per[p.of].median / per[p.to].median;
      }
      figures[f.id] = { ...per, ratios };
    }
    return { model: m.id, label: m.label, file: relative(root, m.path), fileSize: m.fileSize, synthetic: m.synthetic, figures };
  });
}

function markdown(report) {
  const { contenders, settings, machine } = report;
  const comparisons = reportComparisons(report);
  const ratioCols = comparisons.map((p) => p.label);
  const lines = [];
  lines.push(`# llamem benchmark: ${report.date}, ${machine.cpuModel}`);
  lines.push("");
  lines.push(
    `${machine.physicalCores ?? "?"} cores / ${machine.logicalCpus} CPUs, ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}, ` +
    `llama.cpp ${(machine.llamaCpp.commit ?? "?").slice(0, 10)}.`,
  );
  lines.push(
    `Threads ${settings.threads}, batch ${settings.batch}, ubatch ${settings.ubatch}, flash attention ${settings.flashAttention}, KV ${settings.kvType}, ` +
    `one warm-up each; median of ${settings.reps} repetition${settings.reps === 1 ? "" : "s"}, each in its own process, interleaved` +
    `${settings.quick ? " (--quick: a smoke test, not a measurement)" : ""}.`,
  );
  lines.push(`Cells: median (min–max). Ratios: median over median (${ratioCols.join(", ") || "none"}); ↑ higher is better, ↓ lower is better.`);
  if (report.loadAverage) {
    lines.push(`Load average before / after: ${report.loadAverage.before.map((x) => x.toFixed(2)).join(" ")} / ${report.loadAverage.after.map((x) => x.toFixed(2)).join(" ")}.`);
  }
  lines.push("");
  lines.push(`| model | figure | ${contenders.map((c) => c.label).join(" | ")}${ratioCols.length ? ` | ${ratioCols.join(" | ")}` : ""} |`);
  lines.push(`|---|---|${contenders.map(() => "---:").join("|")}${ratioCols.length ? `|${ratioCols.map(() => "---:").join("|")}` : ""}|`);
  for (const r of report.results) {
    for (const f of report.figures) {
      const row = r.figures[f.id];
      if (!row) continue;
      const cells = contenders.map((c) => {
        const v = row[c.id];
        if (!v) return "–";
        return v.n > 1 ? `${fmt(v.median, f.digits)} (${fmt(v.min, f.digits)}–${fmt(v.max, f.digits)})` : fmt(v.median, f.digits);
      });
      const ratios = comparisons.map((p) => (row.ratios[p.id] === undefined ? "–" : `**${row.ratios[p.id].toFixed(2)}**`));
      lines.push(`| ${r.label} | ${f.label} (${f.unit}) ${f.better === "higher" ? "↑" : "↓"} | ${cells.join(" | ")}${ratios.length ? ` | ${ratios.join(" | ")}` : ""} |`);
    }
  }
  lines.push("");
  lines.push("Builds (code-generation flags of ggml-cpu/ggml-cpu.cpp):");
  for (const c of contenders) {
    const flags = c.build?.compileFlags?.["ggml-cpu/ggml-cpu.cpp"];
    lines.push(`- ${c.label}: ${c.build?.binary ?? "?"}${flags ? `, \`${flags}\`` : c.build?.note ? ` (${c.build.note})` : ""}`);
  }
  const failed = report.samples.filter((s) => !s.ok);
  if (failed.length > 0) {
    lines.push("");
    lines.push(`**${failed.length} run${failed.length === 1 ? "" : "s"} failed:** ${failed.map((s) => `${s.contender} on ${s.model} rep ${s.rep}: ${s.error}`).join("; ")}`);
  }
  for (const s of report.skipped) {
    lines.push("");
    lines.push(`**${s.contender} skipped:** ${s.error}`);
  }
  return `${lines.join("\n")}\n`;
}

function xml(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function ratioLabel(v) {
  if (v >= 100) return `${Math.round(v)}×`;
  if (v >= 10) return `${v.toFixed(1)}×`;
  if (v >= 0.01) return `${v.toFixed(2)}×`;
  return `${v.toExponential(0)}×`;
}

function tickLabel(t) {
  return `${t >= 0.1 ? Number(t.toFixed(2)) : Number(t.toPrecision(1))}×`;
}

/**
 * A diverging bar chart of every ratio on a log scale centred on 1.00 (so 0.5× and 2× are the
 * same length), hand-written SVG.
 */
function svgChart(report) {
  const comparisons = reportComparisons(report);
  const [first, ...rest] = report.contenders;
  const title = rest.length > 0 ? `${first.label} vs ${rest.map((c) => c.label).join(" and ")}` : first?.label ?? "";
  const colors = ["#2f6fb0", "#d9822b", "#3a9a5b", "#a04ca8", "#b03a3a"];
  const rows = [];
  for (const r of report.results) {
    for (const f of report.figures) {
      const row = r.figures[f.id];
      if (!row || Object.keys(row.ratios).length === 0) continue;
      rows.push({ label: `${r.label} · ${f.label}`, hint: f.better === "higher" ? "higher is better" : "lower is better", ratios: row.ratios });
    }
  }
  // Row labels are right-aligned before the bars: about 6.6 px per character at 12 px.
  const labelW = Math.round(Math.min(360, Math.max(200, ...rows.map((r) => r.label.length * 6.6))));
  const W = labelW + 560;
  const x0 = labelW + 16;
  const x1 = W - 70;
  const barH = 16;
  const barGap = 3;
  const groupGap = 16;
  const perLegendRow = 3;
  const legendRows = Math.max(1, Math.ceil(comparisons.length / perLegendRow));
  const top = 82 + (legendRows - 1) * 16;
  const logs = rows.flatMap((r) => Object.values(r.ratios)).filter((v) => v > 0).map((v) => Math.abs(Math.log2(v)));
  const span = Math.max(Math.log2(1.25), ...logs) * 1.08;
  const mid = (x0 + x1) / 2;
  const x = (v) => mid + (Math.max(-span, Math.min(span, Math.log2(Math.max(v, 1e-9)))) / span) * ((x1 - x0) / 2);
  let ticks;
  if (span <= 1.2) {
    ticks = [0.5, 2 / 3, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2].filter((t) => Math.abs(Math.log2(t)) <= span);
  } else {
    ticks = [0.001, 0.01, 0.1, 0.25, 0.5, 1, 2, 4, 10, 100, 1000].filter((t) => Math.abs(Math.log2(t)) <= span);
  }
  // Keep tick labels apart: walk outwards from 1.00× and drop ticks too close to the last kept one.
  const spaced = [1];
  for (const side of [ticks.filter((t) => t > 1), ticks.filter((t) => t < 1).reverse()]) {
    let last = 1;
    for (const t of side) {
      if (Math.abs(x(t) - x(last)) >= 44) {
        spaced.push(t);
        last = t;
      }
    }
  }
  ticks = spaced;
  const groupH = Math.max(1, comparisons.length) * (barH + barGap) - barGap;
  const bottom = top + rows.length * (groupH + groupGap);
  const H = bottom + 52;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="12" y="22" font-size="15" font-weight="600">${xml(`${title}: ${report.machine.cpuModel}, ${report.settings.threads} threads`)}</text>`);
  out.push(`<text x="12" y="40" fill="#555">${xml(`${report.date} · ratio of medians over ${report.settings.reps} rep${report.settings.reps === 1 ? "" : "s"} · bars: A / B as in the legend · log scale${report.settings.quick ? " · --quick smoke test" : ""}`)}</text>`);
  out.push(`<text x="12" y="56" fill="#555">${xml("Throughput (t/s): right of 1.00× is faster. Memory (RSS): left of 1.00× is smaller.")}</text>`);
  comparisons.forEach((p, i) => {
    const lx = 12 + (i % perLegendRow) * 240;
    const ly = 64 + Math.floor(i / perLegendRow) * 16;
    out.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${colors[i % colors.length]}"/>`);
    out.push(`<text x="${lx + 18}" y="${ly + 10}">${xml(p.label)}</text>`);
  });
  for (const t of ticks) {
    const gx = x(t).toFixed(1);
    const one = Math.abs(t - 1) < 1e-9;
    out.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${bottom}" stroke="${one ? "#333" : "#e3e3e3"}" stroke-width="${one ? 1.5 : 1}"${one ? ' stroke-dasharray="4 3"' : ""}/>`);
    out.push(`<text x="${gx}" y="${bottom + 16}" text-anchor="middle" fill="#555">${xml(tickLabel(t))}</text>`);
  }
  rows.forEach((r, gi) => {
    const gy = top + gi * (groupH + groupGap);
    out.push(`<text x="${labelW}" y="${gy + groupH / 2 - 1}" text-anchor="end">${xml(r.label)}</text>`);
    out.push(`<text x="${labelW}" y="${gy + groupH / 2 + 12}" text-anchor="end" fill="#888" font-size="10">${xml(r.hint)}</text>`);
    comparisons.forEach((p, i) => {
      const v = r.ratios[p.id];
      if (v === undefined || !(v > 0)) return;
      const y = gy + i * (barH + barGap);
      const a = Math.min(x(1), x(v));
      const w = Math.max(1, Math.abs(x(v) - x(1)));
      out.push(`<rect x="${a.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${colors[i % colors.length]}"/>`);
      const lx = v >= 1 ? x(v) + 4 : x(1) + 4;
      out.push(`<text x="${lx.toFixed(1)}" y="${y + barH - 4}">${xml(ratioLabel(v))}</text>`);
    });
  });
  out.push(`<text x="${mid}" y="${bottom + 38}" text-anchor="middle" fill="#555">${xml("median of A / median of B")}</text>`);
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

// ---------------------------------------------------------------------------------------------
// Main.

const HELP = `usage: node scripts/bench.mjs [options]     (npm run bench -- [options])

Benchmarks llamem against llama.cpp's llama-bench (built from the same vendored source with
the same CPU flags into build-tools/; the baseline) and node-llama-cpp ${NLC_VERSION} (its prebuilt
CPU binary, installed with npm into bench/work/node-llama-cpp/ on first use), interleaved, one
process per repetition.

  --models LIST       comma-separated preset:type (presets tiny|1b|8b, types f32|f16|q8_0|q4_0)
                      or .gguf paths (default ${DEFAULT_MODELS}); synthetic models are cached in bench/work/
  --reps N            repetitions per contender and model (default ${DEFAULT_REPS}; medians are reported)
  --threads N         threads for every contender (default: llamem's defaultThreads(), physical cores)
  --flash-attn MODE   auto|on|off for every contender (default auto)
  --contenders LIST   subset of ${CONTENDERS.map((c) => c.id).join(",")} (default: all)
  --quick             smoke test: ${QUICK_MODELS}, 1 repetition (results named *-quick)
  --out DIR           where the .json, .md and .svg go (default bench/results)
  --render FILE.json  only re-render the .md and .svg of an earlier result
  --no-depth          skip the chat turn deep in the context (bench-depth.mjs, after the contenders)
  --no-summary        skip the long chat with the model summarizer (<file>-summary.md)
  --no-prebuild       skip the prebuild against the native build (bench-prebuild.mjs; only with prebuilds/)
  --no-recall         skip the recall benchmark (<file>-recall.md)
  --no-draft          skip speculative decoding against plain decoding (bench-draft.mjs)
  --no-loop           skip generation with and without the native loop against llama-bench (bench-loop.mjs)
  -h, --help          this text
`;

async function main() {
  const { values } = parseArgs({
    options: {
      models: { type: "string" },
      reps: { type: "string" },
      threads: { type: "string" },
      "flash-attn": { type: "string", default: "auto" },
      contenders: { type: "string" },
      quick: { type: "boolean", default: false },
      out: { type: "string", default: join(root, "bench", "results") },
      child: { type: "string" },
      "nlc-child": { type: "string" },
      "nlc-probe": { type: "boolean", default: false },
      render: { type: "string" },
      recall: { type: "boolean", default: true },
      draft: { type: "boolean", default: true },
      loop: { type: "boolean", default: true },
      depth: { type: "boolean", default: true },
      summary: { type: "boolean", default: true },
      prebuild: { type: "boolean", default: true },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.child) {
    await llamemChild(JSON.parse(values.child));
    return;
  }
  if (values["nlc-child"]) {
    await nodeLlamaCppChild(JSON.parse(values["nlc-child"]));
    return;
  }
  if (values["nlc-probe"]) {
    try {
      await nlcProbe();
    } catch (err) {
      // one line for prepare() to quote
      process.stderr.write(`nlc-probe-error: ${err?.name ?? "Error"}: ${String(err?.message ?? err).trim().replace(/\s*\n\s*/g, " ")}\n`);
      process.exit(1);
    }
    return;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (values.render) {
    const file = resolve(values.render);
    const report = JSON.parse(readFileSync(file, "utf8"));
    const base = file.replace(/\.json$/, "");
    const md = markdown(report);
    writeFileSync(`${base}.md`, md);
    writeFileSync(`${base}.svg`, svgChart(report));
    process.stdout.write(md);
    log(`bench: rendered ${relative(root, base)}.{md,svg}`);
    return;
  }

  const quick = values.quick;
  const reps = Number(values.reps ?? (quick ? 1 : DEFAULT_REPS));
  if (!Number.isInteger(reps) || reps < 1) fail("--reps must be a positive integer");
  const flashAttention = values["flash-attn"];
  if (!["auto", "on", "off"].includes(flashAttention)) fail("--flash-attn must be auto, on or off");
  if (!existsSync(join(distLib, "index.js"))) fail("dist/lib/index.js is missing: run `npx tsc -p tsconfig.json` first");
  const { defaultThreads } = await import(pathToFileURL(join(distLib, "index.js")).href);
  const threads = Number(values.threads ?? defaultThreads());
  if (!Number.isInteger(threads) || threads < 1) fail("--threads must be a positive integer");
  const wanted = (values.contenders ?? CONTENDERS.map((c) => c.id).join(",")).split(",").map((s) => s.trim()).filter(Boolean);
  for (const w of wanted) if (!CONTENDERS.some((c) => c.id === w)) fail(`unknown contender '${w}' (have ${CONTENDERS.map((c) => c.id).join(", ")})`);
  const modelList = (values.models ?? (quick ? QUICK_MODELS : DEFAULT_MODELS)).split(",").map((s) => s.trim()).filter(Boolean);
  if (modelList.length === 0) fail("--models is empty");
  const outDir = resolve(values.out);

  const t0 = Date.now();
  const machine = machineInfo();
  const loadBefore = os.loadavg();
  if (loadBefore[0] > 0.5) log(`bench: warning: load average ${loadBefore[0].toFixed(2)}: other work on this machine will distort the figures`);

  // Models first (a bad --models fails fast), then contenders (a build may take minutes).
  const workDir = join(root, "bench", "work");
  mkdirSync(workDir, { recursive: true });
  const models = await prepareModels(modelList, workDir);
  const builds = {};
  const skipped = [];
  const contenders = [];
  for (const c of CONTENDERS.filter((x) => wanted.includes(x.id))) {
    try {
      builds[c.id] = await c.prepare();
      contenders.push(c);
    } catch (err) {
      log(`bench: ${c.id} cannot run: ${err.message}`);
      skipped.push({ contender: c.id, error: err.message });
    }
  }
  if (contenders.length === 0) fail("no contender can run");
  const comparisons = comparisonsFor(contenders);
  for (const m of models) warmPageCache(m.path);

  const settings = {
    models: models.map((m) => m.id), reps, threads, flashAttention, batch: BATCH, ubatch: UBATCH, kvType: KV_TYPE,
    nPrompt: N_PROMPT, nGen: N_GEN, warmup: "one per test, as llama-bench does (pp: a full prompt run; tg: one token)",
    order: "for each repetition, for each model, every contender in turn",
    peakRss: pickRssMethod(), quick,
    promptTokens: `fixed pseudo-random ids in [${TOKEN_LO}, ${TOKEN_HI}) (mulberry32, seed ${TOKEN_SEED}), the same for llamem and node-llama-cpp; llama-bench draws its own random ids`,
  };
  log(`bench: ${contenders.map((c) => c.id).join(" vs ")} on ${models.map((m) => m.id).join(", ")}; ${reps} rep(s), ${threads} threads, flash attention ${flashAttention}; peak RSS via ${settings.peakRss}`);

  const samples = [];
  const tRuns = Date.now();
  for (let rep = 1; rep <= reps; rep++) {
    if (rep === 2) {
      const perRep = (Date.now() - tRuns) / 1000;
      log(`bench: one repetition takes about ${Math.round(perRep)} s; ${Math.round(perRep * (reps - 1))} s to go`);
    }
    for (const m of models) {
      for (const c of contenders) {
        const job = { modelPath: m.path, threads, flashAttention };
        const { cmd, args } = c.command(job);
        const sample = { rep, model: m.id, contender: c.id, ok: false, loadAverage1: os.loadavg()[0], startedAt: new Date().toISOString() };
        const r = await runMeasured(cmd, args);
        sample.wallMs = r.wallMs;
        sample.peakRssKb = r.peakRssKb;
        try {
          if (r.spawnError) throw new Error(`cannot start ${cmd}: ${r.spawnError.message}`);
          if (r.code !== 0) throw new Error(`exit ${r.code ?? r.signal}: ${r.stderr.trim().split("\n").slice(-3).join(" / ")}`);
          const parsed = c.parse(r.stdout);
          sample.figures = { ...parsed.figures };
          if (r.peakRssKb) sample.figures.peak_rss = r.peakRssKb / 1024;
          sample.detail = parsed.detail;
          sample.ok = true;
        } catch (err) {
          sample.error = err.message;
          sample.figures = {};
        }
        samples.push(sample);
        const shown = FIGURES.filter((f) => Number.isFinite(sample.figures[f.id])).map((f) => `${f.id} ${fmt(sample.figures[f.id], f.digits)}`).join(", ");
        log(`[rep ${rep}/${reps}] ${m.id} ${c.id}: ${sample.ok ? shown : `FAILED: ${sample.error}`} (${(r.wallMs / 1000).toFixed(1)} s)`);
      }
    }
  }

  const date = localDate();
  const report = {
    schema: 2,
    date,
    generatedAt: new Date().toISOString(),
    durationS: Math.round((Date.now() - t0) / 1000),
    settings,
    machine,
    loadAverage: { before: loadBefore, after: os.loadavg() },
    contenders: contenders.map((c) => ({ id: c.id, label: c.label, baseline: Boolean(c.baseline), description: c.description, build: builds[c.id] })),
    skipped,
    figures: FIGURES,
    comparisons,
    results: summarize(models, contenders, comparisons, samples),
    samples,
  };

  mkdirSync(outDir, { recursive: true });
  const base = join(outDir, `${date}-${slug(machine.cpuModel) || slug(machine.hostname) || "machine"}${quick ? "-quick" : ""}`);
  const md = markdown(report);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${base}.md`, md);
  writeFileSync(`${base}.svg`, svgChart(report));
  process.stdout.write(`\n${md}\n`);
  log(`bench: wrote ${relative(root, base)}.{json,md,svg} in ${report.durationS} s`);
  if (samples.some((s) => !s.ok) || skipped.length > 0) process.exitCode = 1;
  followUps(base, outDir, quick, threads, values);
}

/**
 * The benchmarks that follow the contenders, each in a child of its own, in this order: a chat
 * turn deep in the context (bench-depth.mjs, against llama-bench -d), a long chat with the model
 * writing summaries (bench-summary.mjs, with and without a pause between turns), the prebuilt
 * binary against the native build (bench-prebuild.mjs, when prebuilds/ has one), recall
 * (bench-recall.mjs), speculative decoding against plain decoding (bench-draft.mjs), and generation
 * with and without the native loop against llama-bench (bench-loop.mjs). --quick runs each short; --no-<name> skips one.
 */
function followUps(base, outDir, quick, threads, values) {
  const t = ["--threads", String(threads)];
  const runs = [
    { name: "depth", script: "bench-depth.mjs", args: [...t, "--out", outDir, ...(quick ? ["--model", "tiny:q4_0", "--depths", "0,1024", "--reps", "1"] : [])] },
    { name: "summary", script: "bench-summary.mjs", args: [...t, ...(quick ? ["--turns", "20", "--pause-ms", "500"] : [])], file: `${base}-summary.md` },
    { name: "prebuild", script: "bench-prebuild.mjs", args: [...t, "--out", outDir, ...(quick ? ["--reps", "1"] : [])], needs: join(root, "prebuilds") },
    { name: "recall", script: "bench-recall.mjs", args: [...t, ...(quick ? ["--facts", "50", "--turns", "300", "--cap", "100"] : [])], file: `${base}-recall.md` },
    { name: "draft", script: "bench-draft.mjs", args: [...t, "--out", outDir, ...(quick ? ["--model", "tiny:q4_0", "--gen", "32", "--reps", "1"] : [])] },
    { name: "loop", script: "bench-loop.mjs", args: [...t, "--out", outDir, ...(quick ? ["--model", "tiny:q4_0", "--gen", "32", "--reps", "1"] : [])] },
  ];
  for (const run of runs) {
    if (!values[run.name]) continue;
    if (run.needs && !existsSync(run.needs)) {
      log(`bench: ${run.name}: skipped, no ${relative(root, run.needs)}/ (npm run prebuild writes it)`);
      continue;
    }
    log(`bench: ${run.name} (scripts/${run.script})`);
    const r = spawnSync(process.execPath, [join(root, "scripts", run.script), ...run.args], { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 26 });
    if (r.status !== 0) {
      log(`bench: the ${run.name} benchmark failed (exit ${r.status ?? r.signal})`);
      process.exitCode = 1;
      continue;
    }
    if (run.file) {
      writeFileSync(run.file, r.stdout);
      log(`bench: wrote ${relative(root, run.file)}`);
    }
    process.stdout.write(`\n${r.stdout}\n`);
  }
}

main().catch((err) => {
  log(`bench: ${err?.stack ?? err}`);
  process.exit(1);
});
