#include "addon.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "args.h"
#include "backends.h"
#include "context.h"
#include "errors.h"
#include "model.h"
#include "rpc.h"
#include "sampler.h"
#include "llama.h"

namespace llamem {

namespace {

// llama.cpp's log callback is process-wide, so its threshold is too (not per environment).
// -1 silences everything; otherwise messages at or above the level go to stderr.
std::atomic<int> g_log_level{-1};
thread_local std::string t_last_error;

void LogCallback(enum ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR && text != nullptr) RecordNativeError(text);
  const int threshold = g_log_level.load(std::memory_order_relaxed);
  if (threshold < 0 || text == nullptr) return;
  // CONT continues the previous line; show it when anything is shown.
  if (level != GGML_LOG_LEVEL_CONT && static_cast<int>(level) < threshold) return;
  std::fputs(text, stderr);
}

// Returns why the backends could not be loaded, or an empty string.
const std::string& InitBackendOnce() {
  static std::once_flag once;  // process-wide by nature: llama.cpp's backend registry is global
  std::call_once(once, [] {
    llama_log_set(LogCallback, nullptr);
    llama_backend_init();
  });
  // A prebuild loads its CPU variant (and any backend modules beside it) here.
  return LoadBackendsOnce();
}

}  // namespace

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

void Throw(const std::string& code, const std::string& message) { throw CodedError{code, message}; }

void RecordNativeError(const char* text) {
  std::string line(text);
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  // The first line usually names the cause ("key not found ..."), later ones the failing call:
  // keep them all, bounded.
  if (line.empty() || t_last_error.size() > 1000) return;
  if (!t_last_error.empty()) t_last_error += "; ";
  t_last_error += line;
}

std::string TakeLastNativeError() {
  std::string s;
  s.swap(t_last_error);
  return s;
}

Addon::Addon(Napi::Env env, Napi::Object exports) {
  const std::string& why = InitBackendOnce();
  // require() fails with this error: lib/internal/native.ts reports it as ERR_NATIVE_LOAD.
  if (!why.empty()) throw MakeError(env, "ERR_NATIVE_LOAD", why);
  DefineAddon(exports, {
      InstanceMethod("setLogLevel", &Addon::SetLogLevel),
      InstanceMethod("systemInfo", &Addon::SystemInfo),
  });
  // The contract with lib/ (the methods and their arguments): lib/internal/native.ts refuses a
  // binary built for another one (a stale build, a prebuild from another version) at load,
  // rather than calling it with arguments it reads otherwise. Bump both together.
  exports.Set("apiVersion", Napi::Number::New(env, kApiVersion));
  exports.Set("devices", Napi::Function::New(env, Devices, "devices"));
  exports.Set("quantize", Napi::Function::New(env, Quantize, "quantize"));
  exports.Set("rpcAddServer", Napi::Function::New(env, RpcAddServer, "rpcAddServer"));
  exports.Set("rpcServe", Napi::Function::New(env, RpcServe, "rpcServe"));
  exports.Set("rpcServers", Napi::Function::New(env, RpcServers, "rpcServers"));
  env.AddCleanupHook([this] { CloseAll(); });
  Model::Init(env, exports, *this);
  Context::Init(env, exports, *this);
  Sampler::Init(env, exports, *this);
}

Addon::~Addon() { CloseAll(); }

// Runs at environment teardown (process exit, worker.terminate(), Electron reload), before
// finalizers: abort loads, then close contexts (they wait for their worker) and the rest.
void Addon::CloseAll() {
  for (auto& weak : cancels_) {
    if (auto flag = weak.lock()) flag->store(true);
  }
  for (auto& weak : tracked_) {
    if (auto obj = weak.lock()) obj->Close();
  }
  tracked_.clear();
  cancels_.clear();
}

void Addon::Track(const std::shared_ptr<Closable>& obj) {
  tracked_.erase(std::remove_if(tracked_.begin(), tracked_.end(), [](auto& w) { return w.expired(); }), tracked_.end());
  tracked_.push_back(obj);
}

void Addon::TrackCancel(const std::shared_ptr<std::atomic<bool>>& flag) {
  cancels_.erase(std::remove_if(cancels_.begin(), cancels_.end(), [](auto& w) { return w.expired(); }), cancels_.end());
  cancels_.push_back(flag);
}

// setLogLevel(level): -1 silences llama.cpp; 1..4 (ggml_log_level) shows that level and above.
Napi::Value Addon::SetLogLevel(const Napi::CallbackInfo& info) {
  Args args(info, "setLogLevel(level)");
  g_log_level.store(static_cast<int>(args.Int(0, "level", -1, GGML_LOG_LEVEL_ERROR)));
  return info.Env().Undefined();
}

Napi::Value Addon::SystemInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("llamaSystemInfo", llama_print_system_info());
  out.Set("gpuBackend", LLAMEM_GPU);
  out.Set("supportsMmap", llama_supports_mmap());
  out.Set("supportsMlock", llama_supports_mlock());
  out.Set("supportsGpuOffload", llama_supports_gpu_offload());
  out.Set("maxDevices", static_cast<double>(llama_max_devices()));
  out.Set("maxParallelSequences", static_cast<double>(llama_max_parallel_sequences()));
  // Which CPU backend runs: "native" (a source build), "portable", or a prebuild's variant.
  CpuBackendInfo cpu = CpuBackend();
  Napi::Object backend = Napi::Object::New(env);
  backend.Set("variant", cpu.variant);
  backend.Set("path", cpu.path.empty() ? env.Null() : Napi::String::New(env, cpu.path));
  Napi::Array features = Napi::Array::New(env, cpu.features.size());
  for (size_t i = 0; i < cpu.features.size(); i++) features.Set(static_cast<uint32_t>(i), cpu.features[i]);
  backend.Set("features", features);
  out.Set("cpuBackend", backend);
  return out;
}

Addon& GetAddon(Napi::Env env) { return *env.GetInstanceData<Addon>(); }

}  // namespace llamem

using llamem::Addon;
NODE_API_NAMED_ADDON(llamem, Addon)
