#!/usr/bin/env node
// Peak RSS and speed per load mode (mmap, none, auto) on synthetic models, each run in its own
// process: shows the double residency of repacked weights under mmap, and that "auto" avoids it.
// Also llama.cpp's dry-run estimate against the real breakdown, and KV bytes per token.
// Writes bench/results/<date>-load-modes[-<preset>].json.
//   npx tsc && node scripts/bench-load-modes.mjs [--types q4_0,q8_0,f16] [--preset 1b]
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const arg = (n, d) => (args.includes(n) ? args[args.indexOf(n) + 1] : d);

if (args[0] === "--child") {
  const [, path, mode] = args;
  const { loadModel, estimateMemory } = await import(join(root, "dist", "lib", "index.js"));
  const estimate = await estimateMemory(path, { contextSize: 512 });
  const t0 = performance.now();
  const model = await loadModel(path, { loadMode: mode });
  const loadMs = performance.now() - t0;
  const ctx = await model.createContext({ contextSize: 512 });
  const r = await ctx.complete("The memory of a long conversation", { maxTokens: 32, temperature: 0 });
  const mem = await ctx.memory();
  console.log(JSON.stringify({
    resolved: model.loadMode, loadMs, tg: r.generatedTokensPerSecond, pp: r.promptTokensPerSecond,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, weightsRows: mem.rows.map((x) => [x.bufferType, x.model]),
    estimate: { weights: estimate.weights, kv: estimate.kv, compute: estimate.compute },
    actual: { weights: mem.weights, kv: mem.kv, compute: mem.compute },
    kvBytesPerToken: mem.kv / mem.cells,
  }));
  await ctx.dispose();
  await model.dispose();
  process.exit(0);
}

const { writeSyntheticModel } = await import(join(root, "dist", "lib", "gguf", "synthetic.js"));
const preset = arg("--preset", "1b");
const types = arg("--types", "q4_0,q8_0,f16").split(",");
const modes = ["mmap", "none", "auto"];
const out = { date: new Date().toISOString(), preset, results: [] };
mkdirSync(join(root, "bench", "work"), { recursive: true });
for (const type of types) {
  const path = join(root, "bench", "work", `${preset}-${type}.gguf`);
  if (!existsSync(path)) await writeSyntheticModel(path, { preset, type, seed: 1 });
  execFileSync("cat", [path], { stdio: ["ignore", "ignore", "ignore"] }); // warm the page cache for every mode alike
  for (const mode of modes) {
    const res = JSON.parse(execFileSync(process.execPath, [fileURLToPath(import.meta.url), "--child", path, mode]).toString());
    out.results.push({ type, mode, ...res });
    const ratio = (res.estimate.weights + res.estimate.kv + res.estimate.compute) / (res.actual.weights + res.actual.kv + res.actual.compute);
    console.log(
      `${preset} ${type} ${mode.padEnd(5)} -> ${res.resolved.padEnd(5)} peak RSS ${(res.peakRssBytes / 2 ** 30).toFixed(2)} GiB ` +
        `(file ${(statSync(path).size / 2 ** 30).toFixed(2)} GiB), load ${res.loadMs.toFixed(0)} ms, tg ${res.tg.toFixed(1)} t/s, ` +
        `estimate/actual ${ratio.toFixed(3)}, KV ${res.kvBytesPerToken} B/token`,
    );
  }
}
mkdirSync(join(root, "bench", "results"), { recursive: true });
const suffix = preset === "1b" ? "" : `-${preset}`;
writeFileSync(join(root, "bench", "results", `${out.date.slice(0, 10)}-load-modes${suffix}.json`), `${JSON.stringify(out, null, 2)}\n`);
