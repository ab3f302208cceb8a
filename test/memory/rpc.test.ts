/**
 * llama.cpp RPC on loopback: two `llamem rpc-server` processes, a model loaded with
 * `rpcServers` and every layer offloaded, and its greedy output compared with a local CPU run.
 * The servers are always stopped at the end. Needs dist/ built (npx tsc -p tsconfig.json).
 *
 * Adding RPC servers is process-wide (they become devices of this process), so this file runs
 * on its own, and the local reference run happens before the servers are added.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listDevices, loadModel, type Model } from "../../lib/index.js";
import { tinyModel } from "../helpers/models.js";

const CLI = join(resolve(__dirname, "..", ".."), "dist", "lib", "cli", "index.js");
const PROMPT = "Once upon a time";
const N = 16;

interface Server {
  child: ChildProcess;
  endpoint: string;
  stderr: string[];
}

const servers: Server[] = [];
let path = "";
let localIds: number[] = [];

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

/** Starts `llamem rpc-server` and resolves once it says it listens (bounded by `timeoutMs`). */
async function startServer(timeoutMs = 20_000): Promise<Server> {
  const port = await freePort();
  const endpoint = `127.0.0.1:${port}`;
  const child = spawn(process.execPath, [CLI, "rpc-server", "--port", String(port), "--threads", "1"], { stdio: ["ignore", "pipe", "pipe"] });
  const server: Server = { child, endpoint, stderr: [] };
  servers.push(server); // registered before waiting, so afterAll stops it whatever happens
  child.stderr?.on("data", (b: Buffer) => server.stderr.push(b.toString("utf8")));
  await new Promise<void>((res, rej) => {
    let out = "";
    const timer = setTimeout(() => rej(new Error(`rpc-server on ${endpoint} did not start in ${timeoutMs} ms: ${server.stderr.join("")}`)), timeoutMs);
    child.stdout?.on("data", (b: Buffer) => {
      out += b.toString("utf8");
      if (out.includes(`listening on ${endpoint}`)) {
        clearTimeout(timer);
        res();
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      rej(new Error(`rpc-server exited early (${signal ?? String(code)}): ${server.stderr.join("")}`));
    });
  });
  return server;
}

/** SIGTERM, then SIGKILL after 5 s; resolves with how the server ended. */
function stopServer(s: Server): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((res) => {
    if (s.child.exitCode !== null || s.child.signalCode !== null) {
      res({ code: s.child.exitCode, signal: s.child.signalCode });
      return;
    }
    const timer = setTimeout(() => s.child.kill("SIGKILL"), 5000);
    s.child.once("exit", (code, signal) => {
      clearTimeout(timer);
      res({ code, signal });
    });
    s.child.kill("SIGTERM");
  });
}

async function greedy(model: Model): Promise<number[]> {
  // Flash attention pinned: "auto" is off for a CPU-only model and llama.cpp's choice once layers
  // are offloaded (to RPC servers here), and the two kernels round differently.
  await using ctx = await model.createContext({ contextSize: 256, threads: 1, flashAttention: "on" });
  const ids: number[] = [];
  await ctx.complete(PROMPT, { maxTokens: N, temperature: 0, onToken: (t) => ids.push(t) });
  return ids;
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build it with \`npx tsc -p tsconfig.json\` first`);
  path = await tinyModel("q8_0");
  await using local = await loadModel(path);
  localIds = await greedy(local);
  await Promise.all([startServer(), startServer()]);
}, 60_000);

afterAll(async () => {
  const ends = await Promise.all(servers.map(stopServer));
  // SIGTERM is the normal way to stop the server: it exits 0.
  for (const e of ends) expect(e).toEqual({ code: 0, signal: null });
}, 30_000);

describe("two RPC servers on loopback", () => {
  it("a model loaded with rpcServers and all layers offloaded gives the local CPU run's greedy tokens", async () => {
    expect(servers).toHaveLength(2);
    expect(localIds).toHaveLength(N);
    await using model = await loadModel(path, { rpcServers: servers.map((s) => s.endpoint), gpuLayers: -1 });
    expect(await greedy(model)).toEqual(localIds);
  });

  // The equality above would also hold if everything ran locally: check the servers' devices
  // joined this process and hold the offloaded weights.
  it("the servers take part: their devices are listed and hold the offloaded weights", async () => {
    await using model = await loadModel(path, { rpcServers: servers.map((s) => s.endpoint), gpuLayers: -1 });
    const rpcDevices = listDevices().filter((d) => d.backend === "RPC" || d.name.startsWith("RPC"));
    expect(rpcDevices.length).toBeGreaterThanOrEqual(2);
    await using ctx = await model.createContext({ contextSize: 256, threads: 1 });
    const rows = (await ctx.memory()).rows.filter((r) => r.bufferType.startsWith("RPC"));
    expect(rows.reduce((s, r) => s + r.model, 0)).toBeGreaterThan(0);
  });
});
