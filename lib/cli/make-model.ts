/**
 * `llamem make-model <out.gguf>`: writes a synthetic model (real tokenizer, seeded random
 * weights) of llama in three sizes or of another architecture in one tiny shape, for tests and
 * benchmarks without downloading anything.
 */
import { Command, Option } from "commander";
import { LlamemError } from "../errors.js";
import {
  SYNTHETIC_ARCHS,
  SYNTHETIC_PRESETS,
  writeSyntheticLora,
  writeSyntheticModel,
  type SyntheticArch,
  type SyntheticPreset,
  type SyntheticType,
} from "../gguf/synthetic.js";
import { CliExit, ProgressBar, formatBytes, formatCount, trapSignals, usageError } from "./output.js";
import { intArg } from "./options.js";

const TYPES = ["f32", "f16", "q8_0", "q4_0"] as const satisfies readonly SyntheticType[];

interface MakeModelOptions {
  arch?: "llama" | SyntheticArch;
  preset?: SyntheticPreset;
  type: SyntheticType;
  seed: number;
  vocab?: string;
  loraFor?: string;
  rank: number;
  quiet?: boolean;
}

/** Registers `llamem make-model`. */
export function registerMakeModel(program: Command): Command {
  return program
    .command("make-model")
    .summary("write a synthetic GGUF model with random weights")
    .description(
      "Write a GGUF with a real tokenizer and seeded random weights. Its text is noise, but it loads and runs\n" +
        "like a real model of that shape: for tests and memory or speed measurements. --arch llama comes in the\n" +
        "sizes of --preset; the other architectures in one tiny shape each (docs/models.md).",
    )
    .argument("<out>", "output GGUF path (written atomically; replaced if it exists)")
    .addOption(
      new Option("--arch <arch>", `architecture: llama, or a tiny ${Object.keys(SYNTHETIC_ARCHS).join(", ")}`)
        .choices(["llama", ...Object.keys(SYNTHETIC_ARCHS)]),
    )
    .addOption(
      new Option("--preset <preset>", "llama model shape: tiny (~4M params), 1b (TinyLlama shape), 2b (H2O-Danube2 1.8B shape, 80-wide heads), 8b (Llama 3 8B shape)")
        .choices(Object.keys(SYNTHETIC_PRESETS)),
    )
    .addOption(new Option("--type <type>", "weight format").choices(TYPES).default("f16"))
    .option("--seed <n>", "PRNG seed; the same seed gives a byte-identical file", intArg(0), 0)
    .option("--vocab <path>", "GGUF to copy the tokenizer from (default: the architecture's vocabulary from llama.cpp's models/)")
    .option("--lora-for <base.gguf>", "write a LoRA adapter for this model instead (attention weights, seeded random pairs)")
    .option("--rank <n>", "the LoRA's rank", intArg(1, 4096), 8)
    .option("-q, --quiet", "no progress bar and no summary")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem make-model tiny.gguf --preset tiny
  $ llamem make-model llama-8b-q4.gguf --preset 8b --type q4_0 --seed 7
  $ llamem make-model gemma3.gguf --arch gemma3 --type q8_0 --seed 1
  $ llamem make-model tiny-lora.gguf --lora-for tiny.gguf --rank 8 --seed 2`,
    )
    .action(async (out: string, o: MakeModelOptions) => {
      if (o.loraFor !== undefined) {
        if (o.arch !== undefined || o.preset !== undefined) usageError("--lora-for takes its shape from the base model: leave out --arch and --preset");
        const r = await writeSyntheticLora(out, { base: o.loraFor, rank: o.rank, seed: o.seed });
        if (!o.quiet) process.stdout.write(`wrote ${r.path}: LoRA rank ${o.rank} for ${o.loraFor}, ${formatBytes(r.size)}, ${r.tensorCount} tensors\n`);
        return;
      }
      if (o.arch === undefined && o.preset === undefined) usageError("make-model needs --preset (llama sizes) or --arch");
      if (o.arch !== undefined && o.arch !== "llama" && o.preset !== undefined && o.preset !== "tiny") {
        usageError(`--preset ${o.preset} is for llama; --arch ${o.arch} comes in one tiny shape`);
      }
      const arch = o.arch ?? "llama";
      const trap = trapSignals();
      const bar = new ProgressBar("writing", { enabled: !o.quiet });
      try {
        const r = await writeSyntheticModel(out, {
          arch,
          preset: o.preset,
          type: o.type,
          seed: o.seed,
          vocabPath: o.vocab,
          onProgress: (f) => bar.update(f),
          signal: trap.signal,
        });
        bar.done();
        if (!o.quiet) {
          process.stdout.write(
            `wrote ${r.path}: ${arch === "llama" ? (o.preset ?? "tiny") : arch} ${o.type}, ${formatBytes(r.size)}, ${r.tensorCount} tensors, ` +
              `${formatCount(r.parameterCount)} parameters, vocabulary ${r.nVocab}\n`,
          );
        }
      } catch (err) {
        if (trap.exitCode !== undefined && err instanceof LlamemError && err.code === "ERR_ABORTED") throw new CliExit(trap.exitCode);
        throw err;
      } finally {
        bar.done();
        trap.release();
      }
    });
}
