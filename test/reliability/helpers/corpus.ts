/**
 * The malformed-GGUF corpus: every file is generated from a valid small llama model by the
 * project's own writer (lib/gguf/write.ts), at test time. Each case says what a loader must do
 * with it: fail at a given stage with one of the given LlamemError codes, or work.
 */
import type { GgufMetadataEntry } from "../../../lib/gguf/format.js";
import { GGML_TYPE, tensorByteSize } from "../../../lib/gguf/format.js";
import { encodeKeyValue, encodeRawKeyValue, encodeString, gguf, type TensorInfoFields } from "../../../lib/gguf/write.js";
import {
  SMALL_SHAPE,
  assemble,
  assembleRaw,
  llamaHparams,
  llamaParts,
  llamaSpmTokenizer,
  llamaTensorShapes,
  llamaTensors,
  type LlamaShape,
  type ModelParts,
} from "./model-builder.js";

/** Where the child stops. */
export type Stage = "load" | "tokenize" | "context" | "generate" | "done";

/** What loading a corpus file must do. */
export interface Expectation {
  /** The stage the child must reach ("done": it loads and generates). */
  stage: Stage;
  /** Allowed error codes at that stage (none for "done"). */
  codes?: string[];
}

/** One corpus file. */
export interface CorpusCase {
  name: string;
  /** Section of the issue it covers, for the report. */
  group: "header" | "truncation" | "metadata" | "tensors" | "hparams" | "tokenizer" | "valid";
  bytes: Buffer;
  /** Load with vocabOnly. */
  vocabOnly?: boolean;
  expect: Expectation;
}

const NOT_GGUF: Expectation = { stage: "load", codes: ["ERR_NOT_GGUF"] };
const INVALID: Expectation = { stage: "load", codes: ["ERR_GGUF_INVALID"] };
const TRUNC: Expectation = { stage: "load", codes: ["ERR_GGUF_TRUNCATED"] };
const BROKEN: Expectation = { stage: "load", codes: ["ERR_GGUF_INVALID", "ERR_GGUF_TRUNCATED"] };
/** Rejected at load, by our validator or by llama.cpp's loader. */
const LOAD_FAILS: Expectation = { stage: "load", codes: ["ERR_GGUF_INVALID", "ERR_MODEL_LOAD"] };
const OK: Expectation = { stage: "done" };

function clone(p: ModelParts): ModelParts {
  return { metadata: new Map(p.metadata), tensors: p.tensors.map((t) => ({ ...t, dims: [...t.dims] })) };
}

function withMeta(p: ModelParts, edit: (m: Map<string, GgufMetadataEntry>) => void): ModelParts {
  const c = clone(p);
  edit(c.metadata);
  return c;
}

function u64le(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}

function u32le(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

/** A model whose hparams and tensor shapes agree with each other but break a llama.cpp rule. */
async function consistent(shape: Partial<LlamaShape>, extra: [string, GgufMetadataEntry][] = [], headDim?: number): Promise<Buffer> {
  const s = { ...SMALL_SHAPE, ...shape };
  const metadata = new Map<string, GgufMetadataEntry>(llamaHparams(s));
  for (const [k, v] of extra) metadata.set(k, v);
  for (const [k, e] of await llamaSpmTokenizer(s.nVocab)) metadata.set(k, e);
  return assemble({ metadata, tensors: llamaTensors(llamaTensorShapes(s, headDim)) });
}

/** Builds the whole corpus (about 150 files, a few MB in all). */
export async function buildCorpus(): Promise<CorpusCase[]> {
  const base = await llamaParts(SMALL_SHAPE);
  const valid = assemble(base);
  const cases: CorpusCase[] = [];
  const add = (group: CorpusCase["group"], name: string, bytes: Buffer, expect: Expectation, vocabOnly = false) =>
    cases.push({ group, name, bytes, expect, vocabOnly });

  // --- valid files llama.cpp legitimately accepts -------------------------------------------
  add("valid", "valid small model", valid, OK);
  add("valid", "GGUF version 2", assemble(base, { version: 2 }), OK);
  add("valid", "alignment 64", assemble(base, { alignment: 64 }), OK);
  add("valid", "unknown extra metadata keys", assemble(withMeta(base, (m) => {
    m.set("llamem.test.blob", gguf.numbers(0, Array.from({ length: 1000 }, (_, i) => i & 255)));
    m.set("llamem.test.nested.name", gguf.str("\u0000weird\uffff"));
  })), OK);
  add("valid", "full model loaded with vocabOnly", valid, { stage: "context", codes: ["ERR_INVALID_ARGUMENT"] }, true);

  // --- the fixed header -----------------------------------------------------------------------
  add("header", "empty file", Buffer.alloc(0), NOT_GGUF);
  add("header", "three bytes", Buffer.from("GGU"), NOT_GGUF);
  add("header", "wrong magic GGML", Buffer.concat([Buffer.from("GGML"), valid.subarray(4)]), NOT_GGUF);
  add("header", "byte-swapped magic FUGG", Buffer.concat([Buffer.from("FUGG"), valid.subarray(4)]), NOT_GGUF);
  add("header", "zero magic", Buffer.concat([Buffer.alloc(4), valid.subarray(4)]), NOT_GGUF);
  for (const version of [0, 1, 4, 0xffff, 0x03000000, 0xffffffff]) {
    add("header", `GGUF version ${version}`, assembleRaw(base, { version }).file, INVALID);
  }
  add("header", "tensor count 2^62", assembleRaw(base, { tensorCount: 1n << 62n }).file, INVALID);
  add("header", "KV count 2^62", assembleRaw(base, { kvCount: 1n << 62n }).file, INVALID);
  add("header", "tensor count -1", assembleRaw(base, { tensorCount: -1 }).file, INVALID);
  add("header", "KV count -1", assembleRaw(base, { kvCount: -1 }).file, INVALID);
  add("header", "tensor count one too many", assembleRaw(base, { tensorCount: base.tensors.length + 1 }).file, BROKEN);
  // The last tensor (output.weight) is dropped and its bytes ignored: tied embeddings, a valid model.
  add("header", "tensor count one too few", assembleRaw(base, { tensorCount: base.tensors.length - 1 }).file, OK);
  add("header", "KV count one too many", assembleRaw(base, { kvCount: base.metadata.size + 1 }).file, BROKEN);
  add("header", "KV count one too few", assembleRaw(base, { kvCount: base.metadata.size - 1 }).file, BROKEN);
  add("header", "zero tensors in a llama file", assembleRaw(base, { tensorCount: 0, infos: () => [], data: () => Buffer.alloc(0) }).file, LOAD_FAILS);

  // --- truncation at every section boundary ----------------------------------------------------
  const { sections } = assembleRaw(base);
  const cuts = new Map<number, string>();
  for (const at of [4, 8, 16, sections.header]) cuts.set(at, `inside the fixed header (${at} bytes)`);
  sections.kvEnds.forEach((at, i) => {
    cuts.set(at, `after KV ${i}`);
    cuts.set(at - 1, `one byte short of the end of KV ${i}`);
  });
  sections.infoEnds.forEach((at, i) => cuts.set(at, `after tensor info ${i}`));
  cuts.set(sections.infoEnds[0] ? sections.infoEnds[0] - 5 : 10, "inside the first tensor info");
  cuts.set(sections.dataOffset, "at the start of the data section");
  sections.tensorStarts.forEach((at, i) => {
    if (at > sections.dataOffset) cuts.set(at, `at the start of tensor ${i}'s data`);
  });
  cuts.set(sections.size - 1, "one byte short of the end");
  for (const [at, what] of [...cuts].sort((a, b) => a[0] - b[0])) {
    if (at <= 0 || at >= sections.size) continue;
    // Early cuts leave too few bytes for the declared counts: reported as INVALID before the reader runs out.
    add("truncation", `truncated ${what}`, valid.subarray(0, at), at < 4 ? NOT_GGUF : at < sections.header ? TRUNC : BROKEN);
  }

  // --- metadata encoding ----------------------------------------------------------------------
  const kvs = [...base.metadata].map(([k, v]) => encodeKeyValue(k, v));
  const withKv = (extra: Buffer) => assembleRaw(base, { kvs: [...kvs, extra] }).file;
  add("metadata", "KV key length 2^40", withKv(Buffer.concat([u64le(1n << 40n), Buffer.from("x")])), BROKEN);
  add("metadata", "KV key length 2^63", withKv(Buffer.concat([u64le(1n << 63n), Buffer.from("x")])), BROKEN);
  add("metadata", "string value length past the end", withKv(encodeRawKeyValue("llamem.s", 8, u64le(10_000_000n))), BROKEN);
  add("metadata", "string value length 2^64-1", withKv(encodeRawKeyValue("llamem.s", 8, u64le(0xffffffffffffffffn))), BROKEN);
  add("metadata", "array of 2^40 u32", withKv(encodeRawKeyValue("llamem.a", 9, Buffer.concat([u32le(4), u64le(1n << 40n)]))), BROKEN);
  add("metadata", "array of 2^61 strings", withKv(encodeRawKeyValue("llamem.a", 9, Buffer.concat([u32le(8), u64le(1n << 61n)]))), BROKEN);
  add("metadata", "string array element length past the end",
    withKv(encodeRawKeyValue("llamem.a", 9, Buffer.concat([u32le(8), u64le(2n), encodeString("ok"), u64le(1n << 32n)]))), BROKEN);
  add("metadata", "array of arrays", withKv(encodeRawKeyValue("llamem.a", 9, Buffer.concat([u32le(9), u64le(1n)]))), INVALID);
  add("metadata", "array of unknown type 13", withKv(encodeRawKeyValue("llamem.a", 9, Buffer.concat([u32le(13), u64le(1n)]))), INVALID);
  add("metadata", "value type 13", withKv(encodeRawKeyValue("llamem.t", 13, Buffer.alloc(8))), INVALID);
  add("metadata", "value type -1", withKv(encodeRawKeyValue("llamem.t", -1, Buffer.alloc(8))), INVALID);
  add("metadata", "empty key", withKv(encodeKeyValue("", gguf.u32(1))), INVALID);
  add("metadata", "duplicate key", withKv(encodeKeyValue("llama.block_count", gguf.u32(2))), INVALID);
  add("metadata", "general.alignment 0", assembleRaw(withMeta(base, (m) => m.set("general.alignment", gguf.u32(0)))).file, INVALID);
  add("metadata", "general.alignment 48", assembleRaw(withMeta(base, (m) => m.set("general.alignment", gguf.u32(48))), { alignment: 48 }).file, INVALID);
  add("metadata", "general.alignment as a string", assembleRaw(withMeta(base, (m) => m.set("general.alignment", gguf.str("32")))).file, INVALID);
  add("metadata", "general.alignment 64 but data aligned to 32", assembleRaw(withMeta(base, (m) => m.set("general.alignment", gguf.u32(64)))).file, BROKEN);

  // --- tensor infos ---------------------------------------------------------------------------
  const infos = (edit: (infos: TensorInfoFields[]) => void, data?: (d: Buffer) => Buffer) =>
    assembleRaw(base, { infos: (i) => (edit(i), i), data }).file;
  const setInfo = (i: number, f: Partial<TensorInfoFields>) => (list: TensorInfoFields[]) => {
    list[i] = { ...(list[i] as TensorInfoFields), ...f };
  };
  const last = base.tensors.length - 1;
  add("tensors", "tensor offset past the end of the file", infos(setInfo(last, { offset: 1n << 40n })), BROKEN);
  add("tensors", "tensor offset 2^64-32", infos(setInfo(last, { offset: 0xffffffffffffffe0n })), BROKEN);
  add("tensors", "tensor offset not aligned", infos(setInfo(1, { offset: 4096 + 1 })), INVALID);
  add("tensors", "tensor data overlapping the previous one", infos(setInfo(2, { offset: 0 })), INVALID);
  add("tensors", "last tensor larger than the file", infos(setInfo(last, { dims: [64, 100_000] })), BROKEN);
  add("tensors", "dimension product overflows int64", infos(setInfo(0, { dims: [1n << 32n, 1n << 32n, 1n << 32n] })), INVALID);
  add("tensors", "dimension product 2^62 x 4", infos(setInfo(0, { dims: [1n << 62n, 4n] })), INVALID);
  add("tensors", "dimension 0", infos(setInfo(0, { dims: [64, 0] })), INVALID);
  add("tensors", "negative dimension", infos(setInfo(0, { dims: [64, -512] })), INVALID);
  add("tensors", "zero dimensions", infos(setInfo(0, { dims: [] })), INVALID);
  add("tensors", "five dimensions", infos(setInfo(0, { dims: [64, 512, 1, 1, 1] })), INVALID);
  for (const type of [4, 5, 31, 36, 43, 1000, -1]) {
    add("tensors", `unknown tensor type ${type}`, infos(setInfo(0, { type })), INVALID);
  }
  add("tensors", "row not a multiple of the block size (q4_0, 48 wide)", infos(setInfo(1, { dims: [48, 1], type: GGML_TYPE.Q4_0 })), INVALID);
  add("tensors", "duplicate tensor names", infos(setInfo(2, { name: "token_embd.weight" })), INVALID);
  add("tensors", "tensor name of 64 bytes", infos(setInfo(1, { name: "x".repeat(64) })), INVALID);
  {
    const f = Buffer.from(valid);
    f.writeBigUInt64LE(1n << 40n, sections.infoEnds[last - 1] as number);
    add("tensors", "tensor name length 2^40", f, BROKEN);
  }

  // --- tensors against the architecture -----------------------------------------------------
  const tensorsEdit = (edit: (p: ModelParts) => void): Buffer => {
    const c = clone(base);
    edit(c);
    return assemble(c);
  };
  add("tensors", "token_embd with the wrong vocab dim", tensorsEdit((p) => {
    const t = p.tensors[0];
    if (t) Object.assign(t, { dims: [64, 500], data: t.data.subarray(0, 64 * 500 * 2) });
  }), LOAD_FAILS);
  add("tensors", "attn_q transposed", tensorsEdit((p) => {
    const t = p.tensors.find((x) => x.name === "blk.0.attn_k.weight");
    if (t) t.dims = [32, 64];
  }), LOAD_FAILS);
  add("tensors", "missing output_norm", tensorsEdit((p) => {
    p.tensors = p.tensors.filter((t) => t.name !== "output_norm.weight");
  }), LOAD_FAILS);
  add("tensors", "missing a layer's ffn_down", tensorsEdit((p) => {
    p.tensors = p.tensors.filter((t) => t.name !== "blk.1.ffn_down.weight");
  }), LOAD_FAILS);
  add("tensors", "an extra unknown tensor", tensorsEdit((p) => {
    p.tensors.push({ name: "blk.9.mystery.weight", dims: [8], type: GGML_TYPE.F32, data: Buffer.alloc(32) });
  }), LOAD_FAILS);
  add("tensors", "norm stored as i32", tensorsEdit((p) => {
    const t = p.tensors.find((x) => x.name === "output_norm.weight");
    if (t) t.type = GGML_TYPE.I32;
  }), INVALID);
  // Types ggml's CPU kernels cannot compute with: SIGSEGV (no vec_dot) or GGML_ABORT in llama.cpp.
  const retype = (name: string, type: number): Buffer => tensorsEdit((p) => {
    const t = p.tensors.find((x) => x.name === name);
    if (!t) return;
    const size = tensorByteSize(type, t.dims);
    t.type = type;
    t.data = Buffer.alloc(size, 0x11);
  });
  for (const [type, label] of [[GGML_TYPE.Q8_1, "q8_1"], [GGML_TYPE.I8, "i8"], [GGML_TYPE.I32, "i32"], [GGML_TYPE.F64, "f64"]] as const) {
    add("tensors", `attn_q stored as ${label}`, retype("blk.0.attn_q.weight", type), INVALID);
    add("tensors", `token_embd stored as ${label}`, retype("token_embd.weight", type), INVALID);
  }
  add("tensors", "output_norm stored as f16", retype("output_norm.weight", GGML_TYPE.F16), INVALID);
  add("tensors", "attn_norm stored as bf16", retype("blk.1.attn_norm.weight", GGML_TYPE.BF16), INVALID);
  add("tensors", "attn_q stored as q4_0", retype("blk.0.attn_q.weight", GGML_TYPE.Q4_0), OK);
  add("tensors", "output stored as q8_0", retype("output.weight", GGML_TYPE.Q8_0), OK);
  add("tensors", "token_embd stored as bf16", retype("token_embd.weight", GGML_TYPE.BF16), OK);
  add("tensors", "no output.weight (tied embeddings)", tensorsEdit((p) => {
    p.tensors = p.tensors.filter((t) => t.name !== "output.weight");
  }), OK);
  add("tensors", "all weights NaN", tensorsEdit((p) => {
    for (const t of p.tensors) if (t.type === GGML_TYPE.F16) t.data = Buffer.alloc(t.data.length, 0xff);
  }), OK);

  // --- llama hparams ----------------------------------------------------------------------------
  const meta = (edit: (m: Map<string, GgufMetadataEntry>) => void) => assemble(withMeta(base, edit));
  for (const key of ["llama.block_count", "llama.context_length", "llama.embedding_length"]) {
    add("hparams", `no ${key}`, meta((m) => m.delete(key)), LOAD_FAILS);
  }
  add("hparams", "no llama.attention.head_count", meta((m) => m.delete("llama.attention.head_count")), LOAD_FAILS);
  add("hparams", "no llama.feed_forward_length", meta((m) => m.delete("llama.feed_forward_length")), LOAD_FAILS);
  add("hparams", "no general.architecture", meta((m) => m.delete("general.architecture")), LOAD_FAILS);
  add("hparams", "unknown architecture", meta((m) => m.set("general.architecture", gguf.str("llamem-unknown"))), LOAD_FAILS);
  add("hparams", "architecture is a number", meta((m) => m.set("general.architecture", gguf.u32(1))), LOAD_FAILS);
  add("hparams", "block_count 0", meta((m) => m.set("llama.block_count", gguf.u32(0))), INVALID);
  add("hparams", "block_count 513", meta((m) => m.set("llama.block_count", gguf.u32(513))), INVALID);
  add("hparams", "block_count 3 (one more than the tensors)", meta((m) => m.set("llama.block_count", gguf.u32(3))), LOAD_FAILS);
  add("hparams", "block_count as a string", meta((m) => m.set("llama.block_count", gguf.str("2"))), LOAD_FAILS);
  add("hparams", "block_count as a negative i32", meta((m) => m.set("llama.block_count", gguf.i32(-2))), LOAD_FAILS);
  add("hparams", "head_count 0", meta((m) => m.set("llama.attention.head_count", gguf.u32(0))), LOAD_FAILS);
  add("hparams", "head_count_kv 0", meta((m) => m.set("llama.attention.head_count_kv", gguf.u32(0))), LOAD_FAILS);
  add("hparams", "head_count 3 (does not divide embedding 64)", meta((m) => m.set("llama.attention.head_count", gguf.u32(3))), LOAD_FAILS);
  add("hparams", "head_count_kv 3 (does not divide head_count 2)", meta((m) => m.set("llama.attention.head_count_kv", gguf.u32(3))), LOAD_FAILS);
  add("hparams", "head_count as an array of the wrong length", meta((m) => m.set("llama.attention.head_count", gguf.numbers(4, [2, 2, 2]))), LOAD_FAILS);
  add("hparams", "expert_count 8 without expert_used_count", meta((m) => m.set("llama.expert_count", gguf.u32(8))), INVALID);
  add("hparams", "expert_used_count 2 without experts", meta((m) => m.set("llama.expert_used_count", gguf.u32(2))), INVALID);
  add("hparams", "expert_used_count above expert_count", meta((m) => {
    m.set("llama.expert_count", gguf.u32(2));
    m.set("llama.expert_used_count", gguf.u32(4));
  }), INVALID);
  add("hparams", "expert_count 100000", meta((m) => {
    m.set("llama.expert_count", gguf.u32(100000));
    m.set("llama.expert_used_count", gguf.u32(2));
  }), INVALID);
  add("hparams", "nextn_predict_layers above block_count", meta((m) => m.set("llama.nextn_predict_layers", gguf.u32(5))), INVALID);
  add("hparams", "unknown rope scaling type", meta((m) => m.set("llama.rope.scaling.type", gguf.str("bogus"))), INVALID);
  add("hparams", "rope dimension count 8 (not the head size)", meta((m) => m.set("llama.rope.dimension_count", gguf.u32(8))), LOAD_FAILS);
  add("hparams", "context_length 0", meta((m) => m.set("llama.context_length", gguf.u32(0))), INVALID);
  add("hparams", "rms epsilon NaN", meta((m) => m.set("llama.attention.layer_norm_rms_epsilon", gguf.f32(Number.NaN))), INVALID);
  add("hparams", "rms epsilon -1", meta((m) => m.set("llama.attention.layer_norm_rms_epsilon", gguf.f32(-1))), INVALID);
  add("hparams", "rope freq base NaN", meta((m) => m.set("llama.rope.freq_base", gguf.f32(Number.NaN))), OK);
  add("hparams", "rope scaling factor -4", meta((m) => m.set("llama.rope.scaling.factor", gguf.f32(-4))), OK);
  add("hparams", "rope scaling type yarn", meta((m) => m.set("llama.rope.scaling.type", gguf.str("yarn"))), OK);
  add("hparams", "context_length 2^32-1", meta((m) => m.set("llama.context_length", gguf.u32(0xffffffff))), OK);
  add("hparams", "expert groups without experts", meta((m) => m.set("llama.expert_group_count", gguf.u32(2))), INVALID);
  add("hparams", "head_count_kv per layer, one not dividing", meta((m) => m.set("llama.attention.head_count_kv", gguf.numbers(4, [1, 3]))), INVALID);
  add("hparams", "rope dimension count odd", meta((m) => m.set("llama.rope.dimension_count", gguf.u32(31))), INVALID);
  add("hparams", "rope freq base 0", meta((m) => m.set("llama.rope.freq_base", gguf.f32(0))), OK);
  // Consistent shapes: the tensors agree with the broken hparams, so llama.cpp's shape checks pass.
  add("hparams", "head_count_kv 3 > head_count 2 with matching tensors", await consistent({ nHeadKv: 3 }), INVALID);
  add("hparams", "head_count 4, head_count_kv 3 with matching tensors", await consistent({ nHead: 4, nHeadKv: 3 }), INVALID);
  add("hparams", "embedding 64 over 3 heads with matching tensors", await consistent({ nHead: 3, nHeadKv: 1 }), INVALID);
  add("hparams", "head size given by key_length, odd", await consistent({ nHead: 2, nHeadKv: 1 }, [
    ["llama.attention.key_length", gguf.u32(31)],
    ["llama.attention.value_length", gguf.u32(31)],
    ["llama.rope.dimension_count", gguf.u32(31)],
  ], 31), INVALID);

  // --- tokenizer --------------------------------------------------------------------------------
  add("tokenizer", "vocab-only file, loaded with vocabOnly", await vocabOnlyFile(), { stage: "context", codes: ["ERR_INVALID_ARGUMENT"] }, true);
  add("tokenizer", "vocab-only file, loaded as a model", await vocabOnlyFile(), LOAD_FAILS);
  add("tokenizer", "zero tokens", meta((m) => {
    m.set("tokenizer.ggml.tokens", gguf.strings([]));
    m.set("tokenizer.ggml.scores", gguf.numbers(6, []));
    m.set("tokenizer.ggml.token_type", gguf.numbers(5, []));
  }), LOAD_FAILS);
  add("tokenizer", "zero tokens, vocabOnly", meta((m) => {
    m.set("tokenizer.ggml.tokens", gguf.strings([]));
    m.set("tokenizer.ggml.scores", gguf.numbers(6, []));
    m.set("tokenizer.ggml.token_type", gguf.numbers(5, []));
  }), INVALID, true);
  add("tokenizer", "single-token vocabulary (no BOS to add), vocabOnly", meta((m) => m.set("tokenizer.ggml.tokens", gguf.strings(["<unk>"]))), INVALID, true);
  add("tokenizer", "add_eos_token with a 2-token vocabulary, vocabOnly", meta((m) => {
    m.set("tokenizer.ggml.tokens", gguf.strings(["<unk>", "<s>"]));
    m.set("tokenizer.ggml.add_eos_token", gguf.bool(true));
  }), INVALID, true);
  // SPM byte fallback looks up "<0x48>" with unordered_map::at: a C++ exception, caught as ERR_INTERNAL (see docs/reliability.md).
  add("tokenizer", "2-token vocabulary without add_eos, vocabOnly", meta((m) => m.set("tokenizer.ggml.tokens", gguf.strings(["<unk>", "<s>"]))),
    { stage: "tokenize", codes: ["ERR_INTERNAL", "ERR_INVALID_ARGUMENT", "ERR_UNSUPPORTED"] }, true);
  add("tokenizer", "no token list", meta((m) => m.delete("tokenizer.ggml.tokens")), LOAD_FAILS);
  add("tokenizer", "token list of u32", meta((m) => m.set("tokenizer.ggml.tokens", gguf.numbers(4, [1, 2, 3]))), LOAD_FAILS);
  add("tokenizer", "duplicate token strings", meta((m) => {
    const t = m.get("tokenizer.ggml.tokens");
    if (t?.type === 9 && t.itemType === 8) m.set("tokenizer.ggml.tokens", gguf.strings(t.value.map((s, i) => (i === 300 ? (t.value[301] as string) : s))));
  }), INVALID);
  // llama.cpp reads tokens as C strings: "<s>\0x" is "<s>", a duplicate of token 1 (found by scripts/fuzz.mjs).
  add("tokenizer", "token with a NUL that makes it a duplicate", meta((m) => {
    const t = m.get("tokenizer.ggml.tokens");
    if (t?.type === 9 && t.itemType === 8) m.set("tokenizer.ggml.tokens", gguf.strings(t.value.map((s, i) => (i === 300 ? "<s>\u0000x" : s))));
  }), INVALID);
  add("tokenizer", "empty token named like llama.cpp's placeholder for it", meta((m) => {
    const t = m.get("tokenizer.ggml.tokens");
    if (t?.type === 9 && t.itemType === 8) m.set("tokenizer.ggml.tokens", gguf.strings(t.value.map((s, i) => (i === 300 ? "" : i === 301 ? "[EMPTY_300]" : s))));
  }), INVALID);
  add("tokenizer", "an empty token", meta((m) => {
    const t = m.get("tokenizer.ggml.tokens");
    if (t?.type === 9 && t.itemType === 8) m.set("tokenizer.ggml.tokens", gguf.strings(t.value.map((s, i) => (i === 300 ? "" : s))));
  }), OK);
  add("tokenizer", "scores shorter than tokens", meta((m) => m.set("tokenizer.ggml.scores", gguf.numbers(6, [0, 0]))), LOAD_FAILS);
  add("tokenizer", "token types shorter than tokens", meta((m) => m.set("tokenizer.ggml.token_type", gguf.numbers(5, [1]))), LOAD_FAILS);
  add("tokenizer", "token types as u8", meta((m) => m.set("tokenizer.ggml.token_type", gguf.numbers(0, new Array<number>(512).fill(1)))), LOAD_FAILS);
  add("tokenizer", "bos id out of range", meta((m) => m.set("tokenizer.ggml.bos_token_id", gguf.u32(100000))), OK);
  add("tokenizer", "eos id out of range", meta((m) => m.set("tokenizer.ggml.eos_token_id", gguf.u32(0xffffffff))), OK);
  add("tokenizer", "bos id as a string", meta((m) => m.set("tokenizer.ggml.bos_token_id", gguf.str("1"))), LOAD_FAILS);
  add("tokenizer", "unknown tokenizer model", meta((m) => m.set("tokenizer.ggml.model", gguf.str("bogus"))), LOAD_FAILS);
  add("tokenizer", "tokenizer model 'none' (no vocabulary)", meta((m) => m.set("tokenizer.ggml.model", gguf.str("none"))), { stage: "load", codes: ["ERR_UNSUPPORTED"] });
  add("tokenizer", "no tokenizer model", meta((m) => m.delete("tokenizer.ggml.model")), LOAD_FAILS);
  add("tokenizer", "vocab 512 tokens but no byte tokens", meta((m) => {
    const t = m.get("tokenizer.ggml.tokens");
    if (t?.type === 9 && t.itemType === 8) m.set("tokenizer.ggml.tokens", gguf.strings(t.value.map((s, i) => (i >= 3 && i < 259 ? `tok${i}` : s))));
  }), OK);
  add("tokenizer", "chat template garbage", meta((m) => m.set("tokenizer.chat_template", gguf.str("{% for x in %}{{"))), OK);
  add("tokenizer", "token of 64 KiB", meta((m) => {
    const t = m.get("tokenizer.ggml.tokens");
    if (t?.type === 9 && t.itemType === 8) m.set("tokenizer.ggml.tokens", gguf.strings(t.value.map((s, i) => (i === 400 ? "z".repeat(65536) : s))));
  }), OK);

  return cases;
}

/** A GGUF with only the architecture and the tokenizer: what llama.cpp's vocab files are. */
async function vocabOnlyFile(): Promise<Buffer> {
  const metadata = new Map<string, GgufMetadataEntry>([["general.architecture", gguf.str("llama")]]);
  for (const [k, e] of await llamaSpmTokenizer(SMALL_SHAPE.nVocab)) metadata.set(k, e);
  return assemble({ metadata, tensors: [] });
}
