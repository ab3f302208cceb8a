/**
 * Embeddings and reranking: llama.cpp's own embedding example (test/fixtures/reference-embeddings.json,
 * written by scripts/reference.mjs) gives the same vectors and scores, on a BERT encoder, a BERT
 * reranker and a decoder; a text's vector does not depend on the batch it is in; the options and
 * misuses are typed errors; the estimate covers an embedding context.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { estimateMemory, loadModel, type Model } from "../../lib/index.js";
import type { PoolingType } from "../../lib/options.js";
import { archModel } from "../helpers/models.js";

const THREADS = 2;
const FIXTURE = join(import.meta.dirname, "..", "fixtures", "reference-embeddings.json");

interface ReferenceCase {
  arch: "bert" | "bert-reranker" | "qwen2";
  type: "f16";
  seed: number;
  pooling: PoolingType;
  normalize: number;
  texts?: string[];
  embeddings?: number[][];
  query?: string;
  documents?: string[];
  scores?: number[];
  tolerance?: number;
}

const models = new Map<string, Model>();
async function model(arch: ReferenceCase["arch"]): Promise<Model> {
  let m = models.get(arch);
  if (!m) {
    m = await loadModel(await archModel(arch, "f16"));
    models.set(arch, m);
  }
  return m;
}

afterAll(async () => {
  for (const m of models.values()) await m.dispose();
});

const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
};
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
};

describe("embeddings against llama.cpp's embedding example", () => {
  const cases: ReferenceCase[] = existsSync(FIXTURE) ? (JSON.parse(readFileSync(FIXTURE, "utf8")) as { cases: ReferenceCase[] }).cases : [];

  it("has reference cases for an encoder, a reranker and a decoder", () => {
    expect(new Set(cases.map((c) => c.arch))).toEqual(new Set(["bert", "bert-reranker", "qwen2"]));
  });

  for (const c of cases) {
    const name = `${c.arch} ${c.pooling}${c.scores ? "" : ` normalize ${c.normalize}`}`;
    it(name, async () => {
      const m = await model(c.arch);
      const tolerance = c.tolerance ?? 1e-4;
      if (c.scores) {
        const scores = await m.rerank(c.query as string, c.documents as string[], { threads: THREADS });
        expect(scores.length).toBe(c.scores.length);
        expect(maxDiff(scores, c.scores), `${scores} vs ${c.scores}`).toBeLessThanOrEqual(tolerance);
        return;
      }
      const vectors = await m.embed(c.texts as string[], { pooling: c.pooling, normalize: c.normalize === 2, threads: THREADS });
      (c.embeddings as number[][]).forEach((ref, i) => {
        expect(vectors[i]?.length).toBe(ref.length);
        expect(maxDiff(vectors[i] as Float32Array, ref), `text ${i}`).toBeLessThanOrEqual(tolerance);
      });
    });
  }
});

describe("embedding contexts", () => {
  it("a text's vector is the same alone and in a batch, over several passes", async () => {
    const m = await model("qwen2");
    await using ctx = await m.createContext({ embeddings: true, pooling: "mean", contextSize: 64, batchSize: 64, sequences: 4, threads: THREADS });
    const texts = ["a river of stone", "memory", "the quiet garden at the end of winter", "signal", "paper cloud engine", "silver orbit"];
    const together = await ctx.embed(texts);
    // Flash attention (the CPU's default) sums a row's softmax over K/V tiles whose bounds fall
    // elsewhere in the cache when the text shares it with others, so the two differ by rounding
    // (measured up to 6.5e-5 on unit vectors; 1e-5 held with flash attention off).
    for (const [i, t] of texts.entries()) {
      const [alone] = await ctx.embed([t]);
      expect(maxDiff(alone as Float32Array, together[i] as Float32Array), t).toBeLessThan(2e-4);
    }
    // Unit length by default; raw vectors with normalize: false.
    for (const v of together) expect(Math.abs(dot(v, v) - 1)).toBeLessThan(1e-5);
    const [raw] = await ctx.embed([texts[0] as string], { normalize: false });
    expect(Math.abs(dot(raw as Float32Array, raw as Float32Array) - 1)).toBeGreaterThan(1e-3);
    expect(ctx.info).toMatchObject({ embeddings: true, pooling: "mean", embeddingSize: 64 });
  });

  it("texts that share words are closer than unrelated ones (mean pooling, random weights)", async () => {
    const m = await model("qwen2");
    const [a, b, c] = await m.embed(["the river runs past the old stone mill", "the old stone mill by the river", "quantum chromodynamics lecture notes"], { pooling: "mean", threads: THREADS });
    expect(dot(a as Float32Array, b as Float32Array)).toBeGreaterThan(dot(a as Float32Array, c as Float32Array));
  });

  it("misuse is a typed error and leaves the context usable", async () => {
    const m = await model("qwen2");
    await using ctx = await m.createContext({ embeddings: true, pooling: "last", contextSize: 32, batchSize: 32, threads: THREADS });
    await expect(ctx.complete("hi", { maxTokens: 2 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(ctx.embed(["word ".repeat(100)])).rejects.toMatchObject({ code: "ERR_CONTEXT_FULL" });
    // With truncate, a long text is embedded from its first tokens and its last.
    expect((await ctx.embed(["word ".repeat(100)], { truncate: true }))[0]?.length).toBe(64);
    await expect(ctx.embed("text" as unknown as string[])).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(ctx.embed([""])).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(ctx.rerank("q", ["d"])).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    const aborted = new AbortController();
    aborted.abort();
    await expect(ctx.embed(["x"], { signal: aborted.signal })).rejects.toMatchObject({ code: "ERR_ABORTED" });
    expect((await ctx.embed(["still works"])).length).toBe(1);
    await using gen = await m.createContext({ contextSize: 64, threads: THREADS });
    await expect(gen.embed(["x"])).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(m.createContext({ pooling: "mean" })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(m.createContext({ embeddings: true, pooling: "sum" as PoolingType })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(m.createContext({ embeddings: true, kvUnified: false })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    // Sequences that do not divide the micro-batch would make llama.cpp assert: refused first.
    await expect(m.createContext({ embeddings: true, pooling: "mean", contextSize: 64, batchSize: 64, sequences: 3 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });

  it("a BERT encoder embeds (the same text, the same vector), and a reranker scores pairs", async () => {
    const bert = await model("bert");
    const [a, b] = await bert.embed(["hello world", "hello world"], { threads: THREADS });
    expect(maxDiff(a as Float32Array, b as Float32Array)).toBeLessThan(1e-6);
    const reranker = await model("bert-reranker");
    const scores = await reranker.rerank("what is a river", ["a river is water that flows", "stones", "mills"], { threads: THREADS });
    expect(scores.length).toBe(3);
    for (const s of scores) expect(Number.isFinite(s)).toBe(true);
  });

  it("the estimate covers an embedding context", async () => {
    const path = await archModel("bert", "f16");
    const shape = { embeddings: true, contextSize: 256, batchSize: 256, sequences: 4 } as const;
    const est = await estimateMemory(path, shape);
    const m = await model("bert");
    await using ctx = await m.createContext({ ...shape, threads: THREADS });
    const mem = await ctx.memory();
    expect(est.weights).toBe(mem.weights);
    expect(Math.abs(est.compute - mem.compute)).toBeLessThanOrEqual(0.05 * Math.max(1, mem.compute));
    // The fit sizes an embedding context under a budget too.
    await using fitted = await m.createContext({ embeddings: true, contextSize: "auto", maxRam: 64 * 2 ** 20, threads: THREADS });
    expect(fitted.fit?.contextSize).toBe(fitted.info.contextSize);
    expect(fitted.fit?.estimate.total).toBeLessThanOrEqual(64 * 2 ** 20);
    expect((await fitted.embed(["fits"]))[0]?.length).toBe(64);
  });
});
