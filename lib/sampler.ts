/**
 * Sampling options and the native sampler chain built from them.
 */
import { fromNative, invalidArgument } from "./errors.js";
import type { NativeSampler } from "./native.js";
import { native } from "./native.js";
import type { Model } from "./model.js";

/** How the next token is chosen. */
export interface SamplingOptions {
  /** 0 picks the most likely token (greedy, deterministic). Default 0.8. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = off). Default 40. */
  topK?: number;
  /** Keep the smallest set whose probability reaches p (1 = off). Default 0.95. */
  topP?: number;
  /** Drop tokens below p times the top probability (0 = off). Default 0.05. */
  minP?: number;
  /** Penalize repeating recent tokens (1 = off). Default 1. */
  repeatPenalty?: number;
  /** How many recent tokens the penalties look at. Default 64. */
  repeatLastN?: number;
  /** OpenAI-style frequency penalty (0 = off). */
  frequencyPenalty?: number;
  /** OpenAI-style presence penalty (0 = off). */
  presencePenalty?: number;
  /** Seed of the random draw; the same seed and prompt give the same text. Default random. */
  seed?: number;
}

/** @internal A native sampler chain for one generation. */
export class Sampler {
  readonly native: NativeSampler;

  constructor(model: Model, o: SamplingOptions) {
    const seed = o.seed ?? Math.floor(Math.random() * 0xffffffff);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) invalidArgument("seed must be an integer in [0, 2^32)");
    try {
      this.native = new (native().Sampler)(model.native, {
      temperature: o.temperature ?? 0.8,
      topK: o.topK ?? 40,
      topP: o.topP ?? 0.95,
      minP: o.minP ?? 0.05,
      repeatPenalty: o.repeatPenalty ?? 1,
      repeatLastN: o.repeatLastN ?? 64,
      frequencyPenalty: o.frequencyPenalty ?? 0,
      presencePenalty: o.presencePenalty ?? 0,
        seed,
      });
    } catch (err) {
      throw fromNative(err);
    }
  }

  dispose(): void {
    this.native.dispose();
  }
}
