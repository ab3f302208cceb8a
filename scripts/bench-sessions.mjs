#!/usr/bin/env node
// Session memory on a synthetic model: what each memory strategy costs over a long chat, and what
// batching many sessions in one pool buys.
//
//   node scripts/bench-sessions.mjs [--model 1b:q4_0] [--turns 500] [--reply-tokens 8] [--budget 512]
//                                   [--reeval-turns N] [--pool-tokens 64] [--threads N] [--parts LIST] [--quick]
//                                   [--out bench/results]
//
// Part 1, a long chat: the same N user messages, replies of --reply-tokens tokens at temperature 0,
// once per contender, each in its own child process (so peak RSS belongs to one contender):
//   tokenBudget, slidingWindow, summarize  createSession() with memory { strategy, budget } on a
//                                          context of --context tokens (2048). summarize gets a
//                                          summarizer FUNCTION that keeps the first words of the
//                                          folded turns: the figures are the memory mechanics, not
//                                          the model writing summaries.
//   noPruning                              createSession() on a context of --big-context tokens (8192)
//                                          with the default budget (context - reply - 16): nothing is
//                                          pruned until the history fills the context. The run stops
//                                          at the first turn that would prune and reports that turn.
//   fullReeval                             no session: each turn formats the whole history with the
//                                          chat template, sequence.clear(), then complete() on all of
//                                          it (the naive approach), on the same big context; it stops
//                                          where the prompt no longer fits. Its cost grows with the
//                                          square of the turns: --reeval-turns caps it separately.
// Part 2, pool throughput: one session alone on its own context, then 1, 4 and 8 sessions at once in
// createPool() on a context with sequences: 8, contextSize 8 x 512, batchSize 512. Each session does
// a warm-up turn, then a timed turn that generates --pool-tokens tokens after a short message.
//
// Writes <out>/<date>-sessions.json (every per-turn figure) and .md (the tables, also printed);
// --quick adds "-quick" to the names. Progress goes to stderr. See bench/README.md.
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { execFileSync } from "node:child_process";
import { gpuDescription } from "./bench-models.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const selfScript = fileURLToPath(import.meta.url);
const distLib = join(root, "dist", "lib");

/** Synthetic models: the same file names and seed as scripts/bench.mjs, so both reuse one file. */
const MODEL_SEED = 1;
const DEFAULTS = { model: "1b:q4_0", turns: 500, replyTokens: 8, budget: 512, context: 2048, bigContext: 8192, poolTokens: 64 };
const QUICK = { model: "tiny:q4_0", turns: 30, poolTokens: 16 };
const POOL_SEQUENCES = 8;
const POOL_SEQUENCE_CELLS = 512;
const POOL_SIZES = [1, 4, 8];
const BATCH = 512;
/** Windows for the per-turn medians: turns 8..12 ("turn 10") and the last LAST_WINDOW turns. */
const EARLY_FROM = 8;
const EARLY_TO = 12;
const LAST_WINDOW = 5;
/** The stand-in summarizer keeps at most this many words. */
const SUMMARY_WORDS = 24;
/**
 * Turns the sliding window keeps. Not the default 8: a turn is about 58 tokens here, so 8 turns
 * would pass a 512-token budget and the budget, not the window, would decide (as in tokenBudget).
 */
const WINDOW_TURNS = 4;

const SYSTEM = "You are a concise assistant. Answer every question in one short sentence.";
const ASKS = ["What do you think about", "Tell me one fact about", "Give me a quick tip about", "Why do people care about", "What is new with", "How would you explain"];
const SUBJECTS = [
  "the weather in Lisbon", "my tomato plants", "the night train to Vienna", "learning the cello", "sourdough bread",
  "the chess opening I tried", "our team meeting", "a cheap mechanical keyboard", "the river trail", "the museum downtown",
  "solar panels on a roof", "my cat's new habit",
];

/** The user message of turn i (0-based): a short sentence that changes every turn. */
function userMessage(i) {
  return `${ASKS[i % ASKS.length]} ${SUBJECTS[(i * 5 + Math.floor(i / ASKS.length)) % SUBJECTS.length]}, question ${i + 1}?`;
}

/** Stand-in for a model summary: the previous summary plus the first 3 words of each folded turn's user message, last SUMMARY_WORDS words. */
async function firstWordsSummary(turns, previous) {
  const words = previous ? previous.split(/\s+/) : [];
  for (const turn of turns) {
    const user = turn.find((m) => m.role === "user");
    if (user) words.push(...user.content.split(/\s+/).slice(0, 3));
  }
  return words.filter(Boolean).slice(-SUMMARY_WORDS).join(" ");
}

/** The chat contenders. `memory` is the session's memory option (undefined: no session, the naive loop). */
const CHAT = [
  { id: "tokenBudget", big: false, what: "drop the oldest turns to stay within the budget",
    memory: (o) => ({ strategy: "tokenBudget", budget: o.budget }) },
  { id: "slidingWindow", big: false, what: `keep the last ${WINDOW_TURNS} turns (fewer if the budget demands)`,
    memory: (o) => ({ strategy: "slidingWindow", budget: o.budget, keepLastTurns: WINDOW_TURNS }) },
  { id: "summarize", big: false, what: `fold old turns into a running summary (a function keeping ${SUMMARY_WORDS} words, not the model), keep 2 turns`,
    memory: (o) => ({ strategy: "summarize", budget: o.budget, summarize: firstWordsSummary }) },
  { id: "noPruning", big: true, what: "nothing evicted; KV cache reused; stops when the history fills the context",
    memory: () => ({ strategy: "tokenBudget" }), stopOnPrune: true },
  { id: "fullReeval", big: true, what: "naive: sequence.clear() and evaluate the whole formatted history every turn; stops when it no longer fits",
    memory: undefined },
];
const PARTS = [...CHAT.map((c) => c.id), "pool"];

// ---------------------------------------------------------------------------------------------
// Helpers.

function log(msg) {
  process.stderr.write(`${msg}\n`);
}

function fail(msg) {
  log(`bench-sessions: ${msg}`);
  process.exit(2);
}

function median(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? null : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function sum(xs) {
  return xs.reduce((a, b) => a + b, 0);
}

function fmt(x, digits = 0) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  return x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function mib(bytes) {
  return bytes === null || bytes === undefined ? null : bytes / 2 ** 20;
}

function localDate(d = new Date()) {
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

function seconds(ms) {
  return ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function tryRun(cmd, args) {
  try {
    return execFileSync(cmd, args, { cwd: root, stdio: ["ignore", "pipe", "ignore"] }).toString().trim();
  } catch {
    return null;
  }
}

function positiveInt(value, name) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) fail(`${name} must be a positive integer`);
  return n;
}

async function importLib() {
  return import(pathToFileURL(join(distLib, "index.js")).href);
}

// ---------------------------------------------------------------------------------------------
// Child: one chat contender.

async function chatChild(job) {
  const lib = await importLib();
  const contender = CHAT.find((c) => c.id === job.contender);
  const t0 = performance.now();
  const model = await lib.loadModel(job.modelPath, { gpuLayers: job.gpuLayers });
  const loadMs = performance.now() - t0;
  const rssAfterLoad = process.memoryUsage().rss;
  const contextSize = contender.big ? job.bigContext : job.context;
  const ctx = await model.createContext({ contextSize, batchSize: BATCH, threads: job.threads });
  const capacity = ctx.info.sequenceContextSize;
  const mem0 = await ctx.memory();
  const bytesPerCell = mem0.cells > 0 ? mem0.kv / mem0.cells : 0;

  const rows = { turn: [], ms: [], promptTokens: [], evaluatedTokens: [], generatedTokens: [], reevaluatedTokens: [], kvTokens: [], events: [] };
  let fullAtTurn = null;
  let summaries = 0;
  let turnsEvicted = 0;
  let kvTokensEnd = 0;
  const progressEvery = Math.max(1, Math.round(job.turns / 10));
  const progress = (t) => {
    if (t % progressEvery === 0 || t === job.turns) log(`  ${contender.id}: turn ${t}/${job.turns} (${seconds(performance.now() - tLoop)})`);
  };
  const tLoop = performance.now();

  if (contender.memory) {
    let events = [];
    let stoppedEvents = [];
    const session = await lib.createSession(ctx, {
      system: SYSTEM,
      maxTokens: job.replyTokens,
      temperature: 0,
      memory: contender.memory(job),
      onMemoryEvent: (e) => events.push(e),
    });
    for (let t = 0; t < job.turns; t++) {
      events = [];
      const ts = performance.now();
      await session.prompt(userMessage(t));
      const ms = performance.now() - ts;
      if (contender.stopOnPrune && events.some((e) => e.kind === "prune")) {
        // This turn's prompt no longer fit: it is where the unpruned history stops fitting.
        fullAtTurn = t + 1;
        stoppedEvents = events;
        log(`  ${contender.id}: turn ${t + 1} no longer fits ${capacity} tokens (its prompt was pruned); stopping`);
        break;
      }
      const g = session.lastGeneration;
      rows.turn.push(t + 1);
      rows.ms.push(ms);
      rows.promptTokens.push(g.promptTokens);
      rows.evaluatedTokens.push(g.evaluatedPromptTokens);
      rows.generatedTokens.push(g.generatedTokens);
      rows.reevaluatedTokens.push(sum(events.map((e) => e.reevaluatedTokens)));
      rows.kvTokens.push(session.sequence?.tokens.length ?? 0);
      rows.events.push(events.map((e) => e.kind).join(",") || null);
      progress(t + 1);
    }
    const s = await session.stats();
    // Figures as of the last turn recorded (not the turn that stopped the run).
    summaries = s.summaries;
    turnsEvicted = s.turnsEvicted - sum(stoppedEvents.map((e) => e.dropped.length));
    kvTokensEnd = fullAtTurn ? (rows.kvTokens.at(-1) ?? 0) : s.kvTokens;
    await session.dispose();
  } else {
    const seq = ctx.sequence(0);
    const history = [];
    for (let t = 0; t < job.turns; t++) {
      history.push({ role: "user", content: userMessage(t) });
      const ts = performance.now();
      const text = await model.applyChatTemplate([{ role: "system", content: SYSTEM }, ...history], { addAssistant: true });
      const tokens = await model.tokenize(text, { addSpecial: true, parseSpecial: true });
      // The same limit as noPruning's: a session's default budget, context - reply - 16.
      if (tokens.length > capacity - job.replyTokens - 16) {
        fullAtTurn = t + 1;
        log(`  ${contender.id}: turn ${t + 1} has a prompt of ${tokens.length} tokens, over ${capacity} - ${job.replyTokens} - 16; stopping`);
        break;
      }
      // The cached tokens this prompt starts with: a session would reuse them, this loop evaluates them again.
      const cached = seq.tokens;
      let same = 0;
      while (same < cached.length && same < tokens.length && cached[same] === tokens[same]) same++;
      await seq.clear();
      const g = await seq.complete(tokens, { maxTokens: job.replyTokens, temperature: 0 });
      const ms = performance.now() - ts;
      history.push({ role: "assistant", content: g.text });
      rows.turn.push(t + 1);
      rows.ms.push(ms);
      rows.promptTokens.push(g.promptTokens);
      rows.evaluatedTokens.push(g.evaluatedPromptTokens);
      rows.generatedTokens.push(g.generatedTokens);
      rows.reevaluatedTokens.push(same);
      rows.kvTokens.push(seq.tokens.length);
      rows.events.push(null);
      progress(t + 1);
    }
    kvTokensEnd = seq.tokens.length;
  }
  const loopMs = performance.now() - tLoop;
  await ctx.dispose();
  await model.dispose();
  return {
    contender: contender.id,
    contextSize,
    sequenceContextSize: capacity,
    kvCapacityBytes: mem0.kv,
    loadMs,
    loopMs,
    rssAfterLoadBytes: rssAfterLoad,
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    fullAtTurn,
    summaries,
    turnsEvicted,
    kvTokensEnd,
    kvBytesEnd: Math.round(kvTokensEnd * bytesPerCell),
    rows,
  };
}

// ---------------------------------------------------------------------------------------------
// Child: pool throughput.

async function poolChild(job) {
  const lib = await importLib();
  const model = await lib.loadModel(job.modelPath, { gpuLayers: job.gpuLayers });
  const configs = [{ id: "alone", sessions: 1, pool: false }, ...POOL_SIZES.map((n) => ({ id: `pool${n}`, sessions: n, pool: true }))];
  const out = [];
  for (const cfg of configs) {
    const ctx = await model.createContext(
      cfg.pool
        ? { contextSize: POOL_SEQUENCES * POOL_SEQUENCE_CELLS, sequences: POOL_SEQUENCES, batchSize: BATCH, threads: job.threads }
        : { contextSize: POOL_SEQUENCE_CELLS, batchSize: BATCH, threads: job.threads },
    );
    const pool = cfg.pool ? lib.createPool(ctx) : undefined;
    const options = { system: SYSTEM, temperature: 0 };
    const sessions = [];
    for (let i = 0; i < cfg.sessions; i++) sessions.push(pool ? await pool.createSession(options) : await lib.createSession(ctx, options));
    // Warm-up turn: the first decodes, graph allocation and thread start-up stay out of the timing.
    await Promise.all(sessions.map((s, i) => s.prompt(userMessage(100 + i), { maxTokens: 2 })));
    const before = pool ? await pool.stats() : undefined;
    const first = new Array(cfg.sessions).fill(0);
    const last = new Array(cfg.sessions).fill(0);
    const t0 = performance.now();
    await Promise.all(
      sessions.map((s, i) =>
        s.prompt(userMessage(200 + i), {
          maxTokens: job.poolTokens,
          onToken: () => {
            const now = performance.now();
            if (first[i] === 0) first[i] = now;
            last[i] = now;
          },
        }),
      ),
    );
    const wallMs = performance.now() - t0;
    const gens = sessions.map((s) => s.lastGeneration);
    const generated = sum(gens.map((g) => g.generatedTokens));
    // Decode phase: from the moment every session has its first token to the last token of any.
    const decodeMs = Math.max(...last) - Math.max(...first);
    const after = pool ? await pool.stats() : undefined;
    out.push({
      id: cfg.id,
      sessions: cfg.sessions,
      pool: cfg.pool,
      wallMs,
      generatedTokens: generated,
      promptTokensEvaluated: sum(gens.map((g) => g.evaluatedPromptTokens)),
      stopReasons: gens.map((g) => g.stopReason),
      tokensPerSecond: (generated / wallMs) * 1000,
      decodeMs,
      decodeTokensPerSecond: decodeMs > 0 ? ((generated - cfg.sessions) / decodeMs) * 1000 : null,
      steps: after ? after.steps - before.steps : null,
      batchedTokens: after ? after.batchedTokens - before.batchedTokens : null,
    });
    log(`  pool: ${cfg.id}: ${generated} tokens in ${fmt(wallMs)} ms, ${fmt(out.at(-1).tokensPerSecond, 1)} tokens/s`);
    if (pool) await pool.dispose();
    else for (const s of sessions) await s.dispose();
    await ctx.dispose();
  }
  await model.dispose();
  return { configs: out, peakRssBytes: process.resourceUsage().maxRSS * 1024 };
}

// ---------------------------------------------------------------------------------------------
// Parent: models, children, report.

async function prepareModel(spec) {
  if (spec.endsWith(".gguf")) {
    const path = resolve(spec);
    if (!existsSync(path)) fail(`model file not found: ${spec}`);
    return { id: spec, label: spec.split("/").pop().replace(/\.gguf$/, ""), path, synthetic: null, fileSize: statSync(path).size };
  }
  const synth = await import(pathToFileURL(join(distLib, "gguf", "synthetic.js")).href);
  const [preset, type, extra] = spec.split(":");
  if (extra !== undefined || !(preset in synth.SYNTHETIC_PRESETS) || !["f32", "f16", "q8_0", "q4_0"].includes(type)) {
    fail(`bad --model '${spec}': use preset:type (preset ${Object.keys(synth.SYNTHETIC_PRESETS).join("|")}, type f32|f16|q8_0|q4_0) or a .gguf path`);
  }
  const workDir = join(root, "bench", "work");
  mkdirSync(workDir, { recursive: true });
  const path = join(workDir, `synthetic-${preset}-${type}-seed${MODEL_SEED}-v${synth.SYNTHETIC_FORMAT_VERSION}.gguf`);
  if (!existsSync(path)) {
    log(`bench-sessions: writing the synthetic ${preset} ${type} model to ${relative(root, path)} (once; cached)`);
    await synth.writeSyntheticModel(path, { preset, type, seed: MODEL_SEED });
  }
  return { id: spec, label: `${preset} ${type}`, path, synthetic: { preset, type, seed: MODEL_SEED, formatVersion: synth.SYNTHETIC_FORMAT_VERSION }, fileSize: statSync(path).size };
}

/** Reads the model once so the first child does not pay for the disk. */
function warmPageCache(path) {
  const fd = openSync(path, "r");
  const buf = Buffer.allocUnsafe(16 << 20);
  try {
    while (readSync(fd, buf, 0, buf.length, null) > 0) {
      // discard
    }
  } finally {
    closeSync(fd);
  }
}

/** Runs this script in child mode; resolves with the JSON it prints on its last "RESULT " line. */
function runChild(job) {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, [selfScript, "--child", JSON.stringify(job)], { cwd: root, stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.on("error", (err) => resolveRun({ ok: false, error: `cannot start the child: ${err.message}` }));
    child.on("close", (code, signal) => {
      const line = stdout.split("\n").reverse().find((l) => l.startsWith("RESULT "));
      if (code === 0 && line) resolveRun({ ok: true, ...JSON.parse(line.slice(7)) });
      else resolveRun({ ok: false, error: `child exited with ${signal ?? `code ${code}`}` });
    });
  });
}

/** The figures of one chat contender from its per-turn rows. */
function summarizeChat(r, turns) {
  if (!r.ok) return r;
  const { rows } = r;
  const n = rows.turn.length;
  const window = (key, from, to) => median(rows[key].filter((_, i) => rows.turn[i] >= from && rows.turn[i] <= to));
  const lastFrom = n > 0 ? rows.turn[Math.max(0, n - LAST_WINDOW)] : 0;
  const lastTo = n > 0 ? rows.turn[n - 1] : 0;
  return {
    ok: true,
    contender: r.contender,
    turnsRun: n,
    turnsAsked: turns,
    fullAtTurn: r.fullAtTurn,
    early: { from: EARLY_FROM, to: Math.min(EARLY_TO, lastTo), evaluatedTokens: window("evaluatedTokens", EARLY_FROM, EARLY_TO), promptTokens: window("promptTokens", EARLY_FROM, EARLY_TO), ms: window("ms", EARLY_FROM, EARLY_TO) },
    last: { from: lastFrom, to: lastTo, evaluatedTokens: window("evaluatedTokens", lastFrom, lastTo), promptTokens: window("promptTokens", lastFrom, lastTo), ms: window("ms", lastFrom, lastTo) },
    evaluatedTokensMean: n > 0 ? sum(rows.evaluatedTokens) / n : null,
    evaluatedTokensTotal: sum(rows.evaluatedTokens),
    generatedTokensTotal: sum(rows.generatedTokens),
    reevaluatedTokensTotal: sum(rows.reevaluatedTokens),
    loopMs: r.loopMs,
    msPerTurnMean: n > 0 ? r.loopMs / n : null,
    peakRssBytes: r.peakRssBytes,
    rssAfterLoadBytes: r.rssAfterLoadBytes,
    kvCapacityBytes: r.kvCapacityBytes,
    kvTokensEnd: r.kvTokensEnd,
    kvBytesEnd: r.kvBytesEnd,
    summaries: r.summaries,
    turnsEvicted: r.turnsEvicted,
    contextSize: r.contextSize,
  };
}

function renderMarkdown(report) {
  const s = report.settings;
  const lines = [];
  lines.push(`# Session memory: ${report.model.label}${s.quick ? " (quick)" : ""}`);
  lines.push("");
  lines.push(`${report.date}, ${report.machine.cpuModel}, ${s.threads} thread(s)${report.machine.gpu ? `, ${report.machine.gpu} with ${s.gpuLayers} layers offloaded` : ""}, Node ${report.machine.node}, load average ${report.machine.loadAverageBefore.toFixed(2)} before, ${report.machine.loadAverageAfter.toFixed(2)} after.`);
  lines.push("");
  if (report.chat.length > 0) {
    lines.push(`## Long chat: ${s.turns} turns, replies of ${s.replyTokens} tokens at temperature 0, budget ${s.budget} tokens`);
    lines.push("");
    lines.push(`Pruning strategies run on a context of ${s.context} tokens; noPruning and fullReeval on ${s.bigContext}. ` +
      `"turn ${EARLY_FROM}-${EARLY_TO}" and "last" are medians over turns ${EARLY_FROM}-${EARLY_TO} and the last ${LAST_WINDOW} turns run. ` +
      `The summarize strategy uses a summarizer function that keeps the first words of the folded turns (at most ${SUMMARY_WORDS} words), ` +
      "not the model: it measures the memory mechanics (eviction, re-evaluation after the summary), not summary writing.");
    lines.push("");
    lines.push(`| strategy | turns run | prompt tokens (turn ${EARLY_FROM}-${EARLY_TO} / last) | evaluated tokens per turn (turn ${EARLY_FROM}-${EARLY_TO} / last / mean) | latency ms (turn ${EARLY_FROM}-${EARLY_TO} / last) | evaluated total | evicted / summaries | KV at end MiB | KV allocated MiB | peak RSS MiB | time |`);
    lines.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const c of report.chat) {
      if (!c.ok) {
        lines.push(`| ${c.contender} | failed: ${c.error} | | | | | | | | | |`);
        continue;
      }
      const asked = c.turnsAsked !== s.turns ? ` of ${c.turnsAsked}` : "";
      const run = c.fullAtTurn ? `${c.turnsRun} (full at ${c.fullAtTurn})` : `${c.turnsRun}${asked}`;
      lines.push(
        `| ${c.contender} | ${run} | ${fmt(c.early.promptTokens)} / ${fmt(c.last.promptTokens)} | ` +
        `${fmt(c.early.evaluatedTokens)} / ${fmt(c.last.evaluatedTokens)} / ${fmt(c.evaluatedTokensMean, 1)} | ` +
        `${fmt(c.early.ms, 1)} / ${fmt(c.last.ms, 1)} | ${fmt(c.evaluatedTokensTotal)} | ${c.turnsEvicted} / ${c.summaries} | ` +
        `${fmt(mib(c.kvBytesEnd), 1)} | ${fmt(mib(c.kvCapacityBytes), 1)} | ${fmt(mib(c.peakRssBytes))} | ${seconds(c.loopMs)} |`,
      );
    }
    lines.push("");
    for (const c of report.chat) {
      const def = CHAT.find((x) => x.id === c.contender);
      if (def) lines.push(`- **${c.contender}**: ${def.what}.${c.fullAtTurn ? ` Turn ${c.fullAtTurn} did not fit; figures are for turns 1-${c.fullAtTurn - 1}.` : ""}`);
    }
    lines.push("");
  }
  if (report.pool) {
    lines.push(`## Pool throughput: ${s.poolTokens} tokens per session after a short message`);
    lines.push("");
    if (!report.pool.ok) {
      lines.push(`failed: ${report.pool.error}`);
    } else {
      lines.push(`"alone" is one session on its own context of ${POOL_SEQUENCE_CELLS} tokens; poolN is N sessions at once in createPool() on a context with ` +
        `sequences: ${POOL_SEQUENCES}, contextSize ${POOL_SEQUENCES * POOL_SEQUENCE_CELLS}, batchSize ${BATCH}. ` +
        "Each session had a warm-up turn first. tokens/s is all generated tokens over the wall time of the timed turn (its prompts included); " +
        "decode tokens/s counts from the moment every session has its first token. Speedups are against \"alone\".");
      lines.push("");
      lines.push("| run | sessions | generated tokens | wall ms | tokens/s | speedup | decode tokens/s | decode speedup | batched decodes |");
      lines.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
      const alone = report.pool.configs.find((c) => c.id === "alone");
      for (const c of report.pool.configs) {
        lines.push(
          `| ${c.id} | ${c.sessions} | ${c.generatedTokens} | ${fmt(c.wallMs)} | ${fmt(c.tokensPerSecond, 1)} | ${fmt(c.tokensPerSecond / alone.tokensPerSecond, 2)}× | ` +
          `${fmt(c.decodeTokensPerSecond, 1)} | ${fmt(c.decodeTokensPerSecond / alone.decodeTokensPerSecond, 2)}× | ${c.steps ?? "–"} |`,
        );
      }
      lines.push("");
      lines.push(`Peak RSS of the pool process: ${fmt(mib(report.pool.peakRssBytes))} MiB.`);
    }
    lines.push("");
  }
  if (s.quick) lines.push("A `--quick` run uses the tiny model: its per-token costs are mostly call overhead, so the figures are not a measurement.\n");
  return lines.join("\n");
}

const USAGE = `Usage: node scripts/bench-sessions.mjs [options]

Session memory on a synthetic model: a long chat with each memory strategy (tokenBudget,
slidingWindow, summarize with a stand-in summarizer function), with no pruning, and with the whole
history re-evaluated every turn; then the throughput of 1, 4 and 8 sessions in one pool against
one session alone. Each contender runs in its own child process.

  --model SPEC        preset:type (tiny|1b|8b : f32|f16|q8_0|q4_0) or a .gguf path (default ${DEFAULTS.model});
                      synthetic models are cached in bench/work/
  --turns N           turns of the long chat (default ${DEFAULTS.turns})
  --reeval-turns N    turns of fullReeval, whose cost grows with the square of the turns (default: --turns)
  --reply-tokens N    tokens of each reply (default ${DEFAULTS.replyTokens})
  --budget N          prompt budget of the pruning strategies (default ${DEFAULTS.budget})
  --context N         context of the pruning strategies (default ${DEFAULTS.context})
  --big-context N     context of noPruning and fullReeval (default ${DEFAULTS.bigContext})
  --pool-tokens N     tokens each pool session generates (default ${DEFAULTS.poolTokens})
  --threads N         threads (default: llamem's defaultThreads(), physical cores)
  --gpu-layers N      layers to offload on a GPU build (default 0)
  --parts LIST        a subset of ${PARTS.join(",")} (default all)
  --quick             ${QUICK.model}, ${QUICK.turns} turns, ${QUICK.poolTokens} pool tokens (unless given); outputs get "-quick"
  --out DIR           where <date>-sessions.json and .md go (default bench/results)
`;

async function main() {
  const { values } = parseArgs({
    options: {
      model: { type: "string" },
      turns: { type: "string" },
      "reeval-turns": { type: "string" },
      "reply-tokens": { type: "string" },
      budget: { type: "string" },
      context: { type: "string" },
      "big-context": { type: "string" },
      "pool-tokens": { type: "string" },
      threads: { type: "string" },
      "gpu-layers": { type: "string", default: "0" },
      parts: { type: "string" },
      quick: { type: "boolean", default: false },
      out: { type: "string", default: "bench/results" },
      child: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (!existsSync(join(distLib, "index.js"))) fail("dist/lib/index.js is missing: run `npx tsc -p tsconfig.json` first");
  if (values.child) {
    const job = JSON.parse(values.child);
    const result = job.kind === "pool" ? await poolChild(job) : await chatChild(job);
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
    return;
  }

  const quick = values.quick;
  const { defaultThreads } = await importLib();
  const settings = {
    quick,
    turns: positiveInt(values.turns ?? (quick ? QUICK.turns : DEFAULTS.turns), "--turns"),
    reevalTurns: null,
    replyTokens: positiveInt(values["reply-tokens"] ?? DEFAULTS.replyTokens, "--reply-tokens"),
    budget: positiveInt(values.budget ?? DEFAULTS.budget, "--budget"),
    context: positiveInt(values.context ?? DEFAULTS.context, "--context"),
    bigContext: positiveInt(values["big-context"] ?? DEFAULTS.bigContext, "--big-context"),
    poolTokens: positiveInt(values["pool-tokens"] ?? (quick ? QUICK.poolTokens : DEFAULTS.poolTokens), "--pool-tokens"),
    threads: positiveInt(values.threads ?? defaultThreads(), "--threads"),
    gpuLayers: Number(values["gpu-layers"]),
    parts: (values.parts ?? PARTS.join(",")).split(",").map((p) => p.trim()).filter(Boolean),
    slidingWindowTurns: WINDOW_TURNS,
    summarizer: `function: the first 3 words of each folded turn's user message, at most ${SUMMARY_WORDS} words (not the model)`,
    systemPrompt: SYSTEM,
    poolLayout: { sequences: POOL_SEQUENCES, contextSize: POOL_SEQUENCES * POOL_SEQUENCE_CELLS, batchSize: BATCH, sizes: POOL_SIZES },
    windows: { early: [EARLY_FROM, EARLY_TO], last: LAST_WINDOW },
  };
  settings.reevalTurns = positiveInt(values["reeval-turns"] ?? settings.turns, "--reeval-turns");
  for (const p of settings.parts) if (!PARTS.includes(p)) fail(`unknown part '${p}' (have ${PARTS.join(", ")})`);
  if (settings.budget >= settings.context) fail("--budget must be smaller than --context");
  const model = await prepareModel(values.model ?? (quick ? QUICK.model : DEFAULTS.model));
  const outDir = resolve(values.out);

  const loadAverageBefore = os.loadavg()[0];
  if (loadAverageBefore > 0.5) log(`bench-sessions: warning: load average ${loadAverageBefore.toFixed(2)}: other work on this machine will distort the timings`);
  log(`bench-sessions: ${model.label}, ${settings.threads} thread(s), ${settings.turns} turns, parts ${settings.parts.join(",")}`);
  if (settings.parts.includes("fullReeval") && settings.reevalTurns > 60) {
    log(`bench-sessions: note: fullReeval evaluates the whole history every turn (about 30 x turns^2 tokens in all, until ${settings.bigContext} tokens are full); ` +
      "on a 1b model that alone takes tens of minutes: cap it with --reeval-turns");
  }
  warmPageCache(model.path);

  const tStart = Date.now();
  const base = { modelPath: model.path, threads: settings.threads, gpuLayers: settings.gpuLayers, turns: settings.turns, replyTokens: settings.replyTokens, budget: settings.budget, context: settings.context, bigContext: settings.bigContext };
  const chat = [];
  for (const c of CHAT) {
    if (!settings.parts.includes(c.id)) continue;
    log(`bench-sessions: ${c.id} (${seconds(Date.now() - tStart)} so far)`);
    const turns = c.id === "fullReeval" ? settings.reevalTurns : settings.turns;
    const r = await runChild({ ...base, turns, kind: "chat", contender: c.id });
    if (!r.ok) log(`bench-sessions: ${c.id} failed: ${r.error}`);
    chat.push({ summary: summarizeChat(r.ok ? r : { ...r, contender: c.id }, turns), raw: r });
  }
  let pool = null;
  if (settings.parts.includes("pool")) {
    log(`bench-sessions: pool (${seconds(Date.now() - tStart)} so far)`);
    pool = await runChild({ ...base, kind: "pool", poolTokens: settings.poolTokens });
    if (!pool.ok) log(`bench-sessions: pool failed: ${pool.error}`);
  }

  const report = {
    schema: 1,
    date: new Date().toISOString(),
    settings,
    model: { id: model.id, label: model.label, path: relative(root, model.path), fileSize: model.fileSize, synthetic: model.synthetic },
    machine: {
      cpuModel: os.cpus()[0]?.model?.trim() ?? "unknown CPU",
      gpu: gpuDescription(await importLib(), settings.gpuLayers),
      logicalCpus: os.availableParallelism(),
      memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
      os: `${os.type()} ${os.release()} ${os.arch()}`,
      node: process.version,
      llamem: { commit: tryRun("git", ["rev-parse", "HEAD"]) },
      loadAverageBefore,
      loadAverageAfter: os.loadavg()[0],
    },
    totalMs: Date.now() - tStart,
    chat: chat.map((c) => c.summary),
    chatTurns: Object.fromEntries(chat.filter((c) => c.raw.ok).map((c) => [c.raw.contender, c.raw.rows])),
    pool,
  };
  const md = renderMarkdown(report);
  mkdirSync(outDir, { recursive: true });
  const name = join(outDir, `${localDate()}-sessions${quick ? "-quick" : ""}${settings.gpuLayers > 0 ? "-gpu" : ""}`);
  writeFileSync(`${name}.json`, `${JSON.stringify(report, null, 1)}\n`);
  writeFileSync(`${name}.md`, `${md}\n`);
  process.stdout.write(`${md}\n`);
  log(`bench-sessions: ${seconds(report.totalMs)}; wrote ${relative(root, name)}.{json,md}`);
  if (chat.some((c) => !c.raw.ok) || (pool && !pool.ok)) process.exitCode = 1;
}

main().catch((err) => {
  log(`bench-sessions: ${err?.stack ?? err}`);
  process.exit(1);
});
