/**
 * Shared pieces of the session tests.
 */
import { existsSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { expect } from "vitest";
import { readGguf } from "../../lib/gguf/read.js";
import { gguf, writeGguf } from "../../lib/gguf/write.js";
import { LlamemError, type Model } from "../../lib/index.js";
import { testModelsDir, tinyModel } from "../helpers/models.js";

/**
 * Contexts of the tests run one thread: the tiny model gains nothing from more, and on a busy
 * machine llama.cpp's spinning thread barrier makes multi-threaded decodes 10-100x slower.
 */
export const THREADS = { threads: 1 } as const;

let oneLayer: Promise<string> | undefined;

/**
 * The tiny f16 model cut down to its first layer. In one layer, a token's K and V depend only on
 * the token and its position, so cutting turns out of the cache and shifting the rest is exact up
 * to RoPE rounding; with two or more layers the kept cells also carry what the removed tokens
 * contributed through attention, and a shifted cache is an approximation of a fresh one.
 */
export function oneLayerModel(): Promise<string> {
  oneLayer ??= (async () => {
    const src = await tinyModel("f16");
    const path = join(testModelsDir(), `one-layer-${basename(src)}`);
    if (existsSync(path)) return path;
    const file = await readGguf(src);
    const bytes = readFileSync(src);
    const metadata = new Map(file.metadata);
    metadata.set("llama.block_count", gguf.u32(1));
    const tensors = file.tensors
      .filter((t) => !t.name.startsWith("blk.") || t.name.startsWith("blk.0."))
      .map((t) => ({ name: t.name, dims: t.dims, type: t.type, data: () => [bytes.subarray(t.offset, t.offset + t.size)] }));
    await writeGguf(path, { metadata, tensors });
    return path;
  })();
  return oneLayer;
}

/** The prompt tokens a fresh context would be fed for `messages`: BOS (if the template lacks it) and the chat-formatted text. */
export async function formatted(model: Model, messages: { role: string; content: string }[], addAssistant: boolean): Promise<number[]> {
  const text = await model.applyChatTemplate(messages, { addAssistant });
  const tokens = await model.tokenize(text, { addSpecial: false, parseSpecial: true });
  return model.info.addBos && tokens[0] !== model.info.bos ? [model.info.bos, ...tokens] : tokens;
}

export { codeOf } from "../helpers/errors.js";

/** Replies alternate user/assistant: no turn was split. */
export function expectWholeTurns(history: readonly { role: string }[]): void {
  history.forEach((m, i) => expect(m.role).toBe(i % 2 === 0 ? "user" : "assistant"));
}
