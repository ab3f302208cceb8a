/**
 * llama.cpp's RPC backend: serve this machine's devices to other hosts, or add remote servers
 * as devices so a model's layers spread over several machines. Its protocol has no
 * authentication and no encryption: use it on loopback or a private network only.
 */
import { fromNative, invalidArgument } from "./errors.js";
import { native } from "./native.js";
import { defaultThreads } from "./context.js";

const added = new Set<string>();

function checkEndpoint(endpoint: string): void {
  if (typeof endpoint !== "string" || !/^[^\s:]+:\d{1,5}$/.test(endpoint)) invalidArgument(`RPC endpoint must be "host:port" (got ${String(endpoint)})`);
}

/** Adds remote RPC servers as devices (once per endpoint per process). */
export function addRpcServers(endpoints: readonly string[]): void {
  for (const e of endpoints) {
    checkEndpoint(e);
    if (added.has(e)) continue;
    try {
      native().rpcAddServer(e);
    } catch (err) {
      throw fromNative(err);
    }
    added.add(e);
  }
}

/**
 * Serves this machine's devices on `endpoint` ("127.0.0.1:50052"). The returned promise settles
 * only if the server stops; the server runs until the process exits.
 */
export function serveRpc(endpoint: string, options: { threads?: number } = {}): Promise<void> {
  checkEndpoint(endpoint);
  return native().rpcServe(endpoint, options.threads ?? defaultThreads()).catch((err: unknown) => {
    throw fromNative(err);
  });
}
