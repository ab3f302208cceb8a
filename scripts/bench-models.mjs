// What the bench scripts share: the median of their repetitions, and the synthetic models they
// run, written once into bench/work/ (git-ignored) and reused.
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The GPU a run with `gpuLayers` offloaded used (the first one listed), for its report; undefined without. */
export function gpuDescription(lib, gpuLayers) {
  return gpuLayers > 0 ? lib.listDevices().find((d) => d.type === "gpu")?.description : undefined;
}

/** A model path: `file.gguf` as given, or `preset:type` (seed 1) written to bench/work/ if not there yet. */
export async function benchModel(spec) {
  if (spec.endsWith(".gguf")) return spec;
  const [preset, type] = spec.split(":");
  const synth = await import(pathToFileURL(join(root, "dist", "lib", "gguf", "synthetic.js")).href);
  const dir = join(root, "bench", "work");
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `synthetic-${preset}-${type}-seed1-v${synth.SYNTHETIC_FORMAT_VERSION}.gguf`);
  if (!existsSync(path)) await synth.writeSyntheticModel(path, { preset, type, seed: 1 });
  return path;
}
