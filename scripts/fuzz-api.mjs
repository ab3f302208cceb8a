#!/usr/bin/env node
// API fuzzer: random calls through the public API with random arguments and options (wrong
// types, null, NaN, huge numbers, symbols, aborted signals, callbacks that throw), in random
// orders (dispose, generate, copy, save and restore interleaved, some awaited and some left in
// flight), each case in a child process. The sibling of scripts/fuzz.mjs (malformed GGUF files).
//
//   node scripts/fuzz-api.mjs [--cases N (500)] [--seed S (1)] [--ops K (16)] [--time-limit MS (30000)]
//                             [--jobs J (2)] [--batch B (25)] [--json] [--verbose]
//   node scripts/fuzz-api.mjs --case I [--seed S] [--ops K]      run one case, printing every call
//
// Every outcome must be a success or a LlamemError whose code is in ERROR_CODES (ERR_INTERNAL
// excepted: it means "please report it"), or the very error a callback of the fuzzer threw. A
// finding is any of: a signal or an abnormal exit (crash), no call settling for --time-limit (hang), an
// error of another kind (untyped), ERR_INTERNAL, an unhandled rejection or uncaught exception, and
// a sequence still busy once every call has settled (stuck). The process exits 1 on a finding.
// Call k of case i (which call, with which arguments) depends only on (seed, i, k); which objects
// exist by then, and the interleaving of the calls left in flight, can differ between runs.
// Needs dist/ (npm run build:ts) and the native addon.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const self = fileURLToPath(import.meta.url);
const lib = (name) => import(pathToFileURL(join(root, "dist", "lib", name)).href);

// ---------------------------------------------------------------------------------------------
// Options.

function parseArgs(argv) {
  const o = { cases: 500, seed: 1, ops: 16, timeLimit: 30_000, jobs: 2, batch: 25, json: false, verbose: false, child: false, one: undefined, model: undefined, dir: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const int = (v) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${a} needs a non-negative integer, got ${v}`);
      return n;
    };
    switch (a) {
      case "--cases": o.cases = int(next()); break;
      case "--seed": o.seed = int(next()); break;
      case "--ops": o.ops = Math.max(1, int(next())); break;
      case "--time-limit": o.timeLimit = Math.max(1000, int(next())); break;
      case "--jobs": o.jobs = Math.max(1, int(next())); break;
      case "--batch": o.batch = Math.max(1, int(next())); break;
      case "--json": o.json = true; break;
      case "--verbose": o.verbose = true; break;
      case "--case": o.one = int(next()); break;
      case "--child": o.child = true; break;
      case "--model": o.model = next(); break;
      case "--dir": o.dir = next(); break;
      case "--help": case "-h": {
        const lines = readFileSync(self, "utf8").split("\n").slice(1);
        const end = lines.findIndex((l) => !l.startsWith("//"));
        process.stdout.write(`${lines.slice(0, end).map((l) => l.replace(/^\/\/ ?/, "")).join("\n")}\n`);
        process.exit(0);
        break;
      }
      default: throw new Error(`unknown option ${a} (see --help)`);
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness: splitmix32 streams keyed by (seed, case), as in fuzz.mjs.

function rng(seed, stream) {
  let s = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(stream + 0x632be5ab, 0xc2b2ae35)) >>> 0;
  const next = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  return {
    int: (n) => (n <= 0 ? 0 : next() % n),
    chance: (p) => next() / 4294967296 < p,
    pick: (arr) => arr[next() % arr.length],
  };
}

// ---------------------------------------------------------------------------------------------
// Child: runs the cases named on stdin, one id per line.

/** The error a fuzzer callback throws: the API must hand it back unchanged. */
class FuzzUserError extends Error {}

/** Values of every wrong type, and the edges of the right ones. */
const WEIRD = [
  undefined, null, NaN, Infinity, -Infinity, -1, 0, -0, 1, 0.5, 2 ** 31, 2 ** 32 + 1, 2 ** 53, 1e308, -1e308,
  "", "abc", "length", "__proto__", "toString", [], [null], [1, "a"], [NaN], {}, { length: 3 }, Object.create(null),
  () => undefined, true, false, Symbol("fuzz"), 10n, new Uint8Array(3), Buffer.alloc(0), new Date(0), new Map(),
];

function childCase(api, o, id, say) {
  const { LlamemError, ERROR_CODES } = api;
  // A stream of its own for each call, so which objects exist (which depends on timing) never
  // shifts the choices of later calls: call k of case i is the same in every run.
  let r = rng(o.seed, id);
  const reseed = (k) => {
    r = rng((Math.imul(o.seed, 0x01000193) + k + 1) >>> 0, id);
  };
  const log = o.verbose ? (s) => process.stderr.write(`  ${s}\n`) : () => undefined;
  const codes = {};
  const findings = [];
  const pending = [];
  const models = [];
  const contexts = [];
  const sessions = [];
  const pools = [];
  const states = [];
  const controllers = [];
  const files = [join(o.dir, `c${id}-a.state`), join(o.dir, `c${id}-b.state`), join(o.dir, `c${id}.session`), "/dev/null", "/dev/zero", o.dir, join(o.dir, "missing", "x")];

  const weird = () => r.pick(WEIRD);
  const maybe = (p, plausible) => (r.chance(p) ? weird() : plausible());
  const describe = (v) => {
    if (typeof v === "symbol") return "Symbol";
    if (typeof v === "bigint") return `${v}n`;
    if (typeof v === "function") return "fn";
    if (Buffer.isBuffer(v)) return `Buffer(${v.length})`;
    try {
      return JSON.stringify(v)?.slice(0, 120) ?? String(v);
    } catch {
      return Object.prototype.toString.call(v);
    }
  };

  const classify = (err) => {
    if (err instanceof FuzzUserError) return "USER";
    if (err instanceof LlamemError) return err.code === "ERR_INTERNAL" ? "INTERNAL" : Object.hasOwn(ERROR_CODES, err.code) ? err.code : "UNKNOWN_CODE";
    return "UNTYPED";
  };
  const record = (what, err) => {
    // A heartbeat: the parent's hang timer counts from the last call that settled.
    say({ tick: id });
    const k = err === undefined ? "ok" : classify(err);
    codes[k] = (codes[k] ?? 0) + 1;
    if (k === "UNTYPED" || k === "INTERNAL" || k === "UNKNOWN_CODE") {
      findings.push({ kind: k.toLowerCase(), call: what, error: `${err?.name ?? typeof err}: ${String(err?.message ?? describe(err)).slice(0, 300)}`, stack: String(err?.stack ?? "").split("\n").slice(1, 4).join(" | ") });
    }
  };
  /** Runs a call; awaits it (most of the time) or leaves it in flight. */
  const call = async (what, fn, onValue) => {
    log(what);
    let p;
    try {
      p = Promise.resolve(fn());
    } catch (err) {
      record(what, err);
      return;
    }
    const settled = p.then(
      (v) => {
        record(what, undefined);
        onValue?.(v);
      },
      (err) => record(what, err),
    );
    if (r.chance(0.7)) await settled;
    else pending.push(settled);
  };

  // Plausible values, with the wrong ones mixed in.
  const signal = () => {
    if (r.chance(0.5)) return weird();
    const c = new AbortController();
    controllers.push(c);
    if (r.chance(0.3)) c.abort();
    else if (r.chance(0.3)) setTimeout(() => c.abort(), r.int(30));
    return c.signal;
  };
  const callback = (name) => {
    const throwAt = r.chance(0.3) ? r.int(4) : -1;
    let n = 0;
    return () => {
      if (n++ === throwAt) throw new FuzzUserError(`${name} threw`);
    };
  };
  const text = () => r.pick(["Hello", "", "Once upon a time", "a".repeat(r.int(2000)), "\u0000x", "\ud800", "<s>[INST]", "ü漢字🙂", " ".repeat(50)]);
  const tokens = () => {
    if (r.chance(0.15)) return weird();
    const n = r.chance(0.05) ? 600 + r.int(3000) : r.int(24);
    const arr = Array.from({ length: n }, () => (r.chance(0.05) ? weird() : r.chance(0.03) ? r.pick([-1, 32000, 2 ** 31, 1.5]) : 3 + r.int(500)));
    return r.chance(0.3) ? Int32Array.from(arr.map((x) => (typeof x === "number" ? x : 0))) : arr;
  };
  /** An options object of `schema` (name -> plausible value generator), or a wrong value. */
  const options = (schema, base = {}) => {
    if (r.chance(0.08)) return weird();
    const out = { ...base };
    for (const [k, gen] of Object.entries(schema)) if (r.chance(0.3)) out[k] = r.chance(0.2) ? weird() : gen();
    log(`  options ${Object.entries(out).map(([k, v]) => `${k}: ${describe(v)}`).join(", ")}`);
    return out;
  };
  const CONTEXT = {
    contextSize: () => r.pick([64, 128, 256, 512, "auto", 0, 1 << 25]),
    sequences: () => r.pick([1, 2, 3, 4]),
    batchSize: () => r.pick([1, 8, 32, 512]),
    ubatchSize: () => r.pick([1, 8, 512]),
    kvType: () => r.pick(["f16", "q8_0", "q4_0", "f32", "bogus"]),
    kvUnified: () => r.chance(0.5),
    flashAttention: () => r.pick(["auto", "on", "off", "maybe"]),
    maxRam: () => r.pick([1024, 1e9]),
    swaFull: () => r.chance(0.5),
    threadsBatch: () => r.pick([1, 2, 0]),
  };
  const LOAD = {
    gpuLayers: () => r.pick([0, -1, "auto", "max", 5, -2]),
    mmap: () => r.chance(0.5),
    loadMode: () => r.pick(["auto", "mmap", "none", "bogus"]),
    repack: () => r.chance(0.5),
    vocabOnly: () => r.chance(0.5),
    onProgress: () => callback("onProgress"),
    signal,
    rpcServers: () => r.pick([["127.0.0.1:1"], "x", ["nohost"], []]),
    devices: () => r.pick([["CPU"], ["nope"]]),
  };
  const SAMPLING = {
    temperature: () => r.pick([0, 0.8, -1]),
    topK: () => r.pick([0, 1, 40, 1e9]),
    topP: () => r.pick([0, 0.5, 1, 2]),
    minP: () => r.pick([0, 0.1]),
    seed: () => r.pick([0, 1, 2 ** 32]),
    repeatPenalty: () => r.pick([1, 1.1, 0]),
  };
  const GENERATE = {
    ...SAMPLING,
    maxTokens: () => r.pick([0, 1, 2, 4, 8, 32, -1, 1.5]),
    stop: () => r.pick([["."], [""], [], "abc", [null], ["e", "the"]]),
    signal,
    onToken: () => callback("onToken"),
    parseSpecial: () => r.chance(0.5),
    addSpecial: () => r.chance(0.5),
  };
  const MEMORY = {
    strategy: () => r.pick(["tokenBudget", "slidingWindow", "summarize", "bogus"]),
    budget: () => r.pick([0.5, 50, 200, 0, 2.5]),
    keepLastTurns: () => r.pick([0, 1, 2, -1]),
    kvReuse: () => r.pick(["shift", "prefix", "x"]),
    keepSystem: () => r.chance(0.5),
    summarize: () => r.pick([
      async () => "a summary",
      async () => { throw new FuzzUserError("summarize threw"); },
      { maxTokens: 4 },
      { prompt: 3 },
    ]),
    archive: () => r.pick([{ path: join(o.dir, `c${id}.jsonl`) }, { maxAge: 0 }, { path: "" }, null]),
  };
  const SESSION = {
    ...SAMPLING,
    system: () => r.pick(["You are helpful.", "", 5]),
    maxTokens: () => r.pick([1, 4, 8, -1]),
    stop: () => r.pick([["."], "x"]),
    memory: () => options(MEMORY),
    onMemoryEvent: () => callback("onMemoryEvent"),
    template: () => r.pick(["{{ messages }}", 7]),
  };

  // Receivers are always real objects (disposed ones included): a method called on a number is
  // the caller's TypeError, not the library's. Arguments may be anything.
  const seqOf = (ctx) => ctx.sequences[r.int(ctx.sequences.length)];
  const sequences = () => contexts.flatMap((c) => [...c.sequences]);
  const pickContext = () => (r.chance(0.05) || contexts.length === 0 ? weird() : r.pick(contexts));
  const pickSequence = () => (r.chance(0.05) || contexts.length === 0 ? weird() : r.pick(sequences()));
  const pickSession = () => (r.chance(0.05) || sessions.length === 0 ? weird() : r.pick(sessions));
  const pickModel = () => (r.chance(0.05) || models.length === 0 ? weird() : r.pick(models));
  const pickState = () => (r.chance(0.2) || states.length === 0 ? r.pick([weird(), Buffer.from("garbage"), Buffer.alloc(64)]) : mutate(r.pick(states)));
  const mutate = (b) => {
    if (!r.chance(0.3)) return b;
    const c = Buffer.from(b);
    if (c.length > 0) c[r.int(c.length)] ^= 1 << r.int(8);
    return r.chance(0.3) ? c.subarray(0, r.int(c.length)) : c;
  };
  const target = () => r.pick([pickModel, pickContext, pickSequence])();
  /** Runs `fn(receiver)` as a call when there is a receiver. */
  const with_ = (what, recv, fn, onValue) => () => {
    const x = recv();
    return x === undefined ? undefined : call(what, () => fn(x), onValue);
  };
  const anyOf = (arr) => () => (arr.length === 0 ? undefined : r.pick(arr));
  const anySeq = () => (contexts.length === 0 ? undefined : seqOf(r.pick(contexts)));

  /** Consumes part of a stream, then closes it or drains it. */
  const consume = async (gen) => {
    const stopAfter = r.chance(0.5) ? r.int(4) : Infinity;
    let n = 0;
    for await (const _ of gen) if (++n >= stopAfter) break;
  };

  const M = anyOf(models);
  const C = anyOf(contexts);
  const Q = anySeq;
  const S = anyOf(sessions);
  const P = anyOf(pools);
  const OPS = [
    [3, () => call("loadModel", () => api.loadModel(r.chance(0.9) ? o.model : weird(), options(LOAD)), (m) => models.push(m))],
    [2, with_("model.dispose", M, (m) => m.dispose())],
    [5, with_("createContext", M, (m) => m.createContext(options(CONTEXT, r.chance(0.9) ? { threads: 1, contextSize: 256 } : {})), (c) => contexts.push(c))],
    [2, with_("context.dispose", C, (c) => c.dispose())],
    [2, with_("context.sequence", C, (c) => c.sequence(r.chance(0.7) ? r.int(4) : weird()))],
    [6, with_("sequence.generate", Q, (q) => consume(q.generate(r.chance(0.7) ? text() : tokens(), options(GENERATE))))],
    [4, with_("sequence.complete", Q, (q) => q.complete(r.chance(0.7) ? text() : tokens(), options(GENERATE, { maxTokens: 4 })))],
    [4, with_("sequence.evaluate", Q, (q) => q.evaluate(tokens()))],
    [4, with_("sequence.copyTo", Q, (q) => q.copyTo(pickSequence()))],
    [4, with_("sequence.saveState", Q, (q) => q.saveState(), (b) => states.push(b))],
    [4, with_("sequence.restoreState", Q, (q) => q.restoreState(pickState()))],
    [3, with_("sequence.removeTokens", Q, (q) => q.removeTokens(r.chance(0.8) ? r.int(10) : weird(), r.chance(0.8) ? r.int(20) : weird()))],
    [2, with_("sequence.clear", Q, (q) => q.clear())],
    [2, with_("sequence.saveStateFile", Q, (q) => q.saveStateFile(r.chance(0.9) ? r.pick(files) : weird()))],
    [2, with_("sequence.loadStateFile", Q, (q) => q.loadStateFile(r.chance(0.9) ? r.pick(files) : weird()))],
    [2, with_("model.tokenize", M, (m) => m.tokenize(r.chance(0.8) ? text() : weird(), options({ addSpecial: () => r.chance(0.5), parseSpecial: () => r.chance(0.5) })))],
    [2, with_("model.detokenize", M, (m) => m.detokenize(tokens(), options({ special: () => r.chance(0.5) })))],
    [1, with_("model.tokenToPiece", M, (m) => m.tokenToPiece(r.chance(0.7) ? r.int(600) : weird(), options({ special: () => true })))],
    [1, with_("model.applyChatTemplate", M, (m) => m.applyChatTemplate(r.chance(0.7) ? [{ role: "user", content: text() }] : weird(), options({ addAssistant: () => r.chance(0.5), template: () => r.pick(["chatml", "{{ bad", 3]) })))],
    [1, with_("model.info", M, (m) => m.info)],
    [1, with_("context.memory", C, (c) => c.memory())],
    [4, () => call("createSession", () => api.createSession(target(), options(SESSION, { maxTokens: 4 })), (x) => sessions.push(x))],
    [5, with_("session.prompt", S, (x) => x.prompt(text(), options({ ...GENERATE, pinned: () => r.chance(0.5) }, { maxTokens: 4 })))],
    [2, with_("session.stream", S, (x) => consume(x.stream(text(), options(GENERATE, { maxTokens: 4 }))))],
    [2, with_("session.dispose", S, (x) => x.dispose())],
    [1, with_("session.setHistory", S, (x) => x.setHistory(r.chance(0.7) ? [{ role: "user", content: text() }, { role: "assistant", content: "ok", timestamp: r.pick([0, NaN]) }] : weird()))],
    [2, with_("session.save", S, (x) => x.save(r.chance(0.9) ? r.pick(files) : weird()))],
    [2, () => call("loadSession", () => api.loadSession(target(), r.chance(0.9) ? r.pick(files) : weird(), options({ resumeArchiveFile: () => r.chance(0.5), maxTokens: () => 4 })), (x) => sessions.push(x))],
    [1, with_("session.stats", S, (x) => x.stats())],
    [2, () => call("createPool", () => api.createPool(pickContext(), options({ spill: () => r.pick([{ memoryBytes: 0, dir: o.dir }, { memoryBytes: -1 }, { dir: 5 }, null]) })), (p) => pools.push(p))],
    [3, with_("pool.createSession", P, (p) => p.createSession(options(SESSION, { maxTokens: 4 })), (x) => sessions.push(x))],
    [1, with_("pool.spill", P, (p) => p.spill(pickSession()))],
    [1, with_("pool.dispose", P, (p) => p.dispose())],
    [1, with_("pool.loadSession", P, (p) => p.loadSession(r.chance(0.9) ? r.pick(files) : weird(), options({ maxTokens: () => 4 })), (x) => sessions.push(x))],
    [3, () => {
      if (controllers.length) r.pick(controllers).abort();
    }],
    [1, () => call("estimateMemory", () => api.estimateMemory(r.chance(0.9) ? o.model : weird(), options({ ...CONTEXT, ...LOAD, onProgress: () => undefined })))],
    [1, () => call("fitModel", () => api.fitModel(r.chance(0.9) ? o.model : weird(), options({ maxRam: () => r.pick([1024, 1e9, -1]), contextSize: () => r.pick([64, "auto", -5]) })))],
    [1, () => call("listDevices", () => api.listDevices())],
  ];
  const total = OPS.reduce((n, [w]) => n + w, 0);
  const pickOp = () => {
    let k = r.int(total);
    for (const op of OPS) {
      if ((k -= op[0]) < 0) return op[1];
    }
    return OPS[0][1];
  };

  return (async () => {
    // Something to work on: a model and a context of 1-3 sequences (the calls make more, or free them).
    await call("loadModel (base)", () => api.loadModel(o.model), (m) => models.push(m));
    if (models[0]) await call("createContext (base)", () => models[0].createContext({ contextSize: 256 * 3, sequences: 1 + r.int(3), kvUnified: r.chance(0.5), threads: 1 }), (c) => contexts.push(c));
    for (let i = 0; i < o.ops; i++) {
      reseed(i);
      await pickOp()();
    }
    reseed(o.ops);
    await Promise.all(pending);
    // Once everything settled, no sequence may still be busy.
    for (const ctx of contexts) {
      if (ctx.disposed) continue;
      for (const seq of ctx.sequences) if (seq.busy) findings.push({ kind: "stuck", call: `sequence ${seq.id}`, error: "busy after every call settled" });
    }
    // Everything is disposed, in a random order.
    const all = [...sessions, ...pools, ...contexts, ...models];
    for (let i = all.length - 1; i > 0; i--) {
      const j = r.int(i + 1);
      [all[i], all[j]] = [all[j], all[i]];
    }
    await Promise.all(all.map((x) => call("dispose (end)", () => x.dispose())));
    await Promise.all(pending);
    say({ end: id, codes, findings });
  })();
}

async function child(o) {
  const api = await lib("index.js");
  const say = (m) => process.stdout.write(`${JSON.stringify(m)}\n`);
  let current;
  // A rejection nobody could handle, or an exception thrown from a callback the library runs, is a finding.
  const unhandled = (kind) => (err) => say({ unhandled: current, kind, error: `${err?.name}: ${String(err?.message ?? err).slice(0, 300)}`, stack: String(err?.stack ?? "").split("\n").slice(1, 4).join(" | ") });
  process.on("unhandledRejection", unhandled("unhandledRejection"));
  process.on("uncaughtException", unhandled("uncaughtException"));
  process.on("warning", (w) => {
    if (w.name !== "ExperimentalWarning") say({ unhandled: current, kind: "warning", error: `${w.name}: ${w.message}` });
  });
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const id = Number(line);
    current = id;
    say({ start: id });
    await childCase(api, o, id, say);
  }
}

// ---------------------------------------------------------------------------------------------
// Parent: runs batches of cases in children, restarting a child after a crash or a hang.

function runBatch(o, ids) {
  return new Promise((done) => {
    const results = new Map();
    const failures = [];
    let queue = ids.slice();
    const startChild = () => {
      if (queue.length === 0) return done({ results, failures });
      const mine = queue;
      queue = [];
      const args = [self, "--child", "--seed", String(o.seed), "--ops", String(o.ops), "--model", o.model, "--dir", o.dir];
      if (o.verbose) args.push("--verbose");
      // In the scratch folder: paths such as "abc" that the calls write land there, not in the repository.
      const cp = spawn(process.execPath, args, { cwd: o.dir, stdio: ["pipe", "pipe", "pipe"] });
      let current;
      let stderr = "";
      let timer;
      let hung = false;
      cp.stderr.setEncoding("utf8").on("data", (s) => {
        if (o.verbose) process.stderr.write(s);
        stderr = (stderr + s).slice(-4000);
      });
      createInterface({ input: cp.stdout }).on("line", (line) => {
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          return;
        }
        const arm = () => {
          clearTimeout(timer);
          timer = setTimeout(() => {
            hung = true;
            cp.kill("SIGKILL");
          }, o.timeLimit);
        };
        if (msg.start !== undefined) {
          current = msg.start;
          stderr = "";
          arm();
        } else if (msg.tick !== undefined) {
          arm();
        } else if (msg.end !== undefined) {
          results.set(msg.end, msg);
          for (const f of msg.findings) failures.push({ case: msg.end, ...f });
          current = undefined;
          clearTimeout(timer);
        } else if (msg.unhandled !== undefined) {
          failures.push({ case: msg.unhandled, kind: msg.kind, error: msg.error, stack: msg.stack });
        }
      });
      cp.stdin.on("error", () => undefined);
      cp.on("close", (code, signal) => {
        clearTimeout(timer);
        const victim = current ?? mine.find((c) => !results.has(c));
        if (victim !== undefined && !results.has(victim)) {
          failures.push({ case: victim, kind: hung ? "hang" : "crash", error: hung ? `over ${o.timeLimit} ms` : `exit ${code} signal ${signal}`, stderr: stderr.trim().split("\n").slice(-8).join("\n") });
          results.set(victim, { end: victim, codes: {}, findings: [] });
        }
        queue = mine.filter((c) => !results.has(c));
        startChild();
      });
      for (const c of mine) cp.stdin.write(`${c}\n`);
      cp.stdin.end();
    };
    startChild();
  });
}

/** A small valid model (the tiny synthetic preset, q8_0), cached with the test models. */
async function baseModel() {
  const dir = join(tmpdir(), "llamem-test-models");
  const path = join(dir, "fuzz-api-tiny-q8_0-v1.gguf");
  if (!existsSync(path)) {
    mkdirSync(dir, { recursive: true });
    const { writeSyntheticModel, defaultVocabPath } = await lib("gguf/synthetic.js");
    const tmp = `${path}.tmp-${process.pid}`;
    await writeSyntheticModel(tmp, { preset: "tiny", type: "q8_0", seed: 3, vocabPath: defaultVocabPath() });
    const { renameSync } = await import("node:fs");
    renameSync(tmp, path);
  }
  return path;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.child) return child(o);
  if (!existsSync(join(root, "dist", "lib", "index.js"))) throw new Error("dist/ is missing: run `npm run build:ts` first");
  o.model ??= await baseModel();
  o.dir = mkdtempSync(join(tmpdir(), "llamem-fuzz-api-"));
  const t0 = performance.now();
  try {
    const ids = o.one !== undefined ? [o.one] : Array.from({ length: o.cases }, (_, i) => i);
    if (o.one !== undefined) o.verbose = true;
    const batches = [];
    for (let i = 0; i < ids.length; i += o.batch) batches.push(ids.slice(i, i + o.batch));
    const results = new Map();
    const failures = [];
    let next = 0;
    let finished = 0;
    await Promise.all(Array.from({ length: Math.min(o.jobs, batches.length) }, async () => {
      while (next < batches.length) {
        const batch = batches[next++];
        const b = await runBatch(o, batch);
        for (const [id, res] of b.results) results.set(id, res);
        failures.push(...b.failures);
        finished += batch.length;
        if (!o.json && process.stderr.isTTY) process.stderr.write(`\r${finished}/${ids.length} cases, ${failures.length} findings`);
      }
    }));
    if (!o.json && process.stderr.isTTY) process.stderr.write("\n");
    const codes = {};
    for (const res of results.values()) for (const [k, v] of Object.entries(res.codes ?? {})) codes[k] = (codes[k] ?? 0) + v;
    const count = (kind) => failures.filter((f) => f.kind === kind).length;
    // One line per distinct finding (kind, call, error), with the first case that showed it.
    const distinct = new Map();
    for (const f of failures) {
      const key = `${f.kind}|${f.call ?? ""}|${f.error}`;
      if (!distinct.has(key)) distinct.set(key, { ...f, cases: 0 });
      distinct.get(key).cases++;
    }
    const summary = {
      cases: ids.length,
      seed: o.seed,
      ops: o.ops,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
      calls: Object.values(codes).reduce((n, v) => n + v, 0),
      crashes: count("crash"),
      hangs: count("hang"),
      untyped: count("untyped") + count("unknown_code"),
      internal: count("internal"),
      unhandled: count("unhandledRejection") + count("uncaughtException") + count("warning"),
      stuck: count("stuck"),
      codes,
      findings: [...distinct.values()].slice(0, 30),
    };
    if (o.json) {
      process.stdout.write(`${JSON.stringify(summary)}\n`);
    } else {
      process.stdout.write(
        `fuzz-api: ${summary.cases} cases (seed ${summary.seed}, ${summary.ops} calls each) in ${summary.seconds} s, ${summary.calls} calls: ` +
          `${summary.crashes} crashes, ${summary.hangs} hangs, ${summary.untyped} untyped, ${summary.internal} internal, ${summary.unhandled} unhandled, ${summary.stuck} stuck\n`,
      );
      process.stdout.write(`  outcomes: ${Object.entries(codes).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ")}\n`);
      for (const f of summary.findings) {
        process.stdout.write(`  ${f.kind.toUpperCase()} case ${f.case} (${f.cases} cases) ${f.call ?? ""}: ${f.error}${f.stack ? `\n    at ${f.stack}` : ""}${f.stderr ? `\n    ${f.stderr.split("\n").join("\n    ")}` : ""}\n`);
      }
      if (failures.length > 0) process.stdout.write(`  replay one: node scripts/fuzz-api.mjs --case N --seed ${o.seed} --ops ${o.ops}\n`);
    }
    process.exitCode = failures.length > 0 ? 1 : 0;
  } finally {
    rmSync(o.dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`fuzz-api: ${err instanceof Error && err.message.includes("--") ? err.message : (err?.stack ?? err)}\n`);
  process.exit(2);
});
