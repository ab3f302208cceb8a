// Embeddings: several sequences' tokens in one pass (llama_encode for encoder-only models,
// llama_decode otherwise) and each sequence's pooled vector (llama_get_embeddings_seq): the
// mean, CLS or last token's embedding, or a reranker's scores. The context holds no state
// between calls: each call starts its sequences at position 0.
#include <string>
#include <vector>

#include "args.h"
#include "context.h"
#include "errors.h"
#include "rpc.h"
#include "worker.h"

namespace llamem {

namespace {

struct EmbedEntry {
  int32_t seq = -1;
  std::vector<llama_token> tokens;
  std::vector<float> vector;
};

class EmbedWorker : public PromiseWorker {
 public:
  EmbedWorker(Napi::Env env, std::shared_ptr<ContextHandle> h, std::vector<EmbedEntry> entries)
      : PromiseWorker(env), h_(std::move(h)), entries_(std::move(entries)) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(h_->mu);
    llama_context* ctx = h_->ctx;
    if (ctx == nullptr) Throw("ERR_DISPOSED", "the context was disposed");
    ParkOnExit park{h_->pools};
    CheckRpcServers(h_->model->rpc, "this embedding");
    const llama_model* model = h_->model->model;
    const enum llama_pooling_type pooling = llama_pooling_type(ctx);
    // Earlier calls' cells would be attended to (decoder models keep a cache): start clean.
    if (llama_memory_t mem = llama_get_memory(ctx)) llama_memory_clear(mem, true);
    llama_batch& b = h_->batch;
    b.n_tokens = 0;
    for (const EmbedEntry& e : entries_) {
      for (size_t j = 0; j < e.tokens.size(); j++) {
        const int32_t i = b.n_tokens++;
        b.token[i] = e.tokens[j];
        b.pos[i] = static_cast<llama_pos>(j);
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = e.seq;
        b.logits[i] = 1;  // pooling reads every token's output
      }
    }
    const bool encoder = llama_model_has_encoder(model) && !llama_model_has_decoder(model);
    TakeLastNativeError();
    const int32_t rc = encoder ? llama_encode(ctx, b) : llama_decode(ctx, b);
    if (rc != 0) {
      if (rc == 2) Throw("ERR_ABORTED", "the embedding was aborted");
      const std::string why = TakeLastNativeError();
      Throw("ERR_DECODE", std::string(encoder ? "llama_encode" : "llama_decode") + " failed with code " + std::to_string(rc) +
                              (why.empty() ? "" : ": " + why));
    }
    const int32_t n = pooling == LLAMA_POOLING_TYPE_RANK ? static_cast<int32_t>(llama_model_n_cls_out(model))
                                                         : llama_model_n_embd_out(model);
    for (EmbedEntry& e : entries_) {
      const float* v = llama_get_embeddings_seq(ctx, e.seq);
      if (v == nullptr) Throw("ERR_DECODE", "llama.cpp gave no embedding for sequence " + std::to_string(e.seq));
      e.vector.assign(v, v + n);
    }
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, entries_.size());
    for (uint32_t i = 0; i < entries_.size(); i++) {
      const std::vector<float>& v = entries_[i].vector;
      Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
      std::copy(v.begin(), v.end(), a.Data());
      out.Set(i, a);
    }
    return out;
  }

 private:
  std::shared_ptr<ContextHandle> h_;
  std::vector<EmbedEntry> entries_;
};

}  // namespace

// embedBatch([{ seq, tokens }]) -> Promise<Float32Array[]>: every entry's tokens in one pass,
// each entry's pooled vector (n_embd_out floats, or n_cls_out scores for rank pooling). The
// entries must fit one micro-batch (llama.cpp asserts that non-causal attention and encoders
// see a whole sequence at once: llama-context.cpp).
Napi::Value Context::EmbedBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "embedBatch(entries)");
  if (!h->embeddings) throw MakeError(env, "ERR_INVALID_ARGUMENT", "this context was created without embeddings");
  if (llama_pooling_type(h->ctx) == LLAMA_POOLING_TYPE_NONE) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "this context's pooling is none: it gives token embeddings, not one per text");
  }
  Napi::Array arr = args.Array(0, "entries");
  if (arr.Length() == 0) args.Fail("entries", "must not be empty");
  std::vector<EmbedEntry> entries;
  int64_t total = 0;
  std::vector<bool> seen(static_cast<size_t>(h->n_seq_max), false);
  const int64_t limit = std::min(h->n_batch, h->n_ubatch);
  for (uint32_t i = 0; i < arr.Length(); i++) {
    const std::string where = "entries[" + std::to_string(i) + "]";
    Napi::Value item = arr.Get(i);
    if (!item.IsObject()) args.Fail(where.c_str(), "must be an object { seq, tokens }");
    Fields f(item.As<Napi::Object>(), where);
    EmbedEntry e;
    Napi::Int32Array ta = EntryTokens(f, *h, seen, e.seq);
    total += static_cast<int64_t>(ta.ElementLength());
    if (total > limit) args.Fail("entries", "hold more than the micro-batch size of " + std::to_string(limit) + " tokens");
    if (static_cast<int64_t>(ta.ElementLength()) > h->n_ctx_seq) {
      f.Fail("tokens", "are more than the " + std::to_string(h->n_ctx_seq) + " tokens a sequence holds");
    }
    CopyTokens(f, *h, ta, e.tokens);
    entries.push_back(std::move(e));
  }
  h->abort.store(false);
  return (new EmbedWorker(env, std::move(h), std::move(entries)))->Start();
}

}  // namespace llamem
