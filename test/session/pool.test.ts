import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, createSession, loadModel, type ChatSession, type Model, type SessionOptions } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { THREADS, codeOf, formatted } from "./helpers.js";

const SYSTEM = "You are a helpful assistant. Keep every answer short and friendly.";
const TOPICS = ["cats", "rain", "jazz", "tea", "trains"];
const ask = (i: number, t: number) => `Session ${i}, turn ${t}: what do you think about ${TOPICS[(i + t) % TOPICS.length]}?`;
/** Tokens one pool sequence holds; the sessions run alone get a context of this size. */
const PER_SEQUENCE = 384;

let model: Model;

beforeAll(async () => {
  model = await loadModel(await tinyModel("f16"));
});
afterAll(async () => {
  await model.dispose();
});

/** What a session with these options replies to each prompt when it has a context to itself. */
async function alone(options: SessionOptions, prompts: string[]): Promise<{ replies: string[]; evaluated: number[] }> {
  await using ctx = await model.createContext({ contextSize: PER_SEQUENCE, ...THREADS });
  await using session = await createSession(ctx, options);
  const replies: string[] = [];
  const evaluated: number[] = [];
  for (const p of prompts) {
    replies.push(await session.prompt(p));
    evaluated.push(session.lastGeneration?.evaluatedPromptTokens ?? -1);
  }
  return { replies, evaluated };
}

const optionsOf = (i: number): SessionOptions => ({ system: `You are assistant number ${i}. ${SYSTEM}`, maxTokens: 5 + i, temperature: 0 });

describe("session pool", () => {
  it("8 sessions reply as each would alone, sharing batched decodes", async () => {
    const n = 8;
    const turns = 3;
    // A small batch makes the prompts go in chunks across steps.
    await using ctx = await model.createContext({ contextSize: n * PER_SEQUENCE, sequences: n, batchSize: 64, ...THREADS });
    await using pool = createPool(ctx);
    const sessions = await Promise.all(Array.from({ length: n }, (_, i) => pool.createSession(optionsOf(i))));
    // Sessions run their turns concurrently; with different reply lengths they join and leave the batch at different steps.
    const pooled = await Promise.all(
      sessions.map(async (s, i) => {
        const replies: string[] = [];
        for (let t = 0; t < turns; t++) replies.push(await s.prompt(ask(i, t)));
        return replies;
      }),
    );
    for (let i = 0; i < n; i++) {
      const expected = await alone(optionsOf(i), Array.from({ length: turns }, (_, t) => ask(i, t)));
      expect(pooled[i]).toEqual(expected.replies);
    }
    const stats = await pool.stats();
    const generated = (await Promise.all(sessions.map((s) => s.stats()))).reduce((sum, s) => sum + s.generatedTokens, 0);
    expect(stats.sessions).toBe(n);
    expect(stats.resident).toBe(n);
    expect(stats.kvTokens).toBe(sessions.reduce((sum, s) => sum + (s.sequence?.tokens.length ?? 0), 0));
    expect(stats.kvBytes).toBeGreaterThan(0);
    // Generating one token per session per step, the steps are far fewer than the tokens generated.
    expect(stats.steps).toBeLessThan(generated / 2);
    expect(stats.batchedTokens / stats.steps).toBeGreaterThan(4);
  });

  it("a session joining while another generates, and one aborted mid-reply, leave the others' replies unchanged", async () => {
    await using ctx = await model.createContext({ contextSize: 3 * PER_SEQUENCE, sequences: 3, ...THREADS });
    await using pool = createPool(ctx);
    const long = { ...optionsOf(0), maxTokens: 40 };
    const [a, b, c] = await Promise.all([pool.createSession(long), pool.createSession(optionsOf(1)), pool.createSession(optionsOf(2))]) as [ChatSession, ChatSession, ChatSession];
    await c.prompt("Warm up");
    const historyOfC = [...c.history];
    const ac = new AbortController();
    let joined: Promise<string> | undefined;
    let aborted: Promise<string | undefined> | undefined;
    let pieces = 0;
    let replyA = "";
    for await (const piece of a.stream(ask(0, 0))) {
      replyA += piece;
      if (++pieces === 2) {
        joined = b.prompt(ask(1, 0));
        aborted = codeOf(
          (async () => {
            for await (const _ of c.stream(ask(2, 0), { maxTokens: 200, signal: ac.signal })) ac.abort();
          })(),
        );
      }
    }
    expect(await aborted).toBe("ERR_ABORTED");
    expect(c.history).toEqual(historyOfC);
    expect(replyA).toBe((await alone(long, [ask(0, 0)])).replies[0]);
    expect(await joined).toBe((await alone(optionsOf(1), [ask(1, 0)])).replies[0]);
    expect(await c.prompt("Still there?")).toBeTypeOf("string");
  });

  it.each([
    ["RAM", undefined],
    ["disk", 0],
  ] as const)("more sessions than sequences: idle ones are spilled (%s) and restored with the same replies", async (_where, memoryBytes) => {
    const dir = mkdtempSync(join(tmpdir(), "llamem-spill-test-"));
    try {
      await using ctx = await model.createContext({ contextSize: 2 * PER_SEQUENCE, sequences: 2, ...THREADS });
      const pool = createPool(ctx, { spill: { memoryBytes, dir } });
      const n = 4;
      const turns = 3;
      const sessions = await Promise.all(Array.from({ length: n }, (_, i) => pool.createSession(optionsOf(i))));
      const replies: string[][] = sessions.map(() => []);
      const evaluated: number[][] = sessions.map(() => []);
      for (let t = 0; t < turns; t++) {
        for (const [i, s] of sessions.entries()) {
          replies[i]?.push(await s.prompt(ask(i, t)));
          evaluated[i]?.push(s.lastGeneration?.evaluatedPromptTokens ?? -1);
        }
        const stats = await pool.stats();
        expect(stats.resident).toBe(2);
        if (memoryBytes === 0) {
          expect([stats.spilledMemory, stats.spilledDisk]).toEqual([0, 2]);
          expect(readdirSync(dir)).toHaveLength(2);
        } else {
          expect([stats.spilledMemory, stats.spilledDisk]).toEqual([2, 0]);
          expect(readdirSync(dir)).toHaveLength(0);
        }
        expect(stats.spilledBytes).toBeGreaterThan(0);
      }
      for (let i = 0; i < n; i++) {
        const expected = await alone(optionsOf(i), Array.from({ length: turns }, (_, t) => ask(i, t)));
        expect(replies[i]).toEqual(expected.replies);
        // A restored cache is used like a resident one: only the new tokens are evaluated.
        expect(evaluated[i]).toEqual(expected.evaluated);
      }
      await pool.dispose();
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("spills a session on request and reports where its cache is", async () => {
    await using ctx = await model.createContext({ contextSize: 2 * PER_SEQUENCE, sequences: 2, ...THREADS });
    await using pool = createPool(ctx);
    const session = await pool.createSession(optionsOf(3));
    await session.prompt(ask(3, 0));
    const resident = await session.stats();
    expect(resident).toMatchObject({ resident: true, spilled: undefined, kvTokens: session.sequence?.tokens.length });
    expect(resident.kvBytes).toBeGreaterThan(0);
    await pool.spill(session);
    const spilled = await session.stats();
    expect(spilled).toMatchObject({ resident: false, spilled: "memory", kvTokens: resident.kvTokens });
    expect(session.sequence).toBeUndefined();
    expect((await pool.stats()).spilledBytes).toBe(spilled.kvBytes);
    const second = await session.prompt(ask(3, 1));
    expect(second).toBe((await alone(optionsOf(3), [ask(3, 0), ask(3, 1)])).replies[1]);
    expect((await session.stats()).resident).toBe(true);
    expect(await codeOf(pool.spill(await createSession(model, { context: { contextSize: 64, ...THREADS } })))).toBe("ERR_INVALID_ARGUMENT");
  });

  it("sessions with the same system prompt evaluate it once", async () => {
    await using ctx = await model.createContext({ contextSize: 3 * PER_SEQUENCE, sequences: 3, ...THREADS });
    await using pool = createPool(ctx);
    const options = { system: `${SYSTEM} You know a lot about geography, history, cooking and music.`, maxTokens: 5, temperature: 0 };
    const systemTokens = (await formatted(model, [{ role: "system", content: options.system }], false)).length;
    let evaluated = 0;
    let prompted = 0;
    for (let i = 0; i < 3; i++) {
      const s = await pool.createSession(options);
      expect(await s.prompt(ask(i, 0))).toBe((await alone(options, [ask(i, 0)])).replies[0]);
      evaluated += s.lastGeneration?.evaluatedPromptTokens ?? 0;
      prompted += s.lastGeneration?.promptTokens ?? 0;
    }
    expect(prompted - evaluated).toBeGreaterThanOrEqual(2 * systemTokens);
  });

  it("a lease copies the longest cached prefix of its prompt into an empty sequence (an idle session's, a prompt cache's), or takes a cached sequence when none is empty", async () => {
    await using ctx = await model.createContext({ contextSize: 3 * PER_SEQUENCE, sequences: 3, ...THREADS });
    await using pool = createPool(ctx);
    const session = await pool.createSession({ system: SYSTEM, temperature: 0, maxTokens: 4 });
    await session.prompt(ask(0, 0));
    const held = session.sequence?.tokens.slice() ?? [];
    expect(held.length).toBeGreaterThan(24);
    // A prompt that shares the session's first 24 tokens, then goes elsewhere.
    const other = await model.tokenize("A different ending altogether, nothing like the session", { addSpecial: false });
    const prompt = [...held.slice(0, 24), ...other];
    const a = await pool.lease(prompt);
    // Not the session's sequence (it is not free), but its cells for the shared prefix were copied.
    expect(a.sequence).not.toBe(session.sequence);
    expect(a.sequence.tokens.slice(0, 24)).toEqual(held.slice(0, 24));
    expect(a.sequence.tokens.length).toBe(24);
    const g = await a.sequence.complete(prompt, { maxTokens: 2, temperature: 0 });
    expect(g.evaluatedPromptTokens).toBe(prompt.length - 24);
    a.release();
    const cached = a.sequence.tokens.slice();
    // The next lease with the same prompt gets the empty sequence with that cache copied in (all but
    // the last prompt token reused), and the first sequence keeps its cache whole for later leases.
    const b = await pool.lease(prompt);
    expect(b.sequence).not.toBe(a.sequence);
    expect((await b.sequence.complete(prompt, { maxTokens: 2, temperature: 0 })).evaluatedPromptTokens).toBe(1);
    expect(a.sequence.tokens).toEqual(cached);
    b.release();
    // With no empty sequence left, a lease takes a cached one itself.
    const c = await pool.lease(prompt);
    expect([a.sequence, b.sequence]).toContain(c.sequence);
    expect((await c.sequence.complete(prompt, { maxTokens: 2, temperature: 0 })).evaluatedPromptTokens).toBe(1);
    c.release();
    expect(pool.freeSequences()).toBe(2);
  });
});
