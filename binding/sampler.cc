#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "model.h"

namespace llamem {

const napi_type_tag Sampler::kTag = {0x6c6c616d656d5341ULL, 0x4d504c0000000003ULL};

void Sampler::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "Sampler", {
      InstanceMethod("dispose", &Sampler::Dispose),
  });
  addon.sampler_ctor = Napi::Persistent(ctor);
  exports.Set("Sampler", ctor);
}

namespace {

// One stage of the chain from its options; `selects` tells whether it picks the token. A
// logitBias stage's pairs are also appended to `biases`.
llama_sampler* StageOf(const Fields& f, const ModelHandle& model, bool& selects, std::vector<llama_logit_bias>& biases) {
  const int32_t n_vocab = model.n_vocab;
  const std::string type = f.String("type");
  selects = false;
  if (type == "grammar") {
    // llama_sampler_init_grammar (llama-grammar.cpp): parse errors, a missing root rule and left
    // recursion give nullptr (and a message on llama.cpp's log), never an abort.
    const std::string grammar = f.String("grammar");
    const std::string root = f.String("root");
    llama_sampler* s = llama_sampler_init_grammar(model.vocab, grammar.c_str(), root.c_str());
    if (s == nullptr) {
      f.Fail("grammar", "is not a valid GBNF grammar with a rule \"" + root +
                            "\" (llama.cpp could not parse it, or it is left-recursive; its log says where)");
    }
    return s;
  }
  if (type == "penalties") {
    const int64_t last_n = f.Int("lastN", 0, 1 << 20);
    const double repeat = f.Number("repeat", 1e-6, 100.0);
    const double frequency = f.Number("frequency", -100.0, 100.0);
    const double presence = f.Number("presence", -100.0, 100.0);
    return llama_sampler_init_penalties(n_vocab, static_cast<int32_t>(last_n), static_cast<float>(repeat),
                                        static_cast<float>(frequency), static_cast<float>(presence));
  }
  if (type == "logitBias") {
    // llama_sampler_init_logit_bias: token ids are not checked by llama.cpp, so they are here.
    Napi::Array arr = f.ArrayOf("entries");
    std::vector<llama_logit_bias> bias;
    bias.reserve(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value item = arr.Get(i);
      if (!item.IsObject()) f.Fail("entries", "must hold objects { token, bias }");
      Fields e(item.As<Napi::Object>(), "entries[" + std::to_string(i) + "]");
      const int32_t token = static_cast<int32_t>(e.Int("token", 0, n_vocab - 1));
      Napi::Value b = e.Value("bias");
      if (!b.IsNumber()) e.Fail("bias", "must be a number");
      const double v = b.As<Napi::Number>().DoubleValue();
      if (std::isnan(v) || v == INFINITY) e.Fail("bias", "must be finite or -Infinity");
      bias.push_back({token, static_cast<float>(v)});
    }
    biases.insert(biases.end(), bias.begin(), bias.end());
    return llama_sampler_init_logit_bias(n_vocab, static_cast<int32_t>(bias.size()), bias.data());
  }
  if (type == "dry") {
    Napi::Array arr = f.ArrayOf("breakers");
    std::vector<std::string> breakers;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value item = arr.Get(i);
      if (!item.IsString()) f.Fail("breakers", "must hold strings");
      breakers.push_back(item.As<Napi::String>().Utf8Value());
    }
    std::vector<const char*> c_breakers;
    for (const std::string& b : breakers) c_breakers.push_back(b.c_str());
    return llama_sampler_init_dry(model.vocab, static_cast<float>(f.Number("multiplier", 0.0, 100.0)),
                                  static_cast<float>(f.Number("base", 1.0, 100.0)),
                                  static_cast<int32_t>(f.Int("allowedLength", 0, 1 << 16)),
                                  static_cast<int32_t>(f.Int("lastN", -1, 1 << 20)), c_breakers.data(), c_breakers.size());
  }
  if (type == "topNSigma") return llama_sampler_init_top_n_sigma(static_cast<float>(f.Number("n", 0.0, 100.0)));
  if (type == "typicalP") {
    return llama_sampler_init_typical(static_cast<float>(f.Number("p", 0.0, 1.0)), static_cast<size_t>(f.Int("minKeep", 0, n_vocab)));
  }
  if (type == "xtc") {
    return llama_sampler_init_xtc(static_cast<float>(f.Number("p", 0.0, 1.0)), static_cast<float>(f.Number("t", 0.0, 1.0)),
                                  static_cast<size_t>(f.Int("minKeep", 0, n_vocab)), static_cast<uint32_t>(f.Int("seed", 0, UINT32_MAX)));
  }
  if (type == "mirostatV2") {
    selects = true;
    return llama_sampler_init_mirostat_v2(static_cast<uint32_t>(f.Int("seed", 0, UINT32_MAX)), static_cast<float>(f.Number("tau", 0.0, 100.0)),
                                          static_cast<float>(f.Number("eta", 0.0, 1.0)));
  }
  if (type == "topK") return llama_sampler_init_top_k(static_cast<int32_t>(f.Int("k", 0, n_vocab)));
  if (type == "topP" || type == "minP") {
    const double p = f.Number("p", 0.0, 1.0);
    const size_t min_keep = static_cast<size_t>(f.Int("minKeep", 0, n_vocab));
    return type == "topP" ? llama_sampler_init_top_p(static_cast<float>(p), min_keep)
                          : llama_sampler_init_min_p(static_cast<float>(p), min_keep);
  }
  if (type == "temperature") return llama_sampler_init_temp(static_cast<float>(f.Number("t", 0.0, 100.0)));
  if (type == "dist") {
    selects = true;
    return llama_sampler_init_dist(static_cast<uint32_t>(f.Int("seed", 0, UINT32_MAX)));
  }
  if (type == "greedy") {
    selects = true;
    return llama_sampler_init_greedy();
  }
  f.Fail("type", "must be one of grammar, logitBias, penalties, dry, topNSigma, topK, typicalP, topP, minP, xtc, temperature, dist, mirostatV2, greedy (got \"" + type + "\")");
}

}  // namespace

// new Sampler(model, { stages }): the chain applies the stages in the order given.
Sampler::Sampler(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Sampler>(info) {
  Napi::Env env = info.Env();
  Args args(info, "new Sampler(model, options)");
  auto model = Model::HandleOf(env, args.At(0, "model"));
  Napi::Array stages = Fields(args.Object(1, "options"), "options").ArrayOf("stages");
  llama_sampler_chain_params cp = llama_sampler_chain_default_params();
  cp.no_perf = true;
  // Owned by the handle from the start, so a bad stage frees the stages added before it.
  auto handle = std::make_shared<SamplerHandle>();
  handle->chain = llama_sampler_chain_init(cp);
  bool selected = false;
  bool argmax = true;
  for (uint32_t i = 0; i < stages.Length(); i++) {
    const std::string where = "options.stages[" + std::to_string(i) + "]";
    Napi::Value item = stages.Get(i);
    if (!item.IsObject()) args.Fail(where.c_str(), "must be an object { type, ... }");
    Fields f(item.As<Napi::Object>(), where);
    // llama_sampler_sample asserts that a stage selected a token, and a stage after the one
    // that selects could cut the candidates under the selected index.
    if (selected) f.Fail("type", "follows dist, mirostatV2 or greedy, which must be the last stage");
    const std::string type = f.String("type");
    const bool grammar = type == "grammar";
    if (grammar && handle->grammar_stage >= 0) f.Fail("type", "grammar is given twice");
    if (type != "logitBias" && type != "greedy") argmax = false;
    llama_sampler_chain_add(handle->chain, StageOf(f, *model, selected, handle->biases));
    if (grammar) handle->grammar_stage = static_cast<int32_t>(i);
  }
  if (!selected) args.Fail("options.stages", "must end with a dist, mirostatV2 or greedy stage (the one that picks the token)");
  handle->argmax = argmax;
  std::stable_sort(handle->biases.begin(), handle->biases.end(),
                   [](const llama_logit_bias& a, const llama_logit_bias& b) { return a.token < b.token; });
  handle_ = std::move(handle);
  napi_type_tag_object(env, info.This(), &kTag);
}

namespace {

// What a strict-> scan of x[from, to) from `best_v` selects: the first index of the largest value
// over `best_v`, or -1 (NaN is never larger, and a NaN `best_v` stays). The maximum comes from
// independent lanes the compiler vectorizes (x > a ? x : a is maxps), then one scan finds it.
llama_token FirstMaxAbove(const float* x, llama_token from, llama_token to, float best_v) {
  constexpr int kLanes = 16;
  float lane[kLanes];
  for (float& a : lane) a = -INFINITY;
  llama_token t = from;
  for (; t + kLanes <= to; t += kLanes) {
    for (int k = 0; k < kLanes; k++) lane[k] = x[t + k] > lane[k] ? x[t + k] : lane[k];
  }
  float m = -INFINITY;
  for (float a : lane) m = a > m ? a : m;
  for (; t < to; t++) m = x[t] > m ? x[t] : m;
  if (!(m > best_v)) return -1;
  for (t = from; t < to; t++) {
    if (x[t] == m) return t;
  }
  return -1;
}

}  // namespace

llama_token SampleToken(SamplerHandle& s, llama_context* ctx, int32_t idx) {
  if (!s.argmax) return llama_sampler_sample(s.chain, ctx, idx);
  const float* logits = llama_get_logits_ith(ctx, idx);
  const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));
  if (logits == nullptr || n_vocab <= 0) return llama_sampler_sample(s.chain, ctx, idx);
  // The chain's result exactly: a biased token's logit gets its biases added one by one in the
  // chain's order (logit_bias; `biases` is sorted stably by token), then the first index whose
  // value no later one exceeds wins (greedy: selected = 0, then a strict >), NaN included.
  const std::vector<llama_logit_bias>& biases = s.biases;
  size_t bi = 0;
  auto at = [&](llama_token t) {
    float v = logits[t];
    for (; bi < biases.size() && biases[bi].token == t; bi++) v += biases[bi].bias;
    return v;
  };
  llama_token best = 0;
  float best_v = at(0);
  llama_token t = 1;
  while (t < n_vocab) {
    const llama_token stop = bi < biases.size() ? biases[bi].token : n_vocab;
    const llama_token first = FirstMaxAbove(logits, t, stop, best_v);
    if (first >= 0) {
      best = first;
      best_v = logits[first];
    }
    t = stop;
    if (t >= n_vocab) break;
    const float v = at(t);
    if (v > best_v) {
      best_v = v;
      best = t;
    }
    t++;
  }
  llama_sampler_accept(s.chain, best);
  return best;
}

std::shared_ptr<SamplerHandle> Sampler::HandleOf(Napi::Env env, Napi::Value value) {
  CheckTag(env, value, kTag, "Sampler");
  auto h = Sampler::Unwrap(value.As<Napi::Object>())->handle_;
  if (!h) throw MakeError(env, "ERR_DISPOSED", "the sampler was disposed");
  return h;
}

Napi::Value Sampler::Dispose(const Napi::CallbackInfo& info) {
  CheckTag(info.Env(), info.This(), kTag, "Sampler");
  handle_.reset();
  return info.Env().Undefined();
}

}  // namespace llamem
