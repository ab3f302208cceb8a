#!/usr/bin/env node
// npm's install step. Uses a prebuilt binary from prebuilds/ when one loads on this machine;
// otherwise fetches the pinned llama.cpp source and builds the addon (skipped when nothing
// changed). Then writes the demo model, when the compiled library is present.
// LLAMEM_BUILD_FROM_SOURCE=1 (or any LLAMEM_GPU) forces the source build.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

function prebuildLoads() {
  if (process.env.LLAMEM_BUILD_FROM_SOURCE === "1" || process.env.LLAMEM_GPU) return false;
  if (!existsSync(join(root, "prebuilds"))) return false;
  try {
    const path = require("node-gyp-build").resolve(root);
    if (!path.includes(`${join(root, "prebuilds")}`)) return false;
    require(path);
    return true;
  } catch {
    return false;
  }
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
