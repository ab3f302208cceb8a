#!/usr/bin/env node
// Stands in for node-gyp when prebuildify runs (`node-gyp rebuild --release ...`): builds the
// addon with cmake-js into build/Release, where prebuildify picks it up. Its arguments are
// node-gyp's and do not apply to a cmake-js build.
import { buildAddon } from "./build-addon.mjs";

try {
  buildAddon({ force: true });
} catch (err) {
  process.stderr.write(`llamem: ${err.message}\n`);
  process.exit(1);
}
