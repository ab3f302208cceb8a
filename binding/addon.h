// Per-environment state of the addon (one per Node main thread, worker_thread or Electron
// process): the class constructors and every native object still alive, so the env cleanup
// hook can abort and free them before the environment goes away.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "napi.h"

namespace llamem {

// The version of the contract between this binary and lib/ (NATIVE_API_VERSION in
// lib/internal/native.ts): 2 added evalBatch's loop and haltLoop, 3 the loop's `stream`, 4 the
// context's `outputs`, the sampler's `backend`, the results' `backend` and `outputDevice`.
constexpr int32_t kApiVersion = 4;

// Anything that owns llama.cpp objects and must be closed at environment teardown.
class Closable {
 public:
  virtual ~Closable() = default;
  // Aborts work in flight and frees the native object; safe to call more than once.
  virtual void Close() = 0;
};

class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);
  ~Addon();

  Napi::FunctionReference model_ctor;
  Napi::FunctionReference context_ctor;
  Napi::FunctionReference sampler_ctor;

  // Registers an object to close at teardown; lives as long as the object does (weak).
  void Track(const std::shared_ptr<Closable>& obj);
  // Registers a cancel flag of work that has no object yet (a model load).
  void TrackCancel(const std::shared_ptr<std::atomic<bool>>& flag);

 private:
  void CloseAll();
  Napi::Value SetLogLevel(const Napi::CallbackInfo& info);
  Napi::Value SystemInfo(const Napi::CallbackInfo& info);

  std::vector<std::weak_ptr<Closable>> tracked_;
  std::vector<std::weak_ptr<std::atomic<bool>>> cancels_;
};

// Free functions exported beside the classes (devices.cc, quantize.cc; rpc.h has the RPC ones).
Napi::Value Devices(const Napi::CallbackInfo& info);
Napi::Value Quantize(const Napi::CallbackInfo& info);

// Fetches the per-env Addon instance.
Addon& GetAddon(Napi::Env env);

}  // namespace llamem
