/**
 * A GGUF header reader. It checks a file the way llama.cpp's loader would (and a little more
 * strictly), so that a broken file becomes a {@link LlamemError} here instead of an abort or an
 * out-of-bounds read in native code, and it backs `inspect`.
 *
 * Only the header (metadata and tensor infos) is read, through a file descriptor with bounded,
 * buffered reads; tensor data is never touched, so a 16 GB model costs a few reads.
 *
 * @packageDocumentation
 */
import { closeSync, fstatSync, openSync, readSync, statSync } from "node:fs";
import type { Stats } from "node:fs";
import { open, stat } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { LlamemError } from "./errors.js";

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
// Buffered cursor. The parser is a generator that yields "I need n contiguous bytes" only when
// the buffer runs short, so one parser serves both the sync and the async entry points.

const CHUNK = 1 << 20;
const TWO_32 = 4294967296;

class Cursor {
  buf: Buffer = Buffer.alloc(0);
  /** File offset of buf[0]. */
  base = 0;
  pos = 0;
  end = 0;

  constructor(readonly fileSize: number) {}

  get offset(): number {
    return this.base + this.pos;
  }
  get avail(): number {
    return this.end - this.pos;
  }
  /** Bytes between the cursor and the end of the file. */
  get left(): number {
    return this.fileSize - this.offset;
  }

  /** Makes room for `need` bytes and returns where and how much to read next. */
  prepare(need: number): { at: number; len: number; filePos: number } {
    const keep = this.end - this.pos;
    // Grow geometrically up to CHUNK so small files need one small read and big headers few reads.
    const want = Math.max(need, Math.min(CHUNK, Math.max(64 * 1024, this.buf.length * 2)));
    if (this.buf.length < want) {
      const next = Buffer.allocUnsafe(want);
      this.buf.copy(next, 0, this.pos, this.end);
      this.buf = next;
    } else if (this.pos > 0) {
      this.buf.copy(this.buf, 0, this.pos, this.end);
    }
    this.base += this.pos;
    this.pos = 0;
    this.end = keep;
    const filePos = this.base + this.end;
    const len = Math.min(this.buf.length - this.end, this.fileSize - filePos);
    return { at: this.end, len: Math.max(0, len), filePos };
  }

  u8(): number {
    return this.buf[this.pos++] as number;
  }
  i8(): number {
    const v = this.buf.readInt8(this.pos);
    this.pos += 1;
    return v;
  }
  u16(): number {
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  i16(): number {
    const v = this.buf.readInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  i32(): number {
    const v = this.buf.readInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  f32(): number {
    const v = this.buf.readFloatLE(this.pos);
    this.pos += 4;
    return v;
  }
  f64(): number {
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
  u64big(): bigint {
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  i64big(): bigint {
    const v = this.buf.readBigInt64LE(this.pos);
    this.pos += 8;
    return v;
  }
  /** A uint64 as a number; values past 2^53 come out inexact but still huge, which is all a length check needs. */
  u64approx(): number {
    const lo = this.buf.readUInt32LE(this.pos);
    const hi = this.buf.readUInt32LE(this.pos + 4);
    this.pos += 8;
    return hi * TWO_32 + lo;
  }
  u64(): number | bigint {
    const lo = this.buf.readUInt32LE(this.pos);
    const hi = this.buf.readUInt32LE(this.pos + 4);
    this.pos += 8;
    return hi < 0x200000 ? hi * TWO_32 + lo : (BigInt(hi) << 32n) | BigInt(lo);
  }
  i64(): number | bigint {
    const v = this.buf.readBigInt64LE(this.pos);
    this.pos += 8;
    return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
  }
  str(len: number): string {
    const s = this.buf.toString("utf8", this.pos, this.pos + len);
    this.pos += len;
    return s;
  }
}

/**
 * What the parser yields: the number of contiguous bytes it needs. 0 is a tick: no bytes needed,
 * but the async reader may let the event loop run (big vocabularies take tens of ms to parse).
 */
type Parser<T> = Generator<number, T, void>;

/** Elements between ticks in big arrays. */
const TICK_EVERY = 1024;
/** Longest stretch the async reader parses or checks without letting the event loop run. */
const SLICE_MS = 3;

/** Resolves after the event loop had a turn when the current slice ran past SLICE_MS. */
class Slicer {
  #start = performance.now();
  /** Call after any await that already yielded. */
  reset(): void {
    this.#start = performance.now();
  }
  async tick(): Promise<void> {
    if (performance.now() - this.#start < SLICE_MS) return;
    // Two turns of the check phase: the first may still be in the current loop iteration, the
    // second comes after the timers phase, so timers and I/O callbacks get to run in between.
    await new Promise<void>((resolve) => setImmediate(resolve));
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#start = performance.now();
  }
}

function truncated(what: string, c: Cursor): LlamemError {
  return new LlamemError("ERR_GGUF_TRUNCATED", `GGUF file ends inside ${what} (offset ${c.offset}, file size ${c.fileSize})`);
}

function invalid(message: string): LlamemError {
  return new LlamemError("ERR_GGUF_INVALID", message);
}

/** Slow path of "make n bytes available": asks the driver for a refill, then checks for EOF. */
function* need(c: Cursor, n: number, what: string): Parser<void> {
  if (n > c.left) throw truncated(what, c);
  yield n;
  if (c.avail < n) throw truncated(what, c);
}

function* readString(c: Cursor, what: string, maxBytes = GGUF_MAX_STRING_LENGTH): Parser<string> {
  if (c.avail < 8) yield* need(c, 8, what);
  const len = c.u64approx();
  if (maxBytes < GGUF_MAX_STRING_LENGTH && len > maxBytes) throw invalid(`${what} is ${len} bytes long, over the limit of ${maxBytes}`);
  if (len > GGUF_MAX_STRING_LENGTH) throw invalid(`${what} has length ${len}, over llama.cpp's limit of ${GGUF_MAX_STRING_LENGTH}`);
  if (len > c.left) {
    throw new LlamemError("ERR_GGUF_TRUNCATED",
      `${what} has length ${len} but only ${c.left} bytes are left in the file (offset ${c.offset})`);
  }
  if (c.avail < len) yield* need(c, len, what);
  return c.str(len);
}

const SCALAR_SIZE: readonly number[] = [1, 1, 2, 2, 4, 4, 4, 1, 8, 0, 8, 8, 8];

function isScalarType(t: number): t is GgufScalarType {
  return Number.isInteger(t) && t >= 0 && t <= 12 && t !== GGUF_VALUE_TYPE.ARRAY;
}

function readScalar(c: Cursor, t: Exclude<GgufScalarType, 8>): number | bigint | boolean {
  switch (t) {
    case 0: return c.u8();
    case 1: return c.i8();
    case 2: return c.u16();
    case 3: return c.i16();
    case 4: return c.u32();
    case 5: return c.i32();
    case 6: return c.f32();
    case 7: return c.i8() !== 0;
    case 10: return c.u64();
    case 11: return c.i64();
    case 12: return c.f64();
  }
}

function* readValue(c: Cursor, key: string): Parser<GgufMetadataEntry> {
  const what = `metadata value of '${key}'`;
  if (c.avail < 4) yield* need(c, 4, what);
  const type = c.i32();
  if (type === GGUF_VALUE_TYPE.ARRAY) {
    if (c.avail < 12) yield* need(c, 12, what);
    const itemType = c.i32();
    const n = c.u64approx();
    if (!isScalarType(itemType)) {
      throw invalid(`metadata key '${key}' is an array of invalid GGUF type ${itemType}`);
    }
    if (n > GGUF_MAX_ARRAY_ELEMENTS) throw invalid(`metadata key '${key}' has ${n} array elements, over llama.cpp's limit`);
    // Strings need at least their 8-byte length each; reject before allocating anything.
    const minItem = itemType === GGUF_VALUE_TYPE.STRING ? 8 : (SCALAR_SIZE[itemType] as number);
    if (n * minItem > c.left) {
      throw new LlamemError("ERR_GGUF_TRUNCATED",
        `metadata key '${key}' has ${n} array elements but only ${c.left} bytes are left in the file`);
    }
    if (itemType === GGUF_VALUE_TYPE.STRING) {
      // Grown by push, not preallocated, so a lying count costs memory only as far as the file backs it.
      const out: string[] = [];
      for (let i = 0; i < n; i++) {
        // A chance for the async reader to give the event loop a turn (a tick: zero bytes needed).
        if ((i & (TICK_EVERY - 1)) === TICK_EVERY - 1) yield 0;
        // Inline fast path: a big vocabulary is hundreds of thousands of short strings.
        if (c.avail >= 8) {
          const save = c.pos;
          const len = c.u64approx();
          if (len <= c.avail) {
            out.push(c.str(len));
            continue;
          }
          c.pos = save;
        }
        out.push(yield* readString(c, `element ${i} of '${key}'`));
      }
      return { type: 9, itemType, value: out } as GgufArrayEntry;
    }
    const size = SCALAR_SIZE[itemType] as number;
    const out: (number | bigint | boolean)[] = [];
    let i = 0;
    while (i < n) {
      // Read in buffer-sized pieces so huge arrays never need a huge buffer.
      if (c.avail < size) yield* need(c, Math.min((n - i) * size, CHUNK - (CHUNK % size)), what);
      const stop = Math.min(n, i + Math.floor(c.avail / size), i + 16 * TICK_EVERY);
      for (; i < stop; i++) out.push(readScalar(c, itemType));
      if (i < n) yield 0;
    }
    return { type: 9, itemType, value: out } as GgufArrayEntry;
  }
  if (!isScalarType(type)) throw invalid(`metadata key '${key}' has invalid GGUF type ${type}`);
  if (type === GGUF_VALUE_TYPE.STRING) return { type, value: yield* readString(c, what) };
  const size = SCALAR_SIZE[type] as number;
  if (c.avail < size) yield* need(c, size, what);
  return { type, value: readScalar(c, type) } as GgufScalarEntry;
}

interface RawTensor {
  name: string;
  dims: number[];
  type: GgmlTypeInfo;
  rel: bigint;
  size: bigint;
  elements: bigint;
}

const INT64_MAX = 0x7fffffffffffffffn;
/** Smallest possible tensor info: name length, 1-byte name, n_dims, one dim, type, offset. */
const MIN_TENSOR_INFO = 8 + 1 + 4 + 8 + 4 + 8;
/** Smallest possible KV: key length, 1-byte key, type, 1-byte value. */
const MIN_KV = 8 + 1 + 4 + 1;

function* parseGguf(c: Cursor, path: string): Parser<GgufFile> {
  if (c.fileSize < 4) throw new LlamemError("ERR_NOT_GGUF", `${path} is not a GGUF file (only ${c.fileSize} bytes)`);
  yield* need(c, Math.min(24, c.fileSize), "the header");
  const magic = c.buf.subarray(0, 4);
  if (magic.toString("latin1") !== GGUF_MAGIC) {
    const shown = Array.from(magic, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "?")).join("");
    throw new LlamemError("ERR_NOT_GGUF", `${path} is not a GGUF file (magic '${shown}', expected 'GGUF')`);
  }
  c.pos = 4;
  if (c.avail < 4) throw truncated("the header", c);
  const version = c.u32();
  if (version === 1) throw invalid("GGUF version 1 is no longer supported by llama.cpp; reconvert the model");
  if ((version & 0xffff) === 0 && version !== 0) {
    throw invalid(`GGUF version ${version} is absurd; the file was probably written on a host of the other endianness`);
  }
  if (version !== 2 && version !== 3) throw invalid(`unsupported GGUF version ${version} (supported: 2, 3)`);
  if (c.avail < 16) throw truncated("the header", c);
  const nTensorsBig = c.i64big();
  const nKvBig = c.i64big();
  if (nTensorsBig < 0n) throw invalid(`negative tensor count ${nTensorsBig}`);
  if (nKvBig < 0n) throw invalid(`negative metadata count ${nKvBig}`);
  // Counts are bounded by what the rest of the file could possibly hold.
  const room = BigInt(c.left);
  if (nTensorsBig * BigInt(MIN_TENSOR_INFO) + nKvBig * BigInt(MIN_KV) > room) {
    throw invalid(`tensor count ${nTensorsBig} and metadata count ${nKvBig} cannot fit in the ${room} bytes left in the file`);
  }
  const nTensors = Number(nTensorsBig);
  const nKv = Number(nKvBig);

  const metadata = new Map<string, GgufMetadataEntry>();
  for (let i = 0; i < nKv; i++) {
    const key = yield* readString(c, `metadata key ${i}`);
    if (key.length === 0) throw invalid(`metadata key ${i} is empty`);
    if (metadata.has(key)) throw invalid(`duplicate metadata key '${key}'`);
    metadata.set(key, yield* readValue(c, key));
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const alignEntry = metadata.get(GGUF_KEY_ALIGNMENT);
  if (alignEntry) {
    if (alignEntry.type !== GGUF_VALUE_TYPE.UINT32) {
      throw invalid(`'${GGUF_KEY_ALIGNMENT}' must be of type u32 but is ${GGUF_VALUE_TYPE_NAMES[alignEntry.type] ?? alignEntry.type}`);
    }
    alignment = alignEntry.value;
    if (alignment === 0 || (alignment & (alignment - 1)) !== 0) {
      throw invalid(`alignment ${alignment} is not a power of two`);
    }
  }

  const raw: RawTensor[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    // ggml keeps names in a 64-byte buffer with a NUL, so llama.cpp rejects 64 bytes or more.
    const name = yield* readString(c, `tensor name ${i}`, GGML_MAX_NAME - 1);
    if (names.has(name)) throw invalid(`duplicate tensor name '${name}'`);
    names.add(name);
    const what = `tensor info of '${name}'`;
    if (c.avail < 4) yield* need(c, 4, what);
    const nDims = c.u32();
    if (nDims < 1 || nDims > GGML_MAX_DIMS) throw invalid(`tensor '${name}' has ${nDims} dimensions (must be 1..${GGML_MAX_DIMS})`);
    const bytes = nDims * 8 + 4 + 8;
    if (c.avail < bytes) yield* need(c, bytes, what);
    let elements = 1n;
    const dimsBig: bigint[] = [];
    for (let j = 0; j < nDims; j++) {
      const d = c.i64big();
      if (d <= 0n) throw invalid(`tensor '${name}' dimension ${j} is ${d} (must be > 0)`);
      dimsBig.push(d);
      elements *= d;
      if (elements >= INT64_MAX) throw invalid(`tensor '${name}' has too many elements (shape ${dimsBig.join("x")}...)`);
    }
    const typeId = c.i32();
    const rel = c.u64big();
    const type = ggmlTypeInfo(typeId);
    if (!type) throw invalid(`tensor '${name}' has invalid or unsupported ggml type ${typeId}`);
    const ne0 = dimsBig[0] as bigint;
    if (ne0 % BigInt(type.blockSize) !== 0n) {
      throw invalid(`tensor '${name}' of type ${type.name} has ${ne0} elements per row, not a multiple of the block size ${type.blockSize}`);
    }
    const size = (elements / BigInt(type.blockSize)) * BigInt(type.typeSize);
    if (size > INT64_MAX) throw invalid(`tensor '${name}' is too large (${size} bytes)`);
    if (rel % BigInt(alignment) !== 0n) {
      throw invalid(`tensor '${name}' has data offset ${rel}, not a multiple of the alignment ${alignment}`);
    }
    raw.push({ name, dims: dimsBig.map(Number), type, rel, size, elements });
  }

  const headerSize = c.offset;
  const dataOffset = nTensors > 0 ? Math.ceil(headerSize / alignment) * alignment : headerSize;
  if (nTensors > 0 && dataOffset > c.fileSize) throw truncated("the padding before the tensor data", c);

  // Overlap first (a clear message), then llama.cpp's stricter rule: data packed in file order.
  const byOffset = [...raw].sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1] as RawTensor;
    const cur = byOffset[i] as RawTensor;
    if (prev.rel + prev.size > cur.rel) throw invalid(`tensors '${prev.name}' and '${cur.name}' overlap`);
  }
  let expected = 0n;
  const align = BigInt(alignment);
  for (const t of raw) {
    if (t.rel !== expected) {
      throw invalid(`tensor '${t.name}' has data offset ${t.rel}, expected ${expected} (llama.cpp requires tensor data packed in header order)`);
    }
    expected += ((t.size + align - 1n) / align) * align;
  }
  const fileSize = BigInt(c.fileSize);
  const base = BigInt(dataOffset);
  const tensors: GgufTensorInfo[] = raw.map((t) => {
    const end = base + t.rel + t.size;
    if (end > fileSize) {
      throw new LlamemError("ERR_GGUF_TRUNCATED",
        `tensor '${t.name}' data ends at byte ${end} but the file has only ${fileSize} bytes`);
    }
    return Object.freeze({
      name: t.name,
      dims: Object.freeze(t.dims),
      type: t.type.id,
      typeName: t.type.name,
      offset: Number(base + t.rel),
      size: Number(t.size),
      elements: Number(t.elements),
    });
  });

  return { path, version, alignment, metadata, tensors: Object.freeze(tensors), headerSize, dataOffset, fileSize: c.fileSize };
}

// ---------------------------------------------------------------------------------------------
// Drivers.

function statError(path: string, err: unknown): LlamemError {
  const code = (err as { code?: unknown }).code;
  if (code === "ENOENT" || code === "ENOTDIR") return new LlamemError("ERR_FILE_NOT_FOUND", `no such file: ${path}`, { cause: err });
  if (code === "EISDIR") return new LlamemError("ERR_NOT_A_FILE", `${path} is a directory, not a file`, { cause: err });
  return new LlamemError("ERR_IO", `cannot read ${path}: ${(err as Error).message ?? String(err)}`, { cause: err });
}

function checkStats(path: string, st: Stats): void {
  if (st.isDirectory()) throw new LlamemError("ERR_NOT_A_FILE", `${path} is a directory, not a file`);
  if (!st.isFile()) throw new LlamemError("ERR_NOT_A_FILE", `${path} is not a regular file`);
}

function ioError(path: string, err: unknown): LlamemError {
  if (err instanceof LlamemError) return err;
  return new LlamemError("ERR_IO", `cannot read ${path}: ${(err as Error).message ?? String(err)}`, { cause: err });
}

/** Options of {@link readGguf} and {@link readGgufSync}. */
export interface ReadGgufOptions {
  /**
   * Also run {@link checkModel}: refuse metadata and tensor types that would make llama.cpp
   * abort the process instead of failing (default true). Tools that only display a header may
   * turn it off.
   */
  readonly checkModel?: boolean;
}

/**
 * Reads and validates the header of a GGUF file.
 *
 * @throws {LlamemError} ERR_FILE_NOT_FOUND, ERR_NOT_A_FILE, ERR_NOT_GGUF, ERR_GGUF_TRUNCATED,
 *   ERR_GGUF_INVALID, ERR_UNSUPPORTED (see {@link checkModel}) or ERR_IO.
 */
export async function readGguf(path: string, options: ReadGgufOptions = {}): Promise<GgufFile> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (err) {
    throw statError(path, err);
  }
  checkStats(path, st);
  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (err) {
    throw statError(path, err);
  }
  try {
    // Size from the open descriptor, in case the file was replaced between stat and open.
    const size = (await fh.stat()).size;
    const c = new Cursor(size);
    const gen = parseGguf(c, path);
    const slicer = new Slicer();
    let step = gen.next();
    while (!step.done) {
      const need = step.value;
      if (need === 0) await slicer.tick();
      while (c.avail < need) {
        const { at, len, filePos } = c.prepare(need);
        if (len === 0) break;
        let n: number;
        try {
          n = (await fh.read(c.buf, at, len, filePos)).bytesRead;
        } catch (err) {
          throw ioError(path, err);
        }
        slicer.reset();
        if (n === 0) break;
        c.end += n;
      }
      step = gen.next();
    }
    if (options.checkModel ?? true) {
      for (const _ of checkModelSteps(step.value)) await slicer.tick();
    }
    return step.value;
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Synchronous {@link readGguf}, for callers that cannot await (it blocks while reading the header). */
export function readGgufSync(path: string, options: ReadGgufOptions = {}): GgufFile {
  let st: Stats;
  try {
    st = statSync(path);
  } catch (err) {
    throw statError(path, err);
  }
  checkStats(path, st);
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw statError(path, err);
  }
  try {
    const c = new Cursor(fstatSync(fd).size);
    const gen = parseGguf(c, path);
    let step = gen.next();
    while (!step.done) {
      const need = step.value;
      while (c.avail < need) {
        const { at, len, filePos } = c.prepare(need);
        if (len === 0) break;
        let n: number;
        try {
          n = readSync(fd, c.buf, at, len, filePos);
        } catch (err) {
          throw ioError(path, err);
        }
        if (n === 0) break;
        c.end += n;
      }
      step = gen.next();
    }
    if (options.checkModel ?? true) checkModel(step.value);
    return step.value;
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Small accessors.

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

// ---------------------------------------------------------------------------------------------
// Model sanity: what llama.cpp asserts (aborting the whole process) instead of reporting.

/** Tensor types ggml's CPU backend cannot multiply or look rows up in (no vec_dot / get_rows). */
const NO_COMPUTE_TYPES: ReadonlySet<number> = new Set([
  GGML_TYPE.Q8_1, GGML_TYPE.Q8_K, GGML_TYPE.I8, GGML_TYPE.I16, GGML_TYPE.I32, GGML_TYPE.I64, GGML_TYPE.F64,
]);
/** llama.cpp's LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS. */
const LLAMA_MAX_LAYERS = 512;
const LLAMA_MAX_EXPERTS = 1024;
/** The values llama_rope_scaling_type_from_string knows. */
const ROPE_SCALING_TYPES: ReadonlySet<string> = new Set(["none", "linear", "yarn", "longrope"]);
/** Architectures whose hparams get the llama checks (head geometry). */
const LLAMA_LIKE: ReadonlySet<string> = new Set(["llama"]);

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

/**
 * Checks what llama.cpp does not check gracefully: values its loader or ggml's kernels
 * `GGML_ASSERT` (which aborts the whole process) instead of returning an error. A file that
 * passes can still fail in llama.cpp, but as an ERR_MODEL_LOAD, not a crash. Only values that
 * are present are checked, so vocabulary-only files and unknown architectures pass.
 *
 * - layers: `<arch>.block_count` in 1..512, `<arch>.nextn_predict_layers` at most that;
 * - experts: `<arch>.expert_count` ≤ 1024, `expert_used_count` in 1..expert_count when there
 *   are experts and 0 when there are none, expert groups consistent;
 * - `<arch>.rope.scaling.type` one of none, linear, yarn, longrope; `<arch>.rope.dimension_count` even;
 * - norm epsilons finite and ≥ 0;
 * - attention heads: `head_count_kv` divides `head_count` (per layer); for llama, both > 0 and a
 *   head size (`embedding_length / head_count` or `key_length`) that is whole and even;
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

/** {@link checkModel} in steps, so the async reader can let the event loop run in between. */
function* checkModelSteps(file: Pick<GgufFile, "metadata" | "tensors">): Generator<void, void, void> {
  const arch = metadataString(file, "general.architecture");
  if (arch !== undefined) checkHparams(file, arch);
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

  if (!LLAMA_LIKE.has(arch)) return;
  const nHead = heads?.length === 1 ? heads[0] : undefined;
  const nHeadKv = kvHeads?.length === 1 ? kvHeads[0] : undefined;
  if (nHead !== undefined && nHead <= 0) throw invalidModel(`'${k("attention.head_count")}' is ${nHead}; a llama model needs heads`);
  if (nHeadKv !== undefined && nHeadKv <= 0) throw invalidModel(`'${k("attention.head_count_kv")}' is ${nHeadKv}; a llama model needs key/value heads`);
  const embd = one("embedding_length");
  const keyLength = one("attention.key_length");
  if (nHead !== undefined && nHead > 0 && embd !== undefined) {
    if (keyLength === undefined && embd % nHead !== 0) {
      throw invalidModel(`'${k("embedding_length")}' ${embd} is not a multiple of the ${nHead} attention heads`);
    }
    const headDim = keyLength ?? embd / nHead;
    if (headDim % 2 !== 0) throw invalidModel(`the attention heads are ${headDim} wide; RoPE needs an even head size`);
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
