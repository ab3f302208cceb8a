/**
 * `llamem make-model`, run as a real process. Needs dist/ built first (npx tsc -p tsconfig.json).
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BAR_EMPTY, BAR_FILLED } from "../../lib/cli/output.js";
import { assertBuilt, runCli, tempDir } from "./run.js";

const tmp = tempDir();

beforeAll(() => assertBuilt());
afterAll(() => tmp.cleanup());

describe("llamem make-model", () => {
  it("writes a tiny model that inspect reads and prompt runs", async () => {
    const out = join(tmp.dir, "tiny-q4.gguf");
    const r = await runCli(["make-model", out, "--preset", "tiny", "--type", "q4_0", "--seed", "5"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^wrote .*tiny-q4\.gguf: tiny q4_0, .* 21 tensors, .*vocabulary 32000\n$/);
    // No terminal: no progress bar drawn on stderr.
    expect(r.stderr).toBe("");
    expect(statSync(out).size).toBeGreaterThan(1 << 20);
    // The atomic write left no temp file behind.
    expect(readdirSync(tmp.dir).filter((f) => f.startsWith("tiny-q4"))).toEqual(["tiny-q4.gguf"]);

    const info = await runCli(["inspect", out, "--json"]);
    expect(info.code, info.stderr).toBe(0);
    const json = JSON.parse(info.stdout) as { name: string; metadata: Record<string, unknown> };
    expect(json.name).toBe("llamem synthetic tiny q4_0");
    expect(json.metadata["llamem.synthetic.seed"]).toBe(5);

    const gen = await runCli(["prompt", "-m", out, "--threads", "1", "-n", "4", "--json", "Hello"]);
    expect(gen.code, gen.stderr).toBe(0);
    expect((JSON.parse(gen.stdout) as { generatedTokens: number }).generatedTokens).toBeGreaterThan(0);
  }, 60_000);

  it("is quiet with --quiet", async () => {
    const out = join(tmp.dir, "quiet.gguf");
    const r = await runCli(["make-model", out, "--preset", "tiny", "--type", "q8_0", "--quiet"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).not.toContain(BAR_FILLED);
    expect(r.stderr).not.toContain(BAR_EMPTY);
    expect(existsSync(out)).toBe(true);
  }, 60_000);

  it("exits 2 for a missing or unknown preset and a bad type or seed", async () => {
    const out = join(tmp.dir, "bad.gguf");
    for (const args of [
      [],
      ["--preset", "70b"],
      ["--preset", "tiny", "--type", "q2_k"],
      ["--preset", "tiny", "--seed", "-1"],
    ]) {
      const r = await runCli(["make-model", out, ...args]);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr).toMatch(/^llamem: /);
    }
    expect(existsSync(out)).toBe(false);
  }, 60_000);

  it("exits 3 for a missing vocabulary file", async () => {
    const r = await runCli(["make-model", join(tmp.dir, "x.gguf"), "--preset", "tiny", "--vocab", join(tmp.dir, "no-vocab.gguf")]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^llamem: /);
  }, 30_000);
});
