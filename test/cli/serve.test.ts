/**
 * `llamem serve` as a process: the plan printed before it listens, a refusal to listen beyond
 * loopback without a key, and SIGTERM during a stream: the stream finishes, the conversation is
 * saved to --sessions-dir, the process exits 0, and a new server resumes the conversation.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { archModel } from "../helpers/models.js";
import { CLI, assertBuilt, cliEnv, runCli } from "./run.js";

let modelPath: string;
let dir: string;
const template = join(import.meta.dirname, "..", "..", "vendor", "llama.cpp", "models", "templates", "Qwen-Qwen2.5-7B-Instruct.jinja");

beforeAll(async () => {
  assertBuilt();
  modelPath = await archModel("qwen2");
  dir = mkdtempSync(join(tmpdir(), "llamem-serve-"));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Starts the server; resolves with its URL once it prints the listening line. */
function start(extra: string[] = []): Promise<{ child: ChildProcess; url: string; stderr: () => string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [CLI, "serve", "-m", modelPath, "--port", "0", "--parallel", "2", "-c", "2048", "-t", "1", "--chat-template-file", template, "--sessions-dir", join(dir, "sessions"), ...extra], {
    env: cliEnv(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stderr?.on("data", (b: Buffer) => (err += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line: ${err}`)), 60_000);
    child.stdout?.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1] as string, stderr: () => err, exited });
      }
    });
    child.once("exit", () => reject(new Error(`exited before listening: ${err}`)));
  });
}

function chat(url: string, body: object): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", "x-conversation-id": "ada" }, body: JSON.stringify({ model: "m", ...body }) });
}

describe("llamem serve", () => {
  it("refuses an outside address without an API key (usage error)", async () => {
    const r = await runCli(["serve", "-m", modelPath, "--host", "0.0.0.0"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--api-key/);
  });

  it("prints the plan, streams through SIGTERM, saves the conversation, and a new server resumes it", async () => {
    const first = await start(["--model-id", "m"]);
    expect(first.stderr()).toMatch(/2 sequences of 1024 tokens/);
    const a = (await (await chat(first.url, { messages: [{ role: "user", content: "My name is Ada." }], max_tokens: 4, temperature: 0 })).json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
    // A stream in flight when SIGTERM comes still ends with [DONE].
    const streaming = chat(first.url, { messages: [{ role: "user", content: "Tell me more." }], max_tokens: 48, temperature: 0, stream: true });
    const res = await streaming;
    first.child.kill("SIGTERM");
    const text = await res.text();
    expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
    expect(await first.exited).toBe(0);
    expect(readdirSync(join(dir, "sessions")).some((f) => f.endsWith(".session"))).toBe(true);

    const second = await start(["--model-id", "m"]);
    try {
      const b = (await (await chat(second.url, { messages: [{ role: "user", content: "What is my name?" }], max_tokens: 4, temperature: 0 })).json()) as { usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } } };
      // Both earlier turns are in the prompt, and their cells came back with the saved session.
      expect(b.usage.prompt_tokens).toBeGreaterThan(a.usage.prompt_tokens + a.usage.completion_tokens + 8);
      expect(b.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(a.usage.prompt_tokens);
    } finally {
      second.child.kill("SIGTERM");
      expect(await second.exited).toBe(0);
    }
  });
});
