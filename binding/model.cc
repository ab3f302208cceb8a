#include "model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "addon.h"
#include "args.h"
#include "errors.h"
#include "ggml-backend.h"
#include "llama-model.h"  // llama_model::memory_breakdown(): the only per-buffer view of a model alone
#include "rpc.h"
#include "worker.h"

namespace llamem {

const napi_type_tag Model::kTag = {0x6c6c616d656d4d4fULL, 0x44454c0000000001ULL};
const napi_type_tag Model::kExternalTag = {0x6c6c616d656d4d4fULL, 0x44454c4558540001ULL};

ModelHandle::~ModelHandle() {
  if (model == nullptr) return;
  if (!rpc.empty()) {
    const std::string gone = FirstDeadRpcServer(rpc, 1000);
    if (!gone.empty()) {
      std::fprintf(stderr, "llamem: the RPC server %s is gone: the model's memory is kept (freeing it would abort)\n", gone.c_str());
      return;
    }
  }
  llama_model_free(model);
}

namespace {

class LoadWorker : public PromiseWorker {
 public:
  // on_progress: empty for no progress reports.
  LoadWorker(Napi::Env env, LoadOptions opts, Napi::Function on_progress)
      : PromiseWorker(env), opts_(std::move(opts)), cancel_(std::make_shared<std::atomic<bool>>(false)) {
    if (!on_progress.IsEmpty()) {
      progress_ = Napi::ThreadSafeFunction::New(env, on_progress, "llamem-load-progress", 0, 1);
      progress_.Unref(env);  // a pending load must not keep the process alive on its own
      has_progress_ = true;
    }
    GetAddon(env).TrackCancel(cancel_);
  }

  ~LoadWorker() override {
    if (has_progress_) progress_.Release();
  }

  std::shared_ptr<std::atomic<bool>> cancel_flag() const { return cancel_; }

 protected:
  void Run() override {
    CheckModelPath(opts_.path);
    llama_model_params params = ToModelParams(opts_);
    params.progress_callback = &LoadWorker::OnProgress;
    params.progress_callback_user_data = this;
    TakeLastNativeError();
    llama_model* model = llama_model_load_from_file(opts_.path.c_str(), params);
    if (model == nullptr) {
      if (cancel_->load()) Throw("ERR_ABORTED", "model load was cancelled");
      std::string why = TakeLastNativeError();
      Throw("ERR_MODEL_LOAD", "failed to load model " + opts_.path + (why.empty() ? "" : ": " + why));
    }
    handle_ = std::make_shared<ModelHandle>();
    handle_->model = model;
    for (const llama_device& d : model->devices) {
      std::string e = d.is_meta ? "" : RpcEndpointOf(d.dev);
      if (!e.empty() && std::find(handle_->rpc.begin(), handle_->rpc.end(), e) == handle_->rpc.end()) handle_->rpc.push_back(e);
    }
    handle_->vocab = llama_model_get_vocab(model);
    handle_->n_vocab = llama_vocab_n_tokens(handle_->vocab);
    if (llama_vocab_type(handle_->vocab) == LLAMA_VOCAB_TYPE_NONE || handle_->n_vocab <= 0) {
      handle_.reset();
      Throw("ERR_UNSUPPORTED", "the model has no tokenizer (tokenizer.ggml.model is none); llamem cannot tokenize for it");
    }
    if (cancel_->load()) {
      handle_.reset();
      Throw("ERR_ABORTED", "model load was cancelled");
    }
  }

  Napi::Value Result(Napi::Env env) override {
    auto ext = NewTaggedExternal(env, new std::shared_ptr<ModelHandle>(handle_), Model::kExternalTag);
    return GetAddon(env).model_ctor.New({ext});
  }

 private:
  static bool OnProgress(float progress, void* user) {
    auto* self = static_cast<LoadWorker*>(user);
    if (self->has_progress_ && (progress >= 1.0f || progress - self->last_progress_ >= 0.01f)) {
      self->last_progress_ = progress;
      self->progress_.NonBlockingCall(new float(progress), [](Napi::Env env, Napi::Function fn, float* p) {
        double value = *p;
        delete p;
        if (env != nullptr && !fn.IsEmpty()) fn.Call({Napi::Number::New(env, value)});
      });
    }
    return !self->cancel_->load();
  }

  LoadOptions opts_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  Napi::ThreadSafeFunction progress_;
  bool has_progress_ = false;
  float last_progress_ = -1.0f;
  std::shared_ptr<ModelHandle> handle_;
};

class TokenizeWorker : public PromiseWorker {
 public:
  TokenizeWorker(Napi::Env env, std::shared_ptr<ModelHandle> h, std::string text, bool add_special, bool parse_special)
      : PromiseWorker(env), h_(std::move(h)), text_(std::move(text)), add_special_(add_special), parse_special_(parse_special) {}

 protected:
  void Run() override {
    if (text_.size() > static_cast<size_t>(INT32_MAX / 2)) Throw("ERR_INVALID_ARGUMENT", "text is too long to tokenize");
    if (add_special_) {
      // A vocabulary set to add a token it does not have would make llama.cpp assert.
      const llama_vocab* v = h_->vocab;
      if ((llama_vocab_get_add_bos(v) && llama_vocab_bos(v) == LLAMA_TOKEN_NULL) ||
          (llama_vocab_get_add_eos(v) && llama_vocab_eos(v) == LLAMA_TOKEN_NULL) ||
          (llama_vocab_get_add_sep(v) && llama_vocab_sep(v) == LLAMA_TOKEN_NULL)) {
        Throw("ERR_UNSUPPORTED", "the vocabulary adds a BOS/EOS/SEP token it does not define; tokenize with addSpecial: false");
      }
    }
    try {
      Tokenize();
    } catch (const std::out_of_range&) {
      // e.g. an SPM vocabulary without byte tokens meeting a character it cannot spell.
      Throw("ERR_UNSUPPORTED", "this vocabulary cannot tokenize the text (no token or byte fallback for some character)");
    }
  }

  void Tokenize() {
    const int32_t len = static_cast<int32_t>(text_.size());
    int32_t n = llama_tokenize(h_->vocab, text_.data(), len, nullptr, 0, add_special_, parse_special_);
    if (n == INT32_MIN) Throw("ERR_INVALID_ARGUMENT", "text produces too many tokens");
    tokens_.resize(static_cast<size_t>(n < 0 ? -n : n));
    if (!tokens_.empty()) {
      n = llama_tokenize(h_->vocab, text_.data(), len, tokens_.data(), static_cast<int32_t>(tokens_.size()), add_special_,
                         parse_special_);
      if (n < 0) Throw("ERR_INTERNAL", "tokenization size changed between passes");
      tokens_.resize(static_cast<size_t>(n));
    }
  }

  Napi::Value Result(Napi::Env env) override {
    auto arr = Napi::Int32Array::New(env, tokens_.size());
    std::copy(tokens_.begin(), tokens_.end(), arr.Data());
    return arr;
  }

 private:
  std::shared_ptr<ModelHandle> h_;
  std::string text_;
  bool add_special_, parse_special_;
  std::vector<llama_token> tokens_;
};

class DetokenizeWorker : public PromiseWorker {
 public:
  DetokenizeWorker(Napi::Env env, std::shared_ptr<ModelHandle> h, std::vector<llama_token> tokens, bool remove_special,
                   bool unparse_special)
      : PromiseWorker(env), h_(std::move(h)), tokens_(std::move(tokens)), remove_special_(remove_special),
        unparse_special_(unparse_special) {}

 protected:
  void Run() override {
    const int32_t n = static_cast<int32_t>(tokens_.size());
    text_.resize(static_cast<size_t>(n) * 8 + 16);
    int32_t len = llama_detokenize(h_->vocab, tokens_.data(), n, text_.data(), static_cast<int32_t>(text_.size()),
                                   remove_special_, unparse_special_);
    if (len < 0) {
      text_.resize(static_cast<size_t>(-len));
      len = llama_detokenize(h_->vocab, tokens_.data(), n, text_.data(), static_cast<int32_t>(text_.size()),
                             remove_special_, unparse_special_);
      if (len < 0) Throw("ERR_INTERNAL", "detokenization size changed between passes");
    }
    text_.resize(static_cast<size_t>(len));
  }

  Napi::Value Result(Napi::Env env) override { return Napi::Buffer<char>::Copy(env, text_.data(), text_.size()); }

 private:
  std::shared_ptr<ModelHandle> h_;
  std::vector<llama_token> tokens_;
  bool remove_special_, unparse_special_;
  std::string text_;
};

std::string MetaString(int32_t (*get)(const llama_model*, int32_t, char*, size_t), const llama_model* m, int32_t i) {
  std::vector<char> buf(256);
  int32_t n = get(m, i, buf.data(), buf.size());
  if (n < 0) return std::string();
  if (static_cast<size_t>(n) >= buf.size()) {
    buf.resize(static_cast<size_t>(n) + 1);
    n = get(m, i, buf.data(), buf.size());
    if (n < 0) return std::string();
  }
  return std::string(buf.data(), static_cast<size_t>(n));
}

}  // namespace

void CheckModelPath(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) Throw("ERR_FILE_NOT_FOUND", "model file not found: " + path);
  if (!S_ISREG(st.st_mode)) Throw("ERR_NOT_A_FILE", "not a regular file: " + path);
}

LoadOptions ParseLoadOptions(Napi::Env env, const std::string& path, Napi::Object o, const char* where) {
  Fields f(o, where);
  LoadOptions opts;
  opts.path = path;
  if (opts.path.empty()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "path must not be empty");
  opts.gpu_layers = static_cast<int32_t>(f.Int("gpuLayers", -1, INT32_MAX));
  opts.load_mode = static_cast<llama_load_mode>(f.Int("loadMode", LLAMA_LOAD_MODE_AUTO, LLAMA_LOAD_MODE_DIRECT_IO));
  opts.use_extra_bufts = f.Bool("repack");
  opts.vocab_only = f.Bool("vocabOnly");
  opts.devices = f.Strings("devices");
  opts.split_mode = static_cast<llama_split_mode>(f.Int("splitMode", LLAMA_SPLIT_MODE_NONE, LLAMA_SPLIT_MODE_ROW));
  opts.main_gpu = static_cast<int32_t>(f.Int("mainGpu", 0, static_cast<int64_t>(llama_max_devices()) - 1));
  for (double d : f.Numbers("tensorSplit", 0.0, std::numeric_limits<float>::max())) opts.tensor_split.push_back(static_cast<float>(d));
  if (opts.tensor_split.size() > llama_max_devices()) f.Fail("tensorSplit", "has more entries than llama.cpp has devices");
  const std::vector<std::string> patterns = f.Strings("overridePatterns");
  const std::vector<std::string> targets = f.Strings("overrideDevices");
  if (patterns.size() != targets.size()) f.Fail("overrideDevices", "must be as long as overridePatterns (one device per pattern)");
  // llama.cpp's list ends with a sentinel entry.
  if (patterns.size() + 1 > llama_max_tensor_buft_overrides()) f.Fail("overridePatterns", "has more entries than llama.cpp allows");
  for (size_t i = 0; i < patterns.size(); i++) opts.overrides.emplace_back(patterns[i], targets[i]);
  return opts;
}

namespace {

// llama.cpp's default devices (llama_prepare_model_devices: RPC servers first, then the GPUs
// with distinct ids, then integrated GPUs of one backend when there is no GPU), less the RPC
// servers in `gone`.
std::vector<ggml_backend_dev_t> DefaultDevicesWithout(const std::vector<std::string>& gone) {
  std::vector<ggml_backend_dev_t> rpc, gpus, igpus;
  for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
    ggml_backend_dev_t dev = ggml_backend_dev_get(i);
    const enum ggml_backend_dev_type type = ggml_backend_dev_type(dev);
    const std::string endpoint = RpcEndpointOf(dev);
    if (!endpoint.empty()) {
      if (std::find(gone.begin(), gone.end(), endpoint) == gone.end()) rpc.push_back(dev);
    } else if (type == GGML_BACKEND_DEVICE_TYPE_GPU) {
      ggml_backend_dev_props props;
      ggml_backend_dev_get_props(dev, &props);
      bool seen = false;
      for (ggml_backend_dev_t g : gpus) {
        ggml_backend_dev_props gp;
        ggml_backend_dev_get_props(g, &gp);
        if (props.device_id && gp.device_id && std::strcmp(props.device_id, gp.device_id) == 0) seen = true;
      }
      if (!seen) gpus.push_back(dev);
    } else if (type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
      if (igpus.empty() || ggml_backend_dev_backend_reg(dev) == ggml_backend_dev_backend_reg(igpus.back())) igpus.push_back(dev);
    }
  }
  std::vector<ggml_backend_dev_t> out = rpc;
  out.insert(out.end(), gpus.begin(), gpus.end());
  if (gpus.empty()) out.insert(out.end(), igpus.begin(), igpus.end());
  return out;
}

}  // namespace

llama_model_params ToModelParams(LoadOptions& opts) {
  llama_model_params params = llama_model_default_params();
  // ggml-rpc aborts on the first use of a server that is gone: a device named explicitly is an
  // error, and the default list leaves such servers out.
  auto device = [](const std::string& name) {
    ggml_backend_dev_t d = ggml_backend_dev_by_name(name.c_str());
    if (d == nullptr) Throw("ERR_INVALID_ARGUMENT", "no device named " + name + "; see listDevices()");
    const std::string endpoint = RpcEndpointOf(d);
    if (!endpoint.empty()) CheckRpcServers({endpoint}, "the device " + name);
    return d;
  };
  opts.device_ptrs.clear();
  for (const std::string& name : opts.devices) opts.device_ptrs.push_back(device(name));
  bool listed = !opts.device_ptrs.empty();
  if (!listed) {
    std::vector<std::string> gone;
    for (const std::string& e : RegisteredRpcServers()) {
      if (!RpcServerAlive(e, kRpcCheckTimeoutMs)) gone.push_back(e);
    }
    if (!gone.empty()) {
      // Possibly empty: then the model runs on the CPU alone.
      opts.device_ptrs = DefaultDevicesWithout(gone);
      listed = true;
    }
  }
  if (listed) {
    opts.device_ptrs.push_back(nullptr);
    params.devices = opts.device_ptrs.data();
  }
  opts.override_ptrs.clear();
  for (const auto& [pattern, name] : opts.overrides) {
    opts.override_ptrs.push_back({pattern.c_str(), ggml_backend_dev_buffer_type(device(name))});
  }
  if (!opts.override_ptrs.empty()) {
    opts.override_ptrs.push_back({nullptr, nullptr});
    params.tensor_buft_overrides = opts.override_ptrs.data();
  }
  if (!opts.tensor_split.empty()) {
    opts.tensor_split.resize(llama_max_devices(), 0.0f);
    params.tensor_split = opts.tensor_split.data();
  }
  params.split_mode = opts.split_mode;
  params.main_gpu = opts.main_gpu;
  params.n_gpu_layers = opts.gpu_layers;
  params.load_mode = opts.load_mode;
  params.use_extra_bufts = opts.use_extra_bufts;
  params.vocab_only = opts.vocab_only;
  params.no_alloc = opts.no_alloc;
  return params;
}

std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special) {
  char small[64];
  int32_t n = llama_token_to_piece(vocab, token, small, sizeof(small), 0, special);
  if (n >= 0) return std::string(small, static_cast<size_t>(n));
  std::string big(static_cast<size_t>(-n), '\0');
  n = llama_token_to_piece(vocab, token, big.data(), static_cast<int32_t>(big.size()), 0, special);
  if (n < 0) return std::string();
  big.resize(static_cast<size_t>(n));
  return big;
}

void Model::Init(Napi::Env env, Napi::Object exports, Addon& addon) {
  Napi::Function ctor = DefineClass(env, "Model", {
      StaticMethod("load", &Model::Load),
      StaticMethod("estimate", &Model::Estimate),
      InstanceMethod("info", &Model::Info),
      InstanceMethod("tokenize", &Model::Tokenize),
      InstanceMethod("detokenize", &Model::Detokenize),
      InstanceMethod("tokenToPiece", &Model::TokenToPiece),
      InstanceMethod("applyChatTemplate", &Model::ApplyChatTemplate),
      InstanceMethod("memory", &Model::Memory),
      InstanceMethod("dispose", &Model::Dispose),
      InstanceMethod("loadAdapter", &Model::LoadAdapter),
      StaticMethod("disposeAdapter", &Model::DisposeAdapter),
  });
  addon.model_ctor = Napi::Persistent(ctor);
  exports.Set("Model", ctor);
}

Model::Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1) throw MakeError(env, "ERR_INVALID_ARGUMENT", "Model cannot be constructed directly; use loadModel()");
  handle_ = *TaggedExternal<std::shared_ptr<ModelHandle>>(env, info[0], kExternalTag,
                                                          "Model cannot be constructed directly; use loadModel()");
  napi_type_tag_object(env, info.This(), &kTag);
  if (handle_ && handle_->model != nullptr) {
    external_bytes_ = static_cast<int64_t>(llama_model_size(handle_->model));
    Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
  }
}

Model::~Model() {
  // Backstop only: dispose() normally released the handle and the external memory already.
  if (external_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
  }
}

std::shared_ptr<ModelHandle> Model::HandleOf(Napi::Env env, Napi::Value value) {
  CheckTag(env, value, kTag, "Model");
  return Model::Unwrap(value.As<Napi::Object>())->Live(env);
}

std::shared_ptr<ModelHandle> Model::Live(Napi::Env env) const {
  if (!handle_) throw MakeError(env, "ERR_DISPOSED", "the model was disposed");
  return handle_;
}

Napi::Value Model::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "Model.load(path, options, onProgress)");
  LoadOptions opts = ParseLoadOptions(env, args.String(0, "path"), args.Object(1, "options"), "options");
  Napi::Value progress = args.At(2, "onProgress");
  Napi::Function on_progress;
  if (progress.IsFunction()) {
    on_progress = progress.As<Napi::Function>();
  } else if (!progress.IsNull()) {
    args.Fail("onProgress", "must be a function or null");
  }
  auto* worker = new LoadWorker(env, std::move(opts), on_progress);
  auto cancel = worker->cancel_flag();
  Napi::Promise promise = worker->Start();
  // The caller gets a cancel function alongside the promise (AbortSignal support in lib/).
  Napi::Object out = Napi::Object::New(env);
  out.Set("promise", promise);
  out.Set("cancel", Napi::Function::New(env, [cancel](const Napi::CallbackInfo& i) {
            cancel->store(true);
            return i.Env().Undefined();
          }));
  return out;
}

Napi::Value Model::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = HandleOf(env, info.This());
  const llama_model* m = h->model;
  const llama_vocab* v = h->vocab;
  Napi::Object out = Napi::Object::New(env);
  char desc[256] = {0};
  llama_model_desc(m, desc, sizeof(desc));
  out.Set("description", desc);
  out.Set("size", static_cast<double>(llama_model_size(m)));
  out.Set("parameters", static_cast<double>(llama_model_n_params(m)));
  out.Set("trainedContextSize", llama_model_n_ctx_train(m));
  out.Set("embeddingSize", llama_model_n_embd(m));
  out.Set("layers", llama_model_n_layer(m));
  // llama.cpp aborts on per-layer queries of a model without layers (vocab-only files).
  const bool has_layers = llama_model_n_layer(m) > 0;
  out.Set("heads", has_layers ? llama_model_n_head(m) : 0);
  out.Set("kvHeads", has_layers ? llama_model_n_head_kv(m) : 0);
  out.Set("slidingWindow", llama_model_n_swa(m));
  out.Set("vocabSize", llama_vocab_n_tokens(v));
  out.Set("vocabType", static_cast<int32_t>(llama_vocab_type(v)));
  out.Set("bos", llama_vocab_bos(v));
  out.Set("eos", llama_vocab_eos(v));
  out.Set("eot", llama_vocab_eot(v));
  out.Set("addBos", llama_vocab_get_add_bos(v));
  out.Set("addEos", llama_vocab_get_add_eos(v));
  out.Set("sep", llama_vocab_sep(v));
  out.Set("addSep", llama_vocab_get_add_sep(v));
  out.Set("hasEncoder", llama_model_has_encoder(m));
  out.Set("hasDecoder", llama_model_has_decoder(m));
  out.Set("recurrent", llama_model_is_recurrent(m));
  ggml_backend_dev_t out_dev = m->dev_output();
  out.Set("outputDevice", out_dev != nullptr ? ggml_backend_dev_name(out_dev) : "");
  const char* tmpl = llama_model_chat_template(m, nullptr);
  out.Set("chatTemplate", tmpl != nullptr ? Napi::Value(Napi::String::New(env, tmpl)) : env.Null());
  Napi::Object meta = Napi::Object::New(env);
  const int32_t n = llama_model_meta_count(m);
  for (int32_t i = 0; i < n; i++) {
    meta.Set(MetaString(llama_model_meta_key_by_index, m, i), MetaString(llama_model_meta_val_str_by_index, m, i));
  }
  out.Set("metadata", meta);
  return out;
}

Napi::Value Model::Tokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = HandleOf(env, info.This());
  Args args(info, "tokenize(text, addSpecial, parseSpecial)");
  std::string text = args.String(0, "text");
  bool add_special = args.Bool(1, "addSpecial");
  bool parse_special = args.Bool(2, "parseSpecial");
  return (new TokenizeWorker(env, std::move(h), std::move(text), add_special, parse_special))->Start();
}

Napi::Value Model::Detokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = HandleOf(env, info.This());
  Args args(info, "detokenize(tokens, removeSpecial, unparseSpecial)");
  std::vector<llama_token> tokens = args.Tokens(0, "tokens", h->n_vocab);
  bool remove_special = args.Bool(1, "removeSpecial");
  bool unparse_special = args.Bool(2, "unparseSpecial");
  return (new DetokenizeWorker(env, std::move(h), std::move(tokens), remove_special, unparse_special))->Start();
}

Napi::Value Model::TokenToPiece(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = HandleOf(env, info.This());
  Args args(info, "tokenToPiece(token, special)");
  llama_token token = args.Token(0, "token", h->n_vocab);
  bool special = args.Bool(1, "special");
  std::string piece = TokenPiece(h->vocab, token, special);
  return Napi::Buffer<char>::Copy(env, piece.data(), piece.size());
}

Napi::Value Model::ApplyChatTemplate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = HandleOf(env, info.This());
  Args args(info, "applyChatTemplate(messages, addAssistant, template)");
  Napi::Array arr = args.Array(0, "messages");
  bool add_assistant = args.Bool(1, "addAssistant");
  Napi::Value given = args.At(2, "template");
  std::string tmpl;
  if (given.IsString()) {
    tmpl = given.As<Napi::String>().Utf8Value();
  } else if (!given.IsNull()) {
    args.Fail("template", "must be a string or null (null: the model's own)");
  } else {
    const char* t = llama_model_chat_template(h->model, nullptr);
    if (t == nullptr) throw MakeError(env, "ERR_INVALID_ARGUMENT", "the model has no chat template; pass one or use raw completion");
    tmpl = t;
  }
  std::vector<std::string> roles, contents;
  size_t total = 0;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value item = arr.Get(i);
    if (!item.IsObject()) throw MakeError(env, "ERR_INVALID_ARGUMENT", "each message must be { role, content }");
    Napi::Object msg = item.As<Napi::Object>();
    Napi::Value role = msg.Get("role"), content = msg.Get("content");
    if (!role.IsString() || !content.IsString()) {
      throw MakeError(env, "ERR_INVALID_ARGUMENT", "each message must have string role and content");
    }
    roles.push_back(role.As<Napi::String>().Utf8Value());
    contents.push_back(content.As<Napi::String>().Utf8Value());
    total += roles.back().size() + contents.back().size();
  }
  std::vector<llama_chat_message> msgs;
  for (size_t i = 0; i < roles.size(); i++) msgs.push_back({roles[i].c_str(), contents[i].c_str()});
  std::vector<char> buf(total * 2 + 256);
  int32_t n = llama_chat_apply_template(tmpl.c_str(), msgs.data(), msgs.size(), add_assistant, buf.data(),
                                        static_cast<int32_t>(buf.size()));
  if (n < 0) throw MakeError(env, "ERR_INVALID_ARGUMENT", "this chat template is not supported by llama.cpp's template engine");
  if (static_cast<size_t>(n) > buf.size()) {
    buf.resize(static_cast<size_t>(n));
    n = llama_chat_apply_template(tmpl.c_str(), msgs.data(), msgs.size(), add_assistant, buf.data(),
                                  static_cast<int32_t>(buf.size()));
  }
  return Napi::String::New(env, buf.data(), static_cast<size_t>(n));
}

namespace {

// Drops a handle off the JS thread: when it is the last reference, freeing the weights (and
// unmapping the file) can take milliseconds per hundred MiB.
class ReleaseWorker : public PromiseWorker {
 public:
  ReleaseWorker(Napi::Env env, std::shared_ptr<ModelHandle> h) : PromiseWorker(env), h_(std::move(h)) {}

 protected:
  void Run() override { h_.reset(); }

 private:
  std::shared_ptr<ModelHandle> h_;
};

}  // namespace

// memory() -> [{ bufferType, device, host, model }]: bytes of the weights per buffer type.
Napi::Value Model::Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = HandleOf(env, info.This());
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& [buft, size] : h->model->memory_breakdown()) {
    ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
    Napi::Object row = Napi::Object::New(env);
    row.Set("bufferType", ggml_backend_buft_name(buft));
    row.Set("device", dev != nullptr ? Napi::Value(Napi::String::New(env, ggml_backend_dev_name(dev))) : env.Null());
    // As in the context breakdown: the CPU backend's extra (repacked) types are host memory too.
    row.Set("host", ggml_backend_buft_is_host(buft) || dev == nullptr || ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU);
    row.Set("model", static_cast<double>(size));
    row.Set("context", 0.0);
    row.Set("compute", 0.0);
    out.Set(i++, row);
  }
  return out;
}

// dispose() -> Promise<void>: the model is freed once its contexts and workers let go.
Napi::Value Model::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckTag(env, info.This(), kTag, "Model");
  auto* worker = new ReleaseWorker(env, std::move(handle_));
  handle_.reset();
  if (external_bytes_ != 0) {
    Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
    external_bytes_ = 0;
  }
  return worker->Start();
}

}  // namespace llamem
