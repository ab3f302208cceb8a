/**
 * Backend sampling (`backendSampling`): the sampler chain runs inside the decode's graph, and only
 * the chosen token comes back. This build's output layer is on the CPU, so "auto" leaves it off
 * and `true` runs it there: the mechanism is the one a GPU uses, on another device. Each test
 * checks that the device did sample (`backendSampledTokens`) and picked what the CPU picks.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, loadModel, type Context, type GenerateOptions, type Model } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";

let model: Model;
let ctx: Context;
const prompt = "The quick brown fox";

beforeAll(async () => {
  model = await loadModel(await tinyModel("f16"));
  ctx = await model.createContext({ contextSize: 512, sequences: 2, threads: 1 });
});

afterAll(async () => {
  await ctx.dispose();
  await model.dispose();
});

/** End of generation banned, so every generation takes its 8 tokens whatever the CPU's rounding. */
const noEnd = () => ({ token: model.info.eos, bias: -Infinity });

/** The tokens one generation on sequence `seq` picks, and how many of them the device sampled. */
async function run(o: GenerateOptions, seq = 0): Promise<{ ids: number[]; backend: number }> {
  const ids: number[] = [];
  const s = ctx.sequence(seq);
  await s.clear();
  const r = await s.complete(prompt, { maxTokens: 8, ...o, logitBias: [...(o.logitBias ?? []), noEnd()], onToken: (t) => ids.push(t) });
  return { ids, backend: r.backendSampledTokens };
}

describe("backend sampling", () => {
  it("the output layer's device is named, and on the CPU \"auto\" samples on the CPU", async () => {
    expect(model.info.outputDevice).toBe("CPU");
    expect((await run({ temperature: 0 })).backend).toBe(0);
    expect((await run({ temperature: 0.8, seed: 1 })).backend).toBe(0);
  });

  it("greedy, with logit biases: the device picks every token the CPU picks", async () => {
    const base = await run({ temperature: 0, backendSampling: false });
    const dev = await run({ temperature: 0, backendSampling: true });
    expect(base.ids).toHaveLength(8);
    expect(base.backend).toBe(0);
    expect(dev).toEqual({ ids: base.ids, backend: 8 });
    const logitBias = [{ token: base.ids[1]!, bias: -Infinity }, { token: 1000, bias: 3 }];
    const biased = await run({ temperature: 0, logitBias, backendSampling: false });
    expect(biased.ids).not.toContain(base.ids[1]);
    expect(await run({ temperature: 0, logitBias, backendSampling: true })).toEqual({ ids: biased.ids, backend: 8 });
  });

  it("the default chain on the device: a seed reproduces the text, and top-k 1 is greedy", async () => {
    const a = await run({ seed: 7, backendSampling: true });
    expect(a.backend).toBe(8);
    expect(await run({ seed: 7, backendSampling: true })).toEqual(a);
    const greedy = await run({ temperature: 0, backendSampling: false });
    expect(await run({ seed: 9, topK: 1, backendSampling: true })).toEqual({ ids: greedy.ids, backend: 8 });
  });

  it("penalties, log-probabilities and grammars sample on the CPU, with the same result as without asking", async () => {
    for (const o of [{ temperature: 0, repeatPenalty: 1.3 }, { temperature: 0, logprobs: 2 }, { temperature: 0, grammar: 'root ::= [a-z ]+' }] as GenerateOptions[]) {
      const cpu = await run({ ...o, backendSampling: false });
      expect(await run({ ...o, backendSampling: true })).toEqual({ ids: cpu.ids, backend: 0 });
    }
  });

  it("a context that verifies drafts samples on the CPU", async () => {
    const greedy = (await run({ temperature: 0, backendSampling: false })).ids;
    await using drafting = await model.createContext({ contextSize: 512, threads: 1, draft: { model, maxDraftTokens: 4, minProbability: 0 } });
    const ids: number[] = [];
    const r = await drafting.complete(prompt, { maxTokens: 8, temperature: 0, backendSampling: true, logitBias: [noEnd()], onToken: (t) => ids.push(t) });
    expect(r.draft?.drafted).toBeGreaterThan(0);
    expect(r.backendSampledTokens).toBe(0);
    expect(ids).toEqual(greedy);
  });

  it("a sequence goes from device to CPU sampling and back, and two sequences sample on the device in one batch", async () => {
    const greedy = (await run({ temperature: 0, backendSampling: false })).ids;
    for (const backendSampling of [true, false, true, true]) {
      expect(await run({ temperature: 0, backendSampling })).toEqual({ ids: greedy, backend: backendSampling ? 8 : 0 });
    }
    await ctx.sequence(1).clear();
    const both = await Promise.all([run({ temperature: 0, backendSampling: true }, 0), run({ temperature: 0, backendSampling: true }, 1)]);
    expect(both).toEqual([{ ids: greedy, backend: 8 }, { ids: greedy, backend: 8 }]);
    const mixed = await Promise.all([run({ temperature: 0, backendSampling: false }, 0), run({ temperature: 0, logprobs: 1, backendSampling: true }, 1)]);
    expect(mixed).toEqual([{ ids: greedy, backend: 0 }, { ids: greedy, backend: 0 }]);
  });

  it("a pool of 4 sessions on 2 sequences (spilling) replies as with CPU sampling", async () => {
    const chat = async (backendSampling: boolean) => {
      await using pooled = await model.createContext({ contextSize: 2048, sequences: 2, threads: 1 });
      await using pool = createPool(pooled);
      const sessions = await Promise.all([0, 1, 2, 3].map((i) => pool.createSession({ temperature: 0, backendSampling, system: `You are assistant ${i}.` })));
      const texts: string[] = [];
      let device = 0;
      let generated = 0;
      for (let turn = 0; turn < 3; turn++) {
        for (const r of await Promise.all(sessions.map((s, i) => s.respond(`turn ${turn} from ${i}`, { maxTokens: 6 })))) {
          texts.push(r.text);
          device += r.generation.backendSampledTokens;
          generated += r.generation.generatedTokens;
        }
      }
      const stats = await pool.stats();
      return { texts, device, generated, spilled: stats.spilledMemory + stats.spilledDisk };
    };
    const cpu = await chat(false);
    const dev = await chat(true);
    expect(cpu.spilled).toBeGreaterThan(0);
    expect(cpu.device).toBe(0);
    expect(cpu.generated).toBeGreaterThan(12);
    expect(dev).toEqual({ texts: cpu.texts, device: cpu.generated, generated: cpu.generated, spilled: cpu.spilled });
  });

  it("costs no compute memory: the context reserves logits rows for its sequences only", async () => {
    await using plain = await model.createContext({ contextSize: 256, threads: 1 });
    await using dev = await model.createContext({ contextSize: 256, threads: 1 });
    await plain.complete(prompt, { maxTokens: 2, temperature: 0, backendSampling: false });
    expect((await dev.complete(prompt, { maxTokens: 2, temperature: 0, backendSampling: true })).backendSampledTokens).toBe(2);
    const [a, b] = [await plain.memory(), await dev.memory()];
    expect(b.compute - a.compute).toBeLessThan(1 << 20);
  });
});
