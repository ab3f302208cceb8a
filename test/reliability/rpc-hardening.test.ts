/**
 * Issue 12, rows 1 and 12: llama.cpp's RPC backend aborts the process on a failed connect, send
 * or receive. Every scenario runs in a child process (fixtures/rpc-child.mjs) that must exit 0
 * by itself: a SIGABRT there is the bug coming back. What is checked: an endpoint nothing listens
 * on, one that does not resolve, one that never answers and one that is not an RPC server are
 * ERR_IO naming it; a server killed between two generations fails the next generation, state
 * save and context with ERR_IO naming it, and dispose, listDevices and later local loads go on;
 * serveRpc on a port in use rejects with ERR_IO. (A server lost in the middle of a decode still
 * aborts: docs/reliability.md.)
 */
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tinyModel } from "../helpers/models.js";
import { FIXTURES, describeEnd, ensureDist, runNode, type ChildResult } from "./helpers/child.js";

interface Step {
  step: string;
  ok: boolean;
  typed?: boolean;
  code?: string;
  message?: string;
  endpoint?: string;
  hung?: boolean;
  bytes?: number;
}

let model = "";

beforeAll(async () => {
  ensureDist();
  model = await tinyModel("q8_0");
});

async function scenario(name: string): Promise<{ r: ChildResult; steps: Map<string, Step> }> {
  const r = await runNode([join(FIXTURES, "rpc-child.mjs"), name, model], { timeoutMs: 90_000 });
  const steps = new Map<string, Step>();
  for (const line of r.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const s = JSON.parse(line) as Step & { done?: boolean };
    if (s.step) steps.set(s.step, s);
  }
  // The child lives to the end and exits by itself: no SIGABRT from ggml-rpc.
  expect(r.signal, describeEnd(r)).toBeNull();
  expect(r.timedOut, describeEnd(r)).toBe(false);
  expect(r.code, describeEnd(r)).toBe(0);
  expect(r.stdout).toContain('{"done":true}');
  return { r, steps };
}

function expectIo(s: Step | undefined, endpoint: string): void {
  expect(s, endpoint).toBeDefined();
  expect(s?.ok).toBe(false);
  expect(s?.typed).toBe(true);
  expect(s?.code).toBe("ERR_IO");
  expect(s?.message).toContain(endpoint);
}

describe("row 1: RPC servers that cannot be used", () => {
  it("nothing listening, an unresolvable host, a silent peer and a non-RPC peer are ERR_IO naming the endpoint", async () => {
    const { steps } = await scenario("unreachable");
    expectIo(steps.get("refused"), "127.0.0.1:1");
    expectIo(steps.get("unresolvable"), "no-such-host.invalid:50052");
    expectIo(steps.get("silent"), steps.get("silent")?.endpoint as string);
    expectIo(steps.get("not-rpc"), steps.get("not-rpc")?.endpoint as string);
    expect(steps.get("local")?.ok).toBe(true);
  });

  it("a server killed between two generations: ERR_IO naming it, and the process lives on", async () => {
    const { steps } = await scenario("killed");
    const endpoint = steps.get("endpoint")?.endpoint as string;
    expect(steps.get("generate-before")?.ok).toBe(true);
    expect(steps.get("weights-on-rpc")?.ok).toBe(true);
    for (const s of ["generate-after", "evaluate-after", "save-after", "context-after", "add-again"]) expectIo(steps.get(s), endpoint);
    for (const s of ["devices-after", "dispose-context", "dispose-model", "local-after"]) expect(steps.get(s)?.ok, s).toBe(true);
  });
});

describe("row 12: serveRpc on a port in use", () => {
  it("rejects with ERR_IO, from lib's check and from the native server thread alike", async () => {
    const { steps } = await scenario("serve-busy");
    for (const s of ["serveRpc", "native"]) {
      const step = steps.get(s);
      expect(step?.hung, s).toBeUndefined();
      expect(step?.ok, s).toBe(false);
      expect(step?.code, s).toBe("ERR_IO");
    }
  });
});
