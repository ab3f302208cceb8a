/**
 * `llamem inspect`, run as a real process. Needs dist/ built first (npx tsc -p tsconfig.json).
 */
import { copyFileSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SYNTHETIC_PRESETS } from "../../lib/gguf/synthetic.js";
import { tinyModel } from "../helpers/models.js";
import { assertBuilt, runCli, tempDir } from "./run.js";

let model = "";
const tmp = tempDir();
const tiny = SYNTHETIC_PRESETS.tiny;

beforeAll(async () => {
  assertBuilt();
  model = await tinyModel("q8_0");
}, 120_000);

afterAll(() => tmp.cleanup());

describe("llamem inspect", () => {
  it("describes the model in text", async () => {
    const r = await runCli(["inspect", model]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    const line = (label: string) => r.stdout.split("\n").find((l) => l.trim().startsWith(label)) ?? "";
    expect(line("architecture")).toMatch(/llama$/);
    expect(line("name")).toContain("llamem synthetic tiny q8_0");
    expect(line("tensors")).toMatch(/q8_0 \d+/);
    expect(line("context length")).toMatch(new RegExp(`${tiny.contextLength}$`));
    expect(line("embedding length")).toMatch(new RegExp(`${tiny.nEmbd}$`));
    expect(line("blocks")).toMatch(new RegExp(`${tiny.nLayer}$`));
    expect(line("kv heads")).toMatch(new RegExp(`${tiny.nHeadKv}$`));
    expect(line("vocab size")).toMatch(/32000$/);
    expect(line("chat template")).toMatch(/yes$/);
    expect(r.stdout).toMatch(/Memory.*dry run/);
    // Rows for 2048 and the trained 4096 (8192 and 32768 clip to it), three KV types each.
    expect(r.stdout).toMatch(/\n\s+2048\s+f16\s/);
    expect(r.stdout).toMatch(/\n\s+4096\s+q4_0\s/);
    expect(r.stdout).not.toMatch(/\n\s+8192\s/);
  }, 30_000);

  it("prints the summary and the full metadata with --json", async () => {
    const r = await runCli(["inspect", model, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as {
      architecture: string;
      name: string;
      fileSize: number;
      tensorCount: number;
      tensorTypes: Record<string, number>;
      hparams: Record<string, unknown>;
      chatTemplate: boolean;
      metadata: Record<string, unknown>;
      memoryEstimate: {
        note: string;
        rows: { contextSize: number; kvType: string; weightsBytes: number; kvCacheBytes: number; computeBytes: number; totalBytes: number }[];
      };
    };
    expect(json.architecture).toBe("llama");
    expect(json.fileSize).toBe(statSync(model).size);
    expect(json.tensorCount).toBe(2 + 9 * tiny.nLayer + 1);
    expect(json.tensorTypes).toEqual({ q8_0: 2 + 7 * tiny.nLayer, f32: 2 * tiny.nLayer + 1 });
    expect(json.hparams).toEqual({
      contextLength: tiny.contextLength,
      embeddingLength: tiny.nEmbd,
      blockCount: tiny.nLayer,
      headCount: tiny.nHead,
      headCountKv: tiny.nHeadKv,
      vocabSize: 32000,
    });
    expect(json.chatTemplate).toBe(true);
    expect(json.metadata["general.architecture"]).toBe("llama");
    expect(typeof json.metadata["tokenizer.chat_template"]).toBe("string");
    // Long arrays are abbreviated.
    expect(json.metadata["tokenizer.ggml.tokens"]).toEqual({ type: "str", length: 32000 });

    // KV cache = n_layer * ctx * n_embd_kv * 2 * bytes per element.
    const nEmbdKv = (tiny.nEmbd / tiny.nHead) * tiny.nHeadKv;
    const est = json.memoryEstimate;
    expect(est.note).toMatch(/dry run/);
    expect(est.rows.map((row) => `${row.contextSize}/${row.kvType}`)).toEqual([
      "2048/f16", "2048/q8_0", "2048/q4_0", "4096/f16", "4096/q8_0", "4096/q4_0",
    ]);
    const f16 = est.rows.find((row) => row.contextSize === 2048 && row.kvType === "f16");
    const q4 = est.rows.find((row) => row.contextSize === 4096 && row.kvType === "q4_0");
    expect(f16?.kvCacheBytes).toBe(tiny.nLayer * 2048 * nEmbdKv * 2 * 2);
    expect(q4?.kvCacheBytes).toBe((tiny.nLayer * 4096 * nEmbdKv * 2 * 18) / 32);
    for (const row of est.rows) {
      expect(row.totalBytes).toBe(row.weightsBytes + row.kvCacheBytes + row.computeBytes);
      expect(row.weightsBytes).toBeGreaterThan(0);
      expect(row.weightsBytes).toBeLessThan(json.fileSize);
      expect(row.computeBytes).toBeGreaterThan(0);
    }
  }, 30_000);

  describe("exit codes", () => {
    it("3 for a missing file", async () => {
      const r = await runCli(["inspect", join(tmp.dir, "nope.gguf")]);
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/^llamem: /);
    }, 30_000);

    it("4 for a non-GGUF and a truncated GGUF", async () => {
      const text = join(tmp.dir, "text.gguf");
      writeFileSync(text, "not a gguf at all");
      expect((await runCli(["inspect", text])).code).toBe(4);

      const cut = join(tmp.dir, "cut.gguf");
      copyFileSync(model, cut);
      truncateSync(cut, 4096);
      const r = await runCli(["inspect", cut]);
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(/^llamem: /);
    }, 30_000);

    it("2 without the file argument", async () => {
      const r = await runCli(["inspect"]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^llamem: missing required argument/);
    }, 30_000);
  });
});
