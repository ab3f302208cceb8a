/**
 * The native layer on its own: every code it throws is one of lib/errors.ts, and every field of
 * every baton is required and checked (ERR_INVALID_ARGUMENT naming it, never a default, never a
 * crash). Calls the binding directly, so it depends on lib/ only through internal/native.ts and
 * errors.ts.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as errors from "../../lib/errors.js";
import { NATIVE_API_VERSION, native } from "../../lib/internal/native.js";
import type {
  NativeBatchEntry,
  NativeBatchResult,
  NativeContext,
  NativeContextOptions,
  NativeLoadOptions,
  NativeModel,
  NativeSampler,
  NativeSamplerStage,
} from "../../lib/internal/native.js";
import { tinyModel } from "../helpers/models.js";

const root = join(__dirname, "..", "..");

/** The codes lib/errors.ts declares: ERROR_CODES (an array or a record), else parsed from the source. */
function errorCodes(): string[] {
  const list = (errors as Record<string, unknown>).ERROR_CODES;
  if (Array.isArray(list)) return list as string[];
  if (list && typeof list === "object") return Object.keys(list);
  // TODO(lead): drop this fallback once lib/errors.ts exports ERROR_CODES for good.
  const text = readFileSync(join(root, "lib", "errors.ts"), "utf8");
  return [...text.matchAll(/"(ERR_[A-Z_]+)"/g)].map((m) => m[1]!);
}

/** The binding, untyped: these tests pass what the types forbid. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Loose = any;
const b = (): Loose => native();

/** Runs `fn` and expects ERR_INVALID_ARGUMENT, thrown or as a rejection; returns the message. */
async function invalid(fn: () => unknown): Promise<string> {
  let err: unknown;
  try {
    const r = fn();
    if (r && typeof (r as Promise<unknown>).then === "function") await r;
  } catch (e) {
    err = e;
  }
  expect(err, "expected ERR_INVALID_ARGUMENT, but the call succeeded").toBeInstanceOf(Error);
  expect((err as Error & { code?: string }).code, (err as Error).message).toBe("ERR_INVALID_ARGUMENT");
  return (err as Error).message;
}

const LOAD: NativeLoadOptions = {
  gpuLayers: 0,
  loadMode: 1,
  repack: true,
  vocabOnly: false,
  devices: [],
  splitMode: 1,
  mainGpu: 0,
  tensorSplit: [],
  overridePatterns: [],
  overrideDevices: [],
};

const BATCH = 16;
const CONTEXT: NativeContextOptions = {
  contextSize: 256,
  batchSize: BATCH,
  ubatchSize: BATCH,
  sequences: 2,
  threads: 1,
  threadsBatch: 1,
  flashAttention: -1,
  typeK: 1,
  typeV: 1,
  offloadKv: true,
  swaFull: false,
  kvUnified: false,
  embeddings: false,
  pooling: -1,
  outputs: BATCH,
};

/** A wrong value of another type for each kind of field. */
function wrongTypeFor(value: unknown): unknown {
  if (typeof value === "number") return "1";
  if (typeof value === "boolean") return 1;
  if (Array.isArray(value)) return "[]";
  return 1;
}

/** Each field missing, null and of the wrong type must be refused, naming the field. */
async function eachFieldRequired<T extends object>(valid: T, call: (o: Record<string, unknown>) => unknown): Promise<void> {
  for (const key of Object.keys(valid)) {
    const value = (valid as Record<string, unknown>)[key];
    const { [key]: _, ...missing } = valid as Record<string, unknown>;
    expect(await invalid(() => call(missing))).toContain(key);
    expect(await invalid(() => call({ ...valid, [key]: null }))).toContain(key);
    expect(await invalid(() => call({ ...valid, [key]: undefined }))).toContain(key);
    expect(await invalid(() => call({ ...valid, [key]: wrongTypeFor(value) }))).toContain(key);
  }
}

describe("error codes", () => {
  it("every ERR_* the binding uses is one of lib/errors.ts's codes", () => {
    const known = new Set(errorCodes());
    expect(known.has("ERR_INVALID_ARGUMENT")).toBe(true);
    const dir = join(root, "binding");
    const used = new Map<string, string>();
    for (const file of readdirSync(dir).filter((f) => f.endsWith(".cc") || f.endsWith(".h"))) {
      for (const m of readFileSync(join(dir, file), "utf8").matchAll(/"(ERR_[A-Z0-9_]+)"/g)) used.set(m[1]!, file);
    }
    expect(used.size).toBeGreaterThan(5);
    const unknown = [...used].filter(([code]) => !known.has(code)).map(([code, file]) => `${code} (${file})`);
    expect(unknown).toEqual([]);
  });
});

describe("native arguments", () => {
  let path: string;
  let model: NativeModel;
  let context: NativeContext;
  let sampler: NativeSampler;
  let tokens: Int32Array;

  beforeAll(async () => {
    path = await tinyModel("f16");
    model = await native().Model.load(path, LOAD, null).promise;
    context = await native().Context.create(model, CONTEXT, null);
    sampler = new (native().Sampler)(model, { stages: [{ type: "greedy" }], backend: false });
    tokens = await model.tokenize("Hello world, hello memory", true, false);
  });

  afterAll(async () => {
    sampler?.dispose();
    await context?.dispose();
    await model?.dispose();
  });

  it("exports only the contract (no eval, seqKeep or Sampler.reset)", () => {
    const ctx = context as Loose;
    expect(ctx.eval).toBeUndefined();
    expect(ctx.seqKeep).toBeUndefined();
    expect((sampler as Loose).reset).toBeUndefined();
    expect(typeof ctx.evalBatch).toBe("function");
    expect(typeof ctx.haltLoop).toBe("function");
    // The version lib/ checks at load, so a stale binary is refused instead of misread.
    expect(native().apiVersion).toBe(NATIVE_API_VERSION);
  });

  it("model info holds exactly NativeModelInfo's fields", () => {
    expect(Object.keys(model.info()).sort()).toEqual(
      [
        "description", "size", "parameters", "trainedContextSize", "embeddingSize", "layers", "heads", "kvHeads",
        "slidingWindow", "vocabSize", "vocabType", "bos", "eos", "eot", "addBos", "addEos", "sep", "addSep", "hasEncoder", "hasDecoder",
        "recurrent", "outputDevice", "chatTemplate", "metadata",
      ].sort(),
    );
  });

  it("setLogLevel takes an integer in [-1, 4] only", async () => {
    for (const bad of [Number.NaN, Infinity, 1.5, 5, -2, "2", null, undefined, {}]) {
      await invalid(() => b().setLogLevel(bad));
    }
    await invalid(() => b().setLogLevel());
    b().setLogLevel(-1);
  });

  it("Model.load requires every load option and a function or null for onProgress", async () => {
    await eachFieldRequired(LOAD, (o) => b().Model.load(path, o, null));
    expect(await invalid(() => b().Model.load(path, { ...LOAD, devices: ["CPU", 1] }, null))).toContain("devices");
    expect(await invalid(() => b().Model.load(path, { ...LOAD, tensorSplit: [1, Number.NaN] }, null))).toContain("tensorSplit");
    expect(await invalid(() => b().Model.load(path, { ...LOAD, tensorSplit: [-1] }, null))).toContain("tensorSplit");
    expect(await invalid(() => b().Model.load(path, { ...LOAD, overridePatterns: ["x"], overrideDevices: [] }, null))).toContain(
      "overrideDevices",
    );
    expect(await invalid(() => b().Model.load(path, { ...LOAD, loadMode: 5 }, null))).toContain("loadMode");
    expect(await invalid(() => b().Model.load(path, { ...LOAD, gpuLayers: 1.5 }, null))).toContain("gpuLayers");
    for (const bad of [undefined, 5, "fn", {}]) {
      expect(await invalid(() => b().Model.load(path, LOAD, bad))).toContain("onProgress");
    }
    await invalid(() => b().Model.load(path, LOAD));
    await invalid(() => b().Model.load(42, LOAD, null));
    await invalid(() => b().Model.load(path, null, null));
  });

  it("Model.estimate requires both full batons", async () => {
    await eachFieldRequired(LOAD, (o) => b().Model.estimate(path, o, CONTEXT));
    await eachFieldRequired(CONTEXT, (o) => b().Model.estimate(path, LOAD, o));
    await invalid(() => b().Model.estimate(path, LOAD));
    const e = await native().Model.estimate(path, LOAD, CONTEXT);
    expect(e.rows.length).toBeGreaterThan(0);
  });

  it("Context.create requires every context option and a live model", async () => {
    await eachFieldRequired(CONTEXT, (o) => b().Context.create(model, o, null));
    for (const [key, bad] of [
      ["ubatchSize", BATCH + 1],
      ["flashAttention", 2],
      ["sequences", 0],
      ["threads", 0],
      ["typeK", -1],
      ["typeK", 43], // GGML_TYPE_COUNT
    ] as const) {
      expect(await invalid(() => b().Context.create(model, { ...CONTEXT, [key]: bad }, null))).toContain(key);
    }
    // Types ggml cannot hold a cache in: removed (4), no vec_dot (q8_1 9, q8_K 15, i32 26).
    for (const t of [4, 9, 15, 26]) {
      expect(await invalid(() => b().Context.create(model, { ...CONTEXT, typeK: t }, null))).toContain("typeK");
      expect(await invalid(() => b().Context.create(model, { ...CONTEXT, typeV: t, flashAttention: 1 }, null))).toContain("typeV");
    }
    // A quantized V cache without flash attention would abort in llama.cpp.
    expect(await invalid(() => b().Context.create(model, { ...CONTEXT, typeV: 8, flashAttention: 0 }, null))).toContain("typeV");
    // q4_K's 256-wide blocks do not divide this model's 32-wide heads.
    await invalid(() => b().Context.create(model, { ...CONTEXT, typeK: 12 }, null));
    await invalid(() => b().Context.create({}, CONTEXT, null));
    await invalid(() => b().Context.create(sampler, CONTEXT, null));
    await invalid(() => b().Context.create(context, CONTEXT, null));
    await invalid(() => b().Context.create(model));
    // threadsOf: required, and a live context of the same thread counts.
    expect(await invalid(() => b().Context.create(model, CONTEXT))).toContain("threadsOf");
    for (const bad of [undefined, {}, model, sampler, 1]) expect(await invalid(() => b().Context.create(model, CONTEXT, bad))).toContain("Context");
    expect(await invalid(() => b().Context.create(model, { ...CONTEXT, threads: CONTEXT.threads + 1, threadsBatch: CONTEXT.threadsBatch + 1 }, context))).toContain("threadsOf");
  });

  it("constructors refuse anything but a handle their own worker made", async () => {
    for (const arg of [undefined, {}, 1, "x", null, model, context]) {
      await invalid(() => new (b().Model)(arg));
      await invalid(() => new (b().Context)(arg));
    }
    await invalid(() => new (b().Model)());
  });

  it("Sampler takes the stages in order, each checked", async () => {
    const S = b().Sampler;
    const make = (stages: unknown, backend = false) => new S(model, { stages, backend });
    const ok: NativeSamplerStage[] = [
      { type: "penalties", lastN: 64, repeat: 1.1, frequency: 0, presence: 0 },
      { type: "topK", k: 40 },
      { type: "topP", p: 0.95, minKeep: 1 },
      { type: "minP", p: 0.05, minKeep: 1 },
      { type: "temperature", t: 0.8 },
      { type: "dist", seed: 42 },
    ];
    (make(ok) as NativeSampler).dispose();
    (make([{ type: "dist", seed: 2 ** 32 - 1 }]) as NativeSampler).dispose();
    for (const [i, stage] of ok.entries()) {
      await eachFieldRequired(stage, (o) => make(ok.map((s, j) => (j === i ? o : s))));
    }
    expect(await invalid(() => make([{ type: "mirostat" }, { type: "greedy" }]))).toContain("type");
    expect(await invalid(() => make([{ type: "topK", k: 32001 }, { type: "greedy" }]))).toContain("k");
    expect(await invalid(() => make([{ type: "topK", k: -1 }, { type: "greedy" }]))).toContain("k");
    expect(await invalid(() => make([{ type: "topP", p: 1.5, minKeep: 1 }, { type: "greedy" }]))).toContain("p");
    expect(await invalid(() => make([{ type: "minP", p: Number.NaN, minKeep: 1 }, { type: "greedy" }]))).toContain("p");
    expect(await invalid(() => make([{ type: "dist", seed: -1 }]))).toContain("seed");
    expect(await invalid(() => make([{ type: "dist", seed: 2 ** 32 }]))).toContain("seed");
    expect(await invalid(() => make([{ type: "dist", seed: 0.5 }]))).toContain("seed");
    // The chain must end with the stage that picks the token, and only there.
    await invalid(() => make([]));
    await invalid(() => make([{ type: "topK", k: 40 }]));
    await invalid(() => make([{ type: "dist", seed: 1 }, { type: "topK", k: 4 }]));
    await invalid(() => make([{ type: "greedy" }, { type: "greedy" }]));
    await invalid(() => make(["greedy"]));
    await invalid(() => make(undefined));
    await invalid(() => new S(model, {}));
    await invalid(() => new S(model));
    await invalid(() => new S({}, { stages: [{ type: "greedy" }], backend: false }));
    await eachFieldRequired({ stages: [{ type: "greedy" }], backend: false }, (o) => new S(model, o));
    // Backend sampling takes only stages with a backend version that needs no output limit.
    (make([{ type: "logitBias", entries: [{ token: 5, bias: 1 }] }, ...ok.slice(1)], true) as NativeSampler).dispose();
    expect(await invalid(() => make(ok, true))).toMatch(/backend.*penalties/);
    expect(await invalid(() => make([{ type: "typicalP", p: 0.9, minKeep: 1 }, { type: "greedy" }], true))).toMatch(/backend.*typicalP/);
  });

  /** The tokens a sampler of `stages` picks over `steps` decodes after the prompt, on a cleared sequence 0. */
  async function picks(stages: NativeSamplerStage[], steps: number): Promise<number[]> {
    const s = new (native().Sampler)(model, { stages, backend: false });
    const got: number[] = [];
    try {
      context.clear();
      const entry: NativeBatchEntry = { seq: 0, tokens, sampler: s, accept: true, sample: true, logprobs: -1, draft: 0, steps };
      await context.evalBatch([entry], { steps, maxMs: 0, stream: false, onStep: (rs) => got.push(rs[0]!.token!) });
    } finally {
      s.dispose();
      context.clear();
    }
    return got;
  }

  /**
   * Logit biases then `rest`, whose shortcut in the binding must pick what llama.cpp's chain picks:
   * the reference puts a temperature of 1 after the biases, which divides every logit by 1 and
   * sends the same stages through llama_sampler_sample.
   */
  async function sameAsChain(entries: { token: number; bias: number }[], rest: NativeSamplerStage[], steps: number): Promise<number[]> {
    const head: NativeSamplerStage[] = entries.length > 0 ? [{ type: "logitBias", entries }] : [];
    const fast = await picks([...head, ...rest], steps);
    expect(fast).toHaveLength(steps);
    expect(fast).toEqual(await picks([...head, { type: "temperature", t: 1 }, ...rest], steps));
    return fast;
  }

  it("a chain of logit biases and greedy picks exactly what llama.cpp's sampler chain picks", async () => {
    // The binding takes such a chain (temperature 0) as an argmax over the biased logits.
    const vocab = model.info().vocabSize;
    const same = (entries: { token: number; bias: number }[]) => sameAsChain(entries, [{ type: "greedy" }], 12);
    const plain = await same([]);
    // Banning what greedy picks moves every pick; a bias at token 0 and at the last token; one
    // token biased twice (the adds in order), the entries out of order.
    const banned = await same(plain.map((token) => ({ token, bias: -Infinity })));
    for (const t of plain) expect(banned).not.toContain(t);
    expect(await same([{ token: 0, bias: 1000 }])).toEqual(Array(12).fill(0));
    expect(await same([{ token: vocab - 1, bias: 1000 }, { token: 5, bias: 3 }])).toEqual(Array(12).fill(vocab - 1));
    expect(await same([{ token: 7, bias: 700 }, { token: 3, bias: 1 }, { token: 7, bias: -650.5 }, { token: 9, bias: 60 }])).toEqual(Array(12).fill(9));
    // A tie (1e30 absorbs any logit): the first index wins.
    expect(await same([{ token: 9, bias: 1e30 }, { token: 5, bias: 1e30 }])).toEqual(Array(12).fill(5));
    // Every token banned: both pick token 0, where greedy starts.
    expect(await same(Array.from({ length: vocab }, (_, token) => ({ token, bias: -Infinity })))).toEqual(Array(12).fill(0));
  });

  it("a chain of logit biases and a top-k draws exactly what llama.cpp's sampler chain draws", async () => {
    // The binding hands the stages after such a top-k only the k best tokens.
    const same = (bias: { token: number; bias: number }[], k: number, tail: NativeSamplerStage[]) => sameAsChain(bias, [{ type: "topK", k }, ...tail], 24);
    const defaults: NativeSamplerStage[] = [{ type: "topP", p: 0.95, minKeep: 1 }, { type: "minP", p: 0.05, minKeep: 1 }, { type: "temperature", t: 0.8 }, { type: "dist", seed: 7 }];
    const hot: NativeSamplerStage[] = [{ type: "temperature", t: 3 }, { type: "dist", seed: 11 }];
    const a = await same([], 40, defaults);
    const b = await same([], 40, hot);
    expect(new Set(b).size).toBeGreaterThan(3);
    // A top-k of 1 is greedy; 128 is the largest the binding takes itself; the biases come first.
    await same([], 1, hot);
    await same([], 128, hot);
    const banned = await same(a.map((token) => ({ token, bias: -Infinity })), 40, defaults);
    for (const t of a) expect(banned).not.toContain(t);
    expect(await same([{ token: 3, bias: 500 }, { token: 3, bias: -480 }, { token: 77, bias: 1e30 }], 40, defaults)).toEqual(Array(24).fill(77));
  });

  it("quantize requires every option", async () => {
    const opts = { ftype: 2, threads: 1, allowRequantize: false, pure: false };
    await eachFieldRequired(opts, (o) => b().quantize(path, `${path}.never`, o));
  });

  it("applyChatTemplate takes a string or null as the template", async () => {
    const messages = [{ role: "user", content: "hi" }];
    expect(model.applyChatTemplate(messages, true, null)).toContain("hi");
    expect(model.applyChatTemplate(messages, true, "chatml")).toContain("<|im_start|>");
    for (const bad of [5, undefined, {}, true]) {
      expect(await invalid(() => (model as Loose).applyChatTemplate(messages, true, bad))).toContain("template");
    }
    await invalid(() => (model as Loose).applyChatTemplate(messages, "yes", null));
  });

  it("a context reserves `outputs` logits rows, and a batch that asks for more is refused before llama.cpp's assert", async () => {
    expect(await invalid(() => b().Context.create(model, { ...CONTEXT, outputs: CONTEXT.sequences - 1 }, null))).toContain("outputs");
    expect(await invalid(() => b().Context.create(model, { ...CONTEXT, outputs: BATCH + 1 }, null))).toContain("outputs");
    const small: NativeContext = await native().Context.create(model, { ...CONTEXT, outputs: 3 }, null);
    try {
      const some = tokens.subarray(0, 4);
      const entry: NativeBatchEntry = { seq: 0, tokens: some, sampler, accept: false, sample: true, logprobs: -1, draft: 2, steps: 1 };
      // 3 rows for the draft entry, and 1 for each other sequence's entry.
      const two = await small.evalBatch([entry], null);
      expect(two[0]!.sampled!.length).toBeGreaterThanOrEqual(1);
      small.clear();
      const msg = await invalid(() => small.evalBatch([entry, { ...entry, seq: 1, sample: false, sampler: null, draft: 0 }], null));
      expect(msg).toMatch(/more than the context's 3 outputs/);
      expect(small.seqPosRange(0)).toEqual([-1, -1]);
    } finally {
      await small.dispose();
    }
  });

  it("evalBatch checks every entry before anything is decoded", async () => {
    const ctx = context as Loose;
    const some = tokens.subarray(0, 4);
    const entry: NativeBatchEntry = { seq: 0, tokens: some, sampler: null, accept: false, sample: false, logprobs: -1, draft: 0, steps: 1 };
    const { sampler: _s, ...noSampler } = entry;
    await eachFieldRequired(noSampler, (o) => ctx.evalBatch([{ sampler: null, ...o }], null));
    expect(await invalid(() => ctx.evalBatch([{ ...entry, sampler: undefined }], null))).toContain("sampler");
    const { sampler: _x, ...missingSampler } = entry;
    expect(await invalid(() => ctx.evalBatch([missingSampler], null))).toContain("sampler");
    // More tokens than the batch holds would overrun llama_batch's buffers.
    const many = new Int32Array(BATCH + 1).fill(tokens[1]!);
    expect(await invalid(() => ctx.evalBatch([{ ...entry, tokens: many }], null))).toContain("batch");
    const half = many.subarray(0, BATCH / 2 + 1);
    expect(await invalid(() => ctx.evalBatch([{ ...entry, tokens: half }, { ...entry, seq: 1, tokens: half }], null))).toContain("batch");
    expect(await invalid(() => ctx.evalBatch([entry, { ...entry }], null))).toContain("seq");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, seq: 2 }], null))).toContain("seq");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, seq: -1 }], null))).toContain("seq");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, tokens: new Int32Array(0) }], null))).toContain("tokens");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, tokens: [1, 2] }], null))).toContain("tokens");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, tokens: Int32Array.of(32000) }], null))).toContain("tokens");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, sample: true }], null))).toContain("sample");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, accept: true }], null))).toContain("accept");
    // Drafts: fewer than the tokens, verified by sampling, and not with accept or logprobs.
    expect(await invalid(() => ctx.evalBatch([{ ...entry, draft: 4 }], null))).toContain("draft");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, draft: -1 }], null))).toContain("draft");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, draft: 2 }], null))).toContain("draft");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, sampler, sample: true, accept: true, draft: 2 }], null))).toContain("draft");
    expect(await invalid(() => ctx.evalBatch([{ ...entry, sampler, sample: true, logprobs: 0, draft: 2 }], null))).toContain("draft");
    await invalid(() => ctx.evalBatch([{ ...entry, sampler: model, sample: true }], null));
    await invalid(() => ctx.evalBatch([{ ...entry, sampler: {}, sample: true }], null));
    await invalid(() => ctx.evalBatch([], null));
    await invalid(() => ctx.evalBatch([5], null));
    await invalid(() => ctx.evalBatch());
    // Nothing was decoded by the refused calls.
    expect(context.seqPosRange(0)).toEqual([-1, -1]);
    expect(context.seqPosRange(1)).toEqual([-1, -1]);

    // The process is alive and the context works: exactly a batch of tokens over two sequences.
    const full = many.subarray(0, BATCH / 2);
    const results = await context.evalBatch([
      { seq: 0, tokens: full, sampler, accept: true, sample: true, logprobs: -1, draft: 0, steps: 1 },
      { seq: 1, tokens: full, sampler: null, accept: false, sample: false, logprobs: -1, draft: 0, steps: 1 },
    ], null);
    expect(results.map((r) => [r.seq, r.evaluated])).toEqual([
      [0, BATCH / 2],
      [1, BATCH / 2],
    ]);
    expect(results[0]!.token).toBeGreaterThanOrEqual(0);
    expect(results[1]!.token).toBeUndefined();
    expect(context.seqPosRange(0)).toEqual([0, BATCH / 2 - 1]);
    const mem = context.memory();
    expect(mem.cellsUsed).toBe(BATCH);
    expect(mem.rows.length).toBeGreaterThan(0);
    context.clear();
  });

  it("evalBatch with a loop feeds each sampled token back and streams every step in order", async () => {
    const ctx = context as Loose;
    const entry: NativeBatchEntry = { seq: 0, tokens: tokens.subarray(0, 4), sampler, accept: true, sample: true, logprobs: -1, draft: 0, steps: 5 };
    const onStep = () => undefined;
    // The loop argument is required (null for one step) and checked like every other field.
    await invalid(() => ctx.evalBatch([entry]));
    for (const bad of [5, "x", { steps: 0, maxMs: 0, stream: true, onStep }, { steps: 2, maxMs: -1, stream: true, onStep }, { steps: 2, maxMs: 0, stream: true, onStep: 5 }, { steps: 2, stream: true, onStep }, { steps: 2, maxMs: 0, onStep }, { steps: 2, maxMs: 0, stream: 1, onStep }]) {
      expect(await invalid(() => ctx.evalBatch([entry], bad))).toContain("loop");
    }
    expect(await invalid(() => ctx.evalBatch([{ ...entry, steps: 0 }], null))).toContain("steps");
    expect(context.seqPosRange(0)).toEqual([-1, -1]);

    // Two sequences: seq 0 may take 5 decodes, seq 1 only 2; a step limit of 8 does not bind.
    const steps: NativeBatchResult[][] = [];
    const done = await context.evalBatch(
      [entry, { ...entry, seq: 1, steps: 2 }],
      { steps: 8, maxMs: 0, stream: true, onStep: (results) => steps.push(results) },
    );
    expect(done).toBeUndefined();
    expect(steps.map((s) => s.map((r) => [r.seq, r.evaluated]))).toEqual([
      [[0, 4], [1, 4]],
      [[0, 1], [1, 1]],
      [[0, 1]],
      [[0, 1]],
      [[0, 1]],
    ]);
    // Every sampled token but the last was decoded: 4 prompt tokens plus 4 fed back on seq 0, 1 on seq 1.
    expect(context.seqPosRange(0)).toEqual([0, 7]);
    expect(context.seqPosRange(1)).toEqual([0, 4]);
    for (const s of steps) for (const r of s) expect(r.token).toBeGreaterThanOrEqual(0);

    // haltLoop ends the loop after the step in flight; a throwing onStep halts it and rejects with its error.
    context.clear();
    let seen = 0;
    await context.evalBatch([{ ...entry, steps: 50 }], {
      steps: 50, maxMs: 0, stream: true, onStep: () => {
        if (++seen === 2) context.haltLoop();
      },
    });
    expect(seen).toBeGreaterThanOrEqual(2);
    expect(seen).toBeLessThan(50);
    context.clear();
    const boom = new Error("boom");
    let calls = 0;
    await expect(context.evalBatch([{ ...entry, steps: 50 }], {
      steps: 50, maxMs: 0, stream: true, onStep: () => {
        calls++;
        throw boom;
      },
    })).rejects.toBe(boom);
    expect(calls).toBe(1);
    expect(context.seqPosRange(0)[1]).toBeLessThan(49);
    context.clear();

    // Without stream, the steps reach onStep all together, in order, when the loop is over: the
    // event loop turns while the steps run, never between two of them.
    for (const stream of [true, false]) {
      let turns = 0;
      let spinning = true;
      const spin = () => {
        turns++;
        if (spinning) setImmediate(spin);
      };
      setImmediate(spin);
      const seenAt: number[] = [];
      const got: NativeBatchResult[][] = [];
      await context.evalBatch([{ ...entry, steps: 200 }], { steps: 200, maxMs: 0, stream, onStep: (results) => (got.push(results), seenAt.push(turns)) });
      spinning = false;
      expect(got.length).toBe(200);
      expect(got.map((s) => s[0]?.evaluated)).toEqual([4, ...Array.from({ length: 199 }, () => 1)]);
      expect(new Set(seenAt).size === 1).toBe(!stream);
      context.clear();
    }
  });

  it("a sequence that would overflow its share of the context is refused before decoding", async () => {
    const small = await native().Context.create(model, { ...CONTEXT, contextSize: 16, batchSize: 16, ubatchSize: 16, sequences: 1 }, null);
    try {
      const { sequenceContextSize: n, batchSize } = small.info();
      const fill = new Int32Array(n).fill(tokens[1]!);
      for (let i = 0; i < n; i += batchSize) {
        await small.evalBatch([{ seq: 0, tokens: fill.subarray(i, i + batchSize), sampler: null, accept: false, sample: false, logprobs: -1, draft: 0, steps: 1 }], null);
      }
      let code: string | undefined;
      try {
        await small.evalBatch([{ seq: 0, tokens: fill.subarray(0, 1), sampler: null, accept: false, sample: false, logprobs: -1, draft: 0, steps: 1 }], null);
      } catch (e) {
        code = (e as { code?: string }).code;
      }
      expect(code).toBe("ERR_CONTEXT_FULL");
      expect(small.seqPosRange(0)).toEqual([0, n - 1]);
    } finally {
      await small.dispose();
    }
  });

  it("sequence operations keep their strict checks", async () => {
    const ctx = context as Loose;
    await invalid(() => ctx.seqPosRange(2));
    await invalid(() => ctx.seqPosRange(Number.NaN));
    await invalid(() => ctx.seqRemove(0, 0));
    await invalid(() => ctx.seqCopy(0, 0, -1, -1));
    // A range between KV streams would GGML_ASSERT in llama.cpp: refused; whole copies still work.
    expect(await invalid(() => ctx.seqCopy(0, 1, 0, 2))).toContain("kvUnified");
    expect(await invalid(() => ctx.seqCopy(0, 1, 3, -1))).toContain("kvUnified");
    context.seqCopy(0, 1, -1, -1);
    context.clear();
    await invalid(() => ctx.stateSeqSet(0, "data"));
    await invalid(() => (model as Loose).tokenize("x", 1, false));
    await invalid(() => (model as Loose).tokenToPiece(32000, false));
  });
});
