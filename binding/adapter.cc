// LoRA adapters: Model.loadAdapter (llama_adapter_lora_init, off the JS thread),
// Model.disposeAdapter (drops the handle's reference; llama_adapter_lora_free once no context
// holds it) and Context.setAdapters (llama_set_adapters_lora).
#include "adapter.h"

#include "args.h"
#include "context.h"
#include "errors.h"
#include "worker.h"

namespace llamem {

const napi_type_tag kAdapterTag = {0x6c6c616d656d4144ULL, 0x4150544552000001ULL};

std::shared_ptr<AdapterHandle> AdapterOf(Napi::Env env, Napi::Value value, const char* where) {
  auto* holder = TaggedExternal<std::shared_ptr<AdapterHandle>>(env, value, kAdapterTag, (std::string(where) + " must be a loaded adapter").c_str());
  if (!*holder) throw MakeError(env, "ERR_DISPOSED", std::string(where) + " was disposed");
  return *holder;
}

namespace {

class LoadAdapterWorker : public PromiseWorker {
 public:
  LoadAdapterWorker(Napi::Env env, std::shared_ptr<ModelHandle> model, std::string path)
      : PromiseWorker(env), model_(std::move(model)), path_(std::move(path)) {}

 protected:
  void Run() override {
    CheckModelPath(path_);
    TakeLastNativeError();
    llama_adapter_lora* a = llama_adapter_lora_init(model_->model, path_.c_str());
    if (a == nullptr) {
      std::string why = TakeLastNativeError();
      Throw("ERR_ADAPTER", "cannot load the LoRA adapter " + path_ + (why.empty() ? "" : ": " + why));
    }
    handle_ = std::make_shared<AdapterHandle>();
    handle_->model = model_;
    handle_->adapter = a;
  }

  Napi::Value Result(Napi::Env env) override {
    return NewTaggedExternal(env, new std::shared_ptr<AdapterHandle>(handle_), kAdapterTag);
  }

 private:
  std::shared_ptr<ModelHandle> model_;
  std::string path_;
  std::shared_ptr<AdapterHandle> handle_;
};

}  // namespace

// loadAdapter(path): resolves with the adapter's handle.
Napi::Value Model::LoadAdapter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "Model.loadAdapter(path)");
  std::string path = args.String(0, "path");
  return (new LoadAdapterWorker(env, HandleOf(env, info.This()), std::move(path)))->Start();
}

// disposeAdapter(adapter): the handle lets go; contexts it is set on keep it until they drop it.
Napi::Value Model::DisposeAdapter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "Model.disposeAdapter(adapter)");
  auto* holder = TaggedExternal<std::shared_ptr<AdapterHandle>>(env, args.At(0, "adapter"), kAdapterTag, "adapter must be a loaded adapter");
  holder->reset();
  return env.Undefined();
}

// setAdapters([{ adapter, scale }]): the adapters every later decode applies (none: []).
Napi::Value Context::SetAdapters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto h = Live(env, info);
  Args args(info, "Context.setAdapters(entries)");
  Napi::Value v = args.At(0, "entries");
  if (!v.IsArray()) args.Fail("entries", "must be an array");
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<std::shared_ptr<AdapterHandle>> keep;
  std::vector<llama_adapter_lora*> adapters;
  std::vector<float> scales;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    std::string where = "entries[" + std::to_string(i) + "]";
    Napi::Value e = arr.Get(i);
    if (!e.IsObject()) throw MakeError(env, "ERR_INVALID_ARGUMENT", where + " must be an object");
    Fields f(e.As<Napi::Object>(), where);
    auto a = AdapterOf(env, e.As<Napi::Object>().Get("adapter"), (where + ".adapter").c_str());
    if (a->model != h->model) throw MakeError(env, "ERR_INVALID_ARGUMENT", where + ".adapter was loaded for another model");
    const double scale = f.Number("scale", -1e6, 1e6);
    keep.push_back(a);
    adapters.push_back(a->adapter);
    scales.push_back(static_cast<float>(scale));
  }
  LLAMEM_LOCK_OR_BUSY(h);
  llama_set_adapters_lora(h->ctx, adapters.empty() ? nullptr : adapters.data(), adapters.size(), scales.empty() ? nullptr : scales.data());
  // The context now points at these adapters: it holds them until it is given others or freed.
  h->adapters = std::move(keep);
  return env.Undefined();
}

}  // namespace llamem
