#!/usr/bin/env node
// npm's install step. Uses a prebuilt binary from prebuilds/ when one loads on this machine (on
// x86-64 Linux it carries every CPU variant and picks the best at load); otherwise fetches the
// pinned llama.cpp source and builds the addon (skipped when nothing changed). Then writes the
// demo model, when the compiled library is present.
// LLAMEM_BUILD_FROM_SOURCE=1 (or any LLAMEM_GPU) forces the source build.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

/** True when a prebuild fits this machine and loads (in a child process, so a crash cannot end the install). */
function prebuildLoads() {
  if (process.env.LLAMEM_BUILD_FROM_SOURCE === "1" || process.env.LLAMEM_GPU) return false;
  if (!existsSync(join(root, "prebuilds"))) return false;
  let path;
  try {
    path = require("node-gyp-build").resolve(root);
  } catch {
    process.stderr.write(`llamem: no prebuilt binary for ${process.platform}-${process.arch}; building from source\n`);
    return false;
  }
  if (!path.startsWith(join(root, "prebuilds"))) return false;
  const r = spawnSync(process.execPath, ["-e", `require(${JSON.stringify(path)})`], { encoding: "utf8" });
  if (r.status === 0) return true;
  const why = (r.stderr || `exit ${r.status ?? r.signal}`).trim().split("\n").find((l) => /Error|error:/.test(l)) ?? "";
  process.stderr.write(`llamem: the prebuilt binary does not load here (${why.trim()}); building from source\n`);
  return false;
}

try {
  if (!prebuildLoads()) {
    const { buildAddon } = await import("./build-addon.mjs");
    buildAddon();
  }
  if (existsSync(join(root, "dist", "lib", "gguf", "synthetic.js")) && existsSync(join(root, "scripts", "demo-model.mjs"))) {
    const r = spawnSync(process.execPath, [join(root, "scripts", "demo-model.mjs")], { stdio: "inherit" });
    if (r.status !== 0) process.stderr.write("llamem: could not write the demo model; `llamem prompt` needs -m MODEL\n");
  }
} catch (err) {
  process.stderr.write(`llamem: install failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
