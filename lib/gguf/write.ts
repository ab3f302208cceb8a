/**
 * A streaming GGUF writer. Tensor bytes come from per-tensor callbacks (iterables of chunks), so
 * a multi-GB model never sits in memory, and the file appears atomically (temp file + rename).
 *
 * The encoders for each header piece are exported separately, and do not validate more than
 * they must, so tests can assemble deliberately malformed files from them.
 *
 * @packageDocumentation
 */
import { LlamemError } from "../errors.js";
import { writeFileAtomic } from "../files.js";
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_KEY_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VALUE_TYPE,
  GGUF_VERSION,
  ggmlTypeInfo,
  tensorByteSize,
} from "./format.js";
import type {
  GgufArrayEntry,
  GgufBigIntType,
  GgufMetadataEntry,
  GgufNumberType,
  GgufScalarEntry,
  GgufScalarType,
} from "./format.js";

function bad(message: string): never {
  throw new LlamemError("ERR_INVALID_ARGUMENT", message);
}

// ---------------------------------------------------------------------------------------------
// Value builders: typed metadata entries without spelling out type ids.

/** Builders for {@link GgufMetadataEntry} values, e.g. `gguf.u32(4096)`, `gguf.strings(["a"])`. */
export const gguf = {
  u8: (value: number): GgufScalarEntry => ({ type: 0, value }),
  i8: (value: number): GgufScalarEntry => ({ type: 1, value }),
  u16: (value: number): GgufScalarEntry => ({ type: 2, value }),
  i16: (value: number): GgufScalarEntry => ({ type: 3, value }),
  u32: (value: number): GgufScalarEntry => ({ type: 4, value }),
  i32: (value: number): GgufScalarEntry => ({ type: 5, value }),
  f32: (value: number): GgufScalarEntry => ({ type: 6, value }),
  bool: (value: boolean): GgufScalarEntry => ({ type: 7, value }),
  str: (value: string): GgufScalarEntry => ({ type: 8, value }),
  u64: (value: number | bigint): GgufScalarEntry => ({ type: 10, value }),
  i64: (value: number | bigint): GgufScalarEntry => ({ type: 11, value }),
  f64: (value: number): GgufScalarEntry => ({ type: 12, value }),
  /** An array of numbers of one numeric type. */
  numbers: (itemType: GgufNumberType, value: readonly number[]): GgufArrayEntry => ({ type: 9, itemType, value }),
  /** An array of 64-bit integers. */
  bigints: (itemType: GgufBigIntType, value: readonly (number | bigint)[]): GgufArrayEntry => ({ type: 9, itemType, value }),
  bools: (value: readonly boolean[]): GgufArrayEntry => ({ type: 9, itemType: 7, value }),
  strings: (value: readonly string[]): GgufArrayEntry => ({ type: 9, itemType: 8, value }),
} as const;

// ---------------------------------------------------------------------------------------------
// Low-level encoders.

/** Little-endian byte accumulator used by the encoders. */
class Out {
  private buf = Buffer.allocUnsafe(256);
  len = 0;

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.len + n, this.buf.length * 2));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }
  u8(v: number): void { this.room(1); this.buf.writeUInt8(v, this.len); this.len += 1; }
  i8(v: number): void { this.room(1); this.buf.writeInt8(v, this.len); this.len += 1; }
  u16(v: number): void { this.room(2); this.buf.writeUInt16LE(v, this.len); this.len += 2; }
  i16(v: number): void { this.room(2); this.buf.writeInt16LE(v, this.len); this.len += 2; }
  u32(v: number): void { this.room(4); this.buf.writeUInt32LE(v, this.len); this.len += 4; }
  i32(v: number): void { this.room(4); this.buf.writeInt32LE(v, this.len); this.len += 4; }
  f32(v: number): void { this.room(4); this.buf.writeFloatLE(v, this.len); this.len += 4; }
  f64(v: number): void { this.room(8); this.buf.writeDoubleLE(v, this.len); this.len += 8; }
  u64(v: bigint): void { this.room(8); this.buf.writeBigUInt64LE(v, this.len); this.len += 8; }
  i64(v: bigint): void { this.room(8); this.buf.writeBigInt64LE(v, this.len); this.len += 8; }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.len); this.len += b.length; }
  str(s: string): void {
    const n = Buffer.byteLength(s, "utf8");
    this.u64(BigInt(n));
    this.room(n);
    this.buf.write(s, this.len, n, "utf8");
    this.len += n;
  }
  done(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

const INT_RANGE: Partial<Record<number, [number, number]>> = {
  0: [0, 0xff], 1: [-0x80, 0x7f], 2: [0, 0xffff], 3: [-0x8000, 0x7fff],
  4: [0, 0xffffffff], 5: [-0x80000000, 0x7fffffff],
};

function toBig(v: unknown, type: number, what: string): bigint {
  let b: bigint;
  if (typeof v === "bigint") b = v;
  else if (typeof v === "number" && Number.isInteger(v)) b = BigInt(v);
  else bad(`${what}: expected an integer, got ${String(v)}`);
  const ok = type === GGUF_VALUE_TYPE.UINT64 ? b >= 0n && b <= 0xffffffffffffffffn : b >= -(1n << 63n) && b < 1n << 63n;
  if (!ok) bad(`${what}: ${b} is out of range for ${type === GGUF_VALUE_TYPE.UINT64 ? "u64" : "i64"}`);
  return b;
}

function writeScalar(o: Out, type: GgufScalarType, v: unknown, what: string): void {
  const range = INT_RANGE[type];
  if (range) {
    if (typeof v !== "number" || !Number.isInteger(v) || v < range[0] || v > range[1]) {
      bad(`${what}: ${String(v)} is not a valid value of GGUF type ${type}`);
    }
  }
  switch (type) {
    case 0: o.u8(v as number); break;
    case 1: o.i8(v as number); break;
    case 2: o.u16(v as number); break;
    case 3: o.i16(v as number); break;
    case 4: o.u32(v as number); break;
    case 5: o.i32(v as number); break;
    case 6:
    case 12:
      if (typeof v !== "number") bad(`${what}: expected a number, got ${typeof v}`);
      if (type === 6) o.f32(v);
      else o.f64(v);
      break;
    case 7:
      if (typeof v !== "boolean") bad(`${what}: expected a boolean, got ${typeof v}`);
      o.i8(v ? 1 : 0);
      break;
    case 8:
      if (typeof v !== "string") bad(`${what}: expected a string, got ${typeof v}`);
      o.str(v);
      break;
    case 10: o.u64(toBig(v, type, what)); break;
    case 11: o.i64(toBig(v, type, what)); break;
    default: bad(`${what}: unknown GGUF value type ${String(type)}`);
  }
}

/**
 * Encodes the fixed header: magic, version, tensor count, KV count. Every field can be
 * overridden (any magic, any version, any count) for building malformed test files.
 */
export function encodeHeader(fields: {
  tensorCount: number | bigint;
  kvCount: number | bigint;
  version?: number;
  magic?: string | Uint8Array;
}): Buffer {
  const o = new Out();
  const magic = fields.magic ?? GGUF_MAGIC;
  o.bytes(typeof magic === "string" ? Buffer.from(magic, "latin1") : magic);
  o.u32(fields.version ?? GGUF_VERSION);
  o.i64(BigInt(fields.tensorCount));
  o.i64(BigInt(fields.kvCount));
  return o.done();
}

/** Encodes a GGUF string: uint64 byte length, then the UTF-8 bytes (no NUL). */
export function encodeString(s: string): Buffer {
  const o = new Out();
  o.str(s);
  return o.done();
}

/** Encodes one metadata key/value pair. Values are range-checked against their declared type. */
export function encodeKeyValue(key: string, entry: GgufMetadataEntry): Buffer {
  const o = new Out();
  o.str(key);
  o.i32(entry.type);
  if (entry.type === GGUF_VALUE_TYPE.ARRAY) {
    o.i32(entry.itemType);
    o.u64(BigInt(entry.value.length));
    const what = `metadata '${key}'`;
    for (const v of entry.value) writeScalar(o, entry.itemType, v, what);
  } else {
    writeScalar(o, entry.type, entry.value, `metadata '${key}'`);
  }
  return o.done();
}

/**
 * Encodes a key/value pair from a raw type id and payload bytes, with no checks at all: for
 * writing unknown value types, lying array counts and the like into test files.
 */
export function encodeRawKeyValue(key: string, typeId: number, payload: Uint8Array): Buffer {
  const o = new Out();
  o.str(key);
  o.i32(typeId);
  o.bytes(payload);
  return o.done();
}

/** A tensor info as stored in the header; the offset is relative to the data section. */
export interface TensorInfoFields {
  /** Tensor name. */
  name: string;
  /** Dimensions, ne0 first; `dims.length` is written as n_dims. */
  dims: readonly (number | bigint)[];
  /** ggml type id (any int32, unchecked). */
  type: number;
  /** Data offset relative to the start of the data section. */
  offset: number | bigint;
}

/** Encodes one tensor info without validation (any name, dims, type or offset). */
export function encodeTensorInfo(info: TensorInfoFields): Buffer {
  const o = new Out();
  o.str(info.name);
  o.u32(info.dims.length);
  for (const d of info.dims) o.i64(BigInt(d));
  o.i32(info.type);
  o.u64(BigInt(info.offset));
  return o.done();
}

/** Rounds `n` up to a multiple of `alignment`. */
export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** Where each tensor lands: relative offsets, padded data size. */
export interface TensorLayout {
  /** Per tensor: offset relative to the data section, and unpadded size. */
  readonly tensors: readonly { readonly name: string; readonly offset: number; readonly size: number }[];
  /** Total size of the data section including the padding after each tensor. */
  readonly dataSize: number;
}

/**
 * Lays tensors out the way llama.cpp expects: in order, each starting at a multiple of the
 * alignment. Validates names, shapes and types (ERR_INVALID_ARGUMENT).
 */
export function planTensorLayout(tensors: readonly { name: string; dims: readonly number[]; type: number }[], alignment: number): TensorLayout {
  const out: { name: string; offset: number; size: number }[] = [];
  const names = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (Buffer.byteLength(t.name) >= GGML_MAX_NAME) bad(`tensor name '${t.name}' is longer than ${GGML_MAX_NAME - 1} bytes`);
    if (names.has(t.name)) bad(`duplicate tensor name '${t.name}'`);
    names.add(t.name);
    if (t.dims.length < 1 || t.dims.length > GGML_MAX_DIMS) bad(`tensor '${t.name}' must have 1..${GGML_MAX_DIMS} dimensions`);
    if (!ggmlTypeInfo(t.type)) bad(`tensor '${t.name}' has unknown ggml type ${t.type}`);
    const size = tensorByteSize(t.type, t.dims);
    out.push({ name: t.name, offset, size });
    offset += alignUp(size, alignment);
  }
  return { tensors: out, dataSize: offset };
}

/** A tensor to write: its shape and type, and a producer of its bytes. */
export interface GgufTensorSource {
  /** Tensor name (unique, under 64 bytes). */
  readonly name: string;
  /** Dimensions, ne0 (row length) first; 1 to 4 of them. */
  readonly dims: readonly number[];
  /** ggml type id (see GGML_TYPE). */
  readonly type: number;
  /**
   * Produces the tensor's bytes in order, in chunks of any size. Each chunk is written (or
   * copied) before the next is requested, so a producer may reuse one buffer for every chunk.
   * The total must equal the tensor's size exactly.
   */
  readonly data: () => Iterable<Uint8Array> | AsyncIterable<Uint8Array>;
}

/** What {@link writeGguf} writes. */
export interface GgufWriteInput {
  /** Metadata entries in the order to write them. */
  readonly metadata: ReadonlyMap<string, GgufMetadataEntry> | Iterable<readonly [string, GgufMetadataEntry]>;
  /** Tensors in the order to write them. */
  readonly tensors: readonly GgufTensorSource[];
}

/** Options of {@link writeGguf}. */
export interface WriteGgufOptions {
  /** GGUF version to write (default 3). */
  readonly version?: 2 | 3;
  /**
   * Data alignment. Ignored when the metadata has `general.alignment`; when not 32 and the
   * metadata lacks the key, the key is added (readers only know the alignment from it).
   */
  readonly alignment?: number;
  /** Called after each write with bytes written so far and the final file size. */
  readonly onProgress?: (written: number, total: number) => void;
  /** fsync the file before renaming it into place (default false). */
  readonly fsync?: boolean;
  /** Aborts the write: the temp file is removed and the promise rejects with ERR_ABORTED. */
  readonly signal?: AbortSignal;
}

/** What {@link writeGguf} wrote. */
export interface WriteGgufResult {
  /** The final path. */
  readonly path: string;
  /** File size in bytes. */
  readonly size: number;
  /** Absolute offset of the data section. */
  readonly dataOffset: number;
  /** Alignment used. */
  readonly alignment: number;
}

/**
 * Encodes everything before the tensor data: header, metadata, tensor infos and the padding to
 * the data section. Validates metadata values and tensors (ERR_INVALID_ARGUMENT).
 */
export function encodeGgufHeader(
  metadata: ReadonlyMap<string, GgufMetadataEntry> | Iterable<readonly [string, GgufMetadataEntry]>,
  tensors: readonly { name: string; dims: readonly number[]; type: number }[],
  opts: { version?: number; alignment?: number } = {},
): { header: Buffer; layout: TensorLayout; alignment: number } {
  const entries = new Map<string, GgufMetadataEntry>();
  for (const [k, v] of metadata) {
    if (k.length === 0) bad("metadata keys must not be empty");
    if (entries.has(k)) bad(`duplicate metadata key '${k}'`);
    entries.set(k, v);
  }
  let alignment = opts.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  const alignEntry = entries.get(GGUF_KEY_ALIGNMENT);
  if (alignEntry) {
    if (alignEntry.type !== GGUF_VALUE_TYPE.UINT32) bad(`'${GGUF_KEY_ALIGNMENT}' must be a u32`);
    alignment = alignEntry.value;
  } else if (alignment !== GGUF_DEFAULT_ALIGNMENT) {
    entries.set(GGUF_KEY_ALIGNMENT, gguf.u32(alignment));
  }
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment > 0xffffffff || (alignment & (alignment - 1)) !== 0) {
    bad(`alignment ${alignment} is not a power of two`);
  }
  const layout = planTensorLayout(tensors, alignment);
  const parts: Buffer[] = [encodeHeader({ tensorCount: tensors.length, kvCount: entries.size, version: opts.version ?? GGUF_VERSION })];
  for (const [k, v] of entries) parts.push(encodeKeyValue(k, v));
  tensors.forEach((t, i) => {
    parts.push(encodeTensorInfo({ name: t.name, dims: t.dims, type: t.type, offset: (layout.tensors[i] as { offset: number }).offset }));
  });
  let len = 0;
  for (const p of parts) len += p.length;
  // llama.cpp pads to the data section only when there are tensors.
  const total = tensors.length > 0 ? alignUp(len, alignment) : len;
  const header = Buffer.alloc(total);
  let at = 0;
  for (const p of parts) {
    p.copy(header, at);
    at += p.length;
  }
  return { header, layout, alignment };
}

/**
 * Writes a GGUF file: the header, then each tensor's bytes from its `data` producer, each padded
 * to the alignment. The file appears at `path` only when complete.
 *
 * @throws {LlamemError} ERR_INVALID_ARGUMENT for bad metadata, tensors, or a producer that yields
 *   the wrong number of bytes; ERR_IO when writing fails.
 */
export async function writeGguf(path: string, input: GgufWriteInput, opts: WriteGgufOptions = {}): Promise<WriteGgufResult> {
  const { header, layout, alignment } = encodeGgufHeader(input.metadata, input.tensors, {
    version: opts.version,
    alignment: opts.alignment,
  });
  const total = header.length + layout.dataSize;
  const signal = opts.signal;
  const checkAbort = (): void => {
    if (signal?.aborted) throw new LlamemError("ERR_ABORTED", `writing ${path} was aborted`, { cause: signal.reason });
  };
  checkAbort();
  const size = await writeFileAtomic(
    path,
    async (write) => {
      await write(header);
      for (let i = 0; i < input.tensors.length; i++) {
        const t = input.tensors[i] as GgufTensorSource;
        const place = layout.tensors[i] as { offset: number; size: number };
        let got = 0;
        for await (const chunk of t.data()) {
          checkAbort();
          got += chunk.length;
          if (got > place.size) bad(`tensor '${t.name}' produced more than its ${place.size} bytes`);
          await write(chunk);
        }
        if (got !== place.size) bad(`tensor '${t.name}' produced ${got} bytes, expected ${place.size}`);
        const pad = alignUp(place.size, alignment) - place.size;
        if (pad > 0) await write(Buffer.alloc(pad));
      }
    },
    { fsync: opts.fsync, onWritten: opts.onProgress ? (w) => opts.onProgress?.(w, total) : undefined },
  );
  return { path, size, dataOffset: header.length, alignment };
}
