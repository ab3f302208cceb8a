/**
 * Model sanity: what llama.cpp asserts (aborting the whole process) instead of reporting, and
 * hyperparameters no model can have that it loads anyway and then runs wrongly.
 * {@link checkModel} refuses such metadata, tensor types and tokenizers in a parsed header, so a
 * file that would crash or mislead llama.cpp becomes a {@link LlamemError} instead.
 *
 * @packageDocumentation
 */
import { LlamemError } from "../errors.js";
import { GGML_TYPE, GGUF_VALUE_TYPE, metadataNumber, metadataString } from "./format.js";
import type { GgufFile } from "./format.js";
import { TICK_EVERY } from "./parser.js";

/** Tensor types ggml's CPU backend cannot multiply or look rows up in (no vec_dot / get_rows). */
const NO_COMPUTE_TYPES: ReadonlySet<number> = new Set([
  GGML_TYPE.Q8_1, GGML_TYPE.Q8_K, GGML_TYPE.I8, GGML_TYPE.I16, GGML_TYPE.I32, GGML_TYPE.I64, GGML_TYPE.F64,
]);
/** llama.cpp's LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS. */
const LLAMA_MAX_LAYERS = 512;
const LLAMA_MAX_EXPERTS = 1024;
/** The values llama_rope_scaling_type_from_string knows. */
const ROPE_SCALING_TYPES: ReadonlySet<string> = new Set(["none", "linear", "yarn", "longrope"]);
/**
 * Architectures whose every layer is RoPE attention with n_embd / n_head (or key_length) wide
 * heads: they get the head-geometry checks (heads and key/value heads in every layer, a whole,
 * even head size). Other architectures may have attention-free layers (0 heads or 0 key/value
 * heads marks a recurrent layer in several), so only what holds for all is checked there.
 */
const ROPE_TRANSFORMERS: ReadonlySet<string> = new Set(["llama", "mistral3", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "gemma2", "gemma3", "phi3"]);
/**
 * Architectures that make layers sliding-window whatever `sliding_window` says (src/models/*.cpp
 * set the SWA type unconditionally): a window of 0 there masks every position, the token's own
 * included, and attention yields NaN. The others turn sliding windows off at 0.
 */
const ALWAYS_SLIDING: ReadonlySet<string> = new Set([
  "gemma2", "gemma3n", "gemma4", "gemma4-assistant", "gemma-embedding", "cohere2", "cohere2moe", "deepseek4", "dots3note",
  "exaone-moe", "granite_swa", "maple", "mimo2", "muse-glimmer", "gpt-oss", "spark2_5", "step35",
]);
/** Architectures llama.cpp loads without the common hyperparameters (image encoders). */
const NO_COMMON_HPARAMS: ReadonlySet<string> = new Set(["clip"]);

/** Special-token defaults of llama.cpp's tokenizer models (llama-vocab.cpp), -1 for none. */
const TOKENIZER_DEFAULTS: Readonly<Record<string, { bos: number; eos: number; sep: number; addBos: boolean; addEos: boolean; addSep: boolean }>> = {
  llama: { bos: 1, eos: 2, sep: -1, addBos: true, addEos: false, addSep: false },
  bert: { bos: 101, eos: -1, sep: 102, addBos: true, addEos: false, addSep: true },
  t5: { bos: -1, eos: 1, sep: -1, addBos: false, addEos: true, addSep: false },
  rwkv: { bos: -1, eos: -1, sep: -1, addBos: false, addEos: false, addSep: false },
};

/** Integer values of a scalar or array metadata entry (undefined when absent or not integers). */
function intValues(file: Pick<GgufFile, "metadata">, key: string): number[] | undefined {
  const e = file.metadata.get(key);
  if (!e || e.type === GGUF_VALUE_TYPE.STRING || e.type === GGUF_VALUE_TYPE.BOOL) return undefined;
  const raw: unknown[] = e.type === GGUF_VALUE_TYPE.ARRAY ? [...e.value] : [e.value];
  const out: number[] = [];
  for (const v of raw) {
    if (typeof v === "bigint") out.push(Number(v));
    else if (typeof v === "number" && Number.isInteger(v)) out.push(v);
    else return undefined;
  }
  return out;
}

function invalidModel(message: string): LlamemError {
  return new LlamemError("ERR_GGUF_INVALID", `${message} (llama.cpp would abort the process on this file)`);
}

/** A value no model can have, which llama.cpp loads anyway and then runs wrongly. */
function impossible(message: string): LlamemError {
  return new LlamemError("ERR_GGUF_INVALID", `${message}: this header describes no model llama.cpp can run correctly`);
}

/**
 * Checks what llama.cpp does not check gracefully: values its loader or ggml's kernels
 * `GGML_ASSERT` (which aborts the whole process) instead of returning an error, and impossible
 * values it accepts and then computes nonsense with. A file that passes can still fail in
 * llama.cpp, but as an ERR_MODEL_LOAD, not a crash. Mostly only values that are present are
 * checked, so vocabulary-only files and unknown architectures pass; the keys every model needs
 * are required only in a file holding a model's weights.
 *
 * - layers: `<arch>.block_count` in 1..512, `<arch>.nextn_predict_layers` at most that;
 * - experts: `<arch>.expert_count` ≤ 1024, `expert_used_count` in 1..expert_count when there
 *   are experts and 0 when there are none, expert groups consistent;
 * - `<arch>.rope.scaling.type` one of none, linear, yarn, longrope; `<arch>.rope.dimension_count` even;
 * - norm epsilons finite and ≥ 0;
 * - attention heads: `head_count_kv` divides `head_count` (per layer); a `key_length` or
 *   `value_length` of 0 is refused where there are heads; for RoPE transformers (llama, qwen2/3,
 *   gemma/2/3, phi3, …) every layer has heads and key/value heads, and the head size
 *   (`embedding_length / head_count` or `key_length`) is whole, not 0, and even;
 *   `rope.dimension_count` (and its `_swa` twin) is at most the head size it rotates (ggml asserts);
 * - the common hyperparameters every architecture but `clip` needs: `context_length` and
 *   `embedding_length` at least 1 where present, and present (with `block_count`) in a file that
 *   holds a model's weights (`token_embd.weight`); a context length of 0 loads in llama.cpp and
 *   then runs with nothing to size YaRN or the default context from;
 * - sliding windows: a `sliding_window` of 0 where a `sliding_window_pattern` asks for sliding
 *   layers, or in an architecture whose layers slide whatever the key says (gemma2, gpt-oss, …);
 * - tensors: 1-D norm weights and biases in f32; matrices not in a type ggml cannot compute
 *   with (q8_1, q8_K, i8–i64, f64);
 * - tokenizer: at least one token, no duplicate token strings, a BOS/EOS/SEP token whenever the
 *   tokenizer adds one, and a real tokenizer (`none`/`no_vocab` is ERR_UNSUPPORTED).
 *
 * @throws {LlamemError} ERR_GGUF_INVALID, ERR_UNSUPPORTED.
 */
export function checkModel(file: Pick<GgufFile, "metadata" | "tensors">): void {
  for (const _ of checkModelSteps(file)) {
    // run to completion
  }
}

/** {@link checkModel} in steps, so the async reader can let the event loop run in between. @internal */
export function* checkModelSteps(file: Pick<GgufFile, "metadata" | "tensors">): Generator<void, void, void> {
  const arch = metadataString(file, "general.architecture");
  if (arch !== undefined) {
    checkHparams(file, arch);
    checkImpossible(file, arch);
  }
  checkTensorTypes(file);
  yield* checkTokenizer(file);
}

function checkHparams(file: Pick<GgufFile, "metadata">, arch: string): void {
  const k = (name: string) => `${arch}.${name}`;
  const one = (name: string): number | undefined => {
    const v = intValues(file, k(name));
    return v && v.length === 1 ? v[0] : undefined;
  };
  const maxOf = (name: string): number | undefined => {
    const v = intValues(file, k(name));
    return v && v.length > 0 ? Math.max(...v) : undefined;
  };

  const layers = one("block_count");
  if (layers !== undefined && (layers < 1 || layers > LLAMA_MAX_LAYERS)) {
    throw invalidModel(`'${k("block_count")}' is ${layers}; it must be in 1..${LLAMA_MAX_LAYERS}`);
  }
  const nextn = one("nextn_predict_layers");
  if (nextn !== undefined && layers !== undefined && nextn > layers) {
    throw invalidModel(`'${k("nextn_predict_layers")}' is ${nextn}, more than the ${layers} layers`);
  }

  const experts = one("expert_count") ?? 0;
  const used = maxOf("expert_used_count") ?? 0;
  const groups = one("expert_group_count") ?? 0;
  const groupUsed = one("expert_group_used_count") ?? 0;
  if (experts > LLAMA_MAX_EXPERTS) throw invalidModel(`'${k("expert_count")}' is ${experts}, over llama.cpp's limit of ${LLAMA_MAX_EXPERTS}`);
  if (used > experts) throw invalidModel(`'${k("expert_used_count")}' is ${used} but the model has ${experts} experts`);
  if (experts > 0) {
    if (used <= 0) throw invalidModel(`the model has ${experts} experts but '${k("expert_used_count")}' uses none`);
    if (groups >= experts) throw invalidModel(`'${k("expert_group_count")}' is ${groups}, not fewer than the ${experts} experts`);
    if (groups > 1 && (experts % groups !== 0 || groupUsed <= 0 || groupUsed >= groups)) {
      throw invalidModel(`expert groups (${groups} groups of ${experts} experts, ${groupUsed} used) are inconsistent`);
    }
  } else if (groups !== 0) {
    throw invalidModel(`'${k("expert_group_count")}' is ${groups} but the model has no experts`);
  }

  const scaling = metadataString(file, k("rope.scaling.type"));
  if (scaling !== undefined && !ROPE_SCALING_TYPES.has(scaling)) {
    throw invalidModel(`'${k("rope.scaling.type")}' is '${scaling}'; llama.cpp knows ${[...ROPE_SCALING_TYPES].join(", ")}`);
  }
  const ropeDims = one("rope.dimension_count");
  if (ropeDims !== undefined && ropeDims % 2 !== 0) throw invalidModel(`'${k("rope.dimension_count")}' is ${ropeDims}; RoPE needs an even count`);

  for (const name of ["attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon", "attention.group_norm_epsilon"]) {
    const eps = metadataNumber(file, k(name));
    if (eps !== undefined && !(Number.isFinite(eps) && eps >= 0)) throw invalidModel(`'${k(name)}' is ${eps}; it must be a finite number >= 0`);
  }

  const heads = intValues(file, k("attention.head_count"));
  const kvHeads = intValues(file, k("attention.head_count_kv")) ?? heads;
  if (heads && kvHeads) {
    const n = Math.max(heads.length, kvHeads.length);
    for (let i = 0; i < n; i++) {
      const h = heads.length === 1 ? heads[0] : heads[i];
      const kv = kvHeads.length === 1 ? kvHeads[0] : kvHeads[i];
      if (h === undefined || kv === undefined) continue;
      if (h > 0 && kv > 0 && h % kv !== 0) {
        throw invalidModel(`${kv} key/value heads do not divide ${h} attention heads${n > 1 ? ` (layer ${i})` : ""}`);
      }
    }
  }

  if (!ROPE_TRANSFORMERS.has(arch)) return;
  if (heads?.some((h) => h <= 0)) throw invalidModel(`'${k("attention.head_count")}' is ${heads.join(",")}; a ${arch} model needs heads in every layer`);
  if (kvHeads?.some((h) => h <= 0)) throw invalidModel(`'${k("attention.head_count_kv")}' is ${kvHeads.join(",")}; a ${arch} model needs key/value heads in every layer`);
  const nHead = heads?.[0];
  const embd = one("embedding_length");
  for (const [which, key] of [["key", "attention.key_length"], ["value", "attention.value_length"]] as const) {
    const given = one(key);
    if (nHead === undefined || nHead <= 0 || (given === undefined && embd === undefined)) continue;
    if (given === undefined && (embd as number) % nHead !== 0) {
      throw invalidModel(`'${k("embedding_length")}' ${embd} is not a multiple of the ${nHead} attention heads`);
    }
    const headDim = given ?? (embd as number) / nHead;
    if (headDim <= 0) throw impossible(`the attention heads' ${which}s are 0 wide`);
    if (which === "key" && headDim % 2 !== 0) throw invalidModel(`the attention heads are ${headDim} wide; RoPE needs an even head size`);
  }
}

/**
 * Values llama.cpp loads without complaint but no model can have: it then runs wrongly (a
 * context length of 0, NaN from a window that masks everything) or aborts at the first decode
 * (RoPE over more dimensions than a head has).
 */
function checkImpossible(file: Pick<GgufFile, "metadata" | "tensors">, arch: string): void {
  if (NO_COMMON_HPARAMS.has(arch)) return;
  const k = (name: string) => `${arch}.${name}`;
  const one = (name: string): number | undefined => {
    const v = intValues(file, k(name));
    return v && v.length === 1 ? v[0] : undefined;
  };
  // A file with a model's weights is loaded with these keys required (llama_model_base::load_hparams).
  const weights = file.tensors.some((t) => t.name === "token_embd.weight");
  for (const [name, what] of [["context_length", "a trained context"], ["embedding_length", "an embedding width"], ["block_count", "layers"]] as const) {
    const present = file.metadata.has(k(name));
    const v = one(name);
    if (present && v !== undefined && v < 1) throw impossible(`'${k(name)}' is ${v}; a model has ${what} of at least 1`);
    if (!present && weights) throw impossible(`'${k(name)}' is missing; llama.cpp needs it to load a ${arch} model`);
  }

  // RoPE rotates dimension pairs within a head: ggml asserts n_dims <= the head's width.
  const heads = intValues(file, k("attention.head_count"));
  const nHead = heads?.[0];
  const embd = one("embedding_length");
  const keyLength = one("attention.key_length") ?? (nHead !== undefined && nHead > 0 && embd !== undefined ? Math.floor(embd / nHead) : undefined);
  if (heads?.some((h) => h > 0)) {
    for (const name of ["attention.key_length", "attention.value_length", "attention.key_length_swa", "attention.value_length_swa"]) {
      if (one(name) === 0) throw impossible(`'${k(name)}' is 0 but the model has attention heads`);
    }
  }
  const rope = one("rope.dimension_count");
  if (rope !== undefined && keyLength !== undefined && keyLength > 0 && rope > keyLength) {
    throw invalidModel(`'${k("rope.dimension_count")}' is ${rope}, more than the ${keyLength}-wide attention heads it rotates`);
  }
  const ropeSwa = one("rope.dimension_count_swa");
  const keySwa = one("attention.key_length_swa") ?? keyLength;
  if (ropeSwa !== undefined && keySwa !== undefined && keySwa > 0 && ropeSwa > keySwa) {
    throw invalidModel(`'${k("rope.dimension_count_swa")}' is ${ropeSwa}, more than the ${keySwa}-wide sliding-window heads it rotates`);
  }

  // A sliding window of 0 in layers that slide: every position is masked, even the token's own.
  const window = one("attention.sliding_window");
  if (window === 0) {
    const pattern = file.metadata.get(k("attention.sliding_window_pattern"));
    let sliding: boolean | undefined;
    if (pattern?.type === GGUF_VALUE_TYPE.ARRAY) sliding = (pattern.value as readonly unknown[]).some((v) => v === true || (typeof v === "number" && v !== 0));
    else if (pattern !== undefined) {
      const n = intValues(file, k("attention.sliding_window_pattern"))?.[0];
      // llama_hparams::set_swa_pattern: 0 makes every layer slide, 1 none, n the first n-1 of every n.
      if (n !== undefined) sliding = n !== 1;
    }
    if (sliding === true || (sliding === undefined && ALWAYS_SLIDING.has(arch))) {
      throw impossible(`'${k("attention.sliding_window")}' is 0 but ${sliding ? `'${k("attention.sliding_window_pattern")}' makes layers slide` : `${arch} layers slide`}; a window must hold at least the token itself`);
    }
  }
}

function checkTensorTypes(file: Pick<GgufFile, "tensors">): void {
  for (const t of file.tensors) {
    if (t.dims.length === 1 && (t.name.endsWith("norm.weight") || t.name.endsWith(".bias")) && t.type !== GGML_TYPE.F32) {
      throw invalidModel(`tensor '${t.name}' is ${t.typeName}; norm weights and biases must be f32`);
    }
    if (t.dims.length >= 2 && t.name.endsWith(".weight") && NO_COMPUTE_TYPES.has(t.type)) {
      throw invalidModel(`tensor '${t.name}' is ${t.typeName}, a type ggml cannot compute with`);
    }
  }
}

function* checkTokenizer(file: Pick<GgufFile, "metadata">): Generator<void, void, void> {
  const model = metadataString(file, "tokenizer.ggml.model");
  if (model === "none" || model === "no_vocab") {
    throw new LlamemError("ERR_UNSUPPORTED", "this model has no tokenizer (tokenizer.ggml.model is '" + model + "'); llamem needs one to turn text into tokens and back");
  }
  const entry = file.metadata.get("tokenizer.ggml.tokens");
  if (!entry || entry.type !== GGUF_VALUE_TYPE.ARRAY || entry.itemType !== GGUF_VALUE_TYPE.STRING) return;
  const tokens = entry.value as readonly string[];
  if (tokens.length === 0) throw invalidModel("'tokenizer.ggml.tokens' is empty");
  // llama.cpp reads each token as a C string (up to the first NUL), renames empty ones, then
  // requires every text to name exactly one token.
  const textOf = (i: number): string => {
    const raw = tokens[i] as string;
    const nul = raw.indexOf("\0");
    const cut = nul >= 0 ? raw.slice(0, nul) : raw;
    return cut === "" ? `[EMPTY_${i}]` : cut;
  };
  const seen = new Set<string>();
  for (let i = 0; i < tokens.length; i++) {
    if ((i & (TICK_EVERY - 1)) === TICK_EVERY - 1) yield;
    const text = textOf(i);
    if (seen.has(text)) {
      let prev = 0;
      while (textOf(prev) !== text) prev++;
      throw invalidModel(`tokens ${prev} and ${i} are both '${text.slice(0, 40)}'; token texts must be unique`);
    }
    seen.add(text);
  }
  const defaults = model !== undefined ? TOKENIZER_DEFAULTS[model] : undefined;
  if (!defaults) return;
  const n = tokens.length;
  const flag = (key: string, fallback: boolean): boolean => {
    const e = file.metadata.get(key);
    return e && e.type === GGUF_VALUE_TYPE.BOOL ? e.value : fallback;
  };
  const resolve = (key: string, fallback: number): number => {
    const id = intValues(file, key);
    const explicit = id && id.length === 1 ? (id[0] as number) : undefined;
    if (explicit !== undefined && explicit >= 0 && explicit < n) return explicit;
    return fallback >= 0 && fallback < n ? fallback : -1;
  };
  const special: [string, boolean, number][] = [
    ["BOS", flag("tokenizer.ggml.add_bos_token", defaults.addBos), resolve("tokenizer.ggml.bos_token_id", defaults.bos)],
    ["EOS", flag("tokenizer.ggml.add_eos_token", defaults.addEos), resolve("tokenizer.ggml.eos_token_id", defaults.eos)],
    ["SEP", flag("tokenizer.ggml.add_sep_token", defaults.addSep), resolve("tokenizer.ggml.seperator_token_id", defaults.sep)],
  ];
  for (const [what, adds, id] of special) {
    if (adds && id < 0) throw invalidModel(`the tokenizer adds a ${what} token but the ${n}-token vocabulary has none`);
  }
}
