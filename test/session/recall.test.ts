/**
 * Recall of archived turns: turns evicted by the memory policy are embedded as they are archived,
 * and the most similar come back in a marked block before the new message, within the allowance,
 * with a "recall" event. An app's embedding function checks the mechanism exactly; the chat model
 * itself as the embedder (random weights: texts sharing words are close) checks it end to end.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, type MemoryEvent, type Model } from "../../lib/index.js";
import { MemoryRecallStore, RECALL_LABEL, type RecallEntry, type RecallStore } from "../../lib/session/recall.js";
import { archModel } from "../helpers/models.js";
import { THREADS } from "./helpers.js";

let model: Model;

beforeAll(async () => {
  model = await loadModel(await archModel("qwen2", "f16"));
});

afterAll(async () => {
  await model.dispose();
});

/** Bag-of-words vectors over a fixed word list: similarity is word overlap. */
const WORDS = ["vault", "code", "blue", "river", "stone", "garden", "weather", "paris", "cat", "name", "luna", "recipe", "bread", "flour"];
async function bagOfWords(texts: readonly string[]): Promise<number[][]> {
  return texts.map((t) => {
    const lower = t.toLowerCase();
    return WORDS.map((w) => (lower.includes(w) ? 1 : 0));
  });
}

const FILLER = (i: number) => `Tell me something about number ${i} and the colour of the sky today, please, in detail.`;

describe("recall", () => {
  it("brings back the archived turn that matches, in a marked block before the message, within the allowance", async () => {
    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      maxTokens: 8,
      temperature: 0,
      memory: { budget: 200, recall: { embed: bagOfWords, k: 2, minScore: 0.3, maxTokens: 80 } },
      onMemoryEvent: (e) => events.push(e),
    });
    await session.prompt("The code for the blue vault is river stone garden.");
    await session.prompt("My cat's name is Luna.");
    for (let i = 0; i < 6; i++) await session.prompt(FILLER(i));
    // The facts were evicted and archived.
    expect(session.history.some((m) => m.content.includes("blue vault"))).toBe(false);
    events.length = 0;
    const reply = await session.respond("What was the code for the blue vault?");
    const recall = events.find((e) => e.kind === "recall");
    expect(recall, JSON.stringify(events.map((e) => e.kind))).toBeDefined();
    expect(recall?.recalled?.[0]?.turn[0]?.content).toBe("The code for the blue vault is river stone garden.");
    expect(recall?.recalled?.[0]?.score).toBeGreaterThan(0.3);
    // Scores best first; the cat turn shares no word with the question, so it is not recalled.
    expect(recall?.recalled?.some((r) => r.turn[0]?.content.includes("Luna"))).toBe(false);
    // The block is in the prompt, just before the new message, and the prompt kept to its budget.
    const prompt = await model.detokenize((session.sequence?.tokens ?? []).slice(0, reply.generation.promptTokens), { special: true });
    const at = prompt.indexOf(RECALL_LABEL.trim());
    expect(at).toBeGreaterThan(0);
    expect(prompt.indexOf("river stone garden", at)).toBeGreaterThan(at);
    expect(prompt.indexOf("What was the code for the blue vault?")).toBeGreaterThan(prompt.indexOf("river stone garden", at));
    expect(reply.generation.promptTokens).toBeLessThanOrEqual(200 + 80);
    // The block is not kept in the history: the next prompt recalls for its own message.
    expect(session.history.some((m) => m.content.includes(RECALL_LABEL.trim()))).toBe(false);
    events.length = 0;
    await session.prompt("And what is my cat called? Her name?");
    const next = events.find((e) => e.kind === "recall");
    expect(next?.recalled?.[0]?.turn[0]?.content).toBe("My cat's name is Luna.");
  });

  it("an allowance too small for any match recalls nothing, and says so", async () => {
    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      maxTokens: 4,
      temperature: 0,
      memory: { budget: 150, recall: { embed: bagOfWords, maxTokens: 5 } },
      onMemoryEvent: (e) => events.push(e),
    });
    await session.prompt("The code for the blue vault is river stone garden.");
    for (let i = 0; i < 5; i++) await session.prompt(FILLER(i));
    events.length = 0;
    await session.prompt("The blue vault code?");
    const recall = events.find((e) => e.kind === "recall");
    expect(recall?.recalled).toEqual([]);
    expect(recall?.reason).toMatch(/none fits the recall allowance of 5 tokens/);
  });

  it("an embedder that fails: the event says why and the turn goes on without recall", async () => {
    const events: MemoryEvent[] = [];
    let fail = false;
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      maxTokens: 4,
      temperature: 0,
      memory: {
        budget: 150,
        recall: {
          embed: async (texts) => {
            if (fail) throw new Error("the embedding service is down");
            return bagOfWords(texts);
          },
        },
      },
      onMemoryEvent: (e) => events.push(e),
    });
    await session.prompt("The code for the blue vault is river stone garden.");
    for (let i = 0; i < 5; i++) await session.prompt(FILLER(i));
    fail = true;
    events.length = 0;
    const text = await session.prompt("The blue vault code?");
    expect(typeof text).toBe("string");
    const recall = events.find((e) => e.kind === "recall");
    expect(recall?.error?.message).toBe("the embedding service is down");
    expect(recall?.reason).toMatch(/recall failed/);
  });

  it("the chat model as its own embedder: recall works on its own context, and the chat's cache is reused as before", async () => {
    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      maxTokens: 6,
      temperature: 0,
      memory: { budget: 220, recall: { embed: model, k: 1, minScore: 0 } },
      onMemoryEvent: (e) => events.push(e),
    });
    await session.prompt("The code for the blue vault is river stone garden.");
    for (let i = 0; i < 6; i++) await session.prompt(FILLER(i));
    events.length = 0;
    const reply = await session.respond("What is the code for the blue vault? The vault code.");
    const recall = events.find((e) => e.kind === "recall");
    // With random weights, mean-pooled vectors of texts sharing words are closer than the fillers'.
    expect(recall?.recalled?.[0]?.turn[0]?.content).toBe("The code for the blue vault is river stone garden.");
    expect(reply.generation.evaluatedPromptTokens).toBeLessThan(reply.generation.promptTokens);
    // Recall's own embedding context is counted in the session's figures.
    const stats = await session.stats();
    expect(stats.recall?.turns).toBeGreaterThan(0);
    expect(stats.recall?.contextBytes).toBeGreaterThan(0);
  });

  it("the default store keeps at most maxTurns (oldest forgotten first, reported) and forgets turns past maxAge", async () => {
    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      maxTokens: 4,
      temperature: 0,
      memory: { budget: 150, recall: { embed: bagOfWords, maxTurns: 2, minScore: 0.3 } },
      onMemoryEvent: (e) => events.push(e),
    });
    await session.prompt("The code for the blue vault is river stone garden.");
    for (let i = 0; i < 6; i++) await session.prompt(FILLER(i));
    events.length = 0;
    await session.prompt("The blue vault code?");
    const recall = events.find((e) => e.kind === "recall");
    // The vault turn was archived first, and the store keeps only the last two.
    expect(recall?.recalled ?? []).toEqual([]);
    expect(recall?.reason).toMatch(/forgot \d+ older archived turn/);

    let now = 1000;
    const store = new MemoryRecallStore(10, 500, () => now);
    const entry = (text: string, archivedAt: number): RecallEntry => ({ turn: [{ role: "user", content: text, timestamp: 0 }], text, vector: Float32Array.of(1, 0), archivedAt });
    expect(store.add([entry("too old already", 400), entry("old", 600), entry("new", 900)])).toBe(1);
    now = 1200;
    expect(store.search(Float32Array.of(1, 0), 5, 0, () => false).map((r) => r.turn[0]?.content)).toEqual(["new"]);
    expect(store.add([])).toBe(1);
    expect(store.size()).toBe(1);
  });

  it("an app's own store receives unit vectors and answers the searches", async () => {
    const kept: RecallEntry[] = [];
    const searches: number[] = [];
    const store: RecallStore = {
      add: (entries) => (kept.push(...entries), 0),
      search: (vector, k) => {
        searches.push(k);
        return kept.slice(0, 1).map((e) => ({ turn: e.turn, score: [...e.vector].reduce((s, x, i) => s + x * (vector[i] as number), 0) }));
      },
      size: () => kept.length,
    };
    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      maxTokens: 4,
      temperature: 0,
      memory: { budget: 150, recall: { embed: bagOfWords, store, k: 4 } },
      onMemoryEvent: (e) => events.push(e),
    });
    await session.prompt("The code for the blue vault is river stone garden.");
    for (let i = 0; i < 5; i++) await session.prompt(FILLER(i));
    expect(kept.length).toBeGreaterThan(0);
    // Unit length (a turn sharing no word with the list has the zero vector, left as it is).
    const norms = kept.map((e) => e.vector.reduce((s, x) => s + x * x, 0));
    for (const n of norms) expect(n === 0 || Math.abs(n - 1) < 1e-5, String(n)).toBe(true);
    expect(norms.some((n) => n > 0)).toBe(true);
    events.length = 0;
    await session.prompt("blue vault?");
    expect(searches.at(-1)).toBe(4);
    expect(events.find((e) => e.kind === "recall")?.recalled?.[0]?.turn).toBe(kept[0]?.turn);
  });
});

