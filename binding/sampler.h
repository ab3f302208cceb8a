// The sampler chain: penalties, top-k, top-p, min-p, temperature, and a seeded draw or greedy
// pick last, in the order lib/ gives.
#pragma once

#include <memory>

#include "llama.h"
#include "napi.h"

namespace llamem {

class Addon;

struct SamplerHandle {
  llama_sampler* chain = nullptr;
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
