/**
 * Lifetimes (issue 6, part 4): dispose during generation and during load, twice, in any order,
 * after an abort; two generations on one sequence. Nothing may crash; work that was cut short
 * ends with a typed error, and objects stay usable (or cleanly refuse use) afterwards.
 */
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { contextSide } from "../../lib/internal/handles.js";
import { LlamemError, loadModel, type Context, type Model } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { FIXTURES, describeEnd, ensureDist, lastJson, runNode } from "./helpers/child.js";
import { codeOf } from "../helpers/errors.js";

let path: string;
let model: Model;

beforeAll(async () => {
  path = await tinyModel("q8_0");
  model = await loadModel(path);
});
afterAll(async () => {
  await model?.dispose();
});


/** Generates until `after` pieces arrived, then runs `cut` while the generation is still going. */
async function cutMidGeneration(ctx: Context, cut: () => Promise<unknown>, after = 3): Promise<{ code: string | undefined; pieces: number; cutDone: Promise<unknown> }> {
  let pieces = 0;
  let cutDone: Promise<unknown> = Promise.resolve();
  const code = await codeOf((async () => {
    for await (const _ of ctx.generate("Once upon a time", { maxTokens: 2000, temperature: 0 })) {
      if (++pieces === after) cutDone = cut();
    }
  })());
  return { code, pieces, cutDone };
}

const CUT_SHORT = ["ERR_ABORTED", "ERR_DISPOSED"];

describe("dispose during work", () => {
  it("context.dispose() mid-generation ends the generation with a typed error", async () => {
    const ctx = await model.createContext({ contextSize: 4096, threads: 1 });
    const { code, pieces, cutDone } = await cutMidGeneration(ctx, () => ctx.dispose());
    await cutDone;
    expect(CUT_SHORT).toContain(code);
    expect(pieces).toBeLessThan(2000);
    expect(ctx.disposed).toBe(true);
    expect(await codeOf(ctx.complete("again"))).toBe("ERR_DISPOSED");
    expect(() => ctx.sequence(0)).toThrow(LlamemError);
    // The model is untouched.
    await using other = await model.createContext({ contextSize: 128, threads: 1 });
    expect((await other.complete("Hello", { maxTokens: 3, temperature: 0 })).generatedTokens).toBe(3);
  });

  it("model.dispose() mid-generation disposes its contexts and ends the generation", async () => {
    const m = await loadModel(path);
    const ctx = await m.createContext({ contextSize: 4096, threads: 1 });
    const { code, cutDone } = await cutMidGeneration(ctx, () => m.dispose());
    await cutDone;
    expect(CUT_SHORT).toContain(code);
    expect(m.disposed).toBe(true);
    expect(ctx.disposed).toBe(true);
    expect(await codeOf(m.tokenize("x"))).toBe("ERR_DISPOSED");
    expect(await codeOf(m.createContext())).toBe("ERR_DISPOSED");
  });

  it("dispose() mid-evaluation, mid-state-save and mid-tokenize settle with typed results", async () => {
    const m = await loadModel(path);
    const ctx = await m.createContext({ contextSize: 4096, batchSize: 32, threads: 1 });
    const long = Array.from({ length: 3000 }, (_, i) => 100 + (i % 500));
    const evaluating = codeOf(ctx.evaluate(long));
    const tokenizing = codeOf(m.tokenize("word ".repeat(20000)));
    await new Promise((r) => setTimeout(r, 5));
    await Promise.all([ctx.dispose(), m.dispose()]);
    expect([...CUT_SHORT, undefined]).toContain(await evaluating);
    // Tokenize runs on its own shared handle: it may finish, or be refused if it had not started.
    expect([undefined, "ERR_DISPOSED"]).toContain(await tokenizing);

    const m2 = await loadModel(path);
    const c2 = await m2.createContext({ contextSize: 256, threads: 1 });
    await c2.evaluate([1, 2, 3, 4]);
    const saving = codeOf(c2.sequence(0).saveState());
    const disposing = c2.dispose();
    expect([undefined, ...CUT_SHORT]).toContain(await saving);
    await disposing;
    await m2.dispose();
  });

  it("an AbortSignal during load rejects with ERR_ABORTED and leaves nothing behind", async () => {
    // Abort at increasing delays: before the native load starts, during it, or after it finished.
    // Each outcome is ERR_ABORTED or a model that works; never a crash or a leaked handle.
    const outcomes: string[] = [];
    for (const delay of [0, 1, 2, 5, 10, 20, 40, 80, 160]) {
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), delay);
      try {
        const m = await loadModel(path, { signal: ac.signal });
        expect((await m.tokenize("hello")).length).toBeGreaterThan(0);
        await m.dispose();
        outcomes.push("loaded");
      } catch (err) {
        expect(err).toBeInstanceOf(LlamemError);
        expect((err as LlamemError).code).toBe("ERR_ABORTED");
        outcomes.push("aborted");
      } finally {
        clearTimeout(timer);
      }
    }
    expect(outcomes).toContain("aborted");
    const ac = new AbortController();
    ac.abort();
    expect(await codeOf(loadModel(path, { signal: ac.signal }))).toBe("ERR_ABORTED");
    // Aborting after the load finished does not affect the model.
    const late = new AbortController();
    const m = await loadModel(path, { signal: late.signal });
    late.abort();
    expect((await m.tokenize("hello")).length).toBeGreaterThan(0);
    await m.dispose();
  });
});

describe("dispose in any order, any number of times", () => {
  it("dispose twice, concurrently, and through await using", async () => {
    const m = await loadModel(path);
    const ctx = await m.createContext({ contextSize: 128, threads: 1 });
    await Promise.all([ctx.dispose(), ctx.dispose(), ctx.dispose()]);
    await ctx.dispose();
    await Promise.all([m.dispose(), m.dispose()]);
    await m.dispose();
    {
      await using m2 = await loadModel(path);
      await using c2 = await m2.createContext({ contextSize: 128, threads: 1 });
      await c2.complete("Hi", { maxTokens: 2 });
      await m2.dispose(); // disposed inside the scope: the scope's disposal is then a no-op
    }
  });

  it("context after model, model after context, and the model first with many contexts", async () => {
    const m = await loadModel(path);
    const a = await m.createContext({ contextSize: 128, threads: 1 });
    const b = await m.createContext({ contextSize: 128, threads: 1 });
    await a.dispose();
    await m.dispose();
    expect(b.disposed).toBe(true);
    await b.dispose();

    const m2 = await loadModel(path);
    const contexts = await Promise.all(Array.from({ length: 6 }, () => m2.createContext({ contextSize: 64, threads: 1 })));
    const gens = contexts.map((c) => codeOf(c.complete("Hello", { maxTokens: 500, temperature: 1, seed: 1 })));
    await new Promise((r) => setTimeout(r, 2));
    await m2.dispose();
    for (const code of await Promise.all(gens)) expect([undefined, "ERR_CONTEXT_FULL", ...CUT_SHORT]).toContain(code);
    for (const c of contexts) expect(c.disposed).toBe(true);
  });
});

describe("aborts and concurrency", () => {
  it("after an abort the context keeps working and its token bookkeeping matches the cache", async () => {
    await using ctx = await model.createContext({ contextSize: 2048, threads: 1 });
    for (let round = 0; round < 3; round++) {
      const ac = new AbortController();
      let n = 0;
      const code = await codeOf((async () => {
        for await (const _ of ctx.generate("The story goes", { maxTokens: 1000, temperature: 0, signal: ac.signal })) {
          if (++n === 2 + round) ac.abort();
        }
      })());
      expect(code).toBe("ERR_ABORTED");
      expect(ctx.lastGeneration?.stopReason).toBe("aborted");
      const [, max] = contextSide(ctx).native.seqPosRange(0);
      expect(ctx.tokens.length).toBe(max + 1);
    }
    const r = await ctx.complete("The story goes", { maxTokens: 5, temperature: 0 });
    expect(r.generatedTokens).toBe(5);
    await ctx.dispose();
    await ctx.dispose();
  });

  it("refuses a second generation on the same sequence with ERR_BUSY, and runs sequences side by side", async () => {
    await using ctx = await model.createContext({ contextSize: 1024, sequences: 2, threads: 1 });
    const first = ctx.complete("First", { maxTokens: 40, temperature: 0 });
    expect(await codeOf(ctx.complete("Second", { maxTokens: 4 }))).toBe("ERR_BUSY");
    expect(await codeOf(ctx.sequence(0).evaluate([5, 6]))).toBe("ERR_BUSY");
    expect(await codeOf(ctx.sequence(0).clear())).toBe("ERR_BUSY");
    const other = ctx.sequence(1).complete("Other", { maxTokens: 10, temperature: 0 });
    const [a, b] = await Promise.all([first, other]);
    expect(a.generatedTokens).toBe(40);
    expect(b.generatedTokens).toBe(10);
    // The sequence is free again once the first generation is done.
    expect((await ctx.complete("Third", { maxTokens: 2 })).generatedTokens).toBe(2);
  });

  it("rejects bad arguments with ERR_INVALID_ARGUMENT before anything reaches llama.cpp", async () => {
    await using ctx = await model.createContext({ contextSize: 128, threads: 1 });
    const vocab = model.info.vocabSize;
    for (const tokens of [[-1], [vocab], [2 ** 31], [1, 2, -7]]) {
      expect(await codeOf(ctx.evaluate(tokens))).toBe("ERR_INVALID_ARGUMENT");
    }
    expect(await codeOf(model.detokenize([vocab + 5]))).toBe("ERR_INVALID_ARGUMENT");
    expect(() => model.tokenToPiece(-3)).toThrow(LlamemError);
    expect(await codeOf(ctx.complete("x", { maxTokens: -1 }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(model.createContext({ contextSize: 0 }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(model.createContext({ contextSize: 2 ** 40 }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(model.createContext({ sequences: 100000 }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(model.createContext({ threads: 0 }))).toBe("ERR_INVALID_ARGUMENT");
    // Still fine afterwards.
    expect((await ctx.complete("ok", { maxTokens: 1 })).generatedTokens).toBe(1);
  });
});

describe("garbage collection without dispose", () => {
  it("finalizers free models, contexts and samplers that were never disposed (child with --expose-gc)", async () => {
    ensureDist();
    const r = await runNode(["--expose-gc", join(FIXTURES, "gc-child.mjs"), path], { timeoutMs: 60_000 });
    expect(r.signal, describeEnd(r)).toBeNull();
    expect(r.code, describeEnd(r)).toBe(0);
    const rep = lastJson<{ ok: boolean; rounds: number }>(r.stdout);
    expect(rep?.ok).toBe(true);
  });
});
