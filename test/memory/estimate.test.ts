/**
 * Issue 3, memory you can see: llama.cpp's dry-run estimate against the memory a real context
 * allocates, and the KV cache's bytes per token for each cache type, on the tiny model (CPU).
 *
 * The tiny model: 2 layers, 2 heads of 32, 1 KV head, so one token's K and V take
 * 2 layers x (32 + 32) elements.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { estimateMemory, loadModel, type ContextMemory, type KvCacheType, type MemoryEstimate, type Model } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";

// One thread: CI runs several test files at once on 2 cores.
const THREADS = 1;

interface Config {
  contextSize: number;
  sequences?: number;
  kvType?: KvCacheType;
  flashAttention?: "auto" | "on" | "off";
  batchSize?: number;
}

const CONFIGS: Config[] = [
  { contextSize: 512 },
  { contextSize: 2048 },
  { contextSize: 4096 },
  { contextSize: 2048, sequences: 4 },
  { contextSize: 4096, sequences: 4, batchSize: 128 },
  { contextSize: 512, kvType: "q8_0", flashAttention: "on" },
  { contextSize: 2048, kvType: "q8_0", flashAttention: "on", sequences: 4 },
  { contextSize: 4096, kvType: "q4_0", flashAttention: "on" },
  { contextSize: 2048, kvType: "q4_0", flashAttention: "on", batchSize: 64 },
  { contextSize: 1024, kvType: "f16", flashAttention: "on", batchSize: 256, sequences: 4 },
];

/** |actual - estimate| <= 5% of actual (exact zero when actual is zero). */
function expectWithin5(actual: number, estimate: number, what: string): void {
  expect(Math.abs(actual - estimate), `${what}: actual ${actual}, estimate ${estimate}`).toBeLessThanOrEqual(actual * 0.05);
}

function compare(actual: ContextMemory, est: MemoryEstimate, label: string): void {
  // The dry run loads without mmap, so the weights sit in "CPU" there and in "CPU_Mapped" in the
  // real context: compare per category, not per buffer type.
  expectWithin5(actual.weights, est.weights, `${label} weights`);
  expectWithin5(actual.kv, est.kv, `${label} kv`);
  expectWithin5(actual.compute, est.compute, `${label} compute`);
  expectWithin5(actual.weights + actual.kv + actual.compute, est.total, `${label} total`);
  expect(est.devices.map((d) => d.device)).toEqual(["CPU"]);
  expect(est.devices[0]?.total).toBe(est.total);
}

describe("estimateMemory against the real breakdown", () => {
  let path = "";
  let model: Model;

  beforeAll(async () => {
    path = await tinyModel("q8_0");
    model = await loadModel(path);
  });
  afterAll(async () => {
    await model.dispose();
  });

  it.each(CONFIGS)("within 5% per category: %o", async (config) => {
    const est = await estimateMemory(path, config);
    await using ctx = await model.createContext({ ...config, threads: THREADS });
    const actual = await ctx.memory();
    compare(actual, est, JSON.stringify(config));
    expect(est.contextSize).toBe(ctx.info.contextSize);
    expect(actual.cells).toBe(config.contextSize);
    // The weights do not depend on the context at all.
    expect(actual.weights).toBeGreaterThan(0);
  });

  it("the weights of a repacked Q4_0 model and of F16/F32 models", async () => {
    for (const type of ["q4_0", "f16", "f32"] as const) {
      const p = await tinyModel(type);
      await using m = await loadModel(p);
      const config: Config = { contextSize: 1024, sequences: 2, kvType: "q8_0", flashAttention: "on", batchSize: 256 };
      await using ctx = await m.createContext({ ...config, threads: THREADS });
      const actual = await ctx.memory();
      compare(actual, await estimateMemory(p, config), type);
      if (type === "q4_0") {
        // CPU repacking moves most Q4_0 weights into a buffer type of its own, in both runs:
        // CPU_REPACK on AVX2/AVX-512 CPUs, AMX where the CPU has AMX tiles.
        const repacked = actual.rows.filter((r) => r.host && r.bufferType !== "CPU" && !r.bufferType.endsWith("_Mapped"));
        expect(repacked.reduce((n, r) => n + r.model, 0)).toBeGreaterThan(actual.weights / 2);
      }
    }
  });

  it("reads only the header: nothing is allocated for a context far larger than RAM", async () => {
    // 2^24 cells: 4 GiB of f16 KV and many GiB of compute buffers. The dry run must size them
    // without allocating (this process would not survive a real allocation on a small machine).
    const rssBefore = process.memoryUsage().rss;
    const est = await estimateMemory(path, { contextSize: 1 << 24 });
    expect(est.kv).toBe(2 * 64 * 2 * 2 ** 24);
    expect(est.total).toBeGreaterThan(8 * 2 ** 30);
    // llama.cpp's per-cell bookkeeping does take host memory during the dry run (about 0.8 GiB
    // at 2^24 cells), but nothing near the estimate.
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(2 * 2 ** 30);
  });
});

describe("KV cache bytes per token", () => {
  let model: Model;
  // llama.cpp's block layouts: q8_0 is 32 int8 + one f16 scale (34 bytes per 32), q4_0 is
  // 32 nibbles + one f16 scale (18 bytes per 32).
  const BYTES_PER_ELEMENT: Record<"f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q5_0", number> = {
    f32: 4, f16: 2, bf16: 2, q8_0: 34 / 32, q4_0: 18 / 32, q5_0: 22 / 32,
  };

  beforeAll(async () => {
    model = await loadModel(await tinyModel("q8_0"));
  });
  afterAll(async () => {
    await model.dispose();
  });

  it.each(Object.keys(BYTES_PER_ELEMENT) as (keyof typeof BYTES_PER_ELEMENT)[])("%s matches its block size exactly", async (kvType) => {
    const { layers, kvHeads, heads, embeddingSize } = model.info;
    const headDim = embeddingSize / heads;
    // K and V: kvHeads x headDim elements each, per layer.
    const elementsPerToken = layers * 2 * kvHeads * headDim;
    expect(elementsPerToken).toBe(128);
    const expected = elementsPerToken * BYTES_PER_ELEMENT[kvType];
    for (const sequences of [1, 4]) {
      await using ctx = await model.createContext({ contextSize: 1024, sequences, kvType, flashAttention: "on", threads: THREADS });
      const mem = await ctx.memory();
      expect(mem.cells).toBe(1024);
      expect(mem.kv / mem.cells).toBe(expected);
    }
  });

  it("the ratios to f16 are the block ratios: q8_0 17/32, q4_0 9/32", async () => {
    const perToken = async (kvType: KvCacheType) => {
      await using ctx = await model.createContext({ contextSize: 2048, kvType, flashAttention: "on", threads: THREADS });
      const m = await ctx.memory();
      return m.kv / m.cells;
    };
    const f16 = await perToken("f16");
    expect(f16).toBe(256);
    expect((await perToken("q8_0")) / f16).toBe(34 / 64);
    expect((await perToken("q4_0")) / f16).toBe(18 / 64);
  });

  it("cellsUsed counts the tokens held, over all sequences", async () => {
    await using ctx = await model.createContext({ contextSize: 1024, sequences: 2, threads: THREADS });
    await ctx.sequence(0).evaluate(await model.tokenize("one two three four"));
    await ctx.sequence(1).evaluate(await model.tokenize("five six"));
    const mem = await ctx.memory();
    expect(mem.cellsUsed).toBe(ctx.sequence(0).tokens.length + ctx.sequence(1).tokens.length);
  });
});

describe("repacked weights are host memory", () => {
  it("repack rows count as the CPU device, and the auto load mode reads the file when anything is repacked", async () => {
    const path = await tinyModel("q4_0");
    const est = await estimateMemory(path, { contextSize: 256 });
    // One host device: a repack buffer type must not look like a separate (GPU-like) device.
    expect(est.devices.map((d) => d.device)).toEqual(["CPU"]);
    const model = await loadModel(path);
    try {
      const ctx = await model.createContext({ contextSize: 256, threads: 1 });
      const rows = (await ctx.memory()).rows;
      for (const r of rows) expect(r.host).toBe(true);
      // Any host buffer but the plain and mapped ones holds copies (CPU_REPACK, AMX, ...).
      const repacked = rows.filter((r) => r.host && r.bufferType !== "CPU" && !r.bufferType.endsWith("_Mapped")).reduce((s, r) => s + r.model, 0);
      // "auto" reads the file exactly when some weights were copied, so none is resident twice.
      expect(model.loadMode).toBe(repacked > 0 ? "none" : "mmap");
      await ctx.dispose();
    } finally {
      await model.dispose();
    }
  });
});
