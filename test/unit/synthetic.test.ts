import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamemError } from "../../lib/errors.js";
import { GGML_TYPE, GGUF_VALUE_TYPE, metadataNumber, metadataString } from "../../lib/gguf/format.js";
import type { GgufFile, GgufTensorInfo } from "../../lib/gguf/format.js";
import { readGguf } from "../../lib/gguf/read.js";
import {
  CHATML_TEMPLATE,
  SYNTHETIC_FORMAT_VERSION,
  SYNTHETIC_PRESETS,
  SeededRng,
  WEIGHT_STD,
  defaultVocabPath,
  encodeF16,
  fp16ToFp32,
  fp32ToFp16,
  quantizeQ4_0,
  quantizeQ8_0,
  syntheticTensors,
  writeSyntheticModel,
} from "../../lib/gguf/synthetic.js";
import type { SyntheticType } from "../../lib/gguf/synthetic.js";
import { archModel, testModelsDir, tinyModel } from "../helpers/models.js";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "llamem-synth-test-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

// --- Straightforward test-side decoders, independent of the code under test. ---

function halfToFloat(h: number): number {
  const s = h >> 15 ? -1 : 1;
  const e = (h >> 10) & 31;
  const m = h & 1023;
  if (e === 0) return s * m * Math.pow(2, -24);
  if (e === 31) return m ? NaN : s * Infinity;
  return s * Math.pow(2, e - 15) * (1 + m / 1024);
}

/** Dequantizes q8_0 blocks: value = d * q. Also returns each value's block scale. */
function dequantQ8_0(bytes: Uint8Array): { values: number[]; scales: number[] } {
  const values: number[] = [];
  const scales: number[] = [];
  for (let b = 0; b < bytes.length; b += 34) {
    const d = halfToFloat((bytes[b] as number) | ((bytes[b + 1] as number) << 8));
    for (let j = 0; j < 32; j++) {
      const u = bytes[b + 2 + j] as number;
      values.push(d * (u > 127 ? u - 256 : u));
      scales.push(d);
    }
  }
  return { values, scales };
}

/** Dequantizes q4_0 blocks: value j = d * (nibble - 8); low nibbles hold 0..15, high 16..31. */
function dequantQ4_0(bytes: Uint8Array): { values: number[]; scales: number[] } {
  const values: number[] = [];
  const scales: number[] = [];
  for (let b = 0; b < bytes.length; b += 18) {
    const d = halfToFloat((bytes[b] as number) | ((bytes[b + 1] as number) << 8));
    const block = new Array<number>(32);
    for (let j = 0; j < 16; j++) {
      const byte = bytes[b + 2 + j] as number;
      block[j] = d * ((byte & 15) - 8);
      block[j + 16] = d * ((byte >> 4) - 8);
    }
    values.push(...block);
    for (let j = 0; j < 32; j++) scales.push(Math.abs(d));
  }
  return { values, scales };
}

/** A copy of the tensor's bytes (its own ArrayBuffer, offset 0, so it can be viewed as floats). */
function tensorBytes(f: GgufFile, t: GgufTensorInfo): Uint8Array {
  return new Uint8Array(readFileSync(f.path).subarray(t.offset, t.offset + t.size));
}

function testValues(): Float32Array {
  const rng = new SeededRng(42);
  const v = new Float32Array(32 * 64);
  rng.fillNormal(v, 1);
  v.fill(0, 0, 32); // an all-zero block
  v.fill(0, 32, 64);
  v[40] = -3; // a block whose largest magnitude is negative and alone
  for (let j = 64; j < 96; j++) v[j] = (j - 80) * 0.5; // -8 .. 7.5: exact halves
  v[100] = 1000; // an outlier that flattens the rest of its block
  return v;
}

describe("number formats", () => {
  it("converts to and from f16 with round-to-nearest-even", () => {
    expect(fp32ToFp16(1)).toBe(0x3c00);
    expect(fp32ToFp16(-2)).toBe(0xc000);
    expect(fp32ToFp16(0.5)).toBe(0x3800);
    expect(fp32ToFp16(65504)).toBe(0x7bff);
    expect(fp32ToFp16(65520)).toBe(0x7c00); // rounds up to infinity
    expect(fp32ToFp16(-Infinity)).toBe(0xfc00);
    expect(fp32ToFp16(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(fp32ToFp16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(fp32ToFp16(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(fp32ToFp16(1.5 * 2 ** -24)).toBe(0x0002); // subnormal tie -> even
    expect(fp32ToFp16(2 ** -26)).toBe(0);
    expect(fp32ToFp16(-0)).toBe(0x8000);
    const nan = fp32ToFp16(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
    for (let h = 0; h < 0x10000; h++) {
      const f = halfToFloat(h);
      if (Number.isNaN(f)) continue;
      expect(fp16ToFp32(h)).toBe(f);
      if (fp32ToFp16(f) !== h) expect.fail(`f16 ${h.toString(16)} does not round-trip`);
    }
    const src = new Float32Array([1, -2, 0.5]);
    expect([...encodeF16(src)]).toEqual([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38]);
  });

  it("q8_0 blocks decode to within half a step of the source", () => {
    const v = testValues();
    const q = quantizeQ8_0(v);
    expect(q.length).toBe((v.length / 32) * 34);
    const { values, scales } = dequantQ8_0(q);
    expect(values.slice(0, 32).every((x) => x === 0)).toBe(true);
    for (let i = 0; i < v.length; i++) {
      const err = Math.abs((v[i] as number) - (values[i] as number));
      // Half a step, plus the f16 rounding of the scale over up to 127 steps.
      const tol = (scales[i] as number) * 0.5 + Math.abs(v[i] as number) * 2 ** -10;
      if (err > tol) expect.fail(`q8_0 value ${i}: ${v[i]} decoded as ${values[i]}`);
    }
    // The element of largest magnitude maps to ±127.
    expect(q[34 + 2 + 8]).toBe(256 - 127);
    // With amax = 127 the scale is exactly 1, so halves show roundf's ties-away-from-zero.
    const ties = new Float32Array(32);
    ties.set([127, -2.5, 2.5, -0.5, 0.5, 1.49]);
    const tq = quantizeQ8_0(ties);
    expect([...tq.subarray(0, 8)]).toEqual([0x00, 0x3c, 127, 256 - 3, 3, 256 - 1, 1, 1]);
  });

  it("q4_0 blocks decode close to the source, with ggml's exact rounding", () => {
    const v = testValues();
    const q = quantizeQ4_0(v);
    expect(q.length).toBe((v.length / 32) * 18);
    const { values, scales } = dequantQ4_0(q);
    for (let i = 0; i < v.length; i++) {
      const err = Math.abs((v[i] as number) - (values[i] as number));
      // One step at most (the +8 end is clipped to 15), plus scale rounding.
      const tol = (scales[i] as number) * 1.0 + Math.abs(v[i] as number) * 2 ** -9;
      if (err > tol) expect.fail(`q4_0 value ${i}: ${v[i]} decoded as ${values[i]}`);
    }
    // Block 2 holds (j - 16) / 2: max = -8, so d = 1 and q_j = min(15, trunc(j / 2 + 0.5)).
    const block = q.subarray(2 * 18, 3 * 18);
    expect(halfToFloat((block[0] as number) | ((block[1] as number) << 8))).toBe(1);
    for (let j = 0; j < 16; j++) {
      const lo = Math.min(15, Math.trunc(j / 2 + 0.5));
      const hi = Math.min(15, Math.trunc((j + 16) / 2 + 0.5));
      expect(block[2 + j]).toBe(lo | (hi << 4));
    }
    // An all-zero block is scale 0 and every nibble 8.
    expect([...q.subarray(2, 18)]).toEqual(new Array(16).fill(0x88));
    // Typical weights lose little: RMS error well under the data's spread.
    const rng = new SeededRng(3);
    const w = new Float32Array(32 * 1024);
    rng.fillNormal(w, WEIGHT_STD);
    const d = dequantQ4_0(quantizeQ4_0(w)).values;
    let se = 0;
    for (let i = 0; i < w.length; i++) se += ((w[i] as number) - (d[i] as number)) ** 2;
    expect(Math.sqrt(se / w.length)).toBeLessThan(WEIGHT_STD * 0.15);
  });

  it("rejects lengths that are not whole blocks", () => {
    expect(() => quantizeQ8_0(new Float32Array(31))).toThrow(LlamemError);
    expect(() => quantizeQ4_0(new Float32Array(33))).toThrow(LlamemError);
  });
});

describe("SeededRng", () => {
  it("is deterministic per seed and stream", () => {
    const a = new SeededRng(5);
    const b = new SeededRng(5);
    const c = new SeededRng(5, 1);
    const d = new SeededRng(6);
    const seqA = Array.from({ length: 8 }, () => a.nextU32());
    expect(Array.from({ length: 8 }, () => b.nextU32())).toEqual(seqA);
    expect(Array.from({ length: 8 }, () => c.nextU32())).not.toEqual(seqA);
    expect(Array.from({ length: 8 }, () => d.nextU32())).not.toEqual(seqA);
    for (const x of seqA) expect(Number.isInteger(x) && x >= 0 && x < 2 ** 32).toBe(true);
    expect(() => new SeededRng(-1)).toThrow(LlamemError);
  });

  it("fills values with the requested spread", () => {
    const v = new Float32Array(1 << 18);
    new SeededRng(9).fillNormal(v, 0.02);
    let sum = 0;
    let sq = 0;
    for (const x of v) {
      sum += x;
      sq += x * x;
    }
    const mean = sum / v.length;
    const std = Math.sqrt(sq / v.length - mean * mean);
    expect(Math.abs(mean)).toBeLessThan(0.0005);
    expect(std).toBeGreaterThan(0.0196);
    expect(std).toBeLessThan(0.0204);
  });
});

describe("syntheticTensors", () => {
  it("lists the llama tensors with ggml shapes", () => {
    const t = syntheticTensors("tiny", "q8_0", 32000);
    expect(t).toHaveLength(3 + 2 * 9);
    const byName = new Map(t.map((x) => [x.name, x]));
    expect(byName.get("token_embd.weight")?.dims).toEqual([64, 32000]);
    expect(byName.get("output.weight")?.dims).toEqual([64, 32000]);
    expect(byName.get("output_norm.weight")).toMatchObject({ dims: [64], type: GGML_TYPE.F32 });
    expect(byName.get("blk.1.attn_norm.weight")).toMatchObject({ dims: [64], type: GGML_TYPE.F32, role: "norm" });
    expect(byName.get("blk.1.ffn_norm.weight")?.type).toBe(GGML_TYPE.F32);
    expect(byName.get("blk.0.attn_q.weight")).toMatchObject({ dims: [64, 64], type: GGML_TYPE.Q8_0 });
    expect(byName.get("blk.0.attn_k.weight")?.dims).toEqual([64, 32]); // 2 kv heads of 16
    expect(byName.get("blk.0.attn_v.weight")?.dims).toEqual([64, 32]);
    expect(byName.get("blk.0.attn_output.weight")?.dims).toEqual([64, 64]);
    expect(byName.get("blk.1.ffn_gate.weight")?.dims).toEqual([64, 192]);
    expect(byName.get("blk.1.ffn_up.weight")?.dims).toEqual([64, 192]);
    expect(byName.get("blk.1.ffn_down.weight")?.dims).toEqual([192, 64]);
  });

  it("has the shapes of TinyLlama-1.1B, H2O-Danube2-1.8B and Llama-3-8B", () => {
    const count = (p: "1b" | "2b" | "8b") => syntheticTensors(p, "q4_0", 32000).reduce((n, t) => n + t.dims.reduce((a, b) => a * b, 1), 0);
    expect(count("1b")).toBe(1_100_048_384);
    expect(count("2b")).toBe(1_831_201_280);
    const b2 = new Map(syntheticTensors("2b", "q4_0", 32000).map((x) => [x.name, x.dims]));
    // 80-wide heads: K and V project to 8 of them.
    expect(b2.get("blk.23.attn_k.weight")).toEqual([2560, 640]);
    expect(b2.get("blk.23.ffn_down.weight")).toEqual([6912, 2560]);
    expect(b2.has("blk.24.ffn_down.weight")).toBe(false);
    const b8 = new Map(syntheticTensors("8b", "f16", 128256).map((x) => [x.name, x.dims]));
    expect(b8.get("blk.31.attn_k.weight")).toEqual([4096, 1024]);
    expect(b8.get("blk.31.ffn_gate.weight")).toEqual([4096, 14336]);
    expect(b8.get("blk.31.ffn_down.weight")).toEqual([14336, 4096]);
    expect(b8.has("blk.32.ffn_down.weight")).toBe(false);
    expect(SYNTHETIC_PRESETS["8b"]).toMatchObject({ nLayer: 32, nHead: 32, nHeadKv: 8, contextLength: 8192 });
    expect(SYNTHETIC_PRESETS["1b"]).toMatchObject({ nEmbd: 2048, nLayer: 22, nHead: 32, nHeadKv: 4, nFf: 5632, contextLength: 2048 });
  });

  it("rejects unknown presets and types", () => {
    expect(() => syntheticTensors("3b" as "1b", "f16", 10)).toThrow(LlamemError);
    expect(() => syntheticTensors("tiny", "q5_0" as SyntheticType, 10)).toThrow(LlamemError);
  });
});

describe("writeSyntheticModel", () => {
  const vocab = () => defaultVocabPath();

  it("writes byte-identical files for the same seed, different ones for another", async () => {
    const a = join(dir, "a.gguf");
    const b = join(dir, "b.gguf");
    const c = join(dir, "c.gguf");
    await writeSyntheticModel(a, { preset: "tiny", type: "q4_0", seed: 7, vocabPath: vocab() });
    await writeSyntheticModel(b, { preset: "tiny", type: "q4_0", seed: 7, vocabPath: vocab() });
    await writeSyntheticModel(c, { preset: "tiny", type: "q4_0", seed: 8, vocabPath: vocab() });
    const [ba, bb, bc] = [a, b, c].map((p) => readFileSync(p));
    expect(ba?.equals(bb as Buffer)).toBe(true);
    expect(ba?.length).toBe(bc?.length);
    expect(ba?.equals(bc as Buffer)).toBe(false);
  });

  it("writes the llama metadata, the vocabulary's tokenizer and the planned tensors", async () => {
    const path = join(dir, "meta.gguf");
    const progress: number[] = [];
    const res = await writeSyntheticModel(path, { preset: "tiny", type: "q8_0", seed: 1, vocabPath: vocab(), onProgress: (f) => progress.push(f) });
    const f = await readGguf(path);
    expect(res.size).toBe(statSync(path).size);
    expect(res.nVocab).toBe(32000);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)).toBe(1);
    for (let i = 1; i < progress.length; i++) expect(progress[i]).toBeGreaterThanOrEqual(progress[i - 1] as number);

    expect(metadataString(f, "general.architecture")).toBe("llama");
    expect(metadataString(f, "general.name")).toBe("llamem synthetic tiny q8_0");
    const u32 = (key: string, value: number) => expect(f.metadata.get(key)).toEqual({ type: GGUF_VALUE_TYPE.UINT32, value });
    u32("general.file_type", 7);
    u32("llama.context_length", 4096);
    u32("llama.embedding_length", 64);
    u32("llama.block_count", 2);
    u32("llama.feed_forward_length", 192);
    u32("llama.attention.head_count", 2);
    u32("llama.attention.head_count_kv", 1);
    u32("llama.rope.dimension_count", 32);
    u32("llama.vocab_size", 32000);
    expect(f.metadata.get("llama.attention.layer_norm_rms_epsilon")).toEqual({ type: GGUF_VALUE_TYPE.FLOAT32, value: Math.fround(1e-5) });
    expect(metadataNumber(f, "llamem.synthetic.format_version")).toBe(SYNTHETIC_FORMAT_VERSION);

    const v = await readGguf(vocab());
    const tokenizerKeys = [...v.metadata.keys()].filter((k) => k.startsWith("tokenizer."));
    expect(tokenizerKeys.length).toBeGreaterThan(5);
    for (const k of tokenizerKeys) expect(f.metadata.get(k)).toEqual(v.metadata.get(k));
    expect(metadataString(f, "tokenizer.chat_template")).toBe(CHATML_TEMPLATE);
    expect(CHATML_TEMPLATE).toContain("<|im_start|>");
    // Only tokenizer keys come from the vocabulary: its own general.name does not leak through.
    expect(metadataString(f, "general.name")).not.toBe(metadataString(v, "general.name"));

    const plan = syntheticTensors("tiny", "q8_0", 32000);
    expect(f.tensors.map((t) => [t.name, [...t.dims], t.type])).toEqual(plan.map((t) => [t.name, [...t.dims], t.type]));
    const norm = f.tensors.find((t) => t.name === "blk.0.attn_norm.weight") as GgufTensorInfo;
    const ones = new Float32Array(tensorBytes(f, norm).buffer);
    expect([...ones]).toEqual(new Array(64).fill(1));
  });

  it.each<[SyntheticType, number]>([["f32", 0], ["f16", 1], ["q4_0", 2]])("records general.file_type for %s", async (type, fileType) => {
    const f = await readGguf(await tinyModel(type));
    expect(metadataNumber(f, "general.file_type")).toBe(fileType);
    expect(f.tensors.find((t) => t.name === "output.weight")?.typeName).toBe(type);
  });

  it("quantized tensors decode close to the f32 weights of the same seed", async () => {
    const f32 = await readGguf(await tinyModel("f32"));
    const q8 = await readGguf(await tinyModel("q8_0"));
    const q4 = await readGguf(await tinyModel("q4_0"));
    const f16 = await readGguf(await tinyModel("f16"));
    for (const name of ["blk.0.attn_k.weight", "blk.1.ffn_down.weight"]) {
      const ref = new Float32Array(tensorBytes(f32, f32.tensors.find((t) => t.name === name) as GgufTensorInfo).buffer);
      let std = 0;
      for (const x of ref) std += x * x;
      std = Math.sqrt(std / ref.length);
      expect(std).toBeGreaterThan(WEIGHT_STD * 0.9);
      expect(std).toBeLessThan(WEIGHT_STD * 1.1);

      const d8 = dequantQ8_0(tensorBytes(q8, q8.tensors.find((t) => t.name === name) as GgufTensorInfo));
      const d4 = dequantQ4_0(tensorBytes(q4, q4.tensors.find((t) => t.name === name) as GgufTensorInfo));
      const h = tensorBytes(f16, f16.tensors.find((t) => t.name === name) as GgufTensorInfo);
      expect(d8.values).toHaveLength(ref.length);
      expect(d4.values).toHaveLength(ref.length);
      for (let i = 0; i < ref.length; i++) {
        const x = ref[i] as number;
        if (Math.abs(x - (d8.values[i] as number)) > (d8.scales[i] as number) * 0.5 + Math.abs(x) * 2 ** -10) expect.fail(`${name} q8_0 ${i}`);
        if (Math.abs(x - (d4.values[i] as number)) > (d4.scales[i] as number) * 1.0 + Math.abs(x) * 2 ** -9) expect.fail(`${name} q4_0 ${i}`);
        const hv = halfToFloat((h[2 * i] as number) | ((h[2 * i + 1] as number) << 8));
        if (Math.abs(x - hv) > Math.abs(x) * 2 ** -11 + 2 ** -25) expect.fail(`${name} f16 ${i}`);
      }
    }
  });

  it("BERT encoders: llama.cpp's encoder keys, a token type per vocabulary type, a reranker head of wider noise", async () => {
    const f = await readGguf(await archModel("bert-reranker", "f32", 1));
    expect(f.metadata.get("bert.attention.causal")).toEqual({ type: GGUF_VALUE_TYPE.BOOL, value: false });
    expect(metadataNumber(f, "bert.pooling_type")).toBe(4); // LLAMA_POOLING_TYPE_RANK
    expect(metadataNumber(await readGguf(await archModel("bert", "f16", 1)), "bert.pooling_type")).toBe(1); // MEAN
    // llama.cpp sizes token_types by the vocabulary's count and refuses a BERT without one.
    expect(f.tensors.find((t) => t.name === "token_types.weight")?.dims).toEqual([64, metadataNumber(f, "tokenizer.ggml.token_type_count")]);
    const rms = (name: string) => {
      const v = new Float32Array(tensorBytes(f, f.tensors.find((t) => t.name === name) as GgufTensorInfo).buffer);
      let sq = 0;
      for (const x of v) sq += x * x;
      return Math.sqrt(sq / v.length);
    };
    expect(rms("blk.0.ffn_up.weight") / WEIGHT_STD).toBeCloseTo(1, 1);
    expect(rms("cls.weight") / 0.125).toBeCloseTo(1, 1);
    // 64 values: a looser bound.
    expect(rms("cls.output.weight")).toBeGreaterThan(0.75);
    expect(rms("cls.output.weight")).toBeLessThan(1.25);
    expect(rms("cls.bias")).toBeLessThan(WEIGHT_STD * 1.5);
  });

  it("reports a missing vocabulary clearly", async () => {
    await expect(writeSyntheticModel(join(dir, "x.gguf"), { preset: "tiny", type: "f16", vocabPath: join(dir, "missing.gguf") }))
      .rejects.toMatchObject({ code: "ERR_FILE_NOT_FOUND" });
    let err: unknown;
    try {
      defaultVocabPath("no-such-vocab.gguf");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LlamemError);
    expect((err as LlamemError).code).toBe("ERR_FILE_NOT_FOUND");
    expect((err as LlamemError).message).toContain("node scripts/fetch-llama.mjs");
    expect(existsSync(join(dir, "x.gguf"))).toBe(false);
  });

  it("rejects bad options", async () => {
    await expect(writeSyntheticModel(join(dir, "y.gguf"), { preset: "tiny", type: "f16", seed: -3, vocabPath: vocab() }))
      .rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(writeSyntheticModel(join(dir, "y.gguf"), { preset: "huge" as "tiny", type: "f16", vocabPath: vocab() }))
      .rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });
});

describe("tinyModel helper", () => {
  it("caches by content-describing name", async () => {
    const p1 = await tinyModel("q8_0");
    const p2 = await tinyModel("q8_0");
    expect(p1).toBe(p2);
    expect(p1.startsWith(testModelsDir())).toBe(true);
    expect(p1).toMatch(/tiny-q8_0-seed1-v\d+-[0-9a-f]{12}\.gguf$/);
    const f = await readGguf(p1);
    expect(metadataString(f, "general.name")).toBe("llamem synthetic tiny q8_0");
    expect(await tinyModel("f16")).not.toBe(p1);
  });
});
