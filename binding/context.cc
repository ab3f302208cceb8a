#include "context.h"

#include <string>
#include <vector>

#include <cstdio>

#include "args.h"
#include "errors.h"
#include "llama-context.h"  // llama_context::memory_update: KV changes llama.cpp defers to the next decode
#include "llama-ext.h"  // llama_get_memory_breakdown
#include "llama-model.h"  // hparams: per-layer head sizes for the cache checks
#include "rpc.h"
#include "worker.h"

namespace llamem {

const napi_type_tag Context::kTag = {0x6c6c616d656d4354ULL, 0x5854000000000002ULL};
const napi_type_tag Context::kExternalTag = {0x6c6c616d656d4354ULL, 0x5854455854000002ULL};

namespace {

// Why ggml cannot hold a KV cache in type `t` without crashing, or nullptr if it can. Facts of
// ggml, not a list of choices (lib/ holds that): the cache write (SET_ROWS) calls the CPU
// from_float unconditionally, the K*Q read (and V*KQ without flash attention) its vec_dot, and
// flash attention's V read asserts a to_float; removed types have none of them.
const char* KvTypeProblem(ggml_type t, bool is_v) {
  const ggml_type_traits_cpu* cpu = ggml_get_type_traits_cpu(t);
  if (cpu->from_float == nullptr) return "ggml cannot write it";
  if (cpu->vec_dot == nullptr) return "ggml cannot read it in attention";
  if (is_v && t != GGML_TYPE_F32 && ggml_get_type_traits(t)->to_float == nullptr) return "ggml cannot read it in flash attention";
  return nullptr;
}

bool AbortCallback(void* data) { return static_cast<std::atomic<bool>*>(data)->load(std::memory_order_relaxed); }

// llama.cpp defers two KV changes to the start of the next llama_decode: a copy between
// sequences in different streams (kvUnified false: seq_cp moves the cells' metadata at once and
// the data at the next update) and a K-shift. Reading or writing a sequence's cells before that
// would see the new metadata with the old data: a saved state missing the copied cells' data, or
// a restore the pending copy overwrites. Every worker that reads or writes cell data outside a
// decode applies them first, as the decode does (a no-op when nothing is pending).
void ApplyPendingKv(llama_context* ctx) { ctx->memory_update(false); }

// llama_memory_can_shift, except a quantized K cache whose heads are not a multiple of 64
// wide: this llama.cpp's K-shift graph for it (no Hadamard rotation) crashes the process.
bool CanShift(llama_context* ctx, const llama_model* model, const llama_context_params& p) {
  // A recurrent state holds no positions to move: llama_memory_can_shift says true for it anyway.
  if (llama_model_is_recurrent(model) || llama_model_is_hybrid(model)) return false;
  if (!llama_memory_can_shift(llama_get_memory(ctx))) return false;
  if (!ggml_is_quantized(p.type_k)) return true;
  const llama_hparams& hp = model->hparams;
  if (hp.n_layer() == 0) return false;
  for (uint32_t il = 0; il < hp.n_layer(); il++) {
    if (hp.n_embd_head_k(il) % 64 != 0) return false;
  }
  return true;
}

class CreateWorker : public PromiseWorker {
 public:
  CreateWorker(Napi::Env env, std::shared_ptr<ModelHandle> model, llama_context_params params, std::shared_ptr<ThreadPools> pools)
      : PromiseWorker(env), model_(std::move(model)), params_(params), pools_(std::move(pools)) {}

 protected:
  void Run() override {
    CheckContextFits(model_->model, params_);
    CheckRpcServers(model_->rpc, "creating the context");
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
    handle_->backend_samplers.resize(static_cast<size_t>(handle_->n_seq_max));
    handle_->n_ubatch = static_cast<int32_t>(llama_n_ubatch(ctx));
    handle_->n_outputs_max = static_cast<int32_t>(params_.n_outputs_max);
    handle_->embeddings = params_.embeddings;
    handle_->batch = llama_batch_init(handle_->n_batch, 0, 1);
    handle_->can_shift = CanShift(ctx, model_->model, params_);
    if (pools_) {
      handle_->pools = pools_;
    } else {
      handle_->pools = std::make_shared<ThreadPools>();
      ggml_threadpool_params tp = ggml_threadpool_params_default(params_.n_threads);
      handle_->pools->threadpool = ggml_threadpool_new(&tp);
      if (params_.n_threads_batch != params_.n_threads) {
        ggml_threadpool_params tpb = ggml_threadpool_params_default(params_.n_threads_batch);
        handle_->pools->threadpool_batch = ggml_threadpool_new(&tpb);
      }
      if (handle_->pools->threadpool == nullptr) Throw("ERR_CONTEXT_CREATE", "failed to start the CPU thread pool");
    }
    const ThreadPools& tp = *handle_->pools;
    llama_attach_threadpool(ctx, tp.threadpool, tp.threadpool_batch != nullptr ? tp.threadpool_batch : tp.threadpool);
    llama_set_abort_callback(ctx, AbortCallback, &handle_->abort);
  }

  Napi::Value Result(Napi::Env env) override {
    GetAddon(env).Track(handle_);
    auto ext = NewTaggedExternal(env, new std::shared_ptr<ContextHandle>(handle_), Context::kExternalTag);
    return GetAddon(env).context_ctor.New({ext});
  }

 private:
  std::shared_ptr<ModelHandle> model_;
  llama_context_params params_;
  std::shared_ptr<ThreadPools> pools_;
  std::shared_ptr<ContextHandle> handle_;
};

class StateGetWorker : public PromiseWorker {
 public:
  StateGetWorker(Napi::Env env, std::shared_ptr<ContextHandle> h, int32_t seq) : PromiseWorker(env), h_(std::move(h)), seq_(seq) {}

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(h_->mu);
    if (h_->ctx == nullptr) Throw("ERR_DISPOSED", "the context was disposed");
    CheckRpcServers(h_->model->rpc, "saving the state");
    // A pending K-shift runs a graph on ggml's workers: they must not poll on after it.
    ParkOnExit park{h_->pools};
    ApplyPendingKv(h_->ctx);
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
    CheckRpcServers(h_->model->rpc, "restoring the state");
    // A pending copy into this sequence's stream would overwrite the restored cells later.
    ParkOnExit park{h_->pools};
    ApplyPendingKv(h_->ctx);
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

}  // namespace

ThreadPools::~ThreadPools() {
  if (threadpool != nullptr) ggml_threadpool_free(threadpool);
  if (threadpool_batch != nullptr) ggml_threadpool_free(threadpool_batch);
}

void ThreadPools::Park() const {
  if (threadpool != nullptr) ggml_threadpool_pause(threadpool);
  if (threadpool_batch != nullptr) ggml_threadpool_pause(threadpool_batch);
}

void ContextHandle::Close() {
  abort.store(true);
  std::lock_guard<std::mutex> lock(mu);
  if (ctx != nullptr) {
    // With an RPC server gone, ggml aborts when told to free a buffer there: keep the context's
    // memory until the process exits instead (the model is kept too, see ~ModelHandle).
    const std::string gone = model && !model->rpc.empty() ? FirstDeadRpcServer(model->rpc, 1000) : "";
    if (gone.empty()) {
      llama_free(ctx);
    } else {
      std::fprintf(stderr, "llamem: the RPC server %s is gone: the context's memory is kept (freeing it would abort)\n", gone.c_str());
    }
    ctx = nullptr;
    // Only now may the adapters and samplers it pointed at be freed.
    adapters.clear();
    backend_samplers.clear();
    llama_batch_free(batch);
    batch = llama_batch{};
  }
  // After llama_free: the pools go with their last context.
  pools.reset();
  model.reset();
}

void Context::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "Context", {
      StaticMethod("create", &Context::Create),
      InstanceMethod("info", &Context::Info),
      InstanceMethod("abort", &Context::Abort),
      InstanceMethod("haltLoop", &Context::HaltLoop),
      InstanceMethod("seqPosRange", &Context::SeqPosRange),
      InstanceMethod("seqRemove", &Context::SeqRemove),
      InstanceMethod("seqShift", &Context::SeqShift),
      InstanceMethod("seqCopy", &Context::SeqCopy),
      InstanceMethod("stateSeqGet", &Context::StateSeqGet),
      InstanceMethod("stateSeqSet", &Context::StateSeqSet),
      InstanceMethod("evalBatch", &Context::EvalBatch),
      InstanceMethod("embedBatch", &Context::EmbedBatch),
      InstanceMethod("clear", &Context::Clear),
      InstanceMethod("setAdapters", &Context::SetAdapters),
      InstanceMethod("memory", &Context::Memory),
      InstanceMethod("dispose", &Context::Dispose),
  });
  addon.context_ctor = Napi::Persistent(ctor);
  exports.Set("Context", ctor);
}

Context::Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1) {
    throw MakeError(env, "ERR_INVALID_ARGUMENT", "Context cannot be constructed directly; use model.createContext()");
  }
  handle_ = *TaggedExternal<std::shared_ptr<ContextHandle>>(env, info[0], kExternalTag,
                                                            "Context cannot be constructed directly; use model.createContext()");
  napi_type_tag_object(env, info.This(), &kTag);
  // Tell V8 what the KV cache and compute buffers hold, so GC pressure reflects them.
  for (const MemoryRow& r : CollectBreakdown(handle_->ctx)) external_bytes_ += static_cast<int64_t>(r.context + r.compute);
  Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
}

Context::~Context() {
  if (external_bytes_ != 0) Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
  // handle_ drops here: if no worker holds it, ContextHandle's destructor closes the context.
}

std::shared_ptr<ContextHandle> Context::HandleOf(Napi::Env env, Napi::Value value) {
  CheckTag(env, value, kTag, "Context");
  auto h = Context::Unwrap(value.As<Napi::Object>())->handle_;
  if (!h || h->ctx == nullptr) throw MakeError(env, "ERR_DISPOSED", "the context was disposed");
  return h;
}

std::shared_ptr<ContextHandle> Context::Live(Napi::Env env, const Napi::CallbackInfo& info) const {
  CheckTag(env, info.This(), kTag, "Context");
  if (!handle_ || handle_->ctx == nullptr) throw MakeError(env, "ERR_DISPOSED", "the context was disposed");
  return handle_;
}

llama_context_params ParseContextParams(Napi::Object o, const char* where) {
  Fields f(o, where);
  llama_context_params p = llama_context_default_params();
  p.n_ctx = static_cast<uint32_t>(f.Int("contextSize", 0, 1 << 24));
  p.n_batch = static_cast<uint32_t>(f.Int("batchSize", 1, 1 << 20));
  p.n_ubatch = static_cast<uint32_t>(f.Int("ubatchSize", 1, p.n_batch));
  p.n_seq_max = static_cast<uint32_t>(f.Int("sequences", 1, static_cast<int64_t>(llama_max_parallel_sequences())));
  // llama.cpp reserves one output row per sequence in a buffer of n_batch rows, and asserts
  // (GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max), llama-context.cpp) when they do not fit.
  if (p.n_batch < p.n_seq_max) f.Fail("batchSize", "must be at least the number of sequences (llama.cpp keeps one output per sequence in a batch)");
  p.n_threads = static_cast<int32_t>(f.Int("threads", 1, 1024));
  p.n_threads_batch = static_cast<int32_t>(f.Int("threadsBatch", 1, 1024));
  p.flash_attn_type = static_cast<llama_flash_attn_type>(
      f.Int("flashAttention", LLAMA_FLASH_ATTN_TYPE_AUTO, LLAMA_FLASH_ATTN_TYPE_ENABLED));
  p.type_k = static_cast<ggml_type>(f.Int("typeK", 0, GGML_TYPE_COUNT - 1));
  p.type_v = static_cast<ggml_type>(f.Int("typeV", 0, GGML_TYPE_COUNT - 1));
  if (const char* why = KvTypeProblem(p.type_k, false)) f.Fail("typeK", std::string("cannot be a KV cache type: ") + why);
  if (const char* why = KvTypeProblem(p.type_v, true)) f.Fail("typeV", std::string("cannot be a KV cache type: ") + why);
  // Without flash attention V is stored transposed, which a quantized type cannot be.
  if (ggml_is_quantized(p.type_v) && p.flash_attn_type == LLAMA_FLASH_ATTN_TYPE_DISABLED) {
    f.Fail("typeV", "is quantized, which needs flash attention (flashAttention -1 or 1)");
  }
  p.offload_kqv = f.Bool("offloadKv");
  p.swa_full = f.Bool("swaFull");
  p.kv_unified = f.Bool("kvUnified");
  p.embeddings = f.Bool("embeddings");
  p.pooling_type = static_cast<enum llama_pooling_type>(f.Int("pooling", LLAMA_POOLING_TYPE_UNSPECIFIED, LLAMA_POOLING_TYPE_RANK));
  p.no_perf = true;
  // The logits rows one batch may ask for. llama.cpp reserves its graphs for this many (a
  // vocabulary-wide row each, and with backend sampling a padded copy of them all), and
  // GGML_ASSERTs that a batch fits (output_reserve); evalBatch checks each batch against it.
  p.n_outputs_max = static_cast<uint32_t>(f.Int("outputs", p.n_seq_max, p.n_batch));
  return p;
}

Napi::Int32Array EntryTokens(const Fields& f, const ContextHandle& h, std::vector<bool>& seen, int32_t& seq) {
  seq = static_cast<int32_t>(f.Int("seq", 0, h.n_seq_max - 1));
  if (seen[static_cast<size_t>(seq)]) f.Fail("seq", "repeats sequence " + std::to_string(seq) + "; name each sequence once");
  seen[static_cast<size_t>(seq)] = true;
  Napi::Value t = f.Value("tokens");
  if (!t.IsTypedArray() || t.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) f.Fail("tokens", "must be an Int32Array");
  Napi::Int32Array ta = t.As<Napi::Int32Array>();
  if (ta.ElementLength() == 0) f.Fail("tokens", "must not be empty");
  return ta;
}

void CopyTokens(const Fields& f, const ContextHandle& h, const Napi::Int32Array& ta, std::vector<llama_token>& out) {
  out.assign(ta.Data(), ta.Data() + ta.ElementLength());
  for (llama_token tok : out) {
    if (tok < 0 || tok >= h.model->n_vocab) {
      f.Fail("tokens", "contains token id " + std::to_string(tok) + " outside the vocabulary [0, " + std::to_string(h.model->n_vocab) + ")");
    }
  }
}

void CheckContextFits(const llama_model* model, const llama_context_params& p) {
  const uint32_t n_ctx = p.n_ctx == 0 ? static_cast<uint32_t>(llama_model_n_ctx_train(model)) : p.n_ctx;
  if (n_ctx < p.n_seq_max) Throw("ERR_INVALID_ARGUMENT", "contextSize must be at least the number of sequences");
  // llama.cpp reserves the pooling graph with min(n_ctx, n_ubatch) tokens split evenly over the
  // sequences; when they do not divide, mean pooling's matrix product has mismatched shapes and
  // ggml asserts (llama-graph.cpp build_pooling).
  if (p.embeddings && std::min(n_ctx, p.n_ubatch) % p.n_seq_max != 0) {
    Throw("ERR_INVALID_ARGUMENT", "an embedding context needs min(contextSize, ubatchSize) = " +
                                      std::to_string(std::min(n_ctx, p.n_ubatch)) + " to be a multiple of its " +
                                      std::to_string(p.n_seq_max) + " sequences");
  }
  // Cache rows must be whole quantization blocks, with or without flash attention (llama.cpp
  // checks only with it; without it ggml fails deep inside).
  const llama_hparams& hp = model->hparams;
  const int64_t bk = ggml_blck_size(p.type_k), bv = ggml_blck_size(p.type_v);
  for (uint32_t il = 0; il < hp.n_layer(); il++) {
    const uint32_t hk = hp.n_embd_head_k(il), hv = hp.n_embd_head_v(il);
    if (hk % bk != 0 || hv % bv != 0) {
      Throw("ERR_INVALID_ARGUMENT", "this model's attention heads are " + std::to_string(hk) + "/" + std::to_string(hv) +
                                        " wide (K/V), not a multiple of the KV cache types' blocks (" + std::to_string(bk) +
                                        "/" + std::to_string(bv) + ")");
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
  Args args(info, "Context.create(model, options, threadsOf)");
  auto model = Model::HandleOf(env, args.At(0, "model"));
  llama_context_params p = ParseContextParams(args.Object(1, "options"), "options");
  // threadsOf: null, or a Context whose thread pools the new one runs on (lib/ never computes
  // on both at once); their thread counts must match.
  Napi::Value of = args.At(2, "threadsOf");
  std::shared_ptr<ThreadPools> pools;
  if (!of.IsNull()) {
    auto owner = Context::HandleOf(env, of);
    if (llama_n_threads(owner->ctx) != p.n_threads || llama_n_threads_batch(owner->ctx) != p.n_threads_batch) {
      args.Fail("threadsOf", "has other thread counts than the options");
    }
    pools = owner->pools;
  }
  return (new CreateWorker(env, std::move(model), p, std::move(pools)))->Start();
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
  out.Set("embeddings", h->embeddings);
  out.Set("pooling", static_cast<double>(llama_pooling_type(h->ctx)));
  out.Set("embeddingSize", static_cast<double>(
      llama_pooling_type(h->ctx) == LLAMA_POOLING_TYPE_RANK ? static_cast<int32_t>(llama_model_n_cls_out(h->model->model))
                                                            : llama_model_n_embd_out(h->model->model)));
  return out;
}

Napi::Value Context::Abort(const Napi::CallbackInfo& info) {
  CheckTag(info.Env(), info.This(), kTag, "Context");
  if (handle_) handle_->abort.store(true);
  return info.Env().Undefined();
}

// haltLoop(): an evalBatch loop in flight stops after its current step (no lock: an atomic flag).
Napi::Value Context::HaltLoop(const Napi::CallbackInfo& info) {
  CheckTag(info.Env(), info.This(), kTag, "Context");
  if (handle_) handle_->halt.store(true);
  return info.Env().Undefined();
}

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
  // The breakdown reads the context's buffers, which a worker in flight may be changing.
  LLAMEM_LOCK_OR_BUSY(h);
  Napi::Object out = Napi::Object::New(env);
  out.Set("rows", BreakdownToJs(env, CollectBreakdown(h->ctx)));
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
  // Between KV streams (sequences without a unified cache) llama.cpp copies only whole sequences
  // and GGML_ASSERTs on a range (llama_kv_cache::seq_cp): refuse it here instead.
  const bool streams = h->n_seq_max > 1 && h->n_ctx_seq < h->n_ctx;
  if (streams && ((p0 > 0 && p0 + 1 < h->n_ctx_seq) || (p1 > 0 && p1 + 1 < h->n_ctx_seq))) {
    args.Fail("p0", "and p1 must be -1 (the whole sequence): a range is copied only within one KV stream (create the context with kvUnified)");
  }
  LLAMEM_LOCK_OR_BUSY(h);
  llama_memory_seq_cp(llama_get_memory(h->ctx), src, dst, p0, p1);
  return env.Undefined();
}

#undef LLAMEM_LOCK_OR_BUSY

// stateSeqGet(seq) -> Promise<Buffer>: the sequence's KV cells, copied to host memory.
Napi::Value Context::StateSeqGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "stateSeqGet(seq)");
  const int32_t seq = static_cast<int32_t>(args.Int(0, "seq", 0, h->n_seq_max - 1));
  // A fresh operation starts un-aborted (applying a pending K-shift computes a graph).
  h->abort.store(false);
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
