/**
 * Tiny test models of the architectures people run: the tensor names, shapes and metadata keys
 * each architecture's loader in llama.cpp reads (src/models/<arch>.cpp `load_arch_hparams` and
 * `load_arch_tensors`, the key and tensor names of src/llama-arch.cpp), at a size that loads in
 * milliseconds. Weights are seeded noise (see ../synthetic.ts); each shape keeps what makes its
 * family different (biases, fused projections, head sizes that are not n_embd / n_head, sliding
 * windows, experts, a recurrent state). Trained contexts are 8192 (phi3 4096, mamba 2^20): the
 * size a budget fit searches, kept small so tests that fit contexts stay fast.
 *
 * @packageDocumentation
 */
import { LlamemError } from "../../errors.js";
import { GGML_TYPE } from "../format.js";
import type { GgufMetadataEntry } from "../format.js";
import { gguf } from "../write.js";

/** One tensor of a synthetic model. */
export interface SyntheticTensor {
  /** llama.cpp tensor name. */
  readonly name: string;
  /** ggml dims, ne0 (row length) first. */
  readonly dims: readonly number[];
  /** ggml type id. */
  readonly type: number;
  /**
   * "norm": ones in f32 (norm weights, Mamba's D); "weight": seeded noise in `type` (matrices,
   * biases); "ssmA": Mamba's A = -(1, 2, …, d_state) on every row, as -exp(A_log) is at init.
   */
  readonly role: "norm" | "weight" | "ssmA";
  /** Standard deviation of a "weight" tensor's noise; absent: the writer's WEIGHT_STD (0.02). */
  readonly std?: number;
}

/** The model shapes besides the llama presets, by the name `--arch` takes. */
export type SyntheticArch = "qwen2" | "qwen3" | "qwen3-head96" | "gemma3" | "phi3" | "qwen3moe" | "mistral-nemo" | "mamba" | "bert" | "bert-reranker";

/** What one architecture's tiny model is. */
export interface SyntheticArchInfo {
  /** The GGUF `general.architecture` llama.cpp loads it as. */
  readonly architecture: string;
  /** The vocabulary GGUF in llama.cpp's models/ folder its tokenizer (and template, if any) comes from. */
  readonly vocab: string;
  /** What makes it this architecture, in a line. */
  readonly summary: string;
  /** Embedding width, layers, attention heads (0 for recurrent), key/value heads and head size. */
  readonly nEmbd: number;
  readonly nLayer: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  /** K and V head size (what `attention.key_length` says, or n_embd / n_head); 0 without attention. */
  readonly headDim: number;
  /** Tokens a sliding-window layer sees (0: none). */
  readonly slidingWindow: number;
  /** Which layers use the sliding window (empty: none). */
  readonly swaLayers: readonly number[];
  /** Experts per MoE layer and experts used per token (0: dense). */
  readonly experts: number;
  readonly expertsUsed: number;
  /** A recurrent state instead of (or besides) a KV cache. */
  readonly recurrent: boolean;
  /** Mamba's state sizes (0 elsewhere). */
  readonly ssm: { readonly dConv: number; readonly dInner: number; readonly dState: number; readonly dtRank: number };
  readonly contextLength: number;
  /** An encoder that makes embeddings (or reranks) and generates no text. */
  readonly encoder: boolean;
}

/** A synthetic model's metadata (without the tokenizer) and tensors. */
export interface ArchPlan {
  readonly metadata: [string, GgufMetadataEntry][];
  readonly tensors: SyntheticTensor[];
}

interface ArchDef {
  readonly info: SyntheticArchInfo;
  plan(weightType: number, nVocab: number): ArchPlan;
}

const NO_SSM = Object.freeze({ dConv: 0, dInner: 0, dState: 0, dtRank: 0 });

/** Collects tensors; matrices whose rows are not whole 32-value blocks stay f32 (as llama-quantize leaves them). */
class Tensors {
  readonly list: SyntheticTensor[] = [];
  constructor(private readonly w: number) {}
  /** A matrix (or 3-D expert stack) in the model's weight type. */
  weight(name: string, ...dims: number[]): this {
    const type = (dims[0] as number) % 32 === 0 ? this.w : GGML_TYPE.F32;
    this.list.push({ name, dims, type, role: "weight" });
    return this;
  }
  /** Seeded noise kept in f32 (biases, router and convolution weights). */
  f32(name: string, ...dims: number[]): this {
    this.list.push({ name, dims, type: GGML_TYPE.F32, role: "weight" });
    return this;
  }
  /** Like {@link Tensors.weight} (a matrix) or {@link Tensors.f32} (a vector), with noise of another standard deviation. */
  scaled(std: number, name: string, ...dims: number[]): this {
    const type = dims.length > 1 && (dims[0] as number) % 32 === 0 ? this.w : GGML_TYPE.F32;
    this.list.push({ name, dims, type, role: "weight", std });
    return this;
  }
  norm(name: string, n: number): this {
    this.list.push({ name, dims: [n], type: GGML_TYPE.F32, role: "norm" });
    return this;
  }
  ssmA(name: string, dState: number, dInner: number): this {
    this.list.push({ name, dims: [dState, dInner], type: GGML_TYPE.F32, role: "ssmA" });
    return this;
  }
}

interface Transformer {
  readonly nEmbd: number;
  readonly nLayer: number;
  readonly nHead: number;
  readonly nHeadKv: number;
  /** Written as attention.key_length/value_length when set; else n_embd / n_head. */
  readonly headDim?: number;
  readonly nFf: number;
  readonly contextLength: number;
  readonly ropeFreqBase: number;
  readonly rmsEps: number;
}

function headDimOf(s: Transformer): number {
  return s.headDim ?? s.nEmbd / s.nHead;
}

/** The hyperparameters every attention architecture reads, under `<arch>.`. */
function transformerKeys(arch: string, s: Transformer, nVocab: number): [string, GgufMetadataEntry][] {
  const out: [string, GgufMetadataEntry][] = [
    [`${arch}.context_length`, gguf.u32(s.contextLength)],
    [`${arch}.embedding_length`, gguf.u32(s.nEmbd)],
    [`${arch}.block_count`, gguf.u32(s.nLayer)],
    [`${arch}.feed_forward_length`, gguf.u32(s.nFf)],
    [`${arch}.attention.head_count`, gguf.u32(s.nHead)],
    [`${arch}.attention.head_count_kv`, gguf.u32(s.nHeadKv)],
  ];
  if (s.headDim !== undefined) {
    out.push([`${arch}.attention.key_length`, gguf.u32(s.headDim)], [`${arch}.attention.value_length`, gguf.u32(s.headDim)]);
  }
  out.push(
    [`${arch}.rope.dimension_count`, gguf.u32(headDimOf(s))],
    [`${arch}.rope.freq_base`, gguf.f32(s.ropeFreqBase)],
    [`${arch}.attention.layer_norm_rms_epsilon`, gguf.f32(s.rmsEps)],
    [`${arch}.vocab_size`, gguf.u32(nVocab)],
  );
  return out;
}

function info(architecture: string, vocab: string, summary: string, s: Transformer, extra: Partial<SyntheticArchInfo> = {}): SyntheticArchInfo {
  return Object.freeze({
    architecture, vocab, summary,
    nEmbd: s.nEmbd, nLayer: s.nLayer, nHead: s.nHead, nHeadKv: s.nHeadKv, headDim: headDimOf(s),
    slidingWindow: 0, swaLayers: [], experts: 0, expertsUsed: 0, recurrent: false, ssm: NO_SSM,
    contextLength: s.contextLength, encoder: false,
    ...extra,
  });
}

/**
 * Separate Q/K/V projections (llama.cpp's create_tensor_qkv without the fused tensor), with
 * optional biases, and the output projection.
 */
function attention(t: Tensors, p: string, s: Transformer, biases: boolean): void {
  const hd = headDimOf(s);
  const q = hd * s.nHead;
  const kv = hd * s.nHeadKv;
  t.weight(`${p}attn_q.weight`, s.nEmbd, q);
  if (biases) t.f32(`${p}attn_q.bias`, q);
  t.weight(`${p}attn_k.weight`, s.nEmbd, kv);
  if (biases) t.f32(`${p}attn_k.bias`, kv);
  t.weight(`${p}attn_v.weight`, s.nEmbd, kv);
  if (biases) t.f32(`${p}attn_v.bias`, kv);
  t.weight(`${p}attn_output.weight`, q, s.nEmbd);
}

/** The SwiGLU feed-forward block of llama-like models. */
function ffn(t: Tensors, p: string, s: Transformer): void {
  t.norm(`${p}ffn_norm.weight`, s.nEmbd);
  t.weight(`${p}ffn_gate.weight`, s.nEmbd, s.nFf);
  t.weight(`${p}ffn_up.weight`, s.nEmbd, s.nFf);
  t.weight(`${p}ffn_down.weight`, s.nFf, s.nEmbd);
}

// ---------------------------------------------------------------------------------------------
// The architectures.

/**
 * Qwen2/2.5: Q, K and V projections with biases. Every shape here has an untied output (as the
 * larger models of each family do): with tied embeddings and noise weights, the greedy token
 * after x is nearly always x again, which would make output comparisons blind.
 */
const QWEN2: Transformer = { nEmbd: 64, nLayer: 2, nHead: 2, nHeadKv: 1, nFf: 128, contextLength: 8192, ropeFreqBase: 1e6, rmsEps: 1e-6 };
const qwen2: ArchDef = {
  info: info("qwen2", "ggml-vocab-qwen2.gguf", "QKV biases, tied embeddings, GQA", QWEN2),
  plan(w, nVocab) {
    const s = QWEN2;
    const t = new Tensors(w).weight("token_embd.weight", s.nEmbd, nVocab);
    for (let i = 0; i < s.nLayer; i++) {
      const p = `blk.${i}.`;
      t.norm(`${p}attn_norm.weight`, s.nEmbd);
      attention(t, p, s, true);
      ffn(t, p, s);
    }
    t.norm("output_norm.weight", s.nEmbd).weight("output.weight", s.nEmbd, nVocab);
    return { metadata: transformerKeys("qwen2", s, nVocab), tensors: t.list };
  },
};

/** Qwen3 layers: RMS norms on Q and K per head, an explicit head size. */
function qwen3Layer(t: Tensors, p: string, s: Transformer): void {
  t.norm(`${p}attn_norm.weight`, s.nEmbd);
  attention(t, p, s, false);
  t.norm(`${p}attn_k_norm.weight`, headDimOf(s));
  t.norm(`${p}attn_q_norm.weight`, headDimOf(s));
}

function qwen3Def(s: Transformer, vocab: string, summary: string): ArchDef {
  return {
    info: info("qwen3", vocab, summary, s),
    plan(w, nVocab) {
      const t = new Tensors(w).weight("token_embd.weight", s.nEmbd, nVocab);
      for (let i = 0; i < s.nLayer; i++) {
        const p = `blk.${i}.`;
        qwen3Layer(t, p, s);
        ffn(t, p, s);
      }
      t.norm("output_norm.weight", s.nEmbd).weight("output.weight", s.nEmbd, nVocab);
      return { metadata: transformerKeys("qwen3", s, nVocab), tensors: t.list };
    },
  };
}

/** Heads of 64 where n_embd / n_head is 32, like Qwen3-4B (2560 / 32 = 80, heads of 128). */
const QWEN3: Transformer = { nEmbd: 64, nLayer: 2, nHead: 2, nHeadKv: 1, headDim: 64, nFf: 128, contextLength: 8192, ropeFreqBase: 1e6, rmsEps: 1e-6 };
/**
 * Heads of 96 (not a multiple of 64) where n_embd / n_head is 64: llama.cpp cannot shift a
 * quantized K cache of such heads. One head keeps the file small (the vocabulary dominates).
 */
const QWEN3_HEAD96: Transformer = { nEmbd: 64, nLayer: 2, nHead: 1, nHeadKv: 1, headDim: 96, nFf: 128, contextLength: 8192, ropeFreqBase: 1e6, rmsEps: 1e-6 };

/**
 * Gemma 3: 2 of every 3 layers see a 32-token window; extra norms around attention and FFN; tied
 * embeddings (as Gemma's; its scaled embeddings keep the output varied anyway).
 */
const GEMMA3: Transformer = { nEmbd: 64, nLayer: 3, nHead: 2, nHeadKv: 1, headDim: 64, nFf: 128, contextLength: 8192, ropeFreqBase: 1e6, rmsEps: 1e-6 };
const GEMMA3_WINDOW = 32;
const GEMMA3_PATTERN = 3;
const gemma3: ArchDef = {
  info: info("gemma3", "ggml-vocab-gemma-4.gguf", `sliding window ${GEMMA3_WINDOW} on 2 of 3 layers, Q/K norms, post-attention/FFN norms, heads of 64 (n_embd / n_head = 32)`, GEMMA3, {
    slidingWindow: GEMMA3_WINDOW,
    // llama.cpp's set_swa_pattern(n): layer il slides when il % n < n - 1.
    swaLayers: Array.from({ length: GEMMA3.nLayer }, (_, il) => il).filter((il) => il % GEMMA3_PATTERN < GEMMA3_PATTERN - 1),
  }),
  plan(w, nVocab) {
    const s = GEMMA3;
    const t = new Tensors(w).weight("token_embd.weight", s.nEmbd, nVocab);
    for (let i = 0; i < s.nLayer; i++) {
      const p = `blk.${i}.`;
      t.norm(`${p}attn_norm.weight`, s.nEmbd);
      attention(t, p, s, false);
      t.norm(`${p}post_attention_norm.weight`, s.nEmbd);
      t.norm(`${p}attn_k_norm.weight`, headDimOf(s));
      t.norm(`${p}attn_q_norm.weight`, headDimOf(s));
      ffn(t, p, s);
      t.norm(`${p}post_ffw_norm.weight`, s.nEmbd);
    }
    t.norm("output_norm.weight", s.nEmbd);
    const metadata = transformerKeys("gemma3", s, nVocab);
    metadata.push(
      ["gemma3.attention.sliding_window", gguf.u32(GEMMA3_WINDOW)],
      ["gemma3.attention.sliding_window_pattern", gguf.u32(GEMMA3_PATTERN)],
      ["gemma3.rope.freq_base_swa", gguf.f32(10000)],
    );
    return { metadata, tensors: t.list };
  },
};

/** Phi-3: one fused QKV projection, a fused gate+up projection (2 * n_ff), an untied output. */
const PHI3: Transformer = { nEmbd: 64, nLayer: 2, nHead: 2, nHeadKv: 2, nFf: 128, contextLength: 4096, ropeFreqBase: 10000, rmsEps: 1e-5 };
const phi3: ArchDef = {
  info: info("phi3", "ggml-vocab-phi-3.gguf", "fused QKV and gate/up projections, untied output", PHI3),
  plan(w, nVocab) {
    const s = PHI3;
    const hd = headDimOf(s);
    const t = new Tensors(w).weight("token_embd.weight", s.nEmbd, nVocab);
    for (let i = 0; i < s.nLayer; i++) {
      const p = `blk.${i}.`;
      t.norm(`${p}attn_norm.weight`, s.nEmbd);
      t.weight(`${p}attn_qkv.weight`, s.nEmbd, hd * s.nHead + 2 * hd * s.nHeadKv);
      t.weight(`${p}attn_output.weight`, s.nEmbd, s.nEmbd);
      t.norm(`${p}ffn_norm.weight`, s.nEmbd);
      t.weight(`${p}ffn_up.weight`, s.nEmbd, 2 * s.nFf);
      t.weight(`${p}ffn_down.weight`, s.nFf, s.nEmbd);
    }
    t.norm("output_norm.weight", s.nEmbd).weight("output.weight", s.nEmbd, nVocab);
    const metadata = transformerKeys("phi3", s, nVocab);
    metadata.push(["phi3.rope.scaling.original_context_length", gguf.u32(s.contextLength)]);
    return { metadata, tensors: t.list };
  },
};

/** Qwen3-MoE: qwen3 attention, and 4 experts per layer of which 2 run per token. */
const QWEN3MOE: Transformer = { nEmbd: 64, nLayer: 2, nHead: 2, nHeadKv: 1, headDim: 64, nFf: 128, contextLength: 8192, ropeFreqBase: 1e6, rmsEps: 1e-6 };
const MOE_EXPERTS = 4;
const MOE_USED = 2;
const MOE_FF = 64;
const qwen3moe: ArchDef = {
  info: info("qwen3moe", "ggml-vocab-qwen35.gguf", `${MOE_EXPERTS} experts (${MOE_USED} used) of width ${MOE_FF}: ffn_gate_inp, ffn_{gate,up,down}_exps`, QWEN3MOE, {
    experts: MOE_EXPERTS,
    expertsUsed: MOE_USED,
  }),
  plan(w, nVocab) {
    const s = QWEN3MOE;
    const t = new Tensors(w).weight("token_embd.weight", s.nEmbd, nVocab);
    for (let i = 0; i < s.nLayer; i++) {
      const p = `blk.${i}.`;
      qwen3Layer(t, p, s);
      t.norm(`${p}ffn_norm.weight`, s.nEmbd);
      // The router stays f32, as llama-quantize leaves it.
      t.f32(`${p}ffn_gate_inp.weight`, s.nEmbd, MOE_EXPERTS);
      t.weight(`${p}ffn_gate_exps.weight`, s.nEmbd, MOE_FF, MOE_EXPERTS);
      t.weight(`${p}ffn_down_exps.weight`, MOE_FF, s.nEmbd, MOE_EXPERTS);
      t.weight(`${p}ffn_up_exps.weight`, s.nEmbd, MOE_FF, MOE_EXPERTS);
    }
    t.norm("output_norm.weight", s.nEmbd).weight("output.weight", s.nEmbd, nVocab);
    const metadata = transformerKeys("qwen3moe", s, nVocab);
    metadata.push(
      ["qwen3moe.expert_count", gguf.u32(MOE_EXPERTS)],
      ["qwen3moe.expert_used_count", gguf.u32(MOE_USED)],
      ["qwen3moe.expert_feed_forward_length", gguf.u32(MOE_FF)],
    );
    return { metadata, tensors: t.list };
  },
};

/**
 * Mistral-Nemo's shape on the llama architecture: heads narrower than n_embd / n_head (Nemo:
 * 5120 / 32 = 160, heads of 128; here 96 / 2 = 48, heads of 32), so Q is narrower than n_embd.
 */
const NEMO: Transformer = { nEmbd: 96, nLayer: 2, nHead: 2, nHeadKv: 1, headDim: 32, nFf: 192, contextLength: 8192, ropeFreqBase: 1e6, rmsEps: 1e-5 };
const mistralNemo: ArchDef = {
  info: info("llama", "ggml-vocab-llama-bpe.gguf", "llama with an explicit head size of 32 where n_embd / n_head = 48", NEMO),
  plan(w, nVocab) {
    const s = NEMO;
    const t = new Tensors(w).weight("token_embd.weight", s.nEmbd, nVocab);
    for (let i = 0; i < s.nLayer; i++) {
      const p = `blk.${i}.`;
      t.norm(`${p}attn_norm.weight`, s.nEmbd);
      attention(t, p, s, false);
      ffn(t, p, s);
    }
    t.norm("output_norm.weight", s.nEmbd).weight("output.weight", s.nEmbd, nVocab);
    return { metadata: transformerKeys("llama", s, nVocab), tensors: t.list };
  },
};

/** Mamba (1): a selective state-space model; no attention, a recurrent state per sequence. */
const MAMBA = { nEmbd: 64, nLayer: 2, dConv: 4, dInner: 128, dState: 16, dtRank: 4, contextLength: 1048576, rmsEps: 1e-5 };
const mamba: ArchDef = {
  info: Object.freeze({
    architecture: "mamba", vocab: "ggml-vocab-gpt-neox.gguf", summary: "selective state space (conv + scan), no attention: the state cannot shift",
    nEmbd: MAMBA.nEmbd, nLayer: MAMBA.nLayer, nHead: 0, nHeadKv: 0, headDim: 0,
    slidingWindow: 0, swaLayers: [], experts: 0, expertsUsed: 0, recurrent: true,
    ssm: Object.freeze({ dConv: MAMBA.dConv, dInner: MAMBA.dInner, dState: MAMBA.dState, dtRank: MAMBA.dtRank }),
    contextLength: MAMBA.contextLength, encoder: false,
  }),
  plan(w, nVocab) {
    const s = MAMBA;
    const t = new Tensors(w).weight("token_embd.weight", s.nEmbd, nVocab);
    for (let i = 0; i < s.nLayer; i++) {
      const p = `blk.${i}.`;
      t.norm(`${p}attn_norm.weight`, s.nEmbd);
      t.weight(`${p}ssm_in.weight`, s.nEmbd, 2 * s.dInner);
      t.f32(`${p}ssm_conv1d.weight`, s.dConv, s.dInner);
      t.f32(`${p}ssm_conv1d.bias`, s.dInner);
      t.weight(`${p}ssm_x.weight`, s.dInner, s.dtRank + 2 * s.dState);
      t.weight(`${p}ssm_dt.weight`, s.dtRank, s.dInner);
      t.f32(`${p}ssm_dt.bias`, s.dInner);
      // No ".weight" suffix for A and D in llama.cpp's names.
      t.ssmA(`${p}ssm_a`, s.dState, s.dInner);
      t.norm(`${p}ssm_d`, s.dInner);
      t.weight(`${p}ssm_out.weight`, s.dInner, s.nEmbd);
    }
    t.norm("output_norm.weight", s.nEmbd).weight("output.weight", s.nEmbd, nVocab);
    const metadata: [string, GgufMetadataEntry][] = [
      ["mamba.context_length", gguf.u32(s.contextLength)],
      ["mamba.embedding_length", gguf.u32(s.nEmbd)],
      ["mamba.block_count", gguf.u32(s.nLayer)],
      ["mamba.feed_forward_length", gguf.u32(0)],
      ["mamba.attention.head_count", gguf.u32(0)],
      ["mamba.attention.head_count_kv", gguf.u32(0)],
      ["mamba.ssm.conv_kernel", gguf.u32(s.dConv)],
      ["mamba.ssm.inner_size", gguf.u32(s.dInner)],
      ["mamba.ssm.state_size", gguf.u32(s.dState)],
      ["mamba.ssm.time_step_rank", gguf.u32(s.dtRank)],
      ["mamba.attention.layer_norm_rms_epsilon", gguf.f32(s.rmsEps)],
      ["mamba.vocab_size", gguf.u32(nVocab)],
    ];
    return { metadata, tensors: t.list };
  },
};

/**
 * BERT (bge-style): learned positions and token types, layer norms with biases after attention
 * and FFN, non-causal attention, mean pooling (src/models/bert.cpp). The reranker adds the
 * classification head llama.cpp runs for rank pooling: a dense layer (`cls`) and one output
 * (`cls.output`), scored on the CLS token.
 */
const BERT: Transformer = { nEmbd: 64, nLayer: 2, nHead: 2, nHeadKv: 2, nFf: 128, contextLength: 512, ropeFreqBase: 10000, rmsEps: 1e-12 };
/** llama_pooling_type values written as `bert.pooling_type`. */
const POOLING_MEAN = 1;
const POOLING_RANK = 4;
/**
 * Rows of `token_types`: the bge vocabulary's `tokenizer.ggml.token_type_count` (llama.cpp refuses
 * a BERT whose vocabulary has none; it adds row 0, "sentence A", to every token).
 */
const BERT_TOKEN_TYPES = 2;
/**
 * The classification head's noise: with 0.02 everywhere the CLS state hardly depends on the text
 * and the head shrinks what does, so the scores of different pairs were within 1e-4 of each other
 * (the reference's tolerance). 1/8 = 1/sqrt(n_embd) keeps the dense layer's input to tanh near
 * unit scale, and 1 on the one output row puts the reference's pairs about 0.03 apart.
 */
const CLS_STD = 0.125;
const CLS_OUT_STD = 1;

function bertDef(reranker: boolean): ArchDef {
  const s = BERT;
  return {
    info: info("bert", "ggml-vocab-bert-bge.gguf", reranker ? "BERT with a classification head: rank pooling scores (query, document) pairs" : "BERT encoder: learned positions and token types, layer norms with biases, mean pooling, no generation", s, {
      encoder: true,
    }),
    plan(w, nVocab) {
      const t = new Tensors(w).weight("token_embd.weight", s.nEmbd, nVocab);
      t.f32("token_types.weight", s.nEmbd, BERT_TOKEN_TYPES);
      t.f32("position_embd.weight", s.nEmbd, s.contextLength);
      t.norm("token_embd_norm.weight", s.nEmbd).f32("token_embd_norm.bias", s.nEmbd);
      for (let i = 0; i < s.nLayer; i++) {
        const p = `blk.${i}.`;
        attention(t, p, s, true);
        t.f32(`${p}attn_output.bias`, s.nEmbd);
        t.norm(`${p}attn_output_norm.weight`, s.nEmbd).f32(`${p}attn_output_norm.bias`, s.nEmbd);
        t.weight(`${p}ffn_up.weight`, s.nEmbd, s.nFf).f32(`${p}ffn_up.bias`, s.nFf);
        t.weight(`${p}ffn_down.weight`, s.nFf, s.nEmbd).f32(`${p}ffn_down.bias`, s.nEmbd);
        t.norm(`${p}layer_output_norm.weight`, s.nEmbd).f32(`${p}layer_output_norm.bias`, s.nEmbd);
      }
      if (reranker) {
        t.scaled(CLS_STD, "cls.weight", s.nEmbd, s.nEmbd).f32("cls.bias", s.nEmbd);
        t.scaled(CLS_OUT_STD, "cls.output.weight", s.nEmbd, 1).f32("cls.output.bias", 1);
      }
      const metadata: [string, GgufMetadataEntry][] = [
        ["bert.context_length", gguf.u32(s.contextLength)],
        ["bert.embedding_length", gguf.u32(s.nEmbd)],
        ["bert.block_count", gguf.u32(s.nLayer)],
        ["bert.feed_forward_length", gguf.u32(s.nFf)],
        ["bert.attention.head_count", gguf.u32(s.nHead)],
        ["bert.attention.layer_norm_epsilon", gguf.f32(s.rmsEps)],
        ["bert.attention.causal", gguf.bool(false)],
        ["bert.pooling_type", gguf.u32(reranker ? POOLING_RANK : POOLING_MEAN)],
      ];
      return { metadata, tensors: t.list };
    },
  };
}

const ARCHS: Readonly<Record<SyntheticArch, ArchDef>> = Object.freeze({
  qwen2,
  qwen3: qwen3Def(QWEN3, "ggml-vocab-qwen2.gguf", "Q/K norms, heads of 64 where n_embd / n_head = 32"),
  // The head-size variant takes a small vocabulary: what it tests is the heads, and it loads in a tenth of the time.
  "qwen3-head96": qwen3Def(QWEN3_HEAD96, "ggml-vocab-llama-spm.gguf", "qwen3 with heads of 96 (not a multiple of 64) where n_embd / n_head = 64"),
  gemma3,
  phi3,
  qwen3moe,
  "mistral-nemo": mistralNemo,
  mamba,
  bert: bertDef(false),
  "bert-reranker": bertDef(true),
});

/** Every architecture shape, with what it is. */
export const SYNTHETIC_ARCHS: Readonly<Record<SyntheticArch, SyntheticArchInfo>> = Object.freeze(
  Object.fromEntries(Object.entries(ARCHS).map(([k, d]) => [k, d.info])) as Record<SyntheticArch, SyntheticArchInfo>,
);

/** Whether `name` is one of {@link SYNTHETIC_ARCHS}. */
export function isSyntheticArch(name: unknown): name is SyntheticArch {
  return typeof name === "string" && Object.hasOwn(ARCHS, name);
}

/**
 * The metadata (architecture keys, no tokenizer) and tensors of an architecture's tiny model, in
 * ggml type `weightType` for the matrices.
 */
export function archPlan(arch: SyntheticArch, weightType: number, nVocab: number): ArchPlan {
  if (!isSyntheticArch(arch)) {
    throw new LlamemError("ERR_INVALID_ARGUMENT", `unknown architecture ${String(arch)} (expected llama, ${Object.keys(ARCHS).join(", ")})`);
  }
  if (!Number.isSafeInteger(nVocab) || nVocab <= 0) throw new LlamemError("ERR_INVALID_ARGUMENT", `invalid vocabulary size ${nVocab}`);
  return ARCHS[arch].plan(weightType, nVocab);
}
