/**
 * The incremental GGUF header parser. {@link parseGguf} is a generator over a buffered
 * {@link Cursor}: it yields "I need n contiguous bytes" only when the buffer runs short (and 0,
 * a tick, inside big arrays), so one parser serves both the sync and the async reader in
 * `read.ts`, and the async one can let the event loop run ({@link Slicer}) while a big
 * vocabulary is parsed. It checks a file the way llama.cpp's loader would (and a little more
 * strictly), so that a broken file becomes a {@link LlamemError} here instead of an abort or an
 * out-of-bounds read in native code. Only the header is parsed; tensor data is never touched.
 *
 * @internal
 * @packageDocumentation
 */
import { LlamemError } from "../errors.js";
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_KEY_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_MAX_ARRAY_ELEMENTS,
  GGUF_MAX_STRING_LENGTH,
  GGUF_VALUE_TYPE,
  GGUF_VALUE_TYPE_NAMES,
  ggmlTypeInfo,
} from "./format.js";
import type {
  GgmlTypeInfo,
  GgufArrayEntry,
  GgufFile,
  GgufMetadataEntry,
  GgufScalarEntry,
  GgufScalarType,
  GgufTensorInfo,
} from "./format.js";

// ---------------------------------------------------------------------------------------------
// Buffered cursor. The parser is a generator that yields "I need n contiguous bytes" only when
// the buffer runs short, so one parser serves both the sync and the async entry points.

const CHUNK = 1 << 20;
const TWO_32 = 4294967296;

/** A window of the file in a growable buffer; the reader fills it where {@link Cursor.prepare} says. @internal */
export class Cursor {
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
 * @internal
 */
export type Parser<T> = Generator<number, T, void>;

/** Elements between ticks in big arrays. @internal */
export const TICK_EVERY = 1024;
/** Longest stretch the async reader parses or checks without letting the event loop run. */
const SLICE_MS = 3;

/** Resolves after the event loop had a turn when the current slice ran past SLICE_MS. @internal */
export class Slicer {
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

/**
 * Parses and validates a GGUF header from `c`, yielding whenever it needs more bytes (the
 * driver reads them into the cursor) or a tick (0). `path` only names the file in errors.
 *
 * @throws {LlamemError} ERR_NOT_GGUF, ERR_GGUF_TRUNCATED, ERR_GGUF_INVALID.
 * @internal
 */
export function* parseGguf(c: Cursor, path: string): Parser<GgufFile> {
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
