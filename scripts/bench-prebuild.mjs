#!/usr/bin/env node
// `npm run bench:prebuild`: the prebuilt binary (prebuilds/<platform>-<arch>/, what an install
// with scripts off runs) against the native source build (build/Release/llamem.node,
// -march=native) on this machine: pp and tg of `llamem bench` on the same model, each
// repetition in its own child process, the two binaries interleaved (native, prebuild, native,
// ...), medians over the repetitions, the ratio prebuild / native. Run it on a quiet machine:
// ggml's threads spin, and a busy core slows generation many times over.
//
//   npm run bench:prebuild -- [--model /tmp/1b-q4_0.gguf] [--reps 5] [--pp 512] [--tg 128]
//                             [--threads N] [--native PATH.node] [--prebuild PATH.node] [--out bench/results]
//                             [--also NAME=PATH.node ...]   (more binaries in the same interleaving, e.g.
//                                                            a static build with one variant's flags)
//
// Without --model it writes the 1.1B synthetic Q4_0 model (TinyLlama shape) to bench/work/.
// Output: bench/results/<date>-prebuild-<machine>.{json,md}.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { prebuildPlan } from "./prebuild.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const cli = join(root, "dist", "lib", "cli", "index.js");

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    reps: { type: "string", default: "5" },
    pp: { type: "string", default: "512" },
    tg: { type: "string", default: "128" },
    threads: { type: "string" },
    native: { type: "string", default: join(root, "build", "Release", "llamem.node") },
    prebuild: { type: "string" },
    out: { type: "string", default: join(root, "bench", "results") },
    also: { type: "string", multiple: true, default: [] },
  },
});

function log(msg) {
  process.stderr.write(`bench:prebuild: ${msg}\n`);
}

function fail(msg) {
  log(msg);
  process.exit(1);
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The CPU, named for the results: model name, logical CPUs, the SIMD levels ggml cares about. */
function machine() {
  const cpu = os.cpus()[0]?.model?.replace(/\s+/g, " ").trim() ?? "unknown CPU";
  let flags = [];
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("flags")) ?? "";
    const have = new Set(line.split(":")[1]?.trim().split(/\s+/) ?? []);
    flags = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8"].filter((f) => have.has(f));
  } catch {
    // Not Linux: the model name has to do.
  }
  return { cpu, logicalCpus: os.cpus().length, flags, platform: `${process.platform}-${process.arch}`, node: process.version };
}

function slug(s) {
  return s.toLowerCase().replace(/\(r\)|\(tm\)|processor|cpu/g, "").replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40);
}

function runCli(binary, args) {
  const env = { ...process.env, LLAMEM_BINARY: binary };
  delete env.LLAMEM_LOG;
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, env, encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.status !== 0) fail(`llamem ${args.join(" ")} with ${binary} failed (exit ${r.status}):\n${r.stderr}`);
  return r.stdout;
}

function cpuBackendOf(binary) {
  const devices = JSON.parse(runCli(binary, ["devices", "--json"]));
  const cpu = devices.find((d) => d.type === "cpu") ?? {};
  return { variant: cpu.cpuVariant ?? "unknown", features: cpu.cpuFeatures ?? [] };
}

async function main() {
  if (!existsSync(cli)) fail("dist/ is missing: run `npm run build:ts` first");
  const reps = Number(values.reps);
  const nativePath = resolve(values.native);
  const plan = prebuildPlan();
  const prebuildPath = resolve(values.prebuild ?? join(plan.outDir, plan.nodeFile));
  if (!existsSync(nativePath)) fail(`no native build at ${nativePath}: run \`npm run build:addon\``);
  if (!existsSync(prebuildPath)) fail(`no prebuild at ${prebuildPath}: run \`npm run prebuild\``);

  let model = values.model;
  if (!model) {
    // The same file `npm run bench` writes and reuses.
    const { SYNTHETIC_FORMAT_VERSION } = await import(pathToFileURL(join(root, "dist", "lib", "gguf", "synthetic.js")).href);
    model = join(root, "bench", "work", `synthetic-1b-q4_0-seed1-v${SYNTHETIC_FORMAT_VERSION}.gguf`);
    if (!existsSync(model)) {
      mkdirSync(dirname(model), { recursive: true });
      log(`writing the 1.1B Q4_0 synthetic model to ${relative(root, model)}`);
      runCli(nativePath, ["make-model", model, "--preset", "1b", "--type", "q4_0", "--seed", "1", "--quiet"]);
    }
  }

  const contenders = [
    { id: "native", binary: nativePath },
    { id: "prebuild", binary: prebuildPath },
    ...values.also.map((spec) => {
      const [id, path] = spec.split("=");
      if (!id || !path || !existsSync(path)) fail(`--also ${spec}: expected NAME=PATH of an existing .node`);
      return { id, binary: resolve(path) };
    }),
  ];
  for (const c of contenders) {
    c.cpuBackend = cpuBackendOf(c.binary);
    c.samples = { pp: [], tg: [] };
    log(`${c.id}: ${relative(root, c.binary)} (CPU backend: ${c.cpuBackend.variant})`);
  }

  const benchArgs = ["bench", "-m", model, "--reps", "1", "--pp", values.pp, "--tg", values.tg, "--json", "--quiet"];
  if (values.threads) benchArgs.push("--threads", values.threads);
  const load = [os.loadavg()[0]];
  let threads = null;
  for (let rep = 1; rep <= reps; rep++) {
    // Interleaved, and the order alternates, so a drift in the machine's state hits both alike.
    const order = rep % 2 === 1 ? contenders : [...contenders].reverse();
    for (const c of order) {
      const j = JSON.parse(runCli(c.binary, benchArgs).trim().split("\n").pop());
      threads = j.threads;
      for (const t of j.tests) c.samples[t.kind].push(t.median);
      log(`rep ${rep}/${reps} ${c.id}: ${j.tests.map((t) => `${t.name} ${t.median.toFixed(1)} t/s`).join(", ")}`);
    }
    load.push(os.loadavg()[0]);
  }

  const [native, prebuild] = contenders;
  const fig = (c, k) => median(c.samples[k]);
  const ratioTo = (c) => ({ pp: fig(c, "pp") / fig(native, "pp"), tg: fig(c, "tg") / fig(native, "tg") });
  // Other work only ever slows a run down: on a busy machine the best run is the better estimate.
  const best = (c, k) => Math.max(...c.samples[k]);
  const bestRatioTo = (c) => ({ pp: best(c, "pp") / best(native, "pp"), tg: best(c, "tg") / best(native, "tg") });
  const result = {
    date: new Date().toISOString(),
    machine: machine(),
    model: relative(root, model).startsWith("..") ? model : relative(root, model),
    workload: { pp: Number(values.pp), tg: Number(values.tg), threads, reps },
    loadAverage1m: { min: Math.min(...load), max: Math.max(...load) },
    contenders: contenders.map((c) => ({
      id: c.id,
      binary: relative(root, c.binary),
      cpuBackend: c.cpuBackend,
      pp: { median: fig(c, "pp"), best: best(c, "pp"), samples: c.samples.pp },
      tg: { median: fig(c, "tg"), best: best(c, "tg"), samples: c.samples.tg },
      vsNative: ratioTo(c),
      bestVsNative: bestRatioTo(c),
    })),
    ratio: ratioTo(prebuild),
    bestRatio: bestRatioTo(prebuild),
    goal: "prebuild >= 0.95x native on pp and tg",
  };
  // The benchmark's own threads count in the load average; anything well beyond them is other work.
  const quiet = result.loadAverage1m.max < (threads ?? 1) + 0.75;
  const md = [
    `# Prebuild vs native build: ${result.machine.cpu}`,
    "",
    `${result.date.slice(0, 10)}, ${result.machine.platform}, ${result.machine.logicalCpus} logical CPUs (${result.machine.flags.join(", ") || "flags unknown"}), Node ${result.machine.node}.`,
    `Model ${result.model}; pp${result.workload.pp} and tg${result.workload.tg} from \`llamem bench --reps 1\`, ${threads} threads,`,
    `${reps} repetitions per binary, each in its own process, interleaved; medians.`,
    `1-minute load average during the run: ${result.loadAverage1m.min.toFixed(2)}–${result.loadAverage1m.max.toFixed(2)}` +
      (quiet ? "." : " — **the machine was not quiet; re-measure before quoting these figures**."),
    "",
    `| binary | CPU backend | pp${result.workload.pp} t/s | tg${result.workload.tg} t/s | pp vs native | tg vs native | best pp / tg t/s | best vs native |`,
    "|---|---|---:|---:|---:|---:|---:|---:|",
    ...result.contenders.map(
      (c) =>
        `| ${c.id} (\`${c.binary}\`) | ${c.cpuBackend.variant} | ${c.pp.median.toFixed(1)} | ${c.tg.median.toFixed(1)} | ` +
        `${c.vsNative.pp.toFixed(2)}× | ${c.vsNative.tg.toFixed(2)}× | ${c.pp.best.toFixed(1)} / ${c.tg.best.toFixed(1)} | ` +
        `${c.bestVsNative.pp.toFixed(2)}× / ${c.bestVsNative.tg.toFixed(2)}× |`,
    ),
    "",
    `**prebuild / native (medians): pp ${result.ratio.pp.toFixed(2)}×, tg ${result.ratio.tg.toFixed(2)}×** ` +
      `(best runs: pp ${result.bestRatio.pp.toFixed(2)}×, tg ${result.bestRatio.tg.toFixed(2)}×).`,
    "",
    `Goal: ${result.goal}.`,
    "",
  ].join("\n");
  mkdirSync(values.out, { recursive: true });
  const base = join(values.out, `${result.date.slice(0, 10)}-prebuild-${slug(result.machine.cpu)}`);
  writeFileSync(`${base}.json`, JSON.stringify(result, null, 2) + "\n");
  writeFileSync(`${base}.md`, md);
  process.stdout.write(md);
  log(`wrote ${relative(root, base)}.{json,md}`);
}

await main();
