/**
 * Recall of archived turns: turns evicted by the memory policy are embedded as they are archived,
 * and the most similar come back in a marked block before the new message, within the allowance,
 * with a "recall" event. An app's embedding function checks the mechanism exactly; the chat model
 * itself as the embedder (random weights: texts sharing words are close) checks it end to end.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, type MemoryEvent, type Model } from "../../lib/index.js";
import { MemoryRecallStore, RECALL_LABEL, recallEntryBytes, type RecallEntry, type RecallStore } from "../../lib/session/recall.js";
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
    // The block counts toward the budget (turns are evicted to make room for it): the allowance is inside it.
    expect(reply.generation.promptTokens).toBeLessThanOrEqual(200);
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
    const store = new MemoryRecallStore(10, 500, undefined, () => now);
    const entry = (text: string, archivedAt: number): RecallEntry => ({ turn: [{ role: "user", content: text, timestamp: 0 }], text, vector: Float32Array.of(1, 0), archivedAt });
    expect(store.add([entry("too old already", 400), entry("old", 600), entry("new", 900)])).toBe(1);
    now = 1200;
    expect((await store.search(Float32Array.of(1, 0), 5, 0, () => false)).map((r) => r.turn[0]?.content)).toEqual(["new"]);
    expect(store.add([])).toBe(1);
    expect(store.size()).toBe(1);
  });

  it("the default store keeps at most maxBytes (text in UTF-8 plus vector), oldest forgotten first, reported", async () => {
    const entry = (text: string): RecallEntry => ({ turn: [{ role: "user", content: text, timestamp: 0 }], text, vector: Float32Array.of(1, 0), archivedAt: 0 });
    // 4 bytes of text (two 2-byte characters here) and 8 of vector.
    expect(recallEntryBytes(entry("éé"))).toBe(12);
    const store = new MemoryRecallStore(10, undefined, 30);
    expect(store.add([entry("abcd"), entry("efgh")])).toBe(0);
    expect(store.bytes()).toBe(24);
    expect(store.add([entry("éé")])).toBe(1);
    expect(store.turns().map((t) => t[0]?.content)).toEqual(["efgh", "éé"]);
    expect(store.bytes()).toBe(24);
    // A turn larger than the cap on its own is not kept, and forgets nothing for it.
    expect(store.add([entry("x".repeat(30))])).toBe(1);
    expect(store.turns().map((t) => t[0]?.content)).toEqual(["efgh", "éé"]);
    // maxTurns and maxBytes together: whichever binds.
    const both = new MemoryRecallStore(2, undefined, 1000);
    expect(both.add([entry("a"), entry("b"), entry("c")])).toBe(1);
    expect(both.size()).toBe(2);

    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      maxTokens: 4,
      temperature: 0,
      memory: { budget: 150, recall: { embed: bagOfWords, maxBytes: 400, minScore: 0.3 } },
      onMemoryEvent: (e) => events.push(e),
    });
    await session.prompt("The code for the blue vault is river stone garden.");
    for (let i = 0; i < 6; i++) await session.prompt(FILLER(i));
    // Every filler turn takes over 146 bytes (90 of its user text, 56 of its 14-float vector): at most two fit.
    const before = await session.stats();
    const kept = before.recall?.turns ?? 0;
    expect(kept).toBeGreaterThanOrEqual(1);
    expect(kept).toBeLessThanOrEqual(2);
    expect(before.turnsEvicted).toBeGreaterThan(kept);
    // The next prompt's recall event reports what the store forgot until then; all of it is reported once.
    await session.prompt("The blue vault code?");
    const recalls = events.filter((e) => e.kind === "recall");
    const forgotten = recalls.reduce((n, e) => n + (e.forgotten ?? 0), 0);
    expect(forgotten).toBe(before.turnsEvicted - kept);
    expect(recalls.find((e) => (e.forgotten ?? 0) > 0)?.reason).toMatch(/forgot \d+ older archived turn/);
    // The vault turn was archived first and forgotten.
    expect(recalls.at(-1)?.recalled ?? []).toEqual([]);
  });

  it("the default store's search equals a full sort, keeps the older of equal scores, and lets the event loop run while it scans", async () => {
    const store = new MemoryRecallStore(50_000, undefined);
    const entries: RecallEntry[] = [];
    for (let i = 0; i < 20_000; i++) {
      // Angles on a circle, some repeated, so scores tie.
      const a = ((i * 7919) % 1000) / 1000 * 2 * Math.PI;
      entries.push({ turn: [{ role: "user", content: String(i), timestamp: 0 }], text: String(i), vector: Float32Array.of(Math.cos(a), Math.sin(a)), archivedAt: 0 });
    }
    store.add(entries);
    const query = Float32Array.of(1, 0);
    const skip = (turn: readonly { content: string }[]) => Number(turn[0]?.content) % 3 === 0;
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const found = await store.search(query, 7, 0.2, skip);
    clearInterval(timer);
    const want = entries
      .map((e, i) => ({ i, score: (e.vector[0] as number) * 1 + (e.vector[1] as number) * 0 }))
      .filter((x) => x.score >= 0.2 && x.i % 3 !== 0)
      .sort((a, b) => b.score - a.score || a.i - b.i)
      .slice(0, 7);
    expect(found.map((r) => Number(r.turn[0]?.content))).toEqual(want.map((x) => x.i));
    expect(found.map((r) => r.score)).toEqual(want.map((x) => Math.fround(x.score)));
    // 20,000 entries are scanned in slices, with the event loop running between them.
    expect(ticks).toBeGreaterThan(0);
  });

  it("never recalls a turn that is still in the history", async () => {
    const fact = "The code for the blue vault is river stone garden.";
    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      maxTokens: 4,
      temperature: 0,
      memory: { budget: 150, recall: { embed: bagOfWords, minScore: 0.3 } },
      onMemoryEvent: (e) => events.push(e),
    });
    await session.prompt(fact);
    for (let i = 0; i < 5; i++) await session.prompt(FILLER(i));
    const archived = session.archive.find((a) => a.messages[0]?.content === fact);
    expect(archived).toBeDefined();
    // Archived and out of the history, it matches.
    expect((await session.recall("What was the blue vault code?")).map((r) => r.turn[0]?.content)).toContain(fact);
    // Back in the history (the same messages), it is not recalled again: the model already sees it.
    session.setHistory(archived?.messages ?? []);
    expect((await session.recall("What was the blue vault code?")).map((r) => r.turn[0]?.content)).not.toContain(fact);
    events.length = 0;
    const reply = await session.respond("What was the blue vault code?");
    const recall = events.find((e) => e.kind === "recall");
    expect(recall?.recalled?.some((r) => r.turn[0]?.content === fact) ?? false).toBe(false);
    const prompt = await model.detokenize((session.sequence?.tokens ?? []).slice(0, reply.generation.promptTokens), { special: true });
    expect(prompt.split("river stone garden").length - 1).toBe(1);
    expect(prompt).not.toContain(RECALL_LABEL.trim());
  });

  it("with summarize, the block goes after the summary and the kept turns, just before the new message", async () => {
    const fact = "The code for the blue vault is river stone garden.";
    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      system: "You are a terse assistant.",
      maxTokens: 4,
      temperature: 0,
      memory: {
        budget: 200,
        strategy: "summarize",
        keepLastTurns: 1,
        summarize: async (turns, previous) => `SUMMARY-MARK ${turns.length} more turn(s)${previous ? ` after ${previous.length} chars` : ""}`,
        recall: { embed: bagOfWords, k: 1, minScore: 0.3, maxTokens: 60 },
      },
      onMemoryEvent: (e) => events.push(e),
    });
    await session.prompt(fact);
    for (let i = 0; i < 6; i++) await session.prompt(FILLER(i));
    expect(session.summary).toMatch(/^SUMMARY-MARK/);
    expect(session.archive.some((a) => a.reason === "summarize" && a.messages[0]?.content === fact)).toBe(true);
    events.length = 0;
    const question = "What was the code for the blue vault?";
    const reply = await session.respond(question);
    expect(events.find((e) => e.kind === "recall")?.recalled?.[0]?.turn[0]?.content).toBe(fact);
    const prompt = await model.detokenize((session.sequence?.tokens ?? []).slice(0, reply.generation.promptTokens), { special: true });
    const lastKept = session.history.filter((m) => m.role === "user").at(-2)?.content ?? "";
    expect(lastKept).toMatch(/^Tell me something about number/);
    const at = {
      system: prompt.indexOf("You are a terse assistant."),
      summary: prompt.indexOf("SUMMARY-MARK"),
      kept: prompt.indexOf(lastKept),
      block: prompt.indexOf(RECALL_LABEL.trim()),
      fact: prompt.indexOf("river stone garden"),
      question: prompt.lastIndexOf(question),
    };
    expect(at.system).toBeGreaterThanOrEqual(0);
    expect(at.summary).toBeGreaterThan(at.system);
    expect(at.kept).toBeGreaterThan(at.summary);
    expect(at.block).toBeGreaterThan(at.kept);
    expect(at.fact).toBeGreaterThan(at.block);
    expect(at.question).toBeGreaterThan(at.fact);
    expect(reply.generation.promptTokens).toBeLessThanOrEqual(200);
  });

  it("the recall block counts toward the budget: every prompt with one stays within it", async () => {
    const budget = 160;
    const events: MemoryEvent[] = [];
    await using session = await createSession(model, {
      context: { contextSize: 1024, ...THREADS },
      maxTokens: 4,
      temperature: 0,
      // A generous allowance (half the budget), so the block really competes with the history for room.
      memory: { budget, recall: { embed: bagOfWords, k: 3, minScore: 0.2, maxTokens: 0.5 } },
      onMemoryEvent: (e) => events.push(e),
    });
    const facts = [
      "The code for the blue vault is river stone garden.",
      "My cat's name is Luna and she likes bread.",
      "The recipe for bread needs flour, water and a stone oven.",
      "In Paris the weather was blue and the river was calm.",
    ];
    let withBlock = 0;
    for (let round = 0; round < 3; round++) {
      for (const [i, fact] of facts.entries()) {
        events.length = 0;
        const reply = await session.respond(round === 0 ? fact : `Remind me: ${fact.split(" ").slice(1, 6).join(" ")}? (${round}.${i})`);
        expect(reply.generation.promptTokens, `round ${round}, message ${i}`).toBeLessThanOrEqual(budget);
        if ((events.find((e) => e.kind === "recall")?.recalled?.length ?? 0) > 0) {
          withBlock++;
          const prompt = await model.detokenize((session.sequence?.tokens ?? []).slice(0, reply.generation.promptTokens), { special: true });
          expect(prompt).toContain(RECALL_LABEL.trim());
        }
      }
    }
    // The bound was checked on prompts that carried a block, not only on ones without.
    expect(withBlock).toBeGreaterThanOrEqual(3);
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

