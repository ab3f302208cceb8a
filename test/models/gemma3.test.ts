/**
 * The feature matrix on the tiny gemma3 model, and what its sliding window changes: layers 0 and
 * 1 see the last 32 tokens, layer 2 everything. llama.cpp gives the window layers a cache of
 * PAD(min(n_ctx, window + n_ubatch), 256) cells unless swaFull: with a 1024-token context and
 * micro-batches of 64, 256 cells, so past ~256 tokens the oldest positions are gone from them.
 */
import { expect } from "vitest";
import { createSession, estimateMemory, type ContextOptions, type MemoryEvent } from "../../lib/index.js";
import { THREADS, describeMatrix, freshGreedy, kvBytesPerLayerCell, longText, test, type MatrixOptions } from "./matrix.js";

/** llama.cpp recognises a Gemma template by "<start_of_turn>". */
const GEMMA3_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}" +
  "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/** A context whose window layers keep 256 cells of 1024. */
const SMALL_SWA = { contextSize: 1024, batchSize: 64, ubatchSize: 64 } satisfies ContextOptions;
const SWA_CELLS = 256;

const opts: MatrixOptions = {};

describeMatrix("gemma3", opts, (get) => {
  test(opts, "the estimate counts the window layers' smaller cache, and the full cache with swaFull", async () => {
    const { model, path, shape } = get();
    const perCell = kvBytesPerLayerCell(shape, "f16");
    const full = shape.nLayer - shape.swaLayers.length;
    for (const swaFull of [false, true]) {
      const config = { ...SMALL_SWA, swaFull };
      const est = await estimateMemory(path, config);
      await using ctx = await model.createContext({ ...config, threads: THREADS });
      const kv = (await ctx.memory()).kv;
      const expected = swaFull ? shape.nLayer * 1024 * perCell : full * 1024 * perCell + shape.swaLayers.length * SWA_CELLS * perCell;
      expect(kv, `swaFull ${swaFull}`).toBe(expected);
      expect(est.kv, `swaFull ${swaFull}`).toBe(expected);
      // A window cache smaller than the full one cannot shift (llama.cpp's iswa cache).
      expect(ctx.info.canShift).toBe(swaFull);
    }
  });

  test(opts, "removeTokens past the window re-evaluates and equals a fresh context (swaFull false)", async () => {
    const { model } = get();
    const tokens = await model.tokenize(longText(300, 3));
    expect(tokens.length).toBeGreaterThan(SWA_CELLS + 20);
    for (const [start, end] of [[200, 220], [10, 30]] as const) {
      await using ctx = await model.createContext({ ...SMALL_SWA, threads: THREADS });
      const seq = ctx.sequence(0);
      await seq.evaluate(tokens);
      expect(await seq.removeTokens(start, end)).toBe(false);
      const kept = [...tokens.slice(0, start), ...tokens.slice(end)];
      expect([...seq.tokens]).toEqual(kept);
      const ids: number[] = [];
      await seq.complete(kept, { maxTokens: 12, temperature: 0, onToken: (t) => ids.push(t) });
      expect(ids, `removed [${start}, ${end})`).toEqual(await freshGreedy(model, SMALL_SWA, kept, 12));
    }
  });

  test(opts, "with swaFull the cache shifts in place", async () => {
    const { model } = get();
    const tokens = await model.tokenize(longText(300, 3));
    await using ctx = await model.createContext({ ...SMALL_SWA, swaFull: true, threads: THREADS });
    const seq = ctx.sequence(0);
    await seq.evaluate(tokens);
    expect(await seq.removeTokens(10, 30)).toBe(true);
    expect((await ctx.memory()).cellsUsed).toBe(tokens.length - 20);
    const r = await seq.complete([...seq.tokens], { maxTokens: 4, temperature: 0 });
    expect(r.evaluatedPromptTokens).toBe(1);
  });

  test(opts, "a prompt that reuses a cached prefix past the window equals a fresh context", async () => {
    const { model } = get();
    const first = await model.tokenize(longText(300, 4));
    const tail = await model.tokenize(longText(30, 5), { addSpecial: false });
    await using ctx = await model.createContext({ ...SMALL_SWA, threads: THREADS });
    await ctx.complete(first, { maxTokens: 4, temperature: 0 });
    for (const cut of [first.length, 280, 100]) {
      const second = [...first.slice(0, cut), ...tail];
      const ids: number[] = [];
      await ctx.complete(second, { maxTokens: 12, temperature: 0, onToken: (t) => ids.push(t) });
      expect(ids, `prefix of ${cut}`).toEqual(await freshGreedy(model, SMALL_SWA, second, 12));
    }
  });

  test(opts, "a state saved past the window restores to the same continuation", async () => {
    const { model } = get();
    const tokens = await model.tokenize(longText(300, 6));
    await using ctx = await model.createContext({ ...SMALL_SWA, threads: THREADS });
    const seq = ctx.sequence(0);
    await seq.evaluate(tokens);
    const state = await seq.saveState();
    await using other = await model.createContext({ ...SMALL_SWA, threads: THREADS });
    await other.sequence(0).restoreState(state);
    expect([...other.sequence(0).tokens]).toEqual(tokens);
    const ids: number[] = [];
    const r = await other.sequence(0).complete(tokens, { maxTokens: 12, temperature: 0, onToken: (t) => ids.push(t) });
    expect(r.evaluatedPromptTokens).toBeLessThan(tokens.length);
    expect(ids).toEqual(await freshGreedy(model, SMALL_SWA, tokens, 12));
  });

  test(opts, 'sessions with kvReuse "prefix" past the window equal a fresh session each turn', async () => {
    const { model } = get();
    const options = {
      system: "You are a concise assistant.", template: GEMMA3_TEMPLATE, maxTokens: 8, temperature: 0,
      memory: { strategy: "tokenBudget", budget: 520, kvReuse: "prefix" },
    } as const;
    await using ctx = await model.createContext({ ...SMALL_SWA, threads: THREADS });
    const events: MemoryEvent[] = [];
    await using chat = await createSession(ctx, { ...options, onMemoryEvent: (e) => events.push(e) });
    for (let t = 0; t < 5; t++) {
      const before = chat.history.map((m) => ({ role: m.role, content: m.content }));
      const question = `Turn ${t}: ${longText(90, t)}`;
      const reply = await chat.prompt(question);
      await using fctx = await model.createContext({ ...SMALL_SWA, threads: THREADS });
      await using fresh = await createSession(fctx, options);
      fresh.setHistory(before);
      expect(await fresh.prompt(question), `turn ${t}`).toBe(reply);
    }
    expect(events.some((e) => e.kind === "prune")).toBe(true);
  });
});
