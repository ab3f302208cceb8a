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
  type GgufFile,
  type GgufMetadataEntry,
} from "../gguf/format.js";
import { readGguf } from "../gguf/read.js";
import { estimateMemory as estimate } from "../memory/estimate.js";
import { DEFAULTS, type KvCacheType } from "../options.js";
import { formatBytes, formatCount, formatTable, styleFor } from "./output.js";

/**
 * KV cache types the memory table covers: a display choice (the common ones), not the list of
 * types a context accepts, which is KV_CACHE_TYPE_NAMES in lib/options.ts.
 */
const ESTIMATE_KV_TYPES = ["f16", "q8_0", "q4_0"] as const satisfies readonly KvCacheType[];

/** A KV cache type in the estimate. */
export type EstimateKvType = (typeof ESTIMATE_KV_TYPES)[number];

/** Context sizes the estimate shows, clipped at the trained length. */
const ESTIMATE_CONTEXT_SIZES = [2048, 8192, 32768] as const;

/** Arrays longer than this are printed as { type, length } in --json. */
const JSON_ARRAY_MAX = 256;

/** One row of the memory table. */
export interface MemoryEstimateRow {
  contextSize: number;
  kvType: EstimateKvType;
  /** Weights as llama.cpp would place them (repacked weights included). */
  weightsBytes: number;
  /** K and V for all layers at this context size. */
  kvCacheBytes: number;
  /** Compute buffers for a batch of the default size (DEFAULTS.batchSize, 512). */
  computeBytes: number;
  /** Weights plus KV cache plus compute buffers. */
  totalBytes: number;
}

/** The memory table: llama.cpp's dry run on the CPU for a few context sizes and KV types. */
export interface MemoryTable {
  /** What the numbers are. */
  note: string;
  rows: MemoryEstimateRow[];
  /** Why some or all rows are missing. */
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
  memoryEstimate: MemoryTable;
}

const ESTIMATE_NOTE =
  `llama.cpp's own dry run (no_alloc) on the CPU for each context size and KV type: weights as placed (repacked ones included), KV cache, compute buffers for a batch of ${DEFAULTS.batchSize}`;

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


/**
 * The memory table: for each context size (clipped at the trained length) and KV type, the
 * bytes llama.cpp's own dry run (no_alloc) sizes for weights, KV cache and compute buffers on
 * the CPU. Nothing is allocated; only the header is read.
 */
export async function memoryTable(path: string, trained: number | null): Promise<MemoryTable> {
  const sizes = [...new Set([...ESTIMATE_CONTEXT_SIZES, ...(trained ? [trained] : [])].map((c) => (trained ? Math.min(c, trained) : c)))].sort(
    (a, b) => a - b,
  );
  const rows: MemoryEstimateRow[] = [];
  const skipped: string[] = [];
  for (const kvType of ESTIMATE_KV_TYPES) {
    for (const contextSize of sizes) {
      try {
        // A quantized V cache needs flash attention.
        const est = await estimate(path, { contextSize, kvType, flashAttention: kvType === "f16" ? "auto" : "on" });
        rows.push({ contextSize, kvType, weightsBytes: est.weights, kvCacheBytes: est.kv, computeBytes: est.compute, totalBytes: est.total });
      } catch (err) {
        skipped.push(`${kvType}: ${err instanceof Error ? err.message : String(err)}`);
        break;
      }
    }
  }
  rows.sort((a, b) => a.contextSize - b.contextSize || ESTIMATE_KV_TYPES.indexOf(a.kvType) - ESTIMATE_KV_TYPES.indexOf(b.kvType));
  return { note: ESTIMATE_NOTE, rows, ...(skipped.length > 0 ? { unavailable: skipped.join("; ") } : {}) };
}

/** Builds the report of `inspect` from a parsed header. */
export function describeFile(file: GgufFile): InspectSummary {
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
    memoryEstimate: { note: ESTIMATE_NOTE, rows: [] },
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
  lines.push(style.bold("Memory") + ` (llama.cpp's dry run on the CPU: nothing loaded; batch ${DEFAULTS.batchSize})`);
  if (m.rows.length > 0) {
    const table: string[][] = [["context", "kv type", "weights", "kv cache", "compute", "total"].map((c) => style.dim(c))];
    for (const r of m.rows) {
      table.push([String(r.contextSize), r.kvType, formatBytes(r.weightsBytes), formatBytes(r.kvCacheBytes), formatBytes(r.computeBytes), formatBytes(r.totalBytes)]);
    }
    lines.push(formatTable(table, "  "));
  }
  if (m.unavailable) lines.push(`  not available: ${m.unavailable}`);
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
      const summary = describeFile(file);
      summary.memoryEstimate = await memoryTable(path, summary.hparams.contextLength);
      if (options.json) {
        const metadata: Record<string, JsonValue> = {};
        for (const [k, entry] of file.metadata) metadata[k] = metadataToJson(entry);
        process.stdout.write(JSON.stringify({ ...summary, metadata }, null, 2) + "\n");
      } else {
        process.stdout.write(renderText(summary));
      }
    });
}
