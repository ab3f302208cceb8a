#!/usr/bin/env node
// Produces the greedy output of llama.cpp's own example program (examples/simple), built from the
// same vendored source with the addon's CPU flags, on synthetic test models:
//   test/fixtures/reference-simple.json  the tiny llama model (test/native/generate.test.ts);
//   test/fixtures/reference-archs.json   one tiny model of each architecture (test/models/).
// Run once by a developer (not in CI), again whenever the pin or a synthetic model changes:
//   npx tsc -p tsconfig.json && node scripts/reference.mjs
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
const ARCH_CASES = Object.keys(SYNTHETIC_ARCHS).map((arch) => {
  const p = ARCH_PROMPTS[arch];
  if (!p) throw new Error(`no reference prompt for ${arch}: add one to ARCH_PROMPTS`);
  return { arch, type: "f16", seed: 1, ...p };
});

const llama = llamaCppDir();
const build = join(root, "build-ref");
execFileSync("cmake", [
  "-S", llama, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
  "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
  "-DLLAMA_BUILD_COMMON=ON", "-DLLAMA_OPENSSL=OFF", "-DGGML_OPENMP=OFF", "-DGGML_NATIVE=ON", "-DCMAKE_CXX_FLAGS=-fno-dse",
], { stdio: "inherit" });
execFileSync("cmake", ["--build", build, "--target", "llama-simple", "-j", String(availableParallelism())], { stdio: "inherit" });

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
