/**
 * `llamem make-model --lora-for` writes an adapter that `llamem prompt --lora FILE[:scale]`
 * applies: scale 0 prints the base model's greedy text, scale 1 another.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tinyModel } from "../helpers/models.js";
import { assertBuilt, runCli } from "./run.js";

let dir: string;
let base: string;

beforeAll(async () => {
  assertBuilt();
  base = await tinyModel("f16");
  dir = mkdtempSync(join(tmpdir(), "llamem-lora-cli-"));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("LoRA on the command line", () => {
  it("make-model --lora-for, then prompt --lora at scale 0 and 1", async () => {
    const lora = join(dir, "tiny-lora.gguf");
    const made = await runCli(["make-model", lora, "--lora-for", base, "--rank", "4", "--seed", "3"]);
    expect(made.code).toBe(0);
    expect(made.stdout).toMatch(/LoRA rank 4/);
    const args = ["prompt", "-m", base, "The quick brown fox", "-n", "12", "--temperature", "0", "-q", "-t", "1"];
    const plain = await runCli(args);
    const zero = await runCli([...args, "--lora", `${lora}:0`]);
    const one = await runCli([...args, "--lora", lora]);
    expect(plain.code).toBe(0);
    expect(zero.stdout).toBe(plain.stdout);
    expect(one.code).toBe(0);
    expect(one.stdout).not.toBe(plain.stdout);
    // A model given as an adapter: ERR_ADAPTER, exit 4 (not a valid file of its kind).
    const bad = await runCli([...args, "--lora", base]);
    expect(bad.code).toBe(4);
    expect(bad.stderr).toMatch(/not an adapter/);
  });
});
