// llama_context: params, async create, sequences, state, memory breakdown; evalBatch (the
// batched decode and sampling) is in eval.cc.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "adapter.h"
#include "addon.h"
#include "ggml-cpu.h"
#include "llama.h"
#include "model.h"
#include "napi.h"

namespace llamem {

// Persistent ggml thread pools: without them ggml starts threads for every graph, which costs
// milliseconds per generated token. Shared by a context and a speculative draft beside it (lib/
// drives the draft in its target's work queue, so the two never compute at once: two pools of
// spinning threads on the same cores slow both several times over). Freed with the last holder.
struct ThreadPools {
  ggml_threadpool* threadpool = nullptr;
  ggml_threadpool* threadpool_batch = nullptr;
  ~ThreadPools();
  // Puts the workers to sleep now (ggml_threadpool_pause). After a graph they poll for the next
  // one before they sleep (threadpool poll 50: ~80 ms of a core after every call on a 2-core Xeon),
  // which takes a core from the app between calls; the next graph's kickoff wakes them.
  void Park() const;
};

// Parks the pools when a worker's Run ends, however it ends.
struct ParkOnExit {
  const std::shared_ptr<ThreadPools>& pools;
  ~ParkOnExit() {
    if (pools) pools->Park();
  }
};

// Owns a llama_context and its batch. Every operation that touches the context holds `mu`,
// so work on one context is serialized and Close() waits for the worker in flight.
struct SamplerHandle;

struct ContextHandle : public Closable {
  std::shared_ptr<ModelHandle> model;
  llama_context* ctx = nullptr;
  std::shared_ptr<ThreadPools> pools;
  llama_batch batch{};
  int32_t n_batch = 0;
  int32_t n_ctx = 0;
  int32_t n_ctx_seq = 0;
  int32_t n_seq_max = 0;
  int32_t n_ubatch = 0;
  int32_t n_outputs_max = 0;  // logits rows a batch may ask for (options.outputs)
  // Created with embeddings on: the context pools (embedBatch) rather than generates.
  bool embeddings = false;
  // Whether positions can be shifted (llama_memory_can_shift, minus the cases below).
  bool can_shift = false;
  std::mutex mu;
  std::atomic<bool> abort{false};
  // Ends an evalBatch loop after the step in flight (the step itself completes).
  std::atomic<bool> halt{false};
  // The LoRA adapters set on the context (llama.cpp keeps pointers to them): held until replaced.
  std::vector<std::shared_ptr<AdapterHandle>> adapters;
  // Each sequence's backend sampler (llama_set_sampler), or null: held while attached, since
  // llama.cpp keeps the pointer (eval.cc's AttachSamplers).
  std::vector<std::shared_ptr<SamplerHandle>> backend_samplers;

  ~ContextHandle() override { Close(); }
  void Close() override;
};

// One row of llama_get_memory_breakdown, copied out so workers can carry it to the JS thread.
struct MemoryRow {
  std::string buffer_type;
  std::string device;
  bool host = true;
  size_t model = 0, context = 0, compute = 0;
};
std::vector<MemoryRow> CollectBreakdown(const llama_context* ctx);
Napi::Array BreakdownToJs(Napi::Env env, const std::vector<MemoryRow>& rows);

// Context options parsed on the JS thread into llama_context_params (shared by create and
// estimate); `where` names the object in errors ("options", "contextOptions").
llama_context_params ParseContextParams(Napi::Object o, const char* where);
// Model-dependent checks of those params, off the JS thread (throws CodedError).
void CheckContextFits(const llama_model* model, const llama_context_params& p);

// Sequence operations run on the JS thread (they only touch cell metadata) but never while a
// worker holds the context: that is an ERR_BUSY rather than a data race.
#define LLAMEM_LOCK_OR_BUSY(h)                                                                  \
  std::unique_lock<std::mutex> lock((h)->mu, std::try_to_lock);                                 \
  if (!lock.owns_lock()) throw MakeError(env, "ERR_BUSY", "the context is busy evaluating; wait for it")

class Fields;
// One entry of a batch call (evalBatch, embedBatch): its sequence `seq` (in range, and named
// once: `seen` marks it) and its tokens, a non-empty Int32Array not yet copied (the caller checks
// its size limit first, so a huge array is refused without a huge copy).
Napi::Int32Array EntryTokens(const Fields& f, const ContextHandle& h, std::vector<bool>& seen, int32_t& seq);
// Copies an entry's tokens, every id checked against the vocabulary.
void CopyTokens(const Fields& f, const ContextHandle& h, const Napi::Int32Array& ta, std::vector<llama_token>& out);

class Context : public Napi::ObjectWrap<Context> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  static const napi_type_tag kTag;
  // Tags the External a create hands to the constructor, so nothing else can pose as one.
  static const napi_type_tag kExternalTag;

  explicit Context(const Napi::CallbackInfo& info);
  ~Context() override;

 private:
  static Napi::Value Create(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Abort(const Napi::CallbackInfo& info);
  Napi::Value HaltLoop(const Napi::CallbackInfo& info);
  Napi::Value SeqPosRange(const Napi::CallbackInfo& info);
  Napi::Value SeqRemove(const Napi::CallbackInfo& info);
  Napi::Value SeqShift(const Napi::CallbackInfo& info);
  Napi::Value SeqCopy(const Napi::CallbackInfo& info);
  Napi::Value StateSeqGet(const Napi::CallbackInfo& info);
  Napi::Value StateSeqSet(const Napi::CallbackInfo& info);
  Napi::Value EvalBatch(const Napi::CallbackInfo& info);
  // embed.cc
  Napi::Value EmbedBatch(const Napi::CallbackInfo& info);
  Napi::Value Clear(const Napi::CallbackInfo& info);
  // adapter.cc
  Napi::Value SetAdapters(const Napi::CallbackInfo& info);
  Napi::Value Memory(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  std::shared_ptr<ContextHandle> Live(Napi::Env env, const Napi::CallbackInfo& info) const;
  // The live handle of a Context object passed as an argument (type-tag checked).
  static std::shared_ptr<ContextHandle> HandleOf(Napi::Env env, Napi::Value value);

  std::shared_ptr<ContextHandle> handle_;
  int64_t external_bytes_ = 0;
};

}  // namespace llamem
