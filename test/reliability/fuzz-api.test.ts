/**
 * A short, seeded run of scripts/fuzz-api.mjs (issue 12): random calls with random arguments
 * through the public API, in batched child processes. Every outcome must be a success, a
 * LlamemError with a listed code (not ERR_INTERNAL), or the error the fuzzer's own callback
 * threw: zero crashes, hangs, untyped or internal errors, unhandled rejections and sequences
 * left busy. `npm run fuzz:api` is the long version.
 */
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ROOT, describeEnd, ensureDist, lastJson, reportFigure, runNode } from "./helpers/child.js";

interface Summary {
  cases: number;
  calls: number;
  crashes: number;
  hangs: number;
  untyped: number;
  internal: number;
  unhandled: number;
  stuck: number;
  codes: Record<string, number>;
  findings: unknown[];
}

beforeAll(() => ensureDist());

describe("API fuzzing", () => {
  it("survives 100 seeded cases of random calls with only typed outcomes", async () => {
    const r = await runNode([join(ROOT, "scripts", "fuzz-api.mjs"), "--cases", "100", "--seed", "1", "--json"], { timeoutMs: 120_000 });
    const summary = lastJson<Summary>(r.stdout);
    expect(summary, describeEnd(r)).toBeDefined();
    const s = summary as Summary;
    reportFigure("fuzz-api (short)", s);
    expect(s.findings, JSON.stringify(s.findings, null, 2)).toEqual([]);
    expect([s.crashes, s.hangs, s.untyped, s.internal, s.unhandled, s.stuck]).toEqual([0, 0, 0, 0, 0, 0]);
    expect(s.cases).toBe(100);
    // The calls reach every layer: successes, argument checks, lifetimes and native work.
    expect(s.codes.ok ?? 0).toBeGreaterThan(200);
    expect(s.codes.ERR_INVALID_ARGUMENT ?? 0).toBeGreaterThan(50);
    expect(s.codes.ERR_DISPOSED ?? 0).toBeGreaterThan(0);
    expect(r.code, describeEnd(r)).toBe(0);
  });
});
