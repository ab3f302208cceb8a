// llama_context: params, async decode and sampling, sequences, memory breakdown.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "addon.h"
#include "ggml-cpu.h"
#include "llama.h"
#include "model.h"
#include "napi.h"

namespace llamem {

// Owns a llama_context and its batch. Every operation that touches the context holds `mu`,
// so work on one context is serialized and Close() waits for the worker in flight.
struct ContextHandle : public Closable {
  std::shared_ptr<ModelHandle> model;
  llama_context* ctx = nullptr;
  // Persistent thread pools: without them ggml starts threads for every graph, which costs
  // milliseconds per generated token.
  ggml_threadpool* threadpool = nullptr;
  ggml_threadpool* threadpool_batch = nullptr;
  llama_batch batch{};
  int32_t n_batch = 0;
  int32_t n_ctx = 0;
  int32_t n_ctx_seq = 0;
  int32_t n_seq_max = 0;
  std::mutex mu;
  std::atomic<bool> abort{false};

  ~ContextHandle() override { Close(); }
  void Close() override;
};

class Context : public Napi::ObjectWrap<Context> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  static const napi_type_tag kTag;

  explicit Context(const Napi::CallbackInfo& info);
  ~Context() override;

 private:
  static Napi::Value Create(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Eval(const Napi::CallbackInfo& info);
  Napi::Value Abort(const Napi::CallbackInfo& info);
  Napi::Value SeqPosRange(const Napi::CallbackInfo& info);
  Napi::Value SeqRemove(const Napi::CallbackInfo& info);
  Napi::Value Clear(const Napi::CallbackInfo& info);
  Napi::Value Memory(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<ContextHandle> Live(Napi::Env env, const Napi::CallbackInfo& info) const;

  std::shared_ptr<ContextHandle> handle_;
  int64_t external_bytes_ = 0;
};

}  // namespace llamem
