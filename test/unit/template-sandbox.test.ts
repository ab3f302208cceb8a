/**
 * The chat template sandbox against hostile templates (model files may be hostile): endless
 * loops, huge outputs, deep recursion, memory exhaustion, attempts at I/O or at host objects.
 * Each ends in ERR_TEMPLATE within its limit, the process lives on, and the next render works.
 */
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { renderTemplate } from "../../lib/chat/sandbox.js";

const FAST = { timeoutMs: 1500 };

async function outcome(source: string, variables: Record<string, unknown> = {}, limits = FAST): Promise<{ output?: string; code?: string; message?: string; ms: number }> {
  const t0 = performance.now();
  try {
    const output = await renderTemplate(source, variables, new Date(), limits);
    return { output, ms: performance.now() - t0 };
  } catch (err) {
    const e = err as { code?: string; message: string };
    return { code: e.code, message: e.message, ms: performance.now() - t0 };
  }
}

describe("chat template sandbox", () => {
  it("renders an ordinary template with the variables it is given", async () => {
    const r = await outcome("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{{ strftime_now('%Y') }}", {
      bos_token: "<s>",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(r.output).toBe(`<s><user>hi${new Date().getFullYear()}`);
  });

  const hostile: [string, string, RegExp][] = [
    ["two nested loops of 100,000", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", /took over 1500 ms/],
    ["range of a billion", "{% for i in range(1000000000) %}x{% endfor %}", /range\(\) of 1000000000 items/],
    ["a string doubled forty times", "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}", /string length/],
    ["a list grown until the heap is gone", "{% set ns = namespace(a=[1]) %}{% for i in range(60) %}{% set ns.a = ns.a + ns.a %}{% endfor %}{{ ns.a|length }}", /heap/],
    ["deep nesting", "{{ " + "(".repeat(20000) + "1" + ")".repeat(20000) + " }}", /call stack/],
    ["raise_exception", "{{ raise_exception('roles must alternate') }}", /roles must alternate/],
    ["include a file", "{% include '/etc/passwd' %}", /./],
    ["a syntax error", "{% if %}", /./],
    ["an unknown filter", "{{ 'x' | no_such_filter }}", /./],
  ];

  for (const [name, source, message] of hostile) {
    it(`${name}: ERR_TEMPLATE, and the next render works`, async () => {
      // The heap limit must be reached before the time limit, even on a slow machine.
      const r = await outcome(source, {}, message.source === "heap" ? { timeoutMs: 20_000 } : FAST);
      expect(r.code, `${name}: ${r.output?.slice(0, 80)}`).toBe("ERR_TEMPLATE");
      expect(r.message).toMatch(message);
      // Well within the time limit plus the cost of a new thread.
      expect(r.ms).toBeLessThan(25_000);
      expect((await outcome("{{ 1 + 1 }}")).output).toBe("2");
    });
  }

  it("output over the limit is ERR_TEMPLATE", async () => {
    const r = await outcome("{% for i in range(1000) %}0123456789{% endfor %}", {}, { ...FAST, maxOutputChars: 5000 } as typeof FAST);
    expect(r.code).toBe("ERR_TEMPLATE");
    expect(r.message).toMatch(/10000 characters.*limit of 5000/);
  });

  it("reaches no host object or global", async () => {
    const r = await outcome(
      "[{{ messages.constructor }}][{{ ''.constructor }}][{{ messages.__proto__ }}][{{ process }}][{{ globalThis }}][{{ require }}]",
      { messages: [] },
    );
    // Either nothing (undefined renders empty) or a refusal; never a function's source or an object.
    if (r.code === undefined) expect(r.output).toBe("[][][][][][]");
    else expect(r.code).toBe("ERR_TEMPLATE");
  });

  it("renders that are pending when the thread is stopped fail, and later ones work", async () => {
    const slow = outcome("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
    const queued = outcome("{{ 'queued' }}");
    const [a, b] = await Promise.all([slow, queued]);
    expect(a.code).toBe("ERR_TEMPLATE");
    // The queued render was behind the slow one in the same thread: it fails with it (and says so).
    expect(b.code === "ERR_TEMPLATE" || b.output === "queued").toBe(true);
    expect((await outcome("{{ 'after' }}")).output).toBe("after");
  });

  it("variables that cannot cross to the thread are ERR_TEMPLATE, not a crash", async () => {
    const r = await outcome("{{ x }}", { x: () => 1 });
    expect(r.code).toBe("ERR_TEMPLATE");
  });
});

describe("the sandbox's thread and the process", () => {
  const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
  const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

  it("lets the process exit after a render, though the thread wrote to its stderr (which reaches the process's)", () => {
    // With the thread's output taken apart, one write kept its port referenced: the process never exited.
    const r = spawnSync(process.execPath, ["--import", pathToFileURL(join(fixtures, "worker-writes.mjs")).href, join(fixtures, "render-once.mjs")], {
      cwd: root,
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(r.error).toBeUndefined();
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("1+2\n");
    expect(r.stderr).toContain("a line from a worker thread");
  });

  it("a thread started ahead of any render (as createSession does) neither ends the process early nor keeps it alive", () => {
    // Its "message" listener referenced its port until a render unreferenced the thread: a
    // process that created a session and never prompted did not exit (Node 20). And the thread
    // being unreferenced, the wait for it to run must hold the process itself.
    const r = spawnSync(process.execPath, [join(fixtures, "start-only.mjs")], { cwd: root, encoding: "utf8", timeout: 60_000 });
    expect(r.error).toBeUndefined();
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("started\n");
  });
});
