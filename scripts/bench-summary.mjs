#!/usr/bin/env node
// Summaries off the critical path (issue 11, part 2): a long chat with the "summarize" strategy
// where the MODEL writes the summaries, on a small context, turn by turn.
//
//   node scripts/bench-summary.mjs [--model PATH] [--turns 60] [--context 1024] [--reply-tokens 16]
//                                  [--runs inline,ahead-pause,ahead-nopause,beside-pause,beside-nopause]
//                                  [--pause-ms 3000] [--threads N] [--summary-tokens N]
//                                  [--flash-attention auto|on|off]
//
// Runs, each on a fresh context, the same user messages (about 60 tokens each), temperature 0:
//   inline          summarizeAhead: false, no pause (every summary is written in the turn that needs it)
//   ahead-pause     summarizeAhead: 0.5, with --pause-ms between turns (a person reading and typing)
//   ahead-nopause   summarizeAhead: 0.5, the next prompt right after the reply
//   beside-pause    as ahead-pause, the summary written on a second sequence of a unified-KV
//                   context (memory.summarySequence), beside the turns instead of between them
//   beside-nopause  as ahead-nopause, on the second sequence
// --summary-tokens sets memory.summarize.maxTokens (default: the library's, a quarter of the
// budget, at most 128; random weights always write that many). --flash-attention sets the
// context's flashAttention (default: the library's default).
// Reports per run: the median of turns 5-15, the slowest turn after the first fold (the context
// filled), the mean of the turns after it, their ratios, and the memory events' summary kinds.
// Prints JSON and a table; progress to stderr. Run on a quiet machine.
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { loadModel, createSession } = await import(pathToFileURL(join(root, "dist", "lib", "index.js")).href);

const { values } = parseArgs({
  options: {
    model: { type: "string", default: join(root, "bench", "work", "synthetic-1b-q4_0-seed1-v2.gguf") },
    turns: { type: "string", default: "60" },
    context: { type: "string", default: "1024" },
    "reply-tokens": { type: "string", default: "16" },
    runs: { type: "string", default: "inline,ahead-pause,ahead-nopause,beside-pause,beside-nopause" },
    "pause-ms": { type: "string", default: "3000" },
    threads: { type: "string" },
    "summary-tokens": { type: "string" },
    "flash-attention": { type: "string" },
  },
});
const turns = Number(values.turns);
const contextSize = Number(values.context);
const replyTokens = Number(values["reply-tokens"]);
const pauseMs = Number(values["pause-ms"]);
const threads = values.threads === undefined ? undefined : Number(values.threads);
// checked by createContext, which names the values it takes
const flashAttention = values["flash-attention"];
const summarize = values["summary-tokens"] === undefined ? {} : { summarize: { maxTokens: Number(values["summary-tokens"]) } };

const SYSTEM = "You are a concise assistant. Answer every question in one short sentence.";
const SUBJECTS = ["the weather in Lisbon", "my tomato plants", "the night train to Vienna", "learning the cello", "sourdough bread", "the chess opening I tried", "our team meeting", "a cheap mechanical keyboard"];
/** About 60 tokens that change every turn. */
function userMessage(i) {
  const s = SUBJECTS[i % SUBJECTS.length];
  return `Question ${i + 1}: I have been thinking about ${s} for a while now, and I would like your opinion. ` +
    `What matters most about ${s}, what do people usually get wrong, and what would you try first this week if you were me?`;
}

const RUNS = {
  inline: { ahead: false, pause: false },
  "ahead-pause": { ahead: 0.5, pause: true },
  "ahead-nopause": { ahead: 0.5, pause: false },
  "beside-pause": { ahead: 0.5, pause: true, beside: true },
  "beside-nopause": { ahead: 0.5, pause: false, beside: true },
};

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const model = await loadModel(values.model);
const results = [];
for (const id of values.runs.split(",")) {
  const run = RUNS[id];
  if (!run) throw new Error(`unknown run ${id}`);
  const ctx = await model.createContext({ contextSize, ...(run.beside ? { sequences: 2, kvUnified: true } : {}), ...(threads ? { threads } : {}), ...(flashAttention ? { flashAttention } : {}) });
  const events = [];
  let turn = 0;
  const session = await createSession(ctx, {
    system: SYSTEM,
    maxTokens: replyTokens,
    temperature: 0,
    memory: { strategy: "summarize", ...summarize, summarizeAhead: run.ahead, ...(run.beside ? { summarySequence: ctx.sequence(1) } : {}) },
    onMemoryEvent: (e) => (process.env.DEBUG_EVENTS && process.stderr.write(JSON.stringify({ turn, summary: e.summary, summaryTokens: e.summaryTokens, ms: Math.round(e.ms), dropped: e.dropped.length }) + "\n"), events.push({ turn, kind: e.kind, summary: e.summary, summaryTokens: e.summaryTokens, ms: e.ms, reevaluatedTokens: e.reevaluatedTokens })),
  });
  const ms = [];
  for (turn = 0; turn < turns; turn++) {
    const t0 = performance.now();
    await session.prompt(userMessage(turn));
    ms.push(performance.now() - t0);
    process.stderr.write(`${id} turn ${turn + 1}: ${ms[turn].toFixed(0)} ms${events.some((e) => e.turn === turn) ? " " + events.filter((e) => e.turn === turn).map((e) => e.summary).join(",") : ""}\n`);
    if (run.pause && turn + 1 < turns) await sleep(pauseMs);
  }
  await session.dispose();
  await ctx.dispose();
  const firstFold = events.find((e) => e.kind === "summarize" && e.summary !== "cancelled")?.turn ?? turns;
  const base = median(ms.slice(4, 15));
  const late = ms.slice(firstFold);
  const r = {
    id, turns, contextSize, replyTokens, summaryMaxTokens: summarize.summarize?.maxTokens ?? "default", flashAttention: flashAttention ?? "default", pauseMs: run.pause ? pauseMs : 0, summarizeAhead: run.ahead,
    medianTurns5to15Ms: base, firstFoldTurn: firstFold + 1,
    slowestLateMs: late.length ? Math.max(...late) : NaN, meanLateMs: late.length ? mean(late) : NaN,
    summaries: { inline: events.filter((e) => e.summary === "inline").length, ahead: events.filter((e) => e.summary === "ahead").length, cancelled: events.filter((e) => e.summary === "cancelled").length },
    turnMs: ms.map((x) => Math.round(x)), events,
  };
  r.slowestRatio = r.slowestLateMs / base;
  r.meanRatio = r.meanLateMs / base;
  results.push(r);
}
await model.dispose();
console.log(JSON.stringify(results, null, 1));
console.log("\n| run | median t5-15 (ms) | first fold | slowest late (ms) | ratio | mean late (ms) | ratio | inline/ahead/cancelled |");
console.log("|---|---|---|---|---|---|---|---|");
for (const r of results) {
  console.log(`| ${r.id} | ${r.medianTurns5to15Ms.toFixed(0)} | ${r.firstFoldTurn} | ${r.slowestLateMs.toFixed(0)} | ${r.slowestRatio.toFixed(2)}x | ${r.meanLateMs.toFixed(0)} | ${r.meanRatio.toFixed(2)}x | ${r.summaries.inline}/${r.summaries.ahead}/${r.summaries.cancelled} |`);
}
