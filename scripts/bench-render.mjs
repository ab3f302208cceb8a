#!/usr/bin/env node
// How long a session's prompt blocks the event loop with a long history: the history is set to
// N short messages, then one prompt runs (1 generated token) while a 1 ms timer measures the
// longest gap between its ticks, and (on Linux) the most of one gap the JS thread itself ran: on
// 2 cores the rest of a gap is the JS thread waiting for a core that ggml's threads, the template
// worker or the collector hold. Repeated for several N; a second prompt shows the steady state.
// setHistory is a synchronous call (it checks and copies the list): its time is the block it
// makes, shown apart.
//
//   npm run bench:render -- [--messages 1000,2000,10000] [--ctx 32768] [--strategy slidingWindow]
import { readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const lib = await import(pathToFileURL(join(root, "dist", "lib", "index.js")).href);
const synth = await import(pathToFileURL(join(root, "dist", "lib", "gguf", "synthetic.js")).href);
const { values } = parseArgs({
  options: { messages: { type: "string", default: "1000,2000,10000" }, ctx: { type: "string", default: "32768" }, strategy: { type: "string" } },
});
// --strategy sets memory.strategy (the session's default, "tokenBudget", otherwise).
const memory = values.strategy === undefined ? {} : { memory: { strategy: values.strategy } };

const path = join(tmpdir(), `llamem-bench-render-tiny-f16-v${synth.SYNTHETIC_FORMAT_VERSION}.gguf`);
if (!readdirSync(tmpdir()).includes(path.split("/").pop())) await synth.writeSyntheticModel(path, { preset: "tiny", type: "f16", seed: 1 });

/**
 * The JS thread's own CPU time and its time waiting for a core, in ms (Linux: the thread's
 * schedstat), or undefined elsewhere. A gap between timer ticks is either: the JS thread busy, or
 * ready but not running while other threads (ggml's, the template worker, the collector's) hold
 * both cores.
 */
function threadTimes() {
  try {
    const [run, wait] = readFileSync("/proc/thread-self/schedstat", "utf8").split(" ").map(Number);
    return { run: run / 1e6, wait: wait / 1e6 };
  } catch {
    return undefined;
  }
}

/**
 * Runs `work` while a 1 ms timer records the longest gap between its ticks (`worst`), and the
 * most of one gap the JS thread spent running (`worstRun`; undefined where unknown).
 */
async function longestBlock(work) {
  let last = performance.now();
  let lastTimes = threadTimes();
  let worst = 0;
  let worstRun = lastTimes ? 0 : undefined;
  const timer = setInterval(() => {
    const now = performance.now();
    const times = lastTimes && threadTimes();
    worst = Math.max(worst, now - last);
    if (times) worstRun = Math.max(worstRun, times.run - lastTimes.run);
    last = now;
    lastTimes = times;
  }, 1);
  const t0 = performance.now();
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return { worst, worstRun, total: performance.now() - t0 };
}

const model = await lib.loadModel(path);
const rows = [];
for (const n of values.messages.split(",").map(Number)) {
  const session = await lib.createSession(model, { context: { contextSize: Number(values.ctx) }, maxTokens: 1, ...memory });
  const messages = Array.from({ length: n }, (_, i) => ({ role: i % 2 ? "assistant" : "user", content: `note ${i}` }));
  const t0 = performance.now();
  session.setHistory(messages);
  const setHistory = performance.now() - t0;
  const first = await longestBlock(() => session.prompt("and now?", { temperature: 0 }));
  const second = await longestBlock(() => session.prompt("and then?", { temperature: 0 }));
  rows.push({ messages: n, setHistory, first, second, kept: session.history.length });
  await session.dispose();
}
await model.dispose();
const run = (b) => (b.worstRun === undefined ? "" : ` (JS ${b.worstRun.toFixed(1)})`);
console.log("| messages | setHistory (ms, synchronous) | kept after the budget | 1st prompt: longest block (most JS run in one) / total (ms) | 2nd prompt: longest block (most JS run in one) / total (ms) |");
console.log("|---|---|---|---|---|");
for (const r of rows) {
  console.log(`| ${r.messages} | ${r.setHistory.toFixed(1)} | ${r.kept} | ${r.first.worst.toFixed(1)}${run(r.first)} / ${r.first.total.toFixed(0)} | ${r.second.worst.toFixed(1)}${run(r.second)} / ${r.second.total.toFixed(0)} |`);
}
