#!/usr/bin/env node
// A chat turn deep in the context: a new message of --prompt tokens (default 61) evaluated after
// --depth tokens already in the KV cache, then --gen tokens (default 16) generated, timed as the
// user feels it (wall time of the call). llamem runs it with its default options and with flash
// attention forced off and on; llama.cpp's llama-bench (built from the same source by
// scripts/build-llama-tools.mjs) runs pp<prompt> and tg<gen> at the same depth (-d) with -fa 0/1,
// and its turn time is prompt/pp + gen/tg. Every run is a child process of its own, interleaved.
//
//   npm run bench:depth -- [--model 1b:q4_0] [--depths 0,1024,4096,16384] [--reps 3] [--threads N]
//                          [--prompt 61] [--gen 16] [--no-llama-bench] [--out bench/results]
//
// Run it on a quiet machine: ggml's threads spin, so any other CPU work slows generation.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const self = fileURLToPath(import.meta.url);
const distLib = join(root, "dist", "lib");
const MODES = ["default", "off", "on"];

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Fixed pseudo-random token ids, the same for every run. */
function tokens(n, vocab, seed) {
  const out = new Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = 100 + (x % Math.max(1, Math.min(vocab, 30000) - 100));
  }
  return out;
}

/** The llamem side, in a child: prefill `depth` tokens, then time one turn. */
async function child(spec) {
  const lib = await import(pathToFileURL(join(distLib, "index.js")).href);
  const model = await lib.loadModel(spec.path);
  const vocab = model.info.vocabSize;
  const history = tokens(spec.depth, vocab, 1);
  const message = tokens(spec.prompt, vocab, 2);
  const options = { contextSize: spec.depth + spec.prompt + spec.gen + 64, threads: spec.threads, batchSize: 512, ubatchSize: 512 };
  if (spec.mode !== "default") options.flashAttention = spec.mode;
  const ctx = await model.createContext(options);
  if (history.length > 0) await ctx.evaluate(history);
  const t0 = performance.now();
  const r = await ctx.complete([...history, ...message], { maxTokens: spec.gen, temperature: 0 });
  const turnMs = performance.now() - t0;
  await model.dispose();
  process.stdout.write(`${JSON.stringify({ turnMs, pp: r.promptTokensPerSecond, tg: r.generatedTokensPerSecond, generated: r.generatedTokens })}\n`);
}

function llamaBench(bin, spec, fa) {
  const out = execFileSync(bin, [
    "-m", spec.path, "-p", String(spec.prompt), "-n", String(spec.gen), "-d", String(spec.depth), "-fa", String(fa),
    "-t", String(spec.threads), "-b", "512", "-ub", "512", "-r", "1", "-o", "json",
  ], { stdio: ["ignore", "pipe", "ignore"], maxBuffer: 1 << 26 }).toString("utf8");
  const rows = JSON.parse(out);
  const pp = rows.find((r) => r.n_prompt > 0)?.avg_ts;
  const tg = rows.find((r) => r.n_gen > 0)?.avg_ts;
  return { pp, tg, turnMs: (spec.prompt / pp + spec.gen / tg) * 1000 };
}

async function main() {
  const { values } = parseArgs({
    options: {
      child: { type: "string" },
      model: { type: "string", default: "1b:q4_0" },
      depths: { type: "string", default: "0,1024,4096,16384" },
      reps: { type: "string", default: "3" },
      threads: { type: "string" },
      prompt: { type: "string", default: "61" },
      gen: { type: "string", default: "16" },
      "no-llama-bench": { type: "boolean", default: false },
      out: { type: "string", default: join(root, "bench", "results") },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.child) return child(JSON.parse(values.child));
  if (values.help) {
    process.stdout.write(`usage: node scripts/bench-depth.mjs [--model preset:type|file.gguf] [--depths 0,1024,...] [--reps N] [--threads N] [--prompt N] [--gen N] [--no-llama-bench] [--out DIR]\n`);
    return;
  }
  const lib = await import(pathToFileURL(join(distLib, "index.js")).href);
  const threads = Number(values.threads ?? lib.defaultThreads());
  let path = values.model;
  if (!path.endsWith(".gguf")) {
    const [preset, type] = path.split(":");
    const synth = await import(pathToFileURL(join(distLib, "gguf", "synthetic.js")).href);
    const dir = join(root, "bench", "work");
    mkdirSync(dir, { recursive: true });
    path = join(dir, `synthetic-${preset}-${type}-seed1-v${synth.SYNTHETIC_FORMAT_VERSION}.gguf`);
    if (!existsSync(path)) await synth.writeSyntheticModel(path, { preset, type, seed: 1 });
  }
  let bench;
  if (!values["no-llama-bench"]) {
    const r = spawnSync(process.execPath, [join(root, "scripts", "build-llama-tools.mjs")], { stdio: ["ignore", "pipe", "inherit"] });
    if (r.status !== 0) throw new Error("could not build llama-bench (scripts/build-llama-tools.mjs)");
    bench = r.stdout.toString().trim().split("\n").pop();
  }
  const depths = values.depths.split(",").map(Number);
  const reps = Number(values.reps);
  const rows = [];
  for (const depth of depths) {
    const spec = { path, depth, threads, prompt: Number(values.prompt), gen: Number(values.gen) };
    const samples = Object.fromEntries([...MODES.map((m) => [m, []]), ...(bench ? [["lb-fa0", []], ["lb-fa1", []]] : [])]);
    for (let rep = 0; rep < reps; rep++) {
      for (const mode of MODES) {
        const out = execFileSync(process.execPath, [self, "--child", JSON.stringify({ ...spec, mode })], { stdio: ["ignore", "pipe", "inherit"] });
        samples[mode].push(JSON.parse(out.toString().trim().split("\n").pop()));
      }
      if (bench) {
        samples["lb-fa0"].push(llamaBench(bench, spec, 0));
        samples["lb-fa1"].push(llamaBench(bench, spec, 1));
      }
      process.stderr.write(`depth ${depth}: rep ${rep + 1}/${reps} done\n`);
    }
    const row = { depth };
    for (const [k, v] of Object.entries(samples)) {
      row[k] = { turnMs: median(v.map((s) => s.turnMs)), pp: median(v.map((s) => s.pp)), tg: median(v.map((s) => s.tg)) };
    }
    row.defaultVsBest = row.default.turnMs / Math.min(row.off.turnMs, row.on.turnMs);
    if (bench) row.defaultVsLlamaBenchBest = row.default.turnMs / Math.min(row["lb-fa0"].turnMs, row["lb-fa1"].turnMs);
    rows.push(row);
  }
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const report = { date: new Date().toISOString(), machine: { cpu, cores: os.cpus().length }, model: values.model, threads, prompt: Number(values.prompt), gen: Number(values.gen), reps, rows };
  const lines = [
    `# A chat turn deep in the context (${values.model}, ${threads} threads, ${cpu})`,
    "",
    `A message of ${report.prompt} tokens after *depth* tokens in the cache, then ${report.gen} generated tokens; turn time in ms (median of ${reps}).`,
    "llama-bench's turn is prompt/pp + gen/tg at the same depth.",
    "",
    `| depth | llamem default | llamem FA off | llamem FA on | default / best | ${bench ? "llama-bench FA off | llama-bench FA on | default / llama-bench best |" : ""}`,
    `|---|---|---|---|---|${bench ? "---|---|---|" : ""}`,
    ...rows.map((r) => `| ${r.depth} | ${r.default.turnMs.toFixed(0)} | ${r.off.turnMs.toFixed(0)} | ${r.on.turnMs.toFixed(0)} | ${r.defaultVsBest.toFixed(2)}× |` +
      (bench ? ` ${r["lb-fa0"].turnMs.toFixed(0)} | ${r["lb-fa1"].turnMs.toFixed(0)} | ${r.defaultVsLlamaBenchBest.toFixed(2)}× |` : "")),
    "",
  ];
  mkdirSync(values.out, { recursive: true });
  const stem = join(values.out, `${report.date.slice(0, 10)}-depth-${values.model.replace(/[^a-z0-9]+/gi, "-")}`);
  writeFileSync(`${stem}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${stem}.md`, lines.join("\n"));
  process.stdout.write(lines.join("\n"));
}

await main();
