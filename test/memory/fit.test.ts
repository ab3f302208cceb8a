/**
 * Issue 3, memory you can bound: `contextSize: "auto"` under a budget, and requests that cannot
 * fit, on the tiny model (CPU, trained context 4096). Budgets are computed from the dry-run
 * estimates themselves, so the tests do not depend on llama.cpp's exact buffer sizes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { estimateMemory, fitModel, loadModel, type Model } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { failure } from "../helpers/errors.js";

const THREADS = 1;
const GiB = 2 ** 30;

let path = "";
let model: Model;

beforeAll(async () => {
  path = await tinyModel("q8_0");
  model = await loadModel(path);
});
afterAll(async () => {
  await model.dispose();
});

/** The model still runs: a greedy completion of a few tokens. */
async function stillGenerates(): Promise<void> {
  await using ctx = await model.createContext({ contextSize: 256, threads: THREADS });
  const r = await ctx.complete("Still alive", { maxTokens: 4, temperature: 0 });
  expect(r.generatedTokens + (r.stopReason === "eog" ? 1 : 0)).toBeGreaterThan(0);
}

describe('contextSize: "auto"', () => {
  it("under a small budget picks a smaller context than the trained one, says why, and fits it", async () => {
    // Room for exactly 2048 tokens: the estimate at 2048, plus less than one 256-token step of KV.
    const at2048 = await estimateMemory(path, { contextSize: 2048 });
    const at2304 = await estimateMemory(path, { contextSize: 2304 });
    const maxRam = at2048.total + Math.floor((at2304.total - at2048.total) / 2);

    const fit = await fitModel(path, { contextSize: "auto", maxRam });
    expect(fit.contextSize).toBe(2048);
    expect(fit.estimate.total).toBeLessThanOrEqual(maxRam);
    expect(fit.reasons.join("\n")).toMatch(/contextSize 2048: the largest that fits the budget .*trained for 4096/);

    await using ctx = await model.createContext({ contextSize: "auto", maxRam, threads: THREADS });
    expect(ctx.info.contextSize).toBe(2048);
    const mem = await ctx.memory();
    // The budget covers weights + KV + compute, also for an already loaded model.
    expect(mem.weights + mem.kv + mem.compute).toBeLessThanOrEqual(maxRam);
  });

  it("with a large budget, or none, picks the trained context", async () => {
    const fit = await fitModel(path, { contextSize: "auto", maxRam: 8 * GiB });
    expect(fit.contextSize).toBe(4096);
    expect(fit.reasons).toContain("contextSize 4096: the trained context fits");
    await using big = await model.createContext({ contextSize: "auto", maxRam: 8 * GiB, threads: THREADS });
    expect(big.info.contextSize).toBe(4096);
    // No budget: free memory minus a margin, which is plenty for this model.
    await using free = await model.createContext({ contextSize: "auto", threads: THREADS });
    expect(free.info.contextSize).toBe(4096);
  });

  it("follows the KV type: a q4_0 cache fits a longer context in the same budget", async () => {
    const at1024 = await estimateMemory(path, { contextSize: 1024, batchSize: 64 });
    const maxRam = at1024.total + 1000;
    const f16 = await fitModel(path, { contextSize: "auto", maxRam, batchSize: 64 });
    const q4 = await fitModel(path, { contextSize: "auto", maxRam, batchSize: 64, kvType: "q4_0", flashAttention: "on" });
    expect(f16.contextSize).toBe(1024);
    expect(q4.contextSize).toBeGreaterThan(f16.contextSize);
    expect(q4.estimate.total).toBeLessThanOrEqual(maxRam);
  });
});

describe("requests that cannot fit", () => {
  it("a budget smaller than the weights: ERR_INSUFFICIENT_MEMORY with what is needed; the process lives on", async () => {
    const est = await estimateMemory(path, { contextSize: 256 });
    const maxRam = Math.floor(est.weights / 2);
    const err = await failure(fitModel(path, { maxRam }));
    expect(err.code).toBe("ERR_INSUFFICIENT_MEMORY");
    // It names the device, the parts, the budget, and the least that would be needed.
    expect(err.message).toMatch(/needs [\d.]+ MiB on CPU \(weights [\d.]+ MiB, KV [\d.]+ [KM]iB, compute [\d.]+ MiB\)/);
    expect(err.message).toMatch(/over the budget \(host [\d.]+ [KM]iB\)/);
    expect(err.message).toMatch(/nothing smaller fits either: even contextSize 256 needs [\d.]+ MiB on CPU/);

    const auto = await failure(model.createContext({ contextSize: "auto", maxRam, threads: THREADS }));
    expect(auto.code).toBe("ERR_INSUFFICIENT_MEMORY");
    await stillGenerates();
  });

  it("a fixed huge contextSize with a modest budget names the context that would fit, and that one does", async () => {
    const maxRam = 1 * GiB;
    // 2^24 is the largest context the addon accepts; at this size only the dry run is safe to run.
    const err = await failure(fitModel(path, { contextSize: 1 << 24, maxRam }));
    expect(err.code).toBe("ERR_INSUFFICIENT_MEMORY");
    expect(err.message).toMatch(/^contextSize 16777216 with 0 GPU layers needs [\d.]+ GiB on CPU/);
    const suggested = /would fit: contextSize (\d+)/.exec(err.message)?.[1];
    expect(suggested, err.message).toBeDefined();
    const fit = await fitModel(path, { contextSize: Number(suggested), maxRam });
    expect(fit.estimate.total).toBeLessThanOrEqual(maxRam);
    await stillGenerates();
  });

  it("suggests a quantized KV cache when that fits a longer context", async () => {
    // A quarter of the f16 cache's size to spare: not another 256 cells of f16, but enough for
    // 1024 cells of q8_0 (8.5 bits against 16).
    const at512 = await estimateMemory(path, { contextSize: 512, batchSize: 64 });
    const err = await failure(fitModel(path, { contextSize: 4096, batchSize: 64, maxRam: at512.total + at512.kv / 4 }));
    expect(err.code).toBe("ERR_INSUFFICIENT_MEMORY");
    expect(err.message).toMatch(/would fit: contextSize 512, or contextSize \d+ with q8_0 KV/);
  });

  it("a context beyond the addon's limit is refused before anything is allocated", async () => {
    const err = await failure(model.createContext({ contextSize: (1 << 24) + 1, threads: THREADS }));
    expect(err.code).toBe("ERR_INVALID_ARGUMENT");
    await stillGenerates();
  });

  it("validates budgets", async () => {
    for (const maxRam of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect((await failure(fitModel(path, { maxRam }))).code).toBe("ERR_INVALID_ARGUMENT");
    }
    expect((await failure(fitModel(path, { contextSize: 0 }))).code).toBe("ERR_INVALID_ARGUMENT");
  });
});
