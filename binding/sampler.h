// The sampler chain: a grammar first if any, then penalties, top-k, top-p, min-p, temperature,
// and a seeded draw or greedy pick last, in the order lib/ gives.
#pragma once

#include <memory>
#include <vector>

#include "llama.h"
#include "napi.h"

namespace llamem {

class Addon;

struct SamplerHandle {
  llama_sampler* chain = nullptr;
  // The index of the grammar stage in the chain, or -1. A prompt's tokens are accepted by every
  // stage but this one: the grammar constrains the reply, not the prompt before it.
  int32_t grammar_stage = -1;
  // Set when the chain is logit biases and a greedy pick, nothing else (temperature 0): then
  // SampleToken finds the chain's token without llama.cpp's candidate array. `biases` are the
  // chain's (token, bias) pairs sorted stably by token, so each token's keep the chain's order.
  bool argmax = false;
  std::vector<llama_logit_bias> biases;
  ~SamplerHandle() {
    if (chain != nullptr) llama_sampler_free(chain);
  }
};

// llama_sampler_sample(s.chain, ctx, idx), the token accepted by the chain. For an `argmax`
// chain it reads the logits at `idx` directly: the n_vocab entries that llama_sampler_sample
// writes before greedy scans them cost ~70 µs a token at 32k tokens (the array is cold after a
// decode), which is most of llamem's per-token overhead over llama-bench on a GPU.
llama_token SampleToken(SamplerHandle& s, llama_context* ctx, int32_t idx);

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
