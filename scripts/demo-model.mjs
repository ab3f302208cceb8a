#!/usr/bin/env node
// Writes the demo model, models/demo.gguf: a tiny synthetic llama (q8_0, seed 1) with the real
// llama SPM tokenizer, so examples and the CLI run without downloading a model. Rewritten only
// when missing or written by another version of the generator (checked from its own metadata).
// Runs from `prepare` after tsc; without dist/ there is nothing to write it with, so it skips.
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { llamaCppDir } from "./fetch-llama.mjs";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** What the demo model is. */
export const DEMO_MODEL = Object.freeze({ preset: "tiny", type: "q8_0", seed: 1 });

/** Absolute path of the demo model. */
export function demoModelPath() {
  return join(root, "models", "demo.gguf");
}

function log(msg) {
  process.stderr.write(`llamem: ${msg}\n`);
}

async function loadDist() {
  const synthetic = join(root, "dist", "lib", "gguf", "synthetic.js");
  const gguf = join(root, "dist", "lib", "gguf", "read.js");
  if (!existsSync(synthetic) || !existsSync(gguf)) return undefined;
  return {
    synthetic: await import(pathToFileURL(synthetic).href),
    gguf: { ...(await import(pathToFileURL(gguf).href)), ...(await import(pathToFileURL(join(root, "dist", "lib", "gguf", "format.js")).href)) },
  };
}

/** True when `path` is a demo model written by this version of the generator. */
async function isCurrent(dist, path) {
  if (!existsSync(path)) return false;
  const { readGguf, metadataString, metadataNumber } = dist.gguf;
  const { syntheticModelName, SYNTHETIC_FORMAT_VERSION } = dist.synthetic;
  try {
    const file = await readGguf(path);
    return (
      metadataString(file, "general.name") === syntheticModelName(DEMO_MODEL.preset, DEMO_MODEL.type) &&
      metadataNumber(file, "llamem.synthetic.format_version") === SYNTHETIC_FORMAT_VERSION &&
      metadataNumber(file, "llamem.synthetic.seed") === DEMO_MODEL.seed
    );
  } catch {
    return false; // unreadable or broken: write it again
  }
}

/**
 * Writes the demo model if it is missing or stale. Returns its path, or undefined when dist/ is
 * missing (nothing written).
 */
export async function ensureDemoModel() {
  const dist = await loadDist();
  if (!dist) {
    log("dist/ not built; skipping the demo model (run `npm run build:ts` first)");
    return undefined;
  }
  const path = demoModelPath();
  if (await isCurrent(dist, path)) return path;
  const vocabPath = join(llamaCppDir(), "models", dist.synthetic.DEFAULT_VOCAB_FILE);
  mkdirSync(dirname(path), { recursive: true });
  log(`writing the demo model ${path}`);
  await dist.synthetic.writeSyntheticModel(path, { ...DEMO_MODEL, vocabPath });
  return path;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    await ensureDemoModel();
  } catch (err) {
    log(`cannot write the demo model: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
