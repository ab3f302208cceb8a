#!/usr/bin/env node
// Produces test/fixtures/reference-simple.json: the greedy output of llama.cpp's own example
// program (examples/simple), built from the same vendored source with the addon's CPU flags,
// on the tiny synthetic test model. Run once by a developer (not in CI):
//   npx tsc -p tsconfig.json && node scripts/reference.mjs
// test/native/generate.test.ts checks that llamem's greedy tokens render the same text.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { llamaCppDir } from "./fetch-llama.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { writeSyntheticModel } = await import(join(root, "dist", "lib", "gguf", "synthetic.js"));

const CASES = [
  { preset: "tiny", type: "q8_0", seed: 1, prompt: "Write a haiku about memory", nPredict: 32 },
  { preset: "tiny", type: "f16", seed: 1, prompt: "The quick brown fox", nPredict: 24 },
];

const llama = llamaCppDir();
const build = join(root, "build-ref");
execFileSync("cmake", [
  "-S", llama, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
  "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
  "-DLLAMA_BUILD_COMMON=ON", "-DLLAMA_OPENSSL=OFF", "-DGGML_OPENMP=OFF", "-DGGML_NATIVE=ON", "-DCMAKE_CXX_FLAGS=-fno-dse",
], { stdio: "inherit" });
execFileSync("cmake", ["--build", build, "--target", "llama-simple", "-j", String(availableParallelism())], { stdio: "inherit" });

const out = [];
const dir = join(tmpdir(), "llamem-reference");
mkdirSync(dir, { recursive: true });
for (const c of CASES) {
  const model = join(dir, `${c.preset}-${c.type}-${c.seed}.gguf`);
  await writeSyntheticModel(model, { preset: c.preset, type: c.type, seed: c.seed });
  const stdout = execFileSync(join(build, "bin", "llama-simple"), ["-m", model, "-n", String(c.nPredict), c.prompt], {
    stdio: ["ignore", "pipe", "ignore"],
  }).toString("utf8");
  out.push({ ...c, output: stdout });
  process.stderr.write(`${c.type}: ${JSON.stringify(stdout)}\n`);
}
writeFileSync(join(root, "test", "fixtures", "reference-simple.json"), `${JSON.stringify({
  comment: "Greedy output of llama.cpp examples/simple (prompt pieces + generated pieces, special tokens rendered, then a newline), written by scripts/reference.mjs",
  llamaCpp: JSON.parse(execFileSync("node", ["-p", "JSON.stringify(require('./vendor/llama.cpp.json'))"], { cwd: root }).toString()).commit,
  cases: out,
}, null, 2)}\n`);
