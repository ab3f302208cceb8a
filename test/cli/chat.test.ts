/**
 * `llamem chat`, run as a real process on a tiny synthetic model: piped conversations, the
 * commands, save and resume, the memory policy, signals, a terminal, exit codes.
 * Needs dist/ built first (npx tsc -p tsconfig.json).
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tinyModel } from "../helpers/models.js";
import { CLI, assertBuilt, cliEnv, hasScript, runCli, shellQuote, tempDir } from "./run.js";

// One thread and short greedy replies: deterministic, and quick on a loaded machine.
const FAST = ["--threads", "1", "--temperature", "0", "--max-tokens", "4"];

let model = "";
const tmp = tempDir();

beforeAll(async () => {
  assertBuilt();
  model = await tinyModel("f16");
}, 120_000);

afterAll(() => tmp.cleanup());

/** `llamem chat -m <tiny> <FAST> ...args` with `lines` piped on stdin. */
function chat(lines: string[], args: string[] = []) {
  return runCli(["chat", "-m", model, ...FAST, ...args], { input: lines.map((l) => `${l}\n`).join("") });
}

/** The lines of a reply stream (each reply ends with a newline). */
function replyLines(stdout: string): string[] {
  expect(stdout.endsWith("\n")).toBe(true);
  return stdout.slice(0, -1).split("\n");
}

/**
 * A copy of a saved session (magic, u32 LE header length, JSON header, state) with its JSON
 * header edited, as a damaged or hand-made file would have it.
 */
function editHeader(file: Buffer, edit: (header: Record<string, unknown>) => void): Buffer {
  const length = file.readUInt32LE(8);
  const header = JSON.parse(file.subarray(12, 12 + length).toString("utf8")) as Record<string, unknown>;
  edit(header);
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32LE(json.length);
  return Buffer.concat([file.subarray(0, 8), prefix, json, file.subarray(12 + length)]);
}

/** A chat whose stdin stays open, for the signal tests. */
class LiveChat {
  readonly child: ChildProcessWithoutNullStreams;
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [CLI, "chat", "-m", model, ...args], { env: cliEnv(), stdio: ["pipe", "pipe", "pipe"] });
    this.child.stdout.on("data", (b: Buffer) => (this.stdout += b.toString("utf8")));
    this.child.stderr.on("data", (b: Buffer) => (this.stderr += b.toString("utf8")));
    this.child.stdin.on("error", () => undefined);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 30_000);
    this.exited = new Promise((resolve) =>
      this.child.on("close", (code) => {
        clearTimeout(timer);
        resolve(code);
      }),
    );
  }

  /** Resolves once `test` holds for what has been read so far (polling; the process may be slow). */
  async until(test: () => boolean, what: string): Promise<void> {
    for (let t = 0; !test(); t += 20) {
      if (this.child.exitCode !== null || t > 20_000) throw new Error(`waited for ${what}; stdout: ${this.stdout} stderr: ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

describe("llamem chat", () => {
  it("answers each piped line with one reply line, runs /stats, and exits 0 at end of input", async () => {
    const r = await chat(["Hello there", "", "How are you?", "Tell me more", "/stats", "/history"]);
    expect(r.code, r.stderr).toBe(0);
    // The empty line is no message; stdout carries the replies and nothing else.
    const replies = replyLines(r.stdout);
    expect(replies).toHaveLength(3);
    for (const line of replies) expect(line.trim().length).toBeGreaterThan(0);
    expect(r.stdout).not.toContain("> ");
    // /stats: 3 turns of 2 messages, the cache holds what was evaluated, nothing evicted.
    const num = (label: string) => {
      const m = new RegExp(`^${label}\\s+(\\d+)`, "m").exec(r.stderr);
      expect(m, `${label} in ${r.stderr}`).not.toBeNull();
      return Number(m?.[1]);
    };
    expect(num("messages")).toBe(6);
    expect(num("kv tokens")).toBeGreaterThan(10);
    expect(num("kv bytes")).toBeGreaterThan(0);
    expect(num("kv cells")).toBe(num("kv tokens"));
    expect(num("summaries")).toBe(0);
    expect(num("turns evicted")).toBe(0);
    expect(num("tokens generated")).toBe(12);
    // Later turns reuse the cached prefix: fewer tokens evaluated than the cache holds plus the replies' prompts.
    expect(num("tokens evaluated")).toBeLessThan(num("kv tokens"));
    // /history shows the conversation.
    expect(r.stderr).toContain("user: How are you?");
    expect(r.stderr).toMatch(/^assistant: /m);
  }, 30_000);

  it("resumes a /saved session with --load: the next reply is that of an uninterrupted chat", async () => {
    const messages = ["Hello there", "What is a cat?", "Tell me more about cats"];
    const file = join(tmp.dir, "resume.llamem");
    const [whole, fresh] = await Promise.all([chat(messages), chat([messages[2] as string])]);
    expect(whole.code, whole.stderr).toBe(0);
    const first = await chat([messages[0] as string, messages[1] as string, `/save ${file}`]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/saved 4 messages/);
    expect(existsSync(file)).toBe(true);
    const second = await chat([messages[2] as string, "/stats"], ["--load", file]);
    expect(second.code, second.stderr).toBe(0);
    expect(first.stdout + second.stdout).toBe(whole.stdout);
    // The third reply depends on the restored history: without it the model says something else.
    expect(replyLines(second.stdout)[0]).not.toBe(replyLines(fresh.stdout)[0]);
    expect(second.stderr).toMatch(/^messages\s+6 /m);
  }, 30_000);

  it("swaps the session with /load in a running chat", async () => {
    const file = join(tmp.dir, "swap.llamem");
    const saved = await chat(["Hello there", `/save ${file}`]);
    expect(saved.code, saved.stderr).toBe(0);
    const r = await chat(["Something else entirely", "/load " + file, "/stats", "/load " + join(tmp.dir, "missing.llamem")]);
    // Piped, a failed command ends the chat with its error (3: file not found).
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/loaded 2 messages/);
    expect(r.stderr).toMatch(/^messages\s+2 /m);
    expect(r.stderr).toMatch(/^llamem: .*missing\.llamem/m);
  }, 30_000);

  it("piped, /load of a damaged, foreign or another model's file prints the error and exits 4", async () => {
    const file = join(tmp.dir, "to-damage.llamem");
    const saved = await chat(["Hello there", `/save ${file}`]);
    expect(saved.code, saved.stderr).toBe(0);
    const good = readFileSync(file);
    const bad: Record<string, Buffer> = {
      "no-archive.llamem": editHeader(good, (h) => delete h["archive"]),
      "bad-message.llamem": editHeader(good, (h) => (h["history"] = [{ role: "user" }])),
      "other-model.llamem": editHeader(good, (h) => (h["model"] = "0".repeat(64))),
      "truncated.llamem": good.subarray(0, 40),
      "text.llamem": Buffer.from("not a session at all\n"),
    };
    for (const [name, bytes] of Object.entries(bad)) writeFileSync(join(tmp.dir, name), bytes);
    const runs = await Promise.all(
      [...Object.keys(bad).map((n) => join(tmp.dir, n)), model].map((path) => chat(["Something else", `/load ${path}`, "never answered"])),
    );
    for (const [i, r] of runs.entries()) {
      const name = [...Object.keys(bad), "the model"][i];
      // The reply before /load, none after: a script does not carry on as if it had worked.
      expect(r.code, `${name}: ${r.stderr}`).toBe(4);
      expect(replyLines(r.stdout), name).toHaveLength(1);
      expect(r.stderr, name).toMatch(/^llamem: .*\.(llamem|gguf)\b/m);
      expect(r.stderr, name).not.toMatch(/loaded|^\s+at /m);
    }
  }, 60_000);

  it.skipIf(!hasScript())("at a terminal, a failed /load prints the error and the chat goes on", () => {
    const damaged = join(tmp.dir, "damaged-tty.llamem");
    writeFileSync(damaged, "not a session at all\n");
    const cmd = [process.execPath, CLI, "chat", "-m", model, ...FAST, "--quiet"].map(shellQuote).join(" ");
    const input = `Hello\n/load ${damaged}\nStill here?\n/stats\n/exit\n`;
    const env = cliEnv({ COLUMNS: "80", NO_COLOR: "1" });
    const r = spawnSync("script", ["-qec", cmd, "/dev/null"], { env, input, encoding: "utf8", timeout: 30_000 });
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/llamem: not a saved llamem session .*damaged-tty\.llamem/);
    // Both messages were answered: the conversation went on after the failed /load.
    expect(r.stdout).toMatch(/messages\s+4 \(2 turns\)/);
  }, 30_000);

  it("keeps a long chat within a small budget with --strategy slidingWindow, reporting prunes with --verbose", async () => {
    const lines = Array.from({ length: 30 }, (_, i) => `This is message number ${i + 1}`);
    const archive = join(tmp.dir, "archive.jsonl");
    const args = ["--budget", "96", "--strategy", "slidingWindow", "--keep-last", "1", "--archive", archive];
    const [verbose, quiet] = await Promise.all([chat([...lines, "/stats"], [...args, "--verbose"]), chat(lines, args)]);
    expect(verbose.code, verbose.stderr).toBe(0);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(replyLines(verbose.stdout)).toHaveLength(30);
    expect(quiet.stdout).toBe(verbose.stdout);
    const prunes = verbose.stderr.split("\n").filter((l) => l.startsWith("llamem: memory prune: "));
    expect(prunes.length).toBeGreaterThanOrEqual(20);
    for (const p of prunes) {
      const m = /^llamem: memory prune: (\d+) → (\d+) tokens, [\d.]+ ms, kv (not )?reused/.exec(p);
      expect(m, p).not.toBeNull();
      expect(Number(m?.[2])).toBeLessThan(Number(m?.[1]));
      expect(Number(m?.[2])).toBeLessThanOrEqual(96);
    }
    expect(verbose.stderr).toMatch(/^turns evicted\s+(2[89])\b/m);
    // Without --verbose nothing about memory is said.
    expect(quiet.stderr).toBe("");
    // Evicted turns went to the archive file (both runs appended to it).
    const archived = readFileSync(archive, "utf8").trim().split("\n");
    expect(archived.length).toBeGreaterThanOrEqual(2 * 28);
  }, 30_000);

  it("--recall with an archive file: /recall shows the archived turns that match, from an earlier run too", async () => {
    const archive = join(tmp.dir, "recall-archive.jsonl");
    const fact = "The code for the blue vault is river stone garden.";
    const fillers = Array.from({ length: 8 }, (_, i) => `Tell me about number ${i} and the colour of the sky.`);
    const args = ["--budget", "96", "--archive", archive, "--recall", "--recall-min-score", "-1"];
    const first = await chat([fact, ...fillers, "/recall blue vault code"], args);
    expect(first.code, first.stderr).toBe(0);
    const recalled = first.stderr.split("\n").filter((l) => l.startsWith("llamem: recall "));
    expect(recalled.length).toBeGreaterThan(0);
    expect(recalled.join("\n")).toMatch(/^llamem: recall -?\d\.\d{3}: user: /m);
    // A new run on the same archive file recalls its turns: the fact is among them.
    const second = await chat([`/recall ${fact}`], args);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr.split("\n").find((l) => l.startsWith("llamem: recall "))).toContain("blue vault");
    // With --recall-store, the turns and vectors persist in SQLite: a later run recalls them without the JSONL file.
    const store = join(tmp.dir, "recall.sqlite");
    const storeArgs = ["--budget", "96", "--recall", "--recall-min-score", "-1", "--recall-store", store];
    const third = await chat([fact, ...fillers, "/stats"], storeArgs);
    expect(third.code, third.stderr).toBe(0);
    expect(third.stderr).toMatch(/^recall\s+\d+ archived turns, embedding context /m);
    const fourth = await chat([`/recall ${fact}`], storeArgs);
    expect(fourth.stderr.split("\n").find((l) => l.startsWith("llamem: recall "))).toContain("blue vault");
    expect((await chat(["hi"], ["--recall-store", store])).code).toBe(2);
    // Without --recall the command says what it needs.
    const without = await chat(["/recall anything"]);
    expect(without.stderr).toMatch(/recall\(\) needs a session with memory.recall/);
  }, 60_000);

  it("--recall-store on a damaged or unopenable file warns and chats on without recall", async () => {
    const damaged = join(tmp.dir, "damaged.sqlite");
    writeFileSync(damaged, Buffer.alloc(64 * 1024, 0x5a));
    const r = await chat(["Hello", "/stats"], ["--recall", "--recall-store", damaged]);
    expect(r.code, r.stderr).toBe(0);
    expect(replyLines(r.stdout)).toHaveLength(1);
    expect(r.stderr).toMatch(/^llamem: warning: --recall-store: .*damaged\.sqlite is not an archive store, or is damaged .*\(ERR_ARCHIVE_INVALID\); chatting on without recall$/m);
    // No recall in this chat: /stats has no recall row.
    expect(r.stderr).toMatch(/^messages\s/m);
    expect(r.stderr).not.toMatch(/^recall\s/m);
    const missing = await chat(["Hello"], ["--recall", "--recall-store", join(tmp.dir, "no-such-dir", "store.sqlite")]);
    expect(missing.code, missing.stderr).toBe(0);
    expect(replyLines(missing.stdout)).toHaveLength(1);
    expect(missing.stderr).toMatch(/^llamem: warning: --recall-store: .*\(ERR_IO\); chatting on without recall$/m);
  }, 60_000);

  it("ends at /exit with 0 and prints a help line for an unknown command", async () => {
    const r = await chat(["/frobnicate", "Hello", "//usr is a directory", "/history", "/exit", "never sent"]);
    expect(r.code, r.stderr).toBe(0);
    expect(replyLines(r.stdout)).toHaveLength(2);
    // "//" escapes a message that starts with a slash.
    expect(r.stderr).toContain("user: /usr is a directory");
    expect(r.stderr).toMatch(/^llamem: unknown command \/frobnicate; commands: \/save FILE/m);
  }, 30_000);

  it("stops a reply on Ctrl-C and goes on; Ctrl-C at the prompt exits 130", async () => {
    // Greedy, this reply runs for seconds: long enough to interrupt.
    const c = new LiveChat(["--threads", "1", "--temperature", "0", "--max-tokens", "4000"]);
    try {
      await interruptAndExit(c);
    } finally {
      c.child.kill("SIGKILL"); // a no-op once it has exited
    }
  }, 30_000);

  async function interruptAndExit(c: LiveChat): Promise<void> {
    c.child.stdin.write("Hello\n");
    await c.until(() => c.stdout.length > 0, "the reply to start");
    c.child.kill("SIGINT");
    await c.until(() => c.stderr.includes("reply interrupted") && c.stdout.endsWith("\n"), "the reply to stop");
    // Still chatting: the interrupted turn left the history as it was.
    c.child.stdin.write("/stats\n");
    await c.until(() => /^tokens generated/m.test(c.stderr), "/stats");
    expect(c.stderr).toMatch(/^messages\s+0 /m);
    expect(c.child.exitCode).toBeNull();
    c.child.kill("SIGINT");
    expect(await c.exited).toBe(130);
  }

  it.skipIf(!hasScript())("shows a \"> \" prompt on a terminal", () => {
    const cmd = [process.execPath, CLI, "chat", "-m", model, ...FAST, "--quiet"].map(shellQuote).join(" ");
    const r = spawnSync("script", ["-qec", cmd, "/dev/null"], { env: cliEnv({ COLUMNS: "80" }), input: "Hello\n/exit\n", encoding: "utf8", timeout: 30_000 });
    expect(r.status, r.stdout).toBe(0);
    // The prompt, then the reply. (Whether it is drawn again after the reply depends on when
    // `script` passes on the end of its input, which closes the chat.)
    expect(r.stdout).toMatch(/> [^]*Hello[^]*\n/);
    expect(r.stdout).not.toMatch(/llamem:/);
  }, 30_000);

  it("shows examples in --help", async () => {
    const r = await runCli(["chat", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Examples:\n\s+\$ llamem chat /);
    for (const opt of ["--budget", "--strategy", "--keep-last", "--archive", "--load", "--system"]) expect(r.stdout).toContain(opt);
  }, 30_000);

  describe("exit codes", () => {
    it("2 for a bad option value", async () => {
      for (const args of [["--strategy", "forgetful"], ["--budget", "0"], ["--budget", "1.5"], ["--keep-last", "-1"]]) {
        const r = await runCli(["chat", "-m", model, ...args]);
        expect(r.code, args.join(" ")).toBe(2);
        expect(r.stderr, args.join(" ")).toMatch(/^llamem: /);
        expect(r.stdout).toBe("");
      }
    }, 30_000);

    it("3 for a missing model and a missing --load file", async () => {
      const r = await runCli(["chat", "-m", join(tmp.dir, "missing.gguf")], { input: "hi\n" });
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/^llamem: .*missing\.gguf/);
      expect(r.stdout).toBe("");
      const load = await chat(["hi"], ["--load", join(tmp.dir, "missing.llamem")]);
      expect(load.code).toBe(3);
      expect(load.stdout).toBe("");
    }, 30_000);
  });
});
