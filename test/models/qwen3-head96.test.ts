/**
 * The feature matrix on the qwen3 model whose heads are 96 wide while n_embd / n_head is 64, and
 * the crash it guards against: llama.cpp's K-shift of a quantized K cache has no Hadamard
 * rotation for heads that are not a multiple of 64 and dereferences a null tensor. With a q8_0 or
 * q4_0 K cache the context must say it cannot shift, and removeTokens must re-evaluate; it runs
 * in a child process, so a crash fails the test instead of killing the runner.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { expect } from "vitest";
import { describeMatrix, longText, test, type MatrixOptions } from "./matrix.js";

const CHILD = join(__dirname, "remove-child.mjs");
const opts: MatrixOptions = { removeInChild: ["q8_0"] };

describeMatrix("qwen3-head96", opts, (get) => {
  it96("q8_0");
  it96("q4_0");

  function it96(kvType: "q8_0" | "q4_0"): void {
    test(opts, `removeTokens with a ${kvType} K cache re-evaluates (never shifts, never crashes) and equals a fresh context`, async () => {
      const { path, shape } = get();
      expect(shape.headDim % 64).not.toBe(0);
      expect(shape.nEmbd / shape.nHead).toBe(64);
      const config = { kvType, text: longText(40, 1), start: 4, end: 12, n: 8 };
      const r = spawnSync(process.execPath, [CHILD, path, JSON.stringify(config)], { encoding: "utf8", timeout: 120_000 });
      expect(r.signal, r.stderr.slice(-2000)).toBeNull();
      expect(r.status, r.stderr.slice(-2000)).toBe(0);
      const out = JSON.parse(r.stdout.trim().split("\n").at(-1) as string) as { canShift: boolean; shifted: boolean; tokens: number[]; kept: number[]; ids: number[]; fresh: number[] };
      expect(out.canShift).toBe(false);
      expect(out.shifted).toBe(false);
      expect(out.kept).toEqual([...out.tokens.slice(0, 4), ...out.tokens.slice(12)]);
      expect(out.ids).toEqual(out.fresh);
    });
  }
});
