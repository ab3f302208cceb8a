/**
 * Synthetic models for tests, written once and cached under os.tmpdir()/llamem-test-models/.
 * File names describe the content (preset, type, seed, generator version, vocabulary hash), so a
 * cached file is reused only when it is what would be written now. Several test processes may
 * race to write the same file: each writes its own temp file and renames it into place, and the
 * contents are byte-identical, so whichever rename lands last is fine.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SYNTHETIC_FORMAT_VERSION, archPlan, defaultVocabPath, syntheticVocabFile, writeSyntheticModel } from "../../lib/gguf/synthetic.js";
import type { SyntheticArch, SyntheticType } from "../../lib/gguf/synthetic.js";

/** Directory of the cached test models. */
export function testModelsDir(): string {
  return join(tmpdir(), "llamem-test-models");
}

const vocabHashes = new Map<string, string>();
const pending = new Map<string, Promise<string>>();

function vocabHash(path: string): string {
  let h = vocabHashes.get(path);
  if (!h) {
    h = createHash("sha256").update(readFileSync(path)).digest("hex").slice(0, 12);
    vocabHashes.set(path, h);
  }
  return h;
}

/**
 * Path of the tiny synthetic model in `type` (default f16), writing it if not cached yet. The
 * vocabulary comes from defaultVocabPath() ($LLAMA_CPP_DIR/models, then vendor/llama.cpp/models).
 */
export function tinyModel(type: SyntheticType = "f16", seed = 1): Promise<string> {
  const vocabPath = defaultVocabPath();
  const name = `tiny-${type}-seed${seed}-v${SYNTHETIC_FORMAT_VERSION}-${vocabHash(vocabPath)}.gguf`;
  const path = join(testModelsDir(), name);
  let p = pending.get(path);
  if (!p) {
    p = (async () => {
      if (existsSync(path)) return path;
      mkdirSync(testModelsDir(), { recursive: true });
      await writeSyntheticModel(path, { preset: "tiny", type, seed, vocabPath });
      return path;
    })();
    // A failed write must not poison later calls.
    p.catch(() => pending.delete(path));
    pending.set(path, p);
  }
  return p;
}

/** A short hash of what an architecture's plan is (names, shapes, roles, metadata), so a changed plan is never served from the cache. */
function planHash(arch: SyntheticArch): string {
  const plan = archPlan(arch, 0, 1);
  const json = JSON.stringify(plan, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  return createHash("sha256").update(json).digest("hex").slice(0, 8);
}

/**
 * Path of the tiny synthetic model of `arch` ("llama" is {@link tinyModel}) in `type` (default
 * q8_0), with the tokenizer of that architecture's vocabulary, writing it if not cached yet.
 */
export function archModel(arch: "llama" | SyntheticArch, type: SyntheticType = "q8_0", seed = 1): Promise<string> {
  if (arch === "llama") return tinyModel(type, seed);
  const vocabPath = defaultVocabPath(syntheticVocabFile(arch));
  const name = `${arch}-${type}-seed${seed}-v${SYNTHETIC_FORMAT_VERSION}-${planHash(arch)}-${vocabHash(vocabPath)}.gguf`;
  const path = join(testModelsDir(), name);
  let p = pending.get(path);
  if (!p) {
    p = (async () => {
      if (existsSync(path)) return path;
      mkdirSync(testModelsDir(), { recursive: true });
      await writeSyntheticModel(path, { arch, type, seed, vocabPath });
      return path;
    })();
    p.catch(() => pending.delete(path));
    pending.set(path, p);
  }
  return p;
}
