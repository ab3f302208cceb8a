// The backend devices llama.cpp sees (CPU, GPUs, RPC servers) and their memory, and the RPC
// backend: adding remote servers as devices, and serving this machine's devices.
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "ggml-backend.h"
#include "ggml-rpc.h"

namespace llamem {

namespace {

const char* DeviceTypeName(enum ggml_backend_dev_type t) {
  switch (t) {
    case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
    case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
    case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
    default: return "other";
  }
}

// The devices a server exports: GPUs when there are any, else the CPU; never remote devices.
std::vector<ggml_backend_dev_t> ServedDevices() {
  std::vector<ggml_backend_dev_t> cpus, gpus;
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t d = ggml_backend_dev_get(i);
    if (ggml_backend_dev_backend_reg(d) == ggml_backend_rpc_reg()) continue;
    (ggml_backend_dev_type(d) == GGML_BACKEND_DEVICE_TYPE_CPU ? cpus : gpus).push_back(d);
  }
  if (!gpus.empty()) return gpus;
  if (!cpus.empty()) cpus.resize(1);
  return cpus;
}

}  // namespace

Napi::Value Devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t d = ggml_backend_dev_get(i);
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(d, &free, &total);
    Napi::Object row = Napi::Object::New(env);
    row.Set("name", ggml_backend_dev_name(d));
    row.Set("description", ggml_backend_dev_description(d));
    row.Set("type", DeviceTypeName(ggml_backend_dev_type(d)));
    row.Set("backend", ggml_backend_reg_name(ggml_backend_dev_backend_reg(d)));
    row.Set("free", static_cast<double>(free));
    row.Set("total", static_cast<double>(total));
    out.Set(static_cast<uint32_t>(i), row);
  }
  return out;
}

// rpcAddServer("host:port"): registers a remote server's devices so models can offload to them.
Napi::Value RpcAddServer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "rpcAddServer(endpoint)");
  std::string endpoint = args.String(0, "endpoint");
  if (endpoint.find(':') == std::string::npos) args.Fail("endpoint", "must be host:port");
  // ggml's backend registry is process-wide, so is the set of servers registered in it.
  static std::mutex mu;
  static std::set<std::string> registered;
  std::lock_guard<std::mutex> lock(mu);
  if (registered.count(endpoint) != 0) return env.Undefined();
  TakeLastNativeError();
  ggml_backend_reg_t reg = ggml_backend_rpc_add_server(endpoint.c_str());
  if (reg == nullptr) {
    std::string why = TakeLastNativeError();
    throw MakeError(env, "ERR_IO", "cannot reach the RPC server " + endpoint + (why.empty() ? "" : ": " + why));
  }
  // Registered devices are what llama.cpp offloads to when a model loads.
  ggml_backend_register(reg);
  registered.insert(endpoint);
  return env.Undefined();
}

// rpcServe("host:port", threads): serves on a thread of its own (never a libuv pool thread,
// which it would hold forever) until the process exits.
Napi::Value RpcServe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "rpcServe(endpoint, threads)");
  std::string endpoint = args.String(0, "endpoint");
  if (endpoint.find(':') == std::string::npos) args.Fail("endpoint", "must be host:port");
  const size_t threads = static_cast<size_t>(args.Int(1, "threads", 1, 1024));
  std::vector<ggml_backend_dev_t> devs = ServedDevices();
  if (devs.empty()) throw MakeError(env, "ERR_UNSUPPORTED", "no local device to serve");
  std::thread([endpoint, threads, devs]() mutable {
    ggml_backend_rpc_start_server(endpoint.c_str(), nullptr, threads, devs.size(), devs.data());
    std::fprintf(stderr, "llamem: the RPC server on %s stopped (is the port in use?)\n", endpoint.c_str());
  }).detach();
  return env.Undefined();
}

}  // namespace llamem
