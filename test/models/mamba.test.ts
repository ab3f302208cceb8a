/**
 * The feature matrix on the tiny Mamba model, and what a recurrent state changes: one state per
 * sequence whatever the context size, no positions to shift or cut (removeTokens and a changed
 * prompt evaluate again from the start), a saved state of a fixed size.
 */
import { expect } from "vitest";
import { createSession, estimateMemory, loadModel, type MemoryEvent, type SessionOptions } from "../../lib/index.js";
import { decodeState } from "../../lib/state.js";
import { archModel } from "../helpers/models.js";
import { THREADS, describeMatrix, freshGreedy, longText, recurrentStateBytes, test, type MatrixOptions } from "./matrix.js";

const opts: MatrixOptions = {};

describeMatrix("mamba", opts, (get) => {
  // ggml's AMX matrix product indexes the weight by its input's batch index as if the weight were
  // batched too; a recurrent model's inputs are 3-D once two sequences decode together, so on AMX
  // CPUs the second sequence read past the weight (wrong tokens; a SIGSEGV in plain llama.cpp).
  // llamem therefore loads recurrent models unrepacked unless asked; the pool test covers the rest.
  test(opts, "loads a recurrent model's weights unrepacked by default, as asked otherwise", async () => {
    const { model, path } = get();
    expect(model.repack).toBe(false);
    expect(model.memory().rows.filter((r) => r.host && r.model > 0 && r.bufferType !== "CPU" && !r.bufferType.endsWith("_Mapped"))).toEqual([]);
    await using asked = await loadModel(path, { repack: true });
    expect(asked.repack).toBe(true);
  });

  test(opts, "the estimate counts one f32 state per sequence, whatever the context size and KV type", async () => {
    const { model, path, shape } = get();
    const perSequence = recurrentStateBytes(shape);
    for (const config of [
      { contextSize: 512, sequences: 1 },
      { contextSize: 8192, sequences: 1 },
      { contextSize: 2048, sequences: 4, kvType: "q8_0", flashAttention: "on" },
    ] as const) {
      const est = await estimateMemory(path, config);
      await using ctx = await model.createContext({ ...config, threads: THREADS });
      const m = await ctx.memory();
      expect(m.kv, JSON.stringify(config)).toBe(perSequence * config.sequences);
      expect(est.kv, JSON.stringify(config)).toBe(perSequence * config.sequences);
    }
  });

  test(opts, "a prompt that shares a cached prefix gives what a fresh context gives", async () => {
    const { model } = get();
    const first = await model.tokenize(longText(60, 7));
    const tail = await model.tokenize(longText(10, 8), { addSpecial: false });
    const ctxOpts = { contextSize: 256 };
    await using ctx = await model.createContext({ ...ctxOpts, threads: THREADS });
    await ctx.complete(first, { maxTokens: 4, temperature: 0 });
    for (const cut of [first.length, 40]) {
      const second = [...first.slice(0, cut), ...tail];
      const ids: number[] = [];
      await ctx.complete(second, { maxTokens: 10, temperature: 0, onToken: (t) => ids.push(t) });
      expect(ids, `prefix of ${cut}`).toEqual(await freshGreedy(model, ctxOpts, second, 10));
    }
  });

  test(opts, "a saved state is the same size however many tokens it holds", async () => {
    const { model } = get();
    await using ctx = await model.createContext({ contextSize: 256, threads: THREADS });
    const sizes: number[] = [];
    for (const words of [5, 80]) {
      await ctx.clear();
      const tokens = await model.tokenize(longText(words, 9));
      await ctx.evaluate(tokens);
      // llama.cpp's part of the state (the header lists the tokens): one recurrent cell.
      sizes.push(decodeState(await ctx.sequence(0).saveState()).data.length);
    }
    expect(sizes[1]).toBe(sizes[0]);
    expect(sizes[0]).toBeGreaterThanOrEqual(recurrentStateBytes(get().shape));
  });

  test(opts, "a session that prunes turns evaluates again (a state cannot be cut) and says so", async () => {
    const { model } = get();
    const options: SessionOptions = { system: "You are a concise assistant.", maxTokens: 8, temperature: 0, memory: { strategy: "tokenBudget", budget: 110 } };
    await using ctx = await model.createContext({ contextSize: 512, threads: THREADS });
    const events: MemoryEvent[] = [];
    await using chat = await createSession(ctx, { ...options, onMemoryEvent: (e) => events.push(e) });
    for (let t = 0; t < 5; t++) {
      const before = chat.history.map((m) => ({ role: m.role, content: m.content }));
      const question = `Question ${t}: ${longText(14, t)}`;
      const reply = await chat.prompt(question);
      await using fctx = await model.createContext({ contextSize: 512, threads: THREADS });
      await using fresh = await createSession(fctx, options);
      fresh.setHistory(before);
      expect(await fresh.prompt(question), `turn ${t}`).toBe(reply);
    }
    const prunes = events.filter((e) => e.kind === "prune");
    expect(prunes.length).toBeGreaterThan(0);
    for (const e of prunes) expect(e.kvReused).toBe(false);
  });
});
