/**
 * The GGUF format itself: magic, version and limits, metadata value types, the ggml tensor type
 * table, and the shapes of a parsed file ({@link GgufFile}, {@link GgufTensorInfo}) with small
 * typed accessors over its metadata. Pure data: no I/O, nothing from the inference stack.
 *
 * @packageDocumentation
 */
import { LlamemError } from "../errors.js";

/** The four bytes every GGUF file starts with. */
export const GGUF_MAGIC = "GGUF";
/** The newest GGUF version llama.cpp writes and reads. */
export const GGUF_VERSION = 3;
/** Tensor data alignment when `general.alignment` is absent. */
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** The metadata key that overrides the tensor data alignment (must be a uint32). */
export const GGUF_KEY_ALIGNMENT = "general.alignment";
/** llama.cpp rejects longer strings (1 GiB). */
export const GGUF_MAX_STRING_LENGTH = 1024 * 1024 * 1024;
/** llama.cpp rejects longer arrays (1 Gi elements). */
export const GGUF_MAX_ARRAY_ELEMENTS = 1024 * 1024 * 1024;
/** ggml's tensor name buffer is 64 bytes including the terminating NUL. */
export const GGML_MAX_NAME = 64;
/** ggml tensors have at most four dimensions. */
export const GGML_MAX_DIMS = 4;

/** GGUF metadata value type ids (`enum gguf_type`). */
export const GGUF_VALUE_TYPE = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** Any GGUF metadata value type id. */
export type GgufValueType = (typeof GGUF_VALUE_TYPE)[keyof typeof GGUF_VALUE_TYPE];
/** Value types that decode to a JS `number`. */
export type GgufNumberType = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 12;
/** 64-bit integer value types: decoded as `number` when safe, else `bigint`. */
export type GgufBigIntType = 10 | 11;
/** Every value type except ARRAY (arrays of arrays are not accepted by llama.cpp). */
export type GgufScalarType = GgufNumberType | GgufBigIntType | 7 | 8;

/** One scalar metadata value together with its GGUF type. */
export type GgufScalarEntry =
  | { readonly type: GgufNumberType; readonly value: number }
  | { readonly type: GgufBigIntType; readonly value: number | bigint }
  | { readonly type: 7; readonly value: boolean }
  | { readonly type: 8; readonly value: string };

/** One array metadata value together with its element type. */
export type GgufArrayEntry =
  | { readonly type: 9; readonly itemType: GgufNumberType; readonly value: readonly number[] }
  | { readonly type: 9; readonly itemType: GgufBigIntType; readonly value: readonly (number | bigint)[] }
  | { readonly type: 9; readonly itemType: 7; readonly value: readonly boolean[] }
  | { readonly type: 9; readonly itemType: 8; readonly value: readonly string[] };

/**
 * A typed metadata value. uint64/int64 values (scalars and array items) are a `number` when
 * they fit `Number.isSafeInteger`, else a `bigint`; floats are exact (float32 widened to number).
 * Strings are decoded as UTF-8 (an invalid sequence would become U+FFFD).
 */
export type GgufMetadataEntry = GgufScalarEntry | GgufArrayEntry;

/** Names of the GGUF value types, as llama.cpp prints them. */
export const GGUF_VALUE_TYPE_NAMES: readonly string[] = [
  "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64",
];

/** A ggml tensor type: id, name, elements per block and bytes per block. */
export interface GgmlTypeInfo {
  /** The `enum ggml_type` id stored in GGUF tensor infos. */
  readonly id: number;
  /** ggml's name for the type (e.g. "q4_0", "q4_K"). */
  readonly name: string;
  /** Elements per block; a row length must be a multiple of it. */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly typeSize: number;
}

/** ggml type ids for the types llama.cpp can load from a GGUF file. */
export const GGML_TYPE = {
  F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q8_1: 9,
  Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, Q8_K: 15,
  IQ2_XXS: 16, IQ2_XS: 17, IQ3_XXS: 18, IQ1_S: 19, IQ4_NL: 20, IQ3_S: 21, IQ2_S: 22, IQ4_XS: 23,
  I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, IQ1_M: 29, BF16: 30,
  TQ1_0: 34, TQ2_0: 35, MXFP4: 39, NVFP4: 40, Q1_0: 41, Q2_0: 42,
} as const;

/** One past the largest ggml type id of the pinned llama.cpp (`GGML_TYPE_COUNT`). */
export const GGML_TYPE_COUNT = 43;

const QK_K = 256;

/**
 * Every ggml type a GGUF file may use, from ggml.c's type traits of the pinned llama.cpp.
 * Ids 4, 5 (old q4_2/q4_3), 31–33 and 36–38 (removed repacked layouts) are absent on purpose:
 * llama.cpp gives them a block size of 0, so files using them are invalid.
 */
export const GGML_TYPES: readonly GgmlTypeInfo[] = Object.freeze([
  { id: 0, name: "f32", blockSize: 1, typeSize: 4 },
  { id: 1, name: "f16", blockSize: 1, typeSize: 2 },
  { id: 2, name: "q4_0", blockSize: 32, typeSize: 2 + 16 },
  { id: 3, name: "q4_1", blockSize: 32, typeSize: 2 + 2 + 16 },
  { id: 6, name: "q5_0", blockSize: 32, typeSize: 2 + 4 + 16 },
  { id: 7, name: "q5_1", blockSize: 32, typeSize: 2 + 2 + 4 + 16 },
  { id: 8, name: "q8_0", blockSize: 32, typeSize: 2 + 32 },
  { id: 9, name: "q8_1", blockSize: 32, typeSize: 2 + 2 + 32 },
  { id: 10, name: "q2_K", blockSize: QK_K, typeSize: 2 + 2 + QK_K / 16 + QK_K / 4 },
  { id: 11, name: "q3_K", blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 8 + 12 },
  { id: 12, name: "q4_K", blockSize: QK_K, typeSize: 2 + 2 + 12 + QK_K / 2 },
  { id: 13, name: "q5_K", blockSize: QK_K, typeSize: 2 + 2 + 12 + QK_K / 2 + QK_K / 8 },
  { id: 14, name: "q6_K", blockSize: QK_K, typeSize: 2 + QK_K / 16 + (3 * QK_K) / 4 },
  { id: 15, name: "q8_K", blockSize: QK_K, typeSize: 4 + QK_K + (QK_K / 16) * 2 },
  { id: 16, name: "iq2_xxs", blockSize: QK_K, typeSize: 2 + QK_K / 4 },
  { id: 17, name: "iq2_xs", blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 32 },
  { id: 18, name: "iq3_xxs", blockSize: QK_K, typeSize: 2 + (3 * QK_K) / 8 },
  { id: 19, name: "iq1_s", blockSize: QK_K, typeSize: 2 + QK_K / 8 + QK_K / 16 },
  { id: 20, name: "iq4_nl", blockSize: 32, typeSize: 2 + 16 },
  { id: 21, name: "iq3_s", blockSize: QK_K, typeSize: 2 + (13 * QK_K) / 32 + QK_K / 64 },
  { id: 22, name: "iq2_s", blockSize: QK_K, typeSize: 2 + QK_K / 4 + QK_K / 16 },
  { id: 23, name: "iq4_xs", blockSize: QK_K, typeSize: 2 + 2 + QK_K / 64 + QK_K / 2 },
  { id: 24, name: "i8", blockSize: 1, typeSize: 1 },
  { id: 25, name: "i16", blockSize: 1, typeSize: 2 },
  { id: 26, name: "i32", blockSize: 1, typeSize: 4 },
  { id: 27, name: "i64", blockSize: 1, typeSize: 8 },
  { id: 28, name: "f64", blockSize: 1, typeSize: 8 },
  { id: 29, name: "iq1_m", blockSize: QK_K, typeSize: QK_K / 8 + QK_K / 16 + QK_K / 32 },
  { id: 30, name: "bf16", blockSize: 1, typeSize: 2 },
  { id: 34, name: "tq1_0", blockSize: QK_K, typeSize: 2 + 4 * 13 },
  { id: 35, name: "tq2_0", blockSize: QK_K, typeSize: 2 + QK_K / 4 },
  { id: 39, name: "mxfp4", blockSize: 32, typeSize: 1 + 16 },
  { id: 40, name: "nvfp4", blockSize: 64, typeSize: 4 + 32 },
  { id: 41, name: "q1_0", blockSize: 128, typeSize: 2 + 128 / 8 },
  { id: 42, name: "q2_0", blockSize: 64, typeSize: 2 + 64 / 4 },
].map((t) => Object.freeze(t)));

const TYPE_BY_ID: readonly (GgmlTypeInfo | undefined)[] = (() => {
  const table: (GgmlTypeInfo | undefined)[] = new Array<GgmlTypeInfo | undefined>(GGML_TYPE_COUNT).fill(undefined);
  for (const t of GGML_TYPES) table[t.id] = t;
  return table;
})();

/** The ggml type with this id, or undefined when llama.cpp cannot load it from a file. */
export function ggmlTypeInfo(id: number): GgmlTypeInfo | undefined {
  return Number.isInteger(id) && id >= 0 && id < GGML_TYPE_COUNT ? TYPE_BY_ID[id] : undefined;
}

/** The ggml type with this name (case-insensitive, e.g. "Q4_K_M" is not a type but "q4_k" is). */
export function ggmlTypeByName(name: string): GgmlTypeInfo | undefined {
  const lower = name.toLowerCase();
  return GGML_TYPES.find((t) => t.name.toLowerCase() === lower);
}

/**
 * Bytes a tensor of this type and shape occupies (unpadded), or throws ERR_INVALID_ARGUMENT when
 * the type is unknown or the row length (`dims[0]`) is not a multiple of the block size.
 */
export function tensorByteSize(type: number, dims: readonly number[]): number {
  const info = ggmlTypeInfo(type);
  if (!info) throw new LlamemError("ERR_INVALID_ARGUMENT", `unknown ggml type ${type}`);
  let elements = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d <= 0) throw new LlamemError("ERR_INVALID_ARGUMENT", `invalid tensor dimension ${d}`);
    elements *= d;
  }
  const ne0 = dims[0] ?? 1;
  if (ne0 % info.blockSize !== 0) {
    throw new LlamemError("ERR_INVALID_ARGUMENT",
      `row length ${ne0} is not a multiple of the ${info.name} block size ${info.blockSize}`);
  }
  const size = (elements / info.blockSize) * info.typeSize;
  if (!Number.isSafeInteger(size)) throw new LlamemError("ERR_INVALID_ARGUMENT", "tensor size is too large");
  return size;
}

/** One tensor's info from the header. */
export interface GgufTensorInfo {
  /** The tensor name (e.g. "blk.0.attn_q.weight"). */
  readonly name: string;
  /** Dimensions in ggml order: `dims[0]` (ne0) is the row length. */
  readonly dims: readonly number[];
  /** The ggml type id. */
  readonly type: number;
  /** The ggml type name (e.g. "q4_0"). */
  readonly typeName: string;
  /** Absolute file offset of the tensor's first byte. */
  readonly offset: number;
  /** Size of the tensor's data in bytes (without alignment padding). */
  readonly size: number;
  /** Number of elements (product of dims). */
  readonly elements: number;
}

/** A parsed and validated GGUF header. */
export interface GgufFile {
  /** The path that was read. */
  readonly path: string;
  /** GGUF version (2 or 3). */
  readonly version: number;
  /** Tensor data alignment in bytes. */
  readonly alignment: number;
  /** All metadata entries, in file order. */
  readonly metadata: ReadonlyMap<string, GgufMetadataEntry>;
  /** All tensor infos, in file order. */
  readonly tensors: readonly GgufTensorInfo[];
  /** Offset just past the last tensor info (before the alignment padding). */
  readonly headerSize: number;
  /** Absolute offset of the tensor data section. */
  readonly dataOffset: number;
  /** Size of the file in bytes. */
  readonly fileSize: number;
}

// ---------------------------------------------------------------------------------------------
// Metadata accessors.

/** The string value of `key`, or undefined when the key is absent or not a string. */
export function metadataString(file: Pick<GgufFile, "metadata">, key: string): string | undefined {
  const e = file.metadata.get(key);
  return e && e.type === GGUF_VALUE_TYPE.STRING ? e.value : undefined;
}

/**
 * The numeric value of `key` (any integer or float type), or undefined when the key is absent,
 * not a number, or a 64-bit integer outside the safe integer range.
 */
export function metadataNumber(file: Pick<GgufFile, "metadata">, key: string): number | undefined {
  const e = file.metadata.get(key);
  if (!e || e.type === GGUF_VALUE_TYPE.ARRAY || e.type === GGUF_VALUE_TYPE.STRING || e.type === GGUF_VALUE_TYPE.BOOL) return undefined;
  return typeof e.value === "number" ? e.value : undefined;
}

/** The element count of the array at `key`, or undefined when the key is absent or not an array. */
export function metadataArrayLength(file: Pick<GgufFile, "metadata">, key: string): number | undefined {
  const e = file.metadata.get(key);
  return e && e.type === GGUF_VALUE_TYPE.ARRAY ? e.value.length : undefined;
}
