/**
 * `llamem prompt`, run as a real process on a tiny synthetic model.
 * Needs dist/ built first (npx tsc -p tsconfig.json).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tinyModel } from "../helpers/models.js";
import { assertBuilt, runCli, tempDir } from "./run.js";

// One thread: the test machine runs several test files at once, and llama.cpp's spinning
// threads slow to a crawl when they outnumber free cores.
const FAST = ["--threads", "1", "--temperature", "0"];

let model = "";
const tmp = tempDir();

beforeAll(async () => {
  assertBuilt();
  model = await tinyModel("f16");
}, 120_000);

afterAll(() => tmp.cleanup());

describe("llamem prompt", () => {
  it("gives the same greedy text for the prompt as an argument and on stdin", async () => {
    const fromArg = await runCli(["prompt", "-m", model, ...FAST, "-n", "12", "Once upon a time"]);
    const fromStdin = await runCli(["prompt", "-m", model, ...FAST, "-n", "12"], { input: "Once upon a time\n" });
    expect(fromArg.code, fromArg.stderr).toBe(0);
    expect(fromStdin.code, fromStdin.stderr).toBe(0);
    expect(fromArg.stdout.length).toBeGreaterThan(0);
    expect(fromStdin.stdout).toBe(fromArg.stdout);
    // Not a terminal: no trailing newline added, and nothing but the text on stdout.
    expect(fromArg.stderr).toBe("");
  }, 60_000);

  it("--logprobs N adds each token's log-probability and N alternatives to --json; without --json it is a usage error", async () => {
    const r = await runCli(["prompt", "-m", model, ...FAST, "-n", "4", "--json", "--logprobs", "3", "Hello"]);
    expect(r.code, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as { generatedTokens: number; logprobs: { token: number; text: string; logprob: number; top: { token: number; logprob: number }[] }[] };
    expect(json.logprobs).toHaveLength(json.generatedTokens);
    for (const l of json.logprobs) {
      expect(l.top).toHaveLength(3);
      expect(l.logprob).toBeLessThanOrEqual(0);
      expect(typeof l.text).toBe("string");
    }
    expect((await runCli(["prompt", "-m", model, ...FAST, "--logprobs", "3", "Hello"])).code).toBe(2);
  });

  it("prints exactly one JSON object with --json", async () => {
    const r = await runCli(["prompt", "-m", model, ...FAST, "-n", "7", "--json", "Hello"]);
    expect(r.code, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    expect(typeof json["text"]).toBe("string");
    expect(json["model"]).toBe(model);
    expect(["eog", "maxTokens", "stop", "contextFull"]).toContain(json["stopReason"]);
    expect(json["promptTokens"]).toBeGreaterThan(0);
    const generated = json["generatedTokens"] as number;
    expect(Number.isInteger(generated)).toBe(true);
    expect(generated).toBeGreaterThan(0);
    expect(generated).toBeLessThanOrEqual(7);
    const timings = json["timings"] as Record<string, unknown>;
    for (const k of ["timeToFirstTokenMs", "promptTokensPerSecond", "generatedTokensPerSecond", "loadMs"]) {
      expect(typeof timings[k], k).toBe("number");
    }
    expect(timings["loadMs"]).toBeGreaterThan(0);
    const memory = json["memory"] as { rows: Record<string, unknown>[]; weights: number; kv: number; compute: number };
    expect(memory.weights).toBeGreaterThan(0);
    expect(memory.kv).toBeGreaterThan(0);
    expect(Array.isArray(memory.rows)).toBe(true);
    expect(memory.rows.length).toBeGreaterThan(0);
    for (const row of memory.rows) {
      expect(typeof row["bufferType"]).toBe("string");
      expect(typeof row["model"]).toBe("number");
      expect(typeof row["context"]).toBe("number");
      expect(typeof row["compute"]).toBe("number");
    }
    // The streamed text and the JSON text agree.
    const plain = await runCli(["prompt", "-m", model, ...FAST, "-n", "7", "Hello"]);
    expect(plain.stdout).toBe(json["text"]);
  }, 60_000);

  it("stops at a --stop string without printing it", async () => {
    const full = await runCli(["prompt", "-m", model, ...FAST, "-n", "24", "The"]);
    expect(full.code, full.stderr).toBe(0);
    // A stop string from the middle of the greedy text must cut it right there.
    // Whole code points, and no backslash (--stop unescapes \\n and friends).
    const chars = Array.from(full.stdout);
    let at = Math.floor(chars.length / 2);
    while (at > 0 && chars.slice(at, at + 3).includes("\\")) at--;
    const stop = chars.slice(at, at + 3).join("");
    expect(stop.length).toBeGreaterThan(0);
    const expected = full.stdout.slice(0, full.stdout.indexOf(stop));
    const r = await runCli(["prompt", "-m", model, ...FAST, "-n", "24", `--stop=${stop}`, "--json", "The"]);
    expect(r.code, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as { text: string; stopReason: string };
    expect(json.stopReason).toBe("stop");
    expect(json.text).toBe(expected);
  }, 60_000);

  it("formats the prompt with the chat template under --chat", async () => {
    const raw = await runCli(["prompt", "-m", model, ...FAST, "-n", "4", "--json", "hi"]);
    const chat = await runCli(["prompt", "-m", model, ...FAST, "-n", "4", "--json", "--chat", "--system", "Be brief.", "hi"]);
    expect(chat.code, chat.stderr).toBe(0);
    const rawJson = JSON.parse(raw.stdout) as { promptTokens: number };
    const chatJson = JSON.parse(chat.stdout) as { promptTokens: number };
    // The template wraps the message (and the system message) in its markers.
    expect(chatJson.promptTokens).toBeGreaterThan(rawJson.promptTokens + 5);
  }, 60_000);

  it("uses $LLAMEM_MODEL when -m is not given, without the demo-model note", async () => {
    const r = await runCli(["prompt", ...FAST, "-n", "3", "hi"], { env: { LLAMEM_MODEL: model } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(0);
    expect(r.stderr).toBe("");
  }, 60_000);

  it("exits 130 on SIGINT, keeping the partial output and ending it with a newline", async () => {
    let sent = false;
    const r = await runCli(["prompt", "-m", model, ...FAST, "-n", "100000", "Hello"], {
      onFirstStdout: (child) => {
        sent = true;
        child.kill("SIGINT");
      },
    });
    expect(sent).toBe(true);
    expect(r.code, r.stderr).toBe(130);
    expect(r.stdout.length).toBeGreaterThan(1);
    expect(r.stdout.endsWith("\n")).toBe(true);
    expect(r.stderr).toBe("");
  }, 60_000);

  describe("exit codes", () => {
    it("3 for a missing model file", async () => {
      const r = await runCli(["prompt", "-m", join(tmp.dir, "missing.gguf"), "hi"]);
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/^llamem: .*missing\.gguf/);
      expect(r.stdout).toBe("");
    }, 30_000);

    it("3 for a directory", async () => {
      const r = await runCli(["prompt", "-m", tmp.dir, "hi"]);
      expect(r.code).toBe(3);
    }, 30_000);

    it("4 for a file that is not GGUF", async () => {
      const path = join(tmp.dir, "not-a-model.gguf");
      writeFileSync(path, "this is plain text, not a model\n");
      const r = await runCli(["prompt", "-m", path, "hi"]);
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(/^llamem: .*not a GGUF/);
    }, 30_000);

    it("2 for a bad option value, an unknown option and conflicting options", async () => {
      for (const args of [
        ["--max-tokens", "lots"],
        ["--max-tokens", "-5"],
        ["--temperature", "hot"],
        ["--kv-type", "q3_z"],
        ["--flash-attn", "maybe"],
        ["--top-p", "1.5"],
        ["--no-such-option"],
        ["--quiet", "--verbose"],
        ["--system", "without --chat"],
      ]) {
        const r = await runCli(["prompt", "-m", model, ...args, "hi"]);
        expect(r.code, args.join(" ")).toBe(2);
        expect(r.stderr, args.join(" ")).toMatch(/^llamem: /);
        expect(r.stdout).toBe("");
      }
    }, 60_000);
  });
});
