import { mkdtempSync, mkdirSync, openSync, closeSync, ftruncateSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LlamemError } from "../../lib/errors.js";
import {
  GGML_TYPE,
  GGML_TYPES,
  GGUF_VALUE_TYPE,
  ggmlTypeByName,
  ggmlTypeInfo,
  metadataArrayLength,
  metadataNumber,
  metadataString,
  tensorByteSize,
} from "../../lib/gguf/format.js";
import type { GgufMetadataEntry } from "../../lib/gguf/format.js";
import { readGguf, readGgufSync } from "../../lib/gguf/read.js";
import {
  alignUp,
  encodeHeader,
  encodeKeyValue,
  encodeRawKeyValue,
  encodeString,
  encodeTensorInfo,
  gguf,
  writeGguf,
} from "../../lib/gguf/write.js";
import type { TensorInfoFields } from "../../lib/gguf/write.js";
import { writeFileAtomic } from "../../lib/files.js";
import { defaultVocabPath } from "../../lib/gguf/synthetic.js";

let dir: string;
let n = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "llamem-gguf-test-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function file(bytes: Uint8Array): string {
  const p = join(dir, `f${n++}.gguf`);
  writeFileSync(p, bytes);
  return p;
}

/** Expects both readers to fail with `code`, and returns the async one's message. */
async function expectCode(path: string, code: string): Promise<string> {
  let err: unknown;
  try {
    await readGguf(path);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(LlamemError);
  expect((err as LlamemError).code).toBe(code);
  let syncErr: unknown;
  try {
    readGgufSync(path);
  } catch (e) {
    syncErr = e;
  }
  expect((syncErr as LlamemError).code).toBe(code);
  return (err as LlamemError).message;
}

/** Assembles a GGUF file from parts; counts default to the number of parts. */
function build(opts: {
  version?: number;
  kvs?: Buffer[];
  infos?: TensorInfoFields[];
  data?: Buffer;
  alignment?: number;
  tensorCount?: number | bigint;
  kvCount?: number | bigint;
  /** Bytes to drop from the end. */
  cut?: number;
}): string {
  const kvs = opts.kvs ?? [];
  const infos = opts.infos ?? [];
  const parts = [
    encodeHeader({ version: opts.version, tensorCount: opts.tensorCount ?? infos.length, kvCount: opts.kvCount ?? kvs.length }),
    ...kvs,
    ...infos.map(encodeTensorInfo),
  ];
  let bytes = Buffer.concat(parts);
  if (infos.length > 0) {
    const padded = Buffer.alloc(alignUp(bytes.length, opts.alignment ?? 32));
    bytes.copy(padded);
    bytes = padded;
  }
  if (opts.data) bytes = Buffer.concat([bytes, opts.data]);
  if (opts.cut) bytes = bytes.subarray(0, bytes.length - opts.cut);
  return file(bytes);
}

const f32Info = (name: string, ne0: number, offset = 0): TensorInfoFields => ({ name, dims: [ne0], type: GGML_TYPE.F32, offset });

describe("ggml type table", () => {
  it("has the ids, block sizes and type sizes of ggml.c", () => {
    const expected: [string, number, number, number][] = [
      ["f32", 0, 1, 4], ["f16", 1, 1, 2], ["q4_0", 2, 32, 18], ["q4_1", 3, 32, 20], ["q5_0", 6, 32, 22],
      ["q5_1", 7, 32, 24], ["q8_0", 8, 32, 34], ["q8_1", 9, 32, 36], ["q2_K", 10, 256, 84], ["q3_K", 11, 256, 110],
      ["q4_K", 12, 256, 144], ["q5_K", 13, 256, 176], ["q6_K", 14, 256, 210], ["q8_K", 15, 256, 292],
      ["iq2_xxs", 16, 256, 66], ["iq2_xs", 17, 256, 74], ["iq3_xxs", 18, 256, 98], ["iq1_s", 19, 256, 50],
      ["iq4_nl", 20, 32, 18], ["iq3_s", 21, 256, 110], ["iq2_s", 22, 256, 82], ["iq4_xs", 23, 256, 136],
      ["i8", 24, 1, 1], ["i16", 25, 1, 2], ["i32", 26, 1, 4], ["i64", 27, 1, 8], ["f64", 28, 1, 8],
      ["iq1_m", 29, 256, 56], ["bf16", 30, 1, 2], ["tq1_0", 34, 256, 54], ["tq2_0", 35, 256, 66],
      ["mxfp4", 39, 32, 17], ["nvfp4", 40, 64, 36], ["q1_0", 41, 128, 18], ["q2_0", 42, 64, 18],
    ];
    expect(GGML_TYPES.map((t) => [t.name, t.id, t.blockSize, t.typeSize])).toEqual(expected);
    for (const id of [4, 5, 31, 32, 33, 36, 37, 38, 43, -1, 1.5]) expect(ggmlTypeInfo(id)).toBeUndefined();
    expect(ggmlTypeByName("Q4_K")?.id).toBe(12);
    expect(tensorByteSize(GGML_TYPE.Q4_0, [64, 3])).toBe(2 * 3 * 18);
    expect(() => tensorByteSize(GGML_TYPE.Q4_0, [33])).toThrow(LlamemError);
  });
});

describe("writeGguf -> readGguf round trip", () => {
  const metadata = new Map<string, GgufMetadataEntry>([
    ["u8", gguf.u8(255)],
    ["i8", gguf.i8(-128)],
    ["u16", gguf.u16(65535)],
    ["i16", gguf.i16(-32768)],
    ["u32", gguf.u32(4294967295)],
    ["i32", gguf.i32(-2147483648)],
    ["f32", gguf.f32(1.5)],
    ["bool.t", gguf.bool(true)],
    ["bool.f", gguf.bool(false)],
    ["str", gguf.str("héllo ✓ \u{1F999}")],
    ["str.empty", gguf.str("")],
    ["u64.safe", gguf.u64(Number.MAX_SAFE_INTEGER)],
    ["u64.big", gguf.u64(2n ** 64n - 1n)],
    ["i64.small", gguf.i64(-5)],
    ["i64.min", gguf.i64(-(2n ** 63n))],
    ["f64", gguf.f64(Math.PI)],
    ["arr.u8", gguf.numbers(0, [0, 1, 255])],
    ["arr.i8", gguf.numbers(1, [-128, 127])],
    ["arr.u16", gguf.numbers(2, [65535])],
    ["arr.i16", gguf.numbers(3, [-1, 2])],
    ["arr.u32", gguf.numbers(4, [1, 4000000000])],
    ["arr.i32", gguf.numbers(5, [-7, 7])],
    ["arr.f32", gguf.numbers(6, [0.25, -2, 1e-3])],
    ["arr.bool", gguf.bools([true, false, true])],
    ["arr.str", gguf.strings(["a", "", "ß", "<|im_start|>"])],
    ["arr.u64", gguf.bigints(10, [1, 2n ** 60n])],
    ["arr.i64", gguf.bigints(11, [-1, -(2n ** 62n)])],
    ["arr.f64", gguf.numbers(12, [Math.E, -0.5])],
    ["arr.empty", gguf.strings([])],
  ]);
  // What comes back: f32 is float32-rounded, 64-bit ints are numbers when safe.
  const expectedBack = new Map<string, GgufMetadataEntry>(metadata);
  expectedBack.set("u64.big", { type: 10, value: 2n ** 64n - 1n });
  expectedBack.set("i64.min", { type: 11, value: -(2n ** 63n) });
  expectedBack.set("arr.f32", gguf.numbers(6, [0.25, -2, Math.fround(1e-3)]));
  expectedBack.set("arr.u64", gguf.bigints(10, [1, 2n ** 60n]));

  const tensorBytes = (size: number, salt: number): Buffer => {
    const b = Buffer.alloc(size);
    for (let i = 0; i < size; i++) b[i] = (i * 31 + salt) & 255;
    return b;
  };
  const specs = [
    { name: "a.f32", dims: [3], type: GGML_TYPE.F32, size: 12 },
    { name: "b.f16", dims: [4, 2], type: GGML_TYPE.F16, size: 16 },
    { name: "c.q8_0", dims: [64, 2], type: GGML_TYPE.Q8_0, size: 4 * 34 },
    { name: "d.q4_0", dims: [32, 3, 1, 2], type: GGML_TYPE.Q4_0, size: 6 * 18 },
    { name: "e.i32", dims: [5], type: GGML_TYPE.I32, size: 20 },
  ];

  async function writeSample(path: string, alignment?: number) {
    return writeGguf(path, {
      metadata,
      tensors: specs.map((s, i) => ({
        name: s.name,
        dims: s.dims,
        type: s.type,
        // Uneven chunks, reusing one buffer, to exercise the writer's copy/flush logic.
        *data() {
          const all = tensorBytes(s.size, i);
          const scratch = Buffer.alloc(7);
          for (let at = 0; at < all.length; at += 7) {
            const n = all.copy(scratch, 0, at, Math.min(at + 7, all.length));
            yield scratch.subarray(0, n);
          }
        },
      })),
    }, { alignment });
  }

  it("reads back every value type and every tensor", async () => {
    const path = join(dir, "roundtrip.gguf");
    const progress: number[] = [];
    const res = await writeGguf(path, { metadata, tensors: [] }, { onProgress: (w) => progress.push(w) });
    expect(res.size).toBe(readFileSync(path).length);
    expect(progress.at(-1)).toBe(res.size);

    await writeSample(path);
    const f = await readGguf(path);
    expect(f.version).toBe(3);
    expect(f.alignment).toBe(32);
    expect(f.dataOffset % 32).toBe(0);
    expect(f.headerSize).toBeLessThanOrEqual(f.dataOffset);
    expect([...f.metadata.entries()]).toEqual([...expectedBack.entries()]);
    expect(typeof (f.metadata.get("u64.safe")?.value)).toBe("number");
    expect(typeof (f.metadata.get("u64.big")?.value)).toBe("bigint");

    const bytes = readFileSync(path);
    expect(f.fileSize).toBe(bytes.length);
    expect(f.tensors.map((t) => [t.name, [...t.dims], t.type, t.size])).toEqual(specs.map((s) => [s.name, s.dims, s.type, s.size]));
    expect(f.tensors.map((t) => t.typeName)).toEqual(["f32", "f16", "q8_0", "q4_0", "i32"]);
    f.tensors.forEach((t, i) => {
      expect((t.offset - f.dataOffset) % 32).toBe(0);
      expect(bytes.subarray(t.offset, t.offset + t.size).equals(tensorBytes(t.size, i))).toBe(true);
    });
    expect(f.tensors[3]?.elements).toBe(32 * 3 * 2);

    const g = readGgufSync(path);
    expect(g.tensors).toEqual(f.tensors);
    expect([...g.metadata.entries()]).toEqual([...f.metadata.entries()]);
  });

  it("honours a non-default alignment and records it in general.alignment", async () => {
    const path = join(dir, "align64.gguf");
    await writeSample(path, 64);
    const f = await readGguf(path);
    expect(f.alignment).toBe(64);
    expect(f.metadata.get("general.alignment")).toEqual({ type: GGUF_VALUE_TYPE.UINT32, value: 64 });
    expect(f.dataOffset % 64).toBe(0);
    for (const t of f.tensors) expect((t.offset - f.dataOffset) % 64).toBe(0);
  });

  it("writes version 2 files too", async () => {
    const path = join(dir, "v2.gguf");
    await writeGguf(path, { metadata: [["k", gguf.u32(1)]], tensors: [] }, { version: 2 });
    const f = await readGguf(path);
    expect(f.version).toBe(2);
    expect(f.dataOffset).toBe(f.fileSize);
  });

  it("offers metadata accessors", async () => {
    const path = join(dir, "roundtrip-acc.gguf");
    await writeSample(path);
    const f = await readGguf(path);
    expect(metadataString(f, "str")).toBe("héllo ✓ \u{1F999}");
    expect(metadataString(f, "u32")).toBeUndefined();
    expect(metadataString(f, "missing")).toBeUndefined();
    expect(metadataNumber(f, "u32")).toBe(4294967295);
    expect(metadataNumber(f, "f32")).toBe(1.5);
    expect(metadataNumber(f, "i64.small")).toBe(-5);
    expect(metadataNumber(f, "u64.big")).toBeUndefined();
    expect(metadataNumber(f, "str")).toBeUndefined();
    expect(metadataArrayLength(f, "arr.str")).toBe(4);
    expect(metadataArrayLength(f, "u8")).toBeUndefined();
  });
});

describe("writeGguf failures", () => {
  const leftovers = (d: string) => readdirSync(d).filter((f) => f.includes(".tmp-"));

  it("rejects a producer that yields the wrong size and leaves nothing behind", async () => {
    const d = mkdtempSync(join(dir, "w-"));
    const path = join(d, "short.gguf");
    await expect(writeGguf(path, {
      metadata: [],
      tensors: [{ name: "t", dims: [4], type: GGML_TYPE.F32, data: () => [Buffer.alloc(15)] }],
    })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    await expect(writeGguf(path, {
      metadata: [],
      tensors: [{ name: "t", dims: [4], type: GGML_TYPE.F32, data: () => [Buffer.alloc(16), Buffer.alloc(1)] }],
    })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
    expect(readdirSync(d)).toEqual([]);
  });

  it("removes the temp file when the producer throws or the write is aborted", async () => {
    const d = mkdtempSync(join(dir, "w-"));
    const path = join(d, "boom.gguf");
    await expect(writeGguf(path, {
      metadata: [],
      tensors: [{
        name: "t", dims: [1 << 20], type: GGML_TYPE.F32,
        *data() {
          yield Buffer.alloc(1 << 20);
          throw new Error("producer failed");
        },
      }],
    })).rejects.toThrow(/producer failed/);
    expect(leftovers(d)).toEqual([]);

    const ac = new AbortController();
    await expect(writeGguf(path, {
      metadata: [],
      tensors: [{
        name: "t", dims: [1 << 20], type: GGML_TYPE.F32,
        *data() {
          yield Buffer.alloc(1 << 20);
          ac.abort();
          yield Buffer.alloc(3 << 20);
        },
      }],
    }, { signal: ac.signal })).rejects.toMatchObject({ code: "ERR_ABORTED" });
    expect(readdirSync(d)).toEqual([]);
  });

  it("validates metadata and tensors before writing", async () => {
    const path = join(dir, "never.gguf");
    const t = (name: string, dims: number[], type: number) => ({ name, dims, type, data: () => [] });
    const cases: Parameters<typeof writeGguf>[1][] = [
      { metadata: [["k", gguf.u8(256)]], tensors: [] },
      { metadata: [["k", gguf.i32(1.5)]], tensors: [] },
      { metadata: [["k", gguf.u64(-1)]], tensors: [] },
      { metadata: [["", gguf.u8(1)]], tensors: [] },
      { metadata: [["k", gguf.u8(1)], ["k", gguf.u8(2)]], tensors: [] },
      { metadata: [["general.alignment", gguf.u32(48)]], tensors: [] },
      { metadata: [], tensors: [t("a", [4], 0), t("a", [4], 0)] },
      { metadata: [], tensors: [t("a", [33], GGML_TYPE.Q4_0)] },
      { metadata: [], tensors: [t("a", [4], 4)] },
      { metadata: [], tensors: [t("a", [1, 1, 1, 1, 1], 0)] },
      { metadata: [], tensors: [t("x".repeat(64), [4], 0)] },
    ];
    for (const c of cases) await expect(writeGguf(path, c)).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });
});

describe("readGguf validation", () => {
  it("reports missing paths and directories", async () => {
    await expectCode(join(dir, "nope.gguf"), "ERR_FILE_NOT_FOUND");
    const sub = join(dir, "a-directory.gguf");
    mkdirSync(sub);
    await expectCode(sub, "ERR_NOT_A_FILE");
  });

  it("rejects files that are not GGUF", async () => {
    await expectCode(file(Buffer.alloc(0)), "ERR_NOT_GGUF");
    await expectCode(file(Buffer.from("GGU")), "ERR_NOT_GGUF");
    await expectCode(file(Buffer.from("GGML and then some more bytes here")), "ERR_NOT_GGUF");
    expect(await expectCode(file(Buffer.from("ggufxxxxxxxxxxxxxxxxxxxx")), "ERR_NOT_GGUF")).toMatch(/magic 'gguf'/);
  });

  it("rejects truncated headers", async () => {
    await expectCode(file(Buffer.from("GGUF")), "ERR_GGUF_TRUNCATED");
    const full = readFileSync(build({ kvs: [encodeKeyValue("general.name", gguf.str("x"))] }));
    for (const keep of [6, 8, 20, 40, full.length - 1]) {
      await expectCode(file(full.subarray(0, keep)), "ERR_GGUF_TRUNCATED");
    }
    // Cut inside the tensor infos, and inside the padding before the data section.
    const info = f32Info("tensor.with.a.longer.name", 8);
    const withTensor = readFileSync(build({ infos: [info], data: Buffer.alloc(32) }));
    const infoEnd = 24 + encodeTensorInfo(info).length;
    await expectCode(file(withTensor.subarray(0, infoEnd - 3)), "ERR_GGUF_TRUNCATED");
    await expectCode(file(withTensor.subarray(0, infoEnd + 2)), "ERR_GGUF_TRUNCATED");
  });

  it("accepts versions 2 and 3 only", async () => {
    expect((await readGguf(build({ version: 2 }))).version).toBe(2);
    expect((await readGguf(build({ version: 3 }))).version).toBe(3);
    expect(await expectCode(build({ version: 1 }), "ERR_GGUF_INVALID")).toMatch(/version 1/);
    await expectCode(build({ version: 0 }), "ERR_GGUF_INVALID");
    await expectCode(build({ version: 4 }), "ERR_GGUF_INVALID");
    expect(await expectCode(build({ version: 0x03000000 }), "ERR_GGUF_INVALID")).toMatch(/endian/);
  });

  it("rejects negative or impossible counts", async () => {
    await expectCode(build({ tensorCount: -1 }), "ERR_GGUF_INVALID");
    await expectCode(build({ kvCount: -1n }), "ERR_GGUF_INVALID");
    await expectCode(build({ tensorCount: 1_000_000_000_000 }), "ERR_GGUF_INVALID");
    await expectCode(build({ kvCount: 2n ** 62n }), "ERR_GGUF_INVALID");
    // One more KV than present: the count still fits (barely), so the file is just short.
    await expectCode(build({ kvs: [encodeKeyValue("a", gguf.str("x".repeat(40)))], kvCount: 2 }), "ERR_GGUF_TRUNCATED");
  });

  it("rejects strings past the end of the file and absurd string lengths", async () => {
    const kv = encodeKeyValue("general.name", gguf.str("abc"));
    // Patch the value's length (after key length 8 + key 12 + type 4) to run past EOF.
    const past = Buffer.from(kv);
    past.writeBigUInt64LE(1000n, 8 + 12 + 4);
    expect(await expectCode(build({ kvs: [past] }), "ERR_GGUF_TRUNCATED")).toMatch(/length 1000/);
    const absurd = Buffer.from(kv);
    absurd.writeBigUInt64LE(2n ** 40n, 8 + 12 + 4);
    await expectCode(build({ kvs: [absurd] }), "ERR_GGUF_INVALID");
    // A key length past EOF.
    const key = Buffer.from(kv);
    key.writeBigUInt64LE(500n, 0);
    await expectCode(build({ kvs: [key] }), "ERR_GGUF_TRUNCATED");
    // A string array element past EOF, and an array count past EOF.
    const arr = Buffer.from(encodeKeyValue("tokens", gguf.strings(["a", "b"])));
    arr.writeBigUInt64LE(99n, arr.length - 9);
    await expectCode(build({ kvs: [arr] }), "ERR_GGUF_TRUNCATED");
    const count = Buffer.from(encodeKeyValue("scores", gguf.numbers(6, [1, 2])));
    count.writeBigUInt64LE(1000n, 8 + 6 + 4 + 4);
    await expectCode(build({ kvs: [count] }), "ERR_GGUF_TRUNCATED");
  });

  it("rejects unknown value types, empty and duplicate keys", async () => {
    await expectCode(build({ kvs: [encodeRawKeyValue("k", 13, Buffer.alloc(8))] }), "ERR_GGUF_INVALID");
    await expectCode(build({ kvs: [encodeRawKeyValue("k", -1, Buffer.alloc(8))] }), "ERR_GGUF_INVALID");
    // Array of arrays, and array of an unknown type.
    const arrOf = (itemType: number) => {
      const p = Buffer.alloc(4 + 8 + 8);
      p.writeInt32LE(itemType, 0);
      p.writeBigUInt64LE(1n, 4);
      return encodeRawKeyValue("k", 9, p);
    };
    await expectCode(build({ kvs: [arrOf(9)] }), "ERR_GGUF_INVALID");
    await expectCode(build({ kvs: [arrOf(77)] }), "ERR_GGUF_INVALID");
    expect((await readGguf(build({ kvs: [arrOf(10)] }))).metadata.get("k")).toEqual({ type: 9, itemType: 10, value: [0] });
    expect(await expectCode(build({ kvs: [encodeRawKeyValue("", 0, Buffer.from([1])), encodeKeyValue("pad", gguf.u8(1))] }), "ERR_GGUF_INVALID")).toMatch(/empty/);
    expect(await expectCode(build({ kvs: [encodeKeyValue("dup", gguf.u8(1)), encodeKeyValue("dup", gguf.u8(2))] }), "ERR_GGUF_INVALID")).toMatch(/duplicate/);
  });

  it("checks general.alignment", async () => {
    await expectCode(build({ kvs: [encodeKeyValue("general.alignment", gguf.u64(32))] }), "ERR_GGUF_INVALID");
    await expectCode(build({ kvs: [encodeKeyValue("general.alignment", gguf.u32(0))] }), "ERR_GGUF_INVALID");
    await expectCode(build({ kvs: [encodeKeyValue("general.alignment", gguf.u32(48))] }), "ERR_GGUF_INVALID");
    const ok = await readGguf(build({
      kvs: [encodeKeyValue("general.alignment", gguf.u32(16))],
      infos: [f32Info("a", 2), f32Info("b", 2, 16)],
      alignment: 16,
      data: Buffer.alloc(32),
    }));
    expect(ok.alignment).toBe(16);
    expect(ok.tensors.map((t) => t.offset - ok.dataOffset)).toEqual([0, 16]);
  });

  it("checks tensor shapes and types", async () => {
    const one = (info: TensorInfoFields, data = 4096) => build({ infos: [info], data: Buffer.alloc(data) });
    expect((await readGguf(one({ name: "ok", dims: [32, 2], type: GGML_TYPE.Q4_0, offset: 0 }))).tensors[0]?.size).toBe(36);
    await expectCode(one({ name: "t", dims: [], type: 0, offset: 0 }), "ERR_GGUF_INVALID");
    await expectCode(one({ name: "t", dims: [1, 1, 1, 1, 1], type: 0, offset: 0 }), "ERR_GGUF_INVALID");
    await expectCode(one({ name: "t", dims: [4, 0], type: 0, offset: 0 }), "ERR_GGUF_INVALID");
    await expectCode(one({ name: "t", dims: [-4], type: 0, offset: 0 }), "ERR_GGUF_INVALID");
    expect(await expectCode(one({ name: "t", dims: [2n ** 32n, 2n ** 32n], type: 0, offset: 0 }), "ERR_GGUF_INVALID")).toMatch(/too many elements/);
    expect(await expectCode(one({ name: "t", dims: [33], type: GGML_TYPE.Q4_0, offset: 0 }), "ERR_GGUF_INVALID")).toMatch(/block size/);
    for (const type of [4, 5, 31, 36, 43, 1000, -1]) {
      expect(await expectCode(one({ name: "t", dims: [256], type, offset: 0 }), "ERR_GGUF_INVALID")).toMatch(/ggml type/);
    }
    await expectCode(one({ name: "x".repeat(64), dims: [4], type: 0, offset: 0 }), "ERR_GGUF_INVALID");
    expect((await readGguf(one({ name: "x".repeat(63), dims: [4], type: 0, offset: 0 }))).tensors[0]?.name).toHaveLength(63);
  });

  it("checks tensor names and data placement", async () => {
    const data = Buffer.alloc(256);
    expect(await expectCode(build({ infos: [f32Info("a", 4), f32Info("a", 4, 32)], data }), "ERR_GGUF_INVALID")).toMatch(/duplicate tensor/);
    expect(await expectCode(build({ infos: [f32Info("a", 4, 16)], data }), "ERR_GGUF_INVALID")).toMatch(/alignment/);
    expect(await expectCode(build({ infos: [f32Info("a", 16), f32Info("b", 16, 32)], data }), "ERR_GGUF_INVALID")).toMatch(/overlap/);
    expect(await expectCode(build({ infos: [f32Info("a", 4), f32Info("b", 4, 0)], data }), "ERR_GGUF_INVALID")).toMatch(/overlap/);
    // Not overlapping but not packed in order (llama.cpp requires packing).
    expect(await expectCode(build({ infos: [f32Info("a", 4), f32Info("b", 4, 64)], data }), "ERR_GGUF_INVALID")).toMatch(/expected 32/);
    expect(await expectCode(build({ infos: [f32Info("a", 4, 32), f32Info("b", 4, 0)], data }), "ERR_GGUF_INVALID")).toMatch(/expected 0/);
    // Data past the end of the file.
    expect(await expectCode(build({ infos: [f32Info("a", 4), f32Info("b", 64, 32)], data: Buffer.alloc(32 + 255) }), "ERR_GGUF_TRUNCATED")).toMatch(/'b'/);
    const ok = await readGguf(build({ infos: [f32Info("a", 4), f32Info("b", 64, 32)], data: Buffer.alloc(32 + 256) }));
    expect(ok.tensors[1]?.offset).toBe(ok.dataOffset + 32);
  });

  it("reads the header of a huge sparse file without reading its data", async () => {
    // A 16 GiB f32 tensor; the file is sparse, so this costs no disk.
    const info: TensorInfoFields = { name: "huge", dims: [1024, 1024, 1024, 4], type: GGML_TYPE.F32, offset: 0 };
    const path = build({ kvs: [encodeKeyValue("general.architecture", gguf.str("llama"))], infos: [info] });
    const headerLen = readFileSync(path).length;
    const fd = openSync(path, "r+");
    try {
      ftruncateSync(fd, headerLen + 16 * 1024 ** 3);
    } finally {
      closeSync(fd);
    }
    const t0 = performance.now();
    const f = await readGguf(path);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(f.fileSize).toBe(headerLen + 16 * 1024 ** 3);
    expect(f.tensors[0]?.size).toBe(16 * 1024 ** 3);
    expect(f.tensors[0]?.elements).toBe(4 * 1024 ** 3);
    rmSync(path);
  });

  it("encodes strings as length-prefixed UTF-8", () => {
    const s = encodeString("ü");
    expect([...s]).toEqual([2, 0, 0, 0, 0, 0, 0, 0, 0xc3, 0xbc]);
  });

  it("writes raw files atomically", async () => {
    const d = mkdtempSync(join(dir, "raw-"));
    const path = join(d, "raw.gguf");
    await writeFileAtomic(path, async (write) => {
      await write(Buffer.from("GGUF"));
    });
    expect(readFileSync(path).toString()).toBe("GGUF");
    expect(readdirSync(d)).toEqual(["raw.gguf"]);
  });
});

describe("real vocabulary files", () => {
  it("reads ggml-vocab-llama-spm.gguf", async () => {
    const f = await readGguf(defaultVocabPath());
    expect(f.version).toBe(3);
    expect(f.tensors).toHaveLength(0);
    expect(metadataString(f, "general.architecture")).toBe("llama");
    expect(metadataString(f, "tokenizer.ggml.model")).toBe("llama");
    expect(metadataArrayLength(f, "tokenizer.ggml.tokens")).toBe(32000);
    const tokens = f.metadata.get("tokenizer.ggml.tokens");
    expect(tokens?.type === 9 && tokens.itemType === 8 ? tokens.value.slice(0, 3) : undefined).toEqual(["<unk>", "<s>", "</s>"]);
    const scores = f.metadata.get("tokenizer.ggml.scores");
    expect(scores?.type === 9 ? scores.itemType : undefined).toBe(GGUF_VALUE_TYPE.FLOAT32);
    expect(metadataNumber(f, "tokenizer.ggml.bos_token_id")).toBe(1);
    expect(f.metadata.get("tokenizer.ggml.add_bos_token")).toEqual({ type: 7, value: true });
    expect(f.dataOffset).toBe(f.fileSize);
  });

  it("reads a large BPE vocabulary identically with both readers", async () => {
    const f = await readGguf(defaultVocabPath("ggml-vocab-llama-bpe.gguf"));
    expect(metadataArrayLength(f, "tokenizer.ggml.tokens")).toBe(128256);
    expect(metadataArrayLength(f, "tokenizer.ggml.merges")).toBeGreaterThan(100000);
    const g = readGgufSync(f.path);
    expect(g.metadata.get("tokenizer.ggml.merges")).toEqual(f.metadata.get("tokenizer.ggml.merges"));
  });
});
