/**
 * Reading a GGUF file's header: {@link readGguf} and {@link readGgufSync} check that the path is
 * a regular file, drive the parser of `parser.ts` with bounded, buffered reads through a file
 * descriptor, and (by default) run {@link checkModel} on the result. Tensor data is never
 * touched, so a 16 GB model costs a few reads.
 *
 * @packageDocumentation
 */
import { closeSync, fstatSync, openSync, readSync, statSync } from "node:fs";
import type { Stats } from "node:fs";
import { open, stat } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { LlamemError, invalidArgument } from "../errors.js";
import { checkModel, checkModelSteps } from "./check.js";
import type { GgufFile } from "./format.js";
import { Cursor, Slicer, parseGguf } from "./parser.js";

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

/** A path must be a non-empty string: anything else would reach fs as something else (a URL, a Buffer) or throw untyped. */
function checkPath(path: unknown): void {
  if (typeof path !== "string" || path.length === 0) invalidArgument("the model path must be a non-empty string");
}

/**
 * Reads and validates the header of a GGUF file.
 *
 * @throws {LlamemError} ERR_FILE_NOT_FOUND, ERR_NOT_A_FILE, ERR_NOT_GGUF, ERR_GGUF_TRUNCATED,
 *   ERR_GGUF_INVALID, ERR_UNSUPPORTED (see {@link checkModel}) or ERR_IO.
 */
export async function readGguf(path: string, options: ReadGgufOptions = {}): Promise<GgufFile> {
  checkPath(path);
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
  checkPath(path);
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
