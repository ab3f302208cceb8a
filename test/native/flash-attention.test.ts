import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadModel, type GenerationResult, type Model } from "../../lib/index.js";
import { archModel, tinyModel } from "../helpers/models.js";

// The CPU's flash attention kernels as llamem patches them. vendor/patches/0001 tiles short
// batches with the query heads that share a K/V head; vendor/patches/0003 decodes a single token
// (each generated token, once the context holds 512 positions or more) for those heads at once,
// over tiles of up to 64 positions, skipping the positions every head masks. These tests hold both to
// attention without flash attention: batch sizes on either side of the tiled path's threshold
// (8 rows: from 4 tokens on the tiny llama, two query heads per K/V head; from 8 on phi3, one),
// depths that span several 64-cell K/V tiles and end inside one, and another sequence's cells
// interleaved with the generating one's.

/** A fixed prompt of `n` ordinary token ids. */
function promptOf(n: number, salt = 0): number[] {
  return Array.from({ length: n }, (_, i) => 100 + ((i * 37 + salt * 11) % 900));
}

interface Logprobs {
  tokens: number[];
  top: number[][];
}

function logprobsOf(r: GenerationResult): Logprobs {
  const lp = r.logprobs ?? [];
  return { tokens: lp.map((t) => t.token), top: lp.map((t) => t.top.map((x) => x.logprob)) };
}

/** Greedy tokens and the log-probabilities of the top 8 at each, evaluated in batches of `batchSize`. */
async function logprobs(model: Model, prompt: number[], batchSize: number, flashAttention: "on" | "off", contextSize = 512): Promise<Logprobs> {
  await using ctx = await model.createContext({ contextSize, batchSize, flashAttention, threads: 2 });
  return logprobsOf(await ctx.complete(prompt, { maxTokens: 4, temperature: 0, logprobs: 8 }));
}

/**
 * The same, for sequence 0 of a unified cache whose cells alternate, 50 at a time, with another
 * sequence's 300 tokens: a single token's kernel then meets tiles that mask part of their cells.
 */
async function interleavedLogprobs(model: Model, prompt: number[], flashAttention: "on" | "off"): Promise<Logprobs> {
  await using ctx = await model.createContext({ contextSize: 1024, sequences: 2, kvUnified: true, batchSize: 64, flashAttention, threads: 2 });
  const other = promptOf(300, 3);
  for (let i = 0; i < 300; i += 50) {
    await ctx.sequence(0).evaluate(prompt.slice(i, i + 50));
    await ctx.sequence(1).evaluate(other.slice(i, i + 50));
  }
  await ctx.sequence(0).evaluate(prompt.slice(300));
  return logprobsOf(await ctx.sequence(0).complete(prompt, { maxTokens: 4, temperature: 0, logprobs: 8 }));
}

function maxDiff(a: number[][], b: number[][]): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) for (let j = 0; j < a[i]!.length; j++) m = Math.max(m, Math.abs(a[i]![j]! - b[i]![j]!));
  return m;
}

/**
 * Agreement asked of flash attention on and off: f16 K/V both ways, the sums only run in another
 * order (measured: at most 1.6e-4, the same with and without the tiled kernel).
 */
const TOLERANCE = 5e-4;

describe.each([
  ["the tiny llama (grouped-query attention)", () => tinyModel("f16")],
  ["phi3 (a K/V head per query head)", () => archModel("phi3", "f16")],
])("flash attention on the CPU, %s", (_name, file) => {
  let model: Model;

  beforeAll(async () => {
    model = await loadModel(await file());
  });
  afterAll(async () => {
    await model.dispose();
  });

  it.each([1, 3, 4, 8, 13, 61, 64, 100])("matches attention without it in batches of %i at depth", async (batchSize) => {
    const prompt = promptOf(300);
    const off = await logprobs(model, prompt, batchSize, "off");
    const on = await logprobs(model, prompt, batchSize, "on");
    expect(on.tokens).toHaveLength(4);
    expect(on.tokens).toEqual(off.tokens);
    expect(maxDiff(on.top, off.top)).toBeLessThan(TOLERANCE);
  });

  it("matches attention without it deeper, where the single-token kernel's chunks span several tiles on both threads", async () => {
    const prompt = promptOf(700);
    const off = await logprobs(model, prompt, 64, "off", 1024);
    const on = await logprobs(model, prompt, 64, "on", 1024);
    expect(on.tokens).toHaveLength(4);
    expect(on.tokens).toEqual(off.tokens);
    expect(maxDiff(on.top, off.top)).toBeLessThan(TOLERANCE);
  });

  it("masks another sequence's cells interleaved with the generating one's", async () => {
    const prompt = promptOf(320);
    const on = await interleavedLogprobs(model, prompt, "on");
    expect(on.tokens).toHaveLength(4);
    // Attention without flash attention, with and without the other sequence in the cache.
    for (const off of [await interleavedLogprobs(model, prompt, "off"), await logprobs(model, prompt, 64, "off", 1024)]) {
      expect(on.tokens).toEqual(off.tokens);
      expect(maxDiff(on.top, off.top)).toBeLessThan(TOLERANCE);
    }
  });

  it("the comparison can fail: other tokens earlier in the context move the log-probabilities far past the tolerance", async () => {
    // Attention alone carries positions 100-159 to the last token; a kernel that mixed the wrong
    // rows or heads would differ by this order, not by rounding's.
    const prompt = promptOf(300);
    const other = [...prompt.slice(0, 100), ...promptOf(60, 7), ...prompt.slice(160)];
    const a = await logprobs(model, prompt, 61, "off");
    const b = await logprobs(model, other, 61, "off");
    expect(maxDiff(a.top, b.top)).toBeGreaterThan(10 * TOLERANCE);
  });
});
