/**
 * Memory returns when objects are disposed (issue 6, part 3): a short run of scripts/soak.mjs,
 * 500 context create/dispose cycles and 20 model load/dispose cycles after a warm-up, in a child
 * process with glibc's arena count and mmap threshold fixed (see the script: otherwise RSS climbs
 * in allocator steps that level off and hide what matters).
 *
 * Bounds, against what a leak would cost: one context (32768 tokens) holds over 8 MiB of KV cache and
 * compute buffers (checked below), and a model with its context that plus the model's own RSS (tiny
 * preset, 32000-token vocabulary; ~17 MiB in all with the 8192-token context used before flash
 * attention became the CPU's default).
 * - contexts: RSS growth < 8 MiB over 500 cycles: a single leaked context, or 16 KiB per cycle,
 *   fails;
 * - loads: RSS growth < 16 MiB over 20 cycles: a single leaked model, or 0.8 MiB per cycle, fails.
 * `npm run soak` runs 10,000 and 200 cycles against the same bounds.
 */
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ROOT, describeEnd, ensureDist, lastJson, reportFigure, runNode } from "./helpers/child.js";

interface Phase {
  cycles: number;
  warmupCycles: number;
  rssAfterWarmupMiB: number;
  rssEndMiB: number;
  growthMiB: number;
  slopeBytesPerCycle: number;
}
interface SoakReport {
  contextKvAndComputeMiB: number;
  contexts: Phase;
  loads: Phase;
  ok: boolean;
}

beforeAll(() => ensureDist());

describe("soak", () => {
  it("500 context cycles and 20 load cycles leave RSS within bounds", async () => {
    const r = await runNode([join(ROOT, "scripts", "soak.mjs"), "--contexts", "500", "--loads", "20", "--load-warmup", "10", "--json"], {
      timeoutMs: 120_000,
    });
    const rep = lastJson<SoakReport>(r.stdout);
    expect(rep, describeEnd(r)).toBeDefined();
    const s = rep as SoakReport;
    reportFigure("soak (short)", s);
    expect(s.contexts.cycles).toBe(500);
    expect(s.loads.cycles).toBe(20);
    expect(s.contextKvAndComputeMiB).toBeGreaterThan(8);
    expect(s.contexts.growthMiB, JSON.stringify(s)).toBeLessThan(8);
    expect(s.loads.growthMiB, JSON.stringify(s)).toBeLessThan(16);
    expect(s.ok).toBe(true);
    expect(r.code, describeEnd(r)).toBe(0);
  });
});
