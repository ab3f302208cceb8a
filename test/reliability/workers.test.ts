/**
 * worker_threads and process exit (issue 6, part 5): the addon is context-aware, so it loads in
 * several workers at once; terminating a worker mid-load or mid-generation, exiting the process
 * mid-generation, or returning from main with live objects must neither crash nor hang.
 */
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { beforeAll, describe, expect, it } from "vitest";
import { loadModel } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";
import { FIXTURES, ROOT, describeEnd, ensureDist, lastJson, pool, runNode } from "./helpers/child.js";

let path: string;

beforeAll(async () => {
  ensureDist();
  path = await tinyModel("q8_0");
});

interface Msg {
  step: "loading" | "loaded" | "generating" | "done";
  text?: string;
  tokens?: number;
}

function startWorker(maxTokens: number, onMessage?: (m: Msg, w: Worker) => void): { worker: Worker; exited: Promise<{ code: number; messages: Msg[] }> } {
  const worker = new Worker(join(FIXTURES, "worker-gen.mjs"), { workerData: { root: ROOT, path, maxTokens } });
  const messages: Msg[] = [];
  worker.on("message", (m: Msg) => {
    messages.push(m);
    onMessage?.(m, worker);
  });
  const exited = new Promise<{ code: number; messages: Msg[] }>((resolve, reject) => {
    worker.on("error", reject);
    worker.on("exit", (code) => resolve({ code, messages }));
  });
  return { worker, exited };
}

describe("worker_threads", () => {
  it("loads and generates in three workers and the main thread at once", async () => {
    const workers = [1, 2, 3].map(() => startWorker(24));
    const model = await loadModel(path);
    const ctx = await model.createContext({ contextSize: 4096, threads: 1 });
    const mine = (await ctx.complete("Once upon a time", { maxTokens: 24, temperature: 0 })).text;
    const results = await Promise.all(workers.map((w) => w.exited));
    for (const r of results) {
      expect(r.code).toBe(0);
      const done = r.messages.find((m) => m.step === "done");
      expect(done?.tokens).toBe(24);
      // Greedy decoding of the same model: every thread produces the same text.
      expect(done?.text).toBe(mine);
    }
    await model.dispose();
  });

  it("survives terminating workers mid-load, right after load and mid-generation", async () => {
    const stages: Msg["step"][] = ["loading", "loaded", "generating"];
    for (let round = 0; round < 3; round++) {
      const results = await Promise.all(
        stages.map((stage) => startWorker(100000, (m, w) => {
          if (m.step === stage) void w.terminate();
        }).exited),
      );
      for (const [i, r] of results.entries()) {
        expect(r.code, `terminated at ${stages[i]}`).toBe(1);
        expect(r.messages.some((m) => m.step === "done")).toBe(false);
      }
    }
    // The addon still works in this thread and in new workers.
    const again = await startWorker(5).exited;
    expect(again.code).toBe(0);
    const model = await loadModel(path);
    await using ctx = await model.createContext({ contextSize: 128, threads: 1 });
    expect((await ctx.complete("Hi", { maxTokens: 3 })).generatedTokens).toBe(3);
    await model.dispose();
  });
});

describe("process exit with native work in flight (child processes)", () => {
  const scenarios: { name: string; args: string[]; code: number }[] = [
    { name: "exit-mid-generation", args: [], code: 0 },
    { name: "exit-mid-generation-no-await", args: [], code: 0 },
    { name: "exit-mid-load", args: ["0"], code: 0 },
    { name: "exit-mid-load", args: ["20"], code: 0 },
    { name: "exit-mid-load", args: ["60"], code: 0 },
    { name: "return-with-live-objects", args: [], code: 0 },
    { name: "throw-mid-generation", args: [], code: 1 },
    { name: "worker-exit-mid-generation", args: [], code: 0 },
    { name: "worker-return-without-dispose", args: [], code: 0 },
  ];

  it("every scenario exits by itself with the expected code, without a signal, within 30 s", async () => {
    const runs = await pool(scenarios, 2, async (s) => ({
      s,
      r: await runNode([join(FIXTURES, "exit-child.mjs"), s.name, path, ...s.args], { timeoutMs: 30_000 }),
    }));
    for (const { s, r } of runs) {
      const label = `${s.name} ${s.args.join(" ")}: ${describeEnd(r)}`;
      expect(r.timedOut, label).toBe(false);
      expect(r.signal, label).toBeNull();
      expect(r.code, label).toBe(s.code);
      expect(lastJson<{ reached: string }>(r.stdout)?.reached, label).toBeDefined();
      expect(r.ms, label).toBeLessThan(15_000);
    }
  });
});
