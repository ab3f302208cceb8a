// The sampler chain: a grammar first if any, then penalties, top-k, top-p, min-p, temperature,
// and a seeded draw or greedy pick last, in the order lib/ gives.
#pragma once

#include <memory>

#include "llama.h"
#include "napi.h"

namespace llamem {

class Addon;

struct SamplerHandle {
  llama_sampler* chain = nullptr;
  // The index of the grammar stage in the chain, or -1. A prompt's tokens are accepted by every
  // stage but this one: the grammar constrains the reply, not the prompt before it.
  int32_t grammar_stage = -1;
  ~SamplerHandle() {
    if (chain != nullptr) llama_sampler_free(chain);
  }
};

class Sampler : public Napi::ObjectWrap<Sampler> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  static const napi_type_tag kTag;

  // new Sampler(model, { stages })
  explicit Sampler(const Napi::CallbackInfo& info);

  static std::shared_ptr<SamplerHandle> HandleOf(Napi::Env env, Napi::Value value);

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<SamplerHandle> handle_;
};

}  // namespace llamem
