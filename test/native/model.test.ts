import { mkdtempSync, writeFileSync, copyFileSync, openSync, ftruncateSync, closeSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { loadModel, LlamemError } from "../../lib/index.js";
import { defaultVocabPath } from "../../lib/gguf/synthetic.js";
import { native } from "../../lib/internal/native.js";
import { fromNative } from "../../lib/errors.js";
import { loadBaton } from "../../lib/options.js";
import { tinyModel } from "../helpers/models.js";
import { codeOf } from "../helpers/errors.js";

let modelPath: string;
const scratch = mkdtempSync(join(tmpdir(), "llamem-model-test-"));

beforeAll(async () => {
  modelPath = await tinyModel("f16");
});


describe("loadModel", () => {
  it("loads a model with progress and reports its metadata", async () => {
    const progress: number[] = [];
    const model = await loadModel(modelPath, { onProgress: (p) => progress.push(p) });
    try {
      const info = model.info;
      expect(info.architecture).toBe("llama");
      expect(info.layers).toBe(2);
      expect(info.embeddingSize).toBe(64);
      expect(info.heads).toBe(2);
      expect(info.kvHeads).toBe(1);
      expect(info.vocabSize).toBe(32000);
      expect(info.trainedContextSize).toBe(4096);
      expect(info.fileSize).toBe(statSync(modelPath).size);
      expect(info.parameters).toBeGreaterThan(4_000_000);
      expect(info.chatTemplate).toContain("<|im_start|>");
      expect(info.metadata["general.architecture"]).toBe("llama");
      expect(progress.length).toBeGreaterThan(0);
      expect(progress.at(-1)).toBe(1);
    } finally {
      await model.dispose();
    }
  });

  it("tokenizes and detokenizes text round trip, with and without BOS", async () => {
    const model = await loadModel(modelPath);
    try {
      const text = "Hello world, héllo 🦙 memory";
      const withBos = await model.tokenize(text);
      const without = await model.tokenize(text, { addSpecial: false });
      expect(withBos[0]).toBe(model.info.bos);
      expect(withBos.slice(1)).toEqual(without);
      expect(await model.detokenize(without)).toBe(text);
      expect(await model.tokenize("")).toEqual([model.info.bos]);
      // Special-token text is plain text unless parseSpecial is set.
      const literal = await model.tokenize("</s>", { addSpecial: false });
      const parsed = await model.tokenize("</s>", { addSpecial: false, parseSpecial: true });
      expect(parsed).toEqual([model.info.eos]);
      expect(literal.length).toBeGreaterThan(1);
    } finally {
      await model.dispose();
    }
  });

  it("rejects token ids outside the vocabulary with a typed error", async () => {
    const model = await loadModel(modelPath);
    try {
      expect(await codeOf(model.detokenize([1, 32000]))).toBe("ERR_INVALID_ARGUMENT");
      expect(await codeOf(model.detokenize([-1]))).toBe("ERR_INVALID_ARGUMENT");
    } finally {
      await model.dispose();
    }
  });

  it("loads only the vocabulary when asked, and refuses contexts then", async () => {
    const model = await loadModel(defaultVocabPath(), { vocabOnly: true });
    try {
      expect(model.info.vocabSize).toBe(32000);
      expect((await model.tokenize("Hello", { addSpecial: false })).length).toBeGreaterThan(0);
      expect(await codeOf(model.createContext())).toBe("ERR_INVALID_ARGUMENT");
    } finally {
      await model.dispose();
    }
  });

  it("gives each bad input a typed error code, and the process lives on", async () => {
    expect(await codeOf(loadModel(join(scratch, "missing.gguf")))).toBe("ERR_FILE_NOT_FOUND");
    expect(await codeOf(loadModel(scratch))).toBe("ERR_NOT_A_FILE");
    const text = join(scratch, "text.gguf");
    writeFileSync(text, "this is not a model at all, just text\n");
    expect(await codeOf(loadModel(text))).toBe("ERR_NOT_GGUF");
    const empty = join(scratch, "empty.gguf");
    writeFileSync(empty, "");
    expect(await codeOf(loadModel(empty))).toBe("ERR_NOT_GGUF");
    const truncated = join(scratch, "truncated.gguf");
    copyFileSync(modelPath, truncated);
    const fd = openSync(truncated, "r+");
    ftruncateSync(fd, Math.floor(statSync(modelPath).size / 2));
    closeSync(fd);
    expect(await codeOf(loadModel(truncated))).toBe("ERR_GGUF_TRUNCATED");
    expect(await codeOf(loadModel(""))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(loadModel(modelPath, { gpuLayers: -5 }))).toBe("ERR_INVALID_ARGUMENT");
    expect(await codeOf(loadModel(modelPath, { gpuLayers: 1.5 }))).toBe("ERR_INVALID_ARGUMENT");
    // The process still works after all of that.
    const model = await loadModel(modelPath);
    expect(model.info.layers).toBe(2);
    await model.dispose();
  });

  it("cancels a load through an AbortSignal", async () => {
    const already = new AbortController();
    already.abort();
    expect(await codeOf(loadModel(modelPath, { signal: already.signal }))).toBe("ERR_ABORTED");
    const ac = new AbortController();
    const p = loadModel(modelPath, { signal: ac.signal });
    ac.abort();
    expect(await codeOf(p)).toBe("ERR_ABORTED");
    // The native load itself stops when cancelled while it runs.
    const { promise, cancel } = native().Model.load(modelPath, loadBaton({}, { gpuLayers: 0, loadMode: "mmap", repack: true, vocabOnly: false }), null);
    cancel();
    expect(await codeOf(promise.catch((e: unknown) => { throw fromNative(e); }))).toBe("ERR_ABORTED");
  });

  it("throws ERR_DISPOSED on use after dispose; dispose twice is a no-op", async () => {
    const model = await loadModel(modelPath);
    await model.dispose();
    await model.dispose();
    expect(model.disposed).toBe(true);
    expect(() => model.info).toThrow(LlamemError);
    expect(await codeOf(model.tokenize("x"))).toBe("ERR_DISPOSED");
    expect(await codeOf(model.createContext())).toBe("ERR_DISPOSED");
  });

  it("supports await using", async () => {
    let escaped: Awaited<ReturnType<typeof loadModel>> | undefined;
    {
      await using model = await loadModel(modelPath);
      escaped = model;
      expect(model.disposed).toBe(false);
    }
    expect(escaped.disposed).toBe(true);
  });
});
