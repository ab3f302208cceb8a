#!/usr/bin/env node
// Guards against the GCC 12 dead-store bug in llama.cpp's AMX code: at -O3 GCC drops the
// writes that fill the tile configuration (ggml_tile_config_init in ggml-cpu/amx/mmq.cpp)
// before `ldtilecfg`, so the CPU loads a garbage configuration and the first AMX matmul
// crashes. CMakeLists.txt compiles ggml-cpu with -fno-dse; this script checks the machine
// code: before each `ldtilecfg OFF(%reg)` the colsb (OFF+16) and rows (OFF+48) fields must
// be stored.
//
//   node scripts/check-amx.mjs                 compile mmq.cpp for an AMX CPU with the build's flags and check it
//   node scripts/check-amx.mjs --flags "-O3"   the same with other flags (shows the bug without -fno-dse)
//   node scripts/check-amx.mjs --binary FILE   check a built binary (passes trivially if it has no AMX code)
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The flags CMakeLists.txt gives ggml-cpu's C++ sources (release, plus -fno-dse for GCC). */
export const BUILD_FLAGS = "-O3 -DNDEBUG -fPIC -fno-dse";

/**
 * Checks `objdump -d` output: every ldtilecfg must be preceded, within the same straight
 * line of code, by stores to offsets +16 and +48 of its operand.
 * @returns {{ count: number, bad: string[] }}
 */
export function checkDisassembly(text) {
  const lines = text.split("\n");
  const bad = [];
  let count = 0;
  for (let i = 0; i < lines.length; i++) {
    const m = /ldtilecfg\s+(-?0x[0-9a-f]+|-?\d+)?\((%\w+)\)/.exec(lines[i]);
    if (!m) continue;
    count++;
    const base = m[1] ? Number.parseInt(m[1], m[1].includes("0x") ? 16 : 10) : 0;
    const reg = m[2];
    const stored = new Set();
    for (let j = i - 1; j >= Math.max(0, i - 40); j--) {
      const line = lines[j];
      if (/\b(call|ret|jmp)\b/.test(line) || /^\s*$/.test(line) || /^[0-9a-f]+ </.test(line)) break;
      const s = /\bv?mov\w*\s+[^,]+,\s*(-?0x[0-9a-f]+|-?\d+)?\((%\w+)\)/.exec(line);
      if (s && s[2] === reg) stored.add((s[1] ? Number.parseInt(s[1], s[1].includes("0x") ? 16 : 10) : 0) - base);
    }
    // The struct is 64 bytes: palette at 0, colsb[16] at 16, rows[16] at 48. A wide store
    // covering a field counts (e.g. a 16-byte store at 16 covers colsb).
    const covers = (field) => [...stored].some((off) => off <= field && field < off + 16);
    if (!covers(16) || !covers(48)) bad.push(lines[i].trim());
  }
  return { count, bad };
}

function objdump(file) {
  return execFileSync("objdump", ["-d", "--no-show-raw-insn", file], { maxBuffer: 1 << 30 }).toString();
}

/** Compiles llama.cpp's AMX kernels for an AMX CPU with `flags` and checks the result. */
export function checkCompiled(llamaDir, flags = BUILD_FLAGS, cxx = process.env.CXX || "g++") {
  const dir = mkdtempSync(join(tmpdir(), "llamem-amx-"));
  try {
    const out = join(dir, "mmq.o");
    const src = join(llamaDir, "ggml", "src");
    execFileSync(cxx, [
      ...flags.split(/\s+/).filter(Boolean), "-march=sapphirerapids", "-std=gnu++17", "-D_GNU_SOURCE",
      "-DGGML_USE_CPU_REPACK", `-I${src}`, `-I${join(src, "ggml-cpu")}`, `-I${join(llamaDir, "ggml", "include")}`,
      "-c", join(src, "ggml-cpu", "amx", "mmq.cpp"), "-o", out,
    ], { stdio: ["ignore", "ignore", "inherit"] });
    return checkDisassembly(objdump(out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const flagAt = args.indexOf("--flags");
  const binAt = args.indexOf("--binary");
  let result;
  if (binAt >= 0) {
    result = checkDisassembly(objdump(args[binAt + 1]));
  } else {
    const { llamaCppDir } = await import("./fetch-llama.mjs");
    result = checkCompiled(llamaCppDir(), flagAt >= 0 ? args[flagAt + 1] : BUILD_FLAGS);
  }
  if (result.count === 0) console.log("no ldtilecfg in this code: no AMX kernels to check");
  else if (result.bad.length === 0) console.log(`ok: all ${result.count} ldtilecfg have their tile configuration stored`);
  else console.log(`BROKEN: ${result.bad.length} of ${result.count} ldtilecfg load an unwritten tile configuration:\n  ${result.bad.join("\n  ")}`);
  process.exit(result.bad.length === 0 ? 0 : 1);
}
