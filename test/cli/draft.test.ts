/**
 * `llamem prompt --draft FILE`: speculative decoding prints the text decoding without a draft
 * prints, and `--json` reports the drafted and accepted tokens; `llamem fit --draft` counts the
 * draft model and its context.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { archModel, tinyModel } from "../helpers/models.js";
import { assertBuilt, runCli } from "./run.js";

let base: string;
let other: string;

beforeAll(async () => {
  assertBuilt();
  base = await tinyModel("f16", 1);
  other = await tinyModel("f16", 2);
});

describe("speculative decoding on the command line", () => {
  it("prompt --draft prints the same greedy text, and --json counts the drafts", async () => {
    const args = ["prompt", "-m", base, "The quick brown fox", "-n", "24", "--temperature", "0", "-q", "-t", "1", "-c", "256"];
    const plain = await runCli(args);
    const drafted = await runCli([...args, "--draft", other, "--draft-max", "4", "--draft-min-p", "0"]);
    expect(plain.code).toBe(0);
    expect(drafted.code).toBe(0);
    expect(drafted.stdout).toBe(plain.stdout);
    const json = await runCli([...args, "--draft", base, "--draft-min-p", "0", "--json"]);
    expect(json.code).toBe(0);
    const r = JSON.parse(json.stdout) as { text: string; draft: { drafted: number; accepted: number }; memory: { draft?: { kv: number } } };
    expect(r.text).toBe(plain.stdout);
    expect(r.draft.drafted).toBeGreaterThan(0);
    expect(r.draft.accepted).toBeGreaterThan(0);
    expect(r.memory.draft?.kv).toBeGreaterThan(0);
    // A draft of another vocabulary is a usage problem with the arguments: ERR_INVALID_ARGUMENT, exit 2.
    const bad = await runCli([...args, "--draft", await archModel("qwen2")]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/another vocabulary/);
  });

  it("fit --draft counts the draft model and its context", async () => {
    const alone = await runCli(["fit", base, "-c", "512", "--json"]);
    const both = await runCli(["fit", base, "-c", "512", "--draft", other, "--json"]);
    expect(alone.code).toBe(0);
    expect(both.code).toBe(0);
    const a = JSON.parse(alone.stdout) as { total: number; draft: number };
    const b = JSON.parse(both.stdout) as { total: number; draft: number };
    expect(a.draft).toBe(0);
    expect(b.draft).toBe(a.total);
    // Doubled, but for the main context's logits rows of the drafts it verifies (bytes).
    expect(b.total - 2 * a.total).toBeGreaterThanOrEqual(0);
    expect(b.total - 2 * a.total).toBeLessThan(1 << 20);
  });
});
