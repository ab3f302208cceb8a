/** The feature matrix on the tiny qwen3moe model, and what its experts change (test/models/matrix.ts). */
import { expect } from "vitest";
import { readGguf } from "../../lib/gguf/read.js";
import { estimateMemory, loadModel, type LoadMode } from "../../lib/index.js";
import { archModel } from "../helpers/models.js";
import { THREADS, describeMatrix, expectWithin5, test, type MatrixOptions } from "./matrix.js";

const opts: MatrixOptions = {};
const EXPERTS = /ffn_(gate|up|down)_exps/;

describeMatrix("qwen3moe", opts, (get) => {
  test(opts, "the estimate and the context count every tensor, the experts included", async () => {
    const { model, path } = get();
    const file = await readGguf(path);
    const all = file.tensors.reduce((n, t) => n + t.size, 0);
    const experts = file.tensors.filter((t) => EXPERTS.test(t.name)).reduce((n, t) => n + t.size, 0);
    expect(file.tensors.filter((t) => EXPERTS.test(t.name))).toHaveLength(3 * get().shape.nLayer);
    expect(experts).toBeGreaterThan(0);
    const est = await estimateMemory(path, { contextSize: 256 });
    await using ctx = await model.createContext({ contextSize: 256, threads: THREADS });
    const actual = await ctx.memory();
    expectWithin5(all, est.weights, "estimate vs the file's tensors");
    expectWithin5(all, actual.weights, "context vs the file's tensors");
    expectWithin5(all, model.memory().weights, "model.memory() vs the file's tensors");
  });

  test(opts, "experts pinned to the CPU by tensorOverrides give the same greedy output", async () => {
    const { model, path } = get();
    const prompt = await model.tokenize("Experts route every token to two of four");
    const run = async (m: typeof model) => {
      await using ctx = await m.createContext({ contextSize: 128, threads: THREADS });
      return (await ctx.complete(prompt, { maxTokens: 12, temperature: 0 })).text;
    };
    await using pinned = await loadModel(path, { tensorOverrides: [{ pattern: "ffn_.*_exps", device: "CPU" }] });
    expect(await run(pinned)).toBe(await run(model));
  });

  test(opts, "every load mode of a q8_0 model (repacked where the CPU can): the estimate is within 5% of what the context reports", async () => {
    // q8_0 experts are what the CPU backend repacks (AMX, CPU_REPACK) when it can: only part of
    // the weights move, so "auto" maps or reads the file, and no copy may be counted twice.
    const path = await archModel("qwen3moe", "q8_0", 1);
    const config = { contextSize: 512 };
    for (const [loadMode, repack] of [["auto", true], ["none", true], ["mmap", false]] as [LoadMode, boolean][]) {
      await using m = await loadModel(path, { loadMode, repack });
      const est = await estimateMemory(path, { ...config, repack });
      await using ctx = await m.createContext({ ...config, threads: THREADS });
      const actual = await ctx.memory();
      expectWithin5(actual.weights, est.weights, `weights, loadMode ${loadMode}, repack ${repack}`);
      expectWithin5(actual.weights + actual.kv + actual.compute, est.total, `total, loadMode ${loadMode}, repack ${repack}`);
    }
  });
});
