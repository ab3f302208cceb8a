#!/usr/bin/env node
// `llamem serve` under load on loopback, side by side with llama-server built from the same
// llama.cpp source, one server at a time on a quiet machine. Our own client (fetch, streaming
// chat completions) measures:
//
//   1. For 1, 8, 32 and 128 concurrent streaming clients: p50 and p99 time to first token,
//      aggregate generated tokens per second, and the share of 429s. Every request shares a
//      system prompt and has a user message of its own (so prompt caching matters).
//   2. Conversations that outgrow their context: each client talks for many turns. llamem keeps
//      the conversation (X-Conversation-Id; the client sends only the new message) under its
//      memory policy; llama-server gets the whole history every turn, as OpenAI clients send it.
//      Turns answered, turns failed, p50/p99 time to first token, prompt tokens per turn.
//   3. RSS of the server over --soak requests (default 10,000), sampled every 500: it must be flat.
//      Run on the tiny model (the leak check does not need a big one), for both servers.
//
//   npm run bench:serve -- [--model 1b:q4_0] [--parallel 8] [--levels 1,8,32,128] [--max-tokens 32]
//                          [--soak 10000] [--no-llama-server] [--threads 2] [--kv-unified]
//                          [--only load|conversations|soak]
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { buildLlamaTools } from "./build-llama-tools.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const synth = await import(pathToFileURL(join(root, "dist", "lib", "gguf", "synthetic.js")).href);
const { values } = parseArgs({
  options: {
    model: { type: "string", default: "1b:q4_0" },
    parallel: { type: "string", default: "8" },
    "seq-ctx": { type: "string", default: "512" },
    levels: { type: "string", default: "1,8,32,128" },
    "max-tokens": { type: "string", default: "32" },
    queue: { type: "string", default: "64" },
    conversations: { type: "string", default: "8" },
    turns: { type: "string", default: "24" },
    soak: { type: "string", default: "10000" },
    threads: { type: "string", default: "2" },
    "no-llama-server": { type: "boolean", default: false },
    "kv-unified": { type: "boolean", default: false },
    only: { type: "string" },
    out: { type: "string" },
  },
});
const parallel = Number(values.parallel);
const seqCtx = Number(values["seq-ctx"]);
const maxTokens = Number(values["max-tokens"]);
const threads = Number(values.threads);
const levels = values.levels.split(",").map(Number);
const log = (s) => process.stderr.write(s + "\n");

async function syntheticModel(spec) {
  const [preset, type] = spec.split(":");
  const dir = join(root, "bench", "work");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `synthetic-${preset}-${type}-seed1-v${synth.SYNTHETIC_FORMAT_VERSION}.gguf`);
  if (!existsSync(path)) {
    log(`bench-serve: writing the synthetic ${preset} ${type} model (once; cached)`);
    await synth.writeSyntheticModel(path, { preset, type, seed: 1 });
  }
  return path;
}

// ---- servers ------------------------------------------------------------------------------------

/** Starts a server process and resolves once /health answers. */
async function startServer(kind, modelPath, port, o = {}) {
  const ctx = String(parallel * seqCtx);
  const args =
    kind === "llamem"
      ? [join(root, "dist", "lib", "cli", "index.js"), "serve", "-m", modelPath, "--port", String(port), "--parallel", String(parallel), "-c", ctx, "-t", String(threads), "--queue", String(o.queue ?? values.queue), "--model-id", "m", "-q", "--flash-attn", "off", ...(values["kv-unified"] ? ["--kv-unified"] : []), ...(o.extra ?? [])]
      : ["-m", modelPath, "--port", String(port), "-np", String(parallel), "-c", ctx, "-t", String(threads), "-fa", "off", "--cache-ram", "1024", "--no-webui", "-a", "m", ...(values["kv-unified"] ? ["-kvu"] : [])];
  const bin = kind === "llamem" ? process.execPath : llamaServer;
  const child = spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (b) => (err = (err + b.toString()).slice(-4000)));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`${kind} exited: ${err}`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.status === 200) return { child, url, kind };
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${kind} did not start: ${err}`);
}

async function stopServer(s) {
  s.child.kill("SIGTERM");
  const t = setTimeout(() => s.child.kill("SIGKILL"), 20_000);
  await new Promise((r) => (s.child.exitCode !== null ? r() : s.child.once("exit", r)));
  clearTimeout(t);
}

function rssOf(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : NaN;
}

// ---- client -------------------------------------------------------------------------------------

/** One streaming chat request: status, time to first token, generated tokens, prompt tokens. */
async function chatStream(url, messages, { conversation, tokens = maxTokens } = {}) {
  const t0 = performance.now();
  const headers = { "content-type": "application/json", ...(conversation ? { "x-conversation-id": conversation } : {}) };
  const body = JSON.stringify({ model: "m", messages, max_tokens: tokens, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let res;
  try {
    res = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers, body });
  } catch (e) {
    return { status: 0, error: String(e) };
  }
  if (res.status !== 200) {
    await res.text();
    return { status: res.status };
  }
  let ttft;
  let text = "";
  let usage;
  let cacheN;
  let buffered = "";
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    buffered += decoder.decode(chunk, { stream: true });
    let at;
    while ((at = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, at);
      buffered = buffered.slice(at + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const data = JSON.parse(event.slice(6));
      if (data.error) return { status: 500, error: data.error.message };
      const piece = data.choices?.[0]?.delta?.content;
      if (piece) {
        ttft ??= performance.now() - t0;
        text += piece;
      }
      if (data.usage) usage = data.usage;
      // llama-server reports its prompt cache in timings.
      if (data.timings?.cache_n !== undefined) cacheN = data.timings.cache_n;
    }
  }
  return { status: 200, ttft: ttft ?? performance.now() - t0, text, completion: usage?.completion_tokens ?? 0, prompt: usage?.prompt_tokens ?? 0, cached: usage?.prompt_tokens_details?.cached_tokens ?? cacheN, ms: performance.now() - t0 };
}

const pct = (xs, p) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const SYSTEM = "You are a helpful assistant. Answer briefly and precisely, and say when you do not know.";
const TOPICS = ["the weather", "a recipe", "trains", "the moon", "gardening", "music", "chess", "rivers", "coffee", "bicycles", "stars", "bread"];

/** Request numbers are unique over the whole run, so no level finds its prompts cached by an earlier one. */
let requestSerial = 0;

/** Level: `clients` concurrent clients until `total` requests are done. */
async function loadLevel(url, clients, total) {
  let next = 0;
  const results = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < total) {
        next++;
        const i = requestSerial++;
        const messages = [{ role: "system", content: SYSTEM }, { role: "user", content: `Request ${i}: tell me something about ${TOPICS[i % TOPICS.length]}.` }];
        results.push(await chatStream(url, messages));
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  const ok = results.filter((r) => r.status === 200);
  return {
    clients,
    requests: results.length,
    ok: ok.length,
    rate429: results.filter((r) => r.status === 429).length / results.length,
    otherErrors: results.filter((r) => r.status !== 200 && r.status !== 429).length,
    ttftP50: pct(ok.map((r) => r.ttft), 50),
    ttftP99: pct(ok.map((r) => r.ttft), 99),
    tokensPerSecond: ok.reduce((s, r) => s + r.completion, 0) / wall,
    wallSeconds: wall,
  };
}

/** Conversations of `turns` turns each, `clients` at once. */
async function conversations(url, kind, clients, turns) {
  const results = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const history = [{ role: "system", content: SYSTEM }];
      for (let t = 0; t < turns; t++) {
        const user = { role: "user", content: `Conversation ${c}, turn ${t}: here is more about ${TOPICS[(c + t) % TOPICS.length]}, with a few details to remember for later in our talk.` };
        // llamem keeps the conversation: only the new message (and the system prompt at the start) goes.
        const messages = kind === "llamem" ? (t === 0 ? [...history, user] : [user]) : [...history, user];
        const r = await chatStream(url, messages, { conversation: kind === "llamem" ? `bench-${c}` : undefined, tokens: 24 });
        results.push({ ...r, turn: t });
        history.push(user, { role: "assistant", content: r.text ?? "" });
      }
    }),
  );
  const ok = results.filter((r) => r.status === 200);
  return {
    conversations: clients,
    turns,
    answered: ok.length,
    failed: results.length - ok.length,
    firstFailedTurn: Math.min(...results.filter((r) => r.status !== 200).map((r) => r.turn), Infinity),
    ttftP50: pct(ok.map((r) => r.ttft), 50),
    ttftP99: pct(ok.map((r) => r.ttft), 99),
    promptTokensMean: ok.reduce((s, r) => s + r.prompt, 0) / Math.max(1, ok.length),
    evaluatedTokensMean: ok.reduce((s, r) => s + (r.prompt - (r.cached ?? 0)), 0) / Math.max(1, ok.length),
    wallSeconds: (performance.now() - t0) / 1000,
  };
}

/** RSS every 500 requests over `n` requests, 8 clients. */
async function soak(server, n) {
  const samples = [[0, rssOf(server.child.pid)]];
  let next = 0;
  let failed = 0;
  const statuses = {};
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < n) {
        const i = next++;
        const r = await chatStream(server.url, [{ role: "user", content: `Soak ${i} about ${TOPICS[i % TOPICS.length]}` }], { tokens: 4 });
        if (r.status !== 200) {
          failed++;
          statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        }
        if ((i + 1) % 500 === 0) samples.push([i + 1, rssOf(server.child.pid)]);
      }
    }),
  );
  return { requests: n, failed, statuses, rss: samples };
}

// ---- run ----------------------------------------------------------------------------------------

let llamaServer;
if (!values["no-llama-server"]) {
  log("bench-serve: building llama-server from vendor/llama.cpp (once)");
  llamaServer = buildLlamaTools(["llama-server"])[0];
}
const modelPath = await syntheticModel(values.model);
const tinyPath = await syntheticModel("tiny:q8_0");
const kinds = values["no-llama-server"] ? ["llamem"] : ["llamem", "llama-server"];
const out = { date: new Date().toISOString(), cpu: cpus()[0]?.model, cores: cpus().length, model: values.model, parallel, seqCtx, maxTokens, threads, kvUnified: values["kv-unified"], load: {}, conversations: {}, soak: {} };
let port = 18400;
for (const kind of kinds) {
  const part = (name) => values.only === undefined || values.only === name;
  if (part("load")) {
  log(`bench-serve: ${kind}: load levels ${levels.join(", ")}`);
  const s = await startServer(kind, modelPath, port++);
  try {
    // Warm-up: the first decode of a process pays for allocations.
    await chatStream(s.url, [{ role: "user", content: "warm up" }], { tokens: 4 });
    requestSerial = 0;
    out.load[kind] = [];
    for (const clients of levels) {
      const r = await loadLevel(s.url, clients, Math.max(2 * clients, 16));
      log(`  ${clients} clients: ttft p50 ${r.ttftP50.toFixed(0)} ms, p99 ${r.ttftP99.toFixed(0)} ms, ${r.tokensPerSecond.toFixed(1)} tok/s, 429 ${(r.rate429 * 100).toFixed(1)}%, errors ${r.otherErrors}`);
      out.load[kind].push(r);
    }
  } finally {
    await stopServer(s);
  }
  }
  if (part("conversations") && Number(values.conversations) > 0) {
  log(`bench-serve: ${kind}: ${values.conversations} conversations of ${values.turns} turns`);
  const c = await startServer(kind, modelPath, port++);
  try {
    const r = await conversations(c.url, kind, Number(values.conversations), Number(values.turns));
    log(`  answered ${r.answered}, failed ${r.failed} (first at turn ${r.firstFailedTurn}), ttft p50 ${r.ttftP50.toFixed(0)} ms, p99 ${r.ttftP99.toFixed(0)} ms, prompt ${r.promptTokensMean.toFixed(0)} tokens/turn, evaluated ${r.evaluatedTokensMean.toFixed(0)}`);
    out.conversations[kind] = r;
  } finally {
    await stopServer(c);
  }
  }
  if (part("soak") && Number(values.soak) > 0) {
    log(`bench-serve: ${kind}: RSS over ${values.soak} requests (tiny model)`);
    const t = await startServer(kind, tinyPath, port++, { queue: 64 });
    try {
      const r = await soak(t, Number(values.soak));
      const mib = (b) => (b / 2 ** 20).toFixed(1);
      log(`  RSS ${r.rss.map(([n, b]) => `${n}:${mib(b)}`).join(" ")} MiB; failed ${r.failed} ${JSON.stringify(r.statuses)}`);
      out.soak[kind] = r;
    } finally {
      await stopServer(t);
    }
  }
}
const file = values.out ?? join(root, "bench", "results", `${out.date.slice(0, 10)}-serve.json`);
writeFileSync(file, JSON.stringify(out, null, 2) + "\n");
log(`bench-serve: wrote ${file}`);
