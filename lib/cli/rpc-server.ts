/**
 * `llamem rpc-server`: serves this machine's devices (its GPUs, else its CPU) to llama.cpp RPC
 * clients, such as `loadModel(path, { rpcServers: ["host:port"] })` on another machine.
 *
 * The protocol has no authentication and no encryption: whoever can connect can allocate memory
 * and run computations on this machine. The command therefore listens on loopback unless told
 * otherwise, refuses non-loopback addresses without --allow-remote, and always says so on stderr.
 *
 * The native server runs in a child process. llama.cpp's server loop never returns and holds a
 * libuv pool thread, so a process running it cannot exit normally (process.exit waits for that
 * thread forever); and it prints its own banner and per-connection log with printf. In a child,
 * a signal stops it at once, and this process's stdout carries exactly one line.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { connect, createServer, isIP } from "node:net";
import type { Command } from "commander";
import { LlamemError } from "../errors.js";
import { defaultThreads } from "../system.js";
import { CliExit, EXIT, styleFor, trapSignals, usageError } from "./output.js";
import { intArg } from "./options.js";

interface RpcServerOptions {
  host: string;
  port: number;
  threads?: number;
  allowRemote?: boolean;
  verbose?: boolean;
}

/** How long to wait for the native server to accept connections before giving up. */
const LISTEN_TIMEOUT_MS = 15_000;

/** True for addresses only this machine can reach: 127.0.0.0/8 and "localhost". */
export function isLoopback(host: string): boolean {
  return host === "localhost" || (isIP(host) === 4 && host.startsWith("127."));
}

/** Resolves once something accepts TCP connections on host:port (probing, then closing at once). */
function probe(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.setTimeout(1000, () => done(false));
  });
}

/** Fails early with a clear message when the port is taken (llama.cpp only prints to stderr). */
function checkPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => {
      const why = err.code === "EADDRINUSE" ? "the port is in use" : err.code === "EADDRNOTAVAIL" ? "no such local address" : err.message;
      reject(new LlamemError("ERR_IO", `cannot listen on ${host}:${port}: ${why}`, { cause: err }));
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve()));
  });
}

/** Registers `llamem rpc-server`. */
export function registerRpcServer(program: Command): Command {
  return program
    .command("rpc-server")
    .summary("serve this machine's devices to llama.cpp RPC clients (no authentication)")
    .description(
      "Serve this machine's GPUs (or its CPU when it has none) to llama.cpp RPC clients, so that a model's layers " +
        "can be spread over several machines: loadModel(path, { rpcServers: [\"host:port\"] }).\n\n" +
        "WARNING: the RPC protocol has no authentication and no encryption. Anyone who can connect can use this " +
        "machine's devices and memory. Keep it on loopback, or on a private network you trust (--allow-remote).\n\n" +
        "Prints one line on stdout once it accepts connections; runs until SIGINT or SIGTERM (then exits 0).",
    )
    .option("--host <address>", "IPv4 address to listen on", "127.0.0.1")
    .option("-p, --port <port>", "TCP port", intArg(1, 65535), 50052)
    .option("-t, --threads <n>", "CPU threads for the served CPU device (default: physical cores)", intArg(1, 1024))
    .option("--allow-remote", "allow listening on an address other machines can reach (0.0.0.0, a LAN address)")
    .option("-v, --verbose", "pass llama.cpp's server log (banner, connections) through to stderr")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem rpc-server --port 50052
  $ llamem rpc-server --host 0.0.0.0 --port 50052 --allow-remote   # trusted private network only`,
    )
    .action(async (o: RpcServerOptions) => {
      await runRpcServer(o);
    });
}

/** The child's program: serve, and die with the parent (whose pipe on our stdin then closes). */
function childSource(endpoint: string, threads: number): string {
  const rpc = new URL("../rpc.js", import.meta.url).href;
  return [
    `import { serveRpc } from ${JSON.stringify(rpc)};`,
    // exit() would wait for the server thread forever: a signal to ourselves ends at once.
    `process.stdin.on("end", () => process.kill(process.pid, "SIGKILL"));`,
    `process.stdin.resume();`,
    `serveRpc(${JSON.stringify(endpoint)}, { threads: ${threads} }).catch((err) => {`,
    `  process.stderr.write("llamem: " + (err instanceof Error ? err.message : String(err)) + "\\n");`,
    `  process.exit(1);`,
    `});`,
  ].join("\n");
}

/** Stops the child: SIGTERM, then SIGKILL if it lingers. */
async function stopChild(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
  await exited;
  clearTimeout(timer);
}

async function runRpcServer(o: RpcServerOptions): Promise<void> {
  // llama.cpp's server takes IPv4 addresses only.
  const host = o.host.trim() === "localhost" ? "127.0.0.1" : o.host.trim();
  if (host.includes(":")) usageError(`--host ${host}: IPv6 addresses are not supported by llama.cpp's RPC server; use an IPv4 address`);
  if (!isLoopback(host) && !o.allowRemote) {
    usageError(
      `refusing to listen on ${host}: the RPC protocol has no authentication, so anyone who can reach ${host}:${o.port} could use ` +
        "this machine's devices and memory. Use --host 127.0.0.1, or pass --allow-remote on a private network you trust",
    );
  }
  const endpoint = `${host}:${o.port}`;
  const warn = styleFor(process.stderr).yellow;
  process.stderr.write(
    warn(`llamem: warning: the RPC protocol has no authentication or encryption; anyone who can connect to ${endpoint} can use this machine's devices`) + "\n",
  );
  await checkPortFree(host, o.port);

  const trap = trapSignals();
  const child = spawn(process.execPath, ["--input-type=module", "-e", childSource(endpoint, o.threads ?? defaultThreads())], {
    stdio: ["pipe", o.verbose ? 2 : "ignore", 2],
  });
  child.stdin?.on("error", () => undefined); // the child may be gone before we close its stdin
  const exited = new Promise<LlamemError | CliExit>((resolve) => {
    child.once("error", (err) => resolve(new LlamemError("ERR_IO", `cannot start the RPC server process: ${err.message}`, { cause: err })));
    child.once("exit", (code, signal) =>
      // Exit code 1: the child already said why on stderr; anything else needs saying.
      resolve(code === 1 ? new CliExit(EXIT.ERROR) : new LlamemError("ERR_IO", `the RPC server on ${endpoint} stopped (${signal ?? `exit code ${String(code)}`})`)),
    );
  });
  try {
    const signalled = new Promise<"signal">((resolve) => trap.signal.addEventListener("abort", () => resolve("signal"), { once: true }));
    const probeHost = host === "0.0.0.0" ? "127.0.0.1" : host;
    const deadline = performance.now() + LISTEN_TIMEOUT_MS;
    let childGone = false;
    void exited.then(() => {
      childGone = true;
    });
    // Announce only once the server accepts connections, so scripts can wait for the line.
    const listening = (async () => {
      while (performance.now() < deadline && !trap.signal.aborted && !childGone) {
        if (await probe(probeHost, o.port)) return "listening" as const;
        await new Promise((r) => setTimeout(r, 50));
      }
      return "timeout" as const;
    })();
    const first = await Promise.race([listening, exited, signalled]);
    if (first instanceof LlamemError || first instanceof CliExit) throw first;
    if (first === "signal") throw new CliExit(EXIT.OK);
    if (first === "timeout") {
      if (childGone) throw await exited;
      throw new LlamemError("ERR_IO", `the RPC server did not accept connections on ${endpoint} within ${LISTEN_TIMEOUT_MS / 1000} s`);
    }
    process.stdout.write(`llamem rpc-server listening on ${endpoint}\n`);
    const end = await Promise.race([exited, signalled]);
    if (end instanceof LlamemError || end instanceof CliExit) throw end;
    // A signal is how a server is meant to stop: exit 0.
    throw new CliExit(EXIT.OK);
  } finally {
    await stopChild(child, exited);
    child.stdin?.end();
    trap.release();
  }
}
