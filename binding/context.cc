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

class CreateWorker : public PromiseWorker {
 public:
  CreateWorker(Napi::Env env, std::shared_ptr<ModelHandle> model, llama_context_params params)
      : PromiseWorker(env), model_(std::move(model)), params_(params) {}

 protected:
  void Run() override {
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
        b.logits[j] = (i + j == n - 1 && sampler_) ? 1 : 0;
      }
      const int32_t rc = llama_decode(ctx, b);
      if (rc == 1) Throw("ERR_CONTEXT_FULL", "no free KV cache slot for the batch; use a larger contextSize or remove tokens");
      if (rc == 2) Throw("ERR_ABORTED", "evaluation was aborted");
      if (rc != 0) {
        std::string why = TakeLastNativeError();
        Throw("ERR_DECODE", "llama_decode failed with code " + std::to_string(rc) + (why.empty() ? "" : ": " + why));
      }
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
  for (const auto& [buft, mb] : llama_get_memory_breakdown(handle_->ctx)) external_bytes_ += mb.context + mb.compute;
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

Napi::Value Context::Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "Context.create(model, options)");
  auto model = Model::HandleOf(env, args.At(0, "model"));
  Napi::Object o = args.Object(1, "options");
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
  const uint32_t n_ctx_train = static_cast<uint32_t>(llama_model_n_ctx_train(model->model));
  const uint32_t n_ctx = p.n_ctx == 0 ? n_ctx_train : p.n_ctx;
  if (n_ctx < p.n_seq_max) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "contextSize must be at least the number of sequences");
  }
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
  out.Set("canShift", llama_memory_can_shift(llama_get_memory(h->ctx)));
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

#undef LLAMEM_LOCK_OR_BUSY

// Bytes per buffer type for the model's weights, this context's KV cache and its compute buffers.
Napi::Value Context::Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& [buft, mb] : llama_get_memory_breakdown(h->ctx)) {
    Napi::Object row = Napi::Object::New(env);
    row.Set("bufferType", ggml_backend_buft_name(buft));
    ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
    row.Set("device", dev != nullptr ? Napi::Value(Napi::String::New(env, ggml_backend_dev_name(dev))) : env.Null());
    row.Set("host", ggml_backend_buft_is_host(buft));
    row.Set("model", static_cast<double>(mb.model));
    row.Set("context", static_cast<double>(mb.context));
    row.Set("compute", static_cast<double>(mb.compute));
    out.Set(i++, row);
  }
  return out;
}

Napi::Value Context::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckTag(env, info.This(), kTag, "Context");
  if (handle_) {
    // Aborts and waits for a worker still in flight (lib/ awaits its own operations first).
    handle_->Close();
    handle_.reset();
  }
  if (external_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
    external_bytes_ = 0;
  }
  return env.Undefined();
}

}  // namespace llamem
