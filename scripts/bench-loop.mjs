#!/usr/bin/env node
// The last per-token cost (issue 11, part 4): generation through the library's text API with the
// engine's native loop (each sampled token fed back on the native side; through complete(), whose
// steps reach JS together, and streamed through generate(), each step as it ends) and without it
// (one round trip through the JS thread per token: DEFAULTS.generationLoop.maxSteps = 1), against
// llama.cpp's llama-bench tg at the same depth, with flash attention off and on. Every run is a
// child process of its own, interleaved over the repetitions.
//
//   npm run bench:loop -- [--model 1b:q4_0] [--gen 128] [--prompt 16] [--reps 3] [--threads N]
//                         [--gpu-layers N] [--llama-bench PATH] [--sampling auto,cpu,backend]
//                         [--out bench/results]
//
// --sampling lists the backendSampling settings complete() runs with: auto (the default: on where
// the output layer is on a GPU), cpu (false) and backend (true, on the CPU too).
// On a GPU build, --gpu-layers offloads the model (llama-bench gets the same -ngl); --llama-bench
// names a llama-bench built from the same tree (LLAMEM_BUILD_TOOLS=1, scripts/bench-gpu.sh).
//
// Run it on a quiet machine: ggml's threads spin, so any other CPU work slows generation.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { benchModel, gpuDescription, median } from "./bench-models.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const self = fileURLToPath(import.meta.url);
const distLib = join(root, "dist", "lib");
const defaultLlamaBench = join(root, "build-tools", "bin", "llama-bench");


/** One llamem run, in a child: warm up, then a greedy generation of `gen` tokens after `prompt` tokens. */
async function child(spec) {
  const lib = await import(pathToFileURL(join(distLib, "index.js")).href);
  const { DEFAULTS } = await import(pathToFileURL(join(distLib, "options.js")).href);
  DEFAULTS.generationLoop.maxSteps = spec.loop ? spec.maxSteps : 1;
  const model = await lib.loadModel(spec.path, { gpuLayers: spec.gpuLayers });
  const ctx = await model.createContext({ contextSize: spec.prompt + spec.gen + 16, threads: spec.threads, flashAttention: spec.fa });
  const prompt = Array.from({ length: spec.prompt }, (_, i) => 100 + ((i * 7919) % 20000));
  // Greedy, as llama-bench decodes: the synthetic model's greedy continuation of this prompt never
  // reaches end-of-generation (each run reports how many tokens it made). With banEos, a logit
  // bias bans it, which adds a stage to the sampler (on the GPU: two uploads per token).
  const o = { maxTokens: spec.gen, temperature: 0, ...(spec.banEos ? { logitBias: [{ token: model.info.eos, bias: -100 }] } : {}), backendSampling: spec.backendSampling ?? "auto" };
  await ctx.complete(prompt, { ...o, maxTokens: 8 });
  const seq = ctx.sequence(0);
  await seq.clear();
  let r;
  if (spec.stream) {
    // A caller that takes each piece as it comes: every step reaches JS as it ends.
    for await (const _piece of seq.generate(prompt, o)) {
      // consumed one by one
    }
    r = seq.lastGeneration;
  } else {
    r = await ctx.complete(prompt, o);
  }
  process.stdout.write(`${JSON.stringify({ tg: r.generatedTokensPerSecond, generated: r.generatedTokens })}\n`);
  await ctx.dispose();
  await model.dispose();
}


async function main() {
  const { values } = parseArgs({
    options: {
      child: { type: "string" },
      model: { type: "string", default: "1b:q4_0" },
      gen: { type: "string", default: "128" },
      prompt: { type: "string", default: "16" },
      reps: { type: "string", default: "3" },
      threads: { type: "string" },
      "gpu-layers": { type: "string", default: "0" },
      "llama-bench": { type: "string", default: defaultLlamaBench },
      sampling: { type: "string", default: "auto" },
      out: { type: "string", default: join(root, "bench", "results") },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.child) return child(JSON.parse(values.child));
  if (values.help) {
    process.stdout.write("usage: node scripts/bench-loop.mjs [--model preset:type|file.gguf] [--gen N] [--prompt N] [--reps N] [--threads N] [--gpu-layers N] [--llama-bench PATH] [--sampling auto,cpu,backend] [--out DIR]\n");
    return;
  }
  const lib = await import(pathToFileURL(join(distLib, "index.js")).href);
  const threads = Number(values.threads ?? lib.defaultThreads());
  const path = await benchModel(values.model);
  const gen = Number(values.gen);
  const promptTokens = Number(values.prompt);
  const maxSteps = lib.DEFAULTS.generationLoop.maxSteps;
  const gpuLayers = Number(values["gpu-layers"]);
  const llamaBench = resolve(values["llama-bench"]);
  const run = (spec) => JSON.parse(execFileSync(process.execPath, [self, "--child", JSON.stringify(spec)], { stdio: ["ignore", "pipe", "inherit"] }).toString().trim().split("\n").pop());
  // llama-bench's tg at the depth of the prompt: the same decodes, with no sampling and no text.
  const bench = (fa) => {
    if (!existsSync(llamaBench)) return undefined;
    const out = execFileSync(llamaBench, ["-m", path, "-p", "0", "-n", String(gen), "-d", String(promptTokens), "-t", String(threads), "-ngl", String(gpuLayers), "-fa", fa === "on" ? "1" : "0", "-r", "1", "-o", "json"], { stdio: ["ignore", "pipe", "ignore"] });
    return JSON.parse(out.toString())[0].avg_ts;
  };
  const configs = [];
  for (const fa of ["off", "on"]) {
    for (const sampling of values.sampling.split(",")) {
      const backendSampling = { auto: "auto", cpu: false, backend: true }[sampling];
      if (backendSampling === undefined) throw new Error(`--sampling: unknown setting ${sampling} (auto, cpu, backend)`);
      const label = sampling === "auto" ? "" : sampling === "cpu" ? ", CPU sampling" : ", backend sampling";
      configs.push({ name: `llamem, native loop, complete()${label}, FA ${fa}`, fa, run: () => run({ path, threads, gpuLayers, gen, prompt: promptTokens, fa, loop: true, maxSteps, backendSampling }) });
      if (sampling === "auto") {
        configs.push({ name: `llamem, native loop, complete(), EOS banned by a logit bias, FA ${fa}`, fa, run: () => run({ path, threads, gpuLayers, gen, prompt: promptTokens, fa, loop: true, maxSteps, backendSampling, banEos: true }) });
      }
    }
    configs.push({ name: `llamem, native loop, streamed, FA ${fa}`, fa, run: () => run({ path, threads, gpuLayers, gen, prompt: promptTokens, fa, loop: true, maxSteps, stream: true }) });
    configs.push({ name: `llamem, a JS round trip per token, FA ${fa}`, fa, run: () => run({ path, threads, gpuLayers, gen, prompt: promptTokens, fa, loop: false }) });
    configs.push({ name: `llama-bench, FA ${fa}`, fa, run: () => { const tg = bench(fa); return tg === undefined ? undefined : { tg, generated: gen }; } });
  }
  const samples = Object.fromEntries(configs.map((c) => [c.name, []]));
  const reps = Number(values.reps);
  const early = [];
  for (let rep = 0; rep < reps; rep++) {
    for (const c of configs) {
      const r = c.run();
      if (r === undefined) continue;
      // A generation that stopped early ran at a smaller depth: it would not compare, so it is left out and named.
      if (r.generated !== gen) {
        early.push(`${c.name}: ${r.generated} tokens`);
        process.stderr.write(`loop: ${c.name}: stopped after ${r.generated} tokens, left out\n`);
        continue;
      }
      samples[c.name].push(r.tg);
      process.stderr.write(`loop: ${c.name}: ${r.tg.toFixed(1)} tok/s\n`);
    }
    process.stderr.write(`loop: rep ${rep + 1}/${reps} done\n`);
  }
  const tg = (name) => (samples[name].length ? median(samples[name]) : undefined);
  const rows = configs.map((c) => {
    const t = tg(c.name);
    const ref = tg(`llama-bench, FA ${c.fa}`);
    return { name: c.name, tg: t, vsLlamaBench: t !== undefined && ref !== undefined ? t / ref : undefined, samples: samples[c.name] };
  });
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const gpu = gpuDescription(lib, gpuLayers);
  const where = gpu ? `${gpu}, ${gpuLayers} GPU layers` : `${threads} threads, ${cpu}`;
  const report = { date: new Date().toISOString(), machine: { cpu, cores: os.cpus().length, gpu }, model: values.model, threads, gpuLayers, gen, promptTokens, maxSteps, reps, rows, early };
  const fmt = (x, d = 1) => (x === undefined ? "–" : x.toFixed(d));
  const lines = [
    `# The last per-token cost (${values.model}, ${where})`,
    "",
    `Greedy generation of ${gen} tokens after a ${promptTokens}-token prompt (sampling and detokenizing included): through \`ctx.complete()\``,
    `with the native loop (up to ${maxSteps} decodes per native call, the steps reaching JS together), streamed through \`generate()\``,
    `with the loop (each step reaching JS as it ends), and with one round trip through the JS thread per token,`,
    `against llama-bench \`-p 0 -n ${gen} -d ${promptTokens}\` (decodes only). tg in tokens per second, median of ${reps} runs, each in a process of its own, interleaved.`,
    "",
    "| configuration | tg (tok/s) | × llama-bench (same flash attention) |",
    "|---|---|---|",
    ...rows.map((r) => `| ${r.name} | ${fmt(r.tg)} | ${r.vsLlamaBench === undefined ? "–" : fmt(r.vsLlamaBench, 3) + "×"} |`),
    "",
    ...(early.length ? ["Runs left out because end-of-generation stopped them early: " + early.join("; ") + ".", ""] : []),
  ];
  mkdirSync(values.out, { recursive: true });
  const stem = join(values.out, `${report.date.slice(0, 10)}-loop-${values.model.replace(/[^a-z0-9]+/gi, "-")}${gpu ? "-gpu" : ""}`);
  writeFileSync(`${stem}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${stem}.md`, lines.join("\n"));
  process.stdout.write(lines.join("\n"));
}

await main();
