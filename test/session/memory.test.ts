import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, loadSession, type MemoryEvent, type MemoryStrategy, type Model, type Turn } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { THREADS, codeOf, expectWholeTurns, formatted } from "./helpers.js";

const SYSTEM = "You are a helpful assistant. Keep every answer short and friendly.";
const PINNED = "Remember this for the whole conversation: my name is Ada and I live in Lisbon.";

let model: Model;
let dir: string;

beforeAll(async () => {
  model = await loadModel(await tinyModel("f16"));
  dir = mkdtempSync(join(tmpdir(), "llamem-session-memory-"));
});
afterAll(async () => {
  await model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const userText = (i: number) => `Message ${i}: tell me something about topic ${i % 7}.`;

describe("memory strategies", () => {
  it.each<MemoryStrategy>(["tokenBudget", "slidingWindow", "summarize"])(
    "%s keeps 200 turns under the budget; system and pinned messages survive; pairs are never split",
    async (strategy) => {
      // System, pinned turn, summary and new message take ~160 tokens: the budget leaves room for turns.
      const budget = 200;
      // The window (one turn) binds before the budget does, so slidingWindow is tested as a window.
      const keepLastTurns = strategy === "slidingWindow" ? 1 : 2;
      const events: MemoryEvent[] = [];
      const calls: { turns: readonly Turn[]; previous: string | undefined; result: string }[] = [];
      await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
      const session = await createSession(ctx, {
        system: SYSTEM,
        maxTokens: 3,
        temperature: 0,
        memory: {
          strategy,
          budget,
          keepLastTurns,
          summarize: async (turns, previous) => {
            const result = `${turns.length} turn(s) folded, call ${calls.length + 1}`;
            calls.push({ turns, previous, result });
            return result;
          },
        },
        onMemoryEvent: (e) => events.push(e),
      });
      const systemTokens = (await formatted(model, [{ role: "system", content: SYSTEM }], false)).length;
      const t0 = performance.now();
      for (let i = 0; i < 200; i++) {
        await session.prompt(i === 3 ? PINNED : userText(i), i === 3 ? { pinned: true } : {});
        const g = session.lastGeneration;
        expect(g?.promptTokens).toBeLessThanOrEqual(budget);
        expectWholeTurns(session.history);
        if (i >= 3) expect(session.history.some((m) => m.content === PINNED && m.pinned)).toBe(true);
        // The system prompt is still the start of the cache.
        const cached = await model.detokenize(session.sequence?.tokens.slice(0, systemTokens) ?? [], { special: true });
        expect(cached).toContain(SYSTEM);
        if (strategy === "slidingWindow") {
          const unpinnedTurns = session.history.filter((m) => m.role === "user" && !m.pinned).length;
          expect(unpinnedTurns).toBeLessThanOrEqual(keepLastTurns + 1);
        }
      }
      const ms = performance.now() - t0;

      const stats = await session.stats();
      expect(stats.turnsEvicted).toBeGreaterThan(150);
      expect(events.length).toBeGreaterThan(0);
      for (const e of events) {
        expect(e.dropped.length).toBeGreaterThan(0);
        expect(e.ms).toBeGreaterThanOrEqual(0);
        for (const turn of e.dropped) {
          expect(turn[0]?.role).toBe("user");
          expect(turn.some((m) => m.pinned)).toBe(false);
        }
      }
      // Evicted turns and the history together are every turn, in order, each exactly once.
      const archived = session.archive.flatMap((a) => a.messages.filter((m) => m.role === "user").map((m) => m.content));
      const live = session.history.filter((m) => m.role === "user" && !m.pinned).map((m) => m.content);
      expect([...archived, ...live]).toEqual(Array.from({ length: 200 }, (_, i) => i).filter((i) => i !== 3).map(userText));
      expect(session.archive.length).toBe(stats.turnsEvicted);
      for (const a of session.archive) {
        expect(a.archivedAt).toBeGreaterThanOrEqual(Math.max(...a.messages.map((m) => m.timestamp)));
        expect(a.messages.map((m) => m.role)).toEqual(["user", "assistant"]);
      }

      if (strategy === "summarize") {
        expect(stats.summaries).toBe(calls.length);
        expect(events.every((e) => e.kind === "summarize")).toBe(true);
        // Called with exactly the turns each event evicted, and the summary written before.
        expect(calls.map((c) => c.turns)).toEqual(events.map((e) => e.dropped));
        expect(calls.flatMap((c) => c.turns)).toEqual(session.archive.map((a) => a.messages));
        calls.forEach((c, i) => expect(c.previous).toBe(i === 0 ? undefined : calls[i - 1]?.result));
        expect(session.summary).toBe(calls[calls.length - 1]?.result);
      } else {
        expect(calls).toHaveLength(0);
        expect(events.every((e) => e.kind === "prune")).toBe(true);
        if (strategy === "slidingWindow") expect(events.every((e) => e.reason.startsWith("sliding window"))).toBe(true);
        // Pruning cut the turns out of the KV cache in place: nothing kept was evaluated again.
        expect(events.every((e) => e.kvReused && e.reevaluatedTokens === 0)).toBe(true);
      }
      console.log(`${strategy}: 200 turns in ${ms.toFixed(0)} ms, ${events.length} memory events, ${stats.evaluatedTokens} tokens evaluated`);
    },
  );

  it("tokenBudget does not evaluate the kept conversation again after pruning", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 4,
      temperature: 0,
      memory: { budget: 150 },
      onMemoryEvent: (e) => events.push(e),
    });
    for (let i = 0; i < 30; i++) {
      await session.prompt(userText(i));
      if (i < 2) continue;
      const g = session.lastGeneration;
      // The messages up to the previous user message were in the cache and stayed there: only the
      // previous reply (re-tokenized), the new message and the assistant header are evaluated.
      const kept = session.history.slice(0, -3);
      const keptTokens = (await formatted(model, [{ role: "system", content: SYSTEM }, ...kept], false)).length;
      expect(g?.evaluatedPromptTokens).toBeLessThanOrEqual((g?.promptTokens ?? 0) - keptTokens);
    }
    expect(events.length).toBeGreaterThan(10);
  });

  it("summarize folds all but keepLastTurns turns when the budget allows", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const kept: number[] = [];
    const folded: number[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 3,
      temperature: 0,
      memory: { strategy: "summarize", budget: 300, keepLastTurns: 2, summarize: async (turns) => `${turns.length} turns` },
      onMemoryEvent: (e) => {
        folded.push(e.dropped.length);
        // Called after the eviction: the history holds the kept turns and the new message.
        kept.push(session.history.filter((m) => m.role === "user").length);
      },
    });
    for (let i = 0; i < 40; i++) await session.prompt(userText(i));
    expect(kept.length).toBeGreaterThan(3);
    expect(kept.every((n) => n === 3)).toBe(true);
    // The first fold takes every turn but the last two; later folds take what came since.
    expect(folded.slice(1).every((n) => n === folded[1])).toBe(true);
  });

  it("summarizes with the model itself when no function is given", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 3,
      temperature: 0,
      memory: { strategy: "summarize", budget: 170, keepLastTurns: 1, summarize: { maxTokens: 6 } },
      onMemoryEvent: (e) => events.push(e),
    });
    for (let i = 0; i < 12; i++) {
      await session.prompt(userText(i));
      expect(session.lastGeneration?.promptTokens).toBeLessThanOrEqual(170);
    }
    const summaries = events.filter((e) => e.kind === "summarize");
    expect(summaries.length).toBeGreaterThan(0);
    expect(session.summary?.length).toBeGreaterThan(0);
    // The summary is inserted before the kept turns (kvReuse "shift"): they are not evaluated again.
    expect(summaries.every((e) => e.kvReused && e.reevaluatedTokens === 0)).toBe(true);
    const cached = await model.detokenize(session.sequence?.tokens ?? [], { special: true });
    expect(cached).toContain(`Summary of the earlier conversation:\n${session.summary}`);
    expect((await session.stats()).summaries).toBe(summaries.length);
  });

  it("appends evicted turns to a JSONL archive with their timestamps", async () => {
    const path = join(dir, "archive.jsonl");
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const session = await createSession(ctx, { system: SYSTEM, maxTokens: 3, temperature: 0, memory: { budget: 140, archive: { path } } });
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) await session.prompt(userText(i));
    const lines = readFileSync(path, "utf8").trim().split("\n");
    const entries = lines.map((l) => JSON.parse(l) as { messages: { role: string; content: string; timestamp: number }[]; archivedAt: number; reason: string });
    expect(entries.length).toBe((await session.stats()).turnsEvicted);
    expect(entries.length).toBeGreaterThan(5);
    entries.forEach((e, i) => {
      expect(e.reason).toBe("prune");
      expect(e.messages[0]?.content).toBe(userText(i));
      expect(e.messages.map((m) => m.role)).toEqual(["user", "assistant"]);
      for (const m of e.messages) expect(m.timestamp).toBeGreaterThanOrEqual(t0);
      expect(e.archivedAt).toBeGreaterThanOrEqual(e.messages[1]?.timestamp ?? Infinity);
    });
    expect(await session.readArchive()).toEqual(entries);
    expect(session.archive).toHaveLength(0);
  });

  it("archives turns older than maxAge at the next prompt", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 3,
      temperature: 0,
      memory: { archive: { maxAge: 60_000 } },
      onMemoryEvent: (e) => events.push(e),
    });
    const old = Date.now() - 10 * 60_000;
    session.setHistory([
      { role: "user", content: "an old question", timestamp: old },
      { role: "assistant", content: "an old answer", timestamp: old + 1000 },
      { role: "user", content: "an old pinned note", timestamp: old, pinned: true },
      { role: "assistant", content: "noted", timestamp: old + 1000 },
      { role: "user", content: "a recent question" },
      { role: "assistant", content: "a recent answer" },
    ]);
    await session.prompt("and now?");
    expect(events.map((e) => e.kind)).toEqual(["archive"]);
    expect(events[0]?.dropped.map((t) => t.map((m) => m.content))).toEqual([["an old question", "an old answer"]]);
    expect(session.archive.map((a) => [a.reason, a.messages[0]?.timestamp])).toEqual([["archive", old]]);
    expect(session.history.map((m) => m.content).slice(0, 5)).toEqual(["an old pinned note", "noted", "a recent question", "a recent answer", "and now?"]);
  });

  it("the in-memory archive keeps at most archive.maxTurns, the oldest forgotten first and reported; by default recall's cap", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 3,
      temperature: 0,
      memory: { budget: 140, archive: { maxTurns: 3 } },
      onMemoryEvent: (e) => events.push(e),
    });
    for (let i = 0; i < 16; i++) {
      await session.prompt(userText(i));
      expect(session.archive.length).toBeLessThanOrEqual(3);
    }
    const { turnsEvicted } = await session.stats();
    expect(turnsEvicted).toBeGreaterThan(6);
    // The newest evicted turns, in the order they went.
    const evicted = events.flatMap((e) => e.dropped);
    expect(evicted).toHaveLength(turnsEvicted);
    expect(session.archive.map((a) => a.messages)).toEqual(evicted.slice(-3));
    // Every forgotten turn was reported by the event that pushed it out.
    expect(events.reduce((n, e) => n + (e.forgotten ?? 0), 0)).toBe(turnsEvicted - 3);
    expect(events.find((e) => e.forgotten !== undefined)?.reason).toMatch(/the in-memory archive forgot \d+ older turn\(s\) to stay within 3$/);

    // A saved session's archive comes back within the loading session's cap (its newest turns).
    const file = join(dir, "capped-archive.llamem");
    await session.save(file);
    await session.dispose();
    const loaded = await loadSession(ctx, file, { memory: { budget: 140, archive: { maxTurns: 2 } } });
    expect(loaded.archive.map((a) => a.messages)).toEqual(evicted.slice(-2));
    await loaded.dispose();

    // Without its own cap, the in-memory archive follows recall's.
    const withRecall = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 3,
      temperature: 0,
      memory: { budget: 140, recall: { embed: async (texts) => texts.map(() => [1, 0]), maxTurns: 2 } },
    });
    for (let i = 0; i < 10; i++) await withRecall.prompt(userText(i));
    expect((await withRecall.stats()).turnsEvicted).toBeGreaterThan(2);
    expect(withRecall.archive).toHaveLength(2);
    await withRecall.dispose();
    await expect(createSession(ctx, { memory: { archive: { maxTurns: 0 } } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(createSession(ctx, { memory: { recall: { embed: async () => [], maxBytes: 1.5 } } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });

  it("keeps the system prompt over the budget unless keepSystem is false", async () => {
    const longSystem = `${SYSTEM} `.repeat(4);
    for (const keepSystem of [true, false]) {
      await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
      const events: MemoryEvent[] = [];
      const session = await createSession(ctx, { system: longSystem, maxTokens: 2, temperature: 0, memory: { budget: 60, keepSystem }, onMemoryEvent: (e) => events.push(e) });
      await session.prompt("Hello there, who are you?");
      const cached = await model.detokenize(session.sequence?.tokens ?? [], { special: true });
      if (keepSystem) {
        expect(events).toHaveLength(0);
        expect(session.lastGeneration?.promptTokens).toBeGreaterThan(60);
        expect(cached).toContain(longSystem);
      } else {
        expect(events.map((e) => e.kind)).toEqual(["omitSystem"]);
        expect(session.lastGeneration?.promptTokens).toBeLessThanOrEqual(60);
        expect(cached).not.toContain("helpful assistant");
        expect(session.system).toBe(longSystem);
      }
    }
  });

  it("history is data: a session given another's history replies the same", async () => {
    await using a = await model.createContext({ contextSize: 512, ...THREADS });
    await using b = await model.createContext({ contextSize: 512, ...THREADS });
    const first = await createSession(a, { system: SYSTEM, maxTokens: 6, temperature: 0 });
    for (let i = 0; i < 3; i++) await first.prompt(userText(i));
    const second = await createSession(b, { system: SYSTEM, maxTokens: 6, temperature: 0 });
    second.setHistory(first.history);
    expect(second.history).toEqual(first.history);
    const expected = await first.prompt("One more thing?");
    expect(await second.prompt("One more thing?")).toBe(expected);
    expect(second.lastGeneration?.promptTokens).toBe(first.lastGeneration?.promptTokens);
  });

  it("an aborted turn leaves the history as it was; a second turn at once is ERR_BUSY", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const session = await createSession(ctx, { system: SYSTEM, temperature: 0 });
    await session.prompt("Hi", { maxTokens: 3 });
    const before = [...session.history];
    const ac = new AbortController();
    const pieces: string[] = [];
    // Observed from the start, so its rejection is never unhandled while the next line runs.
    const run = codeOf(
      (async () => {
        for await (const piece of session.stream("Tell me a long story", { maxTokens: 200, signal: ac.signal })) {
          pieces.push(piece);
          if (pieces.length === 3) ac.abort();
        }
      })(),
    );
    expect(await codeOf(session.prompt("concurrent"))).toBe("ERR_BUSY");
    expect(await run).toBe("ERR_ABORTED");
    expect(session.history).toEqual(before);
    expect(await session.prompt("Still there?", { maxTokens: 2 })).toBeTypeOf("string");
    expect(session.history).toHaveLength(before.length + 2);
    expect(await codeOf(createSession(ctx))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(createSession(ctx.sequence(0), { memory: { strategy: "lru" as never } }))).toBe("ERR_INVALID_ARGUMENT");
  });
  /**
   * 2,400 messages, one old turn pinned, set at once, then one prompt, with `memory`. With
   * `maxAge` (an archive.maxAge nothing reaches) the early eviction is off: the strategy alone,
   * after rendering everything, must keep the same.
   */
  const longHistoryPrompt = async (memory: { strategy: MemoryStrategy; budget?: number; keepLastTurns?: number }, maxAge: number | undefined) => {
    const history = Array.from({ length: 2400 }, (_, i) => ({
      role: i % 2 ? ("assistant" as const) : ("user" as const),
      content: i === 20 ? PINNED : `note ${i} about topic ${i % 7}`,
      ...(i === 20 ? { pinned: true } : {}),
    }));
    const events: MemoryEvent[] = [];
    await using ctx = await model.createContext({ contextSize: 1024, ...THREADS });
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 2,
      temperature: 0,
      memory: { ...memory, ...(maxAge === undefined ? {} : { archive: { maxAge } }) },
      onMemoryEvent: (e) => events.push(e),
    });
    session.setHistory(history);
    await session.prompt("and now?");
    return { events, kept: session.history.map((m) => m.content), prompt: session.lastGeneration?.promptTokens, archived: (await session.readArchive()).length };
  };
  it("a long history's turns that cannot fit are evicted before it is rendered whole, as the budget would evict them", async () => {
    const run = (maxAge: number | undefined) => longHistoryPrompt({ strategy: "tokenBudget", budget: 600 }, maxAge);
    const early = await run(undefined);
    const whole = await run(Number.MAX_SAFE_INTEGER);
    expect(early.kept).toEqual(whole.kept);
    expect(early.prompt).toBe(whole.prompt);
    expect(early.prompt).toBeLessThanOrEqual(600);
    expect(early.kept).toContain(PINNED);
    expect(early.kept.length).toBeLessThan(200);
    expect(early.archived).toBe(whole.archived);
    // The first event evicted the turns that could not fit, unrendered; the budget then shed the rest.
    const [first, ...rest] = early.events;
    expect(first?.kind).toBe("prune");
    expect(first?.reason).toMatch(/evicted unrendered/);
    expect(first?.tokensAfter).toBeGreaterThan(600);
    expect(first?.tokensBefore).toBeGreaterThan(first?.tokensAfter ?? Infinity);
    const droppedTurns = (events: MemoryEvent[]) => events.reduce((n, e) => n + e.dropped.length, 0);
    expect(droppedTurns(early.events)).toBe(droppedTurns(whole.events));
    expect(rest.every((e) => !/evicted unrendered/.test(e.reason))).toBe(true);
    expect(whole.events.every((e) => !/evicted unrendered/.test(e.reason))).toBe(true);
  });
  it("a long history's turns outside the sliding window are evicted before it is rendered whole, as the window would evict them", async () => {
    const run = (maxAge: number | undefined) => longHistoryPrompt({ strategy: "slidingWindow", keepLastTurns: 5 }, maxAge);
    const early = await run(undefined);
    const whole = await run(Number.MAX_SAFE_INTEGER);
    expect(early.kept).toEqual(whole.kept);
    // The pinned turn, the last 5 turns and the new one.
    expect(early.kept).toHaveLength(2 + 10 + 2);
    expect(early.prompt).toBe(whole.prompt);
    expect(early.archived).toBe(whole.archived);
    expect(early.events).toHaveLength(1);
    expect(whole.events).toHaveLength(1);
    const [e, w] = [early.events[0] as MemoryEvent, whole.events[0] as MemoryEvent];
    expect(e.kind).toBe("prune");
    expect(e.reason).toMatch(/evicted unrendered/);
    expect(w.reason).not.toMatch(/evicted unrendered/);
    const contents = (ev: MemoryEvent) => ev.dropped.map((t) => t.map((m) => m.content));
    expect(contents(e)).toEqual(contents(w));
    expect(e.dropped).toHaveLength(1200 - 1 - 5);
    expect(e.tokensAfter).toBe(w.tokensAfter);
    // Estimated from the kept messages' mean: within a quarter of the whole render's count.
    expect(Math.abs(e.tokensBefore - w.tokensBefore)).toBeLessThan(w.tokensBefore / 4);
  });
  it("a long history that cannot fit even without its evictable turns is refused with nothing evicted", async () => {
    const long = Array.from({ length: 300 }, () => "Remember every word of this.").join(" ");
    const history = Array.from({ length: 1200 }, (_, i) => ({
      role: i % 2 ? ("assistant" as const) : ("user" as const),
      content: i === 1198 ? long : `note ${i}`,
      ...(i === 1198 ? { pinned: true } : {}),
    }));
    const events: MemoryEvent[] = [];
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const session = await createSession(ctx, { maxTokens: 2, memory: { strategy: "tokenBudget" }, onMemoryEvent: (e) => events.push(e) });
    session.setHistory(history);
    expect(await codeOf(session.prompt("and now?"))).toBe("ERR_CONTEXT_FULL");
    expect(events).toEqual([]);
    expect(session.history.map((m) => m.content)).toEqual(history.map((m) => m.content));
    expect((await session.readArchive()).length).toBe(0);
  });
  it("a fold too long for one request is summarized by the model in parts, each request fitting the context", async () => {
    // 1,200 messages set at once take about 27,000 tokens: far more than one request can hold.
    const events: MemoryEvent[] = [];
    await using ctx = await model.createContext({ contextSize: 1024, ...THREADS });
    const session = await createSession(ctx, { system: SYSTEM, maxTokens: 2, temperature: 0, memory: { strategy: "summarize", summarize: { maxTokens: 8 } }, onMemoryEvent: (e) => events.push(e) });
    session.setHistory(Array.from({ length: 1200 }, (_, i) => ({ role: i % 2 ? ("assistant" as const) : ("user" as const), content: `note ${i} about topic ${i % 7}` })));
    await session.prompt("and now?");
    const folds = events.filter((e) => e.kind === "summarize");
    expect(folds).toHaveLength(1);
    const fold = folds[0] as MemoryEvent;
    expect(fold.summary).toBe("inline");
    // Every turn but the last keepLastTurns (2) and the new one was folded.
    expect(fold.dropped).toHaveLength(598);
    // One request holds at most the context; the parts together evaluated more.
    expect(fold.summaryTokens).toBeGreaterThan(10_000);
    // Short turns are read whole, in parts.
    expect(fold.summaryCutChars).toBeUndefined();
    expect(session.summary?.length).toBeGreaterThan(0);
    expect(session.history).toHaveLength(6);
    expect(session.lastGeneration?.promptTokens).toBeLessThan(1024);
  });
  it("a turn too long to read with the summary's instruction is folded with its longest message cut, not refused on every prompt", async () => {
    // A document near the context's size is answered; folding it later cannot fit one request.
    const doc = Array.from({ length: 190 }, (_, i) => `w${i % 10}`).join(" ");
    const events: MemoryEvent[] = [];
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const session = await createSession(ctx, { system: SYSTEM, maxTokens: 2, temperature: 0, memory: { strategy: "summarize" }, onMemoryEvent: (e) => events.push(e) });
    await session.prompt(doc);
    for (let i = 0; i < 6; i++) await session.prompt(userText(i));
    const fold = events.find((e) => e.kind === "summarize" && e.dropped.some((t) => t.some((m) => m.content === doc)));
    expect(fold?.summary).toBe("inline");
    // The event says how much of the document the model could not read: some, not all of it.
    expect(fold?.summaryCutChars).toBeGreaterThan(0);
    expect(fold?.summaryCutChars).toBeLessThan(doc.length);
    // Folds whose turns were read whole say nothing of cuts.
    expect(events.filter((e) => e.kind === "summarize" && e !== fold).every((e) => e.summaryCutChars === undefined)).toBe(true);
    expect(session.summary?.length).toBeGreaterThan(0);
    expect(session.history.some((m) => m.content === doc)).toBe(false);
    expect((await session.readArchive()).some((a) => a.messages.some((m) => m.content === doc))).toBe(true);
  });
});
