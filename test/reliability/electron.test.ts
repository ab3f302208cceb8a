/**
 * Electron readiness (issue 6, part 7): the addon links against Node-API only (no V8 or Node C++
 * symbols, which differ in Electron's build), depends only on the C/C++ runtime, and runs in a
 * forked child process driven over IPC, the way an Electron utility process would run it.
 */
import { fork, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tinyModel } from "../helpers/models.js";
import { FIXTURES, ROOT, ensureDist } from "./helpers/child.js";

// The binary users get (a local build, else the prebuild), not an LLAMEM_BINARY override such as
// the ASan build, which imports the sanitizer runtimes on purpose.
const binary = (createRequire(import.meta.url)("node-gyp-build") as { resolve(dir: string): string }).resolve(ROOT);
const hasNm = spawnSync("nm", ["--version"]).status === 0;
const hasReadelf = spawnSync("readelf", ["--version"]).status === 0;
const isElf = process.platform === "linux";

let path: string;
beforeAll(async () => {
  ensureDist();
  path = await tinyModel("q8_0");
});

describe.runIf(isElf && existsSync(binary))("the .node binary", () => {
  it.runIf(hasNm)("imports only Node-API symbols from its host, and versioned C/C++ runtime symbols", () => {
    const r = spawnSync("nm", ["-D", "--undefined-only", binary], { encoding: "utf8" });
    expect(r.status).toBe(0);
    const symbols = r.stdout.split("\n").map((l) => l.trim().split(/\s+/).pop() ?? "").filter((s) => s.length > 0);
    expect(symbols.length).toBeGreaterThan(10);
    // V8 and Node's C++ API are name-mangled under v8:: and node::; Electron builds them differently.
    const cxxHost = symbols.filter((s) => /^_ZN[K]?(2v8|4node)/.test(s) || /^_ZN\d*v8/.test(s));
    expect(cxxHost).toEqual([]);
    const napi = symbols.filter((s) => /^(napi_|node_api_)/.test(s));
    expect(napi.length).toBeGreaterThan(10);
    // Everything else comes from glibc, libstdc++ or libgcc (a version tag says which), except
    // the weak hooks every shared object carries.
    const weakHooks = new Set(["_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable", "__gmon_start__"]);
    const unexpected = symbols.filter((s) => !/^(napi_|node_api_)/.test(s) && !/@(GLIBC|GLIBCXX|CXXABI|GCC)_/.test(s) && !weakHooks.has(s));
    expect(unexpected).toEqual([]);
    // libuv is not used directly either (it is there in Electron, but the addon does not need it).
    expect(symbols.filter((s) => s.startsWith("uv_"))).toEqual([]);
    // Electron 21+ runs V8 with the memory cage: buffers over native memory are refused there, so
    // every Buffer the addon returns must be a copy.
    expect(symbols.filter((s) => /^napi_create_external_(array)?buffer/.test(s))).toEqual([]);
  });

  it.runIf(hasReadelf)("needs no shared library beyond the C/C++ runtime", () => {
    const r = spawnSync("readelf", ["-d", binary], { encoding: "utf8" });
    const needed = [...r.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1] as string);
    const runtime = /^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[-\w.]*)\.so/;
    expect(needed.filter((n) => !runtime.test(n))).toEqual([]);
  });
});

describe("in a forked child process driven over IPC", () => {
  it("loads, streams a generation back, and exits cleanly when asked", async () => {
    const child = fork(join(FIXTURES, "fork-child.mjs"), [], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe", "ipc"] });
    let stderr = "";
    child.stderr?.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    const messages: { type: string; [k: string]: unknown }[] = [];
    const waitFor = (type: string) =>
      new Promise<{ type: string; [k: string]: unknown }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no '${type}' message; stderr: ${stderr}`)), 30_000);
        child.once("exit", (code, signal) => reject(new Error(`the child exited (${code}, ${signal}) before '${type}'; stderr: ${stderr}`)));
        const on = (m: { type: string }) => {
          messages.push(m);
          if (m.type === type || m.type === "error") {
            clearTimeout(timer);
            child.off("message", on);
            resolve(m);
          }
        };
        child.on("message", on);
      });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    const ready = await waitFor("ready");
    expect(Number(ready.napi)).toBeGreaterThanOrEqual(8);
    child.send({ type: "load", path });
    expect((await waitFor("loaded")).type).toBe("loaded");
    child.send({ type: "generate", prompt: "Once upon a time", maxTokens: 12 });
    const done = await waitFor("done");
    expect(done.tokens).toBe(12);
    expect(messages.filter((m) => m.type === "piece").length).toBeGreaterThan(0);
    child.send({ type: "exit" });
    const end = await exited;
    expect(end, stderr).toEqual({ code: 0, signal: null });
  });
});
