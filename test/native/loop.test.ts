// The engine's native generation loop: the native side feeds each sampled token back itself and
// streams the steps. These tests pin what must not change with it: a generation that ends for a
// reason only lib/ sees (a stop string, a cancel, an abort, a throwing callback) leaves the cache
// holding exactly the sequence's tokens, and new jobs or other work on the context wait a step,
// not the whole loop.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSession, loadModel, type Context, type Model } from "../../lib/index.js";
import { watchEvalBatch } from "../helpers/eval-batch.js";
import { DEFAULTS } from "../../lib/options.js";
import { tinyModel } from "../helpers/models.js";
import { codeOf } from "../helpers/errors.js";

let model: Model;

beforeAll(async () => {
  model = await loadModel(await tinyModel("q8_0"));
});
afterAll(async () => {
  await model.dispose();
});

const PROMPT = "Once upon a time";

/** The cache holds exactly the tokens the sequences report. */
async function cacheMatches(ctx: Context): Promise<void> {
  const held = Array.from({ length: ctx.info.sequences }, (_, i) => ctx.sequence(i).tokens.length).reduce((a, b) => a + b, 0);
  expect((await ctx.memory()).cellsUsed).toBe(held);
}

describe("native generation loop", () => {
  it("a stop string ends at the same token as a plain limit, and no cell past it stays in the cache", async () => {
    await using ctx = await model.createContext({ contextSize: 512 });
    const full = await ctx.complete(PROMPT, { maxTokens: 120, temperature: 0 });
    // A stop string taken from deep in the reply, past several loop steps.
    const stop = full.text.slice(80, 84);
    expect(stop.length).toBe(4);
    const cut = full.text.indexOf(stop);
    await ctx.clear();
    const stopped = await ctx.complete(PROMPT, { maxTokens: 120, temperature: 0, stop: [stop] });
    expect(stopped.stopReason).toBe("stop");
    expect(stopped.text).toBe(full.text.slice(0, cut));
    await cacheMatches(ctx);
    // The sequence goes on from exactly what it holds: the follow-up evaluates only its new tokens.
    const before = ctx.sequence(0).tokens.length;
    const next = await ctx.complete(PROMPT + stopped.text + " and", { maxTokens: 4, temperature: 0 });
    expect(next.promptTokens - next.evaluatedPromptTokens).toBeLessThanOrEqual(before);
    await cacheMatches(ctx);
  });

  it("a cancel, an abort and a throwing onToken mid-loop each leave the cache holding the sequence's tokens", async () => {
    await using ctx = await model.createContext({ contextSize: 1024 });
    // Cancel: the consumer stops iterating.
    let pieces = 0;
    for await (const _ of ctx.generate(PROMPT, { maxTokens: 500, temperature: 0 })) {
      if (++pieces === 30) break;
    }
    expect(ctx.lastGeneration?.stopReason).toBe("aborted");
    await cacheMatches(ctx);

    // Abort through the signal, from the token callback.
    await ctx.clear();
    const ac = new AbortController();
    let tokens = 0;
    const aborted = await codeOf(ctx.complete(PROMPT, { maxTokens: 500, temperature: 0, signal: ac.signal, onToken: () => {
      if (++tokens === 40) ac.abort();
    } }));
    expect(aborted).toBe("ERR_ABORTED");
    expect(tokens).toBeLessThan(500);
    await cacheMatches(ctx);

    // Abort through the signal from a timer, with nobody taking the steps one by one (complete()
    // without onToken collects a loop's steps): the loop still halts at once.
    await ctx.clear();
    const timed = new AbortController();
    const timer = setTimeout(() => timed.abort(), 30);
    const late = await codeOf(ctx.complete(PROMPT, { maxTokens: 1000, temperature: 0, signal: timed.signal }));
    clearTimeout(timer);
    expect(late).toBe("ERR_ABORTED");
    expect(ctx.lastGeneration?.generatedTokens ?? 0).toBeLessThan(1000);
    await cacheMatches(ctx);

    // A throwing callback ends the generation with its own error.
    await ctx.clear();
    const boom = new Error("boom");
    let seen = 0;
    await expect(ctx.complete(PROMPT, { maxTokens: 500, temperature: 0, onToken: () => {
      if (++seen === 50) throw boom;
    } })).rejects.toBe(boom);
    expect(seen).toBe(50);
    await cacheMatches(ctx);

    // The context is still usable, and greedy output is what it was.
    await ctx.clear();
    const a = await ctx.complete(PROMPT, { maxTokens: 16, temperature: 0 });
    await ctx.clear();
    const b = await ctx.complete(PROMPT, { maxTokens: 16, temperature: 0 });
    expect(b.text).toBe(a.text);
  });

  // A loop as long as the whole generation, so that without a halt the newcomer would wait for
  // all of it. The bounds allow for how far the native side runs ahead of the JS thread on a
  // loaded machine (steps already decoded still arrive after the halt).
  const LONG = 2000;
  async function withEndlessLoop(test: () => Promise<void>): Promise<void> {
    const saved = { ...DEFAULTS.generationLoop };
    Object.assign(DEFAULTS.generationLoop, { maxSteps: 1 << 20, maxMs: 0 });
    try {
      await test();
    } finally {
      Object.assign(DEFAULTS.generationLoop, saved);
    }
  }

  it("a job that joins during a long generation starts at once, not after the loop", () =>
    withEndlessLoop(async () => {
      await using ctx = await model.createContext({ contextSize: 4096, sequences: 2 });
      let long = 0;
      let atJoin = -1;
      let joined: Promise<number> | undefined;
      const first = ctx.sequence(0).complete(PROMPT, { maxTokens: LONG, temperature: 0, logitBias: [{ token: model.info.eos, bias: -100 }], onToken: () => {
        long++;
        if (long === 20) {
          atJoin = long;
          joined = ctx.sequence(1).complete("A second story", { maxTokens: 4, temperature: 0 }).then(() => long);
        }
      } });
      const result = await first;
      const atEnd = (await joined) as number;
      expect(result.generatedTokens).toBe(LONG);
      expect(atEnd - atJoin).toBeLessThan(LONG / 2);
      await cacheMatches(ctx);
    }));

  it("other work on the context waits for the step in flight, not the whole loop", () =>
    withEndlessLoop(async () => {
      await using ctx = await model.createContext({ contextSize: 4096, sequences: 2 });
      let long = 0;
      const work: Promise<number>[] = [];
      const first = ctx.sequence(0).complete(PROMPT, { maxTokens: LONG, temperature: 0, logitBias: [{ token: model.info.eos, bias: -100 }], onToken: () => {
        long++;
        if (long === 20) {
          const at = long;
          work.push(ctx.sequence(1).evaluate([1, 2, 3]).then(() => long - at));
          work.push(ctx.memory().then(() => long - at));
        }
      } });
      expect((await first).generatedTokens).toBe(LONG);
      for (const waited of await Promise.all(work)) expect(waited).toBeLessThan(LONG / 2);
      expect(ctx.sequence(1).tokens.length).toBe(3);
      await cacheMatches(ctx);
    }));
});

describe("who takes the steps as they come", () => {
  /** The `stream` flag of every loop `evalBatch` call on `ctx` while `work` runs. */
  async function streamFlags(ctx: Context, work: () => Promise<string>): Promise<{ flags: boolean[]; text: string }> {
    const flags: boolean[] = [];
    const unwatch = watchEvalBatch(ctx, (_, loop) => loop && flags.push(loop.stream));
    try {
      return { flags, text: await work() };
    } finally {
      unwatch();
    }
  }

  it("complete() and a session's respond() collect a loop's steps; generate(), events(), onToken and stop strings take them one by one; the text is the same", async () => {
    await using ctx = await model.createContext({ contextSize: 1024 });
    const seq = ctx.sequence(0);
    const o = { maxTokens: 100, temperature: 0 };
    const run = async (work: () => Promise<string>) => {
      await seq.clear();
      return streamFlags(ctx, work);
    };
    const collected = await run(async () => (await seq.complete(PROMPT, o)).text);
    const streamed = await run(async () => {
      let text = "";
      for await (const piece of seq.generate(PROMPT, o)) text += piece;
      return text;
    });
    const withOnToken = await run(async () => (await seq.complete(PROMPT, { ...o, onToken: () => undefined })).text);
    const withStop = await run(async () => (await seq.complete(PROMPT, { ...o, stop: ["\u0000never"] })).text);
    for (const r of [collected, streamed, withOnToken, withStop]) {
      expect(r.flags.length).toBeGreaterThan(0);
      expect(r.text).toBe(collected.text);
    }
    expect(collected.flags.every((f) => !f)).toBe(true);
    for (const r of [streamed, withOnToken, withStop]) expect(r.flags.every((f) => f)).toBe(true);

    // A session: respond() collects, events() streams, and both write the same reply.
    const turn = async (consume: (s: Awaited<ReturnType<typeof createSession>>) => Promise<string>) => {
      await seq.clear();
      const session = await createSession(seq, { maxTokens: 60, temperature: 0 });
      try {
        return await streamFlags(ctx, () => consume(session));
      } finally {
        await session.dispose();
      }
    };
    const responded = await turn(async (s) => (await s.respond(PROMPT)).text);
    const evented = await turn(async (s) => {
      let text = "";
      for await (const e of s.events(PROMPT)) if (e.type === "text") text += e.text;
      return text;
    });
    expect(responded.flags.length).toBeGreaterThan(0);
    expect(responded.flags.every((f) => !f)).toBe(true);
    expect(evented.flags.every((f) => f)).toBe(true);
    expect(evented.text).toBe(responded.text);
  });
});
