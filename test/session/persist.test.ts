import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPool, createSession, loadModel, loadSession, type MemoryEvent, type Model, type SessionMessage } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { THREADS, codeOf } from "./helpers.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const CHILD = join(ROOT, "test", "session", "save-child.mjs");

const SYSTEM = "You are a helpful assistant. Keep every answer short and friendly.";
const PROMPTS = Array.from({ length: 9 }, (_, i) => `Message ${i}: tell me something about topic ${i % 7}.`);
const SAVED_TURNS = 6;
const BUDGET = 150;

let model: Model;
let modelPath: string;
let dir: string;

beforeAll(async () => {
  modelPath = await tinyModel("f16");
  model = await loadModel(modelPath);
  dir = mkdtempSync(join(tmpdir(), "llamem-session-persist-"));
});
afterAll(async () => {
  await model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function runChild(args: string[]): Promise<{ stdout: string; stderr: string; signal: NodeJS.Signals | null }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CHILD, ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    child.on("error", reject);
    child.on("close", (_code, signal) => {
      clearTimeout(timer);
      resolvePromise({ stdout, stderr, signal });
    });
  });
}

const options = { maxTokens: 4, temperature: 0, context: { contextSize: 512, ...THREADS } } as const;

describe("saving and loading sessions", () => {
  it("save, kill the process, load and continue: the replies of an uninterrupted session, without evaluating the prompt again", async () => {
    const savePath = join(dir, "chat.llamem");
    const childArchive = join(dir, "child-archive.jsonl");
    const config = { system: SYSTEM, budget: BUDGET, maxTokens: 4, prompts: PROMPTS.slice(0, SAVED_TURNS) };
    const child = await runChild([modelPath, savePath, childArchive, JSON.stringify(config)]);
    expect(child.signal, child.stderr).toBe("SIGKILL");
    const saved = JSON.parse(child.stdout) as { replies: string[]; history: SessionMessage[] };

    const events: MemoryEvent[] = [];
    await using resumed = await loadSession(model, savePath, { ...options, resumeArchiveFile: true, memory: { budget: BUDGET }, onMemoryEvent: (e) => events.push(e) });
    expect(resumed.system).toBe(SYSTEM);
    expect(resumed.history).toEqual(saved.history);
    const replies: string[] = [];
    const evaluated: number[] = [];
    const prompts: number[][] = [];
    for (const p of PROMPTS.slice(SAVED_TURNS)) {
      replies.push(await resumed.prompt(p));
      evaluated.push(resumed.lastGeneration?.evaluatedPromptTokens ?? -1);
      prompts.push(resumed.sequence?.tokens.slice(0, resumed.lastGeneration?.promptTokens) ?? []);
    }

    await using straight = await createSession(model, { ...options, system: SYSTEM, memory: { budget: BUDGET, archive: { path: join(dir, "straight-archive.jsonl") } } });
    const straightReplies: string[] = [];
    const straightEvaluated: number[] = [];
    for (const p of PROMPTS) {
      straightReplies.push(await straight.prompt(p));
      straightEvaluated.push(straight.lastGeneration?.evaluatedPromptTokens ?? -1);
    }
    expect([...saved.replies, ...replies]).toEqual(straightReplies);
    // Resuming evaluated only what was new, exactly as the uninterrupted session did.
    expect(evaluated).toEqual(straightEvaluated.slice(SAVED_TURNS));
    expect(evaluated[0]).toBeLessThan(60);
    // The saved layout let the first turns after loading cut pruned turns out of the cache in place.
    expect(events.length).toBeGreaterThan(0);
    expect(events.every((e) => e.kvReused)).toBe(true);
    // The archive pointer came back: turns evicted before and after the crash are in the child's file.
    const archived = await resumed.readArchive();
    expect(archived.map((a) => a.messages.map((m) => m.content))).toEqual((await straight.readArchive()).map((a) => a.messages.map((m) => m.content)));
    expect(archived.length).toBeGreaterThan(3);
    expect(archived.every((a) => a.messages.every((m) => Number.isFinite(m.timestamp)))).toBe(true);

    // The same file resumes in a pool. A context of the same layout (sequences, KV types) takes
    // the saved cells; another cannot (saved states restore only into their own layout), so that
    // session resumes from its history and evaluates it again.
    for (const sequences of [1, 2]) {
      await using ctx = await model.createContext({ contextSize: 512 * sequences, sequences, ...THREADS });
      await using pool = createPool(ctx);
      const pooled = await pool.loadSession(savePath, { maxTokens: 4, temperature: 0, memory: { budget: BUDGET, archive: { path: join(dir, `pool-archive-${sequences}.jsonl`) } } });
      const reply = await pooled.prompt(PROMPTS[SAVED_TURNS] as string);
      const g = pooled.lastGeneration;
      expect(pooled.sequence?.tokens.slice(0, g?.promptTokens)).toEqual(prompts[0]);
      if (sequences === 1) {
        expect(reply).toBe(replies[0]);
        expect(g?.evaluatedPromptTokens).toBe(evaluated[0]);
      } else {
        expect(g?.evaluatedPromptTokens).toBe(g?.promptTokens);
      }
    }
    // Saving is atomic: no temp files are left beside the session file.
    expect(readdirSync(dir).filter((f) => f.includes(".tmp-"))).toEqual([]);
  });

  it("refuses a session saved with another model, and files that are not sessions", async () => {
    const path = join(dir, "other.llamem");
    await using session = await createSession(model, { ...options, system: SYSTEM });
    await session.prompt("Hello");
    expect(await session.save(path)).toBeGreaterThan(0);
    await using other = await loadModel(await tinyModel("q8_0"));
    expect(await codeOf(loadSession(other, path))).toBe("ERR_STATE_MISMATCH");
    const junk = join(dir, "junk.llamem");
    writeFileSync(junk, "not a session at all");
    expect(await codeOf(loadSession(model, junk))).toBe("ERR_STATE_MISMATCH");
    expect(await codeOf(loadSession(model, join(dir, "missing.llamem")))).toBe("ERR_FILE_NOT_FOUND");
    // A failed load leaves nothing behind: the model's context count is unchanged and a load works.
    await using back = await loadSession(model, path, options);
    expect(back.history).toEqual(session.history);
  });
});
