#!/usr/bin/env node
// Produces the output of llama.cpp's own example programs, built from the same vendored source
// with the addon's CPU flags, on synthetic test models:
//   test/fixtures/reference-simple.json      examples/simple, greedy, on the tiny llama model (test/native/generate.test.ts);
//   test/fixtures/reference-archs.json       examples/simple on one tiny model of each generating architecture (test/models/);
//   test/fixtures/reference-embeddings.json  examples/embedding: vectors and rerank scores (test/native/embedding.test.ts).
// Run once by a developer (not in CI), again whenever the pin or a synthetic model changes:
//   npx tsc -p tsconfig.json && node scripts/reference.mjs [--only simple|embeddings] [--jobs N]
// --only builds and runs just that example; --jobs caps the build's parallel jobs (default: every CPU).
// The tests check that llamem's greedy tokens render the same text, byte for byte.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { llamaCppDir } from "./fetch-llama.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { writeSyntheticModel, SYNTHETIC_ARCHS } = await import(join(root, "dist", "lib", "gguf", "synthetic.js"));

const CASES = [
  { preset: "tiny", type: "q8_0", seed: 1, prompt: "Write a haiku about memory", nPredict: 32 },
  { preset: "tiny", type: "f16", seed: 1, prompt: "The quick brown fox", nPredict: 24 },
];

/**
 * Greedy text from noise weights has near ties, and a near tie breaks differently on another SIMD
 * path (AVX2, AVX-512, AMX round differently): each prompt below gives the same text with every
 * CPU variant of the prebuilds (x64, haswell, skylakex, zen4, sapphirerapids). Check a new one the
 * same way (LLAMEM_BINARY pointing at a prebuild holding one libggml-cpu-<variant>.so).
 *
 * One case per architecture (f16, seed 1: what the matrix in test/models/ loads; f16 because
 * llama.cpp computes q8_0 weights slightly differently for one token than for a batch, so only
 * f16 models give the bit-exact equalities the matrix checks). gemma3 generates well past its
 * 32-token sliding window, so the reference covers the window's mask.
 */
const ARCH_PROMPTS = {
  qwen2: { prompt: "Write a haiku about memory", nPredict: 32 },
  qwen3: { prompt: "The quick brown fox", nPredict: 32 },
  "qwen3-head96": { prompt: "Once upon a time", nPredict: 32 },
  gemma3: { prompt: "A sliding window sees only the last few tokens, so", nPredict: 64 },
  phi3: { prompt: "Tell me about the sea", nPredict: 32 },
  qwen3moe: { prompt: "Experts route every token", nPredict: 32 },
  "mistral-nemo": { prompt: "The quick brown fox", nPredict: 32 },
  mamba: { prompt: "A state space model remembers", nPredict: 32 },
};
const ARCH_CASES = Object.keys(SYNTHETIC_ARCHS).filter((arch) => !SYNTHETIC_ARCHS[arch].encoder).map((arch) => {
  const p = ARCH_PROMPTS[arch];
  if (!p) throw new Error(`no reference prompt for ${arch}: add one to ARCH_PROMPTS`);
  return { arch, type: "f16", seed: 1, ...p };
});

function flag(name) {
  const i = process.argv.indexOf(name);
  return i < 0 ? undefined : process.argv[i + 1];
}
const only = flag("--only");
if (only !== undefined && only !== "simple" && only !== "embeddings") throw new Error(`--only ${only}: expected simple or embeddings`);
const jobs = Number(flag("--jobs") ?? availableParallelism());
if (!Number.isSafeInteger(jobs) || jobs < 1) throw new Error(`--jobs ${flag("--jobs")}: expected a positive integer`);
const targets = only === "simple" ? ["llama-simple"] : only === "embeddings" ? ["llama-embedding"] : ["llama-simple", "llama-embedding"];

const llama = llamaCppDir();
const build = join(root, "build-ref");
execFileSync("cmake", [
  "-S", llama, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
  "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
  "-DLLAMA_BUILD_COMMON=ON", "-DLLAMA_OPENSSL=OFF", "-DGGML_OPENMP=OFF", "-DGGML_NATIVE=ON", "-DCMAKE_CXX_FLAGS=-fno-dse",
], { stdio: "inherit" });
execFileSync("cmake", ["--build", build, "--target", ...targets, "-j", String(jobs)], { stdio: "inherit" });

const dir = join(tmpdir(), "llamem-reference");
mkdirSync(dir, { recursive: true });

/** Runs examples/simple on one model: the prompt's and the generated pieces, then a newline. */
function simple(model, c) {
  return execFileSync(join(build, "bin", "llama-simple"), ["-m", model, "-n", String(c.nPredict), c.prompt], {
    stdio: ["ignore", "pipe", "ignore"],
  }).toString("utf8");
}

const commit = JSON.parse(execFileSync("node", ["-p", "JSON.stringify(require('./vendor/llama.cpp.json'))"], { cwd: root }).toString()).commit;
const comment = "Greedy output of llama.cpp examples/simple (prompt pieces + generated pieces, special tokens rendered, then a newline), written by scripts/reference.mjs";

if (only === undefined || only === "simple") {
  const out = [];
  for (const c of CASES) {
    const model = join(dir, `${c.preset}-${c.type}-${c.seed}.gguf`);
    await writeSyntheticModel(model, { preset: c.preset, type: c.type, seed: c.seed });
    const stdout = simple(model, c);
    out.push({ ...c, output: stdout });
    process.stderr.write(`${c.type}: ${JSON.stringify(stdout)}\n`);
  }
  writeFileSync(join(root, "test", "fixtures", "reference-simple.json"), `${JSON.stringify({ comment, llamaCpp: commit, cases: out }, null, 2)}\n`);

  const archOut = [];
  for (const c of ARCH_CASES) {
    const model = join(dir, `${c.arch}-${c.type}-${c.seed}.gguf`);
    await writeSyntheticModel(model, { arch: c.arch, type: c.type, seed: c.seed });
    const stdout = simple(model, c);
    archOut.push({ ...c, output: stdout });
    process.stderr.write(`${c.arch}: ${JSON.stringify(stdout)}\n`);
  }
  writeFileSync(join(root, "test", "fixtures", "reference-archs.json"), `${JSON.stringify({ comment, llamaCpp: commit, cases: archOut }, null, 2)}\n`);
}

/**
 * Embeddings and rerank scores from examples/embedding: one text a line, printed raw with 7
 * decimals. Rank scores are printed unnormalized (--embd-normalize -1): normalizing one score
 * would leave only its sign. On the machine that wrote them llamem matches to the last digit
 * (5e-8), but the weights are f16, so ggml rounds activations to f16 for every product: a last-bit
 * difference elsewhere (another SIMD path, another batch layout) can cross a rounding boundary and
 * move a value by ~1e-5. Hence the tolerances: 1e-4 for BERT vectors; 5e-4 for a decoder's, whose
 * f16 KV cache rounds too; 1e-3 for rank scores (≈4.1, 0.03 apart), which the head scales up
 * about 8 times (the example's one batch of 3 pairs already scores the second 4e-5 off the pair
 * alone).
 *
 * The example tokenizes each line with its vocabulary's BOS/EOS/SEP rules and parses special
 * tokens: BERT lines become [CLS] text [SEP]; a rank line "query<TAB>document" becomes
 * [CLS] query [SEP] document [SEP] (the vocabulary adds SEP and has no EOS, and the synthetic
 * model has no "rerank" template); qwen2's vocabulary adds neither BOS nor EOS, so its "last"
 * vector is that of the text's own last token. Every line goes into one batch, each its own
 * sequence: -c/-b/-ub 512 hold them all (the example would take n_ctx_train times 256 parallel
 * sequences otherwise, a 2M-cell KV cache for qwen2). Flash attention is off, as llamem's CPU
 * default has it: the example's "auto" turns it on, whose f16 rounding of Q moved the reranker's
 * scores by up to 3e-4.
 */
const TEXTS = ["hello world", "the river runs past the old stone mill", "memory is a garden of quiet signals", "Don't panic: it's 42, UNICODE café!"];
const EMBED_CASES = [
  { arch: "bert", pooling: "mean", normalize: 2, texts: TEXTS },
  { arch: "bert", pooling: "mean", normalize: -1, texts: TEXTS },
  { arch: "bert", pooling: "cls", normalize: 2, texts: TEXTS },
  { arch: "qwen2", pooling: "mean", normalize: 2, texts: TEXTS },
  { arch: "qwen2", pooling: "last", normalize: 2, texts: TEXTS },
  { arch: "bert-reranker", pooling: "rank", normalize: -1, query: "what is a river", documents: ["a river is water that flows to the sea", "stones and mills", "memory"] },
];
const EMBED_FLAGS = ["--embd-output-format", "raw", "-c", "512", "-b", "512", "-ub", "512", "-t", "2", "-fa", "off"];

function embedding(model, c) {
  const lines = c.query === undefined ? c.texts : c.documents.map((d) => `${c.query}\t${d}`);
  const stdout = execFileSync(join(build, "bin", "llama-embedding"), [
    "-m", model, "-p", lines.join("\n"), "--pooling", c.pooling, "--embd-normalize", String(c.normalize), ...EMBED_FLAGS,
  ], { stdio: ["ignore", "pipe", "ignore"] }).toString("utf8");
  const rows = stdout.trim().split("\n").map((l) => l.trim().split(/\s+/).map(Number));
  if (rows.length !== lines.length || rows.some((r) => r.some((x) => !Number.isFinite(x)))) {
    throw new Error(`${c.arch} ${c.pooling}: expected ${lines.length} rows of numbers, got ${JSON.stringify(stdout.slice(0, 200))}`);
  }
  return rows;
}

if (only === undefined || only === "embeddings") {
  const embOut = [];
  for (const c of EMBED_CASES) {
    const model = join(dir, `${c.arch}-f16-1.gguf`);
    await writeSyntheticModel(model, { arch: c.arch, type: "f16", seed: 1 });
    const rows = embedding(model, c);
    const tolerance = c.pooling === "rank" ? 1e-3 : c.arch === "qwen2" ? 5e-4 : 1e-4;
    if (c.query === undefined) embOut.push({ ...c, type: "f16", seed: 1, tolerance, embeddings: rows });
    else embOut.push({ ...c, type: "f16", seed: 1, tolerance, scores: rows.map((r) => r[0]) });
    process.stderr.write(`${c.arch} ${c.pooling}: ${rows.length} rows of ${rows[0]?.length}\n`);
  }
  const embComment = "Vectors and rerank scores of llama.cpp examples/embedding (raw output, 7 decimals), written by scripts/reference.mjs";
  const embCommand = `llama-embedding -m MODEL -p LINES --pooling POOLING --embd-normalize NORMALIZE ${EMBED_FLAGS.join(" ")}`;
  writeFileSync(
    join(root, "test", "fixtures", "reference-embeddings.json"),
    `${JSON.stringify({ comment: embComment, llamaCpp: commit, command: embCommand, cases: embOut }, null, 1)}\n`,
  );
}
