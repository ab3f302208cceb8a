import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readWholeFile, writeFileAtomic } from "../../lib/files.js";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "llamem-files-"));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const posix = process.platform !== "win32";

describe("readWholeFile", () => {
  it("reads a regular file", async () => {
    const p = join(dir, "a.bin");
    writeFileSync(p, Buffer.from([1, 2, 3]));
    expect([...(await readWholeFile(p))]).toEqual([1, 2, 3]);
  });

  it("refuses a missing file, a directory and devices", async () => {
    await expect(readWholeFile(join(dir, "missing"))).rejects.toMatchObject({ code: "ERR_FILE_NOT_FOUND" });
    await expect(readWholeFile(dir)).rejects.toMatchObject({ code: "ERR_NOT_A_FILE" });
    if (posix) await expect(readWholeFile("/dev/zero")).rejects.toMatchObject({ code: "ERR_NOT_A_FILE" });
  });

  it.skipIf(!posix)("refuses a FIFO without blocking on it", async () => {
    const fifo = join(dir, "fifo");
    execFileSync("mkfifo", [fifo]);
    await expect(readWholeFile(fifo)).rejects.toMatchObject({ code: "ERR_NOT_A_FILE" });
  });
});

describe("writeFileAtomic", () => {
  it("writes, replaces, and leaves no temp file", async () => {
    const p = join(dir, "w.bin");
    await writeFileAtomic(p, async (write) => write(Buffer.from("one")));
    expect(await writeFileAtomic(p, async (write) => write(Buffer.from("two!")), { fsync: true })).toBe(4);
    expect(readFileSync(p, "utf8")).toBe("two!");
    expect(readdirSync(dir).filter((f) => f.startsWith("w.bin.tmp"))).toEqual([]);
  });

  it("refuses a target that is a directory", async () => {
    const d = join(dir, "sub");
    mkdirSync(d);
    await expect(writeFileAtomic(d, async (write) => write(Buffer.from("x")))).rejects.toMatchObject({ code: "ERR_NOT_A_FILE" });
    expect(readdirSync(dir).filter((f) => f.startsWith("sub.tmp"))).toEqual([]);
  });

  it("gives concurrent writes to one path temp files of their own", async () => {
    const p = join(dir, "c.bin");
    const bodies = Array.from({ length: 8 }, (_, i) => Buffer.alloc(64 * 1024, i));
    await Promise.all(bodies.map((b) => writeFileAtomic(p, async (write) => {
      await write(b.subarray(0, 1000));
      await new Promise((r) => setImmediate(r));
      await write(b.subarray(1000));
    })));
    const got = readFileSync(p);
    expect(bodies.some((b) => b.equals(got))).toBe(true);
    expect(readdirSync(dir).filter((f) => f.startsWith("c.bin.tmp"))).toEqual([]);
  });

  it("removes the temp file when the body fails", async () => {
    const p = join(dir, "f.bin");
    await expect(writeFileAtomic(p, async () => {
      throw new Error("boom");
    })).rejects.toMatchObject({ code: "ERR_IO" });
    expect(existsSync(p)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith("f.bin.tmp"))).toEqual([]);
  });
});
