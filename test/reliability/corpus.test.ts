/**
 * Malformed GGUF corpus (issue 6, part 1): every file is loaded, run and disposed in a child
 * process of its own. Whatever the file holds, the child must exit by itself with code 0 and
 * report a typed LlamemError (or success, where llama.cpp legitimately accepts the file): never
 * a signal (SIGABRT from a GGML_ASSERT, SIGSEGV) and never a hang.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildCorpus, type CorpusCase } from "./helpers/corpus.js";
import { FIXTURES, describeEnd, ensureDist, lastJson, pool, reportFigure, runNode, type ChildResult } from "./helpers/child.js";

interface ChildReport {
  stage: string;
  code: string | null;
  typed: boolean;
  message: string | null;
  text: string | null;
}

interface Outcome {
  c: CorpusCase;
  r: ChildResult;
  report: ChildReport | undefined;
}

let dir: string;
let outcomes: Outcome[] = [];

beforeAll(async () => {
  ensureDist();
  dir = mkdtempSync(join(tmpdir(), "llamem-corpus-"));
  const corpus = await buildCorpus();
  outcomes = await pool(corpus, 2, async (c, i) => {
    const file = join(dir, `case-${String(i).padStart(3, "0")}.gguf`);
    writeFileSync(file, c.bytes);
    const r = await runNode([join(FIXTURES, "load-child.mjs"), file, JSON.stringify({ vocabOnly: c.vocabOnly ?? false })], {
      timeoutMs: 30_000,
    });
    return { c, r, report: lastJson<ChildReport>(r.stdout) };
  });
  const stages: Record<string, number> = {};
  for (const o of outcomes) stages[o.report?.stage ?? "died"] = (stages[o.report?.stage ?? "died"] ?? 0) + 1;
  reportFigure("corpus", { cases: outcomes.length, signals: outcomes.filter((o) => o.r.signal).length, stages });
  if (process.env.LLAMEM_CORPUS_REPORT) {
    writeFileSync(process.env.LLAMEM_CORPUS_REPORT, JSON.stringify(outcomes.map(({ c, r, report }) => ({
      group: c.group, name: c.name, size: c.bytes.length, expect: c.expect, exit: r.code, signal: r.signal, ms: Math.round(r.ms), report, stderr: r.code === 0 ? undefined : r.stderr.slice(-600),
    })), null, 2));
  }
}, 300_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("malformed GGUF corpus", () => {
  it("has well over a hundred cases covering every section", () => {
    expect(outcomes.length).toBeGreaterThan(100);
    const groups = new Set(outcomes.map((o) => o.c.group));
    for (const g of ["header", "truncation", "metadata", "tensors", "hparams", "tokenizer", "valid"]) expect(groups).toContain(g);
  });

  it("never kills or hangs the process: every child exits 0 by itself", () => {
    const dead = outcomes.filter((o) => o.r.signal !== null || o.r.code !== 0 || o.r.timedOut || !o.report);
    expect(dead.map((o) => `${o.c.name}: ${describeEnd(o.r)}`)).toEqual([]);
  });

  it("reports only typed LlamemErrors", () => {
    const untyped = outcomes.filter((o) => o.report && !o.report.typed);
    expect(untyped.map((o) => `${o.c.name}: ${o.report?.message}`)).toEqual([]);
  });

  it("fails each file at the expected stage with the expected code, or runs it where llama.cpp accepts it", () => {
    const wrong = outcomes
      .filter((o) => o.report)
      .filter(({ c, report }) => {
        const rep = report as ChildReport;
        if (rep.stage !== c.expect.stage) return true;
        if (c.expect.stage === "done") return rep.code !== null;
        return !(c.expect.codes ?? []).includes(rep.code ?? "");
      })
      .map(({ c, report }) => `${c.name}: expected ${c.expect.stage} ${c.expect.codes?.join("|") ?? ""}, got ${report?.stage} ${report?.code} (${report?.message})`);
    expect(wrong).toEqual([]);
  });
});
