/**
 * Sessions under hostile or unlucky input: a summarizer that never answers, a message larger
 * than the context, damaged session and archive files, and session files that name a path.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeContainer, encodeContainer } from "../../lib/container.js";
import { LlamemError, createSession, loadModel, loadSession, type Model, type SessionMessageInput, type Summarizer } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { THREADS, codeOf } from "./helpers.js";

const SYSTEM = "You are a helpful assistant. Keep every answer short and friendly.";
const options = { maxTokens: 3, temperature: 0, context: { contextSize: 512, ...THREADS } } as const;

let model: Model;
let dir: string;

beforeAll(async () => {
  model = await loadModel(await tinyModel("f16"));
  dir = mkdtempSync(join(tmpdir(), "llamem-session-hardening-"));
});
afterAll(async () => {
  await model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Resolves with "hung" if `p` has not settled within `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | "hung"> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<"hung">((resolve) => (timer = setTimeout(() => resolve("hung"), ms)));
  return Promise.race([p, hung]).finally(() => clearTimeout(timer));
}

const history = (turns: number): SessionMessageInput[] =>
  Array.from({ length: turns }, (_, i) => [
    { role: "user" as const, content: `Question ${i}: tell me something about topic ${i}, please, in a few words.` },
    { role: "assistant" as const, content: `Answer ${i}: topic ${i} is interesting and worth learning about.` },
  ]).flat();

/** Writes a copy of the saved session at `from` with its JSON header changed by `edit`. */
function editSession(from: string, to: string, edit: (header: Record<string, unknown>) => void): string {
  const magic = Buffer.from("LLMEMSS1", "latin1");
  const { header, payload } = decodeContainer(readFileSync(from), magic, 1, "a saved session");
  edit(header);
  writeFileSync(to, encodeContainer(magic, header as { version: number }, payload));
  return to;
}

function lines(path: string): number {
  return existsSync(path) ? readFileSync(path, "utf8").split("\n").filter((l) => l.length > 0).length : 0;
}

describe("summarizers", () => {
  it("a summarizer that never settles: the turn's signal reaches it and ends the turn; the session goes on", async () => {
    const signals: (AbortSignal | undefined)[] = [];
    const summarize: Summarizer = (turns, _previous, o) => {
      signals.push(o?.signal);
      // The first call ignores its signal and never settles; later ones answer.
      if (signals.length === 1) return new Promise<string>(() => {});
      return Promise.resolve(`${turns.length} turn(s) folded`);
    };
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const session = await createSession(ctx, { system: SYSTEM, maxTokens: 3, temperature: 0, memory: { strategy: "summarize", budget: 100, keepLastTurns: 1, summarize } });
    session.setHistory(history(6));
    const before = session.history.slice();

    const signal = AbortSignal.timeout(500);
    const t0 = performance.now();
    const outcome = await within(codeOf(session.prompt("And what about topic 7?", { signal })), 15_000);
    expect(outcome).toBe("ERR_ABORTED");
    expect(performance.now() - t0).toBeLessThan(10_000);
    // The summarizer's signal follows the turn's (joined with the session's own, which dispose() aborts).
    expect(signals[0]?.aborted).toBe(true);
    expect(signals[0]?.reason).toBe(signal.reason);
    // The failed turn left the history as it was, and the session is usable.
    expect(session.history).toEqual(before);
    expect(session.summary).toBeUndefined();
    expect(typeof (await within(session.prompt("And what about topic 8?"), 60_000))).toBe("string");
    expect(session.summary).toMatch(/turn\(s\) folded/);
    expect(signals.length).toBeGreaterThanOrEqual(2);
  });

  it("an aborted signal ends the turn before the summarizer is awaited", async () => {
    let calls = 0;
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const session = await createSession(ctx, {
      maxTokens: 3,
      temperature: 0,
      memory: { strategy: "summarize", budget: 100, keepLastTurns: 1, summarize: () => (calls++, new Promise<string>(() => {})) },
    });
    session.setHistory(history(6));
    const controller = new AbortController();
    controller.abort();
    expect(await within(codeOf(session.prompt("Hello?", { signal: controller.signal })), 15_000)).toBe("ERR_ABORTED");
    expect(calls).toBeLessThanOrEqual(1);
  });
});

describe("oversized messages", () => {
  it("a 1,000,000-character message is ERR_CONTEXT_FULL, evicts nothing, and the session goes on", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const session = await createSession(ctx, { system: SYSTEM, maxTokens: 3, temperature: 0 });
    await session.prompt("Hi! I'm Ada.");
    await session.prompt("What's my name?");
    const before = session.history.slice();
    const huge = "Hello world, how are you today? ".repeat(31_250);
    expect(huge.length).toBe(1_000_000);
    expect(await codeOf(session.prompt(huge))).toBe("ERR_CONTEXT_FULL");
    expect(session.history).toEqual(before);
    expect((await session.stats()).turnsEvicted).toBe(0);
    expect(typeof (await session.prompt("Still there?"))).toBe("string");
    expect(session.history).toHaveLength(before.length + 2);
  });

  it("a message over the context is ERR_CONTEXT_FULL with summarize too, without calling the summarizer", async () => {
    let calls = 0;
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const session = await createSession(ctx, {
      maxTokens: 3,
      temperature: 0,
      memory: { strategy: "summarize", summarize: async () => `call ${++calls}` },
    });
    session.setHistory(history(3));
    expect(await codeOf(session.prompt("word ".repeat(2000)))).toBe("ERR_CONTEXT_FULL");
    expect(calls).toBe(0);
    expect(session.history).toHaveLength(6);
  });
});

describe("damaged files", () => {
  let good: string;

  beforeAll(async () => {
    good = join(dir, "good.llamem");
    await using session = await createSession(model, { ...options, system: SYSTEM });
    await session.prompt("Hello");
    await session.prompt("Tell me about topic 2.");
    await session.save(good);
  });

  const garbage: [string, (h: Record<string, unknown>) => void][] = [
    ["history of numbers", (h) => (h["history"] = [42])],
    ["a message without content", (h) => (h["history"] = [{ role: "user", timestamp: 1 }])],
    ["a message with a string timestamp", (h) => (h["history"] = [{ role: "user", content: "x", timestamp: "now" }])],
    ["archive null", (h) => (h["archive"] = null)],
    ["archive path a number", (h) => (h["archive"] = { path: 5, entries: [] })],
    ["archive entries not turns", (h) => (h["archive"] = { path: null, entries: [{ messages: "x" }] })],
    ["archive entries missing", (h) => (h["archive"] = { path: null })],
    ["layout a string", (h) => (h["layout"] = "x")],
    ["layout naming no message", (h) => (h["layout"] = [{ ref: 99, start: 0, end: 1, prompt: true }])],
    ["layout with a negative span", (h) => (h["layout"] = [{ ref: "system", start: 5, end: 2, prompt: true }])],
    ["layout past the saved cells", (h) => (h["layout"] = [{ ref: 0, start: 0, end: 1_000_000, prompt: true }])],
    ["counters null", (h) => (h["counters"] = null)],
    ["counters of strings", (h) => (h["counters"] = { summaries: "x", turnsEvicted: 0, evaluatedTokens: 0, generatedTokens: 0 })],
    ["counters missing one", (h) => (h["counters"] = { summaries: 0, turnsEvicted: 0, evaluatedTokens: 0 })],
    ["system a number", (h) => (h["system"] = 5)],
  ];

  it.each(garbage)("a session file with %s (the fingerprint right) is ERR_STATE_MISMATCH", async (name, edit) => {
    const path = editSession(good, join(dir, `bad-${name.replace(/\W+/g, "-")}.llamem`), edit);
    expect(await codeOf(loadSession(model, path, options))).toBe("ERR_STATE_MISMATCH");
  });

  it("a failed load on a context leaves its sequence free for the next session", async () => {
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const bad = editSession(good, join(dir, "bad-cells.llamem"), (h) => (h["layout"] = [{ ref: 0, start: 0, end: 1_000_000, prompt: true }]));
    expect(await codeOf(loadSession(ctx, bad, { maxTokens: 3 }))).toBe("ERR_STATE_MISMATCH");
    await using session = await loadSession(ctx, good, { maxTokens: 3, temperature: 0 });
    expect(session.history).toHaveLength(4);
  });

  it("an archive file with a damaged line is ERR_ARCHIVE_INVALID naming the file and the line", async () => {
    const path = join(dir, "damaged-archive.jsonl");
    const ok = JSON.stringify({ messages: [{ role: "user", content: "hi", timestamp: 1 }], archivedAt: 2, reason: "prune" });
    await using ctx = await model.createContext({ contextSize: 512, ...THREADS });
    const session = await createSession(ctx, { memory: { archive: { path } } });
    const cases: [string, number][] = [
      [`${ok}\n${ok}\n{"messages": [\n`, 3],
      [`${ok}\n\n${JSON.stringify({ messages: [{ role: "user" }], archivedAt: 2, reason: "prune" })}\n`, 3],
      [`${JSON.stringify({ messages: [], archivedAt: 2, reason: "whatever" })}\n`, 1],
      [`${JSON.stringify({ messages: [], archivedAt: "yesterday", reason: "prune" })}\n`, 1],
      ["42\n", 1],
    ];
    for (const [text, line] of cases) {
      writeFileSync(path, text);
      const err = await session.readArchive().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(LlamemError);
      expect((err as LlamemError).code).toBe("ERR_ARCHIVE_INVALID");
      expect((err as LlamemError).message).toContain(`${path} line ${line}`);
    }
    writeFileSync(path, `${ok}\n${ok}\n`);
    expect(await session.readArchive()).toHaveLength(2);
  });
});

describe("archive paths in session files", () => {
  /** A session saved with its archive at `archive`, which has evicted one turn there. */
  async function savedWithArchive(name: string, archive: string): Promise<string> {
    const path = join(dir, `${name}.llamem`);
    await using session = await createSession(model, { ...options, system: SYSTEM, memory: { strategy: "slidingWindow", keepLastTurns: 1, archive: { path: archive } } });
    for (let i = 0; i < 3; i++) await session.prompt(`Tell me about topic ${i}.`);
    expect(lines(archive)).toBe(1);
    await session.save(path);
    return path;
  }

  const window = { strategy: "slidingWindow", keepLastTurns: 1 } as const;

  it("a loaded session never appends to the path the file names unless the caller asks", async () => {
    const named = join(dir, "named-by-the-file.jsonl");
    const saved = await savedWithArchive("archived", named);

    // No archive option: evicted turns stay in memory.
    {
      await using session = await loadSession(model, saved, { ...options, memory: window });
      expect(session.archivePath).toBeUndefined();
      await session.prompt("Tell me about topic 3.");
      expect(lines(named)).toBe(1);
      expect(session.archive.map((a) => a.messages[0]?.content)).toEqual(["Tell me about topic 1."]);
    }
    // The caller's own path.
    {
      const mine = join(dir, "callers-own.jsonl");
      await using session = await loadSession(model, saved, { ...options, memory: { ...window, archive: { path: mine } } });
      expect(session.archivePath).toBe(mine);
      await session.prompt("Tell me about topic 3.");
      expect(lines(named)).toBe(1);
      expect(lines(mine)).toBe(1);
    }
    // Opting in to the saved path.
    {
      await using session = await loadSession(model, saved, { ...options, memory: window, resumeArchiveFile: true });
      expect(session.archivePath).toBe(named);
      await session.prompt("Tell me about topic 3.");
      expect(lines(named)).toBe(2);
      expect((await session.readArchive()).map((a) => a.messages[0]?.content)).toEqual(["Tell me about topic 0.", "Tell me about topic 1."]);
    }
  });

  it("a hand-edited file naming another path writes nothing there", async () => {
    const saved = await savedWithArchive("edited-source", join(dir, "edited-source.jsonl"));
    const target = join(dir, "somewhere-else", "not-yours.jsonl");
    const edited = editSession(saved, join(dir, "edited.llamem"), (h) => (h["archive"] = { path: target, entries: [] }));
    await using session = await loadSession(model, edited, { ...options, memory: window });
    await session.prompt("Tell me about topic 3.");
    expect(existsSync(target)).toBe(false);
    expect(session.archive).toHaveLength(1);
    expect(await codeOf(loadSession(model, edited, { ...options, resumeArchiveFile: "yes" as unknown as boolean }))).toBe("ERR_INVALID_ARGUMENT");
  });
});
