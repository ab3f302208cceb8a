/**
 * Child processes for the reliability tests: whatever a case does to llama.cpp, it does it in a
 * process of its own, so an abort shows up as a signal on that child instead of killing the
 * test runner.
 */
import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, existsSync, statSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The package root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
/** The fixture scripts children run. */
export const FIXTURES = join(ROOT, "test", "reliability", "fixtures");

/** What a child did. */
export interface ChildResult {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  /** The signal that ended it (SIGABRT, SIGSEGV, SIGKILL after a timeout), or null. */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

/** Runs `node <args>` with a time limit; SIGKILL when it runs over. */
export function runNode(
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {},
): Promise<ChildResult> {
  const t0 = performance.now();
  return new Promise((done) => {
    const child = spawn(process.execPath, args, {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s.length + stderr.length > 1 << 20 ? "" : s));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, opts.timeoutMs ?? 30_000);
    child.stdin.on("error", () => undefined);
    child.stdin.end(opts.input ?? "");
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, stdout, stderr, timedOut, ms: performance.now() - t0 });
    });
  });
}

/** The last line of stdout parsed as JSON, or undefined. */
export function lastJson<T>(stdout: string): T | undefined {
  const lines = stdout.trim().split("\n").filter((l) => l.startsWith("{"));
  const last = lines[lines.length - 1];
  if (!last) return undefined;
  try {
    return JSON.parse(last) as T;
  } catch {
    return undefined;
  }
}

/** Maps `items` through `fn` with at most `limit` in flight, keeping order. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      out[i] = await fn(items[i] as T, i);
    }
  });
  await Promise.all(lanes);
  return out;
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

let distChecked = false;

/**
 * Children import dist/lib/index.js (what users run). `npm test` compiles it first (pretest);
 * when the tests run on their own (`npx vitest run test/reliability`) and dist is missing or
 * older than lib/, compile it here.
 */
export function ensureDist(): void {
  if (distChecked) return;
  const entry = join(ROOT, "dist", "lib", "index.js");
  const stale = !existsSync(entry) || newestMtime(join(ROOT, "lib")) > newestMtime(join(ROOT, "dist", "lib"));
  if (stale) {
    const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
    const r = spawnSync(process.execPath, [tsc, "-p", join(ROOT, "tsconfig.json")], { cwd: ROOT, encoding: "utf8" });
    if (r.status !== 0 && !existsSync(entry)) throw new Error(`tsc failed:\n${r.stdout}${r.stderr}`);
  }
  distChecked = true;
}

/** A readable description of how a child ended, for assertion messages. */
export function describeEnd(r: ChildResult): string {
  return `code ${r.code} signal ${r.signal}${r.timedOut ? " (timed out)" : ""}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-3000)}`;
}

/** Appends a figure to the file named by LLAMEM_RELIABILITY_REPORT (for docs/reliability.md). */
export function reportFigure(name: string, value: unknown): void {
  const file = process.env.LLAMEM_RELIABILITY_REPORT;
  if (file) appendFileSync(file, `${JSON.stringify({ name, value, at: new Date().toISOString() })}\n`);
}
