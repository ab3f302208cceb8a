/**
 * Files on disk, safely: atomic writes (a temp file of its own in the same directory, written,
 * optionally fsynced, then renamed over the target) and bounded reads of regular files (never a
 * directory, FIFO or device, and never more than the size the file had when opened). Saved
 * states, saved sessions and GGUF files all go through here.
 * @internal
 */
import { randomBytes } from "node:crypto";
import { constants as fsConstants } from "node:fs";
import type { Stats } from "node:fs";
import { open, rename, stat, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { LlamemError, invalidArgument } from "./errors.js";

function checkPath(path: unknown): void {
  if (typeof path !== "string" || path.length === 0 || path.includes("\0")) invalidArgument("the path must be a non-empty string without NUL bytes");
}

/** What kind of thing a non-regular file is, for messages. */
function kindOf(st: Stats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  return "not a regular file";
}

function notAFile(path: string, st: Stats): LlamemError {
  const kind = kindOf(st);
  return new LlamemError("ERR_NOT_A_FILE", kind.startsWith("a ") ? `${path} is ${kind}, not a regular file` : `${path} is ${kind}`);
}

// ---------------------------------------------------------------------------------------------
// Bounded reads.

/** Read-only and, on POSIX, non-blocking: opening a FIFO swapped in after the stat must not hang. */
const READ_FLAGS = fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0);

function readError(path: string, err: unknown): LlamemError {
  if (err instanceof LlamemError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const message = `cannot read ${path}: ${err instanceof Error ? err.message : String(err)}`;
  if (code === "ENOENT" || code === "ENOTDIR") return new LlamemError("ERR_FILE_NOT_FOUND", message, { cause: err });
  if (code === "EISDIR") return new LlamemError("ERR_NOT_A_FILE", `${path} is a directory, not a regular file`, { cause: err });
  return new LlamemError("ERR_IO", message, { cause: err });
}

/**
 * Reads a whole regular file: at most the size it had when opened, so a file that grows while
 * it is read, a FIFO or a device (`/dev/zero`) can never make this read forever.
 *
 * @throws {LlamemError} ERR_FILE_NOT_FOUND, ERR_NOT_A_FILE (a directory, FIFO, socket or device)
 *   or ERR_IO, naming the path.
 */
export async function readWholeFile(path: string): Promise<Buffer> {
  checkPath(path);
  let st: Stats;
  try {
    st = await stat(path);
  } catch (err) {
    throw readError(path, err);
  }
  if (!st.isFile()) throw notAFile(path, st);
  let fh: FileHandle;
  try {
    fh = await open(path, READ_FLAGS);
  } catch (err) {
    throw readError(path, err);
  }
  try {
    // The descriptor's own stat, in case the path was replaced between the stat and the open.
    const fst = await fh.stat();
    if (!fst.isFile()) throw notAFile(path, fst);
    const size = fst.size;
    const buf = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const { bytesRead } = await fh.read(buf, got, size - got, got);
      if (bytesRead === 0) break; // the file shrank while being read
      got += bytesRead;
    }
    return got === size ? buf : Buffer.from(buf.subarray(0, got));
  } catch (err) {
    throw readError(path, err);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Atomic writes.

/** Coalesces small writes; large chunks go straight through. */
class Sink {
  private pending = Buffer.allocUnsafe(4 << 20);
  private used = 0;
  written = 0;

  constructor(private readonly fh: FileHandle, private readonly progress: (() => void) | undefined) {}

  async write(chunk: Uint8Array): Promise<void> {
    if (chunk.length === 0) return;
    if (this.used + chunk.length <= this.pending.length) {
      this.pending.set(chunk, this.used);
      this.used += chunk.length;
      if (this.used === this.pending.length) await this.flush();
      return;
    }
    await this.flush();
    if (chunk.length >= this.pending.length / 2) {
      await this.writeAll(chunk);
    } else {
      this.pending.set(chunk, 0);
      this.used = chunk.length;
    }
  }

  async flush(): Promise<void> {
    if (this.used === 0) return;
    await this.writeAll(this.pending.subarray(0, this.used));
    this.used = 0;
  }

  private async writeAll(b: Uint8Array): Promise<void> {
    let off = 0;
    while (off < b.length) {
      const { bytesWritten } = await this.fh.write(b, off, b.length - off);
      off += bytesWritten;
    }
    this.written += b.length;
    this.progress?.();
  }
}

function toIoError(path: string, err: unknown): LlamemError {
  if (err instanceof LlamemError) return err;
  return new LlamemError("ERR_IO", `cannot write ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}


/**
 * Writes raw parts to `path` atomically: a temp file of this call's own in the same directory
 * (`<path>.tmp-<pid>-<random>`, so concurrent writes to one path never share one), then a rename
 * over `path`, removing the temp file on any error. `body` writes through `write` (buffered) and
 * may use the handle directly. Returns the bytes written. The building block of saved states,
 * saved sessions and `writeGguf`, exported for test files whose bytes are assembled by hand.
 *
 * @throws {LlamemError} ERR_NOT_A_FILE when `path` exists and is not a regular file (a directory,
 *   FIFO, device...); ERR_IO when writing fails; whatever `body` throws as a LlamemError.
 */
export async function writeFileAtomic(
  path: string,
  body: (write: (chunk: Uint8Array) => Promise<void>, fh: FileHandle) => Promise<void>,
  opts: { fsync?: boolean; onWritten?: (written: number) => void } = {},
): Promise<number> {
  checkPath(path);
  let existing: Stats | undefined;
  try {
    existing = await stat(path);
  } catch {
    // Absent is the common case; any other problem surfaces when the temp file is created or renamed.
  }
  if (existing && !existing.isFile()) throw notAFile(path, existing);
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  let fh: FileHandle | undefined;
  try {
    fh = await open(tmp, "wx");
    const handle = fh;
    const sink: Sink = new Sink(handle, opts.onWritten ? () => opts.onWritten?.(sink.written) : undefined);
    await body((chunk) => sink.write(chunk), handle);
    await sink.flush();
    if (opts.fsync) await handle.sync();
    await handle.close();
    fh = undefined;
    await rename(tmp, path);
    return sink.written;
  } catch (err) {
    if (fh) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw toIoError(path, err);
  }
}
