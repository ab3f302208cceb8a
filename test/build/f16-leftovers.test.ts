import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../lib/system.js";

// vendor/patches/0002 runs the leftover registers of ggml's f16 dot, mad and scale as vectors, in
// one branch per x86 mapping. The model tests reach only the mapping of the build in use (and
// only for heads that leave registers over), so f16-leftovers.cpp is compiled against the
// vendored source once per mapping, and run for every length of a few steps where the CPU can.

const llamaDir = process.env.LLAMA_CPP_DIR ?? join(packageRoot, "vendor", "llama.cpp");
const ggml = join(llamaDir, "ggml");
const flags = new Set((/^flags\s*:(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "").trim().split(/\s+/));
const isX64 = process.arch === "x64" && process.platform === "linux";
const gccMajor = Number(execFileSync("g++", ["-dumpversion"]).toString().trim().split(".")[0]);

const AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"];
const AVX512_NEEDS = ["avx512f", "avx512bw", "avx512dq", "avx512vl"];

type Mapping = { name: string; cflags: string[]; needs: string[]; maxN: number; minGcc?: number };
/**
 * The mappings: their compiler flags, the CPU flags they need, the longest length checked, and the
 * first GCC that knows the flags.
 * With AVX-512 FP16, ggml's own steps (128 halves) sum in f16, far from a double's sum; lengths
 * under one step run the patch's f32 leftovers alone.
 */
const MAPPINGS: readonly Mapping[] = ([
  { name: "SSE3", cflags: ["-msse3"], needs: ["pni"], maxN: 300 },
  { name: "AVX2 (F16C, FMA)", cflags: ["-mavx2", "-mfma", "-mf16c"], needs: ["avx2", "fma", "f16c"], maxN: 300 },
  { name: "AVX-512", cflags: AVX512, needs: AVX512_NEEDS, maxN: 300 },
  { name: "AVX-512 FP16", cflags: [...AVX512, "-mavx512fp16"], needs: [...AVX512_NEEDS, "avx512_fp16"], maxN: 127, minGcc: 12 },
] satisfies Mapping[]).filter((m) => gccMajor >= (m.minGcc ?? 0));

/** f32 sums of at most 300 products of magnitude ≤ 1 (measured: about 2e-6); f16 results round by half a unit (4.9e-4 below 2). */
const TOLERANCE = 1e-3;

const work = mkdtempSync(join(tmpdir(), "llamem-f16-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const runnable = (m: Mapping) => m.needs.every((f) => flags.has(f));
const binaries = new Map<string, string>();

describe.runIf(isX64)("ggml's f16 dot, mad and scale against a double-precision reference, every length (vendor/patches/0002)", () => {
  it("compiles for every mapping, those this CPU cannot run included", () => {
    for (const { name, cflags } of MAPPINGS) {
      const exe = join(work, name.replace(/\W+/g, "-"));
      execFileSync("g++", [
        "-std=c++17", "-O2", ...cflags,
        `-I${join(ggml, "src", "ggml-cpu")}`, `-I${join(ggml, "src")}`, `-I${join(ggml, "include")}`,
        join(packageRoot, "test", "build", "f16-leftovers.cpp"), join(ggml, "src", "ggml-cpu", "vec.cpp"),
        "-o", exe,
      ], { stdio: ["ignore", "ignore", "pipe"] });
      expect(existsSync(exe)).toBe(true);
      binaries.set(name, exe);
    }
  }, 120_000);

  it.each(MAPPINGS.filter(runnable))("the $name mapping matches a double-precision reference", ({ name, maxN }) => {
    const exe = binaries.get(name);
    expect(exe).toBeDefined();
    const r = JSON.parse(execFileSync(exe!, [String(maxN)]).toString()) as { step: number; epr: number; dot: number; dotDropped: number; mad: number; scale: number };
    // A step holds several registers, so some lengths leave whole registers over.
    expect(r.step).toBeGreaterThan(r.epr);
    expect(r.dot).toBeLessThan(TOLERANCE);
    expect(r.mad).toBeLessThan(TOLERANCE);
    expect(r.scale).toBeLessThan(TOLERANCE);
    // The comparison can fail: a dot missing one element misses by at least 0.25.
    expect(r.dotDropped).toBeGreaterThan(0.2);
  });
});
