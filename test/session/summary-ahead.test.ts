/**
 * Summaries off the critical path: a model-written summary is generated after everything the
 * sequence already holds (only the instruction is evaluated, and the tail is removed exactly),
 * and with `summarizeAhead` the next fold is written in the background between turns, used when
 * it has finished and cancelled when the next prompt comes first. Random weights say nothing of
 * a summary's quality: these tests check the mechanism (tokens evaluated, cells kept).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, type GenerationResult, type MemoryEvent, type Model, type Sequence } from "../../lib/index.js";
import { contextSide } from "../../lib/internal/handles.js";
import { tinyModel } from "../helpers/models.js";
import { THREADS } from "./helpers.js";

const SYSTEM = "You are a helpful assistant. Keep every answer short and friendly.";
const userText = (i: number) => `Message ${i}: tell me something about topic ${i % 7}.`;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
/** Turns of the event loop until `done()` or 5 s. */
async function until(done: () => boolean): Promise<void> {
  const end = Date.now() + 5000;
  while (!done() && Date.now() < end) await new Promise<void>((resolve) => setImmediate(resolve));
}

let model: Model;
let dir: string;

beforeAll(async () => {
  model = await loadModel(await tinyModel("f16"));
  dir = mkdtempSync(join(tmpdir(), "llamem-summary-ahead-"));
});
afterAll(async () => {
  await model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** What each summary request did on the sequence: the cache before, the prompt, what it evaluated, the cache after the tail was removed. */
interface Request {
  before: number[];
  prompt: number[];
  evaluated: number;
  /** The cache just before the tail was removed, and after. */
  full?: number[];
  after?: number[];
}

/** Records the summary requests (greedy `complete` calls) made on `seq`, and the cache once each one's tail is removed. */
function spy(seq: Sequence): Request[] {
  const requests: Request[] = [];
  const complete = seq.complete.bind(seq);
  const removeTokens = seq.removeTokens.bind(seq);
  let open: Request | undefined;
  seq.complete = async (prompt, options) => {
    const r: Request = { before: seq.tokens.slice(), prompt: Array.from(prompt as ArrayLike<number>), evaluated: -1 };
    requests.push(r);
    open = r;
    const result: GenerationResult = await complete(prompt, options);
    r.evaluated = result.evaluatedPromptTokens;
    return result;
  };
  seq.removeTokens = async (start, end) => {
    const full = seq.tokens.slice();
    const shifted = await removeTokens(start, end);
    if (open && end === seq.tokens.length + (end - start) && start === open.before.length) {
      open.full = full;
      open.after = seq.tokens.slice();
      open = undefined;
    }
    return shifted;
  };
  return requests;
}

describe("summaries after the cached conversation", () => {
  it("the model's summary evaluates only the instruction and removes its tail exactly", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 4,
      temperature: 0,
      memory: { strategy: "summarize", budget: 200, keepLastTurns: 1, summarize: { maxTokens: 6 } },
      onMemoryEvent: (e) => events.push(e),
    });
    const requests = spy(session.sequence as Sequence);
    for (let i = 0; i < 10; i++) await session.prompt(userText(i));
    const summaries = events.filter((e) => e.kind === "summarize");
    expect(summaries.length).toBeGreaterThan(0);
    expect(summaries.every((e) => e.summary === "inline")).toBe(true);
    expect(requests.length).toBe(summaries.length);
    for (const [i, r] of requests.entries()) {
      // The request is the whole cache and then the instruction: nothing cached is evaluated again.
      expect(r.prompt.slice(0, r.before.length)).toEqual(r.before);
      expect(r.evaluated).toBe(r.prompt.length - r.before.length);
      // The instruction, its end-of-turn and the assistant header: not the turns being summarized.
      expect(r.evaluated).toBeLessThan(120);
      expect(summaries[i]?.summaryTokens).toBe(r.evaluated);
      // The tail (instruction and summary) is gone; the cache is what it was.
      expect(r.after).toEqual(r.before);
      const tail = await model.detokenize(r.prompt.slice(r.before.length), { special: true });
      expect(tail).toContain("Cover the conversation above only up to and including the user message that begins");
    }
    expect(session.summary?.length).toBeGreaterThan(0);
    const cached = await model.detokenize(session.sequence?.tokens ?? [], { special: true });
    expect(cached).toContain(`Summary of the earlier conversation:\n${session.summary}`);
  });
});

describe("summarizing ahead of need", () => {
  it("uses a background summary that finished before the next prompt", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    const calls: number[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 3,
      temperature: 0,
      memory: { strategy: "summarize", budget: 300, keepLastTurns: 2, summarizeAhead: 0.5, summarize: async (turns) => (calls.push(turns.length), `${turns.length} turns`) },
      onMemoryEvent: (e) => events.push(e),
    });
    for (let i = 0; i < 20; i++) {
      await session.prompt(userText(i));
      await sleep(20);
    }
    const ahead = events.filter((e) => e.summary === "ahead");
    expect(ahead.length).toBeGreaterThan(0);
    expect(events.filter((e) => e.summary === "inline")).toEqual([]);
    expect(events.filter((e) => e.summary === "cancelled")).toEqual([]);
    // Each summary written was used (but the one written after the last turn, which no prompt followed).
    expect((await session.stats()).summaries).toBe(calls.length - 1);
    expect(ahead.every((e) => e.dropped.length > 0 && e.summaryTokens === 0 && e.tokensAfter < e.tokensBefore)).toBe(true);
  });

  it("cancels a background summary when the next prompt comes first", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    const signals: AbortSignal[] = [];
    let slow = false;
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 3,
      temperature: 0,
      memory: {
        strategy: "summarize",
        budget: 300,
        keepLastTurns: 2,
        summarizeAhead: 0.5,
        summarize: (turns, _previous, { signal }) => {
          if (signal) signals.push(signal);
          // The background one never finishes by itself; the turn's own (inline) one does.
          return slow ? new Promise<string>(() => undefined) : Promise.resolve(`${turns.length} turns`);
        },
      },
      onMemoryEvent: (e) => events.push(e),
    });
    for (let i = 0; i < 12; i++) {
      await session.prompt(userText(i));
      // The background summary starts after the turn has returned.
      slow = true;
      await sleep(5);
      slow = false;
    }
    const cancelled = events.filter((e) => e.summary === "cancelled");
    expect(cancelled.length).toBeGreaterThan(0);
    expect(cancelled.every((e) => e.dropped.length === 0 && e.tokensBefore === e.tokensAfter)).toBe(true);
    expect(signals.length).toBeGreaterThan(0);
    // Every background summary was cancelled; the folds were written inline.
    expect(events.filter((e) => e.summary === "inline").length).toBeGreaterThan(0);
    expect(events.filter((e) => e.summary === "ahead")).toEqual([]);
    const background = signals.filter((s) => s.aborted);
    expect(background.length).toBe(cancelled.length);
    expect(session.lastGeneration?.promptTokens).toBeLessThanOrEqual(300);
  });

  it("writes the model's summary in idle time on the cached conversation and uses it", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 4,
      temperature: 0,
      memory: { strategy: "summarize", budget: 200, keepLastTurns: 1, summarizeAhead: 0.6, summarize: { maxTokens: 6 } },
      onMemoryEvent: (e) => events.push(e),
    });
    const seq = session.sequence as Sequence;
    const requests = spy(seq);
    for (let i = 0; i < 10; i++) {
      const started = requests.length;
      await session.prompt(userText(i));
      const after = seq.tokens.slice();
      // Past 0.6 of the budget of 200, a background summary starts after the turn: wait for it to
      // begin (it renders its request on the template thread first, which a loaded machine delays)…
      if (after.length > 0.6 * 200) for (let w = 0; w < 1000 && requests.length === started; w++) await sleep(10);
      // …and to end: idle time, with the cache as the turn left it.
      for (let w = 0; w < 1000 && requests.some((r) => r.after === undefined); w++) await sleep(10);
      expect(seq.tokens).toEqual(after);
    }
    const ahead = events.filter((e) => e.summary === "ahead");
    expect(ahead.length).toBeGreaterThan(0);
    expect(ahead.every((e) => (e.summaryTokens ?? 0) > 0)).toBe(true);
    for (const r of requests) {
      expect(r.evaluated).toBe(r.prompt.length - r.before.length);
      expect(r.after).toEqual(r.before);
    }
    expect(session.summary?.length).toBeGreaterThan(0);
  });

  it("a background summary cancelled by a prompt goes on from its tokens in the next idle time", async () => {
    await using ctx = await model.createContext({ contextSize: 1024, ...THREADS });
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, {
      system: SYSTEM,
      maxTokens: 4,
      temperature: 0,
      memory: { strategy: "summarize", budget: 400, keepLastTurns: 1, summarizeAhead: 0.1, summarize: { maxTokens: 48 } },
      onMemoryEvent: (e) => events.push(e),
    });
    const seq = session.sequence as Sequence;
    const requests = spy(seq);
    await session.prompt(userText(0));
    await session.prompt(userText(1));
    // Let the background summary generate a few tokens, then prompt: it is cancelled.
    await until(() => requests[0] !== undefined && seq.tokens.length >= requests[0].prompt.length + 3);
    // (The one started after the first turn was cancelled by the second before it began.)
    events.length = 0;
    await session.prompt(userText(2));
    expect(events.map((e) => e.summary)).toEqual(["cancelled"]);
    const first = requests[0] as Request;
    const generated = (first.full ?? []).slice(first.prompt.length);
    expect(generated.length).toBeGreaterThan(0);
    expect(first.after).toEqual(first.before);
    // The next idle time goes on: its request ends with the tokens generated so far.
    for (let w = 0; w < 300 && !(requests[1]?.after); w++) await sleep(10);
    const second = requests[1] as Request;
    expect(second.prompt.slice(0, second.before.length)).toEqual(second.before);
    // (The last token sampled may not have been evaluated yet: it is in the new request too.)
    const end = second.prompt.slice(second.before.length).join(",");
    expect(end.endsWith(generated.join(",")) || end.slice(0, end.lastIndexOf(",")).endsWith(generated.join(","))).toBe(true);
    expect(second.after).toEqual(second.before);
    // The summary's text is taken a few async steps after its tail is removed: let them run.
    for (let w = 0; w < 100 && seq.busy; w++) await sleep(10);
    await sleep(50);
    await session.prompt(userText(3));
    expect(events.map((e) => e.summary)).toEqual(["cancelled", "ahead"]);
    expect(session.summary?.length).toBeGreaterThan(0);
  });

  it("dispose and save during a background summary cancel it and leave nothing running", async () => {
    const signals: AbortSignal[] = [];
    const options = {
      system: SYSTEM,
      maxTokens: 3,
      temperature: 0,
      memory: {
        strategy: "summarize" as const,
        budget: 120,
        keepLastTurns: 1,
        summarizeAhead: 0.1,
        summarize: (_turns: unknown, _previous: unknown, { signal }: { signal: AbortSignal | undefined }) => {
          if (signal) signals.push(signal);
          return new Promise<string>(() => undefined);
        },
      },
    };
    {
      await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
      const session = await createSession(ctx, options);
      await session.prompt(userText(0));
      await session.prompt(userText(1));
      await sleep(5);
      expect(signals.length).toBe(1);
      const bytes = await session.save(join(dir, "during.llamem"));
      expect(bytes).toBeGreaterThan(0);
      expect(signals[0]?.aborted).toBe(true);
      await session.dispose();
    }
    {
      // The model as summarizer: dispose while it generates in the background.
      await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
      const session = await createSession(ctx, { ...options, maxTokens: 4, memory: { ...options.memory, summarize: { maxTokens: 64 } } });
      const seq = session.sequence as Sequence;
      const requests = spy(seq);
      await session.prompt(userText(0));
      await session.prompt(userText(1));
      await until(() => requests.length > 0);
      expect(requests.length).toBe(1);
      await session.dispose();
      expect(seq.busy).toBe(false);
      // Whatever the request had evaluated is gone again.
      expect(seq.tokens).toEqual(requests[0]?.before);
    }
  });
});

describe("summaries written beside the turns (memory.summarySequence)", () => {
  const memory = { strategy: "summarize", budget: 600, keepLastTurns: 2, summarizeAhead: 0.5, summarize: { maxTokens: 12 } } as const;
  // The budget less the summary's room: its 12 tokens and DEFAULTS.summaryInstructionTokens.
  const reduced = 600 - 12 - 128;

  it("the model writes the next fold on a sequence of its own while the turns go on: no prompt cancels it, none waits for one written inline, and the prompts keep room for it", async () => {
    await using ctx = await model.createContext({ contextSize: 1024, sequences: 2, kvUnified: true, ...THREADS });
    const beside = ctx.sequence(1);
    const events: MemoryEvent[] = [];
    const session = await createSession(ctx, { system: SYSTEM, maxTokens: 4, temperature: 0, memory: { ...memory, summarySequence: beside }, onMemoryEvent: (e) => events.push(e) });
    let sawBusy = false;
    for (let i = 0; i < 30; i++) {
      // No pause: the next prompt comes as soon as the reply is in.
      await session.prompt(userText(i));
      sawBusy ||= beside.busy;
      expect(session.lastGeneration?.promptTokens).toBeLessThanOrEqual(reduced);
    }
    const summaries = events.filter((e) => e.kind === "summarize");
    expect(summaries.filter((e) => e.summary === "ahead").length).toBeGreaterThan(2);
    expect(summaries.filter((e) => e.summary === "cancelled" || e.summary === "inline")).toEqual([]);
    // The summary ran beside a turn at least once (its sequence was generating when the turn ended).
    expect(sawBusy).toBe(true);
    // Inserted before the kept turns, which were not evaluated again.
    expect(summaries.every((e) => e.kvReused && e.reevaluatedTokens === 0)).toBe(true);
    await session.dispose();
    expect(beside.busy).toBe(false);
    expect(beside.tokens).toEqual([]);
  });

  it("with time between turns, the summary is evaluated beside the turns as the message it becomes: the fold turn evaluates nothing of it", async () => {
    await using ctx = await model.createContext({ contextSize: 1024, sequences: 2, kvUnified: true, ...THREADS });
    const beside = ctx.sequence(1);
    const events: { turn: number; e: MemoryEvent }[] = [];
    let turn = 0;
    const session = await createSession(ctx, { system: SYSTEM, maxTokens: 4, temperature: 0, memory: { ...memory, summarySequence: beside }, onMemoryEvent: (e) => events.push({ turn, e }) });
    const main = session.sequence as Sequence;
    // Which inserts were given the summary sequence's cells, and whether they took them.
    // Which inserts were given the summary sequence's cells, and how many tokens the context decoded for each.
    const inserts: { prepared: boolean; inserted: boolean; decoded: number }[] = [];
    const { engine } = contextSide(ctx);
    const insertTokens = main.insertTokens.bind(main);
    main.insertTokens = async (at, tokens, prepared) => {
      const before = engine.stats.batchedTokens;
      const inserted = await insertTokens(at, tokens, prepared);
      inserts.push({ prepared: prepared !== undefined, inserted, decoded: engine.stats.batchedTokens - before });
      return inserted;
    };
    const evaluated: number[] = [];
    for (turn = 0; turn < 24; turn++) {
      await session.prompt(userText(turn));
      evaluated.push(session.lastGeneration?.evaluatedPromptTokens ?? -1);
      // The user reads: the summary beside finishes (its preparation included) before the next prompt.
      await until(() => !beside.busy);
      await sleep(20);
      await until(() => !beside.busy);
    }
    const folds = events.filter(({ e }) => e.kind === "summarize");
    expect(folds.length).toBeGreaterThan(1);
    expect(folds.every(({ e }) => e.summary === "ahead" && e.kvReused && e.reevaluatedTokens === 0)).toBe(true);
    // Each new summary was inserted from the summary sequence's cells, decoding nothing (a summary
    // rewritten with the same tokens keeps its old cells and inserts nothing).
    expect(inserts.length).toBeGreaterThan(0);
    expect(inserts).toEqual(inserts.map(() => ({ prepared: true, inserted: true, decoded: 0 })));
    // So a fold turn evaluates what any turn does: the new message.
    const foldTurns = new Set(folds.map(({ turn: t }) => t));
    const plain = evaluated.filter((_, t) => t > 2 && !foldTurns.has(t));
    for (const t of foldTurns) expect(evaluated[t]).toBeLessThanOrEqual(Math.max(...plain));
    // Beside the conversation the cache holds at most the next summary, prepared; disposing the
    // session drops it, and what is left is exactly the conversation's cells.
    expect((await ctx.memory()).cellsUsed).toBeLessThanOrEqual(main.tokens.length + beside.tokens.length);
    await session.dispose();
    expect(beside.tokens).toEqual([]);
    expect((await ctx.memory()).cellsUsed).toBe(main.tokens.length);
  });

  it("a fold written beside the turns takes the last turn but one: the prompt that uses it still keeps keepLastTurns verbatim, and one that needs it a turn early folds inline instead", async () => {
    await using ctx = await model.createContext({ contextSize: 1024, sequences: 2, kvUnified: true, ...THREADS });
    const beside = ctx.sequence(1);
    const requests = spy(beside);
    const events: { turn: number; e: MemoryEvent }[] = [];
    let turn = 0;
    const session = await createSession(ctx, { system: SYSTEM, maxTokens: 4, temperature: 0, memory: { ...memory, summarySequence: beside }, onMemoryEvent: (e) => events.push({ turn, e }) });
    const sent: string[] = [];
    const send = (text: string) => (sent.push(text), session.prompt(text));
    const verbatim = (i: number) => session.history.some((m) => m.role === "user" && m.content === sent[i]);
    // Turns with time between them until a summary has been written beside them.
    for (turn = 0; requests.length === 0 && turn < 20; turn++) {
      await send(userText(turn));
      await until(() => !beside.busy);
      await sleep(20);
      await until(() => !beside.busy);
    }
    const last = turn - 1;
    expect(requests.length).toBe(1);
    // Its instruction covers the conversation up to the turn before the last (keepLastTurns - 1 kept).
    const instruction = await model.detokenize((requests[0] as Request).prompt);
    expect(instruction).toContain(`begins "${userText(last - 1)}`);
    // A message long enough to need a fold at once: the summary would leave one turn verbatim, so
    // this prompt writes its own fold and keeps the last two.
    const have = (session.sequence as Sequence).tokens.length;
    let long = userText(turn);
    while ((await model.tokenize(long)).length < reduced - have + 40) long += " and then some more words about it";
    await send(long);
    const here = events.filter((x) => x.turn === turn && x.e.kind === "summarize").map((x) => x.e.summary);
    expect(here).toContain("inline");
    expect(here).not.toContain("ahead");
    expect(verbatim(last - 1) && verbatim(last)).toBe(true);
    // Afterwards, with time between turns, every fold written beside is used by a prompt that keeps the last two turns.
    for (turn++; turn < last + 24; turn++) {
      await send(userText(turn));
      expect(verbatim(turn - 1) && verbatim(turn - 2)).toBe(true);
      await until(() => !beside.busy);
      await sleep(20);
      await until(() => !beside.busy);
    }
    expect(events.filter((x) => x.turn > last + 1 && x.e.summary === "ahead").length).toBeGreaterThan(0);
    await session.dispose();
  });

  it("a session on a Model gets a second sequence sharing the cells; a context the app shaped does not", async () => {
    const s = await createSession(model, { system: SYSTEM, maxTokens: 4, temperature: 0, memory, context: { contextSize: 1024, ...THREADS } });
    expect(s.sequence?.context.info.sequences).toBe(2);
    for (let i = 0; i < 12; i++) await s.prompt(userText(i));
    expect(s.lastGeneration?.promptTokens).toBeLessThanOrEqual(reduced);
    await s.dispose();
    const plain = await createSession(model, { system: SYSTEM, maxTokens: 4, memory, context: { contextSize: 1024, sequences: 1, ...THREADS } });
    expect(plain.sequence?.context.info.sequences).toBe(1);
    await plain.dispose();
  });

  it("refuses a summary sequence it cannot use", async () => {
    await using ctx = await model.createContext({ contextSize: 1024, sequences: 2, kvUnified: true, ...THREADS });
    await using other = await model.createContext({ contextSize: 512, ...THREADS });
    const bad = [
      { ...memory, summarySequence: ctx.sequence(0) },
      { ...memory, summarySequence: other.sequence(0) },
      { ...memory, summarize: async () => "s", summarySequence: ctx.sequence(1) },
      { ...memory, summarizeAhead: false as const, summarySequence: ctx.sequence(1) },
      { ...memory, summarySequence: {} as Sequence },
    ];
    for (const m of bad) await expect(createSession(ctx, { memory: m })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });
});
