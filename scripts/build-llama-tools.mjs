#!/usr/bin/env node
// Builds llama.cpp's own tools (llama-bench) from the vendored source into build-tools/, with the
// CPU flags the addon is built with (CMakeLists.txt): static libraries, Release, GGML_NATIVE=ON,
// GGML_OPENMP=OFF, -fno-dse (the GCC AMX workaround). scripts/bench.mjs uses it as the reference
// contender. cmake and ninja handle incrementality: a second run is a no-op build.
//
//   node scripts/build-llama-tools.mjs [target ...]     (default target: llama-bench)
//
// Environment: LLAMA_CPP_DIR=/path builds another llama.cpp checkout (as the addon build does).
// Needs cmake, ninja and a C++ compiler. Prints the path of each built binary on stdout.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { llamaCppDir } from "./fetch-llama.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Where the tools are built. */
export const toolsBuildDir = join(root, "build-tools");

/**
 * The cache definitions of the tools build. The CPU-relevant ones mirror CMakeLists.txt; the rest
 * only switch off what the tools do not need (tests, examples, HTTPS). llama-server is built for
 * the serving benchmark (scripts/bench-serve.mjs), over HTTP only.
 */
export const TOOLS_CMAKE_DEFINES = Object.freeze([
  "-DCMAKE_BUILD_TYPE=Release",
  "-DBUILD_SHARED_LIBS=OFF",
  "-DGGML_NATIVE=ON",
  "-DGGML_OPENMP=OFF",
  "-DCMAKE_CXX_FLAGS=-fno-dse",
  "-DLLAMA_BUILD_COMMON=ON",
  "-DLLAMA_BUILD_TOOLS=ON",
  "-DLLAMA_BUILD_TESTS=OFF",
  "-DLLAMA_BUILD_EXAMPLES=OFF",
  "-DLLAMA_BUILD_SERVER=ON",
  "-DLLAMA_BUILD_APP=OFF",
  "-DLLAMA_OPENSSL=OFF",
  // The server's web UI would be downloaded at build time: off (nothing is fetched, and the benchmark uses the API only).
  "-DLLAMA_USE_PREBUILT_UI=OFF",
]);

function step(cmd, args, what, { quiet = false } = {}) {
  // Logs go to stderr so a caller's stdout (a report, JSON) stays clean; a quiet step shows its
  // log only when it fails.
  const r = spawnSync(cmd, args, { cwd: root, stdio: ["ignore", quiet ? "pipe" : 2, quiet ? "pipe" : 2], maxBuffer: 1 << 26 });
  if (r.error) throw new Error(`${what}: cannot run ${cmd} (${r.error.message}); cmake and ninja are needed`);
  if (r.status !== 0) {
    if (quiet) process.stderr.write(`${r.stdout}${r.stderr}`);
    throw new Error(`${what} failed (${cmd} exit ${r.status ?? r.signal})`);
  }
}

/**
 * Configures (idempotent) and builds the given targets in build-tools/; returns the path of each
 * target's binary, in order.
 */
export function buildLlamaTools(targets = ["llama-bench"]) {
  const src = llamaCppDir();
  step("cmake", ["-S", src, "-B", toolsBuildDir, "-G", "Ninja", ...TOOLS_CMAKE_DEFINES], "configuring llama.cpp tools", { quiet: true });
  step("cmake", ["--build", toolsBuildDir, "--target", ...targets, "-j", String(availableParallelism())], `building ${targets.join(", ")}`);
  return targets.map((t) => {
    const bin = join(toolsBuildDir, "bin", process.platform === "win32" ? `${t}.exe` : t);
    if (!existsSync(bin)) throw new Error(`the build finished but ${bin} is missing`);
    return bin;
  });
}

/** Builds llama-bench if needed; returns its path. */
export function buildLlamaBench() {
  return buildLlamaTools(["llama-bench"])[0];
}

/** Selected entries of build-tools/CMakeCache.txt (the flags the tools were really built with). */
export function toolsBuildFlags(buildDir = toolsBuildDir) {
  return cmakeCacheFlags(join(buildDir, "CMakeCache.txt"));
}

/** Reads the compiler-relevant entries of a CMakeCache.txt; {} when it does not exist. */
export function cmakeCacheFlags(cacheFile) {
  if (!existsSync(cacheFile)) return {};
  const keep = /^(CMAKE_BUILD_TYPE|CMAKE_C_FLAGS|CMAKE_CXX_FLAGS|CMAKE_C_FLAGS_RELEASE|CMAKE_CXX_FLAGS_RELEASE|CMAKE_C_COMPILER|CMAKE_CXX_COMPILER|CMAKE_GENERATOR|CMAKE_POSITION_INDEPENDENT_CODE|BUILD_SHARED_LIBS|GGML_NATIVE|GGML_OPENMP|GGML_CPU_REPACK|LLAMEM_[A-Z_]+)$/;
  const out = {};
  for (const line of readFileSync(cacheFile, "utf8").split("\n")) {
    const m = /^([A-Za-z0-9_]+):([A-Z]+)=(.*)$/.exec(line);
    if (m && keep.test(m[1])) out[m[1]] = m[3];
  }
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const targets = process.argv.slice(2);
    for (const bin of buildLlamaTools(targets.length > 0 ? targets : undefined)) console.log(bin);
  } catch (err) {
    process.stderr.write(`llamem: ${err.message}\n`);
    process.exit(1);
  }
}
