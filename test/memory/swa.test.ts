/**
 * Cache reuse on a sliding-window model knows what the cache still holds.
 *
 * llama.cpp keeps a sliding-window (SWA) layer's cache in cells of its own: window + ubatch cells
 * rounded up to 256 (unless swaFull), and once they run out it overwrites positions older than
 * the window. A prefix of a longer cached sequence can then lack, in those layers, the positions
 * the next tokens attend to. llamem checks llama_memory_seq_pos_min before it keeps a prefix
 * (prompt reuse, removeTokens' re-evaluation, sessions), and evaluates again from the start where
 * the positions are gone, as llama-server does. Every reuse check here is greedy token equality
 * with a fresh context; the first block checks what the estimate and the real cache count for
 * the sliding layers, with swaFull off and on.
 *
 * The model (test/memory/arch-models.ts) is gemma3-shaped: layer 0 slides over 32 tokens,
 * layer 1 is global. With ubatchSize 64 the SWA cache has 256 cells, so a sequence past ~256
 * tokens has lost its oldest positions from layer 0.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, estimateMemory, loadModel, type Context, type ContextOptions, type MemoryEvent, type Model } from "../../lib/index.js";
import { cacheHolds } from "../../lib/sequence.js";
import { GEMMA3, gemma3Model } from "./arch-models.js";

const SHAPE: ContextOptions = { contextSize: 1024, batchSize: 64, ubatchSize: 64, threads: 1 };
const N = 12;

let model: Model;
let words: number[] = [];

beforeAll(async () => {
  model = await loadModel(await gemma3Model());
  const text = Array.from({ length: 400 }, (_, i) => `w${(i * 7919) % 1000}`).join(" ");
  words = await model.tokenize(text);
});
afterAll(async () => {
  await model.dispose();
});

async function greedy(ctx: Context, tokens: readonly number[], n = N, seq = 0): Promise<number[]> {
  const ids: number[] = [];
  await ctx.sequence(seq).complete(tokens, { maxTokens: n, temperature: 0, onToken: (t) => ids.push(t) });
  return ids;
}

function common(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

async function fresh(tokens: readonly number[], options: ContextOptions = SHAPE, n = N): Promise<number[]> {
  await using ctx = await model.createContext(options);
  return await greedy(ctx, tokens, n);
}

describe("the model", () => {
  it("has a sliding window, and a context past its cells cannot shift", async () => {
    expect(model.info.architecture).toBe("gemma3");
    expect(model.info.slidingWindow).toBe(GEMMA3.window);
    expect(model.info.recurrent).toBe(false);
    await using ctx = await model.createContext(SHAPE);
    expect(ctx.info.canShift).toBe(false);
    await using full = await model.createContext({ ...SHAPE, swaFull: true });
    expect(full.info.canShift).toBe(true);
  });
});

describe("what the KV cache counts", () => {
  // Per layer and token: K and V, 1 KV head of 32, f16.
  const perCell = 2 * GEMMA3.nHeadKv * GEMMA3.headDim * 2;
  it.each([
    // swaFull off: the sliding layer keeps window + ubatch cells, rounded up to 256.
    [{ swaFull: false }, 1024 * perCell + 256 * perCell],
    [{ swaFull: false, contextSize: 2048, ubatchSize: 256, batchSize: 256 }, 2048 * perCell + 512 * perCell],
    // Two sequences: a sliding cache each, and with kvUnified one pool of window x 2 + ubatch.
    [{ swaFull: false, sequences: 2 }, 1024 * perCell + 2 * 256 * perCell],
    [{ swaFull: false, sequences: 2, kvUnified: true }, 1024 * perCell + 256 * perCell],
    // swaFull on: as many cells as the global layer.
    [{ swaFull: true }, 2 * 1024 * perCell],
  ])("%o: %d bytes, in the estimate and the real cache", async (o, bytes) => {
    const shape = { ...SHAPE, ...o };
    const est = await estimateMemory(model.path, shape);
    await using ctx = await model.createContext(shape);
    const mem = await ctx.memory();
    expect(mem.kv).toBe(bytes);
    expect(est.kv).toBe(bytes);
  });
});

describe("prompt reuse past the window", () => {
  it("a prefix whose window positions are gone is evaluated again, and equals a fresh context", async () => {
    await using ctx = await model.createContext(SHAPE);
    await greedy(ctx, words.slice(0, 500));
    const prompt = [...words.slice(0, 150), ...words.slice(600, 650)];
    const ids = await greedy(ctx, prompt);
    expect(ids).toEqual(await fresh(prompt));
    // Layer 0 no longer holds positions 119..149: nothing of the cached prefix was usable.
    expect(ctx.sequence(0).lastGeneration?.evaluatedPromptTokens).toBe(prompt.length);
  });

  it("a prefix whose window is still held is reused, and equals a fresh context", async () => {
    await using ctx = await model.createContext(SHAPE);
    await greedy(ctx, words.slice(0, 500));
    // The SWA cells hold roughly the last 256 positions: 480 - 31 is among them.
    const prompt = [...words.slice(0, 480), ...words.slice(600, 620)];
    const ids = await greedy(ctx, prompt);
    expect(ctx.sequence(0).lastGeneration?.evaluatedPromptTokens).toBe(prompt.length - common(words.slice(0, 500), prompt));
    expect(ids).toEqual(await fresh(prompt));
  });

  it("appending to a long sequence reuses all of it", async () => {
    await using ctx = await model.createContext(SHAPE);
    const first = words.slice(0, 500);
    const out = await greedy(ctx, first);
    const prompt = [...first, ...out, ...words.slice(600, 620)];
    const ids = await greedy(ctx, prompt);
    // The last token sampled was never fed back, so it is evaluated with the new ones.
    expect(ctx.sequence(0).lastGeneration?.evaluatedPromptTokens).toBe(21);
    expect(ids).toEqual(await fresh(prompt));
  });

  it("swaFull: the whole prefix stays usable and is reused", async () => {
    const shape = { ...SHAPE, swaFull: true };
    await using ctx = await model.createContext(shape);
    await greedy(ctx, words.slice(0, 500));
    const prompt = [...words.slice(0, 150), ...words.slice(600, 650)];
    const ids = await greedy(ctx, prompt);
    expect(ctx.sequence(0).lastGeneration?.evaluatedPromptTokens).toBe(prompt.length - common(words.slice(0, 500), prompt));
    expect(ids).toEqual(await fresh(prompt, shape));
    // And the full-size SWA cache computes what the default one does.
    expect(ids).toEqual(await fresh(prompt));
  });

  it("evaluate() after a cut that lost the window evaluates the kept tokens again", async () => {
    await using ctx = await model.createContext(SHAPE);
    const seq = ctx.sequence(0);
    await seq.evaluate(words.slice(0, 500));
    await seq.removeTokens(150, 500);
    expect(seq.tokens).toEqual(words.slice(0, 150));
    await seq.evaluate(words.slice(600, 650));
    const ids = await greedy(ctx, [...seq.tokens, ...words.slice(650, 660)]);
    expect(ids).toEqual(await fresh([...words.slice(0, 150), ...words.slice(600, 660)]));
  });
});

describe("removeTokens past the window", () => {
  it.each([
    ["early", 100, 150],
    ["late", 420, 440],
  ])("re-evaluates what it must (%s range) and equals a fresh context", async (_label, start, end) => {
    await using ctx = await model.createContext(SHAPE);
    const seq = ctx.sequence(0);
    const all = words.slice(0, 500);
    await seq.evaluate(all);
    expect(await seq.removeTokens(start, end)).toBe(false);
    const kept = [...all.slice(0, start), ...all.slice(end)];
    expect(seq.tokens).toEqual(kept);
    const tail = words.slice(600, 610);
    const ids = await greedy(ctx, [...kept, ...tail]);
    expect(ctx.sequence(0).lastGeneration?.evaluatedPromptTokens).toBe(tail.length);
    expect(ids).toEqual(await fresh([...kept, ...tail]));
  });

  it("swaFull shifts in place", async () => {
    await using ctx = await model.createContext({ ...SHAPE, swaFull: true });
    const seq = ctx.sequence(0);
    await seq.evaluate(words.slice(0, 500));
    expect(await seq.removeTokens(100, 150)).toBe(true);
    expect(seq.tokens.length).toBe(450);
  });
});

describe("saved states", () => {
  it("a restored state holds the window only: continuing reuses it, a shorter prefix is evaluated again", async () => {
    await using a = await model.createContext(SHAPE);
    const all = words.slice(0, 500);
    await a.sequence(0).evaluate(all);
    const state = await a.sequence(0).saveState();
    for (const swaFull of [false, true]) {
      const shape = { ...SHAPE, swaFull };
      await using b = await model.createContext(shape);
      await b.sequence(0).restoreState(state);
      const more = [...all, ...words.slice(600, 610)];
      expect(await greedy(b, more)).toEqual(await fresh(more, shape));
      expect(b.sequence(0).lastGeneration?.evaluatedPromptTokens).toBe(10);
      await b.sequence(0).restoreState(state);
      const shorter = [...all.slice(0, 300), ...words.slice(600, 610)];
      expect(await greedy(b, shorter)).toEqual(await fresh(shorter, shape));
      // llama.cpp saves a sliding layer's window only, so even with swaFull 300 is not held.
      expect(b.sequence(0).lastGeneration?.evaluatedPromptTokens).toBe(shorter.length);
    }
  });
});

describe("sessions", () => {
  const SYSTEM = "You are a helpful assistant. Keep every answer short and friendly.";
  const userText = (i: number) => `Message ${i}: ${Array.from({ length: 12 }, (_, j) => `w${(i * 131 + j * 17) % 997}`).join(" ")}`;

  /**
   * Chats until turns are pruned and the cache is longer than the SWA cells; after every pruned
   * turn, the reply equals a fresh context's fed the same prompt, and the event says what was
   * evaluated again.
   */
  async function chat(kvReuse: "shift" | "prefix", swaFull: boolean): Promise<{ events: MemoryEvent[]; full: number }> {
    const shape = { ...SHAPE, swaFull };
    await using ctx = await model.createContext(shape);
    await using ref = await model.createContext(shape);
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, { system: SYSTEM, maxTokens: 8, temperature: 0, memory: { budget: 420, kvReuse }, onMemoryEvent: (e) => events.push(e) });
    const pruned: MemoryEvent[] = [];
    let full = 0;
    for (let i = 0; i < 14; i++) {
      const before = events.length;
      const ids: number[] = [];
      await session.prompt(userText(i), { onToken: (t) => ids.push(t) });
      const e = events[before];
      if (!e) continue;
      pruned.push(e);
      const g = session.lastGeneration;
      if (!g) throw new Error("no generation");
      const prompt = (session.sequence?.tokens ?? []).slice(0, g.promptTokens);
      const expected: number[] = [];
      await ref.clear();
      await ref.complete(prompt, { maxTokens: 8, temperature: 0, onToken: (t) => expected.push(t) });
      expect(ids).toEqual(expected);
      // What the event says was evaluated again is part of what generation evaluated.
      expect(e.reevaluatedTokens).toBeLessThanOrEqual(g.evaluatedPromptTokens);
      expect(e.kvReused).toBe(e.reevaluatedTokens === 0);
      if (g.evaluatedPromptTokens === g.promptTokens) {
        full++;
        expect(e.kvReused).toBe(false);
        expect(e.reevaluatedTokens).toBeGreaterThan(0);
      }
    }
    expect(pruned.length).toBeGreaterThan(2);
    return { events: pruned, full };
  }

  it('kvReuse "prefix" past the window equals a fresh context on every pruned turn, and says the prompt was evaluated again', async () => {
    const { events, full } = await chat("prefix", false);
    // The cut is near the start, long gone from the sliding layer: every pruned turn starts over.
    expect(full).toBe(events.length);
  });

  it('kvReuse "shift" on a cache that cannot shift behaves as "prefix"', async () => {
    const { events, full } = await chat("shift", false);
    expect(full).toBe(events.length);
  });

  it('swaFull: kvReuse "prefix" keeps the prefix before the first evicted turn', async () => {
    const { events, full } = await chat("prefix", true);
    expect(full).toBe(0);
    expect(events.every((e) => !e.kvReused && e.reevaluatedTokens > 0)).toBe(true);
  });
});

describe("cacheHolds, the rule", () => {
  const base = { length: 500, min: 0, max: 499, slidingWindow: 0, recurrent: false };
  it("a full-attention cache needs position 0", () => {
    expect(cacheHolds({ ...base, n: 300 })).toBe(true);
    expect(cacheHolds({ ...base, n: 300, min: 1 })).toBe(false);
    expect(cacheHolds({ ...base, n: 0, min: -1, max: -1 })).toBe(true);
  });
  it("a sliding window needs the window before n", () => {
    const swa = { ...base, slidingWindow: 32, min: 244 };
    expect(cacheHolds({ ...swa, n: 500 })).toBe(true);
    expect(cacheHolds({ ...swa, n: 275 })).toBe(true); // needs 244..274
    expect(cacheHolds({ ...swa, n: 274 })).toBe(false); // needs 243..273
    expect(cacheHolds({ ...swa, n: 20, min: 0 })).toBe(true);
    expect(cacheHolds({ ...swa, n: 20, min: 1 })).toBe(false);
  });
  it("a recurrent state continues only from its end", () => {
    const rec = { ...base, recurrent: true, min: 499 };
    expect(cacheHolds({ ...rec, n: 500 })).toBe(true);
    expect(cacheHolds({ ...rec, n: 499 })).toBe(false);
  });
  it("a cache that holds less than the bookkeeping says is not used", () => {
    expect(cacheHolds({ ...base, n: 300, max: 200 })).toBe(false);
    expect(cacheHolds({ ...base, n: 300, min: -1, max: -1 })).toBe(false);
    expect(cacheHolds({ ...base, n: 501 })).toBe(false);
  });
});
