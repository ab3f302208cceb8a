import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadModel, LlamemError, type Model } from "../../lib/index.js";
import { watchEvalBatch } from "../helpers/eval-batch.js";
import { tinyModel } from "../helpers/models.js";
import { codeOf } from "../helpers/errors.js";

interface ReferenceCase {
  preset: string;
  type: "q8_0" | "f16";
  seed: number;
  prompt: string;
  nPredict: number;
  output: string;
}
const reference = JSON.parse(readFileSync(join(__dirname, "..", "fixtures", "reference-simple.json"), "utf8")) as {
  cases: ReferenceCase[];
};

let model: Model;

beforeAll(async () => {
  model = await loadModel(await tinyModel("q8_0"));
});
afterAll(async () => {
  await model.dispose();
});

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const piece of it) out.push(piece);
  return out;
}


describe("generation", () => {
  it.each(reference.cases)("greedy tokens match llama.cpp's examples/simple ($type)", async (c) => {
    const m = await loadModel(await tinyModel(c.type, c.seed));
    try {
      const prompt = await m.tokenize(c.prompt, { parseSpecial: true });
      // examples/simple sizes its context to the prompt plus the prediction, and keeps llama.cpp's
      // default flash attention ("auto", which llama.cpp turns on for the CPU).
      const ctx = await m.createContext({ contextSize: prompt.length + c.nPredict - 1, batchSize: prompt.length, flashAttention: "on" });
      const ids: number[] = [];
      await ctx.complete(prompt, { maxTokens: c.nPredict, temperature: 0, onToken: (t) => ids.push(t) });
      const render = (t: number) => m.tokenToPiece(t, { special: true });
      const text = Buffer.concat([...prompt, ...ids].map(render)).toString("utf8");
      expect(`${text}\n`).toBe(c.output);
      await ctx.dispose();
    } finally {
      await m.dispose();
    }
  });

  it("greedy generation is deterministic and reuses the cached prompt", async () => {
    await using ctx = await model.createContext({ contextSize: 256 });
    const first = (await collect(ctx.generate("Once upon a time", { maxTokens: 24, temperature: 0 }))).join("");
    expect(ctx.lastGeneration?.generatedTokens).toBe(24);
    expect(ctx.lastGeneration?.evaluatedPromptTokens).toBe(ctx.lastGeneration?.promptTokens);
    const second = (await collect(ctx.generate("Once upon a time", { maxTokens: 24, temperature: 0 }))).join("");
    expect(second).toBe(first);
    // Only the last prompt token was evaluated again: the rest came from the KV cache.
    expect(ctx.lastGeneration?.evaluatedPromptTokens).toBe(1);
    await using fresh = await model.createContext({ contextSize: 256 });
    expect((await fresh.complete("Once upon a time", { maxTokens: 24, temperature: 0 })).text).toBe(first);
  });

  it("seeded sampling is reproducible and the seed matters", async () => {
    await using ctx = await model.createContext({ contextSize: 256 });
    const run = async (seed: number) => {
      ctx.clear();
      return (await ctx.complete("The weather today", { maxTokens: 32, temperature: 1.5, topK: 0, topP: 1, minP: 0, seed })).text;
    };
    const a = await run(42);
    const b = await run(42);
    const c = await run(7);
    expect(b).toBe(a);
    expect(c).not.toBe(a);
  });

  it("streams whole UTF-8 characters: the pieces decode exactly like the tokens' bytes taken at once", async () => {
    await using ctx = await model.createContext({ contextSize: 512 });
    const ids: number[] = [];
    const pieces = await collect(ctx.generate("🦙 émoji", { maxTokens: 200, temperature: 1.2, seed: 3, onToken: (t) => ids.push(t) }));
    const joined = pieces.join("");
    // A character split between two pieces would decode as U+FFFD in each and break equality.
    expect(joined).toBe(Buffer.concat(ids.map((t) => model.tokenToPiece(t))).toString("utf8"));
    expect(joined).toMatch(/[^\x00-\x7f]/);
  });

  it("stops at a stop string without emitting it", async () => {
    await using ctx = await model.createContext({ contextSize: 256 });
    const full = (await ctx.complete("Hello", { maxTokens: 40, temperature: 0 })).text;
    // Pick a stop string from the middle of the greedy text, so the run must stop there.
    const stop = full.slice(10, 14);
    const cut = full.indexOf(stop);
    ctx.clear();
    const r = await ctx.complete("Hello", { maxTokens: 40, temperature: 0, stop: [stop] });
    expect(r.stopReason).toBe("stop");
    expect(r.text).toBe(full.slice(0, cut));
  });

  it("aborts mid-generation with ERR_ABORTED and stays usable", async () => {
    await using ctx = await model.createContext({ contextSize: 2048 });
    const ac = new AbortController();
    const got: string[] = [];
    const err = await codeOf(
      (async () => {
        for await (const piece of ctx.generate("Tell me a story", { maxTokens: 1000, temperature: 0, signal: ac.signal })) {
          got.push(piece);
          if (got.length === 5) ac.abort();
        }
      })(),
    );
    expect(err).toBe("ERR_ABORTED");
    expect(ctx.lastGeneration?.stopReason).toBe("aborted");
    expect(got.length).toBeGreaterThanOrEqual(5);
    expect(got.length).toBeLessThan(1000);
    // The KV bookkeeping survived: the same context generates again.
    const r = await ctx.complete("Tell me a story", { maxTokens: 4, temperature: 0 });
    expect(r.generatedTokens).toBe(4);
  });

  it("refuses a second generation on the same context while one runs", async () => {
    await using ctx = await model.createContext({ contextSize: 512 });
    const first = ctx.generate("one", { maxTokens: 50, temperature: 0 });
    await first.next();
    expect(await codeOf(collect(ctx.generate("two", { maxTokens: 5 })))).toBe("ERR_BUSY");
    await first.return();
    expect((await ctx.complete("two", { maxTokens: 3, temperature: 0 })).generatedTokens).toBe(3);
  });

  it("dispose during generation cuts it short with a typed error; then use throws ERR_DISPOSED", async () => {
    const ctx = await model.createContext({ contextSize: 2048 });
    // The outcome is observed from the start: the generation may end while dispose() is awaited.
    const gen = codeOf(collect(ctx.generate("A long story", { maxTokens: 2000, temperature: 0 })));
    await new Promise((r) => setTimeout(r, 20));
    await ctx.dispose();
    expect(["ERR_ABORTED", "ERR_DISPOSED"]).toContain(await gen);
    expect(await codeOf(ctx.complete("x"))).toBe("ERR_DISPOSED");
    await ctx.dispose();
  });

  it("disposing the model disposes its contexts, in either order", async () => {
    const m = await loadModel(await tinyModel("q8_0"));
    const a = await m.createContext({ contextSize: 128 });
    const b = await m.createContext({ contextSize: 128 });
    await b.dispose();
    const running = codeOf(collect(a.generate("x", { maxTokens: 500, temperature: 0 })));
    await m.dispose();
    expect(a.disposed).toBe(true);
    expect(["ERR_ABORTED", "ERR_DISPOSED", undefined]).toContain(await running);
    await a.dispose();
  });

  it("reports the context full instead of crashing", async () => {
    await using ctx = await model.createContext({ contextSize: 256 });
    const long = "word ".repeat(300);
    expect(await codeOf(ctx.complete(long, { maxTokens: 4 }))).toBe("ERR_CONTEXT_FULL");
    const r = await ctx.complete("Hi", { maxTokens: 1000, temperature: 0 });
    expect(r.stopReason).toBe("contextFull");
    expect(ctx.tokens.length).toBeLessThanOrEqual(ctx.info.contextSize);
  });

  it("validates options with ERR_INVALID_ARGUMENT", async () => {
    expect(await codeOf(model.createContext({ contextSize: -1 }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(model.createContext({ kvType: "q3_k" as never }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(model.createContext({ kvTypeV: "q8_0", flashAttention: "off" }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(model.createContext({ threads: 0 }))).toBe("ERR_INVALID_ARGUMENT");
    await using ctx = await model.createContext({ contextSize: 64 });
    expect(await codeOf(ctx.complete("x", { maxTokens: -1 }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(ctx.complete("x", { seed: -3 }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(ctx.complete("x", { temperature: Number.NaN }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(ctx.complete([5, 99999]))).toBe("ERR_INVALID_ARGUMENT");
    // Non-integer ids are refused, not coerced into real tokens (1.5 -> 1, NaN -> 0).
    expect(await codeOf(ctx.complete([5, 1.5]))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(ctx.evaluate([Number.NaN]))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(model.detokenize([2 ** 32 + 1]))).toBe("ERR_INVALID_ARGUMENT");
    expect((await ctx.complete("x", { maxTokens: 2, temperature: 0 })).generatedTokens).toBeGreaterThan(0);
  });

  it("reports timings and the memory breakdown", async () => {
    await using ctx = await model.createContext({ contextSize: 256 });
    const r = await ctx.complete("Measure me", { maxTokens: 16, temperature: 0 });
    expect(r.promptTokensPerSecond).toBeGreaterThan(0);
    expect(r.generatedTokensPerSecond).toBeGreaterThan(0);
    expect(r.timeToFirstTokenMs).toBeGreaterThan(0);
    const mem = await ctx.memory();
    // 2 layers x 256 cells x 32 dims (1 kv head of 32) x K and V x 2 bytes (f16).
    expect(mem.kv).toBe(2 * 256 * 32 * 2 * 2);
    expect(mem.kv).toBe(mem.rows.reduce((s, row) => s + row.context, 0));
    expect(mem.weights).toBeGreaterThan(0);
    expect(mem.cells).toBe(256);
    expect(mem.cellsUsed).toBe(ctx.tokens.length);
    // The model alone holds exactly the weights the context breakdown shows.
    const weights = model.memory();
    expect(weights.weights).toBe(mem.weights);
    expect(weights.rows.every((r) => r.host && r.context === 0)).toBe(true);
  });
});

describe("batching sequences", () => {
  it("decodes the sequences of a batch in id order, whichever started first, with the same tokens as alone", async () => {
    // With a KV stream per sequence, llama.cpp splits a batch wherever the next sequence id is not
    // the previous one plus one, and each split is a forward pass of its own. F16 weights: which
    // tokens share a batch depends on timing, and q8_0 weights' matrix product rounds by batch
    // size (docs/models.md, "Exactness"), which random weights can turn into other greedy tokens.
    await using f16 = await loadModel(await tinyModel("f16"));
    await using ctx = await f16.createContext({ contextSize: 1024, sequences: 4 });
    const orders: number[][] = [];
    const unwatch = watchEvalBatch(ctx, (entries) => orders.push(entries.map((e) => e.seq)));
    const prompts = ["Once upon a time", "The river", "In the morning", "A small bird"];
    const o = { maxTokens: 24, temperature: 0 };
    // Sequence 3 starts first; the others join it a moment later.
    const first = ctx.sequence(3).complete(prompts[3] as string, o);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const rest = [0, 1, 2].map((i) => ctx.sequence(i).complete(prompts[i] as string, o));
    const together = await Promise.all([...rest, first]);
    unwatch();
    const batched = orders.filter((o) => o.length > 1);
    expect(batched.length).toBeGreaterThan(0);
    for (const order of orders) expect(order).toEqual([...order].sort((a, b) => a - b));
    // Order changes nothing in what each sequence generates.
    for (let i = 0; i < 4; i++) {
      await ctx.sequence(i).clear();
      const alone = await ctx.sequence(i).complete(prompts[i] as string, o);
      expect(alone.text).toBe(together[i]?.text);
    }
  });
});

describe("quantized weights on the CPU backend", () => {
  it("runs a Q4_0 model (repacked) and an F16 one", async () => {
    for (const type of ["q4_0", "f16"] as const) {
      await using m = await loadModel(await tinyModel(type));
      await using ctx = await m.createContext({ contextSize: 128 });
      const r = await ctx.complete("Quantized", { maxTokens: 8, temperature: 0 });
      expect(r.generatedTokens + (r.stopReason === "eog" ? 1 : 0)).toBeGreaterThan(0);
      expect(m.info.description.toLowerCase()).toContain(type === "q4_0" ? "q4_0" : "f16");
    }
  });
});

describe("CPU threads between calls", () => {
  it("sleep once a generation ends, instead of polling a core for the next graph", async () => {
    // ggml's workers poll for the next graph before they sleep (tens of ms of a core after every
    // call); the binding parks them when a call ends. Two threads, so there is a worker to poll.
    const ctx = await model.createContext({ contextSize: 256, threads: 2 });
    try {
      for (let round = 0; round < 3; round++) {
        await ctx.complete("Hello there", { maxTokens: 4, temperature: 0 });
        const before = process.cpuUsage();
        await new Promise((resolve) => setTimeout(resolve, 400));
        const used = process.cpuUsage(before);
        // Polling burned about 80 ms here (Intel Xeon, 2 cores); parked threads use none.
        expect((used.user + used.system) / 1000).toBeLessThan(25);
        await ctx.sequence(0).clear();
      }
    } finally {
      await ctx.dispose();
    }
  });
});
