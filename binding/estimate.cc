// Model.estimate, a dry run: llama.cpp "loads" the model and creates the context with no_alloc,
// so every buffer is sized exactly as a real load would size it, but nothing is allocated or
// read beyond the header.
#include <string>
#include <vector>

#include "addon.h"
#include "args.h"
#include "context.h"
#include "errors.h"
#include "ggml-backend.h"
#include "model.h"
#include "rpc.h"
#include "worker.h"

namespace llamem {

namespace {

struct DeviceMemory {
  std::string name, type;
  size_t free = 0, total = 0;
};

class EstimateWorker : public PromiseWorker {
 public:
  EstimateWorker(Napi::Env env, LoadOptions load, llama_context_params cparams)
      : PromiseWorker(env), load_(std::move(load)), cparams_(cparams) {}

 protected:
  void Run() override {
    CheckModelPath(load_.path);
    load_.no_alloc = true;
    // llama.cpp asserts that a dry run maps nothing; the sizes are the same without mmap.
    load_.load_mode = LLAMA_LOAD_MODE_NONE;
    llama_model_params mp = ToModelParams(load_);
    TakeLastNativeError();
    llama_model* model = llama_model_load_from_file(load_.path.c_str(), mp);
    if (model == nullptr) {
      std::string why = TakeLastNativeError();
      Throw("ERR_MODEL_LOAD", "cannot read " + load_.path + (why.empty() ? "" : ": " + why));
    }
    std::unique_ptr<llama_model, decltype(&llama_model_free)> guard(model, llama_model_free);
    n_ctx_train_ = llama_model_n_ctx_train(model);
    n_layer_ = llama_model_n_layer(model);
    CheckContextFits(model, cparams_);
    TakeLastNativeError();
    llama_context* ctx = llama_init_from_model(model, cparams_);
    if (ctx == nullptr) {
      std::string why = TakeLastNativeError();
      Throw("ERR_CONTEXT_CREATE", "the dry run could not size the context" + (why.empty() ? "" : ": " + why));
    }
    rows_ = CollectBreakdown(ctx);
    n_ctx_ = static_cast<int32_t>(llama_n_ctx(ctx));
    llama_free(ctx);
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
      ggml_backend_dev_t d = ggml_backend_dev_get(i);
      DeviceMemory m;
      m.name = ggml_backend_dev_name(d);
      m.type = ggml_backend_dev_type(d) == GGML_BACKEND_DEVICE_TYPE_CPU ? "cpu" : "gpu";
      // A gone RPC server would abort the process when asked: it reports no memory.
      const std::string rpc = RpcEndpointOf(d);
      if (rpc.empty() || RpcServerAlive(rpc, kRpcCheckTimeoutMs)) ggml_backend_dev_memory(d, &m.free, &m.total);
      devices_.push_back(std::move(m));
    }
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("rows", BreakdownToJs(env, rows_));
    out.Set("contextSize", n_ctx_);
    out.Set("trainedContextSize", n_ctx_train_);
    out.Set("layers", n_layer_);
    Napi::Array devs = Napi::Array::New(env, devices_.size());
    for (uint32_t i = 0; i < devices_.size(); i++) {
      Napi::Object d = Napi::Object::New(env);
      d.Set("name", devices_[i].name);
      d.Set("type", devices_[i].type);
      d.Set("free", static_cast<double>(devices_[i].free));
      d.Set("total", static_cast<double>(devices_[i].total));
      devs.Set(i, d);
    }
    out.Set("devices", devs);
    return out;
  }

 private:
  LoadOptions load_;
  llama_context_params cparams_;
  std::vector<MemoryRow> rows_;
  std::vector<DeviceMemory> devices_;
  int32_t n_ctx_ = 0, n_ctx_train_ = 0, n_layer_ = 0;
};

}  // namespace

// Model.estimate(path, loadOptions, contextOptions) -> Promise<{ rows, devices, contextSize, ... }>
Napi::Value Model::Estimate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "Model.estimate(path, loadOptions, contextOptions)");
  LoadOptions load = ParseLoadOptions(env, args.String(0, "path"), args.Object(1, "loadOptions"), "loadOptions");
  llama_context_params cparams = ParseContextParams(args.Object(2, "contextOptions"), "contextOptions");
  return (new EstimateWorker(env, std::move(load), cparams))->Start();
}

}  // namespace llamem
