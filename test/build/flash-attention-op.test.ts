import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../lib/system.js";

// vendor/patches/0001 and 0003 rewrite ggml's CPU flash attention for short batches and for a
// single token over 512 or more positions. flash-attention-op.cpp runs the op alone on those
// shapes (and on one upstream keeps) and compares each output with a double-precision reference.
// It links the ggml that the addon's own build compiled (build/, native to this CPU). Where an
// aarch64 cross compiler and qemu are installed (Debian: g++-aarch64-linux-gnu, qemu-user), it
// also builds ggml for three ARM levels and runs there, since the patches' non-x86 code runs in
// no other test.

const llamaDir = process.env.LLAMA_CPP_DIR ?? join(packageRoot, "vendor", "llama.cpp");
const ggmlInclude = join(llamaDir, "ggml", "include");
const harness = join(packageRoot, "test", "build", "flash-attention-op.cpp");
// the addon's build tree, as scripts/build-addon.mjs chooses it
const nativeLibs = join(process.env.LLAMEM_BUILD_DIR ?? join(packageRoot, "build"), "llama.cpp", "ggml", "src");
const isLinux = process.platform === "linux";

type Row = { case: string; threads: number; status: number; emptyRows: number; finite: boolean; err: number; control: number; tol: number };

const work = mkdtempSync(join(tmpdir(), "llamem-fa-op-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

// Asynchronous, so vitest's worker stays responsive through minutes of building and emulation.
const exec = (cmd: string, args: string[]) => promisify(execFile)(cmd, args, { maxBuffer: 16 << 20 });

async function run(cmd: string, args: string[]): Promise<Row[]> {
  const { stdout } = await exec(cmd, args);
  return stdout.trim().split("\n").slice(1).map((l) => JSON.parse(l) as Row);
}

/** Every case passes: no error status, no empty row, finite, within its tolerance, and the control shows a missing position would not be. */
function expectAllMatch(rows: Row[]) {
  // 20 cases, each with 1 to 4 threads
  expect(rows.length).toBe(80);
  for (const r of rows) {
    const where = `${r.case}, ${r.threads} thread(s)`;
    expect(r.status, where).toBe(0);
    expect(r.emptyRows, where).toBe(0);
    expect(r.finite, where).toBe(true);
    expect(r.err, where).toBeLessThan(r.tol);
    // Leaving out each head's heaviest position moves the output far past the tolerance.
    expect(r.control, where).toBeGreaterThan(3 * r.tol);
  }
}

function has(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe.runIf(isLinux)("ggml's CPU flash attention against a double-precision reference (vendor/patches/0001, 0003)", () => {
  it("matches with the ggml the addon was built with", async () => {
    // npm install's build (scripts/build-addon.mjs) links ggml statically from these archives.
    const cpu = join(nativeLibs, "libggml-cpu.a");
    const base = join(nativeLibs, "libggml-base.a");
    expect(existsSync(cpu) && existsSync(base), `no static ggml under ${nativeLibs}: npm install builds it (not with LLAMEM_PORTABLE=1)`).toBe(true);
    const exe = join(work, "native");
    await exec("g++", ["-std=c++17", "-O2", `-I${ggmlInclude}`, harness, cpu, base, "-lpthread", "-o", exe]);
    expectAllMatch(await run(exe, []));
  }, 120_000);

  const cross = has("aarch64-linux-gnu-g++") && has("qemu-aarch64") && has("cmake");
  // -march levels: plain NEON; NEON with f16 arithmetic and dot products; SVE, run at several vector lengths
  const ARM: { arch: string; cpus: string[] }[] = [
    { arch: "armv8-a", cpus: ["max"] },
    { arch: "armv8.2-a+fp16+dotprod", cpus: ["max"] },
    { arch: "armv8.2-a+sve", cpus: ["max,sve128=on", "max,sve256=on", "max,sve512=on"] },
  ];
  it.runIf(cross).each(ARM)("matches on aarch64 -march=$arch under qemu", async ({ arch, cpus }) => {
    const build = join(work, arch.replace(/\W+/g, "-"));
    await exec("cmake", [
      "-S", llamaDir, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
      "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
      "-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc", "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++",
      "-DGGML_NATIVE=OFF", `-DGGML_CPU_ARM_ARCH=${arch}`, "-DBUILD_SHARED_LIBS=OFF", "-DGGML_OPENMP=OFF",
      "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF",
    ]);
    await exec("cmake", ["--build", build, "--target", "ggml-cpu", "ggml-base", "-j", "2"]);
    const libs = join(build, "ggml", "src");
    const exe = join(build, "fa-op");
    await exec("aarch64-linux-gnu-g++", ["-std=c++17", "-O2", `-I${ggmlInclude}`, harness, join(libs, "libggml-cpu.a"), join(libs, "libggml-base.a"), "-lpthread", "-o", exe]);
    for (const cpu of cpus) {
      expectAllMatch(await run("qemu-aarch64", ["-L", "/usr/aarch64-linux-gnu", "-cpu", cpu, exe]));
    }
  }, 600_000);
});
