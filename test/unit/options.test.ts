/**
 * The batons: what lib/options.ts sends the binding for given user options (no addon needed).
 */
import { describe, expect, it } from "vitest";
import { contextBaton, DEFAULTS, defaultContextSize, FLASH_ATTENTION, KV_CACHE_TYPES, loadBaton, samplerBaton } from "../../lib/options.js";
import { LlamemError } from "../../lib/errors.js";

const code = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    return err instanceof LlamemError ? err.code : `untyped: ${String(err)}`;
  }
  return "no error";
};

describe("context baton", () => {
  it("fills every field, with the defaults from DEFAULTS", () => {
    const b = contextBaton({}, 1024);
    expect(b).toMatchObject({
      contextSize: 1024,
      batchSize: DEFAULTS.batchSize,
      ubatchSize: Math.min(DEFAULTS.batchSize, DEFAULTS.ubatchSizeCap),
      sequences: DEFAULTS.sequences,
      typeK: KV_CACHE_TYPES.f16,
      typeV: KV_CACHE_TYPES.f16,
      offloadKv: DEFAULTS.offloadKv,
      swaFull: DEFAULTS.swaFull,
      kvUnified: DEFAULTS.kvUnified,
    });
    for (const [k, v] of Object.entries(b)) expect(v, k).not.toBeUndefined();
    expect(b.threads).toBeGreaterThan(0);
    expect(b.threadsBatch).toBe(b.threads);
  });

  it("reserves logits rows for each sequence's last token and drafts, every token for embeddings", () => {
    expect(contextBaton({}, 1024).outputs).toBe(DEFAULTS.sequences);
    expect(contextBaton({ sequences: 4 }, 1024).outputs).toBe(4);
    expect(contextBaton({ sequences: 4 }, 1024, 8).outputs).toBe(36);
    expect(contextBaton({ sequences: 64, batchSize: 512 }, 4096, 16).outputs).toBe(512);
    expect(contextBaton({ embeddings: true, batchSize: 256 }, 1024).outputs).toBe(256);
  });

  it('passes flashAttention "auto" to llama.cpp, which turns it on wherever the KV cache\'s devices run it, and keeps an explicit choice', () => {
    expect(contextBaton({}, 256).flashAttention).toBe(FLASH_ATTENTION.auto);
    expect(contextBaton({ kvType: "bf16" }, 256).flashAttention).toBe(FLASH_ATTENTION.auto);
    expect(contextBaton({ kvTypeV: "q4_0" }, 256).flashAttention).toBe(FLASH_ATTENTION.auto);
    expect(contextBaton({ flashAttention: "on" }, 256).flashAttention).toBe(FLASH_ATTENTION.on);
    expect(contextBaton({ flashAttention: "off" }, 256).flashAttention).toBe(FLASH_ATTENTION.off);
  });

  it("refuses bad values with ERR_INVALID_ARGUMENT", () => {
    expect(code(() => contextBaton({ kvType: "q2_k" as never }, 256))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => contextBaton({ kvType: "toString" as never }, 256))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => contextBaton({ flashAttention: "yes" as never }, 256))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => contextBaton({ batchSize: 0 }, 256))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => contextBaton({ batchSize: 64, ubatchSize: 128 }, 256))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => contextBaton({ swaFull: 1 as never }, 256))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => contextBaton({}, 0))).toBe("ERR_INVALID_ARGUMENT");
  });

  it("sizes the default context from the trained one", () => {
    expect(defaultContextSize(131072)).toBe(DEFAULTS.contextSizeCap);
    expect(defaultContextSize(2048)).toBe(2048);
    expect(defaultContextSize(0)).toBe(Math.min(DEFAULTS.contextSizeCap, DEFAULTS.trainedContextSize));
  });
});

describe("sampler baton", () => {
  it("lists the stages in llama.cpp's order and leaves out the ones that are off", () => {
    const all = samplerBaton({ temperature: 0.7, topK: 10, topP: 0.9, minP: 0.1, repeatPenalty: 1.1, seed: 5 }, 1000);
    expect(all.stages.map((s) => s.type)).toEqual(["penalties", "topK", "topP", "minP", "temperature", "dist"]);
    expect(all.stages.at(-1)).toEqual({ type: "dist", seed: 5 });
    const plain = samplerBaton({ topK: 0, topP: 1, minP: 0, seed: 1 }, 1000);
    expect(plain.stages.map((s) => s.type)).toEqual(["temperature", "dist"]);
  });

  it("is a greedy pick at temperature 0, after the penalties", () => {
    expect(samplerBaton({ temperature: 0 }, 1000).stages).toEqual([{ type: "greedy" }]);
    expect(samplerBaton({ temperature: 0, presencePenalty: 0.5 }, 1000).stages.map((s) => s.type)).toEqual(["penalties", "greedy"]);
  });

  it("asks for backend sampling when every stage has a backend version: by default where the output layer is on a GPU", () => {
    const gpu = { outputOnAccelerator: true };
    expect(samplerBaton({ temperature: 0 }, 1000).backend).toBe(false);
    expect(samplerBaton({ temperature: 0 }, 1000, undefined, undefined, gpu).backend).toBe(true);
    expect(samplerBaton({ seed: 1, logitBias: [{ token: 3, bias: 1 }] }, 1000, undefined, undefined, gpu).backend).toBe(true);
    expect(samplerBaton({ temperature: 0, backendSampling: true }, 1000).backend).toBe(true);
    expect(samplerBaton({ temperature: 0, backendSampling: false }, 1000, undefined, undefined, gpu).backend).toBe(false);
    // A generation that reads log-probabilities or verifies drafts samples on the CPU.
    expect(samplerBaton({ temperature: 0, backendSampling: true }, 1000, undefined, undefined, { ...gpu, cpu: true }).backend).toBe(false);
    // Stages without one keep the chain on the CPU, whatever was asked.
    expect(samplerBaton({ temperature: 0, repeatPenalty: 1.1, backendSampling: true }, 1000).backend).toBe(false);
    expect(samplerBaton({ typicalP: 0.9, backendSampling: true }, 1000).backend).toBe(false);
    expect(samplerBaton({ mirostat: true }, 1000, undefined, undefined, gpu).backend).toBe(false);
    expect(samplerBaton({ temperature: 0 }, 1000, "root ::= \"a\"", undefined, gpu).backend).toBe(false);
    expect(code(() => samplerBaton({ backendSampling: "yes" as never }, 1000))).toBe("ERR_INVALID_ARGUMENT");
  });

  it("refuses out-of-range values", () => {
    expect(code(() => samplerBaton({ topK: 1001 }, 1000))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => samplerBaton({ topP: Number.NaN }, 1000))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => samplerBaton({ seed: -1 }, 1000))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => samplerBaton({ temperature: "0" as never }, 1000))).toBe("ERR_INVALID_ARGUMENT");
  });
});

describe("load baton", () => {
  it("fills the placement fields and checks them", () => {
    const b = loadBaton({}, { gpuLayers: 0, loadMode: "mmap", repack: true, vocabOnly: false });
    expect(b).toEqual({
      gpuLayers: 0, loadMode: 1, repack: true, vocabOnly: false, devices: [], splitMode: 1, mainGpu: 0,
      tensorSplit: [], overridePatterns: [], overrideDevices: [],
    });
    expect(code(() => loadBaton({ tensorOverrides: [{ pattern: "(", device: "CPU" }] }, { gpuLayers: 0, loadMode: "mmap", repack: true, vocabOnly: false }))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => loadBaton({ splitMode: "rows" as never }, { gpuLayers: 0, loadMode: "mmap", repack: true, vocabOnly: false }))).toBe("ERR_INVALID_ARGUMENT");
    expect(code(() => loadBaton({ tensorSplit: [1, -1] }, { gpuLayers: 0, loadMode: "mmap", repack: true, vocabOnly: false }))).toBe("ERR_INVALID_ARGUMENT");
  });
});
