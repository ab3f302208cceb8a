// llama_adapter_lora: a LoRA adapter loaded for a model, shared by its JS handle and by the
// contexts it is set on.
#pragma once

#include <memory>

#include "llama.h"
#include "model.h"

namespace llamem {

// Owns a llama_adapter_lora. It holds its model, so the adapter is freed before the model; a
// context it is set on holds it, so it is never freed while a context can still use it.
struct AdapterHandle {
  std::shared_ptr<ModelHandle> model;
  llama_adapter_lora* adapter = nullptr;
  ~AdapterHandle() {
    if (adapter != nullptr) llama_adapter_lora_free(adapter);
  }
};

// Tags the External that holds a loaded adapter, so nothing else can pose as one.
extern const napi_type_tag kAdapterTag;

// The adapter held by `value` (an External from Model.loadAdapter), or a thrown
// ERR_INVALID_ARGUMENT / ERR_DISPOSED.
std::shared_ptr<AdapterHandle> AdapterOf(Napi::Env env, Napi::Value value, const char* where);

}  // namespace llamem
