// llama_model: async load with progress and cancel, metadata, vocab, tokenize/detokenize,
// chat template.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "napi.h"
#include "llama.h"

namespace llamem {

class Addon;

// Owns a llama_model. Shared by the JS object, its contexts and workers in flight, so the
// model is freed only after the last of them lets go, whatever order they are disposed in.
struct ModelHandle {
  llama_model* model = nullptr;
  const llama_vocab* vocab = nullptr;
  int32_t n_vocab = 0;
  // The RPC servers ("host:port") of the devices the model uses: work that touches them checks
  // first that they are still there (ggml-rpc aborts the process otherwise; see rpc.h).
  std::vector<std::string> rpc;
  // Frees the model, unless one of its RPC servers is gone: ggml would abort telling it to free
  // a buffer, so the model's memory is kept until the process exits instead.
  ~ModelHandle();
};

// Load options parsed on the JS thread (shared by load and estimate); every field comes from lib/.
struct LoadOptions {
  std::string path;
  int32_t gpu_layers = 0;
  llama_load_mode load_mode = LLAMA_LOAD_MODE_NONE;
  bool use_extra_bufts = false;
  bool vocab_only = false;
  bool no_alloc = false;  // set by estimate only
  // Placement: device names (empty: all), split mode, main GPU, per-device proportions, and
  // tensor-name patterns pinned to a device (e.g. MoE experts on the CPU).
  std::vector<std::string> devices;
  llama_split_mode split_mode = LLAMA_SPLIT_MODE_LAYER;
  int32_t main_gpu = 0;
  std::vector<float> tensor_split;
  std::vector<std::pair<std::string, std::string>> overrides;
  // Storage the llama_model_params point into, filled by ToModelParams.
  std::vector<ggml_backend_dev_t> device_ptrs;
  std::vector<llama_model_tensor_buft_override> override_ptrs;
};
// `where` names the options object in errors ("options", "loadOptions").
LoadOptions ParseLoadOptions(Napi::Env env, const std::string& path, Napi::Object o, const char* where);
// Off the JS thread: resolves device names (ERR_INVALID_ARGUMENT for an unknown one) into
// `opts`' own storage, which must outlive the load call.
llama_model_params ToModelParams(LoadOptions& opts);
// Throws ERR_FILE_NOT_FOUND / ERR_NOT_A_FILE before llama.cpp sees the path.
void CheckModelPath(const std::string& path);

// The bytes of one token (possibly part of a UTF-8 character); caller checked the id.
std::string TokenPiece(const llama_vocab* vocab, llama_token token, bool special);

class Model : public Napi::ObjectWrap<Model> {
 public:
  static void Init(Napi::Env env, Napi::Object exports, Addon& addon);
  static const napi_type_tag kTag;
  // Tags the External a load hands to the constructor, so nothing else can pose as one.
  static const napi_type_tag kExternalTag;

  explicit Model(const Napi::CallbackInfo& info);
  ~Model() override;

  // The handle of a live model wrapped in `value`, or a thrown ERR_INVALID_ARGUMENT / ERR_DISPOSED.
  static std::shared_ptr<ModelHandle> HandleOf(Napi::Env env, Napi::Value value);

 private:
  static Napi::Value Load(const Napi::CallbackInfo& info);
  static Napi::Value Estimate(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Tokenize(const Napi::CallbackInfo& info);
  Napi::Value Detokenize(const Napi::CallbackInfo& info);
  Napi::Value TokenToPiece(const Napi::CallbackInfo& info);
  Napi::Value ApplyChatTemplate(const Napi::CallbackInfo& info);
  Napi::Value Memory(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  // adapter.cc
  Napi::Value LoadAdapter(const Napi::CallbackInfo& info);
  static Napi::Value DisposeAdapter(const Napi::CallbackInfo& info);

  std::shared_ptr<ModelHandle> Live(Napi::Env env) const;

  std::shared_ptr<ModelHandle> handle_;
  int64_t external_bytes_ = 0;
};

}  // namespace llamem
