#!/usr/bin/env node
// `npm run prebuild`: a prebuildify-layout N-API prebuild (prebuilds/<platform>-<arch>/) for
// a portable CPU baseline, which node-gyp-build loads when no local build exists. prebuildify
// drives the build through its node-gyp hook, which we point at our cmake-js build.
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const prebuildify = require("prebuildify");

// A separate build tree, so the prebuild never replaces the local -march=native build.
const work = join(root, "build-portable");
mkdirSync(work, { recursive: true });
process.env.LLAMEM_PORTABLE = "1";
process.env.LLAMEM_BUILD_DIR = join(work, "build");
prebuildify(
  { cwd: work, out: root, name: "llamem", napi: true, strip: true, nodeGyp: join(root, "scripts", "prebuild-node-gyp.mjs"), tagLibc: true },
  (err) => {
    if (err) {
      process.stderr.write(`llamem: prebuild failed: ${err.message}\n`);
      process.exit(1);
    }
    process.stderr.write(`llamem: prebuild written under ${join(root, "prebuilds")}\n`);
  },
);
