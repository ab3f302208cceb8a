/**
 * Speculative decoding: a draft model proposes tokens, the context's model verifies them in one
 * decode. Whatever the draft proposes, the output must be what decoding without it gives, byte
 * for byte: greedy or seeded sampling, several sequences at once, grammars, stop strings and
 * limits. The model as its own draft is accepted (nearly) always; a draft with other weights
 * (another seed of the same shape and vocabulary) almost never is, which exercises rejection.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, estimateMemory, fitModel, loadModel, type Context, type GenerateOptions, type Model } from "../../lib/index.js";
import { archModel, tinyModel } from "../helpers/models.js";
import { codeOf, failure } from "../helpers/errors.js";

const PROMPTS = ["The quick brown fox", "Once upon a time, in a land far away,", "1, 2, 3,"];
let target: Model;
let other: Model;
let plain: Context;
let self: Context;
let rejecting: Context;

const SHAPE = { contextSize: 512, sequences: 2, threads: 1 } as const;

beforeAll(async () => {
  target = await loadModel(await tinyModel("f16", 1));
  other = await loadModel(await tinyModel("f16", 2));
  plain = await target.createContext(SHAPE);
  // Random weights are unsure of every token: minProbability 0 drafts anyway.
  self = await target.createContext({ ...SHAPE, draft: { model: target, maxDraftTokens: 6, minProbability: 0 } });
  rejecting = await target.createContext({ ...SHAPE, draft: { model: other, maxDraftTokens: 4, minProbability: 0 } });
});

afterAll(async () => {
  for (const c of [plain, self, rejecting]) await c?.dispose();
  await target?.dispose();
  await other?.dispose();
});

/** The text of a generation on sequence `seq` of `ctx`, from an empty cache. */
async function run(ctx: Context, prompt: string, o: GenerateOptions, seq = 0) {
  const s = ctx.sequence(seq);
  await s.clear();
  return s.complete(prompt, o);
}

describe("speculative decoding", () => {
  it("greedy output equals decoding without a draft, byte for byte; the model as its own draft is accepted", async () => {
    for (const prompt of PROMPTS) {
      const o = { maxTokens: 48, temperature: 0 };
      const want = await run(plain, prompt, o);
      const got = await run(self, prompt, o);
      expect(got.text).toBe(want.text);
      expect(got.generatedTokens).toBe(want.generatedTokens);
      expect(got.stopReason).toBe(want.stopReason);
      expect(got.draft?.drafted).toBeGreaterThan(0);
      // The draft computes what the target computes; a batch of several rows may round differently at a near tie, so not every draft must pass.
      expect(got.draft?.accepted).toBeGreaterThan((got.draft?.drafted ?? 0) * 0.8);
      expect(want.draft).toBeUndefined();
    }
    const stats = self.draftStats;
    expect(stats?.accepted).toBeGreaterThan(0);
    expect(plain.draftStats).toBeUndefined();
  });

  it("a draft with other weights is rejected, and the output is still the model's own", async () => {
    for (const prompt of PROMPTS) {
      const o = { maxTokens: 32, temperature: 0 };
      const want = await run(plain, prompt, o);
      const got = await run(rejecting, prompt, o);
      expect(got.text).toBe(want.text);
      expect(got.draft?.drafted).toBeGreaterThan(0);
      expect(got.draft?.accepted).toBeLessThan(got.draft?.drafted ?? 0);
    }
  });

  it("seeded sampling draws the same tokens: each emitted token is one draw of the model's own sampler", async () => {
    const o = { maxTokens: 40, temperature: 0.9, topK: 0, topP: 1, minP: 0, seed: 1234 };
    const want = await run(plain, PROMPTS[1] as string, o);
    expect((await run(self, PROMPTS[1] as string, o)).text).toBe(want.text);
    expect((await run(rejecting, PROMPTS[1] as string, o)).text).toBe(want.text);
  });

  it("two sequences generating at once each get their own output", async () => {
    const o = { maxTokens: 40, temperature: 0 };
    const want = [await run(plain, PROMPTS[0] as string, o, 0), await run(plain, PROMPTS[2] as string, o, 1)];
    await self.sequence(0).clear();
    await self.sequence(1).clear();
    const got = await Promise.all([self.sequence(0).complete(PROMPTS[0] as string, o), self.sequence(1).complete(PROMPTS[2] as string, o)]);
    expect(got.map((g) => g.text)).toEqual(want.map((w) => w.text));
  });

  it("limits end at the same token: maxTokens, stop strings, a full context, a grammar", async () => {
    const greedy = { temperature: 0 };
    for (const maxTokens of [1, 2, 5, 7]) {
      const want = await run(plain, PROMPTS[0] as string, { ...greedy, maxTokens });
      const got = await run(self, PROMPTS[0] as string, { ...greedy, maxTokens });
      expect([got.text, got.generatedTokens]).toEqual([want.text, want.generatedTokens]);
    }
    // A stop string cut from the plain output's middle.
    const full = (await run(plain, PROMPTS[1] as string, { ...greedy, maxTokens: 40 })).text;
    const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
    const want = await run(plain, PROMPTS[1] as string, { ...greedy, maxTokens: 40, stop: [stop] });
    const got = await run(self, PROMPTS[1] as string, { ...greedy, maxTokens: 40, stop: [stop] });
    expect([got.text, got.stopReason, got.generatedTokens]).toEqual([want.text, want.stopReason, want.generatedTokens]);
    // 512 cells over 2 sequences: 256 each, filled to the end (end of generation kept out).
    const noEnd = { ...greedy, maxTokens: 1000, logitBias: [{ token: target.info.eos, bias: -100 }] };
    const wantFull = await run(plain, PROMPTS[2] as string, noEnd);
    const gotFull = await run(self, PROMPTS[2] as string, noEnd);
    expect(wantFull.stopReason).toBe("contextFull");
    expect([gotFull.text, gotFull.stopReason, gotFull.generatedTokens]).toEqual([wantFull.text, wantFull.stopReason, wantFull.generatedTokens]);
    expect(self.sequence(0).tokens).toEqual(plain.sequence(0).tokens);
    const schema = { type: "object", properties: { a: { type: "integer" }, b: { type: "string", maxLength: 8 } }, required: ["a", "b"], additionalProperties: false } as const;
    const wantJson = await run(plain, PROMPTS[0] as string, { ...greedy, maxTokens: 60, jsonSchema: schema });
    const gotJson = await run(rejecting, PROMPTS[0] as string, { ...greedy, maxTokens: 60, jsonSchema: schema });
    expect(gotJson.text).toBe(wantJson.text);
    expect(gotJson.draft?.drafted).toBeGreaterThan(0);
  });

  it("sessions in a pool, turn after turn, reply as without a draft", async () => {
    const chat = async (ctx: Context) => {
      await ctx.clear();
      await using pool = createPool(ctx);
      const sessions = await Promise.all([0, 1].map((i) => pool.createSession({ system: `You are assistant ${i}.`, maxTokens: 12 + 4 * i, temperature: 0 })));
      return await Promise.all(sessions.map(async (s, i) => [await s.prompt(`Tell me about ${PROMPTS[i]}`), await s.prompt("And then?")]));
    };
    const want = await chat(plain);
    const before = rejecting.draftStats?.drafted ?? 0;
    expect(await chat(rejecting)).toEqual(want);
    expect(await chat(self)).toEqual(want);
    expect(rejecting.draftStats?.drafted).toBeGreaterThan(before);
  });

  it("the cache holds exactly the kept tokens: a follow-up prompt reuses them and continues as without a draft", async () => {
    const o = { maxTokens: 24, temperature: 0 };
    const first = await run(rejecting, PROMPTS[0] as string, o);
    const want = await run(plain, PROMPTS[0] as string, o);
    expect(rejecting.sequence(0).tokens).toEqual(plain.sequence(0).tokens);
    const [a, b] = [await rejecting.sequence(0).complete(PROMPTS[0] + first.text + " and", o), await plain.sequence(0).complete(PROMPTS[0] + want.text + " and", o)];
    expect(a.text).toBe(b.text);
    expect(a.evaluatedPromptTokens).toBe(b.evaluatedPromptTokens);
  });

  it("log-probabilities are recorded one token at a time, without drafts", async () => {
    const got = await run(self, PROMPTS[0] as string, { maxTokens: 8, temperature: 0, logprobs: 2 });
    expect(got.logprobs).toHaveLength(got.generatedTokens);
    expect(got.draft).toBeUndefined();
  });

  it("the draft's context counts in memory(), estimateMemory and fitModel", async () => {
    const m = await self.memory();
    expect(m.draft?.kv).toBeGreaterThan(0);
    expect(m.draft?.compute).toBeGreaterThan(0);
    const path = await tinyModel("f16", 1);
    const draftPath = await tinyModel("f16", 2);
    const alone = await estimateMemory(path, { contextSize: 512 });
    const both = await estimateMemory(path, { contextSize: 512, draft: { path: draftPath } });
    expect(alone.draft).toBe(0);
    // The draft is the same shape: its weights and context double the estimate, and the main
    // context's compute grows a little for the logits rows of the drafts it verifies.
    expect(both.draft).toBe(alone.total);
    expect(both.total - alone.total * 2).toBeGreaterThanOrEqual(0);
    expect(both.total - alone.total * 2).toBeLessThan(1 << 20);
    expect(both.kv).toBe(alone.kv * 2);
    const budget = (await estimateMemory(path, { contextSize: 2048 })).total;
    // Twice that, and the main context's room for the drafts' logits rows.
    const rows = (await estimateMemory(path, { contextSize: 2048, draft: { path: draftPath } })).total - budget * 2;
    const fitAlone = await fitModel(path, { contextSize: "auto", maxRam: budget });
    const fitBoth = await fitModel(path, { contextSize: "auto", maxRam: budget * 2 + rows, draft: { path: draftPath } });
    expect(fitAlone.contextSize).toBeGreaterThanOrEqual(2048);
    expect(fitBoth.contextSize).toBe(fitAlone.contextSize);
    expect(fitBoth.estimate.draft).toBeGreaterThan(0);
    expect((await failure(fitModel(path, { contextSize: 2048, maxRam: budget, draft: { path: draftPath } }))).code).toBe("ERR_INSUFFICIENT_MEMORY");
  });

  it("refuses a draft it cannot use, before allocating anything", async () => {
    const spmOther = await loadModel(await archModel("qwen2"));
    const mamba = await loadModel(await archModel("mamba"));
    try {
      expect((await failure(target.createContext({ ...SHAPE, draft: { model: spmOther } }))).message).toMatch(/another vocabulary/);
      expect((await failure(target.createContext({ ...SHAPE, draft: { model: mamba } }))).message).toMatch(/recurrent/);
      for (const bad of [{ maxDraftTokens: 0 }, { maxDraftTokens: 65 }, { maxDraftTokens: 1.5 }, { minProbability: -0.1 }, { minProbability: Number.NaN }]) {
        expect(await codeOf(target.createContext({ ...SHAPE, draft: { model: target, ...bad } }))).toBe("ERR_INVALID_ARGUMENT");
      }
      expect(await codeOf(target.createContext({ ...SHAPE, embeddings: true, draft: { model: target } }))).toBe("ERR_INVALID_ARGUMENT");
      expect(await codeOf(target.createContext({ ...SHAPE, draft: { model: {} as Model } }))).toBe("ERR_INVALID_ARGUMENT");
    } finally {
      await spmOther.dispose();
      await mamba.dispose();
    }
  });
});
