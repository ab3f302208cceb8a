/**
 * Impossible header values are ERR_GGUF_INVALID (lib/gguf/check.ts): hyperparameters that no
 * model has and that llama.cpp loads anyway, then runs wrongly or aborts on. Each case is a
 * header that is otherwise fine; the near misses next to them (what real models do) still pass.
 * No addon: checkModel reads only the header.
 */
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LlamemError } from "../../lib/errors.js";
import { checkModel } from "../../lib/gguf/check.js";
import { GGML_TYPE, type GgufMetadataEntry, type GgufTensorInfo } from "../../lib/gguf/format.js";
import { readGguf } from "../../lib/gguf/read.js";
import { defaultVocabPath } from "../../lib/gguf/synthetic.js";
import { gguf, writeGguf } from "../../lib/gguf/write.js";

type Meta = [string, GgufMetadataEntry][];

function tensor(name: string, dims: number[]): GgufTensorInfo {
  const elements = dims.reduce((a, b) => a * b, 1);
  return { name, dims, type: GGML_TYPE.F32, typeName: "f32", offset: 0, size: elements * 4, elements };
}

const WEIGHTS = [tensor("token_embd.weight", [64, 16]), tensor("output_norm.weight", [64])];

function llama(extra: Meta = []): Meta {
  return [
    ["general.architecture", gguf.str("llama")],
    ["llama.context_length", gguf.u32(4096)],
    ["llama.embedding_length", gguf.u32(64)],
    ["llama.block_count", gguf.u32(2)],
    ["llama.attention.head_count", gguf.u32(2)],
    ["llama.attention.head_count_kv", gguf.u32(1)],
    ["llama.rope.dimension_count", gguf.u32(32)],
    ...extra,
  ];
}

function gemma(arch: string, extra: Meta = []): Meta {
  return [
    ["general.architecture", gguf.str(arch)],
    [`${arch}.context_length`, gguf.u32(8192)],
    [`${arch}.embedding_length`, gguf.u32(64)],
    [`${arch}.block_count`, gguf.u32(4)],
    [`${arch}.attention.head_count`, gguf.u32(2)],
    [`${arch}.attention.head_count_kv`, gguf.u32(1)],
    [`${arch}.attention.key_length`, gguf.u32(64)],
    [`${arch}.attention.value_length`, gguf.u32(64)],
    [`${arch}.attention.sliding_window`, gguf.u32(512)],
    ...extra,
  ];
}

/** `entries` with the keys in `changes` replaced (undefined: removed). */
function edit(entries: Meta, changes: Record<string, GgufMetadataEntry | undefined>): Map<string, GgufMetadataEntry> {
  const m = new Map(entries);
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) m.delete(k);
    else m.set(k, v);
  }
  return m;
}

function verdict(metadata: Map<string, GgufMetadataEntry>, tensors: GgufTensorInfo[] = WEIGHTS): string {
  try {
    checkModel({ metadata, tensors });
    return "ok";
  } catch (err) {
    if (err instanceof LlamemError) return err.code;
    throw err;
  }
}

const INVALID = "ERR_GGUF_INVALID";

describe("the baselines pass", () => {
  it("llama, gemma3, gemma2", () => {
    expect(verdict(new Map(llama()))).toBe("ok");
    expect(verdict(new Map(gemma("gemma3", [["gemma3.attention.sliding_window_pattern", gguf.u32(6)]])))).toBe("ok");
    expect(verdict(new Map(gemma("gemma2")))).toBe("ok");
  });
});

describe("the common hyperparameters", () => {
  it("a trained context of 0 is refused, whether or not the file holds weights", () => {
    const m = edit(llama(), { "llama.context_length": gguf.u32(0) });
    expect(verdict(m)).toBe(INVALID);
    expect(verdict(m, [])).toBe(INVALID);
  });

  it.each(["context_length", "embedding_length", "block_count"])("%s missing in a file with a model's weights is refused", (key) => {
    const m = edit(llama(), { [`llama.${key}`]: undefined });
    expect(verdict(m)).toBe(INVALID);
    // A vocabulary-only file (no tensors) needs none of them.
    expect(verdict(m, [])).toBe("ok");
  });

  it("an embedding width of 0 is refused", () => {
    expect(verdict(edit(llama(), { "llama.embedding_length": gguf.u32(0) }))).toBe(INVALID);
  });

  it("an image encoder (clip) needs none of them", () => {
    expect(verdict(new Map<string, GgufMetadataEntry>([["general.architecture", gguf.str("clip")]]), WEIGHTS)).toBe("ok");
  });

  it("the message says what is wrong", () => {
    expect(() => checkModel({ metadata: edit(llama(), { "llama.context_length": gguf.u32(0) }), tensors: WEIGHTS })).toThrow(/llama\.context_length' is 0/);
  });
});

describe("attention heads", () => {
  it("key/value heads that do not divide the heads", () => {
    expect(verdict(edit(llama(), { "llama.attention.head_count": gguf.u32(4), "llama.attention.head_count_kv": gguf.u32(3) }))).toBe(INVALID);
    expect(verdict(edit(gemma("qwen3"), { "qwen3.attention.head_count_kv": gguf.numbers(4, [1, 1, 3, 1]) }))).toBe(INVALID);
  });

  it("a RoPE transformer without heads or key/value heads in some layer", () => {
    expect(verdict(edit(gemma("qwen3"), { "qwen3.attention.head_count_kv": gguf.u32(0) }))).toBe(INVALID);
    expect(verdict(edit(gemma("qwen2"), { "qwen2.attention.head_count": gguf.numbers(4, [2, 2, 0, 2]) }))).toBe(INVALID);
    // Hybrids mark recurrent layers with 0 key/value heads: fine there.
    expect(verdict(edit(gemma("jamba"), { "jamba.attention.head_count_kv": gguf.numbers(4, [0, 1, 0, 1]) }))).toBe("ok");
  });

  it("a head size of 0", () => {
    expect(verdict(edit(gemma("gemma3"), { "gemma3.attention.key_length": gguf.u32(0) }))).toBe(INVALID);
    expect(verdict(edit(gemma("gemma3"), { "gemma3.attention.value_length": gguf.u32(0) }))).toBe(INVALID);
    // Any architecture with heads: key_length 0 is no head at all.
    expect(verdict(edit(gemma("starcoder2"), { "starcoder2.attention.key_length": gguf.u32(0) }))).toBe(INVALID);
    // More heads than embedding dimensions and no explicit size: 64 / 128 is 0.
    expect(verdict(edit(llama(), { "llama.attention.head_count": gguf.u32(128), "llama.attention.head_count_kv": gguf.u32(128), "llama.rope.dimension_count": undefined }))).toBe(INVALID);
  });

  it("an embedding width that the heads do not divide, unless the head size is given", () => {
    const m = gemma("qwen2", [["qwen2.attention.head_count", gguf.u32(3)], ["qwen2.attention.head_count_kv", gguf.u32(1)]]);
    const noSize = edit(m, { "qwen2.attention.key_length": undefined, "qwen2.attention.value_length": undefined });
    expect(verdict(noSize)).toBe(INVALID);
    expect(verdict(new Map(m))).toBe("ok");
  });

  it("RoPE over more dimensions than a head has (ggml asserts at the first decode)", () => {
    expect(verdict(edit(llama(), { "llama.rope.dimension_count": gguf.u32(64) }))).toBe(INVALID);
    // A partial rotation is fine: gpt-neox rotates 24 of 96.
    const neox: Meta = [
      ["general.architecture", gguf.str("gptneox")],
      ["gptneox.context_length", gguf.u32(2048)],
      ["gptneox.embedding_length", gguf.u32(192)],
      ["gptneox.block_count", gguf.u32(2)],
      ["gptneox.attention.head_count", gguf.u32(2)],
    ];
    expect(verdict(new Map([...neox, ["gptneox.rope.dimension_count", gguf.u32(24)]]))).toBe("ok");
    expect(verdict(new Map([...neox, ["gptneox.rope.dimension_count", gguf.u32(128)]]))).toBe(INVALID);
    const g4 = gemma("gemma4", [["gemma4.attention.key_length_swa", gguf.u32(32)], ["gemma4.rope.dimension_count_swa", gguf.u32(32)]]);
    expect(verdict(new Map(g4))).toBe("ok");
    expect(verdict(edit(g4, { "gemma4.rope.dimension_count_swa": gguf.u32(64) }))).toBe(INVALID);
  });
});

describe("experts", () => {
  it("more experts used than there are", () => {
    expect(verdict(edit(llama(), { "llama.expert_count": gguf.u32(4), "llama.expert_used_count": gguf.u32(8) }))).toBe(INVALID);
    expect(verdict(edit(llama(), { "llama.expert_count": gguf.u32(8), "llama.expert_used_count": gguf.u32(2) }))).toBe("ok");
  });
  it("experts with none used, or used experts without experts", () => {
    expect(verdict(edit(llama(), { "llama.expert_count": gguf.u32(8), "llama.expert_used_count": gguf.u32(0) }))).toBe(INVALID);
    expect(verdict(edit(llama(), { "llama.expert_used_count": gguf.u32(2) }))).toBe(INVALID);
  });
});

describe("sliding windows", () => {
  it("a window of 0 where layers always slide (gemma2, gpt-oss, cohere2)", () => {
    expect(verdict(edit(gemma("gemma2"), { "gemma2.attention.sliding_window": gguf.u32(0) }))).toBe(INVALID);
    expect(verdict(edit(gemma("gpt-oss"), { "gpt-oss.attention.sliding_window": gguf.u32(0) }))).toBe(INVALID);
    expect(verdict(edit(gemma("cohere2"), { "cohere2.attention.sliding_window": gguf.u32(0) }))).toBe(INVALID);
  });

  it("a window of 0 where a pattern asks for sliding layers", () => {
    const g3 = gemma("gemma3", [["gemma3.attention.sliding_window", gguf.u32(0)]]);
    expect(verdict(edit(g3, { "gemma3.attention.sliding_window_pattern": gguf.u32(6) }))).toBe(INVALID);
    expect(verdict(edit(g3, { "gemma3.attention.sliding_window_pattern": gguf.bools([true, false, true, false]) }))).toBe(INVALID);
    // Pattern 1 (no sliding layer) or an all-false array: nothing slides.
    expect(verdict(edit(g3, { "gemma3.attention.sliding_window_pattern": gguf.u32(1) }))).toBe("ok");
    expect(verdict(edit(gemma("gemma2", [["gemma2.attention.sliding_window", gguf.u32(0)]]), { "gemma2.attention.sliding_window_pattern": gguf.bools([false, false, false, false]) }))).toBe("ok");
  });

  it("a window of 0 that turns sliding off (gemma3 without a pattern, Phi-4, llama4 MobileLLM) is fine", () => {
    expect(verdict(edit(gemma("gemma3"), { "gemma3.attention.sliding_window": gguf.u32(0) }))).toBe("ok");
    expect(verdict(edit(gemma("phi3"), { "phi3.attention.sliding_window": gguf.u32(0) }))).toBe("ok");
    expect(verdict(edit(gemma("llama4"), { "llama4.attention.sliding_window": gguf.u32(0) }))).toBe("ok");
  });
});

describe("files", () => {
  const dir = mkdtempSync(join(tmpdir(), "llamem-check-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("readGguf (what loadModel and estimateMemory read first) refuses a model with a trained context of 0", async () => {
    const path = join(dir, "ctx0.gguf");
    const metadata = edit(llama(), { "llama.context_length": gguf.u32(0) });
    const tensors = [{ name: "token_embd.weight", dims: [64, 16], type: GGML_TYPE.F32, data: () => [new Uint8Array(64 * 16 * 4)] }];
    await writeGguf(path, { metadata, tensors });
    await expect(readGguf(path)).rejects.toMatchObject({ code: INVALID });
    // Unchecked reads (inspect) still see it.
    expect((await readGguf(path, { checkModel: false })).metadata.get("llama.context_length")?.value).toBe(0);
  });

  it("every vocabulary file shipped with llama.cpp passes", async () => {
    const models = join(defaultVocabPath(), "..");
    const files = readdirSync(models).filter((f) => f.endsWith(".gguf"));
    expect(files.length).toBeGreaterThan(10);
    for (const f of files) await expect(readGguf(join(models, f)), f).resolves.toBeDefined();
  });
});
