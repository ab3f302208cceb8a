/**
 * `llamem inspect <model.gguf>`: what a GGUF file is, from its header alone (no model load, so
 * it is instant even for a 100 GB file and works for architectures llama.cpp cannot run).
 */
import { Command } from "commander";
import {
  GGUF_VALUE_TYPE,
  GGUF_VALUE_TYPE_NAMES,
  metadataArrayLength,
  metadataNumber,
  metadataString,
  readGguf,
  type GgufFile,
  type GgufMetadataEntry,
} from "../gguf.js";
import { formatBytes, formatCount, formatTable, styleFor } from "./output.js";

/** KV cache types the estimate covers, with bytes per element (q8_0: 34 bytes per 32, q4_0: 18 per 32). */
const KV_BYTES_PER_ELEMENT = { f16: 2, q8_0: 34 / 32, q4_0: 18 / 32 } as const;

/** A KV cache type in the estimate. */
export type EstimateKvType = keyof typeof KV_BYTES_PER_ELEMENT;

/** Context sizes the estimate shows, clipped at the trained length. */
const ESTIMATE_CONTEXT_SIZES = [2048, 8192, 32768] as const;

/** Arrays longer than this are printed as { type, length } in --json. */
const JSON_ARRAY_MAX = 256;

/** One row of the memory estimate. */
export interface MemoryEstimateRow {
  contextSize: number;
  kvType: EstimateKvType;
  /** K and V for all layers at this context size. */
  kvCacheBytes: number;
  /** Weights plus KV cache. */
  totalBytes: number;
}

/** The header-based memory estimate; `rows` is empty when the header lacks what it needs. */
export interface MemoryEstimate {
  /** What the numbers are and what they leave out. */
  note: string;
  /** Sum of the tensor sizes in the file. */
  weightsBytes: number;
  rows: MemoryEstimateRow[];
  /** Why there are no rows, when there are none. */
  unavailable?: string;
}

/** The architecture hyperparameters `inspect` shows (null when the header lacks them). */
export interface InspectHparams {
  contextLength: number | null;
  embeddingLength: number | null;
  blockCount: number | null;
  /** A number, or one per layer for models that vary it. */
  headCount: number | number[] | null;
  headCountKv: number | number[] | null;
  /** Length of tokenizer.ggml.tokens. */
  vocabSize: number | null;
}

/** Everything `inspect` reports except the raw metadata. */
export interface InspectSummary {
  path: string;
  fileSize: number;
  ggufVersion: number;
  alignment: number;
  architecture: string | null;
  name: string | null;
  tensorCount: number;
  /** Tensor counts by ggml type name. */
  tensorTypes: Record<string, number>;
  /** Sum of the tensor element counts. */
  parameters: number;
  hparams: InspectHparams;
  chatTemplate: boolean;
  memoryEstimate: MemoryEstimate;
}

const ESTIMATE_NOTE =
  "estimate from the GGUF header: weights (sum of tensor sizes) + KV cache " +
  "(layers x context x KV width x 2 x bytes per element); compute buffers and runtime overhead are not included";

/** A number or per-layer numbers for `key`, or null. */
function numberOrPerLayer(file: GgufFile, key: string): number | number[] | null {
  const e = file.metadata.get(key);
  if (!e) return null;
  if (e.type === GGUF_VALUE_TYPE.ARRAY) {
    const values = e.value.map((v) => (typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : NaN));
    return values.every((v) => Number.isFinite(v)) ? values : null;
  }
  return metadataNumber(file, key) ?? null;
}

function perLayer(value: number | number[] | null, layers: number): number[] | undefined {
  if (value === null) return undefined;
  if (typeof value === "number") return new Array<number>(layers).fill(value);
  return value.length === layers ? value : undefined;
}

/**
 * Estimates the memory of a model at a few context sizes from its header: weights plus a KV
 * cache of n_layer x ctx x n_embd_kv x 2 (K and V) elements, where n_embd_kv is
 * (embedding_length / head_count) x head_count_kv (or key_length / value_length x head_count_kv
 * when the header gives them).
 */
export function estimateMemory(file: GgufFile, h: InspectHparams, arch: string | null): MemoryEstimate {
  const weightsBytes = file.tensors.reduce((s, t) => s + t.size, 0);
  const none = (why: string): MemoryEstimate => ({ note: ESTIMATE_NOTE, weightsBytes, rows: [], unavailable: why });
  const layers = h.blockCount;
  if (!arch || !layers || !h.embeddingLength) return none("the header lacks block_count or embedding_length");
  const heads = perLayer(h.headCount, layers);
  const kvHeads = perLayer(h.headCountKv ?? h.headCount, layers);
  if (!heads || !kvHeads) return none("the header lacks attention.head_count");
  const embd = h.embeddingLength;
  const keyLength = metadataNumber(file, `${arch}.attention.key_length`);
  const valueLength = metadataNumber(file, `${arch}.attention.value_length`);
  // K and V elements per token summed over layers.
  let perToken = 0;
  for (let i = 0; i < layers; i++) {
    const nHead = heads[i] ?? 0;
    const nKv = kvHeads[i] ?? 0;
    if (nKv === 0) continue; // a layer without attention (hybrid models) holds no KV
    if (nHead === 0) return none("attention.head_count is 0 for an attention layer");
    const headDim = embd / nHead;
    perToken += nKv * ((keyLength ?? headDim) + (valueLength ?? headDim));
  }
  const trained = h.contextLength;
  const sizes = [...new Set([...ESTIMATE_CONTEXT_SIZES, ...(trained ? [trained] : [])].map((c) => (trained ? Math.min(c, trained) : c)))].sort(
    (a, b) => a - b,
  );
  const rows: MemoryEstimateRow[] = [];
  for (const contextSize of sizes) {
    for (const kvType of Object.keys(KV_BYTES_PER_ELEMENT) as EstimateKvType[]) {
      const kvCacheBytes = Math.ceil(perToken * contextSize * KV_BYTES_PER_ELEMENT[kvType]);
      rows.push({ contextSize, kvType, kvCacheBytes, totalBytes: weightsBytes + kvCacheBytes });
    }
  }
  return { note: ESTIMATE_NOTE, weightsBytes, rows };
}

/** Builds the report of `inspect` from a parsed header. */
export function summarize(file: GgufFile): InspectSummary {
  const arch = metadataString(file, "general.architecture") ?? null;
  const key = (k: string) => (arch ? `${arch}.${k}` : k);
  const hparams: InspectHparams = {
    contextLength: metadataNumber(file, key("context_length")) ?? null,
    embeddingLength: metadataNumber(file, key("embedding_length")) ?? null,
    blockCount: metadataNumber(file, key("block_count")) ?? null,
    headCount: numberOrPerLayer(file, key("attention.head_count")),
    headCountKv: numberOrPerLayer(file, key("attention.head_count_kv")),
    vocabSize: metadataArrayLength(file, "tokenizer.ggml.tokens") ?? null,
  };
  const tensorTypes: Record<string, number> = {};
  let parameters = 0;
  for (const t of file.tensors) {
    tensorTypes[t.typeName] = (tensorTypes[t.typeName] ?? 0) + 1;
    parameters += t.elements;
  }
  return {
    path: file.path,
    fileSize: file.fileSize,
    ggufVersion: file.version,
    alignment: file.alignment,
    architecture: arch,
    name: metadataString(file, "general.name") ?? null,
    tensorCount: file.tensors.length,
    tensorTypes,
    parameters,
    hparams,
    chatTemplate: metadataString(file, "tokenizer.chat_template") !== undefined,
    memoryEstimate: estimateMemory(file, hparams, arch),
  };
}

type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

function jsonScalar(v: number | bigint | boolean | string): JsonValue {
  if (typeof v === "bigint") return v.toString();
  // JSON has no NaN or Infinity; a string keeps the information.
  if (typeof v === "number" && !Number.isFinite(v)) return String(v);
  return v;
}

/** A metadata value as JSON: 64-bit integers as strings, long arrays as { type, length }. */
export function metadataToJson(entry: GgufMetadataEntry): JsonValue {
  if (entry.type !== GGUF_VALUE_TYPE.ARRAY) return jsonScalar(entry.value);
  const type = GGUF_VALUE_TYPE_NAMES[entry.itemType] ?? String(entry.itemType);
  if (entry.value.length > JSON_ARRAY_MAX) return { type, length: entry.value.length };
  return (entry.value as readonly (number | bigint | boolean | string)[]).map(jsonScalar);
}

function showPerLayer(v: number | number[] | null): string {
  if (v === null) return "-";
  if (typeof v === "number") return String(v);
  const min = Math.min(...v);
  const max = Math.max(...v);
  return min === max ? String(min) : `${min}..${max} (per layer)`;
}

function showNumber(v: number | null): string {
  return v === null ? "-" : String(v);
}

function renderText(s: InspectSummary): string {
  const style = styleFor(process.stdout);
  const types = Object.entries(s.tensorTypes)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([t, n]) => `${t} ${n}`)
    .join(", ");
  const h = s.hparams;
  const facts: [string, string][] = [
    ["architecture", s.architecture ?? "-"],
    ["name", s.name ?? "-"],
    ["file size", `${formatBytes(s.fileSize)} (${s.fileSize} bytes)`],
    ["gguf version", String(s.ggufVersion)],
    ["tensors", `${s.tensorCount}${types ? ` (${types})` : ""}`],
    ["parameters", `${formatCount(s.parameters)} (${s.parameters})`],
    ["context length", showNumber(h.contextLength)],
    ["embedding length", showNumber(h.embeddingLength)],
    ["blocks", showNumber(h.blockCount)],
    ["heads", showPerLayer(h.headCount)],
    ["kv heads", showPerLayer(h.headCountKv ?? h.headCount)],
    ["vocab size", showNumber(h.vocabSize)],
    ["chat template", s.chatTemplate ? "yes" : "no"],
  ];
  const lines = [style.bold(s.path), formatTable(facts.map(([k, v]) => [style.dim(k), v]), "  "), ""];
  const m = s.memoryEstimate;
  lines.push(style.bold("Memory estimate") + " (from the header, not a measurement)");
  lines.push(`  weights ${formatBytes(m.weightsBytes)} + KV cache; compute buffers and runtime overhead not included`);
  if (m.rows.length === 0) {
    lines.push(`  unavailable: ${m.unavailable ?? "not enough metadata"}`);
  } else {
    const table: string[][] = [["context", "kv type", "kv cache", "total"].map((c) => style.dim(c))];
    for (const r of m.rows) table.push([String(r.contextSize), r.kvType, formatBytes(r.kvCacheBytes), formatBytes(r.totalBytes)]);
    lines.push(formatTable(table, "  "));
  }
  return lines.join("\n") + "\n";
}

/** Registers `llamem inspect`. */
export function registerInspect(program: Command): Command {
  return program
    .command("inspect")
    .summary("show what a GGUF file is, from its header")
    .description(
      "Show a GGUF file's architecture, tensors, hyperparameters and a memory estimate, reading only its header\n" +
        "(the model is not loaded). With --json, also every metadata entry.",
    )
    .argument("<model>", "GGUF model file")
    .option("--json", "print one JSON object (64-bit integers as strings, long arrays as { type, length })")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem inspect model.gguf
  $ llamem inspect model.gguf --json | jq '.metadata["general.name"]'`,
    )
    .action(async (path: string, options: { json?: boolean }) => {
      const file = await readGguf(path);
      const summary = summarize(file);
      if (options.json) {
        const metadata: Record<string, JsonValue> = {};
        for (const [k, entry] of file.metadata) metadata[k] = metadataToJson(entry);
        process.stdout.write(JSON.stringify({ ...summary, metadata }, null, 2) + "\n");
      } else {
        process.stdout.write(renderText(summary));
      }
    });
}
