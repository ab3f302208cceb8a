/**
 * llama.cpp's RPC backend: serve this machine's devices to other hosts, or add remote servers
 * as devices so a model's layers spread over several machines. Its protocol has no
 * authentication and no encryption: use it on loopback or a private network only.
 *
 * ggml-rpc aborts the whole process when a connection to a server fails, so nothing is handed
 * to it unchecked: a new endpoint must accept a TCP connection here (name resolution and connect
 * errors become ERR_IO naming it) and answer an RPC handshake in the binding before ggml sees
 * it; and the binding checks the servers a model uses before each load, context, decode and
 * state operation. A server lost in the middle of one of those still takes the process down
 * (docs/reliability.md).
 */
import { connect, createServer } from "node:net";
import { LlamemError, describeValue, fromNative, invalidArgument } from "./errors.js";
import { native } from "./internal/native.js";
import { defaultThreads } from "./system.js";

/** How long a new endpoint gets to accept a TCP connection. */
const CONNECT_TIMEOUT_MS = 3000;

function checkEndpoint(endpoint: unknown): { host: string; port: number } {
  const m = typeof endpoint === "string" ? /^([^\s:]+):(\d{1,5})$/.exec(endpoint) : null;
  const port = m ? Number(m[2]) : NaN;
  // The port must also be one TCP has: "host:99999" would reach llama.cpp and fail obscurely there.
  if (!m || port < 1 || port > 65535) {
    invalidArgument(`RPC endpoint must be "host:port" with a port in [1, 65535] (got ${describeValue(endpoint)})`);
  }
  return { host: m[1] as string, port };
}

/** Resolves once `host:port` accepts a TCP connection (closed at once); ERR_IO naming it otherwise. */
function reachable(endpoint: string, host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    // IPv4, as ggml-rpc connects.
    const socket = connect({ host, port, family: 4 });
    const fail = (why: string, cause?: unknown) => {
      socket.destroy();
      reject(new LlamemError("ERR_IO", `cannot reach the RPC server ${endpoint}: ${why}`, { cause }));
    };
    socket.setTimeout(timeoutMs, () => fail(`no connection within ${timeoutMs} ms`));
    socket.once("error", (err: NodeJS.ErrnoException) => {
      const why =
        err.code === "ECONNREFUSED" ? "connection refused (is the server running?)"
        : err.code === "ENOTFOUND" || err.code === "EAI_AGAIN" ? `cannot resolve ${host}`
        : err.message;
      fail(why, err);
    });
    socket.once("connect", () => {
      socket.destroy();
      resolve();
    });
  });
}

/**
 * Adds remote RPC servers as devices, once each: a server must accept a connection and answer
 * llama.cpp's RPC handshake, else ERR_IO naming it. Adding one again checks it is still there.
 * The registration is process-wide (ggml's device registry; worker threads share it), and off
 * the JS thread.
 */
export async function addRpcServers(endpoints: readonly string[]): Promise<void> {
  if (!Array.isArray(endpoints)) invalidArgument("rpcServers must be an array of \"host:port\" strings");
  const parsed = endpoints.map((e) => ({ endpoint: e, ...checkEndpoint(e) }));
  let known: string[];
  try {
    known = native().rpcServers();
  } catch (err) {
    throw fromNative(err);
  }
  for (const { endpoint, host, port } of parsed) {
    // A registered server may be busy serving this process (one client at a time): the binding checks it.
    if (!known.includes(endpoint)) await reachable(endpoint, host, port, CONNECT_TIMEOUT_MS);
    try {
      await native().rpcAddServer(endpoint);
    } catch (err) {
      throw fromNative(err);
    }
  }
}

/** Resolves once `host:port` can be listened on (checked by listening and closing at once). */
function listenable(endpoint: string, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => {
      const why = err.code === "EADDRINUSE" ? "the port is in use" : err.code === "EADDRNOTAVAIL" ? "the address is not this machine's" : err.message;
      reject(new LlamemError("ERR_IO", `cannot serve RPC on ${endpoint}: ${why}`, { cause: err }));
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve()));
  });
}

/**
 * Serves this machine's devices on `endpoint` ("127.0.0.1:50052") from a thread of its own,
 * until the process exits. The returned promise never resolves and keeps the process alive; it
 * rejects with ERR_IO when the server cannot listen (a port in use, an address that is not this
 * machine's).
 */
export async function serveRpc(endpoint: string, options: { threads?: number } = {}): Promise<never> {
  const { host, port } = checkEndpoint(endpoint);
  if (options === null || typeof options !== "object") invalidArgument("serveRpc(endpoint, options): options must be an object");
  const threads = options.threads ?? defaultThreads();
  if (!Number.isInteger(threads) || threads < 1 || threads > 1024) invalidArgument("threads must be an integer in [1, 1024]");
  // llama.cpp only prints a line when it cannot listen: find out here first.
  await listenable(endpoint, host, port);
  let served: Promise<never>;
  try {
    served = native().rpcServe(endpoint, threads);
  } catch (err) {
    throw fromNative(err);
  }
  // The server lives on a native thread Node does not know about: hold the event loop open.
  const keepAlive = setInterval(() => undefined, 1 << 30);
  try {
    return await served;
  } catch (err) {
    // The server could not start after all (the port was taken since the check).
    clearInterval(keepAlive);
    throw fromNative(err);
  }
}
