/**
 * Spawns the compiled CLI (dist/lib/cli/index.js) for the tests in test/cli. The CLI tests run
 * the real bin, so dist/ must be built first: `npx tsc -p tsconfig.json` (npm run build:ts).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The compiled bin. */
export const CLI = join(ROOT, "dist", "lib", "cli", "index.js");

/** Throws a clear message when dist/ has not been built (rather than N confusing failures). */
export function assertBuilt(): void {
  if (!existsSync(CLI)) {
    throw new Error(`${CLI} is missing: build it with \`npx tsc -p tsconfig.json\` before running the CLI tests`);
  }
}

/** What a CLI run produced. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options of {@link runCli}. */
export interface RunOptions {
  /** Written to stdin, then stdin is closed (closed at once when absent). */
  input?: string;
  /** Extra environment variables (LLAMEM_MODEL and LLAMEM_LOG are cleared unless given). */
  env?: Record<string, string>;
  /** Called once with the child right after the first stdout bytes arrive. */
  onFirstStdout?: (child: ChildProcess) => void;
  /** Kill the child after this many ms (default 60 s). */
  timeoutMs?: number;
}

/** A clean environment: no model or log level leaking in from the developer's shell. */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  if (!("LLAMEM_MODEL" in extra)) delete env["LLAMEM_MODEL"];
  if (!("LLAMEM_LOG" in extra)) delete env["LLAMEM_LOG"];
  return env;
}

/** Runs `node dist/lib/cli/index.js ...args` with piped stdio. */
export function runCli(args: string[], options: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: cliEnv(options.env), stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let first = true;
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
    child.stdout.on("data", (b: Buffer) => {
      out.push(b);
      if (first) {
        first = false;
        options.onFirstStdout?.(child);
      }
    });
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") });
    });
    child.stdin.on("error", () => undefined); // the CLI may exit before reading its stdin
    child.stdin.end(options.input ?? "");
  });
}

/** Quotes a word for sh. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** True when util-linux `script` is available to give a command a terminal. */
export function hasScript(): boolean {
  return spawnSync("script", ["--version"], { stdio: "ignore" }).status === 0;
}

/**
 * Runs the CLI under `script -qec`, so its stdin, stdout and stderr are a terminal; returns
 * everything the terminal showed (stdout and stderr mixed) and the CLI's exit code.
 */
export function runCliInTerminal(args: string[], env: Record<string, string> = {}): { code: number | null; output: string } {
  const cmd = [process.execPath, CLI, ...args].map(shellQuote).join(" ");
  const r = spawnSync("script", ["-qec", cmd, "/dev/null"], {
    env: cliEnv({ COLUMNS: "80", ...env }),
    input: "",
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status, output: r.stdout };
}

/** A fresh temporary directory and a function that removes it. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "llamem-cli-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The CLI in a {@link runShell} script: `$SH_CLI prompt ...`. */
export const SH_CLI = '"$LLAMEM_TEST_NODE" "$LLAMEM_TEST_CLI"';

/**
 * Runs `sh -c script` (for redirections such as `> /dev/full`, and pipes) in the CLI's clean
 * environment. The script runs the CLI as {@link SH_CLI}; quote paths in it with {@link shellQuote}.
 */
export function runShell(script: string, options: { input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const env = cliEnv({ LLAMEM_TEST_NODE: process.execPath, LLAMEM_TEST_CLI: CLI });
    const child = spawn("sh", ["-c", script], { env, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") });
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(options.input ?? "");
  });
}
