/**
 * The prebuild as a user gets it: `npm pack` ships prebuilds/, an app that installs the tarball
 * with install scripts off loads it and generates, `llamem devices` names the CPU variant in use,
 * and when no binary fits, the loader's error says why and what to do.
 *
 * The package tests run only when `npm run prebuild` has written prebuilds/<platform>-<arch>/
 * and dist/ is compiled. Installing the tarball resolves its dependencies (commander,
 * node-gyp-build, cmake-js, node-addon-api) from npm's cache, else the npm registry.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { explainLoadFailure, type LoadAttempt } from "../../lib/internal/native.js";
import { packageRoot } from "../../lib/system.js";
// @ts-expect-error: a plain .mjs script without type declarations
import { checkVariantsFolder, prebuildPlan } from "../../scripts/prebuild.mjs";
import { tinyModel } from "../helpers/models.js";

type Plan = { variants: boolean; target: string; nodeFile: string; outDir: string };
type Manifest = { layout: string; binary: string; cpuVariants: string[]; files: Record<string, number> };

const plan = prebuildPlan() as Plan;
const manifestPath = join(plan.outDir, "prebuild.json");
const havePrebuild = existsSync(join(plan.outDir, plan.nodeFile)) && existsSync(manifestPath);
const haveDist = existsSync(join(packageRoot, "dist", "lib", "index.js"));

describe("the loader's error when no binary fits", () => {
  const base: LoadAttempt = { source: null, path: null, error: "", prebuilds: ["linux-x64"], platform: "linux-arm64" };

  it("names the platform, the prebuilds the package has, and how to build from source", () => {
    const m = explainLoadFailure({ ...base, error: "No native build was found for platform=linux arch=arm64" });
    expect(m).toContain("no prebuilt binary fits linux-arm64");
    expect(m).toContain("prebuilds for linux-x64 only");
    expect(m).toContain("no local build");
    expect(m).toContain("npm rebuild llamem");
    expect(m).toMatch(/CMake .*compiler/);
    expect(explainLoadFailure({ ...base, prebuilds: [] })).toContain("carries no prebuilds");
  });

  it("explains a prebuild that does not load: old glibc, a missing library, a foreign binary, no CPU variant", () => {
    const at = { ...base, source: "prebuild" as const, path: "/x/prebuilds/linux-x64/llamem.napi.glibc.node", platform: "linux-x64" };
    const glibc = explainLoadFailure({ ...at, error: "/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.30' not found (required by /x/libllama.so)" });
    expect(glibc).toContain("older than the prebuild needs (GLIBCXX_3.4.30 not found)");
    expect(glibc).toContain("npm rebuild llamem");
    const missing = explainLoadFailure({ ...at, error: "libggml-base.so: cannot open shared object file: No such file or directory" });
    expect(missing).toContain("the prebuild is incomplete: libggml-base.so is missing");
    expect(explainLoadFailure({ ...at, error: "/x/llamem.node: invalid ELF header" })).toContain("not a binary for linux-x64");
    const cpu = explainLoadFailure({ ...at, error: "none of the 14 CPU variants in /x supports this CPU" });
    expect(cpu).toContain(at.path);
    expect(cpu).toContain("none of the 14 CPU variants");
  });

  it("points a broken local build or LLAMEM_BINARY at its own fix", () => {
    const local = explainLoadFailure({ ...base, source: "local build", path: "/p/build/Release/llamem.node", error: "undefined symbol: foo" });
    expect(local).toContain("npm run build:addon");
    expect(local).toContain("undefined symbol: foo");
    const env = explainLoadFailure({ ...base, source: "LLAMEM_BINARY", path: "/tmp/x.node", error: "ENOENT" });
    expect(env).toContain("LLAMEM_BINARY=/tmp/x.node");
    expect(env).toContain("unset it");
  });
});

describe.runIf(havePrebuild && haveDist)(`the packed prebuild (${plan.target})`, () => {
  const manifest = havePrebuild ? (JSON.parse(readFileSync(manifestPath, "utf8")) as Manifest) : null;
  let work = "";
  let app = "";
  let installed = "";

  const runApp = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const e = { ...process.env, ...env };
    delete e.LLAMEM_BINARY;
    delete e.LLAMEM_PREBUILD;
    return spawnSync(process.execPath, args, { cwd: app, env: e, encoding: "utf8", timeout: 120_000 });
  };

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "llamem-prebuild-"));
    app = join(work, "app");
    installed = join(app, "node_modules", "llamem");
  });
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it.runIf(plan.variants)("is a sound folder: every symbol resolves beside it, $ORIGIN run paths, AMX kept", async () => {
    expect(manifest?.layout).toBe("cpu-variants");
    expect(manifest?.cpuVariants.length).toBeGreaterThan(1);
    expect(await checkVariantsFolder(plan.outDir, plan.nodeFile)).toEqual([]);
  });

  it("npm pack ships it, and an app installs the tarball with --ignore-scripts", () => {
    const out = execFileSync("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], { cwd: packageRoot, encoding: "utf8", maxBuffer: 1 << 26 });
    const [packed] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
    const files = (packed?.files ?? []).map((f) => f.path);
    for (const f of Object.keys(manifest?.files ?? {})) expect(files).toContain(`prebuilds/${plan.target}/${f}`);
    expect(files).toContain("dist/lib/index.js");
    // Nothing from the build trees.
    expect(files.filter((f) => /^build|\.node$|\.so$/.test(f) && !f.startsWith("prebuilds/"))).toEqual([]);

    mkdirSync(app, { recursive: true });
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", private: true, type: "module" }));
    const r = spawnSync(
      "npm",
      ["install", "--ignore-scripts", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", join(work, packed?.filename ?? "")],
      { cwd: app, encoding: "utf8", timeout: 300_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(existsSync(join(installed, "prebuilds", plan.target, plan.nodeFile))).toBe(true);
    // Scripts off: no source build, no build tree, no fetched llama.cpp.
    expect(existsSync(join(installed, "build"))).toBe(false);
    expect(existsSync(join(installed, "vendor", "llama.cpp"))).toBe(false);
  });

  it("loads the prebuild, names its CPU variant in `llamem devices`, and generates", async () => {
    const cli = join(installed, "dist", "lib", "cli", "index.js");
    const json = runApp([cli, "devices", "--json"]);
    expect(json.status, json.stderr).toBe(0);
    const cpu = (JSON.parse(json.stdout) as { type: string; cpuVariant?: string; cpuFeatures?: string[] }[]).find((d) => d.type === "cpu");
    if (plan.variants) {
      expect(manifest?.cpuVariants).toContain(cpu?.cpuVariant);
    } else {
      expect(cpu?.cpuVariant).toBe("portable");
    }
    const table = runApp([cli, "devices"]);
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout).toContain(`CPU backend: ${cpu?.cpuVariant}`);

    const model = await tinyModel("q4_0");
    writeFileSync(
      join(app, "run.mjs"),
      `import { loadModel } from "llamem";
const model = await loadModel(${JSON.stringify(model)});
const ctx = await model.createContext({ contextSize: 256, threads: 2 });
const r = await ctx.complete("Once upon a time", { maxTokens: 8, temperature: 0 });
console.log(JSON.stringify({ generated: r.generatedTokens, stop: r.stopReason }));
await model.dispose();
`,
    );
    const gen = runApp(["run.mjs"]);
    expect(gen.status, gen.stderr).toBe(0);
    const out = JSON.parse(gen.stdout.trim().split("\n").pop() ?? "{}") as { generated: number; stop: string };
    expect(out.generated).toBeGreaterThan(0);
  });

  it("runs in worker threads, survives a terminated worker and an exit mid-generation", async () => {
    const model = await tinyModel("q8_0");
    writeFileSync(
      join(app, "teardown.mjs"),
      `import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { loadModel } from "llamem";
const gen = async (n) => {
  const model = await loadModel(${JSON.stringify(model)});
  const ctx = await model.createContext({ contextSize: 256, threads: 1 });
  return { model, ctx, text: (await ctx.complete("The weather today", { maxTokens: n, temperature: 0 })).text };
};
if (!isMainThread) {
  parentPort.postMessage("started");
  parentPort.postMessage((await gen(workerData.n)).text);
} else {
  // Two workers, one terminated mid-generation; then the main thread exits while generating.
  const texts = [];
  const done = new Worker(new URL(import.meta.url), { workerData: { n: 12 } });
  done.on("message", (m) => { if (m !== "started") texts.push(m); });
  const killed = new Worker(new URL(import.meta.url), { workerData: { n: 100000 } });
  killed.on("message", (m) => { if (m === "started") setTimeout(() => killed.terminate(), 300); });
  await Promise.all([new Promise((r) => done.on("exit", r)), new Promise((r) => killed.on("exit", r))]);
  const { text, ctx } = await gen(12);
  console.log(JSON.stringify({ worker: texts[0], main: text }));
  ctx.complete("Again", { maxTokens: 100000 }).catch(() => {});
  setTimeout(() => process.exit(0), 100);
}
`,
    );
    const r = runApp(["teardown.mjs"]);
    expect(r.signal, r.stderr).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as { worker?: string; main?: string };
    expect(out.main?.length).toBeGreaterThan(0);
    // Greedy decoding of the same model by the same binary: every thread writes the same text.
    expect(out.worker).toBe(out.main);
  });

  it.runIf(plan.variants)("says why when the prebuild's CPU backends are missing", () => {
    const dir = join(installed, "prebuilds", plan.target);
    for (const f of readdirSync(dir).filter((f) => /^libggml-cpu-.+\.so$/.test(f))) rmSync(join(dir, f));
    const r = runApp([join(installed, "dist", "lib", "cli", "index.js"), "devices"]);
    expect(r.status).toBe(7); // ERR_NATIVE_LOAD
    expect(r.stderr).toContain("does not load on this machine");
    expect(r.stderr).toContain("no CPU backend (libggml-cpu-*.so)");
    expect(r.stderr).toContain("npm rebuild llamem");
  });

  it("says why when no prebuild fits this platform", () => {
    rmSync(join(installed, "prebuilds"), { recursive: true, force: true });
    const r = runApp([join(installed, "dist", "lib", "cli", "index.js"), "devices"]);
    expect(r.status).toBe(7);
    expect(r.stderr).toContain(`no prebuilt binary fits ${plan.target}`);
    expect(r.stderr).toContain("carries no prebuilds");
  });
});
