#include "sampler.h"

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "model.h"

namespace llamem {

const napi_type_tag Sampler::kTag = {0x6c6c616d656d5341ULL, 0x4d504c0000000003ULL};

void Sampler::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "Sampler", {
      InstanceMethod("reset", &Sampler::Reset),
      InstanceMethod("dispose", &Sampler::Dispose),
  });
  addon.sampler_ctor = Napi::Persistent(ctor);
  exports.Set("Sampler", ctor);
}

Sampler::Sampler(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Sampler>(info) {
  Napi::Env env = info.Env();
  Args args(info, "new Sampler(model, options)");
  auto model = Model::HandleOf(env, args.At(0, "model"));
  Napi::Object o = args.Object(1, "options");
  const double temperature = OptNumber(o, "temperature", 0.8, 0.0, 100.0);
  const int64_t top_k = OptInt(o, "topK", 40, 0, model->n_vocab);
  const double top_p = OptNumber(o, "topP", 0.95, 0.0, 1.0);
  const double min_p = OptNumber(o, "minP", 0.05, 0.0, 1.0);
  const double repeat_penalty = OptNumber(o, "repeatPenalty", 1.0, 1e-6, 100.0);
  const int64_t repeat_last_n = OptInt(o, "repeatLastN", 64, 0, 1 << 20);
  const double frequency_penalty = OptNumber(o, "frequencyPenalty", 0.0, -100.0, 100.0);
  const double presence_penalty = OptNumber(o, "presencePenalty", 0.0, -100.0, 100.0);
  const int64_t seed = OptInt(o, "seed", LLAMA_DEFAULT_SEED, 0, UINT32_MAX);

  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  llama_sampler* chain = llama_sampler_chain_init(cp);
  if (repeat_penalty != 1.0 || frequency_penalty != 0.0 || presence_penalty != 0.0) {
    llama_sampler_chain_add(chain, llama_sampler_init_penalties(model->n_vocab, static_cast<int32_t>(repeat_last_n),
                                                                static_cast<float>(repeat_penalty),
                                                                static_cast<float>(frequency_penalty),
                                                                static_cast<float>(presence_penalty)));
  }
  if (temperature <= 0.0) {
    llama_sampler_chain_add(chain, llama_sampler_init_greedy());
  } else {
    if (top_k > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(static_cast<int32_t>(top_k)));
    if (top_p < 1.0) llama_sampler_chain_add(chain, llama_sampler_init_top_p(static_cast<float>(top_p), 1));
    if (min_p > 0.0) llama_sampler_chain_add(chain, llama_sampler_init_min_p(static_cast<float>(min_p), 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(static_cast<float>(temperature)));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(static_cast<uint32_t>(seed)));
  }
  handle_ = std::make_shared<SamplerHandle>();
  handle_->chain = chain;
  napi_type_tag_object(env, info.This(), &kTag);
}

std::shared_ptr<SamplerHandle> Sampler::HandleOf(Napi::Env env, Napi::Value value) {
  CheckTag(env, value, kTag, "Sampler");
  auto h = Sampler::Unwrap(value.As<Napi::Object>())->handle_;
  if (!h) throw MakeError(env, "ERR_DISPOSED", "the sampler was disposed");
  return h;
}

Napi::Value Sampler::Reset(const Napi::CallbackInfo& info) {
  auto h = HandleOf(info.Env(), info.This());
  llama_sampler_reset(h->chain);
  return info.Env().Undefined();
}

Napi::Value Sampler::Dispose(const Napi::CallbackInfo& info) {
  CheckTag(info.Env(), info.This(), kTag, "Sampler");
  handle_.reset();
  return info.Env().Undefined();
}

}  // namespace llamem
