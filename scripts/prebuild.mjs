#!/usr/bin/env node
// `npm run prebuild`: the binary `npm pack` ships, under prebuilds/<platform>-<arch>/ where
// node-gyp-build finds it when no local build exists (an install with scripts off, or one whose
// install script found that it loads).
//
// On x86-64 Linux it carries every CPU variant: ggml's CPU backend built once per CPU level
// (libggml-cpu-x64.so … libggml-cpu-sapphirerapids.so, GGML_CPU_ALL_VARIANTS) beside
// llamem.node and the shared llama.cpp libraries (libllamem-llama.so, libllamem-ggml.so,
// libllamem-ggml-base.so); at startup the addon loads the best one this
// CPU supports (ggml_backend_load_all_from_path, by ggml's score), so a prebuild runs the same
// kernels as a -march=native build. Elsewhere it is one static build for a baseline CPU
// (LLAMEM_PORTABLE).
//
//   node scripts/prebuild.mjs            build (skipped when the inputs are unchanged), copy, check
//   node scripts/prebuild.mjs --force    rebuild
//   LLAMEM_PREBUILD_VARIANTS=0           the static baseline build even on x86-64 Linux
//
// The build trees live in build-portable/ (git-ignored) and are reused; only prebuilds/ changes.
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The prebuild layout for this platform: `variants` (backend modules) or a single static binary. */
export function prebuildPlan(platform = process.platform, arch = process.arch, env = process.env) {
  const variants = platform === "linux" && arch === "x64" && env.LLAMEM_PREBUILD_VARIANTS !== "0";
  const libc = platform === "linux" ? (process.report?.getReport()?.header?.glibcVersionRuntime ? "glibc" : "musl") : null;
  return {
    variants,
    target: `${platform}-${arch}`,
    // node-gyp-build's tags: napi (any Node version with N-API 8), the C library on Linux.
    nodeFile: ["llamem", "napi", ...(libc ? [libc] : []), "node"].join("."),
    buildDir: join(root, "build-portable", variants ? "build" : "static"),
    outDir: join(root, "prebuilds", `${platform}-${arch}`),
  };
}

function run(cmd, args) {
  return execFileSync(cmd, args, { maxBuffer: 1 << 30 }).toString();
}

function has(cmd) {
  return spawnSync(cmd, ["--version"], { stdio: "ignore" }).status === 0;
}

/**
 * Dynamic symbols of an ELF file. Defined: every name. Undefined: the strong ones without a
 * version, i.e. not from the C/C++ runtime (whose symbols are versioned, memcpy@GLIBC_2.14).
 */
function dynamicSymbols(file, which) {
  const lines = run("nm", ["-D", which === "defined" ? "--defined-only" : "--undefined-only", file]).split("\n");
  const out = [];
  for (const line of lines) {
    const m = /^\s*(?:[0-9a-f]+\s+)?([A-Za-z])\s+(\S+)$/.exec(line);
    if (!m) continue;
    const [, type, name] = m;
    if (which === "defined") out.push(name.replace(/@.*$/, ""));
    else if (type === "U" && !name.includes("@")) out.push(name);
  }
  return out;
}

/**
 * Checks a variants prebuild folder; returns a list of problems (empty when it is sound):
 * every llama.cpp/ggml symbol the addon needs is defined by a library beside it (nothing may be
 * left to a backend module: a lazy binding to a missing symbol kills the process at first call),
 * each file finds its neighbours through $ORIGIN, and the AMX kernels kept their tile setup.
 */
export async function checkVariantsFolder(dir, nodeFile) {
  const problems = [];
  const files = readdirSync(dir);
  const libs = files.filter((f) => f.endsWith(".so"));
  const shared = libs.filter((f) => !/^libggml-(cpu|rpc)/.test(f));
  const defined = new Set(shared.flatMap((f) => dynamicSymbols(join(dir, f), "defined")));
  // Node itself provides N-API and libuv.
  const needed = dynamicSymbols(join(dir, nodeFile), "undefined").filter((s) => !/^(napi_|node_api_|uv_)/.test(s));
  const unresolved = needed.filter((s) => !defined.has(s));
  if (unresolved.length > 0) problems.push(`${nodeFile} needs symbols no shared library here defines: ${unresolved.join(", ")}`);
  for (const f of [nodeFile, ...libs]) {
    const dyn = run("readelf", ["-d", join(dir, f)]);
    const needs = [...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
    for (const n of needs.filter((n) => /^lib(llamem-|ggml|llama)/.test(n))) {
      if (!files.includes(n)) problems.push(`${f} needs ${n}, which is not in the folder`);
    }
    if (needs.some((n) => /^lib(llamem-|ggml|llama)/.test(n)) && !/\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[\$ORIGIN\]/.test(dyn)) {
      problems.push(`${f} has no $ORIGIN run path`);
    }
  }
  if (!libs.some((f) => /^libggml-cpu-.+\.so$/.test(f))) problems.push("no CPU backend module (libggml-cpu-*.so)");
  const amx = libs.find((f) => f === "libggml-cpu-sapphirerapids.so");
  if (amx && has("objdump")) {
    const { checkDisassembly } = await import("./check-amx.mjs");
    const r = checkDisassembly(run("objdump", ["-d", "--no-show-raw-insn", join(dir, amx)]));
    if (r.count === 0) problems.push(`${amx} has no AMX code`);
    if (r.bad.length > 0) problems.push(`${amx}: the AMX tile configuration lost its stores (GCC dead-store bug): ${r.bad[0]}`);
  }
  return problems;
}

/** Loads the prebuilt binary in a child process; returns its CPU backend (variant, features). */
export function loadCheck(nodePath) {
  const code = `const b = require(${JSON.stringify(nodePath)}); process.stdout.write(JSON.stringify(b.systemInfo().cpuBackend ?? null));`;
  const r = spawnSync(process.execPath, ["-e", code], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`the prebuild does not load: ${(r.stderr || "").trim().split("\n").slice(0, 6).join("\n")}`);
  return JSON.parse(r.stdout);
}

async function main() {
  const plan = prebuildPlan();
  const force = process.argv.includes("--force");
  process.env.LLAMEM_BUILD_DIR = plan.buildDir;
  if (plan.variants) process.env.LLAMEM_CPU_VARIANTS = "1";
  else process.env.LLAMEM_PORTABLE = "1";
  const { buildAddon } = await import("./build-addon.mjs");
  const built = buildAddon({ force });
  const from = dirname(built);

  rmSync(plan.outDir, { recursive: true, force: true });
  mkdirSync(plan.outDir, { recursive: true });
  const copies = [[built, plan.nodeFile]];
  if (plan.variants) {
    for (const f of readdirSync(from).filter((f) => f.endsWith(".so")).sort()) copies.push([join(from, f), f]);
  }
  const strip = has("strip");
  for (const [src, name] of copies) {
    const dst = join(plan.outDir, name);
    copyFileSync(src, dst);
    if (strip) execFileSync("strip", ["--strip-unneeded", dst]);
  }

  if (plan.variants) {
    const problems = await checkVariantsFolder(plan.outDir, plan.nodeFile);
    if (problems.length > 0) throw new Error(`the prebuild in ${plan.outDir} is unsound:\n  ${problems.join("\n  ")}`);
  }
  const cpu = loadCheck(join(plan.outDir, plan.nodeFile));
  const variants = copies.map(([, n]) => /^libggml-cpu-(.+)\.so$/.exec(n)?.[1]).filter(Boolean);
  const manifest = {
    target: plan.target,
    layout: plan.variants ? "cpu-variants" : "static",
    binary: plan.nodeFile,
    cpuVariants: variants,
    files: Object.fromEntries(readdirSync(plan.outDir).sort().map((f) => [f, statSync(join(plan.outDir, f)).size])),
  };
  writeFileSync(join(plan.outDir, "prebuild.json"), JSON.stringify(manifest, null, 2) + "\n");
  const total = Object.values(manifest.files).reduce((a, b) => a + b, 0);
  process.stderr.write(
    `llamem: prebuild written to ${plan.outDir} (${copies.length} files, ${(total / 1048576).toFixed(1)} MiB` +
      `${variants.length > 0 ? `, ${variants.length} CPU variants` : ""}); on this machine it runs the ${cpu?.variant ?? "?"} CPU backend\n`,
  );
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    process.stderr.write(`llamem: prebuild failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
