#!/usr/bin/env node
// Mutation fuzzer for the GGUF loading path: thousands of seeded mutations of a small valid model
// (bit flips, interesting values written over header fields, truncations, chunk duplication and
// removal, mostly in the header), each loaded, run and disposed by a child process. A child takes
// a batch of files and reports each case as it starts and ends, so when it dies the case that
// killed it is known; a new child then takes the rest of the batch.
//
//   node scripts/fuzz.mjs [--cases N (20000)] [--seed S (1)] [--time-limit MS] [--jobs J] [--batch B]
//                         [--out DIR] [--json] [--keep] [--no-minimize]
//   node scripts/fuzz.mjs --reproduce FILE          run one file in a child and print what happened
//
// A crash (signal, abnormal exit) or a hang (over --time-limit) is saved under --out (default
// test/reliability/fuzz-crashes/, git-ignored) with the mutations that made it, minimized, and
// the process exits 1. Same --seed, same cases: case i's mutations depend only on (seed, i).
// Needs dist/ (npm run build:ts) and the native addon.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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
  const o = {
    cases: 20_000, seed: 1, timeLimit: 10_000, jobs: 2, batch: 100, out: join(root, "test", "reliability", "fuzz-crashes"),
    json: false, keep: false, child: false, reproduce: undefined, minimize: true,
  };
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
      case "--time-limit": o.timeLimit = Math.max(100, int(next())); break;
      case "--jobs": o.jobs = Math.max(1, int(next())); break;
      case "--batch": o.batch = Math.max(1, int(next())); break;
      case "--out": o.out = resolve(next()); break;
      case "--json": o.json = true; break;
      case "--keep": o.keep = true; break;
      case "--no-minimize": o.minimize = false; break;
      case "--child": o.child = true; break;
      case "--reproduce": o.reproduce = resolve(next()); break;
      case "--help": case "-h":
        {
          const lines = readFileSync(self, "utf8").split("\n").slice(1);
          const end = lines.findIndex((l) => !l.startsWith("//"));
          process.stdout.write(`${lines.slice(0, end).map((l) => l.replace(/^\/\/ ?/, "")).join("\n")}\n`);
        }
        process.exit(0);
        break;
      default: throw new Error(`unknown option ${a} (see --help)`);
    }
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Child: runs the files named on stdin, one per line, and reports each case on stdout.

async function child() {
  const { loadModel, LlamemError } = await lib("index.js");
  const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const { id, path } = JSON.parse(line);
    say({ start: id });
    const r = { end: id, stage: "load", code: null, typed: true };
    let model;
    try {
      model = await loadModel(path);
      r.stage = "tokenize";
      await model.tokenize("Hello, world", { parseSpecial: true });
      r.stage = "context";
      const ctx = await model.createContext({ contextSize: 32, batchSize: 32, threads: 1 });
      r.stage = "generate";
      await ctx.complete("Hi", { maxTokens: 2, temperature: 0 });
      r.stage = "done";
    } catch (err) {
      r.code = err?.code ?? null;
      r.typed = err instanceof LlamemError;
      if (!r.typed || r.code === "ERR_INTERNAL") r.message = String(err?.message ?? err).slice(0, 300);
    }
    try {
      await model?.dispose();
    } catch (err) {
      r.stage = "dispose";
      r.code = err?.code ?? null;
      r.typed = err instanceof LlamemError;
    }
    say(r);
  }
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness: splitmix32 streams keyed by (seed, case).

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
    u32: next,
    int: (n) => (n <= 0 ? 0 : next() % n),
    chance: (p) => next() / 4294967296 < p,
    pick: (arr) => arr[next() % arr.length],
  };
}

// ---------------------------------------------------------------------------------------------
// The base models and a map of their header fields.

async function baseModels(cacheDir) {
  const { readGguf } = await lib("gguf/read.js");
  const { writeGguf } = await lib("gguf/write.js");
  const { writeSyntheticModel, defaultVocabPath } = await lib("gguf/synthetic.js");
  mkdirSync(cacheDir, { recursive: true });
  const vocabPath = join(cacheDir, "fuzz-vocab-512-v1.gguf");
  if (!existsSync(vocabPath)) {
    // llama-spm's first 512 tokens: the byte tokens are 3..258, so byte fallback works.
    const v = await readGguf(defaultVocabPath());
    const metadata = new Map();
    for (const [k, e] of v.metadata) {
      if (k === "general.architecture" || k.startsWith("tokenizer.")) metadata.set(k, e.type === 9 ? { ...e, value: e.value.slice(0, 512) } : e);
    }
    await writeGguf(vocabPath, { metadata, tensors: [] });
  }
  const bases = [];
  for (const type of ["f16", "q4_0"]) {
    const path = join(cacheDir, `fuzz-base-${type}-v1.gguf`);
    if (!existsSync(path)) await writeSyntheticModel(path, { preset: "tiny", type, seed: 7, vocabPath });
    const bytes = readFileSync(path);
    const file = await readGguf(path);
    bases.push({ type, bytes, dataOffset: file.dataOffset, fields: headerFields(bytes) });
  }
  return bases;
}

/**
 * Walks a GGUF header and lists its numeric fields (offset, width, what), so mutations can
 * write interesting values exactly over counts, lengths, types, dims and offsets.
 */
function headerFields(b) {
  const fields = [];
  const add = (at, width, what) => fields.push({ at, width, what });
  let p = 8;
  add(4, 4, "version");
  const nTensors = Number(b.readBigInt64LE(p)); add(p, 8, "tensor count"); p += 8;
  const nKv = Number(b.readBigInt64LE(p)); add(p, 8, "kv count"); p += 8;
  const SIZES = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
  const str = (what) => {
    add(p, 8, `${what} length`);
    const n = Number(b.readBigUInt64LE(p));
    p += 8;
    const s = b.toString("utf8", p, p + n);
    p += n;
    return s;
  };
  for (let i = 0; i < nKv; i++) {
    const key = str(`key ${i}`);
    add(p, 4, `type of ${key}`);
    const t = b.readInt32LE(p); p += 4;
    if (t === 8) { str(`value of ${key}`); continue; }
    if (t === 9) {
      add(p, 4, `item type of ${key}`);
      const it = b.readInt32LE(p); p += 4;
      add(p, 8, `count of ${key}`);
      const n = Number(b.readBigUInt64LE(p)); p += 8;
      if (it === 8) {
        for (let j = 0; j < n; j++) {
          if (j < 4 || j % 64 === 0) str(`element ${j} of ${key}`);
          else { const len = Number(b.readBigUInt64LE(p)); p += 8 + len; }
        }
      } else {
        if (n > 0) add(p, SIZES[it], `first element of ${key}`);
        p += n * SIZES[it];
      }
      continue;
    }
    add(p, SIZES[t], `value of ${key}`);
    p += SIZES[t];
  }
  for (let i = 0; i < nTensors; i++) {
    const name = str(`tensor name ${i}`);
    add(p, 4, `n_dims of ${name}`);
    const nd = b.readUInt32LE(p); p += 4;
    for (let d = 0; d < nd; d++) { add(p, 8, `dim ${d} of ${name}`); p += 8; }
    add(p, 4, `type of ${name}`); p += 4;
    add(p, 8, `offset of ${name}`); p += 8;
  }
  return fields;
}

// ---------------------------------------------------------------------------------------------
// Mutations. Each is a plain object (so a crash can be replayed and minimized) applied in order.

const INTERESTING = {
  1: [0, 1, 0x7f, 0x80, 0xff, 2, 8, 9, 12, 13],
  2: [0, 1, 0x7fff, 0x8000, 0xffff, 256, 512],
  4: [0, 1, 2, 3, 7, 8, 9, 13, 31, 32, 33, 43, 63, 64, 255, 256, 511, 512, 513, 1024, 1025, 65536, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff],
  8: [0n, 1n, 2n, 3n, 32n, 64n, 512n, 0xffffffffn, 0x100000000n, 1n << 40n, (1n << 62n), 0x7fffffffffffffffn, 0x8000000000000000n, 0xffffffffffffffffn],
};

function writeInt(buf, at, width, v) {
  if (at < 0 || at + width > buf.length) return;
  if (width === 1) buf[at] = Number(v) & 0xff;
  else if (width === 2) buf.writeUInt16LE(Number(v) & 0xffff, at);
  else if (width === 4) buf.writeUInt32LE(Number(BigInt.asUintN(32, BigInt(v))), at);
  else buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), at);
}

/** Chooses 1..4 mutations for case (seed, index). */
function planCase(seed, index, bases) {
  const r = rng(seed, index);
  const base = r.pick(bases);
  const size = base.bytes.length;
  const headerEnd = base.dataOffset;
  const pos = () => (r.chance(0.9) ? r.int(headerEnd) : r.int(size));
  const muts = [];
  const n = 1 + (r.chance(0.5) ? 0 : r.int(4));
  for (let k = 0; k < n; k++) {
    const kind = r.int(100);
    if (kind < 30) {
      const f = r.pick(base.fields);
      const pool = INTERESTING[f.width] ?? INTERESTING[4];
      const v = r.chance(0.8) ? pool[r.int(pool.length)] : r.u32();
      muts.push({ op: "field", at: f.at, width: f.width, value: String(v), what: f.what });
    } else if (kind < 50) {
      const bits = 1 + r.int(8);
      const at = pos();
      muts.push({ op: "flip", at, mask: Array.from({ length: bits }, () => r.int(8)).reduce((m, b) => m | (1 << b), 0) });
    } else if (kind < 65) {
      const width = r.pick([1, 2, 4, 8]);
      const pool = INTERESTING[width];
      muts.push({ op: "write", at: pos(), width, value: String(pool[r.int(pool.length)]) });
    } else if (kind < 75) {
      muts.push({ op: "truncate", at: r.chance(0.8) ? r.int(headerEnd) : r.int(size) });
    } else if (kind < 88) {
      const len = 1 + r.int(r.chance(0.7) ? 16 : 512);
      muts.push({ op: "duplicate", from: pos(), len, to: pos() });
    } else {
      const len = 1 + r.int(r.chance(0.7) ? 16 : 512);
      muts.push({ op: "remove", at: pos(), len });
    }
  }
  return { base: base.type, muts };
}

function apply(bases, plan) {
  const base = bases.find((b) => b.type === plan.base);
  let buf = Buffer.from(base.bytes);
  for (const m of plan.muts) {
    switch (m.op) {
      case "field": case "write": writeInt(buf, m.at, m.width, BigInt(m.value)); break;
      case "flip": if (m.at < buf.length) buf[m.at] ^= m.mask; break;
      case "truncate": buf = buf.subarray(0, Math.min(m.at, buf.length)); break;
      case "duplicate": {
        const chunk = Buffer.from(buf.subarray(m.from, m.from + m.len));
        const to = Math.min(m.to, buf.length);
        buf = Buffer.concat([buf.subarray(0, to), chunk, buf.subarray(to)]);
        break;
      }
      case "remove": buf = Buffer.concat([buf.subarray(0, m.at), buf.subarray(m.at + m.len)]); break;
    }
  }
  return buf;
}

function describe(m) {
  switch (m.op) {
    case "field": return `set ${m.what} (@${m.at}, ${m.width} B) to ${m.value}`;
    case "write": return `write ${m.value} as ${m.width} B at ${m.at}`;
    case "flip": return `xor byte ${m.at} with 0x${m.mask.toString(16)}`;
    case "truncate": return `truncate to ${m.at} bytes`;
    case "duplicate": return `copy ${m.len} B from ${m.from} to ${m.to}`;
    case "remove": return `remove ${m.len} B at ${m.at}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Parent: runs batches in children, restarting a child after a crash.

/** Runs `cases` ([{ id, path }]) through children; returns per-case results and failures. */
function runBatch(cases, timeLimit) {
  return new Promise((done) => {
    const results = new Map();
    const failures = [];
    let queue = cases.slice();
    const startChild = () => {
      if (queue.length === 0) return done({ results, failures });
      const mine = queue;
      queue = [];
      const cp = spawn(process.execPath, [self, "--child"], { cwd: root, stdio: ["pipe", "pipe", "pipe"] });
      let current;
      let stderr = "";
      let timer;
      let hung = false;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          hung = true;
          cp.kill("SIGKILL");
        }, timeLimit);
      };
      cp.stderr.setEncoding("utf8").on("data", (s) => (stderr = (stderr + s).slice(-4000)));
      createInterface({ input: cp.stdout }).on("line", (line) => {
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          return;
        }
        if (msg.start !== undefined) {
          current = msg.start;
          stderr = "";
          arm();
        } else if (msg.end !== undefined) {
          results.set(msg.end, msg);
          current = undefined;
          clearTimeout(timer);
        }
      });
      cp.stdin.on("error", () => undefined);
      cp.on("close", (code, signal) => {
        clearTimeout(timer);
        if (current !== undefined) {
          failures.push({ id: current, kind: hung ? "hang" : "crash", code, signal: hung ? null : signal, stderr: stderr.trim().split("\n").slice(-6).join("\n") });
          results.set(current, { end: current, stage: hung ? "hang" : "crash" });
        } else {
          // Died between cases, or exited without finishing: charge the next case so the loop always progresses.
          const next = mine.find((c) => !results.has(c.id));
          if (next) {
            failures.push({ id: next.id, kind: "crash", code, signal, stderr: stderr.trim() });
            results.set(next.id, { end: next.id, stage: "crash" });
          }
        }
        queue = mine.filter((c) => !results.has(c.id));
        startChild();
      });
      for (const c of mine) cp.stdin.write(`${JSON.stringify(c)}\n`);
      cp.stdin.end();
    };
    startChild();
  });
}

async function stillFails(bases, plan, dir, timeLimit) {
  const path = join(dir, `min-${createHash("sha1").update(JSON.stringify(plan)).digest("hex").slice(0, 12)}.gguf`);
  writeFileSync(path, apply(bases, plan));
  const { failures } = await runBatch([{ id: 0, path }], timeLimit);
  return failures.length > 0;
}

/** Drops mutations one at a time while the file still crashes. */
async function minimize(bases, plan, dir, timeLimit) {
  let muts = plan.muts;
  for (let i = muts.length - 1; i >= 0 && muts.length > 1; i--) {
    const fewer = muts.filter((_, j) => j !== i);
    if (await stillFails(bases, { base: plan.base, muts: fewer }, dir, timeLimit)) muts = fewer;
  }
  return { base: plan.base, muts };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o.child) return child();
  if (!existsSync(join(root, "dist", "lib", "index.js"))) throw new Error("dist/ is missing: run `npm run build:ts` first");
  const work = mkdtempSync(join(tmpdir(), "llamem-fuzz-"));
  try {
    if (o.reproduce) {
      const { results, failures } = await runBatch([{ id: 0, path: o.reproduce }], o.timeLimit);
      process.stdout.write(`${JSON.stringify({ result: results.get(0), failures }, null, 2)}\n`);
      process.exitCode = failures.length > 0 ? 1 : 0;
      return;
    }
    const t0 = performance.now();
    const bases = await baseModels(join(tmpdir(), "llamem-test-models"));
    const plans = new Map();
    const starts = [];
    for (let start = 0; start < o.cases; start += o.batch) starts.push(start);
    const results = new Map();
    const failures = [];
    let nextBatch = 0;
    let finished = 0;
    const lanes = Array.from({ length: Math.min(o.jobs, starts.length) }, async () => {
      while (nextBatch < starts.length) {
        const start = starts[nextBatch++];
        // Files are written per batch and removed after it, so a long run needs little disk.
        const batch = [];
        for (let id = start; id < Math.min(o.cases, start + o.batch); id++) {
          const plan = planCase(o.seed, id, bases);
          plans.set(id, plan);
          const path = join(work, `case-${id}.gguf`);
          writeFileSync(path, apply(bases, plan));
          batch.push({ id, path });
        }
        const r = await runBatch(batch, o.timeLimit);
        for (const [id, res] of r.results) results.set(id, res);
        failures.push(...r.failures);
        for (const c of batch) rmSync(c.path, { force: true });
        finished += batch.length;
        if (!o.json && process.stderr.isTTY) process.stderr.write(`\r${finished}/${o.cases} cases, ${failures.length} failures`);
      }
    });
    await Promise.all(lanes);
    if (!o.json && process.stderr.isTTY) process.stderr.write("\n");

    const stages = {};
    const codes = {};
    let untyped = 0;
    const internal = new Map();
    for (const [id, r] of results) {
      stages[r.stage] = (stages[r.stage] ?? 0) + 1;
      if (r.code) codes[r.code] = (codes[r.code] ?? 0) + 1;
      if (r.typed === false) untyped++;
      if (r.message && !internal.has(r.message)) internal.set(r.message, { case: id, stage: r.stage, code: r.code ?? "untyped", mutations: plans.get(id)?.muts.map(describe) ?? [] });
    }
    const saved = [];
    if (failures.length > 0) mkdirSync(o.out, { recursive: true });
    for (const f of failures) {
      const plan = plans.get(f.id);
      if (!plan) continue;
      const minimal = o.minimize ? await minimize(bases, plan, work, o.timeLimit) : plan;
      const bytes = apply(bases, minimal);
      const name = `${f.kind}-seed${o.seed}-case${f.id}-${createHash("sha1").update(bytes).digest("hex").slice(0, 10)}`;
      writeFileSync(join(o.out, `${name}.gguf`), bytes);
      const info = { seed: o.seed, case: f.id, kind: f.kind, signal: f.signal, code: f.code, stderr: f.stderr, base: minimal.base, mutations: minimal.muts.map(describe), plan: minimal };
      writeFileSync(join(o.out, `${name}.json`), `${JSON.stringify(info, null, 2)}\n`);
      saved.push({ file: join(o.out, `${name}.gguf`), ...info });
    }
    const summary = {
      cases: o.cases,
      seed: o.seed,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
      crashes: failures.filter((f) => f.kind === "crash").length,
      hangs: failures.filter((f) => f.kind === "hang").length,
      untyped,
      stages,
      codes,
      internalErrors: [...internal].slice(0, 20).map(([message, v]) => ({ message, ...v })),
      failures: saved.map(({ file, kind, signal, case: id, mutations, stderr }) => ({ file, kind, signal, case: id, mutations, stderr })),
    };
    if (o.json) {
      process.stdout.write(`${JSON.stringify(summary)}\n`);
    } else {
      process.stdout.write(`fuzz: ${summary.cases} cases (seed ${summary.seed}) in ${summary.seconds} s: ${summary.crashes} crashes, ${summary.hangs} hangs, ${untyped} untyped errors\n`);
      process.stdout.write(`  reached: ${Object.entries(stages).map(([k, v]) => `${k} ${v}`).join(", ")}\n`);
      process.stdout.write(`  errors: ${Object.entries(codes).map(([k, v]) => `${k} ${v}`).join(", ")}\n`);
      for (const e of summary.internalErrors) {
        process.stdout.write(`  ${e.code} at ${e.stage} (case ${e.case}): ${e.message}\n    ${e.mutations.join("\n    ")}\n`);
      }
      for (const f of summary.failures) {
        process.stdout.write(`  ${f.kind.toUpperCase()} case ${f.case} (${f.signal ?? "no signal"}): ${f.file}\n    ${f.mutations.join("\n    ")}\n    ${f.stderr.split("\n").join("\n    ")}\n`);
      }
    }
    process.exitCode = failures.length > 0 || untyped > 0 ? 1 : 0;
  } finally {
    if (!o.keep) rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`fuzz: ${err instanceof Error && err.message.includes("--") ? err.message : (err?.stack ?? err)}\n`);
  process.exit(2);
});
