/**
 * Logit bias (by token id and by text) and the samplers beyond the default chain (DRY, XTC,
 * typical, top-n-sigma, Mirostat 2.0), all llama.cpp's own: each changes what is sampled where it
 * should, is reproducible with a seed, and is validated.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, type Context, type GenerateOptions, type Model } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";

let model: Model;
let ctx: Context;

beforeAll(async () => {
  model = await loadModel(await tinyModel("f16"));
  ctx = await model.createContext({ contextSize: 512, threads: 1 });
});

afterAll(async () => {
  await ctx.dispose();
  await model.dispose();
});

async function tokens(prompt: string, o: GenerateOptions): Promise<number[]> {
  const ids: number[] = [];
  await ctx.complete(prompt, { ...o, onToken: (t) => ids.push(t) });
  return ids;
}

describe("logit bias", () => {
  it("by token id: a large bias forces a token, -Infinity bans one", async () => {
    const base = await tokens("The quick brown fox", { maxTokens: 6, temperature: 0 });
    const forced = await tokens("The quick brown fox", { maxTokens: 6, temperature: 0, logitBias: [{ token: 1000, bias: 100 }] });
    expect(forced).toEqual(Array(6).fill(1000));
    const banned = await tokens("The quick brown fox", { maxTokens: 6, temperature: 0, logitBias: [{ token: base[0] as number, bias: -Infinity }] });
    expect(banned[0]).not.toBe(base[0]);
    expect(banned).not.toContain(base[0]);
  });

  it("by text: each of the text's tokens gets the bias", async () => {
    const paris = [...(await model.tokenize(" Paris", { addSpecial: false }))];
    const out = await tokens("Hello", { maxTokens: 8, temperature: 0.8, seed: 3, logitBias: [{ text: " Paris", bias: 100 }] });
    for (const t of out) expect(paris).toContain(t);
    // In a session too.
    await using session = await createSession(ctx.sequence(0), { temperature: 0, logitBias: [{ token: 1000, bias: 100 }] });
    const reply = await session.respond("hi", { maxTokens: 3 });
    expect(reply.generation.generatedTokens).toBe(3);
    expect(reply.text).toBe((await model.detokenize([1000, 1000, 1000])));
  });

  it("bad entries are ERR_INVALID_ARGUMENT naming the entry", async () => {
    for (const logitBias of [[{ token: -1, bias: 1 }], [{ token: 1e9, bias: 1 }], [{ token: 5, bias: Infinity }], [{ token: 5, bias: Number.NaN }], [{ text: "", bias: 1 }], [{ bias: 1 }], "x"]) {
      await expect(tokens("x", { maxTokens: 1, logitBias: logitBias as never })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: expect.stringMatching(/logitBias/) });
    }
  });
});

describe("samplers", () => {
  const cases: [string, GenerateOptions][] = [
    ["DRY", { dryMultiplier: 2, dryBase: 2, dryAllowedLength: 1, dryLastN: -1, drySequenceBreakers: ["\n"] }],
    ["XTC", { xtcProbability: 1, xtcThreshold: 0.001 }],
    ["typical", { typicalP: 0.3 }],
    ["top-n-sigma", { topNSigma: 0.5 }],
    ["Mirostat 2.0", { mirostat: true, mirostatTau: 3, mirostatEta: 0.2 }],
  ];
  for (const [name, o] of cases) {
    it(`${name}: the same seed gives the same tokens, and the sampler changes what is drawn (DRY: only on repetition)`, async () => {
      const base = { maxTokens: 24, temperature: 1, topK: 0, topP: 1, minP: 0, seed: 11 };
      const a = await tokens("Once upon a time", { ...base, ...o });
      const b = await tokens("Once upon a time", { ...base, ...o });
      expect(a).toEqual(b);
      expect(a.length).toBe(24);
      // DRY acts on repetition only, which random text lacks: its effect is tested below.
      if (name === "DRY") return;
      const plain = await tokens("Once upon a time", base);
      expect(a, `${name} drew exactly what the plain draw did`).not.toEqual(plain);
    });
  }

  it("DRY stops a forced repetition from going on", async () => {
    // A bias makes two tokens far likelier than the rest: without DRY the reply repeats them.
    const logitBias = [{ token: 1000, bias: 8 }, { token: 2000, bias: 8 }];
    const plain = await tokens("x", { maxTokens: 24, temperature: 1, seed: 5, logitBias });
    const dry = await tokens("x", { maxTokens: 24, temperature: 1, seed: 5, logitBias, dryMultiplier: 4, dryBase: 2, dryAllowedLength: 1, dryLastN: -1 });
    const repeated = (ids: number[]) => ids.filter((t) => t === 1000 || t === 2000).length;
    expect(repeated(dry)).toBeLessThan(repeated(plain));
  });

  it("bad values are ERR_INVALID_ARGUMENT naming the option", async () => {
    const bad: [keyof GenerateOptions, unknown][] = [
      ["dryMultiplier", -1], ["dryBase", 0.5], ["dryAllowedLength", 1.5], ["dryLastN", -2], ["drySequenceBreakers", [""]],
      ["xtcProbability", 2], ["xtcThreshold", -0.1], ["typicalP", 1.5], ["topNSigma", -1], ["mirostat", "yes"], ["mirostatTau", -1], ["mirostatEta", 2],
    ];
    for (const [key, value] of bad) {
      await expect(tokens("x", { maxTokens: 1, [key]: value } as GenerateOptions)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT", message: expect.stringContaining(key) });
    }
  });
});

describe("log-probabilities", () => {
  it("greedy: the chosen token is the most likely, with its log-probability; the top ones are ordered and sum to at most 1", async () => {
    const r = await ctx.complete("The quick brown fox", { maxTokens: 8, temperature: 0, logprobs: 5 });
    expect(r.logprobs?.length).toBe(8);
    for (const lp of r.logprobs ?? []) {
      expect(lp.top.length).toBe(5);
      expect(lp.top[0]?.token).toBe(lp.token);
      expect(lp.top[0]?.logprob).toBeCloseTo(lp.logprob, 6);
      for (let i = 1; i < lp.top.length; i++) expect(lp.top[i]?.logprob).toBeLessThanOrEqual(lp.top[i - 1]?.logprob as number);
      expect(lp.top.reduce((sum, t) => sum + Math.exp(t.logprob), 0)).toBeLessThanOrEqual(1 + 1e-6);
      expect(lp.logprob).toBeLessThanOrEqual(0);
    }
    // More alternatives cover more of the distribution, never more than all of it.
    const all = await ctx.complete("The quick brown fox", { maxTokens: 1, temperature: 0, logprobs: 100 });
    const one = (all.logprobs ?? [])[0];
    expect(one?.top.length).toBe(100);
    const mass = (n: number) => (one?.top ?? []).slice(0, n).reduce((sum, t) => sum + Math.exp(t.logprob), 0);
    expect(mass(100)).toBeGreaterThan(mass(5));
    expect(mass(100)).toBeLessThanOrEqual(1 + 1e-6);
    // Without logprobs nothing is recorded.
    expect((await ctx.complete("x", { maxTokens: 2 })).logprobs).toBeUndefined();
    await expect(ctx.complete("x", { maxTokens: 1, logprobs: 101 })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });

  it("the values are the model's distribution: plain draws at temperature 1 pick the top token as often as exp(logprob) says", async () => {
    const prompt = "Once upon a time";
    const r = await ctx.complete(prompt, { maxTokens: 1, temperature: 0, logprobs: 3 });
    const top = (r.logprobs ?? [])[0]?.top ?? [];
    // A prompt whose top token is likely enough for the count to say something.
    const p = Math.exp(top[0]?.logprob as number);
    const draws = 600;
    let hits = 0;
    for (let seed = 0; seed < draws; seed++) {
      const d = await ctx.complete(prompt, { maxTokens: 1, temperature: 1, topK: 0, topP: 1, minP: 0, seed, logprobs: 0 });
      if ((d.logprobs ?? [])[0]?.token === top[0]?.token) hits++;
      // The log-probability does not depend on the sampler settings.
      expect((d.logprobs ?? [])[0]?.top).toEqual([]);
    }
    const sigma = Math.sqrt((p * (1 - p)) / draws);
    expect(Math.abs(hits / draws - p), `p ${p.toFixed(4)}, drawn ${(hits / draws).toFixed(4)}`).toBeLessThanOrEqual(4 * sigma + 0.005);
  }, 120_000);

  it("in a session: respond().generation.logprobs", async () => {
    await using session = await createSession(ctx.sequence(0), { temperature: 0 });
    const reply = await session.respond("hi", { maxTokens: 4, logprobs: 2 });
    expect(reply.generation.logprobs?.length).toBe(4);
    expect(reply.generation.logprobs?.[0]?.top.length).toBe(2);
  });
});

