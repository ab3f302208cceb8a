/**
 * llama.cpp's RPC backend: serve this machine's devices to other hosts, or add remote servers
 * as devices so a model's layers spread over several machines. Its protocol has no
 * authentication and no encryption: use it on loopback or a private network only.
 */
import { fromNative, invalidArgument } from "./errors.js";
import { native } from "./internal/native.js";
import { defaultThreads } from "./system.js";

function checkEndpoint(endpoint: string): void {
  const port = typeof endpoint === "string" ? /^[^\s:]+:(\d{1,5})$/.exec(endpoint)?.[1] : undefined;
  // The port must also be one TCP has: "host:99999" would reach llama.cpp and fail obscurely there.
  if (port === undefined || Number(port) < 1 || Number(port) > 65535) {
    invalidArgument(`RPC endpoint must be "host:port" with a port in [1, 65535] (got ${String(endpoint)})`);
  }
}

/**
 * Adds remote RPC servers as devices. Adding one twice is a no-op: the binding keeps the set,
 * because ggml's device registry is process-wide (worker threads share it).
 */
export function addRpcServers(endpoints: readonly string[]): void {
  if (!Array.isArray(endpoints)) invalidArgument("rpcServers must be an array of \"host:port\" strings");
  for (const e of endpoints) checkEndpoint(e);
  for (const e of endpoints) {
    try {
      native().rpcAddServer(e);
    } catch (err) {
      throw fromNative(err);
    }
  }
}

/**
 * Serves this machine's devices on `endpoint` ("127.0.0.1:50052") from a thread of its own,
 * until the process exits. The returned promise never settles; it keeps the process alive.
 */
export function serveRpc(endpoint: string, options: { threads?: number } = {}): Promise<never> {
  checkEndpoint(endpoint);
  try {
    native().rpcServe(endpoint, options.threads ?? defaultThreads());
  } catch (err) {
    return Promise.reject(fromNative(err));
  }
  // The server lives on a native thread Node does not know about: hold the event loop open.
  setInterval(() => undefined, 1 << 30);
  return new Promise<never>(() => undefined);
}
