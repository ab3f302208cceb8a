// The backend devices llama.cpp sees (CPU, GPUs, RPC servers) and their memory. The RPC backend
// itself (adding and serving) is in rpc.cc.
#include <string>

#include "addon.h"
#include "ggml-backend.h"
#include "rpc.h"

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

}  // namespace

Napi::Value Devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t d = ggml_backend_dev_get(i);
    size_t free = 0, total = 0;
    // Asking a gone RPC server for its memory would abort the process: it reports none.
    const std::string rpc = RpcEndpointOf(d);
    if (rpc.empty() || RpcServerAlive(rpc, 1000)) ggml_backend_dev_memory(d, &free, &total);
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

}  // namespace llamem
