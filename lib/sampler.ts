/**
 * The native sampler chain of one generation, built from sampling options (their defaults and
 * the chain's order live in options.ts).
 */
import { fromNative } from "./errors.js";
import { native, type NativeSampler } from "./internal/native.js";
import { nativeModel } from "./internal/handles.js";
import { samplerBaton, type SamplingOptions } from "./options.js";
import type { Model } from "./model.js";

export type { SamplingOptions } from "./options.js";

/** @internal A native sampler chain for one generation; the generation job disposes it. */
export class Sampler {
  readonly native: NativeSampler;

  /** `grammar`: GBNF text with a `root` rule that the reply must follow. */
  constructor(model: Model, o: SamplingOptions, grammar?: string) {
    const baton = samplerBaton(o, model.info.vocabSize, grammar);
    try {
      this.native = new (native().Sampler)(nativeModel(model), baton);
    } catch (err) {
      throw fromNative(err);
    }
  }

  dispose(): void {
    this.native.dispose();
  }
}
