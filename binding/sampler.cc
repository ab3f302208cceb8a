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

// new Sampler(model, { stages, backend }): the chain applies the stages in the order given. Leading
// logitBias stages followed by greedy, or by a top-k of at most kMaxPrefilterK, are applied by
// SampleToken itself (SamplerHandle::Mode); the chain then holds only the stages after them.
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
  // The stages SampleToken applies itself: the leading logit biases, then greedy or a small top-k.
  const uint32_t n = stages.Length();
  auto type_at = [&](uint32_t i) {
    Napi::Value item = stages.Get(i);
    if (!item.IsObject()) return std::string();
    Napi::Value t = item.As<Napi::Object>().Get("type");
    return t.IsString() ? t.As<Napi::String>().Utf8Value() : std::string();
  };
  // Backend sampling takes the whole chain into the graph: only the stages whose backend version
  // needs no per-sequence output limit (penalties does: llama_sampler_penalties_backend_init).
  const bool backend = Fields(args.Object(1, "options"), "options").Bool("backend");
  if (backend) {
    for (uint32_t i = 0; i < n; i++) {
      const std::string t = type_at(i);
      if (t != "logitBias" && t != "topK" && t != "topP" && t != "minP" && t != "temperature" && t != "dist" && t != "greedy") {
        args.Fail("options.backend", "is true but stage " + std::to_string(i) + " (" + (t.empty() ? "?" : t) +
                                         ") cannot run on the backend (only logitBias, topK, topP, minP, temperature, dist, greedy)");
      }
    }
  }
  // A backend chain stays whole (kChain, no head): the graph runs all of it, and so does the CPU
  // when it samples instead.
  uint32_t head = 0;
  while (!backend && head < n && type_at(head) == "logitBias") head++;
  SamplerHandle::Mode mode = SamplerHandle::Mode::kChain;
  if (!backend && head + 1 == n && type_at(head) == "greedy") {
    mode = SamplerHandle::Mode::kArgmax;
  } else if (!backend && head + 1 < n && type_at(head) == "topK") {
    Napi::Value k = stages.Get(head).As<Napi::Object>().Get("k");
    const double kv = k.IsNumber() ? k.As<Napi::Number>().DoubleValue() : 0;
    if (kv >= 1 && kv <= SamplerHandle::kMaxPrefilterK && kv == static_cast<int32_t>(kv)) {
      mode = SamplerHandle::Mode::kTopK;
      handle->top_k = static_cast<int32_t>(kv);
      head++;
    }
  }
  if (mode == SamplerHandle::Mode::kChain) head = 0;
  bool selected = false;
  for (uint32_t i = 0; i < n; i++) {
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
    llama_sampler* stage = StageOf(f, *model, selected, handle->biases);
    // A head stage is checked like any other, then applied by SampleToken instead of the chain
    // (the greedy of kArgmax stays in it: it is the stage that accepts).
    if (i < head) {
      llama_sampler_free(stage);
      continue;
    }
    llama_sampler_chain_add(handle->chain, stage);
    if (grammar) handle->grammar_stage = llama_sampler_chain_n(handle->chain) - 1;
  }
  if (!selected) args.Fail("options.stages", "must end with a dist, mirostatV2 or greedy stage (the one that picks the token)");
  handle->mode = mode;
  handle->backend = backend ? SamplerHandle::Backend::kWanted : SamplerHandle::Backend::kOff;
  if (mode == SamplerHandle::Mode::kChain) handle->biases.clear();
  std::stable_sort(handle->biases.begin(), handle->biases.end(),
                   [](const llama_logit_bias& a, const llama_logit_bias& b) { return a.token < b.token; });
  handle_ = std::move(handle);
  napi_type_tag_object(env, info.This(), &kTag);
}

namespace {

// The largest value of x[from, to), NaN left out (-Infinity if none): independent lanes the
// compiler vectorizes (x > a ? x : a is maxps), then their maximum.
float MaxOf(const float* x, llama_token from, llama_token to) {
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
  return m;
}

// What a strict-> scan of x[from, to) from `best_v` selects: the first index of the largest value
// over `best_v`, or -1 (NaN is never larger, and a NaN `best_v` stays).
llama_token FirstMaxAbove(const float* x, llama_token from, llama_token to, float best_v) {
  const float m = MaxOf(x, from, to);
  if (!(m > best_v)) return -1;
  for (llama_token t = from; t < to; t++) {
    if (x[t] == m) return t;
  }
  return -1;
}

// The biased logits token by token, in id order: `biases` sorted stably by token, each token's
// added one by one in the chain's order (as llama_sampler_logit_bias does).
class BiasedLogits {
 public:
  BiasedLogits(const float* logits, const std::vector<llama_logit_bias>& biases) : logits_(logits), biases_(biases) {}
  // The next biased token at or after the scan, or `end`.
  llama_token NextBiased(llama_token end) const { return bi_ < biases_.size() ? biases_[bi_].token : end; }
  // The value of biased token `t` (the next one), moving past it.
  float TakeBiased(llama_token t) {
    float v = logits_[t];
    for (; bi_ < biases_.size() && biases_[bi_].token == t; bi_++) v += biases_[bi_].bias;
    return v;
  }

 private:
  const float* logits_;
  const std::vector<llama_logit_bias>& biases_;
  size_t bi_ = 0;
};

// llama_sampler_greedy over the biased logits: the first index of the largest value.
llama_token Argmax(const float* logits, int32_t n_vocab, const std::vector<llama_logit_bias>& biases) {
  BiasedLogits b(logits, biases);
  llama_token best = 0;
  float best_v = b.NextBiased(n_vocab) == 0 ? b.TakeBiased(0) : logits[0];
  llama_token t = 1;
  while (t < n_vocab) {
    const llama_token stop = b.NextBiased(n_vocab);
    const llama_token first = FirstMaxAbove(logits, t, stop, best_v);
    if (first >= 0) {
      best = first;
      best_v = logits[first];
    }
    t = stop;
    if (t >= n_vocab) break;
    const float v = b.TakeBiased(t);
    if (v > best_v) {
      best_v = v;
      best = t;
    }
    t++;
  }
  return best;
}

// The `k` most likely tokens of the biased logits into `out`, best first, as
// llama_sampler_top_k leaves them (a partial sort by logit), except that exactly equal logits
// keep id order. A min-heap of the k best so far; a run of unbiased tokens whose maximum is not
// above the k-th best is passed over whole.
void TopK(const float* logits, int32_t n_vocab, const std::vector<llama_logit_bias>& biases, int32_t k,
          std::vector<llama_token_data>& out) {
  k = std::min(k, n_vocab);
  out.clear();
  // Whether a comes before b in the result: the higher logit, or on a tie the lower id. The heap's
  // front is then the one that comes last, the k-th best so far.
  auto before = [](const llama_token_data& a, const llama_token_data& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); };
  BiasedLogits b(logits, biases);
  auto offer = [&](llama_token t, float v) {
    if (std::isnan(v)) v = -INFINITY;  // keeps the heap's order total
    if (static_cast<int32_t>(out.size()) < k) {
      out.push_back({t, v, 0.0f});
      std::push_heap(out.begin(), out.end(), before);
    } else if (v > out.front().logit) {
      std::pop_heap(out.begin(), out.end(), before);
      out.back() = {t, v, 0.0f};
      std::push_heap(out.begin(), out.end(), before);
    }
  };
  constexpr int kBlock = 64;
  llama_token t = 0;
  while (t < n_vocab) {
    const llama_token stop = b.NextBiased(n_vocab);
    while (t < stop) {
      const llama_token end = std::min<llama_token>(stop, t + kBlock);
      if (static_cast<int32_t>(out.size()) == k && !(MaxOf(logits, t, end) > out.front().logit)) {
        t = end;
        continue;
      }
      if (static_cast<int32_t>(out.size()) < k) {
        for (; t < end; t++) offer(t, logits[t]);
        continue;
      }
      // Full: only a value above the k-th best gets in (a tie comes later, so after it).
      for (float kth = out.front().logit; t < end; t++) {
        if (logits[t] > kth) {
          offer(t, logits[t]);
          kth = out.front().logit;
        }
      }
    }
    if (t >= n_vocab) break;
    offer(t, b.TakeBiased(t));
    t++;
  }
  std::sort_heap(out.begin(), out.end(), before);
}

}  // namespace

llama_token SampleToken(SamplerHandle& s, llama_context* ctx, int32_t idx, bool* backend) {
  if (backend != nullptr) *backend = false;
  if (s.backend == SamplerHandle::Backend::kAttached) {
    // What llama_sampler_sample does with a token the graph sampled, without its three other
    // lookups (each synchronizing the context): 12-29 µs down to 4-6 µs a token on the CPU.
    const llama_token t = llama_get_sampled_token_ith(ctx, idx);
    if (t != LLAMA_TOKEN_NULL) {
      llama_sampler_accept(s.chain, t);
      if (backend != nullptr) *backend = true;
      return t;
    }
  }
  if (s.mode == SamplerHandle::Mode::kChain) return llama_sampler_sample(s.chain, ctx, idx);
  const float* logits = llama_get_logits_ith(ctx, idx);
  const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));
  if (logits == nullptr || n_vocab <= 0) Throw("ERR_DECODE", "no logits at batch index " + std::to_string(idx) + " to sample from");
  llama_token token;
  if (s.mode == SamplerHandle::Mode::kArgmax) {
    token = Argmax(logits, n_vocab, s.biases);
  } else {
    TopK(logits, n_vocab, s.biases, s.top_k, s.candidates);
    llama_token_data_array cur = {s.candidates.data(), s.candidates.size(), -1, true};
    llama_sampler_apply(s.chain, &cur);
    if (cur.selected < 0 || cur.selected >= static_cast<int64_t>(cur.size)) Throw("ERR_DECODE", "the sampler chain selected no token");
    token = cur.data[cur.selected].id;
  }
  llama_sampler_accept(s.chain, token);
  return token;
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
