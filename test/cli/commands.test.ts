/**
 * `llamem fit`, `devices`, `quantize`, `bench` and `rpc-server`, run as real processes on the
 * tiny synthetic model. Needs dist/ built first (npx tsc -p tsconfig.json).
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidArgumentError } from "commander";
import { estimateMemory } from "../../lib/index.js";
import type { FitJsonResult } from "../../lib/cli/fit.js";
import { parseBytes } from "../../lib/cli/fit.js";
import type { BenchJsonResult } from "../../lib/cli/bench.js";
import { sampleStats } from "../../lib/cli/bench.js";
import { isLoopback } from "../../lib/cli/rpc-server.js";
import { EXIT } from "../../lib/cli/output.js";
import { tinyModel } from "../helpers/models.js";
import { CLI, assertBuilt, cliEnv, hasScript, runCli, runCliInTerminal, tempDir } from "./run.js";

let f16 = "";
let q8 = "";
const tmp = tempDir();

beforeAll(async () => {
  assertBuilt();
  f16 = await tinyModel("f16");
  q8 = await tinyModel("q8_0");
}, 120_000);

afterAll(() => tmp.cleanup());

describe("byte sizes", () => {
  it("accepts plain numbers and binary or SI units", () => {
    expect(parseBytes("536870912")).toBe(536870912);
    expect(parseBytes("512M")).toBe(512 * 2 ** 20);
    expect(parseBytes("512MiB")).toBe(512 * 2 ** 20);
    expect(parseBytes("8G")).toBe(8 * 2 ** 30);
    expect(parseBytes("8g")).toBe(8 * 2 ** 30);
    expect(parseBytes("1.5GiB")).toBe(1.5 * 2 ** 30);
    expect(parseBytes("2 TiB")).toBe(2 * 2 ** 40);
    expect(parseBytes("4k")).toBe(4096);
    expect(parseBytes("4KB")).toBe(4000);
    expect(parseBytes("1.5GB")).toBe(1.5e9);
    expect(parseBytes("100b")).toBe(100);
    expect(parseBytes(".5K")).toBe(512);
  });

  it("rejects everything else", () => {
    for (const bad of ["", "abc", "-1", "0", "0M", "1X", "1.2.3G", "G", "1 e3", "1MiBs", "Infinity", "1e400"]) {
      expect(() => parseBytes(bad), bad).toThrow(InvalidArgumentError);
    }
  });
});

describe("llamem fit", () => {
  it("--json prints one object: the choice, the reasons and the bytes per device", async () => {
    const r = await runCli(["fit", q8, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    const j = JSON.parse(r.stdout) as FitJsonResult;
    expect(j).toMatchObject({ fits: true, model: q8, gpuLayers: 0, layers: 2, contextSize: 4096, trainedContextSize: 4096 });
    expect(j.budget).toEqual({ maxRam: null, maxVram: null });
    expect(j.reasons).toContain("contextSize 4096: the trained context fits");
    expect(j.devices?.map((d) => d.device)).toEqual(["CPU"]);
    const cpu = j.devices?.[0];
    expect(cpu?.weights).toBeGreaterThan(0);
    expect(cpu?.kv).toBe(2 * 64 * 2 * 4096);
    expect(cpu?.compute).toBeGreaterThan(0);
    expect(j.total).toBe((j.weights ?? 0) + (j.kv ?? 0) + (j.compute ?? 0));
    expect(r.stderr).toBe("");
  });

  it("--max-ram small picks a smaller context, and says why", async () => {
    const at1024 = await estimateMemory(q8, { contextSize: 1024 });
    const maxRam = at1024.total + 1000;
    const r = await runCli(["fit", q8, "--max-ram", String(maxRam), "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as FitJsonResult;
    expect(j.contextSize).toBe(1024);
    expect(j.total).toBeLessThanOrEqual(maxRam);
    expect(j.budget.maxRam).toBe(maxRam);
    expect(j.reasons?.join("\n")).toMatch(/largest that fits the budget/);
  });

  it("prints a readable report with a per-device table", async () => {
    const r = await runCli(["fit", q8, "--ctx", "2048", "--kv-type", "q8_0", "--max-ram", "1GiB"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/choice\s+context 2048 tokens, 0 of 3 layers on the GPU/);
    expect(r.stdout).toContain("contextSize 2048: as requested");
    expect(r.stdout).toMatch(/^device\s+weights\s+KV\s+compute\s+total\s+budget$/m);
    expect(r.stdout).toMatch(/^CPU\s+[\d.]+ MiB\s+272 KiB\s+[\d.]+ MiB\s+[\d.]+ MiB\s+1\.00 GiB$/m);
  });

  it("exits 8 when nothing fits; --json still prints one object saying why", async () => {
    const r = await runCli(["fit", q8, "--max-ram", "1M", "--json"]);
    expect(r.code).toBe(8);
    const j = JSON.parse(r.stdout) as FitJsonResult;
    expect(j.fits).toBe(false);
    expect(j.error?.code).toBe("ERR_INSUFFICIENT_MEMORY");
    expect(r.stderr).toMatch(/^llamem: contextSize 256 with 0 GPU layers needs/);
  });

  it("usage errors exit 2, a missing file 3", async () => {
    expect((await runCli(["fit", q8, "--max-ram", "lots"])).code).toBe(2);
    expect((await runCli(["fit", q8, "--ctx", "0"])).code).toBe(2);
    expect((await runCli(["fit", q8, "--gpu-layers", "some"])).code).toBe(2);
    expect((await runCli(["fit", join(tmp.dir, "missing.gguf")])).code).toBe(3);
  });
});

describe("llamem devices", () => {
  it("lists a CPU device with its memory", async () => {
    const json = await runCli(["devices", "--json"]);
    expect(json.code, json.stderr).toBe(0);
    const devices = JSON.parse(json.stdout) as { name: string; type: string; free: number; total: number }[];
    const cpu = devices.find((d) => d.type === "cpu");
    expect(cpu).toBeDefined();
    expect(cpu?.total).toBeGreaterThan(0);
    expect(cpu?.free).toBeGreaterThan(0);
    const table = await runCli(["devices"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^name\s+type\s+backend\s+free\s+total\s+description$/m);
    expect(table.stdout).toMatch(new RegExp(`^${cpu?.name ?? "CPU"}\\s+cpu\\s`, "m"));
  });
});

describe("llamem quantize", () => {
  it("quantizes f16 to q4_0, and the result runs", async () => {
    const out = join(tmp.dir, "tiny-q4_0.gguf");
    const q = await runCli(["quantize", f16, out, "q4_0", "--threads", "1"]);
    expect(q.code, q.stderr).toBe(0);
    expect(q.stdout).toMatch(/^wrote .*tiny-q4_0\.gguf: q4_0, [\d.]+ MiB \(from [\d.]+ MiB\) in [\d.]+ s\n$/);
    // Not a terminal: no spinner, nothing on stderr.
    expect(q.stderr).toBe("");
    const inspect = await runCli(["inspect", out, "--json"]);
    expect(inspect.stdout).toMatch(/q4_0/i);
    const p = await runCli(["prompt", "-m", out, "--max-tokens", "4", "--temperature", "0", "--threads", "1", "Hello"]);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout.length).toBeGreaterThan(0);
  });

  it("distinct exit codes: bad type 2, missing input 3, not a GGUF 4, llama.cpp refusing 1", async () => {
    const out = join(tmp.dir, "x.gguf");
    const badType = await runCli(["quantize", f16, out, "q3_z"]);
    expect(badType.code).toBe(2);
    expect(badType.stderr).toMatch(/Allowed choices are .*q4_k_m/);
    const missing = await runCli(["quantize", join(tmp.dir, "missing.gguf"), out, "q4_0"]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/not found/);
    expect((await runCli(["quantize", f16, join(tmp.dir, "no", "such", "dir", "x.gguf"), "q4_0"])).code).toBe(3);
    const text = join(tmp.dir, "text.gguf");
    writeFileSync(text, "definitely not a model");
    expect((await runCli(["quantize", text, out, "q4_0"])).code).toBe(4);
    // Re-quantizing a quantized model is refused by llama.cpp unless asked for.
    const requant = await runCli(["quantize", q8, out, "q4_0", "--threads", "1"]);
    expect(requant.code).toBe(5);
    expect(requant.stderr).toMatch(/--allow-requantize/);
    expect((await runCli(["quantize", f16, f16, "q4_0"])).code).toBe(2);
  });

  it.skipIf(!hasScript())("shows a spinner on a terminal, and erases it", () => {
    const out = join(tmp.dir, "tty-q8_0.gguf");
    const r = runCliInTerminal(["quantize", f16, out, "q8_0", "--threads", "1"]);
    expect(r.code, r.output).toBe(0);
    expect(r.output).toMatch(/quantizing to q8_0 [\d.]+ s/);
    expect(r.output).toContain("\r\x1b[2K");
    expect(r.output).toMatch(/wrote .*tty-q8_0\.gguf: q8_0/);
  });
});

describe("llamem bench", () => {
  it("--reps 1 --pp 32 --tg 8 --json reports tokens per second", async () => {
    const r = await runCli(["bench", "-m", q8, "--reps", "1", "--pp", "32", "--tg", "8", "--threads", "1", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as BenchJsonResult;
    expect(j.tests.map((t) => t.name)).toEqual(["pp32", "tg8"]);
    for (const t of j.tests) {
      expect(t.samples).toHaveLength(1);
      expect(t.median).toBeGreaterThan(0);
      expect(Number.isFinite(t.median)).toBe(true);
      expect(t.min).toBe(t.median);
      expect(t.stddev).toBe(0);
    }
    expect(j).toMatchObject({ threads: 1, reps: 1, kvType: "f16", gpuLayers: 0 });
    expect(j.model.parameters).toBeGreaterThan(0);
    expect(r.stderr).toBe("");
  });

  it("prints a table, one row per test", async () => {
    const r = await runCli(["bench", "-m", q8, "--reps", "2", "--pp", "16", "--tg", "0", "--threads", "1"]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^model\s+size\s+params\s+threads\s+test\s+t\/s \(median\)/);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/\s1\s+pp16\s+[\d.]+\s/);
  });

  it("usage errors exit 2", async () => {
    expect((await runCli(["bench"])).code).toBe(2);
    expect((await runCli(["bench", "-m", q8, "--pp", "0", "--tg", "0"])).code).toBe(2);
    expect((await runCli(["bench", "-m", q8, "--reps", "0"])).code).toBe(2);
  });

  it("summarizes samples: median, mean, sample stddev", () => {
    expect(sampleStats([3, 1, 2])).toEqual({ median: 2, mean: 2, stddev: 1, min: 1, max: 3 });
    expect(sampleStats([4, 1, 3, 2]).median).toBe(2.5);
    expect(sampleStats([5]).stddev).toBe(0);
  });
});

describe("llamem rpc-server", () => {
  it("refuses 0.0.0.0 (and other non-loopback addresses) without --allow-remote", async () => {
    const r = await runCli(["rpc-server", "--host", "0.0.0.0"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/refusing to listen on 0\.0\.0\.0: the RPC protocol has no authentication/);
    expect(r.stdout).toBe("");
    expect((await runCli(["rpc-server", "--host", "192.168.1.10"])).code).toBe(2);
    expect((await runCli(["rpc-server", "--port", "70000"])).code).toBe(2);
    expect(isLoopback("127.0.0.1") && isLoopback("127.1.2.3") && isLoopback("localhost")).toBe(true);
    expect(isLoopback("0.0.0.0") || isLoopback("10.0.0.1") || isLoopback("::")).toBe(false);
  });

  it("on loopback: warns on stderr, prints one line once it listens, exits 0 on SIGTERM", async () => {
    const port = await new Promise<number>((res) => {
      const s = createServer().listen(0, "127.0.0.1", () => {
        const a = s.address();
        s.close(() => res(typeof a === "object" && a ? a.port : 0));
      });
    });
    const child = spawn(process.execPath, [CLI, "rpc-server", "--port", String(port), "--threads", "1"], {
      env: cliEnv(), stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString("utf8")));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once("exit", (code, signal) => res({ code, signal })));
    const kill = setTimeout(() => child.kill("SIGKILL"), 30_000);
    try {
      await new Promise<void>((res, rej) => {
        child.stdout.on("data", (b: Buffer) => {
          stdout += b.toString("utf8");
          if (stdout.includes("\n")) res();
        });
        void exited.then(() => rej(new Error(`rpc-server exited early: ${stderr}`)));
      });
      expect(stdout).toBe(`llamem rpc-server listening on 127.0.0.1:${port}\n`);
      expect(stderr).toMatch(/warning: the RPC protocol has no authentication or encryption/);
      // A second server on the same port fails clearly, as an I/O failure (ERR_IO).
      const again = await runCli(["rpc-server", "--port", String(port)]);
      expect(again.code).toBe(EXIT.IO);
      expect(again.stderr).toMatch(/port is in use/);
      child.kill("SIGTERM");
      expect(await exited).toEqual({ code: 0, signal: null });
      expect(stdout.split("\n").filter(Boolean)).toHaveLength(1);
    } finally {
      clearTimeout(kill);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  });
});

describe("help", () => {
  it.each(["fit", "devices", "quantize", "bench", "rpc-server"])("llamem %s --help has examples", async (cmd) => {
    const r = await runCli([cmd, "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Examples:");
    expect(r.stdout).toContain(`$ llamem ${cmd}`);
  });
});
