#!/usr/bin/env node
// Builds build/Release/llamem.node with cmake-js against the pinned llama.cpp source.
// Skips the build when the inputs are unchanged (a stamp of their hash), so a second
// `npm install` takes seconds. `--force` rebuilds; environment:
//   LLAMEM_GPU=cpu|cuda|vulkan|metal   backend (default cpu)
//   LLAMEM_PORTABLE=1                  baseline CPU flags instead of -march=native
//   LLAMEM_CPU_VARIANTS=1              the prebuild layout (Linux): shared llama.cpp libraries and
//                                      one CPU backend module per CPU level, the best loaded at startup
//   LLAMEM_ASAN=1                      AddressSanitizer + UBSan build (into build-asan/)
//   LLAMA_CPP_DIR=/path                build against your own llama.cpp checkout
//   LLAMEM_CUDA_ARCHS=90               CUDA architectures to build for (default: llama.cpp's list)
//   LLAMEM_BUILD_DIR=/path             build tree (default build/, or build-asan/ with LLAMEM_ASAN)
//   LLAMEM_BUILD_TOOLS=1               also configure llama.cpp's tools in the same tree, so that
//                                      `cmake --build <tree> --target llama-bench` shares its ggml
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { llamaCppDir } from "./fetch-llama.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

function options() {
  const gpu = (process.env.LLAMEM_GPU || "cpu").toLowerCase();
  if (!["cpu", "cuda", "vulkan", "metal"].includes(gpu)) {
    throw new Error(`LLAMEM_GPU must be cpu, cuda, vulkan or metal (got '${gpu}')`);
  }
  const asan = process.env.LLAMEM_ASAN === "1";
  return {
    gpu,
    portable: process.env.LLAMEM_PORTABLE === "1",
    cpuVariants: process.env.LLAMEM_CPU_VARIANTS === "1",
    cudaArchs: process.env.LLAMEM_CUDA_ARCHS ?? "",
    tools: process.env.LLAMEM_BUILD_TOOLS === "1",
    asan,
    outDir: process.env.LLAMEM_BUILD_DIR ? resolve(process.env.LLAMEM_BUILD_DIR) : join(root, asan ? "build-asan" : "build"),
  };
}

function stampOf(opts, llamaDir) {
  const h = createHash("sha256");
  h.update(JSON.stringify({ ...opts, llamaDir, node: process.versions.napi }));
  const src = existsSync(join(llamaDir, ".llamem-source")) ? readFileSync(join(llamaDir, ".llamem-source")) : llamaDir;
  h.update(src);
  const files = ["CMakeLists.txt", ...readdirSync(join(root, "binding")).sort().map((f) => join("binding", f))];
  for (const f of files) h.update(f).update(readFileSync(join(root, f)));
  return h.digest("hex");
}

/** Builds the addon unless an up-to-date build exists; returns the path of the .node. */
export function buildAddon({ force = false } = {}) {
  const opts = options();
  const llamaDir = llamaCppDir();
  const out = join(opts.outDir, "Release", "llamem.node");
  const stampFile = join(opts.outDir, ".llamem-stamp");
  const stamp = stampOf(opts, llamaDir);
  if (!force && existsSync(out) && existsSync(stampFile) && readFileSync(stampFile, "utf8") === stamp) {
    return out;
  }
  const cmakeJs = join(dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js");
  const args = [
    cmakeJs, "build",
    "--out", opts.outDir,
    "--parallel", String(availableParallelism()),
    `--CDLLAMA_CPP_DIR=${llamaDir}`,
    `--CDLLAMEM_GPU=${opts.gpu}`,
    `--CDLLAMEM_PORTABLE=${opts.portable ? "ON" : "OFF"}`,
    `--CDLLAMEM_CPU_VARIANTS=${opts.cpuVariants ? "ON" : "OFF"}`,
    `--CDLLAMEM_ASAN=${opts.asan ? "ON" : "OFF"}`,
    `--CDLLAMEM_BUILD_TOOLS=${opts.tools ? "ON" : "OFF"}`,
    ...(opts.cudaArchs ? [`--CDCMAKE_CUDA_ARCHITECTURES=${opts.cudaArchs}`] : []),
  ];
  if (spawnSync("ninja", ["--version"], { stdio: "ignore" }).status === 0) args.push("--generator", "Ninja");
  process.stderr.write(`llamem: building the native addon (${opts.gpu}${opts.portable ? ", portable" : ""}${opts.cpuVariants ? ", every CPU variant" : ""}${opts.asan ? ", asan" : ""}); this takes a few minutes\n`);
  const t0 = Date.now();
  const verbose = Boolean(process.env.LLAMEM_VERBOSE_BUILD);
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: ["ignore", verbose ? "inherit" : "pipe", verbose ? "inherit" : "pipe"], maxBuffer: 1 << 28 });
  if (r.status !== 0) {
    const logText = verbose ? "" : `${r.stdout}${r.stderr}`;
    mkdirSync(opts.outDir, { recursive: true });
    writeFileSync(join(opts.outDir, "build.log"), logText);
    throw new Error(`the native build failed (cmake-js exit ${r.status}):\n${logText.slice(-4000)}\nfull log: ${join(opts.outDir, "build.log")}`);
  }
  if (!existsSync(out)) throw new Error(`the build finished but ${out} is missing`);
  writeFileSync(stampFile, stamp);
  process.stderr.write(`llamem: native addon built in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    console.log(buildAddon({ force: process.argv.includes("--force") }));
  } catch (err) {
    process.stderr.write(`llamem: ${err.message}\n`);
    process.exit(1);
  }
}
