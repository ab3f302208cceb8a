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
  // How SampleToken picks. kChain: llama_sampler_sample over the whole chain. The other two
  // avoid the n_vocab candidates llama_sampler_sample writes each token: kArgmax, for leading
  // logit biases then greedy (temperature 0), takes the first largest biased logit; kTopK, for
  // leading logit biases then a top-k of at most kMaxPrefilterK, gives the chain (the stages after
  // the top-k) only the k best. `biases` are the leading stages' (token, bias) pairs sorted
  // stably by token, so each token's keep the chain's order.
  enum class Mode { kChain, kArgmax, kTopK };
  static constexpr int32_t kMaxPrefilterK = 128;
  Mode mode = Mode::kChain;
  std::vector<llama_logit_bias> biases;
  int32_t top_k = 0;
  std::vector<llama_token_data> candidates;  // kTopK's array, reused token to token
  // Backend sampling (options.backend): the whole chain joins the decode's graph on the device
  // of the output layer (llama_set_sampler), and only the sampled token comes back, not the
  // n_vocab logits. kWanted: not attached yet. kAttached: attached to one sequence of one context.
  // kSpent: attached once and since detached, or refused; llama.cpp initializes a chain's backend
  // state only once (a second llama_sampler_chain_backend_init is a GGML_ASSERT), so from then on
  // it samples on the CPU.
  enum class Backend { kOff, kWanted, kAttached, kSpent };
  Backend backend = Backend::kOff;
  ~SamplerHandle() {
    if (chain != nullptr) llama_sampler_free(chain);
  }
};

// The token the stages pick at batch index `idx`, accepted by the chain: the token the graph
// sampled (Backend::kAttached), llama_sampler_sample, or for kArgmax and kTopK a read of the
// logits themselves. The n_vocab entries that
// llama_sampler_sample writes first cost ~70 µs a token at 32k tokens (the array is cold after a
// decode), most of llamem's per-token overhead over llama-bench on a GPU.
// With `backend`, says whether the token is the one the decode's graph sampled (backend sampling).
llama_token SampleToken(SamplerHandle& s, llama_context* ctx, int32_t idx, bool* backend = nullptr);

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
