/**
 * Faults (issue 6, parts 8 and 9): an absurd context size fails with a typed error and leaves
 * the model usable; kill -9 or a full disk during a state save never corrupts the file at the
 * path (saveStateFile writes a temp file, fsyncs it and renames it over the old one); a model
 * file that is deleted, replaced or changed while loaded behaves as docs/reliability.md says.
 */
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { contextSide } from "../../lib/internal/handles.js";
import { loadModel, type Context, type Model } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { FIXTURES, ROOT, describeEnd, ensureDist, lastJson, pool, reportFigure, runNode } from "./helpers/child.js";
import { mediumModel } from "./helpers/model-builder.js";
import { codeOf } from "../helpers/errors.js";


let tiny: string;
let dir: string;

beforeAll(async () => {
  ensureDist();
  tiny = await tinyModel("q8_0");
  dir = mkdtempSync(join(tmpdir(), "llamem-faults-"));
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function overcommit(): string {
  try {
    return readFileSync("/proc/sys/vm/overcommit_memory", "utf8").trim();
  } catch {
    return "unknown";
  }
}

describe("absurd context sizes", () => {
  it("rejects sizes past the limit as ERR_INVALID_ARGUMENT and impossible budgets as ERR_INSUFFICIENT_MEMORY", async () => {
    const model = await loadModel(tiny);
    try {
      for (const contextSize of [2 ** 24 + 1, 2 ** 31, 2 ** 53, -5, 0.5]) {
        expect(await codeOf(model.createContext({ contextSize }))).toBe("ERR_INVALID_ARGUMENT");
      }
      // contextSize "auto" is fitted from llama.cpp's dry run, before anything is allocated.
      expect(await codeOf(model.createContext({ contextSize: "auto", maxRam: 1024 }))).toBe("ERR_INSUFFICIENT_MEMORY");
      await using ctx = await model.createContext({ contextSize: 128, threads: 1 });
      expect((await ctx.complete("Hello", { maxTokens: 3 })).generatedTokens).toBe(3);
    } finally {
      await model.dispose();
    }
  });

  // 2^24 tokens of the medium model's KV cache is 128 GiB: llama.cpp's allocation fails at once
  // where the kernel refuses allocations larger than memory (overcommit 0 or 2). With overcommit 1
  // or a machine that big, the allocation could succeed and be touched: skip there.
  const safe = (overcommit() === "0" || overcommit() === "2") && totalmem() < 96 * 2 ** 30;
  it.runIf(safe)("fails a 2^24-token context with ERR_CONTEXT_CREATE instead of aborting, and the model stays usable", async () => {
    const model = await loadModel(await mediumModel());
    try {
      const code = await codeOf(model.createContext({ contextSize: 2 ** 24, threads: 1 }));
      expect(["ERR_CONTEXT_CREATE", "ERR_OUT_OF_MEMORY"]).toContain(code);
      await using ctx = await model.createContext({ contextSize: 128, threads: 1 });
      expect((await ctx.complete("Hello", { maxTokens: 3 })).generatedTokens).toBe(3);
    } finally {
      await model.dispose();
    }
  }, 60_000);
});

/** Checks that `path` holds a complete state: it restores into `ctx` with the tokens it lists. */
async function expectCompleteState(ctx: Context, path: string): Promise<number> {
  await ctx.sequence(0).loadStateFile(path);
  const n = ctx.sequence(0).tokens.length;
  expect(n).toBeGreaterThan(1000);
  const [, max] = contextSide(ctx).native.seqPosRange(0);
  expect(max + 1).toBe(n);
  return n;
}

describe("kill -9 during state saves", () => {
  let model: Model;
  let ctx: Context;
  beforeAll(async () => {
    model = await loadModel(tiny);
    ctx = await model.createContext({ contextSize: 4096, threads: 1 });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  it("children killed at random moments (30; LLAMEM_KILL_TRIALS): the file is always absent or a complete, loadable state", async () => {
    const trials = Number(process.env.LLAMEM_KILL_TRIALS ?? 30);
    // Seeded delays, so a failure can be replayed: 0..250 ms after the first save could start.
    let s = 12345;
    const delays = Array.from({ length: trials }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31), s % 250));
    const outcomes = await pool(delays, 2, async (delay, i) => {
      const trialDir = join(dir, `kill-${i}`);
      mkdirSync(trialDir);
      const statePath = join(trialDir, "state.bin");
      const child = spawn(process.execPath, [join(FIXTURES, "save-child.mjs"), tiny, statePath], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
      let saves = 0;
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`save-child never got ready: ${stderr}`)), 30_000);
        createInterface({ input: child.stdout }).on("line", (line) => {
          const m = JSON.parse(line) as { ready?: boolean; saved?: number };
          if (m.ready) {
            clearTimeout(timer);
            setTimeout(() => {
              child.kill("SIGKILL");
              resolve();
            }, delay);
          }
          if (m.saved !== undefined) saves = m.saved + 1;
        });
      });
      expect(await exited).toBe("SIGKILL");
      const leftovers = readdirSync(trialDir).filter((f) => f !== "state.bin");
      return { statePath, saves, exists: existsSync(statePath), leftovers: leftovers.length };
    });
    let complete = 0;
    for (const o of outcomes) {
      if (!o.exists) {
        // Killed before the first rename: nothing at the path (never a partial file).
        expect(o.saves).toBe(0);
        continue;
      }
      await expectCompleteState(ctx, o.statePath);
      complete++;
    }
    expect(complete).toBeGreaterThan(trials / 2);
    // Temp files left by kills mid-write are never at the path; they show the kills hit writes.
    const interrupted = outcomes.filter((o) => o.leftovers > 0).length;
    expect(interrupted + complete).toBeGreaterThan(0);
    reportFigure("kill-9 trials", { trials, complete, absent: trials - complete, killedMidWrite: interrupted, saves: outcomes.reduce((a, o) => a + o.saves, 0) });
  }, 120_000);
});

/**
 * Runs `fn` with a fresh tmpfs of `size` mounted at a new folder, and unmounts it whatever
 * happens. Returns false (without running `fn`) where this process may not mount: not Linux, not
 * root, or no CAP_SYS_ADMIN (containers, CI).
 */
async function withTmpfs(size: string, fn: (dir: string) => Promise<void>): Promise<boolean> {
  if (process.platform !== "linux" || process.getuid?.() !== 0) return false;
  const mnt = mkdtempSync(join(tmpdir(), "llamem-tinyfs-"));
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", mnt], { encoding: "utf8" });
  if (r.status !== 0) {
    rmSync(mnt, { recursive: true, force: true });
    return false;
  }
  try {
    await fn(mnt);
  } finally {
    spawnSync("umount", [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
  return true;
}

describe("a full disk (a 1 MiB tmpfs, where this process may mount one)", () => {
  it("a state save fails with ERR_IO, keeps the previous file intact and leaves no temp file", async (t) => {
    const ran = await withTmpfs("1m", async (fsDir) => {
      const model = await loadModel(tiny);
      try {
        const ctx = await model.createContext({ contextSize: 8192, threads: 1 });
        const seq = ctx.sequence(0);
        // ~1500 tokens of this model's KV cache: about 400 KB.
        await seq.evaluate(Array.from({ length: 1500 }, (_, i) => 300 + (i % 900)));
        const path = join(fsDir, "state.bin");
        await seq.saveStateFile(path);
        const good = readFileSync(path);
        // ~6000 tokens: about 1.6 MB, more than the filesystem holds.
        await seq.evaluate(Array.from({ length: 4500 }, (_, i) => 500 + (i % 900)));
        expect(await codeOf(seq.saveStateFile(path))).toBe("ERR_IO");
        expect(readFileSync(path).equals(good)).toBe(true);
        expect(readdirSync(fsDir)).toEqual(["state.bin"]);
        await seq.loadStateFile(path);
        expect(seq.tokens.length).toBe(1500);
        // A later save that fits works again.
        await seq.removeTokens(1000, 1500);
        await seq.saveStateFile(path);
        await seq.loadStateFile(path);
        expect(seq.tokens.length).toBe(1000);
        await ctx.dispose();
      } finally {
        await model.dispose();
      }
    });
    if (!ran) t.skip();
  });

  it("a GGUF write that runs out of space fails with ERR_IO and leaves no partial model behind", async (t) => {
    const { writeGguf } = await import("../../lib/gguf/write.js");
    const ran = await withTmpfs("1m", async (fsDir) => {
      const target = join(fsDir, "big.gguf");
      const chunk = new Uint8Array(256 * 1024);
      const code = await codeOf(writeGguf(target, {
        metadata: [["general.architecture", { type: 8, value: "llama" }]],
        tensors: [{ name: "x.weight", dims: [1024, 1024], type: 0, data: function* () {
          for (let i = 0; i < 16; i++) yield chunk;
        } }],
      }));
      expect(code).toBe("ERR_IO");
      expect(readdirSync(fsDir)).toEqual([]);
    });
    if (!ran) t.skip();
  });
});

describe("the model file changes while loaded (Linux)", () => {
  const run = async (scenario: string, mode: "mmap" | "read") => {
    const copy = join(dir, `model-${scenario}-${mode}.gguf`);
    copyFileSync(await tinyModel("f16"), copy);
    const r = await runNode([join(FIXTURES, "mmap-child.mjs"), scenario, copy, mode], { timeoutMs: 60_000 });
    return { r, rep: lastJson<{ same: boolean; code: string | null }>(r.stdout) };
  };

  it.runIf(process.platform === "linux")("deleting or renaming over the file: generation goes on, unchanged (the mapping holds the inode)", async () => {
    for (const mode of ["mmap", "read"] as const) {
      for (const scenario of ["delete", "replace"]) {
        const { r, rep } = await run(scenario, mode);
        expect(r.code, describeEnd(r)).toBe(0);
        expect(rep, describeEnd(r)).toEqual({ scenario, mode, same: true, code: null });
      }
    }
  });

  it.runIf(process.platform === "linux")("truncating the file in place: SIGBUS with mmap (documented), no effect when read into memory", async () => {
    const mapped = await run("truncate", "mmap");
    // Under AddressSanitizer (npm run build:asan) the SIGBUS is reported by ASan, which exits 1.
    const asanBus = /AddressSanitizer:DEADLYSIGNAL|AddressSanitizer: BUS/.test(mapped.r.stderr);
    expect(mapped.r.signal === "SIGBUS" || asanBus, describeEnd(mapped.r)).toBe(true);
    const read = await run("truncate", "read");
    expect(read.r.code, describeEnd(read.r)).toBe(0);
    expect(read.rep).toMatchObject({ same: true, code: null });
  });

  it.runIf(process.platform === "linux")("overwriting the data in place: the mapping sees the new bytes; a model read into memory does not", async () => {
    const mapped = await run("overwrite", "mmap");
    expect(mapped.r.code, describeEnd(mapped.r)).toBe(0);
    expect(mapped.rep).toMatchObject({ same: false, code: null });
    const read = await run("overwrite", "read");
    expect(read.r.code, describeEnd(read.r)).toBe(0);
    expect(read.rep).toMatchObject({ same: true, code: null });
  });
});

// Keep the helper used: a state file written by hand that is not a state is refused, typed.
describe("corrupt state files", () => {
  it("refuses truncated, foreign and garbage state files with typed errors", async () => {
    const model = await loadModel(tiny);
    try {
      const ctx = await model.createContext({ contextSize: 2048, threads: 1 });
      const seq = ctx.sequence(0);
      await seq.evaluate(Array.from({ length: 200 }, (_, i) => 300 + i));
      const state = await seq.saveState();
      const cases: [string, Buffer][] = [
        ["empty", Buffer.alloc(0)],
        ["garbage", Buffer.from("hello world, not a state")],
        ["header only", state.subarray(0, 12 + state.readUInt32LE(8))],
        ["truncated data", state.subarray(0, state.length - 1000)],
        ["flipped data", Buffer.concat([state.subarray(0, state.length - 4000), Buffer.alloc(4000, 0xff)])],
        ["length past the end", Buffer.concat([state.subarray(0, 8), Buffer.from([0xff, 0xff, 0xff, 0x7f]), state.subarray(12)])],
      ];
      for (const [name, buf] of cases) {
        const file = join(dir, `state-${name.replace(/\s/g, "-")}.bin`);
        writeFileSync(file, buf);
        const code = await codeOf(seq.loadStateFile(file));
        expect(["ERR_STATE_MISMATCH", "ERR_CONTEXT_FULL", undefined], name).toContain(code);
      }
      expect(await codeOf(seq.loadStateFile(join(dir, "missing.bin")))).toBe("ERR_FILE_NOT_FOUND");
      // The context still works after all that.
      await seq.restoreState(state);
      expect(seq.tokens.length).toBe(200);
      await ctx.dispose();
    } finally {
      await model.dispose();
    }
  });
});
