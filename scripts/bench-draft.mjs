#!/usr/bin/env node
// Speculative decoding against plain decoding, on the CPU: tg (generated tokens per second) of a
// greedy generation with no draft, with the model as its own draft (every draft accepted: the
// most a draft can give at this draft cost), and with a small synthetic draft of the same
// vocabulary (random weights: almost nothing accepted, so this is the cost of drafting in vain),
// each at the library's default minProbability and at 0 (draft always). It also times the
// target's decode of 1 to 9 tokens at once, the cost of verifying a draft, from which the note
// projects what a real draft pair gains at a given acceptance rate. Every run is a child process
// of its own, interleaved over the repetitions.
//
//   npm run bench:draft -- [--model 1b:q4_0] [--draft tiny:q4_0] [--gen 128] [--reps 3]
//                          [--max-draft 8] [--threads N] [--out bench/results]
//
// Run it on a quiet machine: ggml's threads spin, so any other CPU work slows generation.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { benchModel, median } from "./bench-models.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const self = fileURLToPath(import.meta.url);
const distLib = join(root, "dist", "lib");
const PROMPT = "The history of the city begins with a small settlement on the river, where";


/** One configuration, in a child: load, generate once to warm up, then time a generation. */
async function child(spec) {
  const lib = await import(pathToFileURL(join(distLib, "index.js")).href);
  const model = await lib.loadModel(spec.path);
  const draftModel = spec.draft ? (spec.draft === spec.path ? model : await lib.loadModel(spec.draft)) : undefined;
  const options = { contextSize: 1024, threads: spec.threads };
  if (draftModel) options.draft = { model: draftModel, maxDraftTokens: spec.maxDraft, minProbability: spec.minP };
  const ctx = await model.createContext(options);
  if (spec.verify) {
    // The cost of verifying k drafts: one decode of k + 1 tokens after a 64-token prefix.
    const prefix = (await model.tokenize(PROMPT)).slice(0, 64);
    const out = {};
    for (let n = 1; n <= 9; n++) {
      const times = [];
      for (let r = 0; r < 12; r++) {
        await ctx.sequence(0).clear();
        await ctx.evaluate(prefix);
        const t0 = performance.now();
        await ctx.evaluate(Array.from({ length: n }, (_, i) => 300 + i));
        times.push(performance.now() - t0);
      }
      out[n] = median(times);
    }
    process.stdout.write(`${JSON.stringify({ verifyMs: out })}\n`);
  } else {
    const o = { maxTokens: spec.gen, temperature: 0, logitBias: [{ token: model.info.eos, bias: -100 }] };
    await ctx.complete(PROMPT, { ...o, maxTokens: 8 });
    await ctx.sequence(0).clear();
    const t0 = performance.now();
    const r = await ctx.complete(PROMPT, o);
    const wallMs = performance.now() - t0;
    process.stdout.write(`${JSON.stringify({ tg: r.generatedTokensPerSecond, generated: r.generatedTokens, wallMs, text: r.text, drafted: r.draft?.drafted ?? 0, accepted: r.draft?.accepted ?? 0 })}\n`);
  }
  await ctx.dispose();
  if (draftModel && draftModel !== model) await draftModel.dispose();
  await model.dispose();
}


async function main() {
  const { values } = parseArgs({
    options: {
      child: { type: "string" },
      model: { type: "string", default: "1b:q4_0" },
      draft: { type: "string", default: "tiny:q4_0" },
      gen: { type: "string", default: "128" },
      reps: { type: "string", default: "3" },
      "max-draft": { type: "string" },
      threads: { type: "string" },
      out: { type: "string", default: join(root, "bench", "results") },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.child) return child(JSON.parse(values.child));
  if (values.help) {
    process.stdout.write("usage: node scripts/bench-draft.mjs [--model preset:type|file.gguf] [--draft preset:type|file.gguf] [--gen N] [--reps N] [--max-draft N] [--threads N] [--out DIR]\n");
    return;
  }
  const lib = await import(pathToFileURL(join(distLib, "index.js")).href);
  const threads = Number(values.threads ?? lib.defaultThreads());
  const path = await benchModel(values.model);
  const small = await benchModel(values.draft);
  const maxDraft = Number(values["max-draft"] ?? lib.DEFAULTS.draft.maxDraftTokens);
  const defaultMinP = lib.DEFAULTS.draft.minProbability;
  const base = { path, threads, gen: Number(values.gen), maxDraft };
  const configs = [
    { name: "plain", spec: base },
    { name: "self, minP 0", spec: { ...base, draft: path, minP: 0 } },
    { name: `self, minP ${defaultMinP}`, spec: { ...base, draft: path, minP: defaultMinP } },
    { name: "small, minP 0", spec: { ...base, draft: small, minP: 0 } },
    { name: `small, minP ${defaultMinP}`, spec: { ...base, draft: small, minP: defaultMinP } },
  ];
  const run = (spec) => JSON.parse(execFileSync(process.execPath, [self, "--child", JSON.stringify(spec)], { stdio: ["ignore", "pipe", "inherit"] }).toString().trim().split("\n").pop());
  const samples = Object.fromEntries(configs.map((c) => [c.name, []]));
  const reps = Number(values.reps);
  for (let rep = 0; rep < reps; rep++) {
    for (const c of configs) samples[c.name].push(run(c.spec));
    process.stderr.write(`draft: rep ${rep + 1}/${reps} done\n`);
  }
  const verify = run({ ...base, verify: true }).verifyMs;
  const plainText = samples.plain[0].text;
  const rows = configs.map((c) => {
    const s = samples[c.name];
    const drafted = s.reduce((n, x) => n + x.drafted, 0);
    const accepted = s.reduce((n, x) => n + x.accepted, 0);
    return { name: c.name, tg: median(s.map((x) => x.tg)), acceptance: drafted > 0 ? accepted / drafted : null, draftedPerRun: drafted / s.length, sameText: s.every((x) => x.text === plainText) };
  });
  const plainTg = rows[0].tg;
  for (const r of rows) r.vsPlain = r.tg / plainTg;
  // Expected tokens per verify with k drafts each accepted with probability a: (1 - a^(k+1)) / (1 - a).
  const projection = [0.5, 0.7, 0.8, 0.9].map((a) => {
    const best = [];
    for (let k = 1; k <= 8; k++) {
      const tokens = (1 - a ** (k + 1)) / (1 - a);
      // Cost: a verify of k + 1 tokens plus k draft decodes at a tenth of a target decode.
      const cost = verify[k + 1] / verify[1] + 0.1 * k;
      best.push({ k, speedup: tokens / cost });
    }
    return { acceptance: a, ...best.reduce((m, x) => (x.speedup > m.speedup ? x : m)) };
  });
  const cpu = os.cpus()[0]?.model ?? "unknown CPU";
  const report = { date: new Date().toISOString(), machine: { cpu, cores: os.cpus().length }, model: values.model, draft: values.draft, threads, gen: base.gen, maxDraft, reps, rows, verifyMs: verify, projection };
  const lines = [
    `# Speculative decoding (${values.model}, draft ${values.draft}, ${threads} threads, ${cpu})`,
    "",
    `Greedy generation of ${base.gen} tokens, at most ${maxDraft} drafts per step; tg is the median of ${reps} runs, each in a child process.`,
    "\"self\" drafts with the model itself (every draft accepted); \"small\" with a synthetic model of the same vocabulary and random weights (almost none accepted).",
    "",
    "| configuration | tg (tok/s) | × plain | acceptance | drafted per run | same text as plain |",
    "|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.name} | ${r.tg.toFixed(1)} | ${r.vsPlain.toFixed(2)}× | ${r.acceptance === null ? "–" : (r.acceptance * 100).toFixed(1) + "%"} | ${r.draftedPerRun.toFixed(0)} | ${r.sameText ? "yes" : "NO"} |`),
    "",
    "The target's decode of n tokens at once (ms, median of 12), the cost of verifying n − 1 drafts:",
    "",
    `| n | ${Object.keys(verify).join(" | ")} |`,
    `|---|${Object.keys(verify).map(() => "---").join("|")}|`,
    `| ms | ${Object.values(verify).map((v) => v.toFixed(2)).join(" | ")} |`,
    "",
    "Projected gain of a real draft pair whose draft decode costs a tenth of the target's, at the best draft length (tokens per step (1 − aᵏ⁺¹)/(1 − a), cost verify(k+1)/verify(1) + 0.1·k):",
    "",
    "| acceptance | best k | projected × plain |",
    "|---|---|---|",
    ...projection.map((p) => `| ${(p.acceptance * 100).toFixed(0)}% | ${p.k} | ${p.speedup.toFixed(2)}× |`),
    "",
  ];
  mkdirSync(values.out, { recursive: true });
  const stem = join(values.out, `${report.date.slice(0, 10)}-draft-${values.model.replace(/[^a-z0-9]+/gi, "-")}`);
  writeFileSync(`${stem}.json`, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(`${stem}.md`, lines.join("\n"));
  process.stdout.write(lines.join("\n"));
}

await main();
