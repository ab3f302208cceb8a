/**
 * Memory of a mixture-of-experts model whose host weights are only partly repacked: the estimate
 * counts every weight once, and the auto load mode loads them so they are resident once.
 *
 * The CPU backend copies what it can repack into buffers of its own (CPU_REPACK on AVX2/AVX-512,
 * AMX where the CPU has AMX tiles); the rest stays in the file's layout. Mapped, the repacked
 * tensors' pages are read (and stay resident) inside the mapped range beside their copies: the
 * breakdown then shows them twice (a *_Mapped row spanning them, and the repack rows). Which
 * buffers a CPU picks differs between machines, so the tests assert the behaviour on whatever
 * CPU runs them, and check the repack path where this CPU has one.
 */
import { readFileSync } from "node:fs";
import { arch } from "node:os";
import { describe, expect, it } from "vitest";
import { estimateMemory, fitModel, loadModel, type ContextMemory, type MemoryEstimate } from "../../lib/index.js";
import { readGguf } from "../../lib/gguf/read.js";
import { hostCopiedWeights } from "../../lib/memory/estimate.js";
import { MOE, moeModel } from "./arch-models.js";

const THREADS = 1;

/** This CPU's feature flags (empty where /proc/cpuinfo does not exist). */
function cpuFlags(): Set<string> {
  try {
    const m = /^flags\s*:(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    return new Set((m?.[1] ?? "").trim().split(/\s+/));
  } catch {
    return new Set();
  }
}

/** Whether ggml's CPU backend repacks Q4_0 here: on x86 it needs AVX2 (AMX tiles take some of it where present). */
const REPACKS_Q4_0 = arch() === "x64" && cpuFlags().has("avx2");

function within5(actual: number, estimate: number, what: string): void {
  expect(Math.abs(actual - estimate), `${what}: actual ${actual}, estimate ${estimate}`).toBeLessThanOrEqual(actual * 0.05);
}

function compare(actual: ContextMemory, est: MemoryEstimate, label: string): void {
  within5(actual.weights, est.weights, `${label} weights`);
  within5(actual.kv, est.kv, `${label} kv`);
  within5(actual.compute, est.compute, `${label} compute`);
  within5(actual.weights + actual.kv + actual.compute, est.total, `${label} total`);
}

describe("a partly repacked mixture-of-experts model", () => {
  it.each([true, false])("repack %s: the estimate is within 5%, and auto loads every weight once", async (repack) => {
    const path = await moeModel();
    const file = await readGguf(path);
    const tensorBytes = file.tensors.reduce((s, t) => s + t.size, 0);
    const config = { contextSize: 512, repack };
    const est = await estimateMemory(path, config);
    // Every weight once: the estimate's weights are the file's tensors, repacked or not.
    within5(tensorBytes, est.weights, "estimate vs file");
    await using model = await loadModel(path, { repack });
    expect(model.info.architecture).toBe("llama");
    expect(model.gguf.metadata.get("llama.expert_count")?.value).toBe(MOE.experts);
    await using ctx = await model.createContext({ ...config, threads: THREADS });
    const actual = await ctx.memory();
    compare(actual, est, `repack ${repack}`);
    within5(tensorBytes, actual.weights, "actual vs file");

    const copied = hostCopiedWeights(actual.rows);
    const mapped = actual.rows.filter((r) => r.bufferType.endsWith("_Mapped")).reduce((s, r) => s + r.model, 0);
    // Resident once: weights are either all read (some into repack buffers) or all mapped.
    expect(model.loadMode).toBe(copied > 0 ? "none" : "mmap");
    expect(copied > 0 && mapped > 0).toBe(false);
    if (repack && REPACKS_Q4_0) {
      // This CPU has the repack path: part of the weights are copied, part are not.
      expect(copied).toBeGreaterThan(0);
      expect(copied).toBeLessThan(actual.weights / 2);
    }
    if (!repack) expect(copied).toBe(0);
    // And it generates.
    const r = await ctx.sequence(0).complete("The experts", { maxTokens: 4, temperature: 0 });
    expect(r.generatedTokens).toBeGreaterThan(0);
  });

  it("mapped explicitly, the repacked tensors show twice in the breakdown (why auto reads the file)", async () => {
    const path = await moeModel();
    await using model = await loadModel(path, { loadMode: "mmap" });
    await using ctx = await model.createContext({ contextSize: 512, threads: THREADS });
    const rows = (await ctx.memory()).rows;
    const copied = hostCopiedWeights(rows);
    const mapped = rows.filter((r) => r.bufferType.endsWith("_Mapped")).reduce((s, r) => s + r.model, 0);
    const file = await readGguf(path);
    const tensorBytes = file.tensors.reduce((s, t) => s + t.size, 0);
    if (copied > 0) expect(copied + mapped).toBeGreaterThan(tensorBytes * 1.05);
    else within5(tensorBytes, mapped, "mapped");
  });

  it("a fit under a RAM budget holds once loaded with the auto mode", async () => {
    const path = await moeModel();
    const at1k = await estimateMemory(path, { contextSize: 1024 });
    const maxRam = at1k.total + 1024 * 1024;
    const fit = await fitModel(path, { contextSize: "auto", maxRam });
    expect(fit.contextSize).toBeGreaterThanOrEqual(1024);
    await using model = await loadModel(path);
    await using ctx = await model.createContext({ contextSize: fit.contextSize, threads: THREADS });
    const m = await ctx.memory();
    expect(m.weights + m.kv + m.compute).toBeLessThanOrEqual(maxRam);
  });
});

describe("hostCopiedWeights", () => {
  const row = (bufferType: string, model: number, host = true) => ({ bufferType, model, host });
  it("counts every host buffer type but the plain and the mapped ones", () => {
    expect(hostCopiedWeights([row("CPU", 10), row("CPU_Mapped", 20)])).toBe(0);
    expect(hostCopiedWeights([row("CPU", 10), row("CPU_REPACK", 5), row("AMX", 7)])).toBe(12);
    expect(hostCopiedWeights([row("CUDA_Host", 3), row("CUDA0", 100, false), row("Metal_Mapped", 9)])).toBe(3);
  });
});
