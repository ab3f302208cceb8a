#include "context.h"

#include <string>
#include <vector>

#include "args.h"
#include "errors.h"
#include "llama-ext.h"
#include "sampler.h"
#include "worker.h"

namespace llamem {

const napi_type_tag Context::kTag = {0x6c6c616d656d4354ULL, 0x5854000000000002ULL};

namespace {

bool IsKvCacheType(int64_t t) {
  switch (static_cast<ggml_type>(t)) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1: case GGML_TYPE_IQ4_NL: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1:
      return true;
    default:
      return false;
  }
}

bool IsQuantized(ggml_type t) { return t != GGML_TYPE_F32 && t != GGML_TYPE_F16 && t != GGML_TYPE_BF16; }

bool AbortCallback(void* data) { return static_cast<std::atomic<bool>*>(data)->load(std::memory_order_relaxed); }

// Throws ERR_DECODE / ERR_CONTEXT_FULL / ERR_ABORTED for a llama_decode return code.
void CheckDecode(int32_t rc) {
  if (rc == 0) return;
  if (rc == 1) Throw("ERR_CONTEXT_FULL", "no free KV cache slot for the batch; use a larger contextSize or remove tokens");
  if (rc == 2) Throw("ERR_ABORTED", "evaluation was aborted");
  std::string why = TakeLastNativeError();
  Throw("ERR_DECODE", "llama_decode failed with code " + std::to_string(rc) + (why.empty() ? "" : ": " + why));
}

// llama_memory_can_shift, except a quantized K cache whose heads are not a multiple of 64
// wide: this llama.cpp's K-shift graph for it (no Hadamard rotation) crashes the process.
bool CanShift(llama_context* ctx, const llama_model* model, const llama_context_params& p) {
  if (!llama_memory_can_shift(llama_get_memory(ctx))) return false;
  if (!IsQuantized(p.type_k)) return true;
  const int32_t n_head = llama_model_n_layer(model) > 0 ? llama_model_n_head(model) : 0;
  const int32_t head_dim = n_head > 0 ? llama_model_n_embd(model) / n_head : 0;
  return head_dim > 0 && head_dim % 64 == 0;
}

class CreateWorker : public PromiseWorker {
 public:
  CreateWorker(Napi::Env env, std::shared_ptr<ModelHandle> model, llama_context_params params)
      : PromiseWorker(env), model_(std::move(model)), params_(params) {}

 protected:
  void Run() override {
    CheckContextFits(model_->model, params_);
    TakeLastNativeError();
    llama_context* ctx = llama_init_from_model(model_->model, params_);
    if (ctx == nullptr) {
      std::string why = TakeLastNativeError();
      Throw("ERR_CONTEXT_CREATE", "failed to create the context (n_ctx " + std::to_string(params_.n_ctx) + ")" +
                                      (why.empty() ? "" : ": " + why));
    }
    handle_ = std::make_shared<ContextHandle>();
    handle_->model = model_;
    handle_->ctx = ctx;
    handle_->n_batch = static_cast<int32_t>(llama_n_batch(ctx));
    handle_->n_ctx = static_cast<int32_t>(llama_n_ctx(ctx));
    handle_->n_ctx_seq = static_cast<int32_t>(llama_n_ctx_seq(ctx));
    handle_->n_seq_max = static_cast<int32_t>(llama_n_seq_max(ctx));
    handle_->batch = llama_batch_init(handle_->n_batch, 0, 1);
    handle_->can_shift = CanShift(ctx, model_->model, params_);
    ggml_threadpool_params tp = ggml_threadpool_params_default(params_.n_threads);
    handle_->threadpool = ggml_threadpool_new(&tp);
    if (params_.n_threads_batch != params_.n_threads) {
      ggml_threadpool_params tpb = ggml_threadpool_params_default(params_.n_threads_batch);
      handle_->threadpool_batch = ggml_threadpool_new(&tpb);
    }
    if (handle_->threadpool == nullptr) Throw("ERR_CONTEXT_CREATE", "failed to start the CPU thread pool");
    llama_attach_threadpool(ctx, handle_->threadpool,
                            handle_->threadpool_batch != nullptr ? handle_->threadpool_batch : handle_->threadpool);
    llama_set_abort_callback(ctx, AbortCallback, &handle_->abort);
  }

  Napi::Value Result(Napi::Env env) override {
    GetAddon(env).Track(handle_);
    auto* holder = new std::shared_ptr<ContextHandle>(handle_);
    auto ext = Napi::External<std::shared_ptr<ContextHandle>>::New(
        env, holder, [](Napi::Env, std::shared_ptr<ContextHandle>* p) { delete p; });
    return GetAddon(env).context_ctor.New({ext});
  }

 private:
  std::shared_ptr<ModelHandle> model_;
  llama_context_params params_;
  std::shared_ptr<ContextHandle> handle_;
};

// Evaluates tokens at the end of a sequence in batches of n_batch, then optionally samples
// the next token from the last logits.
class EvalWorker : public PromiseWorker {
 public:
  EvalWorker(Napi::Env env, std::shared_ptr<ContextHandle> h, int32_t seq, std::vector<llama_token> tokens,
             std::shared_ptr<SamplerHandle> sampler, bool accept_input)
      : PromiseWorker(env), h_(std::move(h)), seq_(seq), tokens_(std::move(tokens)), sampler_(std::move(sampler)),
        accept_input_(accept_input) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(h_->mu);
    llama_context* ctx = h_->ctx;
    if (ctx == nullptr) Throw("ERR_DISPOSED", "the context was disposed");
    llama_memory_t mem = llama_get_memory(ctx);
    const llama_pos start = llama_memory_seq_pos_max(mem, seq_) + 1;
    const int64_t n = static_cast<int64_t>(tokens_.size());
    if (start + n > h_->n_ctx_seq) {
      Throw("ERR_CONTEXT_FULL", "the context is full: sequence " + std::to_string(seq_) + " holds " + std::to_string(start) +
                                    " tokens and " + std::to_string(n) + " more do not fit in " +
                                    std::to_string(h_->n_ctx_seq) + "; use a larger contextSize or remove tokens");
    }
    const int64_t t0 = llama_time_us();
    llama_batch& b = h_->batch;
    for (int64_t i = 0; i < n; i += h_->n_batch) {
      const int32_t m = static_cast<int32_t>(std::min<int64_t>(h_->n_batch, n - i));
      b.n_tokens = m;
      for (int32_t j = 0; j < m; j++) {
        b.token[j] = tokens_[static_cast<size_t>(i + j)];
        b.pos[j] = static_cast<llama_pos>(start + i + j);
        b.n_seq_id[j] = 1;
        b.seq_id[j][0] = seq_;
        // The last token's logits are always computed, so an evaluated prompt is ready to sample.
        b.logits[j] = (i + j == n - 1) ? 1 : 0;
      }
      CheckDecode(llama_decode(ctx, b));
    }
    const int64_t t1 = llama_time_us();
    decode_us_ = t1 - t0;
    if (!sampler_) return;
    if (n == 0) Throw("ERR_INVALID_ARGUMENT", "sampling needs at least one token to evaluate");
    if (accept_input_) {
      for (llama_token t : tokens_) llama_sampler_accept(sampler_->chain, t);
    }
    token_ = llama_sampler_sample(sampler_->chain, ctx, -1);
    const llama_vocab* vocab = h_->model->vocab;
    eog_ = llama_vocab_is_eog(vocab, token_);
    if (!eog_) piece_ = TokenPiece(vocab, token_, false);
    sample_us_ = llama_time_us() - t1;
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("evaluated", static_cast<double>(tokens_.size()));
    out.Set("decodeUs", static_cast<double>(decode_us_));
    if (sampler_) {
      out.Set("token", token_);
      out.Set("eog", eog_);
      out.Set("piece", Napi::Buffer<char>::Copy(env, piece_.data(), piece_.size()));
      out.Set("sampleUs", static_cast<double>(sample_us_));
    }
    return out;
  }

 private:
  std::shared_ptr<ContextHandle> h_;
  int32_t seq_;
  std::vector<llama_token> tokens_;
  std::shared_ptr<SamplerHandle> sampler_;
  bool accept_input_;
  llama_token token_ = -1;
  bool eog_ = false;
  std::string piece_;
  int64_t decode_us_ = 0, sample_us_ = 0;
};

class StateGetWorker : public PromiseWorker {
 public:
  StateGetWorker(Napi::Env env, std::shared_ptr<ContextHandle> h, int32_t seq) : PromiseWorker(env), h_(std::move(h)), seq_(seq) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(h_->mu);
    if (h_->ctx == nullptr) Throw("ERR_DISPOSED", "the context was disposed");
    const size_t size = llama_state_seq_get_size(h_->ctx, seq_);
    data_.resize(size);
    const size_t n = llama_state_seq_get_data(h_->ctx, data_.data(), data_.size(), seq_);
    if (n == 0 && size != 0) Throw("ERR_INTERNAL", "could not copy the sequence state");
    data_.resize(n);
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Buffer<uint8_t>::Copy(env, data_.data(), data_.size()); }

 private:
  std::shared_ptr<ContextHandle> h_;
  int32_t seq_;
  std::vector<uint8_t> data_;
};

class StateSetWorker : public PromiseWorker {
 public:
  StateSetWorker(Napi::Env env, std::shared_ptr<ContextHandle> h, int32_t seq, std::vector<uint8_t> data)
      : PromiseWorker(env), h_(std::move(h)), seq_(seq), data_(std::move(data)) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(h_->mu);
    if (h_->ctx == nullptr) Throw("ERR_DISPOSED", "the context was disposed");
    llama_memory_seq_rm(llama_get_memory(h_->ctx), seq_, -1, -1);
    TakeLastNativeError();
    // llama.cpp validates the layout (layers, cell counts, types) and returns 0 on a mismatch.
    if (llama_state_seq_set_data(h_->ctx, data_.data(), data_.size(), seq_) == 0) {
      std::string why = TakeLastNativeError();
      // A partial restore can leave cells behind: the sequence must come out empty.
      llama_memory_seq_rm(llama_get_memory(h_->ctx), seq_, -1, -1);
      Throw("ERR_STATE_MISMATCH", "the saved state does not fit this context" + (why.empty() ? "" : ": " + why));
    }
    pos_max_ = llama_memory_seq_pos_max(llama_get_memory(h_->ctx), seq_);
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, pos_max_ + 1); }

 private:
  std::shared_ptr<ContextHandle> h_;
  int32_t seq_;
  std::vector<uint8_t> data_;
  llama_pos pos_max_ = -1;
};

struct BatchEntry {
  int32_t seq = -1;
  std::vector<llama_token> tokens;
  std::shared_ptr<SamplerHandle> sampler;
  bool accept = false;  // feed the tokens to the sampler's history (penalties see the prompt)
  bool sample = false;  // sample one token after the decode
  llama_token token = -1;
  bool eog = false;
  std::string piece;
};

class EvalBatchWorker : public PromiseWorker {
 public:
  EvalBatchWorker(Napi::Env env, std::shared_ptr<ContextHandle> h, std::vector<BatchEntry> entries)
      : PromiseWorker(env), h_(std::move(h)), entries_(std::move(entries)) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(h_->mu);
    llama_context* ctx = h_->ctx;
    if (ctx == nullptr) Throw("ERR_DISPOSED", "the context was disposed");
    llama_memory_t mem = llama_get_memory(ctx);
    llama_batch& b = h_->batch;
    b.n_tokens = 0;
    std::vector<int32_t> last(entries_.size());
    for (size_t e = 0; e < entries_.size(); e++) {
      BatchEntry& entry = entries_[e];
      const llama_pos start = llama_memory_seq_pos_max(mem, entry.seq) + 1;
      if (start + static_cast<int64_t>(entry.tokens.size()) > h_->n_ctx_seq) {
        Throw("ERR_CONTEXT_FULL", "sequence " + std::to_string(entry.seq) + " is full (" + std::to_string(h_->n_ctx_seq) + " tokens)");
      }
      for (size_t j = 0; j < entry.tokens.size(); j++) {
        const int32_t i = b.n_tokens++;
        b.token[i] = entry.tokens[j];
        b.pos[i] = static_cast<llama_pos>(start + static_cast<llama_pos>(j));
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = entry.seq;
        b.logits[i] = (j + 1 == entry.tokens.size()) ? 1 : 0;
      }
      last[e] = b.n_tokens - 1;
    }
    const int64_t t0 = llama_time_us();
    CheckDecode(llama_decode(ctx, b));
    decode_us_ = llama_time_us() - t0;
    for (size_t e = 0; e < entries_.size(); e++) {
      BatchEntry& entry = entries_[e];
      if (!entry.sampler) continue;
      if (entry.accept) {
        for (llama_token t : entry.tokens) llama_sampler_accept(entry.sampler->chain, t);
      }
      if (!entry.sample) continue;
      entry.token = llama_sampler_sample(entry.sampler->chain, ctx, last[e]);
      entry.eog = llama_vocab_is_eog(h_->model->vocab, entry.token);
      if (!entry.eog) entry.piece = TokenPiece(h_->model->vocab, entry.token, false);
    }
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, entries_.size());
    for (uint32_t e = 0; e < entries_.size(); e++) {
      const BatchEntry& entry = entries_[e];
      Napi::Object r = Napi::Object::New(env);
      r.Set("seq", entry.seq);
      r.Set("evaluated", static_cast<double>(entry.tokens.size()));
      r.Set("decodeUs", static_cast<double>(decode_us_));
      if (entry.sample) {
        r.Set("token", entry.token);
        r.Set("eog", entry.eog);
        r.Set("piece", Napi::Buffer<char>::Copy(env, entry.piece.data(), entry.piece.size()));
      }
      out.Set(e, r);
    }
    return out;
  }

 private:
  std::shared_ptr<ContextHandle> h_;
  std::vector<BatchEntry> entries_;
  int64_t decode_us_ = 0;
};

}  // namespace

void ContextHandle::Close() {
  abort.store(true);
  std::lock_guard<std::mutex> lock(mu);
  if (ctx != nullptr) {
    llama_free(ctx);
    ctx = nullptr;
    llama_batch_free(batch);
    batch = llama_batch{};
  }
  if (threadpool != nullptr) ggml_threadpool_free(threadpool);
  if (threadpool_batch != nullptr) ggml_threadpool_free(threadpool_batch);
  threadpool = threadpool_batch = nullptr;
  model.reset();
}

void Context::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "Context", {
      StaticMethod("create", &Context::Create),
      InstanceMethod("info", &Context::Info),
      InstanceMethod("eval", &Context::Eval),
      InstanceMethod("abort", &Context::Abort),
      InstanceMethod("seqPosRange", &Context::SeqPosRange),
      InstanceMethod("seqRemove", &Context::SeqRemove),
      InstanceMethod("seqShift", &Context::SeqShift),
      InstanceMethod("seqCopy", &Context::SeqCopy),
      InstanceMethod("seqKeep", &Context::SeqKeep),
      InstanceMethod("stateSeqGet", &Context::StateSeqGet),
      InstanceMethod("stateSeqSet", &Context::StateSeqSet),
      InstanceMethod("evalBatch", &Context::EvalBatch),
      InstanceMethod("clear", &Context::Clear),
      InstanceMethod("memory", &Context::Memory),
      InstanceMethod("dispose", &Context::Dispose),
  });
  addon.context_ctor = Napi::Persistent(ctor);
  exports.Set("Context", ctor);
}

Context::Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "Context cannot be constructed directly; use model.createContext()");
  }
  handle_ = *info[0].As<Napi::External<std::shared_ptr<ContextHandle>>>().Data();
  napi_type_tag_object(env, info.This(), &kTag);
  // Tell V8 what the KV cache and compute buffers hold, so GC pressure reflects them.
  for (const MemoryRow& r : CollectBreakdown(handle_->ctx)) external_bytes_ += static_cast<int64_t>(r.context + r.compute);
  Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
}

Context::~Context() {
  if (external_bytes_ != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
  // handle_ drops here: if no worker holds it, ContextHandle's destructor closes the context.
}

std::shared_ptr<ContextHandle> Context::Live(Napi::Env env, const Napi::CallbackInfo& info) const {
  CheckTag(env, info.This(), kTag, "Context");
  if (!handle_ || handle_->ctx == nullptr) throw MakeError(env, "ERR_DISPOSED", "the context was disposed");
  return handle_;
}

llama_context_params ParseContextParams(Napi::Env env, Napi::Object o) {
  llama_context_params p = llama_context_default_params();
  p.n_ctx = static_cast<uint32_t>(OptInt(o, "contextSize", 0, 0, 1 << 24));
  p.n_batch = static_cast<uint32_t>(OptInt(o, "batchSize", 512, 1, 1 << 20));
  p.n_ubatch = static_cast<uint32_t>(OptInt(o, "ubatchSize", std::min<uint32_t>(p.n_batch, 512), 1, p.n_batch));
  p.n_seq_max = static_cast<uint32_t>(OptInt(o, "sequences", 1, 1, static_cast<int64_t>(llama_max_parallel_sequences())));
  p.n_threads = static_cast<int32_t>(OptInt(o, "threads", p.n_threads, 1, 1024));
  p.n_threads_batch = static_cast<int32_t>(OptInt(o, "threadsBatch", p.n_threads, 1, 1024));
  p.flash_attn_type = static_cast<llama_flash_attn_type>(OptInt(o, "flashAttention", LLAMA_FLASH_ATTN_TYPE_AUTO, -1, 1));
  const int64_t type_k = OptInt(o, "typeK", GGML_TYPE_F16, 0, GGML_TYPE_COUNT - 1);
  const int64_t type_v = OptInt(o, "typeV", GGML_TYPE_F16, 0, GGML_TYPE_COUNT - 1);
  if (!IsKvCacheType(type_k) || !IsKvCacheType(type_v)) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "KV cache types must be one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1");
  }
  p.type_k = static_cast<ggml_type>(type_k);
  p.type_v = static_cast<ggml_type>(type_v);
  if (IsQuantized(p.type_v) && p.flash_attn_type == LLAMA_FLASH_ATTN_TYPE_DISABLED) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "a quantized V cache needs flash attention: set flashAttention to \"on\" or \"auto\"");
  }
  p.offload_kqv = OptBool(o, "offloadKv", true);
  p.swa_full = OptBool(o, "swaFull", false);
  p.kv_unified = OptBool(o, "kvUnified", false);
  p.embeddings = OptBool(o, "embeddings", false);
  p.no_perf = true;
  return p;
}

void CheckContextFits(const llama_model* model, const llama_context_params& p) {
  const uint32_t n_ctx = p.n_ctx == 0 ? static_cast<uint32_t>(llama_model_n_ctx_train(model)) : p.n_ctx;
  if (n_ctx < p.n_seq_max) Throw("ERR_INVALID_ARGUMENT", "contextSize must be at least the number of sequences");
  if (IsQuantized(p.type_k) || IsQuantized(p.type_v)) {
    // ggml needs whole quantization blocks per head; llama.cpp would fail deep inside otherwise.
    const int32_t n_head = llama_model_n_layer(model) > 0 ? llama_model_n_head(model) : 0;
    const int32_t head_dim = n_head > 0 ? llama_model_n_embd(model) / n_head : 0;
    if (head_dim % 32 != 0) {
      Throw("ERR_INVALID_ARGUMENT", "this model's attention heads are " + std::to_string(head_dim) +
                                        " wide; quantized KV cache types need a multiple of 32: use f16 or bf16");
    }
  }
}

std::vector<MemoryRow> CollectBreakdown(const llama_context* ctx) {
  std::vector<MemoryRow> rows;
  for (const auto& [buft, mb] : llama_get_memory_breakdown(ctx)) {
    MemoryRow r;
    r.buffer_type = ggml_backend_buft_name(buft);
    ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
    r.device = dev != nullptr ? ggml_backend_dev_name(dev) : "";
    // Host RAM: plain host buffers, and the CPU backend's extra types (CPU_REPACK, AMX), which
    // are not "host" to ggml only because their layout is private.
    r.host = ggml_backend_buft_is_host(buft) || dev == nullptr || ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU;
    r.model = mb.model;
    r.context = mb.context;
    r.compute = mb.compute;
    rows.push_back(std::move(r));
  }
  return rows;
}

Napi::Array BreakdownToJs(Napi::Env env, const std::vector<MemoryRow>& rows) {
  Napi::Array out = Napi::Array::New(env, rows.size());
  for (uint32_t i = 0; i < rows.size(); i++) {
    const MemoryRow& r = rows[i];
    Napi::Object row = Napi::Object::New(env);
    row.Set("bufferType", r.buffer_type);
    row.Set("device", r.device.empty() ? env.Null() : Napi::Value(Napi::String::New(env, r.device)));
    row.Set("host", r.host);
    row.Set("model", static_cast<double>(r.model));
    row.Set("context", static_cast<double>(r.context));
    row.Set("compute", static_cast<double>(r.compute));
    out.Set(i, row);
  }
  return out;
}

Napi::Value Context::Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "Context.create(model, options)");
  auto model = Model::HandleOf(env, args.At(0, "model"));
  llama_context_params p = ParseContextParams(env, args.Object(1, "options"));
  return (new CreateWorker(env, std::move(model), p))->Start();
}

Napi::Value Context::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Napi::Object out = Napi::Object::New(env);
  out.Set("contextSize", h->n_ctx);
  out.Set("sequenceContextSize", h->n_ctx_seq);
  out.Set("batchSize", h->n_batch);
  out.Set("ubatchSize", static_cast<double>(llama_n_ubatch(h->ctx)));
  out.Set("sequences", h->n_seq_max);
  out.Set("threads", llama_n_threads(h->ctx));
  out.Set("threadsBatch", llama_n_threads_batch(h->ctx));
  out.Set("canShift", h->can_shift);
  return out;
}

// eval(seq, tokens, sampler | null, acceptInput) -> Promise<{ evaluated, decodeUs, token?, eog?, piece?, sampleUs? }>
Napi::Value Context::Eval(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "eval(seq, tokens, sampler, acceptInput)");
  const int32_t seq = static_cast<int32_t>(args.Int(0, "seq", 0, h->n_seq_max - 1));
  std::vector<llama_token> tokens = args.Tokens(1, "tokens", h->model->n_vocab);
  std::shared_ptr<SamplerHandle> sampler;
  if (info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined()) sampler = Sampler::HandleOf(env, info[2]);
  const bool accept_input = info.Length() > 3 && info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
  if (tokens.empty() && sampler) args.Fail("tokens", "must not be empty when sampling");
  // A fresh operation starts un-aborted; abort() after this point cancels it.
  h->abort.store(false);
  return (new EvalWorker(env, std::move(h), seq, std::move(tokens), std::move(sampler), accept_input))->Start();
}

Napi::Value Context::Abort(const Napi::CallbackInfo& info) {
  CheckTag(info.Env(), info.This(), kTag, "Context");
  if (handle_) handle_->abort.store(true);
  return info.Env().Undefined();
}

// Sequence operations run on the JS thread (they only touch cell metadata) but never while a
// worker holds the context: that is an ERR_BUSY rather than a data race.
#define LLAMEM_LOCK_OR_BUSY(h)                                                                  \
  std::unique_lock<std::mutex> lock((h)->mu, std::try_to_lock);                                 \
  if (!lock.owns_lock()) throw MakeError(env, "ERR_BUSY", "the context is busy evaluating; wait for it")

Napi::Value Context::SeqPosRange(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "seqPosRange(seq)");
  const int32_t seq = static_cast<int32_t>(args.Int(0, "seq", 0, h->n_seq_max - 1));
  LLAMEM_LOCK_OR_BUSY(h);
  llama_memory_t mem = llama_get_memory(h->ctx);
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, llama_memory_seq_pos_min(mem, seq));
  out.Set(1u, llama_memory_seq_pos_max(mem, seq));
  return out;
}

Napi::Value Context::SeqRemove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "seqRemove(seq, p0, p1)");
  const int32_t seq = static_cast<int32_t>(args.Int(0, "seq", -1, h->n_seq_max - 1));
  const int32_t p0 = static_cast<int32_t>(args.Int(1, "p0", -1, INT32_MAX));
  const int32_t p1 = static_cast<int32_t>(args.Int(2, "p1", -1, INT32_MAX));
  LLAMEM_LOCK_OR_BUSY(h);
  return Napi::Boolean::New(env, llama_memory_seq_rm(llama_get_memory(h->ctx), seq, p0, p1));
}

Napi::Value Context::Clear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  LLAMEM_LOCK_OR_BUSY(h);
  llama_memory_clear(llama_get_memory(h->ctx), true);
  return env.Undefined();
}

// Bytes per buffer type for the model's weights, this context's KV cache and its compute buffers.
Napi::Value Context::Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Napi::Object out = Napi::Object::New(env);
  out.Set("rows", BreakdownToJs(env, CollectBreakdown(h->ctx)));
  LLAMEM_LOCK_OR_BUSY(h);
  // Cells in use: the positions each sequence holds (sequences do not share cells unless copied).
  int64_t used = 0;
  llama_memory_t mem = llama_get_memory(h->ctx);
  for (int32_t s = 0; s < h->n_seq_max; s++) {
    const llama_pos lo = llama_memory_seq_pos_min(mem, s), hi = llama_memory_seq_pos_max(mem, s);
    if (hi >= 0) used += hi - lo + 1;
  }
  out.Set("cellsUsed", static_cast<double>(used));
  out.Set("cells", h->n_ctx);
  return out;
}

Napi::Value Context::SeqShift(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "seqShift(seq, p0, p1, delta)");
  const int32_t seq = static_cast<int32_t>(args.Int(0, "seq", 0, h->n_seq_max - 1));
  const int32_t p0 = static_cast<int32_t>(args.Int(1, "p0", -1, INT32_MAX));
  const int32_t p1 = static_cast<int32_t>(args.Int(2, "p1", -1, INT32_MAX));
  const int32_t delta = static_cast<int32_t>(args.Int(3, "delta", -h->n_ctx, h->n_ctx));
  LLAMEM_LOCK_OR_BUSY(h);
  llama_memory_t mem = llama_get_memory(h->ctx);
  // Recurrent and some SWA caches cannot move positions (llama.cpp would assert), and a
  // quantized K cache with narrow heads crashes in the shift graph.
  if (!h->can_shift) {
    throw MakeError(env, "ERR_UNSUPPORTED", "this context's KV cache cannot shift positions; re-evaluate instead");
  }
  llama_memory_seq_add(mem, seq, p0, p1, delta);
  return env.Undefined();
}

Napi::Value Context::SeqCopy(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "seqCopy(src, dst, p0, p1)");
  const int32_t src = static_cast<int32_t>(args.Int(0, "src", 0, h->n_seq_max - 1));
  const int32_t dst = static_cast<int32_t>(args.Int(1, "dst", 0, h->n_seq_max - 1));
  const int32_t p0 = static_cast<int32_t>(args.Int(2, "p0", -1, INT32_MAX));
  const int32_t p1 = static_cast<int32_t>(args.Int(3, "p1", -1, INT32_MAX));
  if (src == dst) args.Fail("dst", "must differ from src");
  LLAMEM_LOCK_OR_BUSY(h);
  llama_memory_seq_cp(llama_get_memory(h->ctx), src, dst, p0, p1);
  return env.Undefined();
}

Napi::Value Context::SeqKeep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "seqKeep(seq)");
  const int32_t seq = static_cast<int32_t>(args.Int(0, "seq", 0, h->n_seq_max - 1));
  LLAMEM_LOCK_OR_BUSY(h);
  llama_memory_seq_keep(llama_get_memory(h->ctx), seq);
  return env.Undefined();
}

#undef LLAMEM_LOCK_OR_BUSY

// stateSeqGet(seq) -> Promise<Buffer>: the sequence's KV cells, copied to host memory.
Napi::Value Context::StateSeqGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "stateSeqGet(seq)");
  const int32_t seq = static_cast<int32_t>(args.Int(0, "seq", 0, h->n_seq_max - 1));
  return (new StateGetWorker(env, std::move(h), seq))->Start();
}

// stateSeqSet(seq, buffer) -> Promise<number>: restores cells saved by stateSeqGet into `seq`.
Napi::Value Context::StateSeqSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "stateSeqSet(seq, data)");
  const int32_t seq = static_cast<int32_t>(args.Int(0, "seq", 0, h->n_seq_max - 1));
  Napi::Value v = args.At(1, "data");
  if (!v.IsBuffer()) args.Fail("data", "must be a Buffer");
  Napi::Buffer<uint8_t> buf = v.As<Napi::Buffer<uint8_t>>();
  std::vector<uint8_t> data(buf.Data(), buf.Data() + buf.Length());
  h->abort.store(false);
  return (new StateSetWorker(env, std::move(h), seq, std::move(data)))->Start();
}

// evalBatch([{ seq, tokens, sampler?, accept?, sample? }]) -> Promise<result[]>: all sequences'
// tokens in one llama_decode (continuous batching); an entry with a sampler can feed its tokens
// to the sampler's history (accept) and sample one token (sample, default true).
Napi::Value Context::EvalBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "evalBatch(entries)");
  Napi::Array arr = args.Array(0, "entries");
  std::vector<BatchEntry> entries;
  size_t total = 0;
  std::vector<bool> seen(static_cast<size_t>(h->n_seq_max), false);
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value item = arr.Get(i);
    if (!item.IsObject()) args.Fail("entries", "must hold { seq, tokens, sampler? } objects");
    Napi::Object o = item.As<Napi::Object>();
    BatchEntry e;
    e.seq = static_cast<int32_t>(OptInt(o, "seq", -1, 0, h->n_seq_max - 1));
    if (e.seq < 0) args.Fail("entries", "need a seq");
    if (seen[static_cast<size_t>(e.seq)]) args.Fail("entries", "name each sequence once");
    seen[static_cast<size_t>(e.seq)] = true;
    Napi::Value t = o.Get("tokens");
    if (!t.IsTypedArray() || t.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) args.Fail("entries", "tokens must be an Int32Array");
    Napi::Int32Array ta = t.As<Napi::Int32Array>();
    e.tokens.assign(ta.Data(), ta.Data() + ta.ElementLength());
    for (llama_token tok : e.tokens) {
      if (tok < 0 || tok >= h->model->n_vocab) args.Fail("entries", "contain a token id outside the vocabulary");
    }
    if (e.tokens.empty()) args.Fail("entries", "need at least one token each");
    Napi::Value s = o.Get("sampler");
    if (!s.IsUndefined() && !s.IsNull()) e.sampler = Sampler::HandleOf(env, s);
    e.accept = e.sampler && OptBool(o, "accept", false);
    e.sample = e.sampler && OptBool(o, "sample", true);
    total += e.tokens.size();
    entries.push_back(std::move(e));
  }
  if (entries.empty()) args.Fail("entries", "must not be empty");
  if (total > static_cast<size_t>(h->n_batch)) {
    args.Fail("entries", "hold " + std::to_string(total) + " tokens, more than the batch size " + std::to_string(h->n_batch));
  }
  h->abort.store(false);
  return (new EvalBatchWorker(env, std::move(h), std::move(entries)))->Start();
}

namespace {

// Closes a context off the JS thread: freeing a large KV cache takes milliseconds per 100 MiB,
// and Close() may wait for a decode in flight to see the abort flag.
class CloseWorker : public PromiseWorker {
 public:
  CloseWorker(Napi::Env env, std::shared_ptr<ContextHandle> h) : PromiseWorker(env), h_(std::move(h)) {}

 protected:
  void Run() override {
    if (h_) h_->Close();
    h_.reset();
  }

 private:
  std::shared_ptr<ContextHandle> h_;
};

}  // namespace

// dispose() -> Promise<void>: aborts work in flight and frees the context.
Napi::Value Context::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckTag(env, info.This(), kTag, "Context");
  if (handle_) handle_->abort.store(true);
  auto* worker = new CloseWorker(env, std::move(handle_));
  handle_.reset();
  if (external_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
    external_bytes_ = 0;
  }
  return worker->Start();
}

}  // namespace llamem
