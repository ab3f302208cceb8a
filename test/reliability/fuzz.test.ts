/**
 * A short, seeded run of scripts/fuzz.mjs (issue 6, part 2): 200 mutations of a small valid
 * model, loaded, run and disposed in batched child processes. Zero crashes, hangs and untyped
 * errors. `npm run fuzz` is the long version.
 */
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ROOT, describeEnd, ensureDist, lastJson, reportFigure, runNode } from "./helpers/child.js";

interface FuzzSummary {
  cases: number;
  crashes: number;
  hangs: number;
  untyped: number;
  stages: Record<string, number>;
  codes: Record<string, number>;
  failures: { file: string; mutations: string[]; stderr: string }[];
}

beforeAll(() => ensureDist());

describe("GGUF mutation fuzzing", () => {
  it("survives 200 seeded mutations without a crash, a hang or an untyped error", async () => {
    const r = await runNode([join(ROOT, "scripts", "fuzz.mjs"), "--cases", "200", "--seed", "1", "--time-limit", "20000", "--json"], {
      timeoutMs: 120_000,
    });
    const summary = lastJson<FuzzSummary>(r.stdout);
    expect(summary, describeEnd(r)).toBeDefined();
    const s = summary as FuzzSummary;
    reportFigure("fuzz (short)", s);
    expect(s.failures, JSON.stringify(s.failures, null, 2)).toEqual([]);
    expect(s.crashes).toBe(0);
    expect(s.hangs).toBe(0);
    expect(s.untyped).toBe(0);
    expect(s.cases).toBe(200);
    // The mutations reach every layer: rejected by the validator, by llama.cpp, and run to the end.
    expect(s.codes.ERR_GGUF_INVALID ?? 0).toBeGreaterThan(0);
    expect(s.stages.done ?? 0).toBeGreaterThan(0);
    expect(r.code, describeEnd(r)).toBe(0);
  });

  it("is reproducible: the same seed gives the same outcomes", async () => {
    const run = async () => lastJson<FuzzSummary>((await runNode([join(ROOT, "scripts", "fuzz.mjs"), "--cases", "60", "--seed", "7", "--json"], { timeoutMs: 120_000 })).stdout);
    const [a, b] = [await run(), await run()];
    expect(a?.stages).toEqual(b?.stages);
    expect(a?.codes).toEqual(b?.codes);
  });
});
