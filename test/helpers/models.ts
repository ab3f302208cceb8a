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
import { SYNTHETIC_FORMAT_VERSION, defaultVocabPath, writeSyntheticModel } from "../../lib/gguf/synthetic.js";
import type { SyntheticType } from "../../lib/gguf/synthetic.js";

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
