import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, type Context, type MemoryEvent, type Model } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { THREADS, formatted, oneLayerModel } from "./helpers.js";

const SYSTEM = "You are a helpful assistant. Keep every answer short and friendly.";
const LONG_SYSTEM = `${SYSTEM} You know a lot about geography, history, cooking and music, and you always say which one a question is about.`;
const userText = (i: number) => `Message ${i}: tell me something about topic ${i % 7}.`;

let model: Model;
let oneLayer: Model;

beforeAll(async () => {
  model = await loadModel(await tinyModel("f16"));
  oneLayer = await loadModel(await oneLayerModel());
});
afterAll(async () => {
  await model.dispose();
  await oneLayer.dispose();
});

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/**
 * Chats until turns are pruned; after every pruning turn, checks that the cache holds exactly the
 * formatted conversation, and that its greedy tokens equal a fresh context's fed the same tokens.
 */
async function checkPrunedTurns(m: Model, kvReuse: "shift" | "prefix"): Promise<MemoryEvent[]> {
  await using ctx = await m.createContext({ contextSize: 512, ...THREADS });
  await using fresh = await m.createContext({ contextSize: 512, ...THREADS });
  const events: MemoryEvent[] = [];
  const session = await createSession(ctx, { system: SYSTEM, maxTokens: 8, temperature: 0, memory: { budget: 170, kvReuse }, onMemoryEvent: (e) => events.push(e) });
  const system = { role: "system", content: SYSTEM };
  const pruned: MemoryEvent[] = [];
  let exact = 0;
  for (let i = 0; i < 16; i++) {
    const before = events.length;
    const ids: number[] = [];
    await session.prompt(userText(i), { onToken: (t) => ids.push(t) });
    const e = events[before];
    if (!e) continue;
    pruned.push(e);
    const g = session.lastGeneration;
    const cache = [...(session.sequence?.tokens ?? [])];
    const prompt = cache.slice(0, g?.promptTokens);
    expect(prompt).toEqual(await formatted(m, [system, ...session.history.slice(0, -1)], true));
    const expected: number[] = [];
    await fresh.clear();
    await fresh.complete(prompt, { maxTokens: 8, temperature: 0, onToken: (t) => expected.push(t) });
    const d = ids.findIndex((t, j) => t !== expected[j]);
    if (kvReuse === "prefix" || d < 0) expect(ids).toEqual(expected);
    else await expectNearTie(fresh, [...prompt, ...expected.slice(0, d)], [expected[d] as number, ids[d] as number]);
    if (d < 0) exact++;
    // Up to the previous user message, the kept conversation was reused, not evaluated again.
    const keptTokens = (await formatted(m, [system, ...session.history.slice(0, -3)], false)).length;
    if (kvReuse === "shift") expect(g?.evaluatedPromptTokens).toBeLessThanOrEqual((g?.promptTokens ?? 0) - keptTokens);
    else expect(g?.evaluatedPromptTokens).toBeGreaterThan((g?.promptTokens ?? 0) - keptTokens);
  }
  expect(pruned.length).toBeGreaterThan(5);
  expect(exact).toBeGreaterThanOrEqual(pruned.length - 1);
  return pruned;
}

/**
 * Asserts that after `prefix` the fresh context's two most likely tokens are exactly `pair` and
 * nearly tied (each drawn at least 30% of the time from the top two at temperature 1). A
 * shifted K cache is rotated twice (at its old position, then by the shift), which rounds a little
 * differently from one rotation; that can tip a near-tie and nothing else.
 */
async function expectNearTie(fresh: Context, prefix: number[], pair: [number, number]): Promise<void> {
  const counts = new Map<number, number>();
  const draws = 200;
  for (let seed = 0; seed < draws; seed++) {
    await fresh.complete(prefix, { maxTokens: 1, temperature: 1, topK: 2, topP: 1, minP: 0, seed, onToken: (t) => counts.set(t, (counts.get(t) ?? 0) + 1) });
  }
  expect([...counts.keys()].sort()).toEqual([...pair].sort());
  for (const t of pair) expect(counts.get(t)).toBeGreaterThanOrEqual(0.3 * draws);
}

describe("KV cache reuse when turns are evicted", () => {
  // Exact equality holds on every pruned turn but one here; that one differs from its sixth token,
  // where the fresh context's top two tokens are tied (see expectNearTie). A hand-made shift of the
  // same prompt with no session code tips the same tie, and one without a net shift does not.
  it("shift: after pruning, the next greedy tokens equal those of a fresh context fed the same tokens, up to near-ties (one-layer model)", async () => {
    const pruned = await checkPrunedTurns(oneLayer, "shift");
    expect(pruned.every((e) => e.kind === "prune" && e.kvReused && e.reevaluatedTokens === 0)).toBe(true);
  });

  it("prefix: the cache past the first evicted token is evaluated again and equals a fresh one (two-layer model)", async () => {
    const pruned = await checkPrunedTurns(model, "prefix");
    expect(pruned.every((e) => e.kind === "prune" && !e.kvReused && e.reevaluatedTokens > 0)).toBe(true);
  });
});

describe("a new summary in the cache", () => {
  // On a one-layer model a cell's K and V depend only on its token and position, so cells moved
  // or inserted in place are what a fresh evaluation computes (up to the double rotation of K).
  it("shift: the summary is inserted before the kept turns, which are not evaluated again; the next greedy tokens equal a fresh context's (one-layer model)", async () => {
    await using ctx = await oneLayer.createContext({ contextSize: 512, ...THREADS });
    await using fresh = await oneLayer.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    let folds = 0;
    const session = await createSession(ctx, {
      system: SYSTEM, maxTokens: 8, temperature: 0,
      memory: { strategy: "summarize", budget: 200, keepLastTurns: 2, kvReuse: "shift", summarize: async (turns) => `Fold ${++folds}: ${turns.length} turns about topics.` },
      onMemoryEvent: (e) => events.push(e),
    });
    let checked = 0;
    let exact = 0;
    for (let i = 0; i < 20; i++) {
      const before = events.length;
      const ids: number[] = [];
      await session.prompt(userText(i), { onToken: (t) => ids.push(t) });
      const e = events.slice(before).find((x) => x.kind === "summarize");
      if (!e) continue;
      checked++;
      expect([e.kvReused, e.reevaluatedTokens]).toEqual([true, 0]);
      const g = session.lastGeneration;
      const prompt = [...(session.sequence?.tokens ?? [])].slice(0, g?.promptTokens);
      const summary = { role: "system", content: `Summary of the earlier conversation:\n${session.summary}` };
      expect(prompt).toEqual(await formatted(oneLayer, [{ role: "system", content: SYSTEM }, summary, ...session.history.slice(0, -1)], true));
      // Evaluated by the generation: the last reply's closing and the new message (the summary went in before them).
      const keptTokens = (await formatted(oneLayer, [{ role: "system", content: SYSTEM }, summary, ...session.history.slice(0, -3)], false)).length;
      expect(g?.evaluatedPromptTokens).toBeLessThanOrEqual((g?.promptTokens ?? 0) - keptTokens);
      const expected: number[] = [];
      await fresh.clear();
      await fresh.complete(prompt, { maxTokens: 8, temperature: 0, onToken: (t) => expected.push(t) });
      const d = ids.findIndex((t, j) => t !== expected[j]);
      if (d < 0) exact++;
      else await expectNearTie(fresh, [...prompt, ...expected.slice(0, d)], [expected[d] as number, ids[d] as number]);
    }
    expect(checked).toBeGreaterThan(2);
    expect(exact).toBeGreaterThanOrEqual(checked - 1);
  });

  it("prefix: the kept turns after a new summary are evaluated again, and say so", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM, maxTokens: 4, temperature: 0,
      memory: { strategy: "summarize", budget: 200, keepLastTurns: 2, kvReuse: "prefix", summarize: async (turns) => `${turns.length} turns.` },
      onMemoryEvent: (e) => events.push(e),
    });
    for (let i = 0; i < 16; i++) await session.prompt(userText(i));
    const summaries = events.filter((e) => e.kind === "summarize");
    expect(summaries.length).toBeGreaterThan(1);
    expect(summaries.every((e) => !e.kvReused && e.reevaluatedTokens > 0)).toBe(true);
  });
});

describe("shared prefixes", () => {
  it.each([false, true])("sessions with the same system prompt on one context evaluate it once (kvUnified %s)", async (kvUnified) => {
    await using ctx = await model.createContext({ contextSize: 1024, sequences: 2, kvUnified, ...THREADS });
    const options = { system: LONG_SYSTEM, maxTokens: 6, temperature: 0 } as const;
    const a = await createSession(ctx.sequence(0), options);
    const b = await createSession(ctx.sequence(1), options);
    await a.prompt("Hello!");
    expect(a.lastGeneration?.evaluatedPromptTokens).toBe(a.lastGeneration?.promptTokens);
    const aPrompt = a.sequence?.tokens.slice(0, a.lastGeneration?.promptTokens) ?? [];

    const reply = await b.prompt("Good morning, how are things?");
    const g = b.lastGeneration;
    const bPrompt = b.sequence?.tokens.slice(0, g?.promptTokens) ?? [];
    const shared = commonPrefix(aPrompt, bPrompt);
    const systemTokens = (await formatted(model, [{ role: "system", content: LONG_SYSTEM }], false)).length;
    expect(shared).toBeGreaterThanOrEqual(systemTokens);
    expect(g?.evaluatedPromptTokens).toBe((g?.promptTokens ?? 0) - shared);

    // The copied cells are the system prompt's own: the same reply as a session that evaluated it.
    await using solo = await model.createContext({ contextSize: 512, ...THREADS });
    const c = await createSession(solo, options);
    expect(await c.prompt("Good morning, how are things?")).toBe(reply);
    expect(c.lastGeneration?.evaluatedPromptTokens).toBe(c.lastGeneration?.promptTokens);
    expect(await b.prompt("And then?")).toBe(await c.prompt("And then?"));
    // a's cache was left as it was.
    expect(await a.prompt("Bye")).toBeTypeOf("string");
    expect(a.lastGeneration?.evaluatedPromptTokens).toBeLessThan((a.lastGeneration?.promptTokens ?? 0) - systemTokens);
  });
});
