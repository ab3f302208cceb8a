/**
 * What the commands do when stdout cannot be written: a full disk is reported in one line and
 * exit code 9 (EXIT.IO), never a stack trace; a reader that went away (`| head`) ends the
 * command quietly with 0. Runs the real bin through sh for the redirections.
 * Needs dist/ built first (npx tsc -p tsconfig.json).
 */
import { existsSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { EXIT, exitCodeFor, outputError } from "../../lib/cli/output.js";
import { tinyModel } from "../helpers/models.js";
import { SH_CLI, assertBuilt, runShell, shellQuote } from "./run.js";

const FULL = "llamem: cannot write output: no space left on device\n";
// One thread and greedy: quick and deterministic on a loaded machine.
const FAST = "--threads 1 --temperature 0";

let m = "";

beforeAll(async () => {
  assertBuilt();
  m = shellQuote(await tinyModel("f16"));
}, 120_000);

describe("outputError", () => {
  it("names the system's reason, and maps to the I/O exit code", () => {
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC", errno: -28, syscall: "write" });
    const e = outputError(enospc);
    expect(e.code).toBe("ERR_IO");
    expect(e.message).toBe("cannot write output: no space left on device");
    expect(exitCodeFor(e.code)).toBe(EXIT.IO);
    // Without a known errno, Node's message less its code and syscall.
    const odd = Object.assign(new Error("EWEIRD: something odd, write"), { code: "EWEIRD" });
    expect(outputError(odd).message).toBe("cannot write output: something odd");
  });
});

describe.skipIf(!existsSync("/dev/full"))("stdout on a full disk (/dev/full)", () => {
  it("prompt, streamed and --json: one line on stderr, exit code 9", async () => {
    const [text, json] = await Promise.all([
      runShell(`${SH_CLI} prompt -m ${m} ${FAST} --max-tokens 4 hi > /dev/full`),
      runShell(`${SH_CLI} prompt -m ${m} ${FAST} --max-tokens 4 --json hi > /dev/full`),
    ]);
    for (const r of [text, json]) {
      expect(r.stderr).toBe(FULL);
      expect(r.code).toBe(EXIT.IO);
    }
  }, 60_000);

  it("chat: the first reply ends the chat with the same line and code", async () => {
    const r = await runShell(`${SH_CLI} chat -m ${m} ${FAST} --max-tokens 4 > /dev/full`, { input: "Hello\nHow are you?\n" });
    expect(r.stderr).toBe(FULL);
    expect(r.code).toBe(EXIT.IO);
  }, 60_000);

  it("the commands that print a report or JSON, and --help", async () => {
    const scripts = [
      `${SH_CLI} inspect ${m} > /dev/full`,
      `${SH_CLI} inspect ${m} --json > /dev/full`,
      `${SH_CLI} fit ${m} --json > /dev/full`,
      `${SH_CLI} devices > /dev/full`,
      `${SH_CLI} devices --json > /dev/full`,
      `${SH_CLI} prompt --help > /dev/full`,
    ];
    const results = await Promise.all(scripts.map((s) => runShell(s)));
    results.forEach((r, i) => {
      expect(r.stderr, scripts[i]).toBe(FULL);
      expect(r.code, scripts[i]).toBe(EXIT.IO);
    });
  }, 60_000);
});

describe("stdout closed by its reader", () => {
  it("ends a long generation quietly with exit code 0 (`| head -c 1`)", async () => {
    // sh has no pipefail: the CLI's own status comes back through stderr, after its messages.
    const r = await runShell(`{ ${SH_CLI} prompt -m ${m} ${FAST} --max-tokens 4000 "Once upon a time"; echo "status $?" >&2; } | head -c 1`);
    expect(r.stdout).toHaveLength(1);
    expect(r.stderr).toBe("status 0\n");
  }, 60_000);
});
