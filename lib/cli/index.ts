#!/usr/bin/env node
/**
 * The `llamem` command line. Each command lives in its own module that exports a
 * {@link CommandRegistrar}; adding a command means adding its module to {@link COMMANDS}.
 * Exit codes are documented in ./output.ts.
 *
 * @packageDocumentation
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Command } from "commander";
import { packageRoot } from "../system.js";
import { flush, runToExit, type CommandRegistrar } from "./output.js";
import { registerPrompt } from "./prompt.js";
import { registerChat } from "./chat.js";
import { registerInspect } from "./inspect.js";
import { registerMakeModel } from "./make-model.js";
import { registerFit } from "./fit.js";
import { registerDevices } from "./devices.js";
import { registerQuantize } from "./quantize.js";
import { registerBench } from "./bench.js";
import { registerRpcServer } from "./rpc-server.js";
import { registerServe } from "./serve.js";

/** The commands, in the order `llamem --help` lists them. */
const COMMANDS: readonly CommandRegistrar[] = [
  registerPrompt, registerChat, registerServe, registerInspect, registerFit, registerDevices, registerBench, registerQuantize, registerMakeModel, registerRpcServer,
];

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")) as { version?: unknown };
    return typeof pkg.version === "string" ? pkg.version : "unknown";
  } catch {
    return "unknown";
  }
}

function createProgram(): Command {
  const program = new Command("llamem");
  // Settings before .command(): subcommands copy them when they are created.
  program
    .description("Run GGUF language models locally through llama.cpp, with memory you can see and bound.")
    .version(packageVersion(), "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .helpCommand("help [command]", "show help for a command")
    .exitOverride()
    .showHelpAfterError("(add --help for usage)")
    .configureOutput({
      // Commander's usage errors read "error: ..."; make them look like ours.
      outputError: (str, write) => write(str.replace(/^error: /, "llamem: ")),
    });
  for (const register of COMMANDS) register(program);
  program.addHelpText(
    "after",
    `
Examples:
  $ llamem prompt "The capital of France is"
  $ echo "Write a haiku about memory" | llamem prompt --chat -m model.gguf
  $ llamem inspect model.gguf
  $ llamem fit model.gguf --max-ram 8G
  $ llamem devices
  $ llamem bench -m model.gguf --reps 3
  $ llamem quantize model-f16.gguf model-q4_k_m.gguf q4_k_m
  $ llamem chat -m model.gguf --strategy summarize --budget 0.75
  $ llamem make-model tiny.gguf --preset tiny --type q8_0
  $ llamem rpc-server --port 50052

Exit codes: 0 ok, 1 other error, 2 usage, 3 file not found, 4 not a valid GGUF
(or a saved state that does not fit), 5 llama.cpp failure (load, context, decode,
quantize), 6 aborted, 7 native addon missing, 8 does not fit in memory,
9 I/O failure (cannot write the output, a file or a server), 130 interrupted (Ctrl-C).`,
  );
  return program;
}

async function main(): Promise<void> {
  // runToExit watches stdout before the command writes: a failed write (a closed pipe, a full
  // disk) is reported there instead of crashing with a stack trace.
  const code = await runToExit(() => createProgram().parseAsync(process.argv));
  await flush(process.stderr);
  // Exit explicitly: a command is done once it has disposed its native objects, and nothing
  // it left behind (stdin listeners, timers) should keep the process alive.
  process.exit(code);
}

void main();
