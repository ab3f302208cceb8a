import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
// @ts-expect-error: a plain .mjs script without type declarations
import { BUILD_FLAGS, checkCompiled, checkDisassembly } from "../../scripts/check-amx.mjs";
import { packageRoot } from "../../lib/system.js";

type Check = { count: number; bad: string[] };
const llamaDir = process.env.LLAMA_CPP_DIR ?? join(packageRoot, "vendor", "llama.cpp");
const gccMajor = Number(execFileSync("g++", ["-dumpversion"]).toString().trim().split(".")[0]);

describe("AMX tile configuration survives the compiler (GCC dead-store bug)", () => {
  it("the build's flags keep the stores before every ldtilecfg", () => {
    const r = checkCompiled(llamaDir, BUILD_FLAGS) as Check;
    expect(r.count).toBeGreaterThan(0);
    expect(r.bad).toEqual([]);
  });

  it.runIf(gccMajor === 12)("the check catches GCC 12 dropping them without -fno-dse", () => {
    const r = checkCompiled(llamaDir, BUILD_FLAGS.replace("-fno-dse", "")) as Check;
    expect(r.count).toBeGreaterThan(0);
    expect(r.bad.length).toBeGreaterThan(0);
  });

  it("the addon's build compiles the AMX kernels with -fno-dse, and its binary passes the check", () => {
    const ninja = join(packageRoot, "build", "build.ninja");
    if (existsSync(ninja)) {
      const text = readFileSync(ninja, "utf8");
      const at = text.indexOf("amx/mmq.cpp.o:");
      expect(at).toBeGreaterThan(0);
      const flags = /FLAGS = ([^\n]*)/.exec(text.slice(at))?.[1] ?? "";
      expect(flags).toContain("-fno-dse");
    }
    const binary = join(packageRoot, "build", "Release", "llamem.node");
    expect(existsSync(binary)).toBe(true);
    const r = checkDisassembly(execFileSync("objdump", ["-d", "--no-show-raw-insn", binary], { maxBuffer: 1 << 30 }).toString()) as Check;
    expect(r.bad).toEqual([]);
  });
});
