/**
 * The architecture × feature matrix (issue 16): the same checks on a tiny model of every
 * architecture llamem's synthetic writer knows. Each architecture's test file calls
 * {@link describeMatrix}, so vitest's forks pool runs architectures in parallel; features that
 * only some architectures have (sliding windows, recurrent states, experts, odd head sizes) have
 * their own tests in those files.
 *
 * What each architecture is expected to do is computed here from its shape (SYNTHETIC_ARCHS),
 * by llama.cpp's rules, not from what llamem happens to do:
 * - a KV cache type is accepted when every head is a whole number of its blocks (all shapes here);
 * - the cache can shift unless the model is recurrent, or a sliding-window cache is smaller than
 *   the full one, or the K cache is quantized and the heads are not a multiple of 64 (llama.cpp's
 *   K-shift graph has no Hadamard rotation for those and dereferences a null tensor);
 * - re-evaluation is exact: a removeTokens that re-evaluates, a restored state and a session with
 *   kvReuse "prefix" give what a fresh context gives, token for token.
 *
 * The models are f16: with q8_0 weights llama.cpp's CPU matrix products round differently for a
 * single token (generation) than for a batch (a prompt), so a cache that holds generated tokens
 * is not bit-identical to a fresh evaluation of the same tokens, and greedy outputs can part.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SYNTHETIC_ARCHS, SYNTHETIC_PRESETS, type SyntheticArch } from "../../lib/gguf/synthetic.js";
import type { SyntheticArchInfo } from "../../lib/gguf/synthetic/archs.js";
import {
  createPool,
  createSession,
  estimateMemory,
  loadModel,
  type ContextOptions,
  type KvCacheType,
  type MemoryEvent,
  type Model,
  type SessionOptions,
} from "../../lib/index.js";
import { codeOf } from "../helpers/errors.js";
import { archModel } from "../helpers/models.js";

/** The architectures of the matrix: the tiny llama and every synthetic architecture. */
export type MatrixArch = "llama" | SyntheticArch;

/** One thread per context: CI runs several test files at once on 2 cores. */
export const THREADS = 1;

/** What the tests need of a shape: the writer's own description of it. */
export type MatrixShape = Pick<
  SyntheticArchInfo,
  "architecture" | "nEmbd" | "nLayer" | "nHead" | "nHeadKv" | "headDim" | "slidingWindow" | "swaLayers" | "experts" | "recurrent" | "ssm"
>;

export function shapeOf(arch: MatrixArch): MatrixShape {
  if (arch === "llama") {
    const s = SYNTHETIC_PRESETS.tiny;
    return {
      architecture: "llama", nEmbd: s.nEmbd, nLayer: s.nLayer, nHead: s.nHead, nHeadKv: s.nHeadKv, headDim: s.nEmbd / s.nHead,
      slidingWindow: 0, swaLayers: [], experts: 0, recurrent: false, ssm: { dConv: 0, dInner: 0, dState: 0, dtRank: 0 },
    };
  }
  return SYNTHETIC_ARCHS[arch];
}

/** A case of llama.cpp's examples/simple output (test/fixtures, written by scripts/reference.mjs). */
export interface ReferenceCase {
  prompt: string;
  nPredict: number;
  type: "f16";
  seed: number;
  output: string;
}

const FIXTURES = join(__dirname, "..", "fixtures");

export function referenceCase(arch: MatrixArch): ReferenceCase {
  if (arch === "llama") {
    const simple = JSON.parse(readFileSync(join(FIXTURES, "reference-simple.json"), "utf8")) as { cases: (ReferenceCase & { preset: string })[] };
    const c = simple.cases.find((x) => x.preset === "tiny" && x.type === "f16");
    if (!c) throw new Error("reference-simple.json has no tiny f16 case");
    return c;
  }
  const archs = JSON.parse(readFileSync(join(FIXTURES, "reference-archs.json"), "utf8")) as { cases: (ReferenceCase & { arch: string })[] };
  const c = archs.cases.find((x) => x.arch === arch);
  if (!c) throw new Error(`reference-archs.json has no case for ${arch}: run scripts/reference.mjs`);
  return c;
}

/** Bytes of one element of a KV cache type (q8_0: 34 bytes per 32, q4_0: 18 per 32). */
export const KV_BYTES: Readonly<Record<"f16" | "q8_0" | "q4_0", number>> = { f16: 2, q8_0: 34 / 32, q4_0: 18 / 32 };
export const KV_TYPES = ["f16", "q8_0", "q4_0"] as const;

/** K and V bytes of one cell in one attention layer. */
export function kvBytesPerLayerCell(s: MatrixShape, kvType: keyof typeof KV_BYTES): number {
  return s.nHeadKv * s.headDim * 2 * KV_BYTES[kvType];
}

/** Bytes of a recurrent model's state for one sequence (conv and scan states, f32, every layer). */
export function recurrentStateBytes(s: MatrixShape): number {
  return s.nLayer * ((s.ssm.dConv - 1) * s.ssm.dInner + s.ssm.dState * s.ssm.dInner) * 4;
}

/** Whether a KV cache of `kvType` fits this shape: every head a whole number of the type's 32-value blocks. */
export function expectKvAccepted(s: MatrixShape, kvType: KvCacheType): boolean {
  if (s.recurrent || kvType === "f16" || kvType === "f32" || kvType === "bf16") return true;
  return s.headDim % 32 === 0;
}

/** Whether llama.cpp can shift this shape's cache with K cache type `kvType` (full-size caches). */
export function expectCanShift(s: MatrixShape, kvType: KvCacheType): boolean {
  if (s.recurrent) return false;
  if (kvType === "f16" || kvType === "f32" || kvType === "bf16") return true;
  return s.headDim % 64 === 0;
}

/** |actual - estimate| <= 5% of actual. */
export function expectWithin5(actual: number, estimate: number, what: string): void {
  expect(Math.abs(actual - estimate), `${what}: actual ${actual}, estimate ${estimate}`).toBeLessThanOrEqual(actual * 0.05);
}

/** A prompt of about `words` words, different for each `salt`. */
export function longText(words: number, salt = 0): string {
  const vocab = ["memory", "window", "river", "stone", "light", "quiet", "number", "garden", "signal", "paper", "winter", "cloud", "engine", "silver", "orbit"];
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(vocab[(i * 7 + salt * 3 + ((i * i) % 5)) % vocab.length] as string);
  return out.join(" ");
}

/** Greedy token ids after `prompt` on a fresh context of `model` with `opts`. */
export async function freshGreedy(model: Model, opts: ContextOptions, prompt: number[], n: number): Promise<number[]> {
  await using ctx = await model.createContext({ threads: THREADS, ...opts });
  const ids: number[] = [];
  await ctx.complete(prompt, { maxTokens: n, temperature: 0, onToken: (t) => ids.push(t) });
  return ids;
}

const SYSTEM = "You are a concise assistant.";
const QUESTIONS = [
  "What is a river?",
  "Tell me about stones in a quiet garden.",
  "Why does winter light look silver?",
  "Describe an engine in one line.",
  "What does a signal carry?",
];

/** Options of the matrix for one architecture. */
export interface MatrixOptions {
  /**
   * Tests that fail because of a known bug in code outside the matrix: marked `it.fails` so the
   * suite stays green while the bug is open, and turn red (as they should) once it is fixed.
   * Keyed by the test's name.
   */
  readonly knownFailures?: Readonly<Record<string, string>>;
  /** KV types whose removeTokens runs in a child process (it may crash the process). */
  readonly removeInChild?: readonly KvCacheType[];
}

/** The loaded model of a matrix file, for the tests an architecture adds. */
export interface MatrixModel {
  readonly model: Model;
  readonly path: string;
  readonly shape: MatrixShape;
}

/** `it`, or `it.fails` for a known failure. */
export function test(opts: MatrixOptions, name: string, fn: () => Promise<void>, timeout?: number): void {
  if (opts.knownFailures?.[name] !== undefined) it.fails(name, fn, timeout);
  else it(name, fn, timeout);
}

/**
 * Defines the matrix's tests for `arch`, then the architecture's own (`extra`, called inside the
 * same describe with an accessor of the loaded model). The model is written (or taken from the
 * cache) and loaded once for the file.
 */
export function describeMatrix(arch: MatrixArch, opts: MatrixOptions = {}, extra?: (m: () => MatrixModel) => void): void {
  const shape = shapeOf(arch);
  const ref = referenceCase(arch);
  let model: Model;
  let path = "";

  describe(`${arch}: the feature matrix`, () => {
    beforeAll(async () => {
      path = await archModel(arch, ref.type, ref.seed);
      model = await loadModel(path);
    });
    afterAll(async () => {
      await model?.dispose();
    });

    test(opts, "loads; info names the architecture, its sliding window and whether it is recurrent", async () => {
      const info = model.info;
      expect(info.architecture).toBe(shape.architecture);
      expect(info.embeddingSize).toBe(shape.nEmbd);
      expect(info.layers).toBe(shape.nLayer);
      expect(info.heads).toBe(shape.nHead);
      expect(info.kvHeads).toBe(shape.nHeadKv);
      expect(info.slidingWindow).toBe(shape.slidingWindow);
      expect(info.recurrent).toBe(shape.recurrent);
      expect(info.chatTemplate).toBeTypeOf("string");
      expect(info.parameters).toBeGreaterThan(0);
    });

    test(opts, "greedy output equals llama.cpp's examples/simple, byte for byte", async () => {
      const prompt = await model.tokenize(ref.prompt, { parseSpecial: true });
      // examples/simple: context = prompt + prediction - 1, one batch for the prompt, and
      // llama.cpp's default flash attention ("auto" resolves to on for the CPU).
      await using ctx = await model.createContext({
        contextSize: prompt.length + ref.nPredict - 1, batchSize: prompt.length, flashAttention: "on", threads: THREADS,
      });
      const ids: number[] = [];
      await ctx.complete(prompt, { maxTokens: ref.nPredict, temperature: 0, onToken: (t) => ids.push(t) });
      const text = Buffer.concat([...prompt, ...ids].map((t) => model.tokenToPiece(t, { special: true }))).toString("utf8");
      expect(`${text}\n`).toBe(ref.output);
    });

    describe.each(KV_TYPES)("KV cache %s with flash attention", (kvType) => {
      test(opts, "is accepted where the heads are whole blocks (else a typed refusal), sized by the real head size, and generates", async () => {
        const config: ContextOptions = { contextSize: 256, kvType, flashAttention: "on", threads: THREADS };
        if (!expectKvAccepted(shape, kvType)) {
          expect(["ERR_INVALID_ARGUMENT", "ERR_CONTEXT_CREATE"]).toContain(await codeOf(model.createContext(config)));
          return;
        }
        await using ctx = await model.createContext(config);
        const r = await ctx.complete(ref.prompt, { maxTokens: 8, temperature: 0 });
        expect(["maxTokens", "eog"]).toContain(r.stopReason);
        const mem = await ctx.memory();
        const expected = shape.recurrent
          ? recurrentStateBytes(shape) // llama.cpp keeps recurrent states in f32 whatever the KV type
          : 256 * shape.nLayer * kvBytesPerLayerCell(shape, kvType);
        expect(mem.kv).toBe(expected);
      });

      test(opts, "context.info.canShift says what llama.cpp can shift", async () => {
        await using ctx = await model.createContext({ contextSize: 256, kvType, flashAttention: "on", threads: THREADS });
        expect(ctx.info.canShift).toBe(expectCanShift(shape, kvType));
      });
    });

    describe.each((["f16", "q8_0"] as const).filter((t) => !opts.removeInChild?.includes(t)))("removeTokens with a %s K cache", (kvType) => {
      test(opts, "shifts where the cache can, re-evaluates where it cannot; re-evaluation equals a fresh context", async () => {
        const ctxOpts: ContextOptions = { contextSize: 256, kvType, flashAttention: kvType === "f16" ? "auto" : "on" };
        await using ctx = await model.createContext({ ...ctxOpts, threads: THREADS });
        const tokens = await model.tokenize(longText(40, 1));
        const seq = ctx.sequence(0);
        await seq.evaluate(tokens);
        const shifted = await seq.removeTokens(4, 12);
        const kept = [...tokens.slice(0, 4), ...tokens.slice(12)];
        expect(shifted).toBe(ctx.info.canShift);
        expect(shifted).toBe(expectCanShift(shape, kvType));
        expect([...seq.tokens]).toEqual(kept);
        expect((await ctx.memory()).cellsUsed).toBe(shape.recurrent ? 1 : kept.length);
        const ids: number[] = [];
        const r = await seq.complete(kept, { maxTokens: 8, temperature: 0, onToken: (t) => ids.push(t) });
        // Everything but (at most) the last prompt token came from the cache.
        expect(r.evaluatedPromptTokens).toBeLessThanOrEqual(shape.recurrent ? kept.length : 1);
        // Shifted cells keep what the removed tokens contributed: an approximation. Re-evaluation is exact.
        if (!shifted) expect(ids).toEqual(await freshGreedy(model, ctxOpts, kept, 8));
      });
    });

    test(opts, "a saved sequence state restores to the same continuation, in this context and another", async () => {
      const ctxOpts: ContextOptions = { contextSize: 512, sequences: 2 };
      await using ctx = await model.createContext({ ...ctxOpts, threads: THREADS });
      const tokens = await model.tokenize(longText(30, 2));
      const more = await model.tokenize(" and then", { addSpecial: false });
      const next = [...tokens, ...more];
      const a = ctx.sequence(0);
      await a.evaluate(tokens);
      const state = await a.saveState();
      const expected = await freshGreedy(model, ctxOpts, next, 8);
      const continueOn = async (seq: ReturnType<typeof ctx.sequence>) => {
        const ids: number[] = [];
        const r = await seq.complete(next, { maxTokens: 8, temperature: 0, onToken: (t) => ids.push(t) });
        // Only the new tokens were evaluated: the rest came from the restored cells or state.
        expect(r.evaluatedPromptTokens).toBe(more.length);
        return ids;
      };
      expect(await continueOn(a)).toEqual(expected);

      const b = ctx.sequence(1);
      await b.restoreState(state);
      expect([...b.tokens]).toEqual(tokens);
      expect(await continueOn(b)).toEqual(expected);

      await using other = await model.createContext({ ...ctxOpts, threads: THREADS });
      await other.sequence(0).restoreState(state);
      expect(await continueOn(other.sequence(0))).toEqual(expected);
    });

    test(opts, "estimateMemory matches the context's breakdown within 5% (weights, KV, compute)", async () => {
      // One dry run per architecture (each loads the vocabulary, up to a second for 262k tokens).
      for (const config of [{ contextSize: 1024, sequences: 2, kvType: "q8_0", flashAttention: "on", batchSize: 128 }] satisfies ContextOptions[]) {
        const est = await estimateMemory(path, config);
        await using ctx = await model.createContext({ ...config, threads: THREADS });
        const actual = await ctx.memory();
        const label = `${arch} ${JSON.stringify(config)}`;
        expectWithin5(actual.weights, est.weights, `${label} weights`);
        expectWithin5(actual.kv, est.kv, `${label} kv`);
        expectWithin5(actual.compute, est.compute, `${label} compute`);
        expect(est.contextSize).toBe(ctx.info.contextSize);
      }
    });

    test(opts, 'contextSize "auto" under a maxRam budget gives a context that fits it', async () => {
      const at1k = await estimateMemory(path, { contextSize: 1024 });
      const budget = Math.ceil(at1k.total * 1.01);
      await using ctx = await model.createContext({ contextSize: "auto", maxRam: budget, threads: THREADS });
      expect(ctx.fit?.estimate.total).toBeLessThanOrEqual(budget);
      // Recurrent states do not grow with the context: the trained context fits.
      if (shape.recurrent) expect(ctx.info.contextSize).toBe(model.info.trainedContextSize);
      else expect(ctx.info.contextSize).toBeGreaterThanOrEqual(1024);
      const m = await ctx.memory();
      expect(m.weights + m.kv + m.compute).toBeLessThanOrEqual(budget * 1.05);
    }, 300_000);

    /** Each reply of a session equals that of a fresh session given the same history (kvReuse "prefix" is exact). */
    async function sessionTurns(options: SessionOptions, turns: number, checkFresh: boolean): Promise<MemoryEvent[]> {
      const ctxOpts: ContextOptions = { contextSize: 512, threads: THREADS };
      await using ctx = await model.createContext(ctxOpts);
      const events: MemoryEvent[] = [];
      await using chat = await createSession(ctx, { ...options, onMemoryEvent: (e) => events.push(e) });
      for (let t = 0; t < turns; t++) {
        const before = chat.history.map((m) => ({ role: m.role, content: m.content }));
        const question = `${QUESTIONS[t % QUESTIONS.length]} ${longText(12, t)}`;
        const reply = await chat.prompt(question);
        expect(reply).toBeTypeOf("string");
        if (checkFresh) {
          await using fctx = await model.createContext(ctxOpts);
          await using fresh = await createSession(fctx, options);
          fresh.setHistory(before);
          expect(await fresh.prompt(question), `turn ${t}`).toBe(reply);
        }
      }
      return events;
    }

    test(opts, "a session with the model's own template under tokenBudget (kvReuse prefix) equals a fresh session each turn", async () => {
      const events = await sessionTurns({ system: SYSTEM, maxTokens: 10, temperature: 0, memory: { strategy: "tokenBudget", budget: 110, kvReuse: "prefix" } }, 4, true);
      expect(events.some((e) => e.kind === "prune")).toBe(true);
    });

    test(opts, "a session with the model's own template under summarize folds old turns into a summary", async () => {
      const events = await sessionTurns(
        { system: SYSTEM, maxTokens: 10, temperature: 0, memory: { strategy: "summarize", budget: 110, keepLastTurns: 1, summarize: { maxTokens: 12 } } },
        4,
        false,
      );
      expect(events.some((e) => e.kind === "summarize")).toBe(true);
    });

    test(opts, "a pool of 4 sessions gives each the replies it gets alone", async () => {
      const perSequence = 320;
      const optionsOf = (i: number): SessionOptions => ({ system: `You are assistant number ${i}. ${SYSTEM}`, maxTokens: 6 + i, temperature: 0 });
      const ask = (i: number, t: number) => QUESTIONS[(i + t) % QUESTIONS.length] as string;
      // Flash attention off, here and alone: with it, ggml's CPU kernels for a token decoded alone
      // and for a batch of the pool's tokens round differently (docs/models.md, "Exactness"), and
      // random weights turn that into other greedy tokens (seen on qwen3-head96).
      await using ctx = await model.createContext({ contextSize: 4 * perSequence, sequences: 4, batchSize: 64, threads: THREADS, flashAttention: "off" });
      await using pool = createPool(ctx);
      const sessions = await Promise.all([0, 1, 2, 3].map((i) => pool.createSession(optionsOf(i))));
      const pooled = await Promise.all(
        sessions.map(async (s, i) => {
          const replies: string[] = [];
          for (let t = 0; t < 2; t++) replies.push(await s.prompt(ask(i, t)));
          return replies;
        }),
      );
      for (let i = 0; i < 4; i++) {
        await using alone = await model.createContext({ contextSize: perSequence, batchSize: 64, threads: THREADS, flashAttention: "off" });
        await using s = await createSession(alone, optionsOf(i));
        const replies: string[] = [];
        for (let t = 0; t < 2; t++) replies.push(await s.prompt(ask(i, t)));
        expect(pooled[i], `session ${i}`).toEqual(replies);
      }
      expect((await pool.stats()).sessions).toBe(4);
    });

    extra?.(() => ({ model, path, shape }));
  });
}
