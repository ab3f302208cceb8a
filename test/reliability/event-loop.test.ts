/**
 * Event-loop delay (issue 6, part 6): llamem does its heavy work off the JS thread, so the event
 * loop keeps turning while a model loads and generates. perf_hooks.monitorEventLoopDelay (1 ms
 * resolution) runs in a child process that does nothing else; p99 must stay under 10 ms, for the
 * tiny model and a medium one (110 MB, 32000-token vocabulary: a header that takes tens of ms to
 * parse, so the GGUF reader has to yield).
 *
 * A busy machine delays timers on its own (the OS does not schedule the JS thread), which looks
 * like event-loop delay; a run is repeated up to three times and the best one counts. Blocking
 * code fails every run.
 */
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tinyModel } from "../helpers/models.js";
import { FIXTURES, describeEnd, ensureDist, lastJson, reportFigure, runNode } from "./helpers/child.js";
import { mediumModel } from "./helpers/model-builder.js";

interface Stats {
  p50: number;
  p99: number;
  max: number;
  samples: number;
}
interface Report {
  phases: Record<"load" | "context" | "generate" | "dispose", Stats & { ms: number }>;
  overall: Stats;
  addonLoadMs: number;
  generatedTokens: number;
  tokensPerSecond: number;
}

const P99_LIMIT_MS = 10;

async function measure(model: string, maxTokens: number): Promise<Report[]> {
  const reports: Report[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = await runNode([join(FIXTURES, "eventloop-child.mjs"), model, String(maxTokens), "1"], { timeoutMs: 90_000 });
    expect(r.code, describeEnd(r)).toBe(0);
    const rep = lastJson<Report>(r.stdout);
    expect(rep, describeEnd(r)).toBeDefined();
    reports.push(rep as Report);
    if ((rep as Report).overall.p99 < P99_LIMIT_MS && (rep as Report).phases.generate.p99 < P99_LIMIT_MS) break;
  }
  return reports;
}

/**
 * The run whose worse p99 (overall or during generation) is lowest: the attempts stop at the first
 * run under the limit on both, and a pick by the overall p99 alone could take an earlier run
 * that failed during generation.
 */
function best(reports: Report[]): Report {
  const worse = (r: Report) => Math.max(r.overall.p99, r.phases.generate.p99);
  return reports.reduce((a, b) => (worse(b) < worse(a) ? b : a));
}

let tiny: string;
let medium: string;

beforeAll(async () => {
  ensureDist();
  tiny = await tinyModel("q8_0");
  medium = await mediumModel();
}, 120_000);

describe("event-loop delay while loading and generating", () => {
  it("tiny model: p99 under 10 ms overall and during generation", async () => {
    const reports = await measure(tiny, 200);
    const r = best(reports);
    reportFigure("event loop, tiny", r);
    expect(r.generatedTokens).toBe(200);
    expect(r.overall.p99, JSON.stringify(reports)).toBeLessThan(P99_LIMIT_MS);
    expect(r.phases.generate.p99, JSON.stringify(reports)).toBeLessThan(P99_LIMIT_MS);
  });

  it("medium model (110 MB, 32000 tokens): p99 under 10 ms overall and during generation", async () => {
    const reports = await measure(medium, 48);
    const r = best(reports);
    reportFigure("event loop, medium", r);
    expect(r.generatedTokens).toBe(48);
    expect(r.overall.p99, JSON.stringify(reports)).toBeLessThan(P99_LIMIT_MS);
    expect(r.phases.generate.p99, JSON.stringify(reports)).toBeLessThan(P99_LIMIT_MS);
    // Loading parses a 700 KB header; the reader yields every few ms, so no stall is long.
    expect(r.phases.load.max, JSON.stringify(reports)).toBeLessThan(50);
  });
});
