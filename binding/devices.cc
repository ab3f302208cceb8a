// The backend devices llama.cpp sees (CPU, GPUs, RPC servers) and their memory, and the RPC
// backend: adding remote servers as devices, and serving this machine's devices.
#include <string>
#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "ggml-backend.h"
#include "ggml-rpc.h"
#include "worker.h"

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

// Serves this machine's devices to remote llama.cpp clients until the process ends.
class RpcServerWorker : public PromiseWorker {
 public:
  RpcServerWorker(Napi::Env env, std::string endpoint, size_t threads)
      : PromiseWorker(env), endpoint_(std::move(endpoint)), threads_(threads) {}

 protected:
  void Run() override {
    std::vector<ggml_backend_dev_t> devs;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
      ggml_backend_dev_t d = ggml_backend_dev_get(i);
      if (ggml_backend_dev_backend_reg(d) == ggml_backend_rpc_reg()) continue;  // never re-export remote devices
      if (ggml_backend_dev_type(d) != GGML_BACKEND_DEVICE_TYPE_CPU || devs.empty()) devs.push_back(d);
    }
    // Prefer GPUs: serve the CPU only when it is the sole device.
    std::vector<ggml_backend_dev_t> gpus;
    for (auto* d : devs) if (ggml_backend_dev_type(d) != GGML_BACKEND_DEVICE_TYPE_CPU) gpus.push_back(d);
    std::vector<ggml_backend_dev_t>& use = gpus.empty() ? devs : gpus;
    TakeLastNativeError();
    ggml_backend_rpc_start_server(endpoint_.c_str(), nullptr, threads_, use.size(), use.data());
    std::string why = TakeLastNativeError();
    Throw("ERR_IO", "the RPC server on " + endpoint_ + " stopped" + (why.empty() ? "" : ": " + why));
  }

 private:
  std::string endpoint_;
  size_t threads_;
};

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
  TakeLastNativeError();
  ggml_backend_reg_t reg = ggml_backend_rpc_add_server(endpoint.c_str());
  if (reg == nullptr) {
    std::string why = TakeLastNativeError();
    throw MakeError(env, "ERR_IO", "cannot reach the RPC server " + endpoint + (why.empty() ? "" : ": " + why));
  }
  return env.Undefined();
}

// rpcServe("host:port", threads): a promise that settles only if the server stops.
Napi::Value RpcServe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "rpcServe(endpoint, threads)");
  std::string endpoint = args.String(0, "endpoint");
  if (endpoint.find(':') == std::string::npos) args.Fail("endpoint", "must be host:port");
  const size_t threads = static_cast<size_t>(args.Int(1, "threads", 1, 1024));
  return (new RpcServerWorker(env, std::move(endpoint), threads))->Start();
}

}  // namespace llamem
