/**
 * LoRA adapters on the tiny model with synthetic adapters (seeded random pairs on the attention
 * weights): scale 0 gives the base model's greedy output, a non-zero scale changes it, the
 * adapters can change between generations, their bytes count in model.memory(), and bad files
 * are typed errors before or from llama.cpp.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeSyntheticLora } from "../../lib/gguf/synthetic.js";
import { estimateMemory, fitModel, loadModel, type Context, type LoraAdapter, type Model } from "../../lib/index.js";
import { archModel, testModelsDir, tinyModel } from "../helpers/models.js";
import { oneLayerModel } from "../session/helpers.js";
import { failure } from "../helpers/errors.js";

const PROMPT = "The quick brown fox";
let model: Model;
let ctx: Context;
let loraPath: string;
let adapter: LoraAdapter;

/** A synthetic LoRA for `base`, cached beside the test models. */
async function lora(base: string, name: string, seed = 1): Promise<string> {
  const dir = join(testModelsDir(), "lora");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}-seed${seed}.gguf`);
  if (!existsSync(path)) await writeSyntheticLora(path, { base, rank: 8, seed, std: 0.1 });
  return path;
}

const greedy = async () => (await ctx.complete(PROMPT, { maxTokens: 16, temperature: 0 })).text;

beforeAll(async () => {
  const base = await tinyModel("f16");
  model = await loadModel(base);
  ctx = await model.createContext({ contextSize: 256, threads: 1 });
  loraPath = await lora(base, "tiny-f16");
  adapter = await model.loadAdapter(loraPath);
});

afterAll(async () => {
  await ctx?.dispose();
  await model?.dispose();
});

describe("LoRA adapters", () => {
  it("scale 0 equals the base model; a non-zero scale changes the output; [] restores the base", async () => {
    const base = await greedy();
    await ctx.setAdapters([{ adapter, scale: 0 }]);
    expect(await greedy()).toBe(base);
    await ctx.setAdapters([{ adapter, scale: 1 }]);
    const tuned = await greedy();
    expect(tuned).not.toBe(base);
    // Deterministic: the same adapter and scale give the same text again.
    await ctx.setAdapters([{ adapter, scale: 1 }]);
    expect(await greedy()).toBe(tuned);
    await ctx.setAdapters([]);
    expect(await greedy()).toBe(base);
  });

  it("its bytes are the file's tensors, and count in model.memory() until disposed", async () => {
    // For each attention weight [in, out] of the base: A [in, 8] and B [8, out], f32.
    const attention = model.gguf.tensors.filter((t) => /^blk\.\d+\.attn_(q|k|v|output)\.weight$/.test(t.name));
    expect(attention.length).toBe(4 * model.info.layers);
    const expected = attention.reduce((sum, t) => sum + 4 * 8 * ((t.dims[0] as number) + (t.dims[1] as number)), 0);
    expect(adapter.rank).toBe(8);
    expect(adapter.bytes).toBe(expected);
    expect(model.memory().adapters).toBe(adapter.bytes);
    const second = await model.loadAdapter(await lora(await tinyModel("f16"), "tiny-f16", 2));
    expect(model.memory().adapters).toBe(adapter.bytes + second.bytes);
    // Disposed while set on a context: the context keeps applying it; memory() stops counting it.
    await ctx.setAdapters([{ adapter: second, scale: 1 }]);
    const withSecond = await greedy();
    await second.dispose();
    expect(model.memory().adapters).toBe(adapter.bytes);
    expect(await greedy()).toBe(withSecond);
    await expect(ctx.setAdapters([{ adapter: second, scale: 1 }])).rejects.toMatchObject({ code: "ERR_DISPOSED" });
    await ctx.setAdapters([]);
  });

  it("a wrong architecture, a model that is not an adapter, a truncated file, missing tensors: typed errors", async () => {
    const qwenLora = await lora(await archModel("qwen2"), "qwen2-q8_0");
    expect((await failure(model.loadAdapter(qwenLora))).code).toBe("ERR_ADAPTER");
    expect((await failure(model.loadAdapter(await tinyModel("f16")))).code).toBe("ERR_ADAPTER");
    const bytes = readFileSync(loraPath);
    const cut = join(testModelsDir(), "lora", "truncated.gguf");
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    expect((await failure(model.loadAdapter(cut))).code).toBe("ERR_GGUF_TRUNCATED");
    expect((await failure(model.loadAdapter(join(testModelsDir(), "lora", "none.gguf")))).code).toBe("ERR_FILE_NOT_FOUND");
    // An adapter for two layers on a one-layer model: llama.cpp finds a tensor the model lacks.
    await using oneLayer = await loadModel(await oneLayerModel());
    const e = await failure(oneLayer.loadAdapter(loraPath));
    expect(e.code).toBe("ERR_ADAPTER");
    expect(e.message).toMatch(/does not exist in base model/);
    // An adapter of another model is refused by a context of this one.
    const foreign = await oneLayer.loadAdapter(await lora(await oneLayerModel(), "one-layer"));
    await expect(ctx.setAdapters([{ adapter: foreign, scale: 1 }])).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    // The model still generates after all of it.
    expect((await greedy()).length).toBeGreaterThan(0);
  });

  it("estimateMemory and fitModel count the adapters' bytes with the weights", async () => {
    const plain = await estimateMemory(model.path, { contextSize: 256 });
    const withLora = await estimateMemory(model.path, { contextSize: 256, adapters: [loraPath] });
    expect(plain.adapters).toBe(0);
    expect(withLora.adapters).toBe(adapter.bytes);
    expect(withLora.weights - plain.weights).toBe(adapter.bytes);
    expect(withLora.total - plain.total).toBe(adapter.bytes);
    // A budget that holds the model with exactly 2048 tokens holds less context with the adapter.
    const budget = (await estimateMemory(model.path, { contextSize: 2048 })).total;
    const alone = await fitModel(model.path, { maxRam: budget, contextSize: "auto" });
    const both = await fitModel(model.path, { maxRam: budget, contextSize: "auto", adapters: [loraPath] });
    expect(alone.contextSize).toBe(2048);
    expect(both.contextSize).toBeLessThan(2048);
    expect(both.estimate.adapters).toBe(adapter.bytes);
    expect(both.estimate.total).toBeLessThanOrEqual(budget);
  });
});
