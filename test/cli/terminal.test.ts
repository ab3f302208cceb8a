/**
 * What the CLI draws on a terminal and what it keeps off a pipe. util-linux `script` gives the
 * command a pseudo-terminal; the tests are skipped where it is missing.
 * Needs dist/ built first (npx tsc -p tsconfig.json).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { join } from "node:path";
import { BAR_EMPTY, BAR_FILLED } from "../../lib/cli/output.js";
import { tinyModel } from "../helpers/models.js";
import { assertBuilt, hasScript, runCli, runCliInTerminal, tempDir } from "./run.js";

let model = "";
const tmp = tempDir();

beforeAll(async () => {
  assertBuilt();
  model = await tinyModel("f16");
}, 120_000);

afterAll(() => tmp.cleanup());

describe.skipIf(!hasScript())("on a terminal", () => {
  it("draws the load progress bar and ends the text with a newline", () => {
    const r = runCliInTerminal(["prompt", "-m", model, "--max-tokens", "5", "--threads", "1", "Hello"]);
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain(BAR_FILLED);
    expect(r.output).toContain("100%");
    expect(r.output).toMatch(/\r?\n$/);
  }, 60_000);

  it("draws no bar with --quiet", () => {
    const r = runCliInTerminal(["prompt", "-m", model, "--max-tokens", "3", "--threads", "1", "--quiet", "Hello"]);
    expect(r.code, r.output).toBe(0);
    expect(r.output).not.toContain(BAR_FILLED);
    expect(r.output).not.toContain(BAR_EMPTY);
  }, 60_000);

  it("colours the error prefix unless NO_COLOR is set", () => {
    const missing = join(tmp.dir, "missing.gguf");
    const coloured = runCliInTerminal(["prompt", "-m", missing, "hi"], { NO_COLOR: "" });
    expect(coloured.code).toBe(3);
    expect(coloured.output).toContain("\x1b[31mllamem:");
    const plain = runCliInTerminal(["prompt", "-m", missing, "hi"], { NO_COLOR: "1" });
    expect(plain.code).toBe(3);
    expect(plain.output).not.toContain("\x1b[");
    expect(plain.output).toMatch(/^llamem: /);
  }, 60_000);
});

describe("on a pipe", () => {
  it("writes no progress bar and no control characters to stderr", async () => {
    const r = await runCli(["prompt", "-m", model, "--max-tokens", "5", "--threads", "1", "Hello"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain(BAR_FILLED);
    expect(r.stderr).not.toContain(BAR_EMPTY);
    expect(r.stderr).not.toContain("\r");
    expect(r.stderr).toBe("");
  }, 60_000);
});
