#!/usr/bin/env node
// Recall of archived turns (memory.recall), measured as a mechanism: random weights cannot show
// recall quality, but mean-pooled vectors of texts that share tokens are closer than those of
// unrelated texts, and that is what the hit rate measures.
//
//   1. Hit rate: facts are planted in archived turns; each question shares its fact's key words.
//      Hit@1 and hit@5 of the synthetic BERT's vectors (mean pooling) against a keyword baseline
//      (word overlap).
//   2. Search latency of the default store (exact cosine) over 1k, 10k and 100k archived turns,
//      p50/p99, with the embedding of the question timed apart; bytes per archived turn.
//   3. RSS over a long chat with recall on and a row cap: it must stay flat once the cap is hit.
//
//   npm run bench:recall -- [--facts 200] [--turns 10000] [--cap 1000]
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { monitorEventLoopDelay } from "node:perf_hooks";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const lib = await import(pathToFileURL(join(root, "dist", "lib", "index.js")).href);
const synth = await import(pathToFileURL(join(root, "dist", "lib", "gguf", "synthetic.js")).href);
const { values } = parseArgs({ options: { facts: { type: "string", default: "200" }, turns: { type: "string", default: "10000" }, cap: { type: "string", default: "1000" }, threads: { type: "string", default: "2" }, only: { type: "string" }, "no-recall": { type: "boolean", default: false } } });
const threads = Number(values.threads);
lib.setLogLevel("error");

async function synthetic(arch) {
  const path = join(tmpdir(), `llamem-bench-recall-${arch}-v${synth.SYNTHETIC_FORMAT_VERSION}.gguf`);
  await synth.writeSyntheticModel(path, arch === "tiny" ? { preset: "tiny", type: "f16", seed: 1 } : { arch, type: "f16", seed: 1 });
  return path;
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const fmt = (ms) => (ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`);

const part = (n) => values.only === undefined || values.only === String(n);
// ---------------------------------------------------------------------------------------------
// 1. Hit rate.
const NOUNS = ["locker code", "favourite colour", "birth town", "bank", "dentist", "car plate", "wifi password", "cat's name", "train time", "boss"];
const NAMES = ["Ada", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena", "Mira", "Nils", "Omar", "Pia", "Quinn", "Rosa", "Sami", "Tove"];
const VALUES = ["river", "stone", "garden", "orbit", "silver", "winter", "cloud", "engine", "paper", "signal", "quiet", "light", "number", "window", "memory"];
const nFacts = Number(values.facts);
const facts = [];
for (let i = 0; i < nFacts; i++) {
  const noun = NOUNS[i % NOUNS.length];
  const name = NAMES[Math.floor(i / NOUNS.length) % NAMES.length];
  const value = `${VALUES[(i * 7) % VALUES.length]} ${VALUES[(i * 11 + 3) % VALUES.length]} ${i}`;
  facts.push({ text: `user: The ${noun} of ${name} is ${value}.\nassistant: Noted.`, question: `What is the ${noun} of ${name}?` });
}
const words = (t) => new Set(t.toLowerCase().match(/[a-z0-9']+/g) ?? []);
function keywordRank(question) {
  const q = words(question);
  return facts.map((f, i) => {
    const w = words(f.text);
    let overlap = 0;
    for (const x of q) if (w.has(x)) overlap++;
    return { i, score: overlap / Math.sqrt(w.size * q.size) };
  }).sort((a, b) => b.score - a.score);
}

if (part(1) || part(2)) {
const bertPath = await synthetic("bert");
const bert = await lib.loadModel(bertPath);
const ctx = await bert.createContext({ embeddings: true, pooling: "mean", contextSize: 512, batchSize: 512, sequences: 8, threads });
if (part(1)) {
const factVectors = await ctx.embed(facts.map((f) => f.text));
let hits = { emb1: 0, emb5: 0, kw1: 0, kw5: 0 };
for (const [i, f] of facts.entries()) {
  const [q] = await ctx.embed([f.question]);
  const ranked = factVectors.map((v, j) => ({ j, s: v.reduce((a, x, k) => a + x * q[k], 0) })).sort((a, b) => b.s - a.s);
  const r = ranked.findIndex((x) => x.j === i);
  if (r === 0) hits.emb1++;
  if (r < 5) hits.emb5++;
  const kr = keywordRank(f.question).findIndex((x) => x.i === i);
  if (kr === 0) hits.kw1++;
  if (kr < 5) hits.kw5++;
}
console.log(`## Hit rate: ${nFacts} planted facts, questions sharing their key words\n`);
console.log("| ranker | hit@1 | hit@5 |\n|---|---|---|");
console.log(`| synthetic BERT, mean pooling (random weights) | ${(hits.emb1 / nFacts).toFixed(3)} | ${(hits.emb5 / nFacts).toFixed(3)} |`);
console.log(`| keyword overlap (baseline) | ${(hits.kw1 / nFacts).toFixed(3)} | ${(hits.kw5 / nFacts).toFixed(3)} |\n`);
}

// ---------------------------------------------------------------------------------------------
// 2. Search latency and bytes per turn.
if (part(2)) {
console.log("## Search latency of the default store (exact cosine), and the question's embedding\n");
const embedTimes = [];
for (let i = 0; i < 50; i++) {
  const t0 = performance.now();
  await ctx.embed([facts[i % facts.length].question]);
  embedTimes.push(performance.now() - t0);
}
console.log(`embedding one question (synthetic BERT, 64 dims): p50 ${fmt(pct(embedTimes, 50))}, p99 ${fmt(pct(embedTimes, 99))}\n`);
console.log("| archived turns | dims | search p50 | search p99 | longest event-loop block | bytes per turn (vector + text) |\n|---|---|---|---|---|---|");
const turnText = facts[0].text;
for (const dims of [64, 384]) {
  for (const n of [1000, 10000, 100000]) {
    const store = new lib.MemoryRecallStore(n, undefined);
    const entries = [];
    for (let i = 0; i < n; i++) {
      const v = new Float32Array(dims);
      for (let k = 0; k < dims; k++) v[k] = Math.sin(i * 12.9898 + k * 78.233) * 43758.5453 % 1;
      const norm = Math.hypot(...v);
      for (let k = 0; k < dims; k++) v[k] /= norm;
      entries.push({ turn: [{ role: "user", content: turnText, timestamp: 0 }], text: turnText, vector: v, archivedAt: Date.now() });
    }
    store.add(entries);
    const times = [];
    // The search yields to the event loop between slices: the longest delay a timer saw is how
    // long the loop was blocked at most.
    const delay = monitorEventLoopDelay({ resolution: 1 });
    delay.enable();
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      await store.search(entries[(i * 37) % n].vector, 5, 0, () => false);
      times.push(performance.now() - t0);
    }
    delay.disable();
    const bytes = dims * 4 + Buffer.byteLength(turnText);
    console.log(`| ${n} | ${dims} | ${fmt(pct(times, 50))} | ${fmt(pct(times, 99))} | ${fmt(delay.max / 1e6)} | ${bytes} |`);
  }
}
}
await ctx.dispose();
await bert.dispose();
}

// ---------------------------------------------------------------------------------------------
// 3. RSS over a long chat with a row cap.
if (part(3)) {
const turns = Number(values.turns);
const cap = Number(values.cap);
console.log(`\n## RSS over a ${turns}-turn chat with recall on (tiny llama as chat and embedder, 1 token a reply, a cap of ${cap} archived turns)\n`);
const chatModel = await lib.loadModel(await synthetic("tiny"));
const session = await lib.createSession(chatModel, {
  context: { contextSize: 512, threads },
  maxTokens: 1,
  temperature: 0,
  memory: { budget: 200, ...(values["no-recall"] ? {} : { recall: { embed: chatModel, maxTurns: cap, minScore: -1, k: 2, maxTokens: 40 } }) },
});
console.log("| turn | RSS (MiB) | heap used (MiB) | external (MiB) |\n|---|---|---|---|");
const t0 = performance.now();
for (let t = 1; t <= turns; t++) {
  await session.prompt(`Message ${t}: the ${NOUNS[t % NOUNS.length]} of ${NAMES[t % NAMES.length]} is ${VALUES[t % VALUES.length]}.`);
  if (t % Math.max(1, Math.floor(turns / 10)) === 0) {
    const m = process.memoryUsage();
    console.log(`| ${t} | ${(m.rss / 2 ** 20).toFixed(0)} | ${(m.heapUsed / 2 ** 20).toFixed(1)} | ${(m.external / 2 ** 20).toFixed(1)} |`);
  }
}
console.log(`\n${turns} turns in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
await session.dispose();
await chatModel.dispose();
}

// ---------------------------------------------------------------------------------------------
// 4. The SQLite archive store at 100,000 turns: write time, file bytes per turn, opening a
//    namespace (every row read into memory), search.
if (part(4)) {
const { mkdtempSync, rmSync, statSync } = await import("node:fs");
const dir = mkdtempSync(join(tmpdir(), "llamem-bench-store-"));
const path = join(dir, "archive.db");
const n = 100_000;
const dims = 384;
console.log(`\n## The SQLite archive store: ${n} turns of ${dims}-float vectors\n`);
const text = facts[0].text;
let store = await lib.openArchiveStore(path, { maxTurns: n });
let ns = await store.namespace("bench");
const t0 = performance.now();
for (let b = 0; b < n; b += 1000) {
  const batch = [];
  for (let i = b; i < b + 1000; i++) {
    const v = new Float32Array(dims);
    for (let k = 0; k < dims; k++) v[k] = Math.sin(i * 12.9898 + k * 78.233) * 43758.5453 % 1;
    const norm = Math.hypot(...v);
    for (let k = 0; k < dims; k++) v[k] /= norm;
    batch.push({ turn: [{ role: "user", content: text, timestamp: 0 }], text, vector: v, archivedAt: Date.now() });
  }
  await ns.add(batch);
}
const writeMs = performance.now() - t0;
await store.close();
const fileBytes = ["", "-wal", "-shm"].reduce((sum, ext) => { try { return sum + statSync(path + ext).size; } catch { return sum; } }, 0);
const rss0 = process.memoryUsage().rss;
const t1 = performance.now();
const openDelay = monitorEventLoopDelay({ resolution: 1 });
openDelay.enable();
store = await lib.openArchiveStore(path, { maxTurns: n });
ns = await store.namespace("bench");
openDelay.disable();
const openMs = performance.now() - t1;
const rssLoaded = process.memoryUsage().rss - rss0;
const q = new Float32Array(dims).fill(1 / Math.sqrt(dims));
const times = [];
for (let i = 0; i < 20; i++) {
  const t = performance.now();
  await ns.search(q, 5, 0, () => false);
  times.push(performance.now() - t);
}
console.log("| turns | write (batches of 1,000) | file bytes per turn | open namespace | its longest event-loop block | RSS after opening | search p50 | search p99 |\n|---|---|---|---|---|---|---|---|");
console.log(`| ${n} | ${(writeMs / 1000).toFixed(1)} s | ${(fileBytes / n).toFixed(0)} | ${fmt(openMs)} | ${fmt(openDelay.max / 1e6)} | +${(rssLoaded / 2 ** 20).toFixed(0)} MiB | ${fmt(pct(times, 50))} | ${fmt(pct(times, 99))} |`);
await store.close();
rmSync(dir, { recursive: true, force: true });
}
