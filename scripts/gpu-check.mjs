#!/usr/bin/env node
// Checks a GPU build of llamem on a real GPU and prints JSON figures:
// full offload, llama.cpp's breakdown vs nvidia-smi, VRAM back to baseline after dispose,
// estimate vs actual, `gpuLayers: "auto"` under a VRAM budget, KV cache types, and generation
// tokens/s per KV type at several depths.
//   LLAMEM_GPU=cuda npm run build:addon && npx tsc && node scripts/gpu-check.mjs [--model M] [--depths 0,8192,32768]
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const lib = await import(join(root, "dist", "lib", "index.js"));
const { writeSyntheticModel } = await import(join(root, "dist", "lib", "gguf", "synthetic.js"));

const args = process.argv.slice(2);
const arg = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const depths = arg("--depths", "0,8192,32768").split(",").map(Number);
const MiB = 1024 * 1024;

function vramUsed() {
  const out = execFileSync("nvidia-smi", ["--query-gpu=memory.used", "--format=csv,noheader,nounits"]).toString();
  return Number(out.trim().split("\n")[0]) * MiB;
}
const settle = () => new Promise((r) => setTimeout(r, 500));

async function ensureModel(preset, type) {
  const dir = join(root, "bench", "work");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${preset}-${type}.gguf`);
  if (!existsSync(path)) await writeSyntheticModel(path, { preset, type, seed: 1 });
  return path;
}

const report = { devices: lib.listDevices(), checks: {}, figures: [] };
const model1b = arg("--model", await ensureModel("1b", "q4_0"));

// 1. Full offload, breakdown vs nvidia-smi, VRAM back to baseline.
{
  await settle();
  const base = vramUsed();
  const model = await lib.loadModel(model1b, { gpuLayers: -1 });
  const ctx = await model.createContext({ contextSize: 8192 });
  await ctx.complete("Hello", { maxTokens: 16, temperature: 0 });
  const mem = await ctx.memory();
  const gpuRows = mem.rows.filter((r) => !r.host);
  const llamaGpu = gpuRows.reduce((s, r) => s + r.model + r.context + r.compute, 0);
  await settle();
  const smi = vramUsed() - base;
  const est = await lib.estimateMemory(model1b, { gpuLayers: -1, contextSize: 8192 });
  const estGpu = est.devices.filter((d) => !d.host).reduce((s, d) => s + d.total, 0);
  await ctx.dispose();
  await model.dispose();
  await settle();
  const after = vramUsed();
  report.checks.offload = {
    gpuRows, llamaGpuBytes: llamaGpu, nvidiaSmiDeltaBytes: smi, ratioSmiOverLlama: smi / llamaGpu,
    estimateGpuBytes: estGpu, ratioEstimateOverActual: estGpu / llamaGpu,
    baselineBytes: base, afterDisposeBytes: after, returnedToBaseline: Math.abs(after - base) <= 2 * MiB,
  };
}

// 2. gpuLayers "auto" under a VRAM budget smaller than the model.
{
  const full = await lib.estimateMemory(model1b, { gpuLayers: -1, contextSize: 4096 });
  const gpuTotal = full.devices.filter((d) => !d.host).reduce((s, d) => s + d.total, 0);
  const fit = await lib.fitModel(model1b, { gpuLayers: "auto", contextSize: 4096, maxVram: Math.floor(gpuTotal * 0.6) });
  report.checks.autoFit = { budget: Math.floor(gpuTotal * 0.6), fullGpuBytes: gpuTotal, chosenLayers: fit.gpuLayers, reasons: fit.reasons };
  try {
    await lib.fitModel(model1b, { gpuLayers: "max", contextSize: 4096, maxVram: 64 * MiB });
    report.checks.impossible = "no error (unexpected)";
  } catch (err) {
    report.checks.impossible = { code: err.code, message: err.message };
  }
}

// 3. KV types: generation tokens/s at several depths, KV bytes.
for (const kv of ["f16", "q8_0", "q4_0"]) {
  const model = await lib.loadModel(model1b, { gpuLayers: -1 });
  const maxDepth = Math.max(...depths);
  const ctx = await model.createContext({ contextSize: maxDepth + 512, kvType: kv, flashAttention: "on", batchSize: 2048, ubatchSize: 512 });
  const mem = await ctx.memory();
  for (const depth of depths) {
    await ctx.clear();
    const filler = Array.from({ length: depth }, (_, i) => 100 + ((i * 7919) % 29000));
    for (let i = 0; i < filler.length; i += 2048) await ctx.evaluate(filler.slice(i, i + 2048));
    const t0 = performance.now();
    for (let i = 0; i < 128; i++) await ctx.evaluate([100 + i]);
    const tg = 128 / ((performance.now() - t0) / 1000);
    report.figures.push({ kv, depth, tgTokensPerSecond: tg, kvBytes: mem.kv, kvBytesPerCell: mem.kv / mem.cells });
  }
  await ctx.dispose();
  await model.dispose();
}

console.log(JSON.stringify(report, null, 2));
