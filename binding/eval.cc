// Evaluation: one batched llama_decode over several sequences, then each one's sampling. The
// batch is filled in one place (FillBatch) and checked to fit before it is filled. An entry can
// end with draft tokens to verify (speculative decoding): it is sampled at every draft position
// and keeps the drafts up to the first one its own sample disagrees with.
//
// With a loop (evalBatch's second argument), the worker goes on by itself: each step feeds the
// tokens it sampled back as the next batch, without a round trip through JS, and streams every
// step's results to lib/'s engine through a thread-safe function (or, when no job in the batch
// consumes pieces as they come, hands them all over before the promise settles, so the JS thread
// is not woken once per token while ggml's threads want every core). lib/ says how far each entry
// may go (its limits); it halts the loop (haltLoop) when a job ends for a reason only it knows
// (a stop string, a cancel) or other work waits, and removes any cell decoded past that end.
#include <algorithm>
#include <deque>
#include <cmath>
#include <string>
#include <vector>

#include "args.h"
#include "context.h"
#include "errors.h"
#include "rpc.h"
#include "sampler.h"
#include "worker.h"

namespace llamem {

namespace {

// Throws ERR_DECODE / ERR_CONTEXT_FULL / ERR_ABORTED for a llama_decode return code.
void CheckDecode(int32_t rc) {
  if (rc == 0) return;
  if (rc == 1) Throw("ERR_CONTEXT_FULL", "no free KV cache slot for the batch; use a larger contextSize or remove tokens");
  if (rc == 2) Throw("ERR_ABORTED", "evaluation was aborted");
  std::string why = TakeLastNativeError();
  Throw("ERR_DECODE", "llama_decode failed with code " + std::to_string(rc) + (why.empty() ? "" : ": " + why));
}

struct BatchEntry {
  int32_t seq = -1;
  std::vector<llama_token> tokens;
  std::shared_ptr<SamplerHandle> sampler;  // null: decode only
  bool accept = false;  // feed the tokens to the sampler's history (penalties see the prompt)
  bool sample = false;  // sample one token after the decode
  // With a loop: the most decodes this entry may take in this call, the first included.
  int32_t steps = 1;
  llama_pos start = 0;  // filled off-thread: the sequence's next position
  int32_t last = -1;    // the batch index of the entry's last token
  // The last `draft` tokens are a draft to verify: sampled at each of them and after the last.
  int32_t draft = 0;
  llama_token token = -1;
  bool eog = false;
  bool backend = false;  // the token came from the backend sampler (llama_get_sampled_token_ith)
  std::string piece;
  // With a draft: every token sampled (the first `size - 1` equal the accepted drafts) and the
  // pieces of those that are not end-of-generation.
  std::vector<llama_token> sampled;
  std::vector<std::string> pieces;
  // Log-probabilities over the raw logits: -1 off; else the sampled token's and the top n.
  int32_t logprobs = -1;
  float logprob = 0.0f;
  std::vector<llama_token> top_tokens;
  std::vector<float> top_logprobs;
};

// The log-softmax of the raw logits at batch index `i`: the sampled token's value and the `n`
// most likely tokens' (what the model says, before any sampler changes it).
void LogProbs(llama_context* ctx, int32_t n_vocab, BatchEntry& e) {
  const float* logits = llama_get_logits_ith(ctx, e.last);
  if (logits == nullptr) return;
  float max = logits[0];
  for (int32_t t = 1; t < n_vocab; t++) max = std::max(max, logits[t]);
  double sum = 0.0;
  for (int32_t t = 0; t < n_vocab; t++) sum += std::exp(static_cast<double>(logits[t] - max));
  const float lse = max + static_cast<float>(std::log(sum));
  e.logprob = logits[e.token] - lse;
  const int32_t n = std::min(e.logprobs, n_vocab);
  if (n <= 0) return;
  std::vector<llama_token> ids(static_cast<size_t>(n_vocab));
  for (int32_t t = 0; t < n_vocab; t++) ids[static_cast<size_t>(t)] = t;
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [logits](llama_token a, llama_token b) { return logits[a] > logits[b]; });
  for (int32_t k = 0; k < n; k++) {
    e.top_tokens.push_back(ids[static_cast<size_t>(k)]);
    e.top_logprobs.push_back(logits[ids[static_cast<size_t>(k)]] - lse);
  }
}

// The one batch filler: each entry's tokens at the end of its sequence, logits for its last
// token and its draft tokens. The caller checked that the entries fit the batch (sum of tokens
// <= n_batch).
void FillBatch(llama_batch& b, std::vector<BatchEntry>& entries) {
  b.n_tokens = 0;
  for (BatchEntry& entry : entries) {
    for (size_t j = 0; j < entry.tokens.size(); j++) {
      const int32_t i = b.n_tokens++;
      b.token[i] = entry.tokens[j];
      b.pos[i] = entry.start + static_cast<llama_pos>(j);
      b.n_seq_id[i] = 1;
      b.seq_id[i][0] = entry.seq;
      b.logits[i] = (j + 1 + static_cast<size_t>(entry.draft) >= entry.tokens.size()) ? 1 : 0;
    }
    entry.last = b.n_tokens - 1;
  }
}

// One entry's result as lib/ reads it (NativeBatchResult).
Napi::Object EntryToJs(Napi::Env env, const BatchEntry& entry, int64_t decode_us, int64_t done_us) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("seq", entry.seq);
  r.Set("evaluated", static_cast<double>(entry.tokens.size()));
  r.Set("decodeUs", static_cast<double>(decode_us));
  r.Set("doneUs", static_cast<double>(done_us));
  if (entry.sample && entry.draft > 0) {
    Napi::Int32Array ids = Napi::Int32Array::New(env, entry.sampled.size());
    std::copy(entry.sampled.begin(), entry.sampled.end(), ids.Data());
    Napi::Array pieces = Napi::Array::New(env, entry.pieces.size());
    for (uint32_t k = 0; k < entry.pieces.size(); k++) {
      pieces.Set(k, Napi::Buffer<char>::Copy(env, entry.pieces[k].data(), entry.pieces[k].size()));
    }
    r.Set("sampled", ids);
    r.Set("pieces", pieces);
    r.Set("eog", entry.eog);
  } else if (entry.sample) {
    r.Set("token", entry.token);
    r.Set("eog", entry.eog);
    r.Set("backend", entry.backend);
    r.Set("piece", Napi::Buffer<char>::Copy(env, entry.piece.data(), entry.piece.size()));
    if (entry.logprobs >= 0) {
      r.Set("logprob", entry.logprob);
      Napi::Int32Array ids = Napi::Int32Array::New(env, entry.top_tokens.size());
      std::copy(entry.top_tokens.begin(), entry.top_tokens.end(), ids.Data());
      Napi::Float32Array lps = Napi::Float32Array::New(env, entry.top_logprobs.size());
      std::copy(entry.top_logprobs.begin(), entry.top_logprobs.end(), lps.Data());
      r.Set("topTokens", ids);
      r.Set("topLogprobs", lps);
    }
  }
  return r;
}

Napi::Array StepToJs(Napi::Env env, const std::vector<BatchEntry>& entries, int64_t decode_us, int64_t done_us) {
  Napi::Array out = Napi::Array::New(env, entries.size());
  for (uint32_t e = 0; e < entries.size(); e++) out.Set(e, EntryToJs(env, entries[e], decode_us, done_us));
  return out;
}

// A loop's finished steps, waiting for the JS thread. Both the thread-safe function's calls and
// the worker's completion drain it, so steps reach lib/ in order and all before the promise
// settles, whichever runs first.
struct StepQueue {
  struct Step {
    int64_t decode_us = 0;
    int64_t done_us = 0;
    std::vector<BatchEntry> entries;
  };
  std::mutex mu;
  std::deque<Step> steps;
  // The first error thrown by the JS callback: the loop halts and the promise rejects with it.
  Napi::ObjectReference error;
  bool failed = false;

  void Push(int64_t decode_us, int64_t done_us, const std::vector<BatchEntry>& entries) {
    std::lock_guard<std::mutex> lock(mu);
    steps.push_back({decode_us, done_us, entries});
  }

  // On the JS thread: hands every queued step to `on_step`, in order.
  void Drain(Napi::Env env, Napi::Function on_step, std::atomic<bool>& halt) {
    for (;;) {
      Step step;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (steps.empty()) return;
        step = std::move(steps.front());
        steps.pop_front();
      }
      if (failed) continue;
      try {
        Napi::HandleScope scope(env);
        on_step.Call({StepToJs(env, step.entries, step.decode_us, step.done_us)});
      } catch (const Napi::Error& e) {
        failed = true;
        error = Napi::Persistent(e.Value());
        halt.store(true);
      }
    }
  }
};

// All entries' tokens in one llama_decode (continuous batching), then each entry's sampling;
// with a loop, further steps on the sampled tokens (see the top of this file).
class EvalBatchWorker : public PromiseWorker {
 public:
  struct Loop {
    int32_t steps = 1;       // most decodes in this call
    int64_t max_us = 0;      // no further step starts after this long (0: no limit)
    bool stream = true;      // each step reaches onStep as it ends (false: all of them before settling)
    Napi::Function on_step;  // empty: no loop, the promise resolves with the one step's results
  };

  EvalBatchWorker(Napi::Env env, std::shared_ptr<ContextHandle> h, std::vector<BatchEntry> entries, Loop loop)
      : PromiseWorker(env), h_(std::move(h)), entries_(std::move(entries)), steps_(loop.steps), max_us_(loop.max_us), stream_(loop.stream) {
    if (!loop.on_step.IsEmpty()) {
      queue_ = std::make_shared<StepQueue>();
      on_step_ = Napi::Persistent(loop.on_step);
      tsfn_ = Napi::ThreadSafeFunction::New(env, loop.on_step, "llamem-steps", 0, 1);
      tsfn_.Unref(env);  // the worker in flight keeps the process alive; this must not add to it
      has_tsfn_ = true;
    }
  }

  ~EvalBatchWorker() override {
    if (has_tsfn_) tsfn_.Release();
  }

 protected:
  void Run() override {
    std::lock_guard<std::mutex> lock(h_->mu);
    llama_context* ctx = h_->ctx;
    if (ctx == nullptr) Throw("ERR_DISPOSED", "the context was disposed");
    // Parked when the call ends, however it ends. Left awake between the calls of a generation,
    // ggml's polling workers took the cores while the JS thread queued the next call: on 2 cores
    // that call then blocked the JS thread for 1.5-6.7 ms (uv_queue_work), against 0.1 ms parked.
    ParkOnExit park{h_->pools};
    llama_memory_t mem = llama_get_memory(ctx);
    const int64_t t_start = llama_time_us();
    for (int32_t step = 0;; step++) {
      // ggml-rpc aborts the process on a server that is gone: fail the decode instead.
      CheckRpcServers(h_->model->rpc, "this decode");
      // Every sequence must fit before anything is decoded, so a failure changes nothing.
      for (BatchEntry& entry : entries_) {
        entry.start = llama_memory_seq_pos_max(mem, entry.seq) + 1;
        const int64_t n = static_cast<int64_t>(entry.tokens.size());
        if (entry.start + n > h_->n_ctx_seq) {
          Throw("ERR_CONTEXT_FULL", "the context is full: sequence " + std::to_string(entry.seq) + " holds " +
                                        std::to_string(entry.start) + " tokens and " + std::to_string(n) +
                                        " more do not fit in " + std::to_string(h_->n_ctx_seq) +
                                        "; use a larger contextSize or remove tokens");
        }
      }
      AttachSamplers(ctx, entries_);
      FillBatch(h_->batch, entries_);
      // A stale error line from earlier work on this thread must not explain this decode.
      TakeLastNativeError();
      const int64_t t0 = llama_time_us();
      CheckDecode(llama_decode(ctx, h_->batch));
      decode_us_ = llama_time_us() - t0;
      for (BatchEntry& entry : entries_) SampleEntry(ctx, mem, entry);
      done_us_ = llama_time_us();
      if (!queue_) return;  // no loop: Result() hands the one step over
      queue_->Push(decode_us_, done_us_, entries_);
      if (stream_) {
        tsfn_.NonBlockingCall([queue = queue_, h = h_](Napi::Env env, Napi::Function on_step) {
          if (env != nullptr && !on_step.IsEmpty()) queue->Drain(env, on_step, h->halt);
        });
      }
      if (step + 1 >= steps_ || h_->halt.load() || h_->abort.load()) return;
      if (max_us_ > 0 && llama_time_us() - t_start >= max_us_) return;
      if (!NextStep(step + 1)) return;
    }
  }

  // Each sampling entry's sequence gets the backend sampler it should have before the decode:
  // its own chain when it asked for one (SamplerHandle::Backend) and reads neither logits
  // (logprobs) nor several outputs (a draft), else none. A change makes llama.cpp reserve its
  // graphs again at the next decode, so a sampler stays attached until its sequence samples with
  // another one; a decode-only entry leaves it be (its output is not read).
  void AttachSamplers(llama_context* ctx, std::vector<BatchEntry>& entries) {
    using B = SamplerHandle::Backend;
    for (BatchEntry& e : entries) {
      if (!e.sampler || !e.sample) continue;
      std::shared_ptr<SamplerHandle>& slot = h_->backend_samplers[static_cast<size_t>(e.seq)];
      const bool want = e.draft == 0 && e.logprobs < 0 && (slot == e.sampler || e.sampler->backend == B::kWanted);
      if (want ? slot == e.sampler : slot == nullptr) continue;
      if (slot) {
        llama_set_sampler(ctx, e.seq, nullptr);
        slot->backend = B::kSpent;
        slot.reset();
      }
      if (!want) continue;
      e.sampler->backend = B::kSpent;  // whatever happens, its backend state is initialized now
      if (llama_set_sampler(ctx, e.seq, e.sampler->chain)) {
        e.sampler->backend = B::kAttached;
        slot = e.sampler;
      }
    }
  }

  // Turns the entries that go on into the next step's batch: each feeds the token it sampled.
  // An entry stops at end of generation, at its own step limit, or where the next token would
  // not fit its sequence; the loop stops when none goes on.
  bool NextStep(int32_t step) {
    std::vector<BatchEntry> next;
    for (const BatchEntry& e : entries_) {
      if (!e.sample || e.eog || e.draft > 0 || step >= e.steps) continue;
      if (e.start + static_cast<int64_t>(e.tokens.size()) + 1 > h_->n_ctx_seq) continue;
      BatchEntry n;
      n.seq = e.seq;
      n.tokens = {e.token};
      n.sampler = e.sampler;
      n.sample = true;
      n.logprobs = e.logprobs;
      n.steps = e.steps;
      next.push_back(std::move(n));
    }
    if (next.empty()) return false;
    entries_ = std::move(next);
    return true;
  }

  void SampleEntry(llama_context* ctx, llama_memory_t mem, BatchEntry& entry) {
    if (!entry.sampler) return;
    if (entry.accept) {
      // The prompt's tokens feed the penalties' history; the grammar only sees the reply.
      const int32_t skip = entry.sampler->grammar_stage;
      const int32_t n = llama_sampler_chain_n(entry.sampler->chain);
      for (llama_token t : entry.tokens) {
        if (skip < 0) {
          llama_sampler_accept(entry.sampler->chain, t);
          continue;
        }
        for (int32_t i = 0; i < n; i++) {
          if (i != skip) llama_sampler_accept(llama_sampler_chain_get(entry.sampler->chain, i), t);
        }
      }
    }
    if (!entry.sample) return;
    if (entry.draft > 0) {
      Verify(ctx, mem, entry);
      return;
    }
    entry.token = SampleToken(*entry.sampler, ctx, entry.last, &entry.backend);
    if (entry.logprobs >= 0) LogProbs(ctx, h_->model->n_vocab, entry);
    entry.eog = llama_vocab_is_eog(h_->model->vocab, entry.token);
    if (!entry.eog) entry.piece = TokenPiece(h_->model->vocab, entry.token, false);
  }

  // Samples at the position before each draft token and after the last, in order (each sample
  // is accepted by the chain, so grammar and penalties advance as if decoded one at a time), up
  // to the first disagreement or end of generation. The cells of the rejected drafts are removed
  // before the call returns, so the sequence holds exactly the tokens it kept.
  void Verify(llama_context* ctx, llama_memory_t mem, BatchEntry& entry) {
    const size_t n = entry.tokens.size();
    const size_t first_draft = n - static_cast<size_t>(entry.draft);
    const int32_t first = entry.last - entry.draft;
    for (int32_t i = 0; i <= entry.draft; i++) {
      const llama_token t = SampleToken(*entry.sampler, ctx, first + i);
      entry.sampled.push_back(t);
      if (llama_vocab_is_eog(h_->model->vocab, t)) {
        entry.eog = true;
        break;
      }
      entry.pieces.push_back(TokenPiece(h_->model->vocab, t, false));
      if (i == entry.draft || t != entry.tokens[first_draft + static_cast<size_t>(i)]) break;
    }
    const llama_pos kept = entry.start + static_cast<llama_pos>(first_draft + entry.sampled.size() - 1);
    if (!llama_memory_seq_rm(mem, entry.seq, kept, -1)) {
      Throw("ERR_DECODE", "could not remove the rejected draft tokens of sequence " + std::to_string(entry.seq));
    }
  }

  // Steps still queued reach lib/ before the promise settles, a failure included: lib/ books
  // what was decoded before the step that failed.
  void BeforeSettle(Napi::Env env) override {
    if (!queue_) return;
    queue_->Drain(env, on_step_.Value(), h_->halt);
    if (queue_->failed && !failure_.failed()) js_error_ = true;
  }

  Napi::Value Result(Napi::Env env) override {
    if (js_error_) throw Napi::Error(env, queue_->error.Value());
    if (queue_) return env.Undefined();
    return StepToJs(env, entries_, decode_us_, done_us_);
  }

 private:
  std::shared_ptr<ContextHandle> h_;
  std::vector<BatchEntry> entries_;
  int32_t steps_ = 1;
  int64_t max_us_ = 0;
  bool stream_ = true;
  int64_t decode_us_ = 0;
  int64_t done_us_ = 0;
  std::shared_ptr<StepQueue> queue_;
  Napi::FunctionReference on_step_;
  Napi::ThreadSafeFunction tsfn_;
  bool has_tsfn_ = false;
  bool js_error_ = false;
};

}  // namespace

// evalBatch([{ seq, tokens, sampler, accept, sample, logprobs, draft, steps }], loop) ->
// Promise<[{ seq, evaluated, decodeUs, token?, eog?, piece?, sampled?, pieces? }]>: every entry's
// tokens in one llama_decode, so the entries must fit one batch (n_batch tokens in all; lib/
// splits longer prompts). `loop` is null for one step, or { steps, maxMs, stream, onStep }: up to
// `steps` decodes, each step's results passed to onStep(results) in order (as each step ends with
// `stream`, else all together before the promise settles), and the promise resolves with
// undefined after the last.
Napi::Value Context::EvalBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "evalBatch(entries, loop)");
  Napi::Array arr = args.Array(0, "entries");
  EvalBatchWorker::Loop loop;
  Napi::Value lv = args.At(1, "loop");
  if (!lv.IsNull()) {
    if (!lv.IsObject()) args.Fail("loop", "must be null or an object { steps, maxMs, stream, onStep }");
    Fields lf(lv.As<Napi::Object>(), "loop");
    loop.steps = static_cast<int32_t>(lf.Int("steps", 1, 1 << 20));
    loop.max_us = static_cast<int64_t>(lf.Number("maxMs", 0, 1e9) * 1000.0);
    loop.stream = lf.Bool("stream");
    Napi::Value fn = lf.Value("onStep");
    if (!fn.IsFunction()) lf.Fail("onStep", "must be a function");
    loop.on_step = fn.As<Napi::Function>();
  }
  if (arr.Length() == 0) args.Fail("entries", "must not be empty");
  std::vector<BatchEntry> entries;
  int64_t total = 0;
  int64_t outputs = 0;  // the last token of each entry, and each draft token
  std::vector<bool> seen(static_cast<size_t>(h->n_seq_max), false);
  for (uint32_t i = 0; i < arr.Length(); i++) {
    const std::string where = "entries[" + std::to_string(i) + "]";
    Napi::Value item = arr.Get(i);
    if (!item.IsObject()) args.Fail(where.c_str(), "must be an object { seq, tokens, sampler, accept, sample }");
    Fields f(item.As<Napi::Object>(), where);
    BatchEntry e;
    Napi::Int32Array ta = EntryTokens(f, *h, seen, e.seq);
    total += static_cast<int64_t>(ta.ElementLength());
    // Checked before copying, so a huge array is refused without a huge copy.
    if (total > h->n_batch) {
      args.Fail("entries", "hold more than the batch size of " + std::to_string(h->n_batch) + " tokens");
    }
    CopyTokens(f, *h, ta, e.tokens);
    Napi::Value s = f.Any("sampler");
    if (!s.IsNull()) e.sampler = Sampler::HandleOf(env, s);
    e.accept = f.Bool("accept");
    e.sample = f.Bool("sample");
    e.logprobs = static_cast<int32_t>(f.Int("logprobs", -1, 1 << 20));
    if (!e.sampler && e.sample) f.Fail("sample", "needs a sampler (sampler is null)");
    if (!e.sampler && e.accept) f.Fail("accept", "needs a sampler (sampler is null)");
    e.draft = static_cast<int32_t>(f.Int("draft", 0, static_cast<int64_t>(e.tokens.size()) - 1));
    e.steps = static_cast<int32_t>(f.Int("steps", 1, 1 << 20));
    if (e.draft > 0) {
      if (!e.sample) f.Fail("draft", "needs sample: true (the drafts are verified by sampling)");
      if (e.accept) f.Fail("draft", "cannot be given with accept (drafts follow a sampled token)");
      if (e.logprobs >= 0) f.Fail("draft", "cannot be given with logprobs");
      // A recurrent state cannot drop the rejected drafts' steps.
      if (llama_model_is_recurrent(h->model->model) || llama_model_is_hybrid(h->model->model)) f.Fail("draft", "is not supported on recurrent or hybrid models");
    }
    outputs += 1 + e.draft;
    if (outputs > h->n_outputs_max) {
      f.Fail("draft", "makes the batch ask for more than the context's " + std::to_string(h->n_outputs_max) +
                          " outputs (options.outputs: its sequences times one plus the most draft tokens)");
    }
    entries.push_back(std::move(e));
  }
  // A fresh operation starts un-aborted and un-halted; abort() or haltLoop() after this point acts on it.
  h->abort.store(false);
  h->halt.store(false);
  return (new EvalBatchWorker(env, std::move(h), std::move(entries), loop))->Start();
}

}  // namespace llamem
