/**
 * Small models of the shapes the memory tests need, written from llama.cpp's own architecture
 * code (src/models/gemma3.cpp, src/models/llama.cpp, src/llama-arch.cpp) until the shared
 * synthetic writer has them:
 *
 * - gemma3: explicit head size, Q/K norms, post-attention and post-FFN norms, tied output, and
 *   interleaved sliding-window attention (`sliding_window_pattern` 2: layer 0 slides, layer 1 is
 *   global) with a small window, so a context soon holds more than the window.
 * - llama with experts (Mixtral's layout): `ffn_gate_inp` and 3-D `ffn_{gate,up,down}_exps`.
 *
 * Weights are seeded normal values; their spread is larger than the llama presets' so attention
 * changes the greedy tokens (a lost position then shows in the output). Files are cached under
 * the test models directory by name.
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { GGML_TYPE, GGUF_VALUE_TYPE, type GgufMetadataEntry } from "../../lib/gguf/format.js";
import { readGguf } from "../../lib/gguf/read.js";
import { CHATML_TEMPLATE, SeededRng, defaultVocabPath, encodeF16, quantizeQ4_0 } from "../../lib/gguf/synthetic.js";
import { gguf, writeGguf, type GgufTensorSource } from "../../lib/gguf/write.js";
import { testModelsDir } from "../helpers/models.js";

/** Bump when the bytes written change. */
const VERSION = 2;

interface Tensor {
  name: string;
  dims: number[];
  /** "norm": ones in f32 (scaled by normValue); "weight": seeded normal values in the model's type. */
  role: "norm" | "weight";
  /** Standard deviation of a weight's values. */
  std?: number;
  /** A weight stored in f16 whatever the model's type. */
  f16?: boolean;
}

type WeightType = "f16" | "q4_0";

async function write(path: string, arch: string, keys: [string, GgufMetadataEntry][], plan: Tensor[], type: WeightType, seed: number): Promise<string> {
  if (existsSync(path)) return path;
  mkdirSync(testModelsDir(), { recursive: true });
  const vocab = await readGguf(defaultVocabPath());
  const tokens = vocab.metadata.get("tokenizer.ggml.tokens");
  const nVocab = tokens && tokens.type === GGUF_VALUE_TYPE.ARRAY ? tokens.value.length : 0;
  const metadata = new Map<string, GgufMetadataEntry>([
    ["general.architecture", gguf.str(arch)],
    ["general.name", gguf.str(`llamem test ${arch}`)],
    ["general.file_type", gguf.u32(type === "f16" ? 1 : 2)],
    ["general.quantization_version", gguf.u32(2)],
    [`${arch}.vocab_size`, gguf.u32(nVocab)],
    ...keys,
  ]);
  for (const [key, entry] of vocab.metadata) if (key.startsWith("tokenizer.")) metadata.set(key, entry);
  metadata.set("tokenizer.chat_template", gguf.str(CHATML_TEMPLATE));
  const typeId = type === "f16" ? GGML_TYPE.F16 : GGML_TYPE.Q4_0;
  const tensors: GgufTensorSource[] = plan.map((t, index) => {
    const dims = t.dims.map((d) => (d === -1 ? nVocab : d));
    const n = dims.reduce((a, b) => a * b, 1);
    if (t.role === "norm") return { name: t.name, dims, type: GGML_TYPE.F32, data: () => [new Uint8Array(new Float32Array(n).fill(1).buffer)] };
    const f16 = type === "f16" || t.f16 === true;
    return {
      name: t.name,
      dims,
      type: f16 ? GGML_TYPE.F16 : typeId,
      data: function* () {
        const values = new Float32Array(n);
        new SeededRng(seed, index).fillNormal(values, t.std ?? 0.02);
        yield f16 ? encodeF16(values) : quantizeQ4_0(values);
      },
    };
  });
  await writeGguf(path, { metadata, tensors });
  return path;
}

/** The gemma3-shaped model's hyperparameters. */
export const GEMMA3 = Object.freeze({ nEmbd: 64, nLayer: 2, nHead: 2, nHeadKv: 1, headDim: 32, nFf: 128, window: 32, contextLength: 4096 });

/**
 * A gemma3-shaped model: 2 layers, layer 0 sliding (window {@link GEMMA3}.window), layer 1
 * global; 2 heads of 32 (n_embd / n_head would also be 32, the head size is given explicitly as
 * gemma3 files do).
 */
export function gemma3Model(seed = 1): Promise<string> {
  const s = GEMMA3;
  const path = join(testModelsDir(), `memtest-gemma3-w${s.window}-seed${seed}-v${VERSION}.gguf`);
  const a = "gemma3";
  const keys: [string, GgufMetadataEntry][] = [
    [`${a}.context_length`, gguf.u32(s.contextLength)],
    [`${a}.embedding_length`, gguf.u32(s.nEmbd)],
    [`${a}.block_count`, gguf.u32(s.nLayer)],
    [`${a}.feed_forward_length`, gguf.u32(s.nFf)],
    [`${a}.attention.head_count`, gguf.u32(s.nHead)],
    [`${a}.attention.head_count_kv`, gguf.u32(s.nHeadKv)],
    [`${a}.attention.key_length`, gguf.u32(s.headDim)],
    [`${a}.attention.value_length`, gguf.u32(s.headDim)],
    [`${a}.attention.layer_norm_rms_epsilon`, gguf.f32(1e-6)],
    [`${a}.attention.sliding_window`, gguf.u32(s.window)],
    [`${a}.attention.sliding_window_pattern`, gguf.u32(2)],
    [`${a}.rope.freq_base`, gguf.f32(1_000_000)],
    [`${a}.rope.freq_base_swa`, gguf.f32(10_000)],
  ];
  const q = s.nHead * s.headDim;
  const kv = s.nHeadKv * s.headDim;
  const std = 0.25;
  const plan: Tensor[] = [{ name: "token_embd.weight", dims: [s.nEmbd, -1], role: "weight", std: 0.05 }];
  for (let i = 0; i < s.nLayer; i++) {
    const p = `blk.${i}.`;
    plan.push(
      { name: `${p}attn_norm.weight`, dims: [s.nEmbd], role: "norm" },
      { name: `${p}attn_q.weight`, dims: [s.nEmbd, q], role: "weight", std },
      { name: `${p}attn_k.weight`, dims: [s.nEmbd, kv], role: "weight", std },
      { name: `${p}attn_v.weight`, dims: [s.nEmbd, kv], role: "weight", std },
      { name: `${p}attn_output.weight`, dims: [q, s.nEmbd], role: "weight", std },
      { name: `${p}post_attention_norm.weight`, dims: [s.nEmbd], role: "norm" },
      { name: `${p}attn_k_norm.weight`, dims: [s.headDim], role: "norm" },
      { name: `${p}attn_q_norm.weight`, dims: [s.headDim], role: "norm" },
      { name: `${p}ffn_norm.weight`, dims: [s.nEmbd], role: "norm" },
      { name: `${p}ffn_gate.weight`, dims: [s.nEmbd, s.nFf], role: "weight", std },
      { name: `${p}ffn_up.weight`, dims: [s.nEmbd, s.nFf], role: "weight", std },
      { name: `${p}ffn_down.weight`, dims: [s.nFf, s.nEmbd], role: "weight", std },
      { name: `${p}post_ffw_norm.weight`, dims: [s.nEmbd], role: "norm" },
    );
  }
  plan.push({ name: "output_norm.weight", dims: [s.nEmbd], role: "norm" }, { name: "output.weight", dims: [s.nEmbd, -1], role: "weight", std });
  return write(path, a, keys, plan, "f16", seed);
}

/** The mixture-of-experts model's hyperparameters. */
export const MOE = Object.freeze({ nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, nFf: 256, experts: 8, used: 2, contextLength: 4096 });

/**
 * A llama model with experts in Mixtral's layout (8 experts, 2 used), Q4_0 so the CPU backend
 * repacks what it can (on AVX2/AVX-512 CPUs into CPU_REPACK, the 2-D matrices into AMX where the
 * CPU has AMX tiles), with an f16 token embedding (looked up by rows, never repacked) that holds
 * over half the weights: only part of the host weights are repacked, as in the MoE model of
 * issue 16.
 */
export function moeModel(seed = 1): Promise<string> {
  const s = MOE;
  const path = join(testModelsDir(), `memtest-llama-moe-${s.experts}x${s.used}-q4_0-seed${seed}-v${VERSION}.gguf`);
  const a = "llama";
  const headDim = s.nEmbd / s.nHead;
  const keys: [string, GgufMetadataEntry][] = [
    [`${a}.context_length`, gguf.u32(s.contextLength)],
    [`${a}.embedding_length`, gguf.u32(s.nEmbd)],
    [`${a}.block_count`, gguf.u32(s.nLayer)],
    [`${a}.feed_forward_length`, gguf.u32(s.nFf)],
    [`${a}.attention.head_count`, gguf.u32(s.nHead)],
    [`${a}.attention.head_count_kv`, gguf.u32(s.nHeadKv)],
    [`${a}.rope.dimension_count`, gguf.u32(headDim)],
    [`${a}.attention.layer_norm_rms_epsilon`, gguf.f32(1e-5)],
    [`${a}.expert_count`, gguf.u32(s.experts)],
    [`${a}.expert_used_count`, gguf.u32(s.used)],
  ];
  const kv = s.nHeadKv * headDim;
  const plan: Tensor[] = [{ name: "token_embd.weight", dims: [s.nEmbd, -1], role: "weight", f16: true }];
  for (let i = 0; i < s.nLayer; i++) {
    const p = `blk.${i}.`;
    plan.push(
      { name: `${p}attn_norm.weight`, dims: [s.nEmbd], role: "norm" },
      { name: `${p}attn_q.weight`, dims: [s.nEmbd, s.nEmbd], role: "weight" },
      { name: `${p}attn_k.weight`, dims: [s.nEmbd, kv], role: "weight" },
      { name: `${p}attn_v.weight`, dims: [s.nEmbd, kv], role: "weight" },
      { name: `${p}attn_output.weight`, dims: [s.nEmbd, s.nEmbd], role: "weight" },
      { name: `${p}ffn_norm.weight`, dims: [s.nEmbd], role: "norm" },
      { name: `${p}ffn_gate_inp.weight`, dims: [s.nEmbd, s.experts], role: "weight" },
      { name: `${p}ffn_gate_exps.weight`, dims: [s.nEmbd, s.nFf, s.experts], role: "weight" },
      { name: `${p}ffn_down_exps.weight`, dims: [s.nFf, s.nEmbd, s.experts], role: "weight" },
      { name: `${p}ffn_up_exps.weight`, dims: [s.nEmbd, s.nFf, s.experts], role: "weight" },
    );
  }
  plan.push({ name: "output_norm.weight", dims: [s.nEmbd], role: "norm" }, { name: "output.weight", dims: [s.nEmbd, -1], role: "weight" });
  return write(path, a, keys, plan, "q4_0", seed);
}
