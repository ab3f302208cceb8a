// llama.cpp's RPC backend, guarded. ggml-rpc aborts the process on any failed connect, send or
// receive (GGML_ABORT / RPC_STATUS_ASSERT), so before anything touches a remote device the
// binding checks that its server is still there: the process's own connection to it (ggml keeps
// one per endpoint while buffers live there) must not be closed by the peer, and with no
// connection, a new one must open. A server lost between that check and ggml's use of it still
// aborts the process: no check can close that window.
#pragma once

#include <string>
#include <vector>

#include "ggml-backend.h"
#include "napi.h"

namespace llamem {

// The endpoints registered with ggml in this process (ggml's device registry is process-wide).
std::vector<std::string> RegisteredRpcServers();

// The endpoint ("host:port") of an RPC device, or "" for any other device.
std::string RpcEndpointOf(ggml_backend_dev_t dev);

// Whether `endpoint`'s server can be used without ggml aborting: this process's connection to
// it is open, or, with none, a TCP connection opens within `timeout_ms`. Blocking.
bool RpcServerAlive(const std::string& endpoint, int timeout_ms);

// The first endpoint of `endpoints` whose server is gone, or "".
std::string FirstDeadRpcServer(const std::vector<std::string>& endpoints, int timeout_ms);

// Throws ERR_IO naming the first endpoint that is gone; `what` says what could not run.
void CheckRpcServers(const std::vector<std::string>& endpoints, const std::string& what);

// How long a check waits for a new connection before calling a server gone, off the JS thread.
constexpr int kRpcCheckTimeoutMs = 3000;

// rpcAddServer(endpoint) -> Promise<void>; rpcServe(endpoint, threads) -> Promise<never>;
// rpcServers() -> string[] (the registered endpoints).
Napi::Value RpcAddServer(const Napi::CallbackInfo& info);
Napi::Value RpcServe(const Napi::CallbackInfo& info);
Napi::Value RpcServers(const Napi::CallbackInfo& info);

}  // namespace llamem
