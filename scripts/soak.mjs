#!/usr/bin/env node
// Soak test: many context create/dispose cycles and model load/dispose cycles in one process,
// measuring resident memory (RSS) after a warm-up. Memory must come back when objects are
// disposed, so RSS has to level off: a leak shows as growth proportional to the cycles.
//
//   node scripts/soak.mjs [--contexts 10000] [--context-warmup N] [--loads 200] [--load-warmup N]
//                         [--allocator leak-check|default] [--model FILE] [--json]
//                         [--max-context-growth MiB] [--max-load-growth MiB]
//
// Every 10th context generates a few tokens (decode, sampler, detokenizer in the loop). The
// report gives RSS at the end of warm-up and at the end, the growth, and the slope of a least
// squares fit over the post-warm-up samples (bytes per cycle). Exit 1 when a bound is exceeded.
//
// glibc's malloc makes RSS climb in steps that level off: each thread that allocates gets its own
// arena (loads and context creation run on libuv's pool threads, frees happen on the JS thread),
// and its mmap threshold rises after the first large free, so later 8 MB compute buffers come from
// a heap that is not given back. That looks like a leak and is not one. By default
// (--allocator leak-check) the script re-runs itself with MALLOC_ARENA_MAX=1 and
// MALLOC_MMAP_THRESHOLD_=131072 (and --expose-gc): freed native memory then goes back to the OS
// at once, and what remains is what is still referenced. --allocator default measures the process
// as users run it (expect a higher plateau). Needs dist/ and the native addon.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const lib = (name) => import(pathToFileURL(join(root, "dist", "lib", name)).href);
const MiB = 1024 * 1024;

function parseArgs(argv) {
  const o = {
    contexts: 10_000, contextWarmup: undefined, loads: 200, loadWarmup: undefined, allocator: "leak-check",
    model: undefined, json: false, maxContextGrowth: 8, maxLoadGrowth: 16, child: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    const num = (x) => {
      const n = Number(x);
      if (!Number.isFinite(n) || n < 0) throw new Error(`${a} needs a non-negative number, got ${x}`);
      return n;
    };
    switch (a) {
      case "--contexts": o.contexts = Math.floor(num(v())); break;
      case "--loads": o.loads = Math.floor(num(v())); break;
      case "--context-warmup": o.contextWarmup = Math.floor(num(v())); break;
      case "--load-warmup": o.loadWarmup = Math.floor(num(v())); break;
      case "--allocator": {
        o.allocator = v();
        if (o.allocator !== "leak-check" && o.allocator !== "default") throw new Error("--allocator must be leak-check or default");
        break;
      }
      case "--child-run": o.child = true; break;
      case "--help": case "-h": {
        const lines = readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1);
        process.stdout.write(`${lines.slice(0, lines.findIndex((l) => !l.startsWith("//"))).map((l) => l.replace(/^\/\/ ?/, "")).join("\n")}\n`);
        process.exit(0);
      }
      case "--model": o.model = resolve(v()); break;
      case "--json": o.json = true; break;
      case "--max-context-growth": o.maxContextGrowth = num(v()); break;
      case "--max-load-growth": o.maxLoadGrowth = num(v()); break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  return o;
}

const gc = globalThis.gc ?? (() => undefined);

/** RSS after letting the GC and finalizers run. */
async function settledRss() {
  for (let i = 0; i < 2; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return process.memoryUsage().rss;
}

/** Least-squares slope of y over x. */
function slope(points) {
  const n = points.length;
  if (n < 2) return 0;
  let sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (const [x, y] of points) {
    sx += x; sy += y; sxx += x * x; sxy += x * y;
  }
  const d = n * sxx - sx * sx;
  return d === 0 ? 0 : (n * sxy - sx * sy) / d;
}

async function phase(name, cycles, warmupCycles, step) {
  const warm = Math.max(1, Math.min(cycles, warmupCycles));
  const every = Math.max(1, Math.floor(cycles / 50));
  const samples = [];
  let rssWarm = 0;
  const rssBefore = await settledRss();
  const t0 = performance.now();
  for (let i = 0; i < cycles + warm; i++) {
    await step(i);
    if (i + 1 === warm) rssWarm = await settledRss();
    if (i + 1 > warm && ((i + 1 - warm) % every === 0 || i + 1 === cycles + warm)) samples.push([i + 1, await settledRss()]);
  }
  const rssEnd = await settledRss();
  const peak = Math.max(rssWarm, ...samples.map((s) => s[1]));
  return {
    name,
    cycles,
    warmupCycles: warm,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
    rssBeforeMiB: +(rssBefore / MiB).toFixed(1),
    rssAfterWarmupMiB: +(rssWarm / MiB).toFixed(1),
    rssEndMiB: +(rssEnd / MiB).toFixed(1),
    rssPeakMiB: +(peak / MiB).toFixed(1),
    growthMiB: +((rssEnd - rssWarm) / MiB).toFixed(2),
    slopeBytesPerCycle: Math.round(slope(samples)),
  };
}

async function defaultModel() {
  const { writeSyntheticModel } = await lib("gguf/synthetic.js");
  const dir = join(tmpdir(), "llamem-test-models");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "soak-tiny-f16-v1.gguf");
  // The tiny preset with llama-spm's full 32000-token vocabulary: a real tokenizer to load each time.
  if (!existsSync(path)) await writeSyntheticModel(path, { preset: "tiny", type: "f16", seed: 3 });
  return path;
}

/** Re-runs this script with --expose-gc (and glibc's tunables fixed for the leak-check allocator). */
function respawn(o) {
  const env = { ...process.env };
  if (o.allocator === "leak-check") {
    env.MALLOC_ARENA_MAX = "1";
    env.MALLOC_MMAP_THRESHOLD_ = "131072";
  }
  const r = spawnSync(process.execPath, ["--expose-gc", fileURLToPath(import.meta.url), ...process.argv.slice(2), "--child-run"], { stdio: "inherit", env });
  process.exit(r.status ?? 2);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (!o.child) return respawn(o);
  if (!existsSync(join(root, "dist", "lib", "index.js"))) throw new Error("dist/ is missing: run `npm run build:ts` first");
  const { loadModel } = await lib("index.js");
  const modelPath = o.model ?? (await defaultModel());
  // A context of over 8 MiB (mostly KV cache: flash attention, the CPU's default, keeps the compute
  // buffers small), so that one leaked context shows against the bounds.
  const ctxOptions = { contextSize: 32768, batchSize: 64, threads: 1 };

  // What one context costs, to put the bounds in perspective.
  const model = await loadModel(modelPath);
  const r0 = await settledRss();
  const probe = await model.createContext(ctxOptions);
  await probe.complete("Once upon a time", { maxTokens: 4, temperature: 0 });
  const oneContext = (await settledRss()) - r0;
  const mem = await probe.memory();
  await probe.dispose();

  const contexts = await phase("contexts", o.contexts, o.contextWarmup ?? Math.max(50, Math.floor(o.contexts / 10)), async (i) => {
    const ctx = await model.createContext(ctxOptions);
    if (i % 10 === 0) await ctx.complete("Once upon a time", { maxTokens: 4, temperature: 0.8, seed: i });
    await ctx.dispose();
  });
  await model.dispose();

  const loads = await phase("loads", o.loads, o.loadWarmup ?? Math.max(10, Math.floor(o.loads / 4)), async (i) => {
    const m = await loadModel(modelPath);
    await m.tokenize("Hello, world");
    const ctx = await m.createContext(ctxOptions);
    if (i % 2 === 0) await ctx.complete("Hi", { maxTokens: 2, temperature: 0 });
    // Alternate the dispose order: context first, or the model (which disposes its contexts).
    if (i % 3 === 0) await ctx.dispose();
    await m.dispose();
  });

  const report = {
    model: modelPath,
    contextKvAndComputeMiB: +((mem.kv + mem.compute) / MiB).toFixed(2),
    oneContextRssMiB: +(oneContext / MiB).toFixed(2),
    contexts,
    loads,
    allocator: o.allocator === "leak-check" ? "glibc, MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=131072" : "default",
    bounds: { contextGrowthMiB: o.maxContextGrowth, loadGrowthMiB: o.maxLoadGrowth },
    ok: contexts.growthMiB < o.maxContextGrowth && loads.growthMiB < o.maxLoadGrowth,
  };
  if (o.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    const line = (p) =>
      `${p.name}: ${p.warmupCycles} warm-up + ${p.cycles} measured cycles in ${p.seconds} s; RSS ${p.rssAfterWarmupMiB} MiB after warm-up -> ${p.rssEndMiB} MiB at the end (growth ${p.growthMiB} MiB, slope ${p.slopeBytesPerCycle} B/cycle, peak ${p.rssPeakMiB} MiB)`;
    process.stdout.write(`soak (${modelPath}, allocator: ${report.allocator}); one context holds ${report.contextKvAndComputeMiB} MiB of KV + compute buffers\n`);
    process.stdout.write(`${line(contexts)}\n${line(loads)}\n`);
    process.stdout.write(`bounds: contexts < ${o.maxContextGrowth} MiB, loads < ${o.maxLoadGrowth} MiB: ${report.ok ? "ok" : "EXCEEDED"}\n`);
  }
  process.exitCode = report.ok ? 0 : 1;
}

main().catch((err) => {
  process.stderr.write(`soak: ${err?.stack ?? err}\n`);
  process.exit(2);
});
