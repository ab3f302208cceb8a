/**
 * The native sampler chain of one generation, built from sampling options (their defaults and
 * the chain's order live in options.ts).
 */
import { fromNative } from "./errors.js";
import { native, type NativeSampler } from "./internal/native.js";
import { nativeModel } from "./internal/handles.js";
import { isAccelerator, listDevices } from "./devices.js";
import { samplerBaton, type SamplingOptions } from "./options.js";
import type { Model } from "./model.js";

export type { SamplingOptions } from "./options.js";

/** @internal A native sampler chain for one generation; the generation job disposes it. */
export class Sampler {
  readonly native: NativeSampler;

  /**
   * `grammar`: GBNF text with a `root` rule that the reply must follow. `textBias`: the
   * `logitBias` entries given by text, tokenized ({@link resolveTextBias}). `contextSize`
   * resolves DRY's -1. `cpu`: the generation reads log-probabilities or verifies drafts, which
   * only the CPU samples, so the chain is built for the CPU whatever `backendSampling` says.
   */
  constructor(model: Model, o: SamplingOptions, x: { grammar?: string; textBias?: readonly { token: number; bias: number }[]; contextSize?: number; cpu?: boolean } = {}) {
    const baton = samplerBaton(o, model.info.vocabSize, x.grammar, x.textBias, { contextSize: x.contextSize, outputOnAccelerator: outputOnAccelerator(model), cpu: x.cpu });
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

const onAccelerator = new WeakMap<Model, boolean>();

/** Whether the model's output layer is on a device other than the CPU (asked once per model). */
function outputOnAccelerator(model: Model): boolean {
  let on = onAccelerator.get(model);
  if (on === undefined) {
    const name = model.info.outputDevice;
    on = name !== "" && listDevices().some((d) => d.name === name && isAccelerator(d));
    onAccelerator.set(model, on);
  }
  return on;
}

/** The `logitBias` entries given by text, as token ids: each of the text's tokens gets the bias. @internal */
export async function resolveTextBias(model: Model, o: SamplingOptions): Promise<{ token: number; bias: number }[]> {
  const out: { token: number; bias: number }[] = [];
  for (const e of o.logitBias ?? []) {
    if (!("text" in e) || typeof e.text !== "string") continue;
    const ids = await model.tokenizeRaw(e.text, { addSpecial: false, parseSpecial: false });
    for (const token of ids) out.push({ token, bias: e.bias });
  }
  return out;
}
